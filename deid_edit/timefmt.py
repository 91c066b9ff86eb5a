"""Times for people: timecodes and clock times written and read the same way everywhere.

Input: frame numbers, seconds or text. Output: ``HH:MM:SS:FF`` (non-drop-frame, as an NLE's "go to
timecode" takes it), ``HH:MM:SS.mmm``, or a frame number read from an editor's cut list.
The contact sheet, the audit, the kept report and cut lists share these, so a time printed by one
can be typed into another.
"""

from __future__ import annotations

import re
from fractions import Fraction

NO_TIME = "--:--:--:--"
NO_CLOCK = "--:--:--.---"


def timecode(frame: int, rate: Fraction | float) -> str:
    """Non-drop-frame ``HH:MM:SS:FF`` of frame ``frame``, counted at the rounded nominal rate.

    29.97 fps counts 30 frames a second like an NLE's NDF timecode does, so the editor can type it
    into "go to timecode" and land on this frame.
    """
    if frame < 0:
        return NO_TIME
    fps = max(1, round(float(rate)))
    secs, ff = divmod(frame, fps)
    return f"{secs // 3600:02d}:{secs // 60 % 60:02d}:{secs % 60:02d}:{ff:02d}"


def clock(seconds: Fraction | None) -> str:
    """``HH:MM:SS.mmm`` of a time in seconds (rounded to the millisecond)."""
    if seconds is None or seconds < 0:
        return NO_CLOCK
    ms = round(Fraction(seconds) * 1000)
    secs, ms = divmod(ms, 1000)
    return f"{secs // 3600:02d}:{secs // 60 % 60:02d}:{secs % 60:02d}.{ms:03d}"


def parse_timecode(text: str, fps: Fraction) -> int:
    """'123' (frames), '12.5s' / '12.5' with a dot (seconds), 'HH:MM:SS:FF' or 'HH:MM:SS.mmm'."""
    t = text.strip()
    if re.fullmatch(r"\d+", t):
        return int(t)
    if re.fullmatch(r"\d+(\.\d+)?s?", t):
        return int(round(Fraction(t.rstrip("s")) * fps))
    m = re.fullmatch(r"(\d+):(\d+):(\d+)[:;](\d+)", t)
    if m:
        h, mi, s, f = (int(x) for x in m.groups())
        nominal = round(fps)
        return int(round((h * 3600 + mi * 60 + s) * nominal + f)) if nominal else 0
    m = re.fullmatch(r"(\d+):(\d+):(\d+(?:\.\d+)?)", t)
    if m:
        h, mi, s = m.groups()
        return int(round((int(h) * 3600 + int(mi) * 60 + Fraction(s)) * fps))
    raise ValueError(f"cannot read {text!r} as a frame number or timecode")
