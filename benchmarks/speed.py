"""Speed benchmark: ``deid-edit run`` versus the transcode floor, per clip, in one process run.

The floor is a plain PyAV decode + encode of the same clip with the same codec settings (our
``VideoWriter`` fed the decoded frames unchanged, audio copied): no detection, no anonymizing.
Timings are never asserted anywhere; compare the ratio column, measured back to back on the same
machine. Usage:

    python benchmarks/speed.py [CLIP ...] [--preset medium] [--mode blur] [--repeat 1]

Clips are names in ../shared/footage or paths; default: the three clips of the core-engine issue.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import av

from deid_edit.config import EncodeConfig
from deid_edit.io.decode import VideoReader, open_input, probe
from deid_edit.io.encode import open_writer

FOOTAGE = Path(__file__).resolve().parents[1].parent / "shared" / "footage"
DEFAULT = ["sofa_interviewee_1080p.mp4", "hamilton_stage.mp4", "crowd_small_faces_1080p.mp4"]


def transcode_floor(src: Path, dst: Path, cfg: EncodeConfig) -> float:
    """Seconds for decode + encode + stream copy with exactly the engine's writer settings."""
    t0 = time.perf_counter()
    info = probe(src)
    source = open_input(src)
    writer = open_writer(dst, source, info, cfg)
    reader = VideoReader(src, copy_streams=writer.copied_streams)
    for item in reader.items():
        if isinstance(item, av.Packet):
            writer.copy(item)
        else:
            writer.write_frame(item[1])
    writer.finish()
    source.close()
    return time.perf_counter() - t0


def deid_run(src: Path, dst: Path, extra: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "deid_edit", "run", str(src), "-o", str(dst), "--force", "--progress", "none", "-q", *extra],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("clips", nargs="*", default=DEFAULT)
    ap.add_argument("--preset", default=None, help="encoder preset for both (default: the engine's)")
    ap.add_argument("--mode", default="blur")
    ap.add_argument("--repeat", type=int, default=1, help="take the best of N runs of each")
    args = ap.parse_args()
    extra = ["--mode", args.mode] + (["--preset", args.preset] if args.preset else [])
    cfg = EncodeConfig(preset=args.preset, force=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.clips:
            src = Path(name) if os.path.exists(name) else FOOTAGE / name
            info = probe(src)
            floor = min(transcode_floor(src, Path(tmp) / f"floor{src.suffix}", cfg) for _ in range(args.repeat))
            run = min(deid_run(src, Path(tmp) / f"run{src.suffix}", extra) for _ in range(args.repeat))
            rows.append((src.name, f"{info.width}x{info.height}", info.frame_count, run, floor, run / floor, info.frame_count / run))
    print(f"mode={args.mode} preset={args.preset or 'default'} cpus={os.cpu_count()}")
    head = f"| {'clip':32} | {'size':9} | {'frames':6} | {'run s':7} | {'floor s':7} | {'ratio':5} | {'run fps':7} |"
    print(head)
    print("|" + "|".join("-" * (len(c)) for c in head.split("|")[1:-1]) + "|")
    for clip, size, n, run, floor, ratio, fps in rows:
        print(f"| {clip:32} | {size:9} | {n:6d} | {run:7.1f} | {floor:7.1f} | {ratio:5.2f} | {fps:7.1f} |")


if __name__ == "__main__":
    main()
