"""Temporal completion: raw tracks in, contiguous ``Track`` objects out (next: identities, plan).

Missed frames inside a track are interpolated; each track is extended a few frames before its
first and after its last detection (faces entering the frame and motion blur at cuts are the
classic leaks), clipped to its shot. Such samples are ``observed=False`` and carry a margin that
grows with the distance to the nearest observation: when unsure, masks grow. Box centres and sizes
are smoothed in both directions, and the result always contains the raw detected box, so smoothing
never uncovers a face pixel.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .config import TrackConfig
from .track import RawTrack
from .types import Shot, Track

SMOOTH_RADIUS = 2  # frames on each side of the centred moving average


def _interp(frames: np.ndarray, obs_frames: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Linear interpolation of each column of ``values`` (constant beyond the ends)."""
    flat = values.reshape(len(values), -1)
    out = np.stack([np.interp(frames, obs_frames, flat[:, j]) for j in range(flat.shape[1])], axis=1)
    return out.reshape((len(frames),) + values.shape[1:]).astype(np.float32)


def _moving_average(x: np.ndarray, radius: int) -> np.ndarray:
    """Centred moving average along axis 0 with edge padding (bidirectional, no lag)."""
    if radius <= 0 or len(x) < 2:
        return x.copy()
    pad = np.concatenate([np.repeat(x[:1], radius, 0), x, np.repeat(x[-1:], radius, 0)])
    kernel = np.ones(2 * radius + 1, np.float32) / (2 * radius + 1)
    return np.stack([np.convolve(pad[:, j], kernel, mode="valid") for j in range(x.shape[1])], axis=1)


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

    # bidirectional smoothing of centre and size, then never smaller than the raw box
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2
    size = boxes[:, 2:] - boxes[:, :2]
    c_s = _moving_average(centre, SMOOTH_RADIUS)
    s_s = _moving_average(size, SMOOTH_RADIUS)
    smoothed = np.concatenate([c_s - s_s / 2, c_s + s_s / 2], axis=1)
    boxes = np.concatenate([np.minimum(smoothed[:, :2], boxes[:, :2]), np.maximum(smoothed[:, 2:], boxes[:, 2:])], axis=1)

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
