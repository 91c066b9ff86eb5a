"""Half-scale detection of quiet scenes (``--coarse-every``) against the normal scale, per clip.

For every clip, the plan is made twice: with the quiet-scene pass off (``--coarse-every 0``) and
automatic (on the CPU: every 3rd frame at the normal scale, the others at half of it). A face-frame
counts as missed when the plan without the pass detects it (score >= the detection threshold) and
covers it at least 90%, while the rendered mask of the plan with the pass covers it less than 90%.
The same 90% rule as benchmarks/leaks.py. Nothing is asserted; the table is for RESULTS.md. Usage:

    python benchmarks/coarse.py [CLIP ...]     # default: every video in ../shared/footage
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from leaks import COVER_OK, box_slices, our_mask  # noqa: E402

from deid_edit import analyze  # noqa: E402
from deid_edit.config import AnalyzeConfig, RenderConfig  # noqa: E402
from deid_edit.errors import DeidError  # noqa: E402

FOOTAGE = Path(__file__).resolve().parents[1].parent / "shared" / "footage"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("clips", nargs="*")
    args = ap.parse_args()
    clips = [Path(c) if Path(c).exists() else FOOTAGE / c for c in args.clips] or sorted(
        p for p in FOOTAGE.iterdir() if p.suffix.lower() in (".mp4", ".mov", ".mkv")
    )
    rcfg = RenderConfig()
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
        hw = (off.video.height, off.video.width)
        thr = float(off.config["detect"]["threshold"])
        n, lost = 0, []
        for det in off.detections:
            boxes = det.boxes[det.scores >= thr]
            if not len(boxes):
                continue
            cov_off = our_mask(off, det.frame_index, hw, rcfg)
            cov_on = our_mask(on, det.frame_index, hw, rcfg)
            for b in boxes:
                s = box_slices(b, hw)
                if float(cov_off[s].mean()) < COVER_OK:
                    continue  # not covered without the pass either: not the pass's doing
                n += 1
                if float(cov_on[s].mean()) < COVER_OK:
                    lost.append(det.frame_index)
        total += n
        missed += len(lost)
        k, where = len(lost), str(lost[:8])
        print(f"| {clip.name:32} | {off.frame_count:6d} | {t_off:13.1f} | {t_on:12.1f} | {n:11d} | {k:4d} {where:>15} |", flush=True)
    print(f"\ntotal: {total} face-frames, {missed} missed with the pass")


if __name__ == "__main__":
    main()
