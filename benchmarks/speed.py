"""Speed benchmark: ``deid-edit run`` (streaming, and ``--two-pass``) versus the transcode floor.

The floor is a plain PyAV decode + encode of the same clip with the same codec settings (our
``VideoWriter`` fed the decoded frames unchanged, audio copied): no detection, no anonymizing.
Each run is a child process; its peak resident memory (``ru_maxrss``) is reported beside its time.
Timings are never asserted anywhere; compare the ratio columns, measured back to back on the same
machine. ``--concat N`` first joins N copies of each clip (packets copied, no re-encode) to show
that streaming memory does not grow with the length. Usage:

    python benchmarks/speed.py [CLIP ...] [--preset medium] [--mode blur] [--repeat 3] [--concat N] [--no-two-pass]

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
from statistics import median

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


def deid_run(src: Path, dst: Path, extra: list[str]) -> tuple[float, float]:
    """(seconds, peak resident MiB) of one ``deid-edit run`` in a child process."""
    t0 = time.perf_counter()
    cmd = [sys.executable, "-m", "deid_edit", "run", str(src), "-o", str(dst), "--force", "--progress", "none", "-q", *extra]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed with {proc.returncode}")
    return time.perf_counter() - t0, usage.ru_maxrss / 1024  # Linux: KiB


def concat(src: Path, dst: Path, copies: int) -> Path:
    """``copies`` of ``src`` one after the other (video and audio packets copied, timestamps shifted)."""
    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        streams = [s for s in inp.streams if s.type in ("video", "audio")]
        outs = {s.index: out.add_stream_from_template(s) for s in streams}
        end: dict[int, int] = {}
        start: dict[int, int] = {}
        packets = []
        for p in inp.demux(streams):
            if p.dts is None:
                continue
            packets.append(p)
            i = p.stream.index
            end[i] = max(end.get(i, p.dts), (p.pts if p.pts is not None else p.dts) + (p.duration or 0))
            start[i] = min(start.get(i, p.dts), p.dts, p.pts if p.pts is not None else p.dts)
        # each copy starts after the last timestamp of the one before (decode and presentation)
        span = {i: end[i] - start[i] for i in end}
        for k in range(copies):
            for p in packets:
                shift = k * span[p.stream.index]
                q = av.Packet(bytes(p))
                q.pts = None if p.pts is None else p.pts + shift
                q.dts = p.dts + shift
                q.duration = p.duration
                q.time_base = p.time_base
                q.is_keyframe = p.is_keyframe
                q.stream = outs[p.stream.index]
                out.mux(q)
    return dst


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("clips", nargs="*", default=DEFAULT)
    ap.add_argument("--preset", default=None, help="encoder preset for both (default: the engine's)")
    ap.add_argument("--mode", default="blur")
    ap.add_argument("--repeat", type=int, default=1, help="N rounds; medians of times and of each round's ratio")
    ap.add_argument("--concat", type=int, default=1, help="join N copies of each clip first (memory over length)")
    ap.add_argument("--no-two-pass", action="store_true", help="time the streaming run only")
    args = ap.parse_args()
    extra = ["--mode", args.mode] + (["--preset", args.preset] if args.preset else [])
    cfg = EncodeConfig(preset=args.preset, force=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.clips:
            src = Path(name) if os.path.exists(name) else FOOTAGE / name
            if args.concat > 1:
                src = concat(src, Path(tmp) / f"{src.stem}_x{args.concat}{src.suffix}", args.concat)
            info = probe(src)
            # rounds of floor, stream, two-pass back to back: this VM's speed drifts by a fifth over
            # minutes, so each ratio compares runs of one round, and the table shows medians
            floors, streams, twos = [], [], []
            for _ in range(args.repeat):
                floors.append(transcode_floor(src, Path(tmp) / f"floor{src.suffix}", cfg))
                streams.append(deid_run(src, Path(tmp) / f"run{src.suffix}", extra))
                if not args.no_two_pass:
                    twos.append(deid_run(src, Path(tmp) / f"two{src.suffix}", [*extra, "--two-pass"]))
            nan = (float("nan"), float("nan"))
            rows.append((src.name, f"{info.width}x{info.height}", info.frame_count, floors, streams, twos or [nan] * len(floors)))
    print(f"mode={args.mode} preset={args.preset or 'default'} cpus={os.cpu_count()}")
    head = (
        f"| {'clip':36} | {'size':9} | {'frames':6} | {'floor s':7} | {'stream s':8} | {'ratio':5} | {'MiB':5} "
        f"| {'2-pass s':8} | {'ratio':5} | {'MiB':5} |"
    )
    print(head)
    print("|" + "|".join("-" * (len(c)) for c in head.split("|")[1:-1]) + "|")
    for clip, size, n, floors, streams, twos in rows:
        floor = median(floors)
        s_ratio = median([t / f for (t, _), f in zip(streams, floors)])
        t_ratio = median([t / f for (t, _), f in zip(twos, floors)])
        print(
            f"| {clip:36} | {size:9} | {n:6d} | {floor:7.1f} | {median([t for t, _ in streams]):8.1f} | {s_ratio:5.2f} "
            f"| {max(m for _, m in streams):5.0f} | {median([t for t, _ in twos]):8.1f} | {t_ratio:5.2f} | {max(m for _, m in twos):5.0f} |"
        )


if __name__ == "__main__":
    main()
