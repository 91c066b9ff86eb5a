"""Half-scale detection of quiet scenes (``--coarse-every``) against the normal scale, per clip.

For every clip, the plan is made twice: with the quiet-scene pass off (``--coarse-every 0``) and
automatic (on the CPU: every 5th frame at the normal scale, the others at half of it, close-ups at a
quarter). A face-frame
(an observed region of the plan without the pass) counts as missed when the rendered mask of the
plan with the pass covers it less than 90% (``leaks.plan_misses``, the rule of benchmarks/leaks.py
and benchmarks/gpu.sh). Nothing is asserted; the table is for RESULTS.md. Usage:

    python benchmarks/coarse.py [CLIP ...]     # default: every video in ../shared/footage
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from leaks import FOOTAGE, plan_misses, resolve_clip  # noqa: E402

from deid_edit import analyze  # noqa: E402
from deid_edit.config import AnalyzeConfig  # noqa: E402
from deid_edit.errors import DeidError  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("clips", nargs="*")
    args = ap.parse_args()
    clips = [resolve_clip(c) for c in args.clips] or sorted(p for p in FOOTAGE.iterdir() if p.suffix.lower() in (".mp4", ".mov", ".mkv"))
    print(f"| {'clip':32} | frames | analyze off s | analyze on s | face-frames | missed with the pass |")
    print(f"|{'-' * 34}|--------|---------------|--------------|-------------|----------------------|")
    total = missed = 0
    for clip in clips:
        try:
            t0 = time.perf_counter()
            off = analyze(clip, AnalyzeConfig.from_options(coarse_every=0))
            t_off = time.perf_counter() - t0
        except DeidError as exc:
            print(f"| {clip.name:32} | skipped: {str(exc)[:90]} |")
            continue
        t0 = time.perf_counter()
        on = analyze(clip, AnalyzeConfig.from_options(coarse_every=-1))
        t_on = time.perf_counter() - t0
        n, lost = plan_misses(off, on)
        total += n
        missed += len(lost)
        k, where = len(lost), str(lost[:8])
        print(f"| {clip.name:32} | {off.frame_count:6d} | {t_off:13.1f} | {t_on:12.1f} | {n:11d} | {k:4d} {where:>15} |", flush=True)
    print(f"\ntotal: {total} face-frames, {missed} missed with the pass")


if __name__ == "__main__":
    main()
