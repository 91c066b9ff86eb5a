"""The encode thread (``io.threaded.ThreadedWriter``): the same file as the synchronous writer, the
writer's work really off the render loop, worker errors reaching the caller unchanged, and an
abort that neither hangs nor leaves a thread or a temporary file behind."""

from __future__ import annotations

import hashlib
import threading
import time
from pathlib import Path

import av
import pytest
from conftest import decoded

from deid_edit import render
from deid_edit.config import EncodeConfig, RenderConfig
from deid_edit.errors import EncodeError
from deid_edit.io.decode import VideoReader, open_input, probe
from deid_edit.io.encode import VideoWriter, open_writer
from deid_edit.io.threaded import ENCODE_QUEUE_DEPTH, ThreadedWriter


def frame_hashes(path: Path) -> list[str]:
    """sha256 of every decoded picture (all planes, as decoded: no colour conversion)."""
    with av.open(str(path)) as c:
        return [hashlib.sha256(f.to_ndarray().tobytes()).hexdigest() for f in c.decode(video=0)]


def encode_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "deid-encode"]


def no_temp_files(folder: Path) -> bool:
    return not list(folder.glob("*.part*"))


@pytest.mark.slow  # ~2.5 s a mode: renders twice
@pytest.mark.parametrize("mode", ["blur", "debug"])  # blur: frames changed in place (YUV); debug: RGB arrays
def test_threaded_and_synchronous_write_the_same_video(sample_clip, sample_plan, tmp_path, monkeypatch, mode):
    path, _ = sample_clip
    calls: dict[str, set[str]] = {}

    def spy(name: str):
        original = getattr(VideoWriter, name)

        def wrapper(self, *args, **kwargs):
            calls.setdefault(name, set()).add(threading.current_thread().name)
            return original(self, *args, **kwargs)

        monkeypatch.setattr(VideoWriter, name, wrapper)

    for name in ("write_array", "write_frame", "mux_copied"):
        spy(name)
    rcfg = RenderConfig(mode=mode)
    sync = render(path, sample_plan, tmp_path / "sync.mp4", rcfg, encode_thread=False)
    assert set().union(*calls.values()) == {threading.current_thread().name}
    calls.clear()
    threaded = render(path, sample_plan, tmp_path / "threaded.mp4", rcfg, encode_thread=True)

    # the conversion, the encoder and the muxer ran on the encode thread, never on the caller's
    assert {"write_frame" if mode == "blur" else "write_array", "mux_copied"} <= set(calls)
    assert set().union(*calls.values()) == {"deid-encode"}
    assert frame_hashes(threaded) == frame_hashes(sync)
    a, b = decoded(sync), decoded(threaded)
    assert a["audio_packets"] and b["audio_packets"] == a["audio_packets"]
    assert b == a
    assert encode_threads() == []
    assert no_temp_files(tmp_path)


def test_worker_error_reaches_the_caller_unchanged(sample_clip, sample_plan, tmp_path, monkeypatch):
    path, _ = sample_clip
    raised: list[EncodeError] = []
    threads: list[str] = []
    original = VideoWriter._encode

    def failing(self, frame):
        if frame is not None:
            threads.append(threading.current_thread().name)
            if len(threads) == 5:
                raised.append(EncodeError(f"{self.target}: encoding failed (injected); try another --codec"))
                raise raised[0]
        return original(self, frame)

    monkeypatch.setattr(VideoWriter, "_encode", failing)
    out = tmp_path / "out.mp4"
    with pytest.raises(EncodeError) as info:
        render(path, sample_plan, out, RenderConfig(mode="blur"), encode_thread=True)
    assert info.value is raised[0]
    assert str(info.value).endswith("encoding failed (injected); try another --codec")
    assert threads == ["deid-encode"] * 5, "the worker went on encoding after the error"
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []
    assert encode_threads() == []


def open_threaded(clip: Path, target: Path) -> tuple[ThreadedWriter, av.container.InputContainer, list[av.VideoFrame]]:
    """A threaded writer on ``clip`` and enough of its decoded frames to fill the queue."""
    source = open_input(clip)
    writer = open_writer(target, source, probe(clip), EncodeConfig(), threaded=True)
    assert isinstance(writer, ThreadedWriter)
    frames = []
    reader = VideoReader(clip)
    for item in reader.items():
        if not isinstance(item, av.Packet):
            frames.append(item[1])
        if len(frames) == ENCODE_QUEUE_DEPTH + 1:
            break
    reader.close()
    return writer, source, frames


SLOW_S = 0.5  # one encoder call; executing the full queue would take ENCODE_QUEUE_DEPTH times this


