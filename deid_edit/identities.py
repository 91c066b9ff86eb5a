"""Identities: tracks (and sampled face descriptors) in, ``Identity`` records out (next: plan).

During analyze, ``DescriptorSampler`` embeds a sample of the detections (every few frames, faces
large and confident enough) on the frames the detector already has in memory — no extra decode.
Each track then gets the mean descriptor of its best samples (large, confident, frontal). Tracks
are linked across cuts into identities by average-linkage clustering under cannot-link
constraints (two tracks visible in the same frame are two people) with the L2 threshold of the
recognizer (calibrated on LFW); identity ids follow first appearance. ``select`` applies the
user's choice (--keep/--only photos or identity ids) and fails closed: a face that cannot be
identified reliably is anonymized.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np

from .config import IdentityConfig
from .errors import InputError
from .types import FrameDetections, Identity, Track

log = logging.getLogger(__name__)


def frontality(landmarks: np.ndarray | None, count: int) -> np.ndarray:
    """Per sample, 1 for a frontal face down to 0 for a profile, from 5-point landmarks.

    A turned head moves the nose towards one eye (in image x); a face that is upside down or whose
    landmarks are nonsense (nose not between eyes and mouth in y) counts half. Without landmarks
    every sample gets a neutral 0.5, so size and score decide.
    """
    if landmarks is None or len(landmarks) != count:
        return np.full(count, 0.5)
    lm = np.asarray(landmarks, np.float64)
    le, re, nose = lm[:, 0], lm[:, 1], lm[:, 2]
    dx = re[:, 0] - le[:, 0]
    ok = dx > 1e-3
    t = np.where(ok, (nose[:, 0] - le[:, 0]) / np.where(ok, dx, 1.0), 0.0)
    f = np.where(ok, np.clip(1.0 - 2.0 * np.abs(t - 0.5), 0.0, 1.0), 0.0)
    eye_y = (le[:, 1] + re[:, 1]) / 2
    mouth_y = (lm[:, 3, 1] + lm[:, 4, 1]) / 2
    upright = (eye_y < nose[:, 1]) & (nose[:, 1] < mouth_y)
    return np.where(upright, f, 0.5 * f)


# The eyes-to-mouth area of a 150x150 chip (embed.CHIP_TEMPLATE: eyes at y 46, mouth at y 105).
_CONTRAST_AREA = (slice(35, 125), slice(35, 115))


def chip_contrast(chip: np.ndarray) -> float:
    """Grey-level standard deviation (0..255 scale) of a chip's eyes-to-mouth area.

    Why: a face in deep shadow or a dim, defocused crowd gives an almost uniform chip, and the
    recognizer maps all such chips close to each other (two black faces measure ~0.1 apart, a
    "same person" by far). Those descriptors say "dark", not "who". On LFW photos the 1st
    percentile is ~22; the dim audience of hamilton_stage.mp4 is 1-9.
    """
    grey = chip[_CONTRAST_AREA].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    return float(grey.std())


def quality(box: np.ndarray, score: float, landmarks: np.ndarray | None) -> float:
    """How useful a face sample is for recognition: size x confidence x frontality."""
    size = float(min(box[2] - box[0], box[3] - box[1]))
    frontal = 1.0 if landmarks is None else float(frontality(landmarks[None], 1)[0])
    return size * score * (0.3 + 0.7 * frontal)


class DescriptorSampler:
    """Embeds sampled detections during the analyze pass; keyed by (frame, detection index)."""

    def __init__(self, cfg: IdentityConfig, embedder: object | None = None) -> None:
        from .embed import FaceEmbedder, align_faces

        self.cfg = cfg
        self.embedder = embedder or FaceEmbedder(recognizer=cfg.recognizer)
        self._align = align_faces
        self._chips: list[np.ndarray] = []
        self._keys: list[tuple[int, int]] = []
        self.samples: dict[tuple[int, int], tuple[np.ndarray, float]] = {}
        self._quality: dict[tuple[int, int], float] = {}

    def add(self, image: np.ndarray, det: FrameDetections, scale: float, threshold: float) -> None:
        """Queue the faces of one analyzed frame (``image`` is the detector's scaled frame)."""
        if det.frame_index % self.cfg.every or det.landmarks is None or not len(det):
            return
        for i in range(len(det)):
            box = det.boxes[i]
            if det.scores[i] < threshold or min(box[2] - box[0], box[3] - box[1]) < self.cfg.min_face:
                continue
            if frontality(det.landmarks[i : i + 1], 1)[0] < self.cfg.min_frontality:
                continue  # beyond a three-quarter view descriptors drift towards everyone (hamilton: 0.47-0.57 to strangers)
            chip = self._align(image, det.landmarks[i : i + 1] * scale)[0]
            if chip_contrast(chip) < self.cfg.min_contrast:
                continue  # too dark or flat to say who it is: never linked, never kept
            key = (det.frame_index, i)
            self._chips.append(chip)
            self._keys.append(key)
            self._quality[key] = quality(box, float(det.scores[i]), det.landmarks[i])
        if len(self._chips) >= 32:
            self.flush()

    def flush(self) -> None:
        if self._chips:
            vecs = self.embedder.embed(np.stack(self._chips))  # type: ignore[attr-defined]
            for key, v in zip(self._keys, vecs):
                self.samples[key] = (v.astype(np.float32), self._quality[key])
            self._chips.clear()
            self._keys.clear()

    def track_embedding(self, frames: Sequence[int], det_indices: Sequence[int]) -> tuple[np.ndarray | None, int]:
        """Mean descriptor of a track's best samples, and how many were averaged."""
        self.flush()
        got = [self.samples[(f, i)] for f, i in zip(frames, det_indices) if (f, i) in self.samples]
        if len(got) < self.cfg.min_samples:
            return None, 0
        got.sort(key=lambda s: -s[1])
        best = np.stack([v for v, _ in got[: self.cfg.max_samples]])
        return best.mean(axis=0).astype(np.float32), len(best)


# Tracklet stitching (see ``stitch_tracks``): how long a face may be lost inside a shot, and how far
# (in face widths) it may have moved meanwhile, growing with the gap (camera pans, people moving).
STITCH_MAX_GAP = 15
# The gap is counted between the two tracks' detections less this slack: the constants were tuned
# when every track ended 4 frames after its last detection (TrackConfig.extend), before track ends
# could be held much further (smooth.plan_ends).
STITCH_SLACK = 8
STITCH_BASE_WIDTHS = 1.0
STITCH_WIDTHS_PER_FRAME = 0.1


def _seen(t: Track) -> np.ndarray:
    """Indices of a track's detected samples (all of them if none is marked detected)."""
    idx = np.flatnonzero(t.observed)
    return idx if len(idx) else np.arange(len(t.frames))


def stitch_tracks(tracks: Sequence[Track]) -> list[list[int]]:
    """Chains of track indices that are one face lost and found again inside a shot.

    Why: the detector loses dark, small and turned faces for a few frames (hamilton_stage.mp4's
    audience during a pan, a profile leaving and re-entering), so the tracker starts a new track.
    Those faces are exactly the ones without a usable descriptor, so linking cannot join them.
    Here a track joins the one that ended shortly before in the same shot (at most
    ``STITCH_MAX_GAP`` frames) near where it ended (centre distance within
    ``STITCH_BASE_WIDTHS + STITCH_WIDTHS_PER_FRAME * gap`` face widths, sizes within 1.5x),
    greedily by normalized distance, one successor per track.

    Only tracks WITHOUT a descriptor are stitched: a stitch is a guess by position, and a guessed
    join into an identifiable identity could carry someone else's face into a person the user
    keeps. Unidentifiable chains stay unidentifiable, so ``select`` still anonymizes them.
    """
    cands: list[tuple[float, int, int]] = []
    for a, ta in enumerate(tracks):
        if ta.embedding is not None:
            continue
        # from the last detection of one to the first of the other: held track ends
        # (smooth.plan_ends) may reach far past a detection, into the next track
        la = int(_seen(ta)[-1])
        last_a, box_a = int(ta.frames[la]), ta.boxes[la]
        wa = float(box_a[2] - box_a[0])
        ca = (box_a[:2] + box_a[2:]) / 2
        for b, tb in enumerate(tracks):
            fb = int(_seen(tb)[0])
            gap = max(0, int(tb.frames[fb]) - last_a - 1 - STITCH_SLACK) if int(tb.frames[fb]) > last_a else -1
            if tb.embedding is not None or tb.shot_index != ta.shot_index or not 0 <= gap <= STITCH_MAX_GAP:
                continue
            box_b = tb.boxes[fb]
            wb = float(box_b[2] - box_b[0])
            if min(wa, wb) <= 0 or max(wa, wb) / min(wa, wb) > 1.5:
                continue
            moved = float(np.linalg.norm((box_b[:2] + box_b[2:]) / 2 - ca)) / ((wa + wb) / 2)
            if moved <= STITCH_BASE_WIDTHS + STITCH_WIDTHS_PER_FRAME * gap:
                cands.append((moved, a, b))
    succ: dict[int, int] = {}
    pred: dict[int, int] = {}
    for _, a, b in sorted(cands):
        if a not in succ and b not in pred:
            succ[a], pred[b] = b, a
    chains = []
    for start in range(len(tracks)):
        if start in pred:
            continue
        chain = [start]
        while chain[-1] in succ:
            chain.append(succ[chain[-1]])
        chains.append(chain)
    return chains


def link_tracks(tracks: Sequence[Track], threshold: float, stitch: bool = True) -> list[list[int]]:
    """Group track indices into people: stitched chains first (``stitch_tracks``), then average
    linkage on descriptors, never merging tracks seen together."""
    clusters: list[list[int]] = stitch_tracks(tracks) if stitch else [[i] for i in range(len(tracks))]
    emb = [t.embedding for t in tracks]
    spans = [set(t.frames[t.observed].tolist()) for t in tracks]  # seen together = detected in one frame
    usable = [i for i, e in enumerate(emb) if e is not None]
    if len(usable) < 2:
        return clusters
    vecs = np.stack([emb[i] for i in usable])
    dist = np.full((len(tracks), len(tracks)), np.inf, np.float32)
    d = np.linalg.norm(vecs[:, None, :] - vecs[None, :, :], axis=2)
    dist[np.ix_(usable, usable)] = d
    conflict = np.zeros((len(tracks), len(tracks)), bool)
    for a in range(len(tracks)):
        for b in range(a + 1, len(tracks)):
            if tracks[a].start < tracks[b].end and tracks[b].start < tracks[a].end and spans[a] & spans[b]:
                conflict[a, b] = conflict[b, a] = True
    while True:
        best, pair = threshold, None
        for x in range(len(clusters)):
            for y in range(x + 1, len(clusters)):
                ca, cb = clusters[x], clusters[y]
                if conflict[np.ix_(ca, cb)].any():
                    continue
                avg = float(dist[np.ix_(ca, cb)].mean())
                if avg < best:
                    best, pair = avg, (x, y)
        if pair is None:
            return clusters
        x, y = pair
        clusters[x] = clusters[x] + clusters[y]
        del clusters[y]


def build_identities(tracks: Sequence[Track], threshold: float, stitch: bool = True) -> list[Identity]:
    """Identities from linked tracks, numbered by first appearance, all anonymized."""
    groups = link_tracks(tracks, threshold, stitch)
    groups.sort(key=lambda g: min((tracks[i].start, tracks[i].track_id) for i in g))
    return [Identity(n, tuple(sorted(tracks[i].track_id for i in g)), "anonymize", f"person {n}") for n, g in enumerate(groups)]


def identities_from_tracks(tracks: Sequence[Track]) -> list[Identity]:
    """One anonymized identity per track (when descriptors are unavailable)."""
    return build_identities(tracks, threshold=0.0, stitch=False)


# -- choosing people ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Selection:
    """What the user asked: reference photos or identity ids to keep, or the only ones to hide."""

    keep_photos: tuple[str, ...] = ()
    only_photos: tuple[str, ...] = ()
    keep_ids: tuple[int, ...] = ()
    only_ids: tuple[int, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.keep_photos or self.only_photos or self.keep_ids or self.only_ids)


@dataclass(frozen=True)
class SelectionReport:
    kept: tuple[int, ...]
    anonymized: tuple[int, ...]
    unreliable: tuple[int, ...]  # anonymized because they could not be identified reliably


def reference_descriptors(
    photos: Sequence[str], embedder: object | None = None, detector: object | None = None, recognizer: str = "fast"
) -> np.ndarray:
    """One descriptor per photo: its largest face, found at full resolution, embedded by ``recognizer``
    (the one that made the track descriptors they are compared with)."""
    from .config import DetectConfig
    from .detect import create_detector
    from .embed import FaceEmbedder, align_faces

    embedder = embedder or FaceEmbedder(recognizer=recognizer)
    detector = detector or create_detector(DetectConfig())
    out = []
    for photo in photos:
        bgr = cv2.imread(str(photo), cv2.IMREAD_COLOR)
        if bgr is None:
            raise InputError(f"{photo}: not a readable image; give a JPEG or PNG photo of the person")
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        scale = min(1.0, 1600 / max(rgb.shape[:2]))
        small = cv2.resize(rgb, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA) if scale < 1 else rgb
        (det,) = detector.detect([small], [0], scale, 0.5)  # type: ignore[attr-defined]
        if not len(det) or det.landmarks is None:
            raise InputError(f"{photo}: no face found; use a clear, front-facing photo of the person")
        sizes = (det.boxes[:, 2] - det.boxes[:, 0]) * (det.boxes[:, 3] - det.boxes[:, 1])
        i = int(np.argmax(sizes))
        out.append(embedder.embed(align_faces(rgb, det.landmarks[i : i + 1]))[0])  # type: ignore[attr-defined]
    return np.stack(out)


def select(
    identities: Sequence[Identity],
    tracks: Sequence[Track],
    sel: Selection,
    cfg: IdentityConfig,
    references: np.ndarray | None = None,
) -> tuple[list[Identity], SelectionReport]:
    """Set each identity's action from the selection, failing closed.

    --keep: an identity is kept only when it is identifiable (descriptor from enough samples) and
    clearly close to a reference (below ``keep_threshold``, stricter than the linking threshold).
    --only: an identity is anonymized when it is close to a reference under the looser
    ``only_threshold``, or when it cannot be identified at all.
    """
    by_id = {t.track_id: t for t in tracks}
    known_ids = {i.identity_id for i in identities}
    for n in (*sel.keep_ids, *sel.only_ids):
        if n not in known_ids:
            raise InputError(f"identity {n} is not in the plan (known: {', '.join(map(str, sorted(known_ids)))}); see 'deid-edit faces'")
    out, kept, anon, unreliable = [], [], [], []
    for ident in identities:
        vecs = [by_id[t].embedding for t in ident.track_ids if by_id[t].embedding is not None]
        samples = sum(by_id[t].embed_samples for t in ident.track_ids)
        reliable = bool(vecs) and samples >= cfg.min_samples
        dist = np.inf
        if reliable and references is not None and len(references):
            mean = np.mean(np.stack(vecs), axis=0)
            dist = float(np.min(np.linalg.norm(references - mean, axis=1)))
        if sel.keep_photos or sel.keep_ids:
            keep = ident.identity_id in sel.keep_ids or (reliable and dist < cfg.keep_threshold)
        elif sel.only_photos or sel.only_ids:
            hide = ident.identity_id in sel.only_ids or (sel.only_photos and (not reliable or dist < cfg.only_threshold))
            keep = not hide
        else:
            keep = ident.action == "keep"
        if not keep and not reliable and (sel.keep_photos or sel.only_photos):
            unreliable.append(ident.identity_id)
        (kept if keep else anon).append(ident.identity_id)
        out.append(replace(ident, action="keep" if keep else "anonymize"))
    return out, SelectionReport(tuple(kept), tuple(anon), tuple(unreliable))


def load_selection(
    keep: Sequence[str] = (), only: Sequence[str] = (), keep_ids: Sequence[int] = (), only_ids: Sequence[int] = ()
) -> Selection:
    """Validate the CLI's choice flags (photos must exist; --keep and --only exclude each other)."""
    if (keep or keep_ids) and (only or only_ids):
        from .errors import ConfigError

        raise ConfigError("--keep/--keep-identity and --only/--only-identity cannot be combined; use one kind")
    for photo in (*keep, *only):
        if not Path(photo).is_file():
            raise InputError(f"{photo}: no such photo; check the path")
    return Selection(tuple(map(str, keep)), tuple(map(str, only)), tuple(keep_ids), tuple(only_ids))
