"""Decoding: a video file in, upright RGB frames (or raw PyAV frames and copyable packets) out.

``probe`` turns a path into a ``VideoInfo`` or a clear ``InputError``. ``VideoReader`` demuxes and
decodes in a background thread that feeds a bounded queue, so decoding overlaps detection (analyze)
or anonymizing and encoding (render); the thread is always joined, also when the consumer stops
early. Frames come out in presentation order with their exact pts; the analyze pass gets them
rotated upright (boxes live in upright coordinates), the render pass gets the decoded frames as they
are plus the packets of the streams to copy, in demux order. Next stage: detect/shots (analyze) or
render + encode.
"""

from __future__ import annotations

import hashlib
import logging
import os
import queue
import threading
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from ..errors import DecodeError, InputError
from ..types import Frame, VideoInfo

log = logging.getLogger(__name__)

_MIB = 1 << 20
_END = object()
# Decoded frames the decode thread may hold ahead of the consumer; packets of copied streams are
# counted apart. One count for both let a clip's memory jump where its audio ended: with ~1.5 AAC
# packets a frame the queue of 12 held 5 frames, after the last audio packet 12 (1080p streaming
# run: +55 MiB in the last 100 frames of a 10-minute clip, the whole time for a silent one).
FRAMES_AHEAD = 6
PACKETS_AHEAD = 64


def fingerprint(path: Path) -> str:
    """Cheap identity of a file: sha256 of its size, first MiB and last MiB.

    Hashing whole videos would cost as much as decoding them; this is enough to notice that a plan
    is being applied to a different or re-encoded file.
    """
    size = path.stat().st_size
    h = hashlib.sha256(str(size).encode())
    with path.open("rb") as f:
        h.update(f.read(_MIB))
        if size > 2 * _MIB:
            f.seek(size - _MIB)
            h.update(f.read(_MIB))
    return h.hexdigest()


