"""The encode thread: a ``VideoWriter`` (``io.encode``) whose calls run in order on one background
thread, so render anonymizes frame N+1 while frame N is converted, encoded and muxed (next stage:
the file on disk, renamed into place by ``VideoWriter.finish``).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING

import av
import numpy as np

if TYPE_CHECKING:  # encode builds this wrapper (open_writer); it needs the type only
    from .encode import VideoWriter

log = logging.getLogger(__name__)

# Calls (frames or copied packets) that may wait for the encode thread: enough to absorb the
# jitter between anonymizing and encoding, few enough that the frames held stay bounded (at 4K an
# RGB frame is 25 MB, so at most ~150 MB wait here, beside the decoder's own queue).
ENCODE_QUEUE_DEPTH = 6
# How long ``abort`` waits for the encode thread to leave the call it is in (an encoder cannot be
# interrupted mid-frame); past it the thread is left behind rather than the caller hung.
ABORT_WAIT_S = 5.0
_FINISH = object()


class ThreadedWriter:
    """A ``VideoWriter`` driven from one background thread: same interface, same output file.

    Why: render would otherwise spend part of every frame inside the writer (``write_array``'s
    RGB->YUV conversion, the encoder call, muxing) instead of anonymizing the next frame. Here each
    call is put on a bounded queue and executed by a single worker, while PyAV releases the GIL
    in the conversion, the encoder and the muxer, so decode, anonymize and encode overlap.

    Why one worker and a FIFO: the muxer must receive video frames and copied audio packets in the
    order render hands them over, as the synchronous writer does, so the two write the same file.
    Why bounded: memory stays a few frames however far the encoder falls behind (the caller then
    waits, which is the back-pressure that keeps decode from racing ahead).

    Ownership: a frame given to ``write_frame`` or an array given to ``write_array`` belongs to
    the writer from then on; the caller must not modify it afterwards (render modifies a frame in
    place *before* handing it over and makes a new RGB array for every frame).

    Errors: the first exception raised in the worker (``EncodeError`` and the like) stops it, and
    that very exception is raised again in the caller by its next call or by ``finish``, so the
    caller sees the same message as with the synchronous writer. ``finish`` and ``abort`` always
    join the worker; the thread is a daemon only as a safety net for a process that exits without.
    """

    def __init__(self, inner: VideoWriter, depth: int = ENCODE_QUEUE_DEPTH) -> None:
        self._inner = inner
        self.target, self.tmp = inner.target, inner.tmp
        self._queue: queue.Queue[object] = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = threading.Thread(target=self._run, name="deid-encode", daemon=True)
        self._thread.start()

    @property
    def copied_streams(self) -> tuple[int, ...]:
        """Input stream indices whose packets ``copy`` accepts."""
        return self._inner.copied_streams

    # -- worker ---------------------------------------------------------------------------------
    def _run(self) -> None:
        """Execute queued calls in order until ``_FINISH``, a stop request or the first error."""
        while not self._stop.is_set():
            try:  # a timeout, so a stop request is seen even when nothing more is queued
                item = self._queue.get(timeout=0.1)
            except queue.Empty:
                continue
            if item is _FINISH or self._stop.is_set():
                return
            func, args = item  # type: ignore[misc]
            try:
                func(*args)
            except BaseException as exc:  # handed to the caller, raised there unchanged
                self._error = exc
                return

    # -- caller ---------------------------------------------------------------------------------
    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise self._error

    def _submit(self, item: object) -> None:
        """Queue ``item``; waits while the queue is full, but never for a worker that has stopped."""
        while True:
            self._raise_if_failed()
            if self._thread is None or not self._thread.is_alive():
                self._raise_if_failed()  # it may have failed since the check above
                raise RuntimeError(f"{self.target}: the writer is closed")
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def write_array(self, rgb: np.ndarray, pts: int | None, time_base: Fraction, like: av.VideoFrame | None = None) -> None:
        """Encode a coded-orientation RGB frame at ``pts``; converted to YUV on the worker."""
        self._submit((self._inner.write_array, (rgb, pts, time_base, like)))

    def write_frame(self, frame: av.VideoFrame) -> None:
        """Encode a decoded frame unchanged, on the worker."""
        self._submit((self._inner.write_frame, (frame,)))

    def call(self, func: Callable[..., object], *args: object) -> None:
        """Run ``func(writer, *args)`` on the worker, ``writer`` being the synchronous writer, in
        order with the frames and packets around it.

        Why: the streaming run draws a frame's regions here, so that the drawing of one frame
        overlaps the analysis of the next instead of following it on the caller's thread. What is
        handed over (the frame above all) belongs to the worker from then on."""
        self._submit((func, (self._inner, *args)))

    def copy(self, packet: av.Packet) -> None:
        """Mux a packet of a copied stream unchanged, in order with the frames around it.

        Routed here, on the caller's thread: the reader closes its container (freeing the streams
        that packets point to) as soon as it is exhausted, possibly before the worker gets here.
        """
        self._raise_if_failed()
        if self._inner.route(packet):
            self._submit((self._inner.mux_copied, (packet,)))

    def finish(self) -> Path:
        """Let the worker write everything queued, join it, then flush, close and rename.

        On a worker error (or Ctrl-C while waiting) the file is discarded, as ``VideoWriter.finish``
        does on its own failures, and the error raised."""
        try:
            self._submit(_FINISH)
            while self._thread is not None and self._thread.is_alive():  # a timed join stays interruptible
                self._thread.join(timeout=0.1)
            self._raise_if_failed()
        except BaseException:
            self.abort()
            raise
        self._thread = None
        return self._inner.finish()

    def abort(self) -> None:
        """Stop the worker without writing what is queued, join it, delete the temporary file.

        Never waits on the queue: it may be full and its worker dead or busy (the caller got
        Ctrl-C while blocked on it). The worker is joined before the container is closed, since
        closing it under a running encoder would crash; a worker stuck in one call for longer
        than ``ABORT_WAIT_S`` is left behind (daemon) with its container, and the file goes anyway.
        """
        self._stop.set()
        thread, self._thread = self._thread, None
        deadline = time.monotonic() + ABORT_WAIT_S
        while thread is not None and thread.is_alive() and time.monotonic() < deadline:
            self._drain()  # drop queued frames now, so their memory goes
            thread.join(timeout=0.05)
        self._drain()
        if thread is not None and thread.is_alive():
            log.warning("%s: the encoder did not stop within %.0f s; leaving it behind", self.target, ABORT_WAIT_S)
            self._inner._discard()
            return
        self._inner.abort()

    def _drain(self) -> None:
        try:
            while True:
                self._queue.get_nowait()
        except queue.Empty:
            pass
