"""Tracking within a shot: per-frame ``FrameDetections`` and ``Shot`` ranges in, raw tracks out
(next: smooth, which fills gaps and extends them).

The tracker owns its ids. Each track keeps a constant-velocity prediction of its box; association
is two-stage (ByteTrack's idea): confident detections are matched first, then low-score
detections continue existing tracks, which keeps blurred or turning faces followed. A low-score
detection left over starts a *weak* track, kept only if it persists for ``weak_hits`` detections:
a dim or defocused face in the background is scored low in every frame (hamilton's audience behind
the front row, CenterFace 0.05-0.2) and would otherwise never be masked, while one-off low-score
noise still starts nothing. Tracks never cross a shot boundary.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .config import TrackConfig
from .geometry import greedy_match, iou_matrix
from .types import FrameDetections, Shot, in_face_order

_STORES = ("_frames", "_boxes", "_scores", "_landmarks", "_has_lm", "_det")  # RawTrack's arrays


class RawTrack:
    """Observations of one face; frames may have gaps (filled later).

    Kept in arrays that grow by doubling (about 80 bytes an observation, not 320 as lists of small
    arrays): an open shot's tracks live as long as the shot, and a one-take interview, a long
    clip or a live camera is one shot for hours. ``frames``, ``boxes``, ``scores`` and
    ``det_indices`` read as arrays of the observations so far; ``landmarks`` as an (n, 5, 2) array,
    or a list holding None where a detection had none."""

    def __init__(self, track_id: int, shot_index: int, confident: bool = True) -> None:
        self.track_id = track_id
        self.shot_index = shot_index
        self.confident = confident  # False while every observation is a low-score one (a weak track)
        self.velocity = np.zeros(4, np.float32)
        self._n = 0
        self._frames = np.zeros(8, np.int64)
        self._boxes = np.zeros((8, 4), np.float32)
        self._scores = np.zeros(8, np.float32)
        self._landmarks = np.zeros((8, 5, 2), np.float32)
        self._has_lm = np.zeros(8, bool)
        self._det = np.zeros(8, np.int64)  # index of each observation in its FrameDetections

    def __len__(self) -> int:
        return self._n

    @property
    def frames(self) -> np.ndarray:
        return self._frames[: self._n]

    @property
    def boxes(self) -> np.ndarray:
        return self._boxes[: self._n]

    @property
    def scores(self) -> np.ndarray:
        return self._scores[: self._n]

    @property
    def det_indices(self) -> np.ndarray:
        return self._det[: self._n]

    @property
    def landmarks(self) -> np.ndarray | list[np.ndarray | None]:
        lm = self._landmarks[: self._n]
        if self._has_lm[: self._n].all():
            return lm
        return [lm[i] if self._has_lm[i] else None for i in range(self._n)]

    def add(self, frame: int, box: np.ndarray, score: float, lm: np.ndarray | None, det_index: int = -1) -> None:
        n = self._n
        if n:
            dt = frame - int(self._frames[n - 1])
            v = (box - self._boxes[n - 1]) / max(dt, 1)
            self.velocity = 0.6 * self.velocity + 0.4 * v if n > 1 else v
        if n == len(self._frames):
            for name in _STORES:
                a = getattr(self, name)
                grown = np.zeros((2 * n, *a.shape[1:]), a.dtype)
                grown[:n] = a
                setattr(self, name, grown)
        self._frames[n], self._boxes[n], self._scores[n], self._det[n] = frame, box, score, det_index
        self._has_lm[n] = lm is not None
        if lm is not None:
            self._landmarks[n] = lm
        self._n = n + 1

    def since(self, frame: int) -> RawTrack:
        """A copy holding only the observations from ``frame`` on (velocity and state kept)."""
        k = int(np.searchsorted(self.frames, frame))
        c = RawTrack(self.track_id, self.shot_index, self.confident)
        c.velocity = self.velocity.copy()
        c._n = self._n - k
        for name in _STORES:
            a = getattr(self, name)
            room = max(c._n, 8)  # an empty copy keeps room to grow
            grown = np.zeros((room, *a.shape[1:]), a.dtype)
            grown[: c._n] = a[k : self._n]
            setattr(c, name, grown)
        return c

    def predict(self, frame: int) -> np.ndarray:
        n = self._n - 1
        return self._boxes[n] + self.velocity * (frame - int(self._frames[n]))


def face_ordered(landmarks: Sequence[np.ndarray | None]) -> float:
    """Share of samples whose landmarks are ``in_face_order``; samples without landmarks count as
    ordered (nothing says otherwise). Why: at low score CenterFace also fires on hands and folds of
    cloth, where its landmarks are often scrambled (sofa_interviewee's clasped hands: eyes below the
    mouth in every sample), while on dim real faces they keep the layout (hamilton's audience)."""
    if not len(landmarks):
        return 0.0
    return sum(lm is None or in_face_order(lm) for lm in landmarks) / len(landmarks)


class Tracker:
    """Two-stage IoU tracker with constant-velocity prediction; ids are unique per tracker."""

    def __init__(self, cfg: TrackConfig, high_threshold: float, weak_min_side: float = 0.0) -> None:
        self.cfg = cfg
        self.high = high_threshold
        self.weak_min_side = weak_min_side  # a weak track starts only from a box this large (short side)
        self.continue_min = high_threshold * cfg.continue_factor
        self.next_id = 0

    def track_shot(self, shot: Shot, detections: Sequence[FrameDetections]) -> list[RawTrack]:
        """Tracks of one shot; ``detections`` are indexed by frame index."""
        self.begin(shot.index)
        for f in range(shot.start, shot.end):
            self.step(f, detections[f])
        return self.end()

    def begin(self, shot_index: int) -> None:
        """Start a shot: no track continues across a cut. ``step`` then takes its frames in order."""
        self.shot_index = shot_index
        self.active: list[RawTrack] = []
        self.done: list[RawTrack] = []

    def end(self) -> list[RawTrack]:
        """Close the shot: its confirmed tracks (as ``track_shot`` returns them)."""
        tracks = [t for t in [*self.done, *self.active] if self._keep(t)]
        self.active, self.done = [], []
        return tracks

    def so_far(self, since: int = 0) -> list[RawTrack]:
        """The confirmed tracks of the open shot up to the last frame stepped, as if it ended there,
        holding only their observations from frame ``since`` on (copies: stepping on changes nothing
        returned). Streaming renders from these ahead of the cut; ``since`` keeps the cost of a
        long shot (a live camera) bounded by the window instead of growing with the shot."""
        return [t.since(since) for t in [*self.done, *self.active] if self._keep(t) and t.frames[-1] >= since]

    def step(self, f: int, det: FrameDetections) -> None:
        """Associate frame ``f``'s detections with the open shot's tracks (frames in order)."""
        active = self.active
        preds = np.array([t.predict(f) for t in active], np.float32).reshape(-1, 4)
        high = np.nonzero(det.scores >= self.high)[0]
        low = np.nonzero(det.scores < self.high)[0]
        matched_tracks: set[int] = set()
        used_high: set[int] = set()
        # confident tracks choose first, so a weak track (often a looser duplicate box of a
        # face already followed) can never take a face's detection from its own track
        for want in (True, False):
            rows = [i for i in range(len(active)) if active[i].confident == want]
            cols = [c for c in range(len(high)) if c not in used_high]
            for r, c in greedy_match(iou_matrix(preds[rows], det.boxes[high[cols]]), self.cfg.iou_match):
                self._add(active[rows[r]], f, det, int(high[cols[c]]))
                matched_tracks.add(rows[r])
                used_high.add(cols[c])
        for r in matched_tracks:
            active[r].confident = True
        rest = [i for i in range(len(active)) if i not in matched_tracks]
        used_low: set[int] = set()
        if rest and len(low):
            iou = iou_matrix(preds[rest], det.boxes[low])
            # a confident track only takes the upper low band: the weakest boxes are looser and
            # would drag it off the face (and split it); they may only make weak tracks
            confident = np.array([active[i].confident for i in rest])
            iou[np.ix_(confident, det.scores[low] < self.continue_min)] = 0.0
            for r, c in greedy_match(iou, self.cfg.iou_match):
                self._add(active[rest[r]], f, det, int(low[c]))
                matched_tracks.add(rest[r])
                used_low.add(c)
        births = [(int(i), True) for c, i in enumerate(high) if c not in used_high]
        if self.cfg.weak_hits and len(low):
            # a leftover low-score box on a face some track already follows is a duplicate, not a face
            near = np.concatenate([preds, det.boxes[high]])
            taken = iou_matrix(det.boxes[low], near).max(axis=1) if len(near) else np.zeros(len(low))
            # so is a tiny one: at low score, boxes far under --min-face are texture (a lamp, a pattern)
            sides = np.minimum(det.boxes[low, 2] - det.boxes[low, 0], det.boxes[low, 3] - det.boxes[low, 1])
            fresh = (taken < self.cfg.iou_match) & (sides >= self.weak_min_side)
            births += [(int(i), False) for c, i in enumerate(low) if c not in used_low and fresh[c]]
        for i, confident in births:
            t = RawTrack(self.next_id, self.shot_index, confident=confident)
            self.next_id += 1
            self._add(t, f, det, i)
            active.append(t)
        still = []
        for t in active:
            (still if f - t.frames[-1] <= self.cfg.max_gap else self.done).append(t)
        self.active = still

    def _keep(self, t: RawTrack) -> bool:
        """Confirmation: a confident track needs ``min_hits`` (one very sure detection is enough);
        a weak track, only ever seen at low score, must persist for ``weak_hits`` detections, most
        of them with the detector's landmarks in face order."""
        if not t.confident:
            return bool(self.cfg.weak_hits) and len(t.frames) >= self.cfg.weak_hits and face_ordered(t.landmarks) >= 0.5
        return len(t.frames) >= self.cfg.min_hits and (len(t.frames) > 1 or t.scores[0] >= self.cfg.confirm_score)

    @staticmethod
    def _add(track: RawTrack, frame: int, det: FrameDetections, i: int) -> None:
        lm = None if det.landmarks is None else det.landmarks[i]
        track.add(frame, det.boxes[i], float(det.scores[i]), lm, i)


def track_video(
    detections: Sequence[FrameDetections], shots: Sequence[Shot], cfg: TrackConfig, high_threshold: float, weak_min_side: float = 0.0
) -> list[RawTrack]:
    """Raw tracks of every shot, ids unique over the video and ordered by first frame."""
    tracker = Tracker(cfg, high_threshold, weak_min_side)
    tracks: list[RawTrack] = []
    for shot in shots:
        tracks.extend(tracker.track_shot(shot, detections))
    return tracks
