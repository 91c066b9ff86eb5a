"""Live video: a camera, a network stream or a file played at its own rate in; anonymized out at a
fixed latency.

Input: SOURCE (``/dev/video0``, ``avfoundation:0``, ``dshow:video=NAME``, an RTSP/RTMP/SRT/UDP URL, or
a file) and DEST (a file or a stream URL). Every frame leaves ``latency`` seconds after it arrived,
rendered with what the analysis knows by then (``pipeline.stream``: the shot's tracks when its cut
is settled, else the tracks so far plus the frame's own detections). Why a fixed latency: the
tracker fills gaps and holds track ends only with frames after the one being rendered. A frame
is never sent unprocessed: one that arrives when the analysis is behind is dropped or fully
blurred (``--when-late``), and the stats say how many.
"""

from __future__ import annotations

import logging
import queue
import re
import threading
import time
from collections import deque
from dataclasses import dataclass, field, replace
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
from av.video.frame import PictureType

from ..config import AnalyzeConfig, EncodeConfig, RenderConfig
from ..detect import FaceDetector, create_detector
from ..errors import ConfigError, EncodeError, InputError
from ..identities import Selection
from ..io.alloc import fix_mmap_threshold, release_free_memory
from ..io.codecs import OUTPUT_FORMATS
from ..io.decode import analysis_frame, upright_k
from ..progress import NullProgress, ProgressSink
from ..render import get_anonymizer
from ..types import Frame, VideoInfo
from .analyze import make_embedder
from .render import render_frame
from .stream import StreamRun

log = logging.getLogger(__name__)

WHEN_LATE = ("blur", "drop")
# x264 ultrafast keeps up with 720p30 beside detection on two cores (veryfast: 39 fps alone there)
LIVE_PRESET = "ultrafast"
LATE_SHARE = 0.5  # a frame that waited more than this share of the latency before analysis is late
STREAM_FORMATS = {"udp": "mpegts", "srt": "mpegts", "tcp": "mpegts", "rtp": "rtp_mpegts", "rtmp": "flv", "rtmps": "flv", "rtsp": "rtsp"}
URL = re.compile(r"^[a-z][a-z0-9+.-]*://", re.I)
DEVICE_PREFIXES = {"avfoundation:": "avfoundation", "dshow:": "dshow", "v4l2:": "v4l2"}
_END = object()


@dataclass
class LiveStats:
    """What the live run achieved: frames in and out, late frames, latency."""

    frames_in: int = 0
    frames_out: int = 0
    dropped: int = 0
    blurred: int = 0  # late, sent fully blurred
    first: float | None = None  # hand-off of the first frame sent
    last: float | None = None  # hand-off of the last frame sent
    steady: int = 0  # frames sent while the source was sending (the rate counts these)
    late_frames: list[int] = field(default_factory=list)  # indices of the first 1,000 late frames
    latencies: deque[float] = field(default_factory=lambda: deque(maxlen=10_000))

    def fps(self) -> float:
        """Frames sent per second while the source was sending."""
        if self.first is None or self.last is None or self.steady < 2:
            return 0.0
        return (self.steady - 1) / max(self.last - self.first, 1e-6)

    def latency(self, q: float) -> float:
        if not self.latencies:
            return float("nan")
        return float(np.percentile(np.fromiter(self.latencies, float), q))

    def as_dict(self) -> dict[str, Any]:
        return {
            "frames_in": self.frames_in,
            "frames_out": self.frames_out,
            "dropped": self.dropped,
            "blurred": self.blurred,
            "fps": round(self.fps(), 2),
            "latency_p50": round(self.latency(50), 3),
            "latency_p95": round(self.latency(95), 3),
        }

    def summary(self) -> str:
        d = self.as_dict()
        return (
            f"live: {d['frames_out']} of {d['frames_in']} frames sent at {d['fps']:.1f} fps, latency p50 {d['latency_p50']:.2f} s "
            f"p95 {d['latency_p95']:.2f} s; late: {d['dropped']} dropped, {d['blurred']} fully blurred"
        )


