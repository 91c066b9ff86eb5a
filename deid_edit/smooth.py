"""Temporal completion: raw tracks in, contiguous ``Track`` objects out (next: identities, plan).

Gaps inside a track are interpolated and each track is extended a few frames at both ends, within its
shot. Where a track ends the face is often still in the picture (``plan_ends``): the track is held to
a nearby cut, carried over a gap to a track that starts at the same place, or follows its motion until
its head has left the picture. Such samples are ``observed=False`` with a margin that grows with the
distance to the nearest detection: when unsure, masks grow. Boxes and landmarks are smoothed in both
directions; a smoothed box always contains the detected one, so smoothing never uncovers a face pixel.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

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


EDGE_NEAR = 0.25  # a box within this many of its widths (heights) of a frame edge is at the edge
MOTION_FRAMES = 8  # a lost face is predicted to move on for at most this many frames, then held
BRIDGE_NEAR = 1.0  # the next track must start within this many box sizes of where this one ended
BRIDGE_SIZE = 2.5  # ...with a box at most this many times larger or smaller


@dataclass(frozen=True)
class Scene:
    """What a track's ends are judged against: the upright frame size and the frame rate."""

    width: int
    height: int
    rate: float

    def frames(self, seconds: float) -> int:
        return int(round(seconds * self.rate))


@dataclass(frozen=True)
class Ends:
    """How far a track reaches beyond its first and last detection, and what fills those frames."""

    start: int  # first frame of the completed track
    end: int  # one past its last frame
    anchors: tuple[tuple[int, np.ndarray], ...] = ()  # (frame, box) of the track it is carried over to
    back_velocity: np.ndarray | None = None  # per-frame motion before the first detection, if predicted
    velocity: np.ndarray | None = None  # per-frame motion after the last detection, if predicted


def end_velocity(frames: np.ndarray, boxes: np.ndarray, tail: bool, span: int = 6) -> np.ndarray:
    """Per-frame box motion (xyxy) over the last (``tail``) or first few observations, at most a
    quarter of the box size per frame (a detector jump is not a motion)."""
    f, b = (frames[-span:], boxes[-span:]) if tail else (frames[:span], boxes[:span])
    if len(f) < 2 or f[-1] == f[0]:
        return np.zeros(4, np.float32)
    v = (b[-1] - b[0]) / float(f[-1] - f[0])
    ref = b[-1] if tail else b[0]
    size = max(float(ref[2] - ref[0]), float(ref[3] - ref[1]), 1.0)
    return np.clip(v, -0.25 * size, 0.25 * size).astype(np.float32)


def at_edge(box: np.ndarray, scene: Scene) -> bool:
    """Whether ``box`` touches or nearly touches an edge of the frame."""
    bw, bh = float(box[2] - box[0]), float(box[3] - box[1])
    near_x, near_y = EDGE_NEAR * bw, EDGE_NEAR * bh
    return bool(box[0] <= near_x or box[1] <= near_y or box[2] >= scene.width - near_x or box[3] >= scene.height - near_y)


def in_frame(box: np.ndarray, scene: Scene) -> bool:
    return bool(box[2] > 0 and box[0] < scene.width and box[3] > 0 and box[1] < scene.height)


def moved(box: np.ndarray, velocity: np.ndarray, frames: int) -> np.ndarray:
    return (box + velocity * min(frames, MOTION_FRAMES)).astype(np.float32)


HEAD_REACH = 0.5  # a head reaches this many box sizes beyond a detector's face box (ear, hair, back of the head)


def frames_in_picture(box: np.ndarray, velocity: np.ndarray, scene: Scene, limit: int) -> int:
    """How many frames (up to ``limit``) the head around a face box moving at ``velocity`` stays at
    least partly inside the picture (the detector's box leaves first: it hugs the features, and
    the ear or the back of a head in profile trails behind it)."""
    w, h = float(box[2] - box[0]), float(box[3] - box[1])
    reach = np.array([-w, -h, w, h], np.float32) * HEAD_REACH
    n = 0
    while n < limit and in_frame(moved(box, velocity, n + 1) + reach, scene):
        n += 1
    return n


