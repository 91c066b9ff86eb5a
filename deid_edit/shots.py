"""Shot-cut detection: the analyze pass's decoded frames in, ``Shot`` ranges out (next: track).

The only module importing scenedetect. It is fed the same frames the face detector sees (one
decode for both), downscaled, through PySceneDetect's adaptive content detector, which compares
each frame's change with its neighbours' and so tolerates camera motion better than a fixed
threshold.
"""

from __future__ import annotations

from fractions import Fraction

import cv2
import numpy as np
from scenedetect import AdaptiveDetector
from scenedetect.common import FrameTimecode

from .config import ShotConfig
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
        for tc in self.detector.process_frame(FrameTimecode(index, fps=self.fps), bgr):
            self.cuts.append(int(tc.frame_num))
        self.last = index

    def finish(self, frame_count: int) -> list[Shot]:
        """Close detection and return the shots covering [0, frame_count)."""
        if self.cfg.enabled and self.last >= 0:
            for tc in self.detector.post_process(FrameTimecode(self.last, fps=self.fps)):
                self.cuts.append(int(tc.frame_num))
        return shots_from_cuts(self.cuts, frame_count)


def shots_from_cuts(cuts: list[int], frame_count: int) -> list[Shot]:
    """Half-open shots from the first frames of new shots."""
    bounds = [0] + sorted({c for c in cuts if 0 < c < frame_count}) + [frame_count]
    return [Shot(i, a, b) for i, (a, b) in enumerate(zip(bounds[:-1], bounds[1:])) if b > a]