def open_source(spec: str, input_format: str | None = None, timeout: float = 5.0) -> tuple[av.container.InputContainer, bool]:
    """Open SOURCE; returns the container and whether it must be paced (a file plays at its own rate)."""
    options: dict[str, str] = {}
    fmt = input_format
    url = spec
    for prefix, name in DEVICE_PREFIXES.items():
        if spec.startswith(prefix):
            fmt, url = fmt or name, spec[len(prefix) :]
    if fmt is None and re.match(r"^/dev/video\d+$", spec):
        fmt = "v4l2"
    paced = fmt is None and not URL.match(spec)
    if paced and not Path(spec).is_file():
        raise InputError(
            f"{spec}: no such file, camera or stream URL; give a file, /dev/videoN, or a udp://, srt://, rtsp:// or rtmp:// URL"
        )
    if URL.match(spec):
        scheme = spec.split(":", 1)[0].lower()
        # a live source is probed briefly: the default (5 s of stream) would be 5 s of latency
        options.update({"analyzeduration": "200000", "probesize": "100000"})
        if scheme in ("udp", "rtp"):
            options.update({"timeout": str(int(timeout * 1e6)), "overrun_nonfatal": "1", "fifo_size": "1000000"})
        elif scheme == "rtsp":
            options.update({"rtsp_transport": "tcp", "timeout": str(int(timeout * 1e6))})
        elif scheme in ("srt", "tcp", "rtmp", "rtmps"):
            options["timeout"] = str(int(timeout * 1e6))
    try:
        # opening waits longer than a pause in the stream: a sender may start a little after us
        container = av.open(url, mode="r", format=fmt, options=options, timeout=max(timeout, 10.0) if URL.match(spec) else None)
    except av.FFmpegError as exc:
        raise InputError(f"{spec}: cannot be opened as a live source ({exc}); check the device or URL and that it is sending") from exc
    if not container.streams.video:
        container.close()
        raise InputError(f"{spec}: has no video stream; give a camera or a stream with video")
    return container, paced


def output_format(dest: str) -> str:
    """The muxer for DEST: by URL scheme for streams, by extension for files."""
    if URL.match(dest):
        scheme = dest.split(":", 1)[0].lower()
        if scheme not in STREAM_FORMATS:
            raise ConfigError(f"{dest}: unknown stream type {scheme!r}; use udp://, srt://, tcp://, rtp://, rtmp:// or rtsp://")
        return STREAM_FORMATS[scheme]
    ext = Path(dest).suffix.lower()
    if ext not in OUTPUT_FORMATS:
        raise ConfigError(f"{dest}: unknown extension {ext!r}; use .ts, .mkv, .mp4 or .mov, or a stream URL")
    return OUTPUT_FORMATS[ext]


class Capture:
    """Demux and decode SOURCE on a thread: (video frame, analysis frame, arrival time) and audio
    packets, in order, into a queue. A file is paced to its timestamps, like a camera."""

    def __init__(
        self, container: av.container.InputContainer, paced: bool, scale_of: Any, with_audio: bool, first: av.VideoFrame | None = None
    ) -> None:
        self.container, self.paced, self.scale_of, self.first = container, paced, scale_of, first
        self.vstream = container.streams.video[0]
        self.astream = container.streams.audio[0] if with_audio and container.streams.audio else None
        self.queue: queue.Queue[object] = queue.Queue()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="deid-live-capture", daemon=True)

    def _flush(self, index: int) -> None:
        """The frames still inside the decoder when the source ends (it decodes a few ahead)."""
        try:
            for frame in self.vstream.codec_context.decode(None):
                if frame.time_base is None:  # flushed frames leave the codec without the stream's clock
                    frame.time_base = self.vstream.time_base
                self.queue.put(("video", (index, frame, self.scale_of(frame, index)), time.monotonic()))
                index += 1
        except av.FFmpegError:
            log.debug("decoder flush failed", exc_info=True)

    def _packets(self, streams: list[Any]) -> Any:
        if self.first is not None:
            yield self.first  # decoded before the thread started (it told the size and orientation)
        yield from self.container.demux(streams)

    def _run(self) -> None:
        t0: float | None = None
        first: float | None = None
        index = 0
        try:
            streams = [self.vstream] + ([self.astream] if self.astream is not None else [])
            for packet in self._packets(streams):
                if self.stop.is_set():
                    break
                if isinstance(packet, av.Packet) and packet.stream.type == "audio":
                    if packet.dts is not None:
                        self.queue.put(("audio", packet, time.monotonic()))
                    continue
                for frame in packet.decode() if isinstance(packet, av.Packet) else [packet]:
                    now = time.monotonic()
                    if self.paced and frame.time is not None:
                        t0 = now if t0 is None else t0
                        first = frame.time if first is None else first
                        due = t0 + (frame.time - first)
                        if due > now:
                            time.sleep(due - now)
                        now = max(now, due)
                    small = self.scale_of(frame, index)
                    self.queue.put(("video", (index, frame, small), now))
                    index += 1
                if self.stop.is_set():
                    break
            if not self.stop.is_set():
                self._flush(index)
        except av.FFmpegError as exc:
            if index == 0:
                self.queue.put(InputError(f"the live source stopped before its first frame ({exc})"))
            else:
                log.info("live source ended (%s)", exc)
                self._flush(index)
        except Exception as exc:  # handed to the consumer
            self.queue.put(exc)
        self.queue.put(_END)


