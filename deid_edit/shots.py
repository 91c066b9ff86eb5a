"""Shot-cut detection: the analyze pass's decoded frames in, ``Shot`` ranges out (next: track).

The only module importing scenedetect. Editors can instead hand over their own cut list
(``--shots-from``: EDL, OTIO or CSV), which replaces detection. It is fed the same frames the face detector sees (one
decode for both), downscaled, through PySceneDetect's adaptive content detector, which compares
each frame's change with its neighbours' and so tolerates camera motion better than a fixed
threshold, plus its threshold detector for fades through black.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np
from scenedetect import AdaptiveDetector, ThresholdDetector
from scenedetect.common import FrameTimecode

from .config import ShotConfig
from .errors import InputError
from .timefmt import parse_timecode
from .types import Shot

SHOT_WIDTH = 256


class ShotDetector:
    """Incremental cut detection over frames pushed in order."""

    def __init__(self, cfg: ShotConfig, fps: Fraction) -> None:
        self.cfg = cfg
        self.fps = fps if fps > 0 else Fraction(30)
        self.detector = AdaptiveDetector(
            adaptive_threshold=cfg.adaptive_threshold,
            min_scene_len=cfg.min_shot_len,
            min_content_val=cfg.min_content,
        )
        # fades through black: the threshold detector cuts where the picture comes back
        self.fades = ThresholdDetector(threshold=cfg.fade_threshold, min_scene_len=cfg.min_shot_len)
        self.cuts: list[int] = []
        self.last = -1

    def push(self, index: int, rgb: np.ndarray) -> None:
        """Feed the next frame (upright RGB, any size)."""
        if not self.cfg.enabled:
            return
        h, w = rgb.shape[:2]
        if w > SHOT_WIDTH:
            rgb = cv2.resize(rgb, (SHOT_WIDTH, max(2, round(h * SHOT_WIDTH / w))), interpolation=cv2.INTER_AREA)
        bgr = np.ascontiguousarray(rgb[..., ::-1])
        tc_now = FrameTimecode(index, fps=self.fps)
        for detector in (self.detector, self.fades):
            self.cuts.extend(int(tc.frame_num) for tc in detector.process_frame(tc_now, bgr))
        self.last = index

    def merged(self) -> list[int]:
        """The cuts found so far, one per transition (both detectors may fire on one)."""
        merged: list[int] = []
        for cut in sorted(set(self.cuts)):
            if not merged or cut - merged[-1] >= self.cfg.min_shot_len:
                merged.append(cut)
        return merged

    def settled(self) -> int:
        """Frames before this index can gain no new cut: streaming may track and render them.

        The adaptive detector reports a cut ``window_width`` frames after it; the fade detector
        reports one when the picture comes back, placed inside the black stretch, so while the
        picture is black nothing from the fade's start on is settled. Cuts come out in order, and
        ``merged`` keeps earlier cuts whatever comes later, so a settled shot never changes."""
        if not self.cfg.enabled:
            return 1 << 62  # no cut will ever come: every frame is settled
        settled = self.last + 1 - int(getattr(self.detector, "window_width", 2))
        fade = getattr(self.fades, "last_fade", None)
        if fade and fade.get("type") == "out" and fade.get("frame") is not None:
            settled = min(settled, int(fade["frame"].frame_num))
        return max(0, settled)

    def finish(self, frame_count: int) -> list[Shot]:
        """Close detection and return the shots covering [0, frame_count)."""
        if self.cfg.enabled and self.last >= 0:
            tc_end = FrameTimecode(self.last, fps=self.fps)
            for detector in (self.detector, self.fades):
                self.cuts.extend(int(tc.frame_num) for tc in detector.post_process(tc_end))
        return shots_from_cuts(self.merged(), frame_count)


def shots_from_cuts(cuts: list[int], frame_count: int) -> list[Shot]:
    """Half-open shots from the first frames of new shots."""
    bounds = [0] + sorted({c for c in cuts if 0 < c < frame_count}) + [frame_count]
    return [Shot(i, a, b) for i, (a, b) in enumerate(zip(bounds[:-1], bounds[1:])) if b > a]


# -- cut lists from an editor (--shots-from) --------------------------------------------------
def _cuts_from_edl(text: str, fps: Fraction) -> list[int]:
    """CMX3600: each event's record-in, relative to the first event's record-in."""
    tc = r"(\d\d:\d\d:\d\d[:;]\d\d)"
    events = re.findall(rf"^\s*\d+\s+\S+\s+\S+\s+\S+\s+{tc}\s+{tc}\s+{tc}\s+{tc}", text, flags=re.M)
    if not events:
        raise ValueError("no CMX3600 events found")
    starts = sorted(parse_timecode(e[2], fps) for e in events)
    return [s - starts[0] for s in starts]


def _cuts_from_otio(data: dict, fps: Fraction) -> list[int]:
    """The first video track of an OpenTimelineIO timeline: a cut at every item boundary."""
    tracks = data.get("tracks", {}).get("children", [])
    video = [t for t in tracks if t.get("kind", "Video") == "Video"] or tracks
    if not video:
        raise ValueError("timeline has no tracks")
    pos = Fraction(0)
    cuts = []
    for item in video[0].get("children", []):
        dur = (item.get("source_range") or {}).get("duration")
        if not dur:
            continue
        cuts.append(int(round(pos * fps)))
        pos += Fraction(str(dur["value"])) / Fraction(str(dur["rate"]))
    return cuts


def load_cut_list(path: str | os.PathLike[str], fps: Fraction, frame_count: int) -> list[Shot]:
    """Shots from an editor's cut list: EDL (CMX3600), OTIO JSON, or CSV/text of cut timecodes.

    A CSV/text file lists the first frame of each new shot, one per line or in the first column,
    as a frame number, seconds, or timecode; a header line is ignored.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise InputError(f"{p}: cannot read the cut list ({exc.strerror}); check the path") from exc
    try:
        if p.suffix.lower() == ".edl" or "FCM:" in text[:400]:
            cuts = _cuts_from_edl(text, fps)
        elif p.suffix.lower() == ".otio" or text.lstrip().startswith("{"):
            cuts = _cuts_from_otio(json.loads(text), fps)
        else:
            cuts = []
            for n, row in enumerate(csv.reader(io.StringIO(text))):
                if not row or not row[0].strip() or row[0].strip().startswith("#"):
                    continue
                try:
                    cuts.append(parse_timecode(row[0], fps))
                except ValueError:
                    if n == 0:
                        continue  # header
                    raise
    except (ValueError, KeyError, TypeError) as exc:
        raise InputError(f"{p}: not a usable cut list ({exc}); give an EDL, an OTIO timeline or a CSV of cut timecodes") from exc
    return shots_from_cuts(cuts, frame_count)