def open_input(path: str | os.PathLike[str]) -> av.container.InputContainer:
    """Open a file for reading with one-line errors for every way it can be unusable."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: no such file; check the path")
    if p.is_dir():
        raise InputError(f"{p}: is a directory, not a video; use 'deid-edit batch' for folders")
    if not os.access(p, os.R_OK):
        raise InputError(f"{p}: cannot be read (permission denied); check its permissions")
    if p.stat().st_size == 0:
        raise InputError(f"{p}: is empty (0 bytes); re-copy or re-export the video")
    try:
        container = av.open(str(p), mode="r", metadata_errors="ignore")
    except av.FFmpegError as exc:
        raise InputError(
            f"{p}: not a readable video ({exc.strerror or exc}); the file may be truncated or not a video at all: re-copy or re-export it"
        ) from exc
    if not container.streams.video:
        kinds = sorted({s.type for s in container.streams}) or ["no streams"]
        container.close()
        raise InputError(f"{p}: has no video stream ({', '.join(kinds)} only); give a video file")
    return container


def upright_k(rotation: int) -> int:
    """Number of counter-clockwise quarter turns (np.rot90's k) that make a coded frame upright."""
    return (int(round(rotation / 90.0))) % 4


def probe(path: str | os.PathLike[str]) -> VideoInfo:
    """Describe a video without decoding it all; raises ``InputError`` for unusable files.

    ``frame_count`` is the container's count (0 if unknown); the analyze pass replaces it with the
    number of frames actually decoded.
    """
    p = Path(path)
    container = open_input(p)
    try:
        stream = container.streams.video[0]
        cc = stream.codec_context
        rotation = 0
        try:
            first = next(iter(container.decode(stream)), None)
        except av.FFmpegError as exc:
            raise DecodeError(f"{p}: the video cannot be decoded ({exc}); re-export it") from exc
        if first is None:
            raise InputError(f"{p}: the video stream holds no frames; re-export it")
        rotation = int(first.rotation or 0)
        k = upright_k(rotation)
        w, h = first.width, first.height
        tb = Fraction(stream.time_base) if stream.time_base else Fraction(1, 90000)
        if stream.duration:
            duration = stream.duration * tb
        elif container.duration:
            duration = Fraction(container.duration, av.time_base)
        else:
            duration = Fraction(0)
        rate = stream.average_rate or stream.guessed_rate or Fraction(30)
        return VideoInfo(
            path=str(p),
            width=h if k % 2 else w,
            height=w if k % 2 else h,
            coded_width=w,
            coded_height=h,
            rotation=rotation,
            frame_count=int(stream.frames or 0),
            time_base=tb,
            avg_rate=Fraction(rate),
            duration=Fraction(duration),
            codec=cc.name,
            pix_fmt=first.format.name,
            size_bytes=p.stat().st_size,
            fingerprint=fingerprint(p),
            audio_streams=len(container.streams.audio),
        )
    finally:
        container.close()


def analysis_frame(frame: av.VideoFrame, index: int, scale: float, k: int, full_every: int, time_base: Fraction) -> Frame:
    """A decoded frame as the analysis sees it: upright RGB at ``scale``, plus the full-resolution
    picture every ``full_every`` frames (the small-face sweep's); ``time_base`` when the frame has none."""
    if scale != 1.0:
        w, h = max(2, int(round(frame.width * scale))), max(2, int(round(frame.height * scale)))
        rgb = frame.to_ndarray(format="rgb24", width=w, height=h, interpolation="AREA")
    else:
        rgb = frame.to_ndarray(format="rgb24")
    full = None
    if full_every and index % full_every == 0:
        full = frame.to_ndarray(format="rgb24")
        full = np.ascontiguousarray(np.rot90(full, k)) if k else full
    if k:
        rgb = np.ascontiguousarray(np.rot90(rgb, k))
    return Frame(index, frame.pts, Fraction(frame.time_base or time_base), rgb, full)


class VideoReader:
    """Threaded decoder of one video file.

    ``frames()`` yields upright RGB ``Frame`` objects, optionally scaled (for detection);
    ``items()`` yields, in demux order, ``(index, av.VideoFrame)`` tuples for the video and
    ``av.Packet`` objects of the other streams listed in ``copy_streams`` (for render).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        scale: float = 1.0,
        copy_streams: tuple[int, ...] = (),
        frames_ahead: int = FRAMES_AHEAD,
        expected_frames: int = 0,
        full_every: int = 0,
    ) -> None:
        self.path = Path(path)
        self.info = probe(self.path)
        self.scale = scale
        self.full_every = full_every  # also hand out the full-resolution frame every N frames
        self.copy_streams = copy_streams
        # the render pass passes the plan's count; otherwise the count is what the packets promise
        # (the header's count includes frames an edit list hides: phones trim in place that way)
        self.expected_frames = expected_frames
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        # room in the queue: decoded frames and copied packets, each bounded (see FRAMES_AHEAD)
        self._frame_room = threading.Semaphore(frames_ahead)
        self._packet_room = threading.Semaphore(PACKETS_AHEAD)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._container: av.container.InputContainer | None = None
        self.frames_decoded = 0
        self.frames_shown = 0
        # streaming run writes the last copied packets after the decode ends: it closes the file itself
        self.close_at_end = True

    # -- producer -------------------------------------------------------------------------
    def _room(self, item: object) -> threading.Semaphore | None:
        """The bound ``item`` counts against: frames, packets, or none (the end, an error)."""
        if isinstance(item, av.Packet):
            return self._packet_room
        return self._frame_room if isinstance(item, (tuple, Frame)) else None

    def _put(self, item: object) -> bool:
        """Queue ``item`` once there is room for it; False when the reader was closed meanwhile."""
        room = self._room(item)
        while room is not None and not room.acquire(timeout=0.1):
            if self._stop.is_set():
                return False
        if self._stop.is_set():
            return False
        self._queue.put(item)
        return True

    def _get(self) -> object:
        item = self._queue.get()
        room = self._room(item)
        if room is not None:
            room.release()
        return item

    def _convert(self, frame: av.VideoFrame, index: int) -> Frame:
        """Decoded frame -> upright RGB at the reader's scale (runs in the decode thread)."""
        full_every = self.full_every if self.scale != 1.0 else 0
        return analysis_frame(frame, index, self.scale, upright_k(self.info.rotation), full_every, self.info.time_base)

    def _run(self, raw: bool | str) -> None:
        try:
            # closed by close() after the join: packets handed out still refer to its streams
            self._container = container = open_input(self.path)
            vstream = container.streams.video[0]
            vstream.thread_type = "AUTO"
            wanted = [vstream] + [s for s in container.streams if s.index in self.copy_streams]
            index = 0
            shown = 0  # video packets a player shows: an edit list marks the others "discard"
            demuxed = 0  # all video packets: fewer than the header counts means the data is cut short
            for packet in container.demux(wanted):
                if self._stop.is_set():
                    return
                if packet.stream.index != vstream.index:
                    # a packet an edit list trims off the end is not heard; one before the start
                    # (negative pts) is kept: the output's own edit list skips it, as the source's did
                    trimmed = packet.is_discard and packet.pts is not None and packet.pts >= 0
                    if packet.dts is not None and packet.size and not trimmed and not self._put(packet):
                        return
                    continue
                if packet.size or packet.dts is not None:  # not the end-of-stream flush packet
                    demuxed += 1
                if packet.size and not packet.is_discard:
                    shown += 1
                for frame in packet.decode():
                    if raw == "both":
                        item = (index, frame, self._convert(frame, index))
                    else:
                        item = (index, frame) if raw else self._convert(frame, index)
                    index += 1
                    if not self._put(item):
                        return
            self.frames_decoded = index
            self.frames_shown = shown
            expected = self.expected_frames or shown
            if not self.expected_frames and self.info.frame_count and demuxed < self.info.frame_count:
                expected = self.info.frame_count
            if index < expected:
                raise DecodeError(
                    f"{self.path}: only {index} of {expected} frames could be decoded (truncated or damaged file); re-copy or re-export it"
                )
            if self.info.frame_count and index != self.info.frame_count and not self.expected_frames:
                log.warning(
                    "%s: the header counts %d frames, %d are shown (an edit list trims the rest); the output has the %d shown",
                    self.path,
                    self.info.frame_count,
                    index,
                    index,
                )
            self._put(_END)
        except av.FFmpegError as exc:
            self._put(DecodeError(f"{self.path}: decoding failed ({exc}); the file may be damaged"))
        except Exception as exc:  # handed to the consumer, re-raised there
            self._put(exc)

    # -- consumer -------------------------------------------------------------------------
    def _iterate(self, raw: bool | str) -> Iterator[object]:
        self._thread = threading.Thread(target=self._run, args=(raw,), name="deid-decode", daemon=True)
        self._thread.start()
        try:
            while True:
                item = self._get()
                if item is _END:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            self.close(container=self.close_at_end)

    def frames(self) -> Iterator[Frame]:
        """Upright RGB frames, scaled by ``scale``."""
        yield from self._iterate(raw=False)  # type: ignore[misc]

    def items(self) -> Iterator[tuple[int, av.VideoFrame] | av.Packet]:
        """Raw decoded frames with their index, interleaved with packets of ``copy_streams``."""
        yield from self._iterate(raw=True)  # type: ignore[misc]

    def analyzed_items(self) -> Iterator[tuple[int, av.VideoFrame, Frame] | av.Packet]:
        """``items()`` with each decoded frame also converted for the analysis (upright, at ``scale``):
        streaming ``run`` detects on the one and renders the other from one decode."""
        yield from self._iterate(raw="both")  # type: ignore[misc]

    def close(self, container: bool = True) -> None:
        """Stop and join the decode thread, and close the file unless ``container`` is False
        (packets handed out still refer to its streams). Idempotent."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()  # a put never blocks: waiting for room, it sees the stop within 0.1 s
            self._thread = None
        while not self._queue.empty():
            self._queue.get_nowait()  # frames and packets not taken: freed before their file closes
        if container and self._container is not None:
            self._container.close()
            self._container = None