class LiveWriter:
    """Encodes and muxes on a thread, in order; ``write_frame``/``write_array`` as ``VideoWriter``."""

    def __init__(self, dest: str, info: VideoInfo, source: av.container.InputContainer, ecfg: EncodeConfig, with_audio: bool) -> None:
        fmt = output_format(dest)
        fix_mmap_threshold()  # before the encoder allocates (io.alloc)
        try:
            self.out = av.open(dest, mode="w", format=fmt)
        except av.FFmpegError as exc:
            raise EncodeError(f"{dest}: cannot open the output ({exc}); check the path or that the receiver accepts the stream") from exc
        rate = info.avg_rate if info.avg_rate and info.avg_rate > 0 else Fraction(30)
        codec = ecfg.codec or "libx264"
        codec = {"h264": "libx264", "hevc": "libx265"}.get(codec, codec)
        self.video = self.out.add_stream(codec, rate=rate)
        self.video.width, self.video.height = info.coded_width, info.coded_height
        self.video.pix_fmt = "yuv420p"
        self.video.time_base = info.time_base
        options = {"preset": ecfg.preset or LIVE_PRESET, "tune": "zerolatency", "g": str(max(1, int(round(float(rate))) * 2)), "bf": "0"}
        if ecfg.crf is not None:
            options["crf"] = str(ecfg.crf)
        if codec == "libx264":
            self.video.options = options
        if info.rotation:
            self.video.metadata["rotate"] = str((-info.rotation) % 360)
        self.audio = None
        src_a = source.streams.audio[0] if with_audio and source.streams.audio else None
        if src_a is not None and not (src_a.codec_context.sample_rate and src_a.codec_context.channels):
            # the short probe of a live source may not reach the audio's parameters: a muxer refuses that
            log.warning("%s: the source's audio was not identified in time (%s); sent without audio", dest, src_a.codec_context.name)
            src_a = None
        if src_a is not None:
            try:
                self.audio = self.out.add_stream_from_template(src_a)
            except (av.FFmpegError, ValueError) as exc:
                log.warning(
                    "%s: the source's audio (%s) cannot go into %s (%s); sent without audio", dest, src_a.codec_context.name, fmt, exc
                )
        self.target, self.tmp = Path(dest), None
        self._queue: queue.Queue[object] = queue.Queue(maxsize=8)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="deid-live-encode", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _END:
                return
            if self._error is not None:
                continue
            try:
                kind, obj = item  # type: ignore[misc]
                if kind == "video":
                    for packet in self.video.encode(obj):
                        self.out.mux(packet)
                elif self.audio is not None:
                    obj.stream = self.audio
                    self.out.mux(obj)
            except (av.FFmpegError, OSError) as exc:
                self._error = exc

    def _put(self, item: object) -> None:
        if self._error is not None:
            raise EncodeError(f"{self.target}: sending failed ({self._error}); check the receiver or the disk")
        self._queue.put(item)

    def write_frame(self, frame: av.VideoFrame) -> None:
        if frame.format.name != "yuv420p":
            pts, tb = frame.pts, frame.time_base
            frame = frame.reformat(format="yuv420p")
            frame.pts, frame.time_base = pts, tb
        frame.pict_type = PictureType.NONE
        self._put(("video", frame))

    def write_array(self, rgb: np.ndarray, pts: int | None, time_base: Fraction, like: av.VideoFrame | None = None) -> None:
        frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p")
        frame.pts, frame.time_base = pts, time_base
        self._put(("video", frame))

    def copy(self, packet: av.Packet) -> None:
        self._put(("audio", packet))

    def finish(self) -> None:
        self._queue.put(("video", None))  # flush the encoder
        self._queue.put(_END)
        self._thread.join()
        try:
            self.out.close()
        except av.FFmpegError as exc:
            self._error = self._error or exc
        if self._error is not None:
            raise EncodeError(f"{self.target}: sending failed ({self._error}); check the receiver or the disk")


