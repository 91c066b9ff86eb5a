"""Pairing the frames of an original and its anonymized copy by time (or start, or index).

Input: two frame streams. Output: (original, copy) pairs, a missing partner marked, so every face
of the original is judged against the frame a viewer of the copy sees at that moment.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import numpy as np

from ..errors import InputError


@dataclass(frozen=True)
class TimedFrame:
    """A decoded frame with its presentation time in seconds (Fraction)."""

    index: int
    time: Fraction
    image: np.ndarray = field(repr=False)


def _timed(frames: Iterable[Any], rate: Fraction) -> Iterator[TimedFrame]:
    """``Frame`` -> ``TimedFrame``; frames without pts get index / average rate."""
    for f in frames:
        t = Fraction(f.pts) * Fraction(f.time_base) if f.pts is not None else Fraction(f.index) / (rate or 30)
        yield TimedFrame(f.index, t, f.image)


def pair_frames(
    originals: Iterable[TimedFrame], anonymized: Iterable[TimedFrame], tolerance: Fraction, match: str = "auto"
) -> Iterator[tuple[TimedFrame, TimedFrame | None, Fraction]]:
    """Yield ``(original, anonymized or None, offset)`` for every original frame, in order.

    A streaming merge of two time-ordered streams: only anonymized frames within ``tolerance`` of
    the current original time are held, so memory stays a few frames whatever the lengths. The
    nearest anonymized frame strictly within ``tolerance`` wins. ``offset`` is what was added to
    original times: 0 for "time", the difference of the first frames' times for "start" (and for
    "auto" when the first frames are further apart than ``tolerance``).
    """
    orig_it, anon_it = iter(originals), iter(anonymized)
    if match == "index":
        for o in orig_it:
            yield o, next(anon_it, None), Fraction(0)
        return
    first_o = next(orig_it, None)
    if first_o is None:
        return
    buf: deque[TimedFrame] = deque()
    first_a = next(anon_it, None)
    if first_a is not None:
        buf.append(first_a)
    offset = Fraction(0)
    if first_a is not None and match in ("start", "auto"):
        gap = first_a.time - first_o.time
        if match == "start" or abs(gap) >= tolerance:
            offset = gap
    exhausted = first_a is None
    for o in _chain(first_o, orig_it):
        t = o.time + offset
        while not exhausted and (not buf or buf[-1].time < t + tolerance):
            a = next(anon_it, None)
            if a is None:
                exhausted = True
            else:
                buf.append(a)
        while buf and buf[0].time <= t - tolerance:
            buf.popleft()
        near = [a for a in buf if abs(a.time - t) < tolerance]
        yield o, (min(near, key=lambda a: abs(a.time - t)) if near else None), offset


def _chain(first: TimedFrame, rest: Iterator[TimedFrame]) -> Iterator[TimedFrame]:
    yield first
    yield from rest


# -- geometry and identities ------------------------------------------------------------------


def check_sizes(orig: Any, anon: Any, original: str, anonymized: str) -> None:
    """Refuse two files that cannot be an original and its copy: another shape or another length."""
    ar_o, ar_a = orig.width / max(orig.height, 1), anon.width / max(anon.height, 1)
    if abs(ar_o - ar_a) > 0.03 * ar_o:
        raise InputError(
            f"{anonymized}: {anon.width}x{anon.height} cannot be an anonymized copy of {original} ({orig.width}x{orig.height}); "
            "give the original first, then its copy"
        )
    d_o, d_a = float(orig.duration), float(anon.duration)
    if d_o > 0 and d_a > 0 and abs(d_o - d_a) > max(1.0, 0.1 * max(d_o, d_a)):
        raise InputError(
            f"{anonymized} lasts {d_a:.1f} s and {original} {d_o:.1f} s: not the same video; give the original first, then its copy"
        )
