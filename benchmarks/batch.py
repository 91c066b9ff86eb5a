"""Batch throughput: ``deid-edit batch --jobs N`` (threads) against ``batch --ray`` (a local cluster).

Each command is a child process timed from start to exit, so Ray's cluster start-up and each
worker's model loading are inside its time; the start-up alone is read from the ``-v`` log. The
folder is a set of dev clips copied ``--copies`` times (a newsroom's intake: many short files).
Prints one row per mode (files, frames, wall, files/hour, fps, Ray start-up) and the per-file
costs the README's scaling paragraph uses (median seconds of a file on one worker). Timings are
never asserted anywhere. Usage:

    python benchmarks/batch.py [CLIP ...] [--copies 2] [--jobs 2] [--cpus-per-task 1] [--rounds 1]

Clips are names in ../shared/footage or paths; default: six short dev clips.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import median

FOOTAGE = Path(__file__).resolve().parents[1].parent / "shared" / "footage"
DEFAULT = [
    "talkinghead_1.mp4",
    "talkinghead_2.mp4",
    "talkinghead_3.mp4",
    "portrait_driving_d18.mp4",
    "portrait_driving_d19.mp4",
    "phone_selfie.mp4",
]


def run_batch(src: Path, out: Path, extra: list[str]) -> tuple[float, list[dict], tuple[float, float, float] | None]:
    """Wall seconds, the summary rows, and Ray's fixed costs (None without Ray): starting the
    cluster, the first file's wait for a worker, stopping the cluster."""
    if out.exists():
        shutil.rmtree(out)
    cmd = [sys.executable, "-m", "deid_edit", "-v", "batch", str(src), "-o", str(out), "--progress", "none", *extra]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    m = re.search(
        r"ray: started or joined in ([0-9.]+) s, first file began ([0-9.]+) s after submission, stopped in ([0-9.]+) s", proc.stderr
    )
    rows = json.loads((out / "deid-edit-summary.json").read_text())["files"]
    return wall, rows, (float(m.group(1)), float(m.group(2)), float(m.group(3))) if m else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("clips", nargs="*", default=DEFAULT)
    ap.add_argument("--copies", type=int, default=2, help="copies of each clip in the folder")
    ap.add_argument("--jobs", type=int, default=2, help="threads of the plain batch")
    ap.add_argument("--cpus-per-task", default="1", help="CPUs a Ray task asks for")
    ap.add_argument("--rounds", type=int, default=1, help="rounds of both, alternating; medians")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "in"
        src.mkdir()
        for name in args.clips:
            clip = Path(name) if os.path.exists(name) else FOOTAGE / name
            for k in range(args.copies):
                shutil.copy(clip, src / f"{clip.stem}_{k}{clip.suffix}")
        modes = {
            f"batch --jobs {args.jobs}": ["--jobs", str(args.jobs)],
            f"batch --ray (--cpus-per-task {args.cpus_per_task})": ["--ray", "--cpus-per-task", args.cpus_per_task],
        }
        results: dict[str, list[tuple[float, list[dict], tuple[float, float, float] | None]]] = {m: [] for m in modes}
        for _ in range(args.rounds):
            for mode, extra in modes.items():  # alternating: this VM's speed drifts over minutes
                results[mode].append(run_batch(src, Path(tmp) / "out", extra))
    print(f"{len(args.clips)} clips x {args.copies} copies, cpus={os.cpu_count()}, rounds={args.rounds}")
    head = (
        f"| {'mode':38} | {'files':5} | {'frames':6} | {'wall s':6} | {'files/hour':10} | {'fps':5} "
        f"| {'Ray init s':10} | {'1st file s':10} | {'stop s':6} |"
    )
    print(head)
    print("|" + "|".join("-" * len(c) for c in head.split("|")[1:-1]) + "|")
    per_file: list[float] = []
    for mode, runs in results.items():
        wall = median(r[0] for r in runs)
        rows = runs[0][1]
        frames = sum(r["frames"] for r in rows)
        bad = [r for r in rows if r["status"] != "done"]
        if bad:
            sys.exit(f"{mode}: {len(bad)} files not done: {bad[0]}")
        fixed = [r[2] for r in runs if r[2] is not None]
        costs = " | ".join(f"{median(c[j] for c in fixed):{w}.1f}" if fixed else f"{'-':>{w}}" for j, w in ((0, 10), (1, 10), (2, 6)))
        rate = len(rows) * 3600 / wall
        print(f"| {mode:38} | {len(rows):5d} | {frames:6d} | {wall:6.1f} | {rate:10.0f} | {frames / wall:5.1f} | {costs} |")
        per_file += [r["seconds"] for run in runs for r in run[1]]
    print(f"per-file seconds (both modes, {len(per_file)} files run two at a time on {os.cpu_count()} CPUs): median {median(per_file):.1f}")


if __name__ == "__main__":
    main()