@pytest.mark.parametrize("worker", ["slow", "dead"])
def test_abort_with_a_full_queue_is_prompt_and_clean(sample_clip, tmp_path, monkeypatch, worker):
    """Ctrl-C while the caller waits on a full queue: abort does not execute the queued frames,
    does not hang on a worker that died, joins the thread and removes the temporary file."""
    gate = threading.Event()
    encoded: list[int] = []

    def blocked(self, frame):
        gate.wait(10)
        encoded.append(1)
        if worker == "dead":
            raise EncodeError("injected")
        time.sleep(SLOW_S)

    monkeypatch.setattr(VideoWriter, "_encode", blocked)
    out = tmp_path / "out.mp4"
    writer, source, frames = open_threaded(sample_clip[0], out)
    try:
        tmp = writer.tmp
        assert tmp.exists()
        for frame in frames:  # one taken by the worker (held at the gate), the rest fill the queue
            writer.write_frame(frame)
        assert writer._queue.full()
        gate.set()
        if worker == "dead":
            deadline = time.monotonic() + 10
            while encode_threads() and time.monotonic() < deadline:
                time.sleep(0.01)
            with pytest.raises(EncodeError, match="injected"):
                writer.write_frame(frames[0])  # the caller hears of it, not blocked on the full queue
        t0 = time.monotonic()
        writer.abort()
        elapsed = time.monotonic() - t0
    finally:
        source.close()
    assert elapsed < SLOW_S * ENCODE_QUEUE_DEPTH / 2, f"abort took {elapsed:.2f} s"
    assert len(encoded) <= 2, "abort let the worker encode the queued frames"
    assert encode_threads() == []
    assert not tmp.exists() and not out.exists()
    assert list(tmp_path.iterdir()) == []
    writer.abort()  # idempotent


def test_ctrl_c_in_the_render_loop_stops_the_encode_thread(sample_clip, sample_plan, tmp_path, monkeypatch):
    """KeyboardInterrupt in the caller (here: in the anonymizer) aborts the threaded writer."""
    from deid_edit.render import classic

    calls = []

    def interrupt(self, image, regions, cfg):
        calls.append(1)
        if len(calls) == 8:
            raise KeyboardInterrupt

    monkeypatch.setattr(classic.Matte, "apply", interrupt)
    out = tmp_path / "out.mp4"
    with pytest.raises(KeyboardInterrupt):
        render(sample_clip[0], sample_plan, out, RenderConfig(mode="matte"), encode_thread=True)
    assert encode_threads() == []
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("cpus", [2, 16])
def test_streaming_run_draws_beside_the_analysis_from_four_cores(sample_clip, tmp_path, monkeypatch, cpus):
    """From ``DRAW_BESIDE_MIN_CPUS`` cores on, the streaming run hands each frame and its regions to
    the encode thread, which draws them (beside the analysis of the next frames) and encodes;
    below, the caller draws. Both write the same file. A drawing error on the encode thread reaches
    the caller unchanged and leaves no file."""
    from deid_edit.pipeline import stream

    path, _ = sample_clip
    drawn: list[tuple[str, int]] = []
    original = stream.render_frame

    def spy(frame, regions, *args):
        drawn.append((threading.current_thread().name, len(regions)))
        return original(frame, regions, *args)

    monkeypatch.setattr(stream.os, "cpu_count", lambda: cpus)
    monkeypatch.setattr(stream, "render_frame", spy)
    out, plan = stream.run_streaming(path, tmp_path / "o.mp4")
    assert len(drawn) == plan.frame_count
    assert {name for name, _ in drawn} == {"deid-encode" if cpus >= stream.DRAW_BESIDE_MIN_CPUS else threading.current_thread().name}
    assert sum(n for _, n in drawn) > 0  # the sample's faces were drawn there
    monkeypatch.setattr(stream.os, "cpu_count", lambda: 1)
    monkeypatch.setattr(stream, "render_frame", original)
    reference, _ = stream.run_streaming(path, tmp_path / "reference.mp4")
    assert out.read_bytes() == reference.read_bytes()

    def failing(frame, regions, *args):
        if regions:
            raise RuntimeError("drawing failed (injected)")
        return original(frame, regions, *args)

    monkeypatch.setattr(stream.os, "cpu_count", lambda: cpus)
    monkeypatch.setattr(stream, "render_frame", failing)
    target = tmp_path / "failed.mp4"
    with pytest.raises(RuntimeError, match="drawing failed"):
        stream.run_streaming(path, target)
    assert not target.exists()
    assert no_temp_files(tmp_path)
    assert encode_threads() == []
