"""Temporal completion: raw tracks in, contiguous ``Track`` objects out (next: identities, plan).

Missed frames inside a track are interpolated; each track is extended a few frames before its
first and after its last detection (faces entering the frame and motion blur at cuts are the
classic leaks), clipped to its shot. Such samples are ``observed=False`` and carry a margin that
grows with the distance to the nearest observation: when unsure, masks grow. Box centres and sizes
are smoothed in both directions, and the result always contains the raw detected box, so smoothing
never uncovers a face pixel. Landmarks are smoothed the same way (they place the cloak, not masks).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .config import TrackConfig
from .track import RawTrack
from .types import Shot, Track


def _interp(frames: np.ndarray, obs_frames: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Linear interpolation of each column of ``values`` (constant beyond the ends)."""
    flat = values.reshape(len(values), -1)
    out = np.stack([np.interp(frames, obs_frames, flat[:, j]) for j in range(flat.shape[1])], axis=1)
    return out.reshape((len(frames),) + values.shape[1:]).astype(np.float32)


def _gaussian_smooth(x: np.ndarray, sigma: float) -> np.ndarray:
    """Zero-lag Gaussian smoothing along axis 0 (edges padded): an offline, bidirectional filter."""
    if sigma <= 0 or len(x) < 2:
        return x.copy()
    radius = int(np.ceil(3 * sigma))
    k = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    k /= k.sum()
    pad = np.concatenate([np.repeat(x[:1], radius, 0), x, np.repeat(x[-1:], radius, 0)])
    return np.stack([np.convolve(pad[:, j], k, mode="valid") for j in range(x.shape[1])], axis=1)


def _running_max(x: np.ndarray, radius: int) -> np.ndarray:
    """Max over a centred window along axis 0: sizes grow early and shrink late (fail closed)."""
    if radius <= 0:
        return x
    pad = np.concatenate([np.repeat(x[:1], radius, 0), x, np.repeat(x[-1:], radius, 0)])
    return np.max(np.stack([pad[i : i + len(x)] for i in range(2 * radius + 1)]), axis=0)


def smooth_boxes(boxes: np.ndarray, sigma: float) -> np.ndarray:
    """Smooth centre and size, then grow each box just enough to contain the raw one.

    The centre follows the smoothed path; the half-size is the smoothed half-size or, where the raw
    box sticks out, the distance needed to contain it, held by a running max so the size does not
    flicker. Containment is exact: the result never uncovers a raw detection.
    """
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2
    half = (boxes[:, 2:] - boxes[:, :2]) / 2
    c = _gaussian_smooth(centre, sigma)
    h = _gaussian_smooth(half, sigma)
    need = np.maximum(np.abs(boxes[:, :2] - c), np.abs(boxes[:, 2:] - c))
    h = np.maximum(h, _running_max(need, int(np.ceil(sigma))))
    return np.concatenate([c - h, c + h], axis=1).astype(np.float32)


def complete_track(raw: RawTrack, shot: Shot, cfg: TrackConfig) -> Track:
    """Fill gaps, extend, smooth and attach uncertainty margins to one raw track."""
    obs_frames = np.asarray(raw.frames, np.int64)
    obs_boxes = np.asarray(raw.boxes, np.float32)
    start = max(shot.start, int(obs_frames[0]) - cfg.extend)
    end = min(shot.end, int(obs_frames[-1]) + 1 + cfg.extend)
    frames = np.arange(start, end, dtype=np.int64)
    observed = np.isin(frames, obs_frames)
    boxes = _interp(frames, obs_frames, obs_boxes)
    scores = np.interp(frames, obs_frames, np.asarray(raw.scores, np.float32)).astype(np.float32)
    landmarks = None
    if all(lm is not None for lm in raw.landmarks):
        landmarks = _interp(frames, obs_frames, np.asarray(raw.landmarks, np.float32))
        # the same zero-lag smoothing as the box centres: the cloak aligns faces by these points, and
        # detector noise (larger on half-scale frames, pipeline.CoarsePass) would make the face wobble
        flat = _gaussian_smooth(landmarks.reshape(len(frames), -1), cfg.smooth_sigma)
        landmarks = flat.reshape(landmarks.shape).astype(np.float32)

    boxes = smooth_boxes(boxes, cfg.smooth_sigma)

    # distance (frames) to the nearest real observation -> margin
    idx = np.searchsorted(obs_frames, frames)
    prev_d = np.where(idx > 0, frames - obs_frames[np.clip(idx - 1, 0, None)], 1 << 30)
    next_d = np.where(idx < len(obs_frames), obs_frames[np.clip(idx, None, len(obs_frames) - 1)] - frames, 1 << 30)
    dist = np.minimum(prev_d, next_d).astype(np.float32)
    margin = np.minimum(dist * cfg.gap_margin, cfg.max_margin).astype(np.float32)
    return Track(
        track_id=raw.track_id,
        shot_index=raw.shot_index,
        frames=frames,
        boxes=boxes.astype(np.float32),
        scores=scores,
        landmarks=landmarks,
        observed=observed,
        margin=margin,
    )


def complete_tracks(raws: Sequence[RawTrack], shots: Sequence[Shot], cfg: TrackConfig) -> list[Track]:
    """``complete_track`` for every raw track, in track-id order."""
    by_index = {s.index: s for s in shots}
    return [complete_track(r, by_index[r.shot_index], cfg) for r in sorted(raws, key=lambda r: r.track_id)]