def close_enough(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether box ``b`` starts where box ``a`` ended: centres within ``BRIDGE_NEAR`` box sizes and
    sizes within ``BRIDGE_SIZE`` of each other."""
    sa = max(float(a[2] - a[0]), float(a[3] - a[1]), 1.0)
    sb = max(float(b[2] - b[0]), float(b[3] - b[1]), 1.0)
    ca, cb = (a[:2] + a[2:]) / 2, (b[:2] + b[2:]) / 2
    return bool(np.hypot(*(ca - cb)) <= BRIDGE_NEAR * max(sa, sb) and max(sa, sb) <= BRIDGE_SIZE * min(sa, sb))


def plan_ends(raw: RawTrack, shot: Shot, cfg: TrackConfig, scene: Scene | None, neighbours: Sequence[RawTrack] = ()) -> Ends:
    """Where a completed track starts and ends (fail closed: never shorter than ``cfg.extend``).

    After the last detection, the first that applies: carried over to the next track of the shot
    that starts within ``cfg.bridge`` seconds where this one ended; held to the cut when the cut
    (or the end of the video) is within ``cfg.hold_cut``; followed along its motion while any of
    its box is in the picture when it ended at a frame edge or was heading out of it (at most
    ``cfg.hold_edge``). Before the first detection: back to the cut within ``cfg.hold_cut``, or
    back along its motion to where it entered the picture.
    """
    frames = np.asarray(raw.frames, np.int64)
    boxes = np.asarray(raw.boxes, np.float32)
    first, last = int(frames[0]), int(frames[-1])
    start, end = first - cfg.extend, last + 1 + cfg.extend
    anchors: tuple[tuple[int, np.ndarray], ...] = ()
    velocity = back_velocity = None
    rate_scene = scene or Scene(0, 0, 25.0)
    hold_cut, bridge, hold_edge = rate_scene.frames(cfg.hold_cut), rate_scene.frames(cfg.bridge), rate_scene.frames(cfg.hold_edge)

    later = [n for n in neighbours if n is not raw and last < n.frames[0] <= last + bridge]
    later = [n for n in later if close_enough(boxes[-1], np.asarray(n.boxes[0]))]
    if later:
        nxt = min(later, key=lambda n: n.frames[0])
        end = max(end, int(nxt.frames[0]))
        anchors = ((int(nxt.frames[0]), np.asarray(nxt.boxes[0], np.float32)),)
    elif shot.end - (last + 1) <= hold_cut:
        end, velocity = shot.end, end_velocity(frames, boxes, tail=True)
    elif scene is not None:
        v = end_velocity(frames, boxes, tail=True)
        if at_edge(boxes[-1], scene) or at_edge(moved(boxes[-1], v, hold_edge), scene):
            end, velocity = max(end, last + 1 + frames_in_picture(boxes[-1], v, scene, hold_edge)), v

    if first - shot.start <= hold_cut:
        start, back_velocity = shot.start, -end_velocity(frames, boxes, tail=False)
    elif scene is not None:
        v = -end_velocity(frames, boxes, tail=False)
        if at_edge(boxes[0], scene) or at_edge(moved(boxes[0], v, hold_edge), scene):
            start, back_velocity = min(start, first - frames_in_picture(boxes[0], v, scene, hold_edge)), v
    return Ends(max(shot.start, start), min(shot.end, end), anchors, back_velocity, velocity)


def complete_track(raw: RawTrack, shot: Shot, cfg: TrackConfig, scene: Scene | None = None, neighbours: Sequence[RawTrack] = ()) -> Track:
    """Fill gaps, extend (``plan_ends``), smooth and attach uncertainty margins to one raw track."""
    obs_frames = np.asarray(raw.frames, np.int64)
    obs_boxes = np.asarray(raw.boxes, np.float32)
    ends = plan_ends(raw, shot, cfg, scene, neighbours)
    start, end = ends.start, ends.end
    frames = np.arange(start, end, dtype=np.int64)
    observed = np.isin(frames, obs_frames)
    known_frames = np.concatenate([obs_frames, np.asarray([f for f, _ in ends.anchors], np.int64)])
    known_boxes = np.concatenate([obs_boxes, np.asarray([b for _, b in ends.anchors], np.float32).reshape(-1, 4)])
    boxes = _interp(frames, known_frames, known_boxes)
    first, last = int(obs_frames[0]), int(obs_frames[-1])
    for f_i, f in enumerate(frames):
        if ends.velocity is not None and f > last:
            boxes[f_i] = moved(obs_boxes[-1], ends.velocity, int(f - last))
        elif ends.back_velocity is not None and f < first:
            boxes[f_i] = moved(obs_boxes[0], ends.back_velocity, int(first - f))
    scores = np.interp(frames, obs_frames, np.asarray(raw.scores, np.float32)).astype(np.float32)
    landmarks = None
    if all(lm is not None for lm in raw.landmarks):
        landmarks = _interp(frames, obs_frames, np.asarray(raw.landmarks, np.float32))
        # the same zero-lag smoothing as the box centres: the cloak aligns faces by these points, and
        # detector noise (larger on half-scale frames, pipeline.CoarsePass) would make the face wobble
        flat = _gaussian_smooth(landmarks.reshape(len(frames), -1), cfg.smooth_sigma)
        landmarks = flat.reshape(landmarks.shape).astype(np.float32)

    boxes = smooth_boxes(boxes, cfg.smooth_sigma)

    # distance (frames) to the nearest real observation (this track's, or the one it is carried to) -> margin
    known = np.sort(known_frames)
    idx = np.searchsorted(known, frames)
    prev_d = np.where(idx > 0, frames - known[np.clip(idx - 1, 0, None)], 1 << 30)
    next_d = np.where(idx < len(known), known[np.clip(idx, None, len(known) - 1)] - frames, 1 << 30)
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


def complete_tracks(raws: Sequence[RawTrack], shots: Sequence[Shot], cfg: TrackConfig, scene: Scene | None = None) -> list[Track]:
    """``complete_track`` for every raw track, in track-id order. Without a ``scene`` (frame size
    and rate) tracks are not followed out of the picture and seconds count at 25 fps."""
    by_index = {s.index: s for s in shots}
    by_shot: dict[int, list[RawTrack]] = {}
    for r in raws:
        by_shot.setdefault(r.shot_index, []).append(r)
    return [complete_track(r, by_index[r.shot_index], cfg, scene, by_shot[r.shot_index]) for r in sorted(raws, key=lambda r: r.track_id)]
