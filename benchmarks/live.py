"""Live benchmark: a generated clip streamed over UDP on 127.0.0.1 into ``deid-edit live``.

For each size a clip of the two sample faces (``deid_edit.sample``) at ``--fps`` is played in real
time into ``udp://127.0.0.1:PORT`` (MPEG-TS, packets copied), and ``live`` anonymizes it into a file
at ``--latency``. The table says whether the rate holds: frames that arrived, left, were late
(dropped or fully blurred), the rate achieved and the latency p50/p95 (arrival to hand-off to the
encoder). Nothing is asserted; the table is for RESULTS.md. Usage:

    python benchmarks/live.py [--sizes 640x360 1280x720] [--seconds 10] [--fps 30] [--latency 1.0] [--when-late blur]
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import av


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def send_udp(src: Path, url: str) -> None:
    """Play ``src`` into ``url`` as MPEG-TS at its own rate (packets copied, paced by their time)."""
    with av.open(str(src)) as inp, av.open(url, "w", format="mpegts") as out:
        streams = [inp.streams.video[0], *inp.streams.audio[:1]]
        outs = {s.index: out.add_stream_from_template(s) for s in streams}
        t0 = time.monotonic()
        for p in inp.demux(streams):
            if p.dts is None:
                continue
            due = t0 + float(p.dts * p.time_base)
            if due > time.monotonic():
                time.sleep(due - time.monotonic())
            p.stream = outs[p.stream.index]
            out.mux(p)


def stream_through_live(src: Path, out: Path, latency: float, when_late: str, **kwargs: object) -> object:
    """``src`` over UDP into ``live``; returns its stats (raises what ``live`` raised)."""
    from deid_edit.pipeline.live import live  # here: the sender process needs none of the engine

    port = free_udp_port()
    result: dict[str, object] = {}

    def receive() -> None:
        try:
            result["stats"] = live(
                f"udp://127.0.0.1:{port}", str(out), latency=latency, when_late=when_late, idle_timeout=2.0, **kwargs
            )
        except BaseException as exc:  # handed to the caller
            result["error"] = exc

    t = threading.Thread(target=receive)
    t.start()
    time.sleep(1.5)  # the receiver loads its models and binds its socket first
    # the sender is a process of its own, as a camera would be: in this one it would wait for the GIL
    # and play slower than real time
    url = f"udp://127.0.0.1:{port}?pkt_size=1316"
    subprocess.run([sys.executable, str(Path(__file__).resolve()), "--send", str(src), url], check=True)
    t.join()
    if "error" in result:
        raise result["error"]  # type: ignore[misc]
    return result["stats"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", nargs="*", default=["640x360", "960x540", "1280x720"])
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--fps", type=int, default=30)
    ap.add_argument("--latency", type=float, default=1.0)
    ap.add_argument("--when-late", default="blur", choices=["blur", "drop"])
    ap.add_argument("--send", nargs=2, metavar=("CLIP", "URL"), help=argparse.SUPPRESS)  # the sender process
    args = ap.parse_args()
    if args.send:
        send_udp(Path(args.send[0]), args.send[1])
        return
    from deid_edit.config import EncodeConfig
    from deid_edit.sample import make_sample_clip

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            w, h = (int(v) for v in size.split("x"))
            frames = int(args.seconds * args.fps)
            src = Path(tmp) / f"clip_{size}.mp4"
            make_sample_clip(src, width=w, height=h, frames=frames, fps=args.fps, cut_frame=frames // 2)
            out = Path(tmp) / f"out_{size}.ts"
            stats = stream_through_live(src, out, args.latency, args.when_late, encode_cfg=EncodeConfig(force=True))
            d = stats.as_dict()  # type: ignore[attr-defined]
            holds = d["dropped"] + d["blurred"] == 0 and d["latency_p95"] <= args.latency + 0.5
            rows.append((size, d, holds))
    print(f"fps={args.fps} latency={args.latency} s when-late={args.when_late} seconds={args.seconds}")
    print("| size | frames in | out | late (dropped / blurred) | fps out | latency p50 s | p95 s | holds its rate |")
    print("|---|---|---|---|---|---|---|---|")
    for size, d, holds in rows:
        print(
            f"| {size} | {d['frames_in']} | {d['frames_out']} | {d['dropped']} / {d['blurred']} | {d['fps']:.1f} "
            f"| {d['latency_p50']:.2f} | {d['latency_p95']:.2f} | {'yes' if holds else 'no'} |"
        )


if __name__ == "__main__":
    main()
