"""Tracking within a shot: per-frame ``FrameDetections`` and ``Shot`` ranges in, raw tracks out
(next: smooth, which fills gaps and extends them).

The tracker owns its ids. Each track keeps a constant-velocity prediction of its box; association
is two-stage (ByteTrack's idea): confident detections are matched first, then low-score
detections may only continue existing tracks, which keeps blurred or turning faces followed
without letting low-score noise start tracks. Tracks never cross a shot boundary.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from .config import TrackConfig
from .types import FrameDetections, Shot


@dataclass
class RawTrack:
    """Observations of one face; frames may have gaps (filled later)."""

    track_id: int
    shot_index: int
    frames: list[int] = field(default_factory=list)
    boxes: list[np.ndarray] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    landmarks: list[np.ndarray | None] = field(default_factory=list)
    det_indices: list[int] = field(default_factory=list)  # index of each observation in its FrameDetections
    velocity: np.ndarray = field(default_factory=lambda: np.zeros(4, np.float32))

    def add(self, frame: int, box: np.ndarray, score: float, lm: np.ndarray | None, det_index: int = -1) -> None:
        if self.frames:
            dt = frame - self.frames[-1]
            v = (box - self.boxes[-1]) / max(dt, 1)
            self.velocity = 0.6 * self.velocity + 0.4 * v if len(self.frames) > 1 else v
        self.frames.append(frame)
        self.boxes.append(box.astype(np.float32))
        self.scores.append(float(score))
        self.landmarks.append(lm)
        self.det_indices.append(det_index)

    def predict(self, frame: int) -> np.ndarray:
        return self.boxes[-1] + self.velocity * (frame - self.frames[-1])


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of xyxy boxes (A, 4) x (B, 4)."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)), np.float32)
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return (inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-6)).astype(np.float32)


def greedy_match(iou: np.ndarray, threshold: float) -> list[tuple[int, int]]:
    """Pairs (row, col) by descending IoU, each used once, IoU >= threshold."""
    pairs: list[tuple[int, int]] = []
    if iou.size == 0:
        return pairs
    order = np.dstack(np.unravel_index(np.argsort(-iou, axis=None), iou.shape))[0]
    used_r: set[int] = set()
    used_c: set[int] = set()
    for r, c in order:
        if iou[r, c] < threshold:
            break
        if r in used_r or c in used_c:
            continue
        used_r.add(int(r))
        used_c.add(int(c))
        pairs.append((int(r), int(c)))
    return pairs


class Tracker:
    """Two-stage IoU tracker with constant-velocity prediction; ids are unique per tracker."""

    def __init__(self, cfg: TrackConfig, high_threshold: float) -> None:
        self.cfg = cfg
        self.high = high_threshold
        self.next_id = 0

    def track_shot(self, shot: Shot, detections: Sequence[FrameDetections]) -> list[RawTrack]:
        """Tracks of one shot; ``detections`` are indexed by frame index."""
        active: list[RawTrack] = []
        done: list[RawTrack] = []
        for f in range(shot.start, shot.end):
            det = detections[f]
            preds = np.array([t.predict(f) for t in active], np.float32).reshape(-1, 4)
            high = np.nonzero(det.scores >= self.high)[0]
            low = np.nonzero(det.scores < self.high)[0]
            matched_tracks: set[int] = set()
            used_high: set[int] = set()
            for r, c in greedy_match(iou_matrix(preds, det.boxes[high]), self.cfg.iou_match):
                self._add(active[r], f, det, int(high[c]))
                matched_tracks.add(r)
                used_high.add(c)
            rest = [i for i in range(len(active)) if i not in matched_tracks]
            if rest and len(low):
                for r, c in greedy_match(iou_matrix(preds[rest], det.boxes[low]), self.cfg.iou_match):
                    self._add(active[rest[r]], f, det, int(low[c]))
                    matched_tracks.add(rest[r])
            for c, i in enumerate(high):
                if c not in used_high:
                    t = RawTrack(self.next_id, shot.index)
                    self.next_id += 1
                    self._add(t, f, det, int(i))
                    active.append(t)
            still = []
            for t in active:
                (still if f - t.frames[-1] <= self.cfg.max_gap else done).append(t)
            active = still
        done.extend(active)
        return [t for t in done if len(t.frames) >= self.cfg.min_hits and (len(t.frames) > 1 or t.scores[0] >= self.cfg.confirm_score)]

    @staticmethod
    def _add(track: RawTrack, frame: int, det: FrameDetections, i: int) -> None:
        lm = None if det.landmarks is None else det.landmarks[i]
        track.add(frame, det.boxes[i], float(det.scores[i]), lm, i)


def track_video(detections: Sequence[FrameDetections], shots: Sequence[Shot], cfg: TrackConfig, high_threshold: float) -> list[RawTrack]:
    """Raw tracks of every shot, ids unique over the video and ordered by first frame."""
    tracker = Tracker(cfg, high_threshold)
    tracks: list[RawTrack] = []
    for shot in shots:
        tracks.extend(tracker.track_shot(shot, detections))
    return tracks