def full_blur(frame: av.VideoFrame) -> av.VideoFrame:
    """The whole picture blurred beyond recognition (a late frame is never sent as it was): scaled
    down to 1/32 and back up in its own pixel format, which costs a few milliseconds."""
    w, h = frame.width, frame.height
    tiny = frame.reformat(width=max(2, w // 32), height=max(2, h // 32), format="yuv420p", interpolation="FAST_BILINEAR")
    out = tiny.reformat(width=w, height=h, format="yuv420p", interpolation="BILINEAR")
    out.pts, out.time_base = frame.pts, frame.time_base
    return out


def live(
    source: str,
    dest: str,
    analyze_cfg: AnalyzeConfig | None = None,
    render_cfg: RenderConfig | None = None,
    encode_cfg: EncodeConfig | None = None,
    latency: float = 1.0,
    when_late: str = "blur",
    progress: ProgressSink | None = None,
    input_format: str | None = None,
    selection: Selection | None = None,
    refs: np.ndarray | None = None,
    detector: FaceDetector | None = None,
    stop: threading.Event | None = None,
    idle_timeout: float = 5.0,
) -> LiveStats:
    """Anonymize SOURCE into DEST at a fixed ``latency`` until the source ends or ``stop`` is set."""
    if when_late not in WHEN_LATE:
        raise ConfigError(f"--when-late {when_late!r}: use blur or drop")
    if latency <= 0:
        raise ConfigError(f"--latency {latency}: use a positive number of seconds")
    acfg = analyze_cfg or AnalyzeConfig()
    acfg = replace(acfg, detect=replace(acfg.detect, batch_size=1))  # a frame waits for no other to be detected
    if not (selection and selection.keep_photos):  # descriptors serve --keep only: live links no identities
        acfg = replace(acfg, identity=replace(acfg.identity, enabled=False))
    rcfg, ecfg = render_cfg or RenderConfig(), encode_cfg or EncodeConfig()
    progress = progress or NullProgress()
    stop = stop or threading.Event()
    if not URL.match(dest) and Path(dest).exists() and not ecfg.force:
        raise EncodeError(f"{dest}: already exists; use --force to overwrite it or choose another name")
    # the models load before the source opens: a network source sends on, and frames buffered
    # while models load would arrive in a burst, late
    detector = detector or create_detector(acfg.detect)
    detector.detect([np.zeros((64, 64, 3), np.uint8)], [0], 1.0, 0.5)  # warm up: the first call is slow
    embedder = make_embedder(acfg) if acfg.identity.enabled else None
    container, paced = open_source(source, input_format, idle_timeout)
    anonymizer = get_anonymizer(rcfg.mode)

    container.streams.video[0].thread_type = "AUTO"
    try:
        first = next(container.decode(container.streams.video[0]))
    except (StopIteration, av.FFmpegError) as exc:
        container.close()
        raise InputError(f"{source}: no video frame arrived (within {idle_timeout:g} s); check that the source is sending") from exc
    st = StreamRun(Path(source), live_info(source, container, first), acfg, detector, selection, refs, latency, embedder)
    k = upright_k(st.info.rotation)

    def convert(frame: av.VideoFrame, index: int) -> Frame:
        """Decoded frame -> what the analysis sees (on the capture thread)."""
        return analysis_frame(frame, index, st.fa.scale, k, st.fa.full_every, st.info.time_base)

    capture = Capture(container, paced, convert, with_audio=True, first=first)
    capture.thread.start()
    stats = LiveStats()
    writer: LiveWriter | None = None
    pending: deque[tuple[int, av.VideoFrame, float, bool]] = deque()
    audio: deque[av.Packet] = deque()
    zero: dict[str, Any] = {}
    plan_cache: dict[str, Any] = {"plan": None, "until": -1}
    last_report = time.monotonic()

    def shift(obj: Any, tb: Fraction, t0: Fraction) -> None:
        """Start the output's clock at the first frame's time."""
        off = int(round(t0 / tb))
        obj.pts = None if obj.pts is None else obj.pts - off
        if isinstance(obj, av.Packet) and obj.dts is not None:
            obj.dts -= off

    def regions_for(st: StreamRun, index: int) -> Any:
        while st.ended and st.ended[0][0].end <= index:
            st.ended.popleft()
        if st.ended and st.ended[0][0].start <= index:
            return st.ended[0][1].regions_at(index, include_kept=not anonymizer.hides_faces)
        if index < st.tracked:
            plan = plan_cache["plan"]
            if plan is None or plan_cache["until"] - index < min(st.window // 2, st.reach) and plan_cache["until"] != st.tracked:
                plan = st.ahead_plan(st.tracked, index)
                plan_cache.update(plan=plan, until=st.tracked)
            return plan.regions_at(index, include_kept=not anonymizer.hides_faces)
        return st.undecided_plan(index).regions_at(index, include_kept=not anonymizer.hides_faces)

    def emit_due(final: bool) -> None:
        st.advance()
        while pending:
            index, frame, arrival, late = pending[0]
            wait = arrival + latency - time.monotonic()
            if wait > 0:
                if not final:
                    return
                time.sleep(wait)
            pending.popleft()
            t0 = zero.setdefault("t0", Fraction(frame.pts or 0) * Fraction(frame.time_base or 1))
            tb = Fraction(frame.time_base or 1)
            shift(frame, tb, t0)
            if late:
                writer.write_frame(full_blur(frame))  # type: ignore[union-attr]
            else:
                render_frame(frame, regions_for(st, index), anonymizer, writer, rcfg, upright_k(st.info.rotation), st.info)  # type: ignore[arg-type]
            stats.frames_out += 1
            now = time.monotonic()
            if not final:  # the rate is the steady one: not the frames flushed once the source went quiet
                stats.first = now if stats.first is None else stats.first
                stats.last = now
                stats.steady += 1
            stats.latencies.append(now - arrival)
            sent = Fraction(frame.pts or 0) * tb
            while audio and audio[0].pts is not None and audio[0].pts * audio[0].time_base - t0 <= sent:
                p = audio.popleft()
                shift(p, Fraction(p.time_base), t0)
                writer.copy(p)  # type: ignore[union-attr]

    try:
        try:
            while not stop.is_set():
                timeout = 0.2
                if pending:
                    timeout = min(timeout, max(0.0, pending[0][2] + latency - time.monotonic()))
                try:
                    item = capture.queue.get(timeout=timeout)
                except queue.Empty:
                    item = None
                if isinstance(item, BaseException):
                    raise item
                if item is _END or stop.is_set():
                    break
                if item is not None:
                    kind, obj, arrival = item  # type: ignore[misc]
                    if kind == "audio":
                        audio.append(obj)
                    else:
                        index, frame, small = obj
                        if writer is None:
                            writer = LiveWriter(dest, st.info, container, ecfg, with_audio=True)
                        stats.frames_in += 1
                        late = time.monotonic() - arrival > LATE_SHARE * latency
                        if late:
                            if len(stats.late_frames) < 1000:
                                stats.late_frames.append(index)
                            st.fa.skip(index)
                            if when_late == "drop":
                                stats.dropped += 1
                            else:
                                stats.blurred += 1
                                pending.append((index, frame, arrival, True))
                        else:
                            st.fa.push(small)
                            st.fa.flush()
                            pending.append((index, frame, arrival, False))
                        st.pushed = index + 1
                if writer is not None:
                    emit_due(final=False)
                now = time.monotonic()
                if now - last_report >= 1.0:
                    last_report = now
                    st.prune(pending[0][0] if pending else None)  # a live run lasts hours: nothing may grow with it
                    release_free_memory()
                    progress.event("live", **stats.as_dict())
                    log.debug("%s", stats.summary())
        except KeyboardInterrupt:
            log.warning("%s: stopped (Ctrl-C); the frames already analyzed are sent", source)
        if writer is not None:
            n = len(st.fa.detections)
            shots = st.fa.shot_list(n)
            st.advance(limit=n, cuts={shot.start for shot in shots if shot.start >= st.shot_start})
            st.end_shot(n)
            emit_due(final=True)
    finally:
        capture.stop.set()
        capture.thread.join(timeout=idle_timeout + 1.0)  # it reads the container: close that only after
        if writer is not None:
            try:
                writer.finish()
            finally:
                container.close()
        else:
            container.close()
    if stats.frames_in == 0:
        raise InputError(f"{source}: no video frame arrived (within {idle_timeout:g} s); check that the source is sending")
    log.info("%s", stats.summary())
    progress.event("live", **stats.as_dict())
    return stats


def live_info(source: str, container: av.container.InputContainer, frame: av.VideoFrame) -> VideoInfo:
    """What the analysis needs of a live source, from its stream and first frame."""
    stream = container.streams.video[0]
    rotation = int(frame.rotation or 0)
    k = upright_k(rotation)
    rate = stream.average_rate or stream.guessed_rate or Fraction(30)
    w, h = frame.width, frame.height
    return VideoInfo(
        path=source,
        width=h if k % 2 else w,
        height=w if k % 2 else h,
        coded_width=w,
        coded_height=h,
        rotation=rotation,
        frame_count=0,
        time_base=Fraction(stream.time_base or Fraction(1, 90000)),
        avg_rate=Fraction(rate),
        duration=Fraction(0),
        codec=stream.codec_context.name,
        pix_fmt=frame.format.name,
        size_bytes=0,
        fingerprint="",
    )
