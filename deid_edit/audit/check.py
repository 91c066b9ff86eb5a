"""The audit itself: faces re-detected in the original, their chips embedded in both videos.

Input: the original, its copy, optionally the plan. Output: an ``AuditReport``. Independent of the
engine's plan: full-resolution detection, frames paired by time, a face leaks only when the copy
matches the original better (by ``NOISE_MARGIN``) than identity-free stand-ins do.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Literal

import numpy as np

from ..config import AnalyzeConfig, DetectConfig, IdentityConfig
from ..coverage import HeadCheck, PairCheck
from ..detect import FaceDetector, create_detector
from ..embed import CHIP_SIZE, SAME_PERSON_L2, FaceEmbedder, align_faces, chip_transform, distance, warp_chip
from ..errors import ConfigError, ModelError
from ..geometry import greedy_match, iou_matrix
from ..io.decode import VideoReader
from ..io.metadata import findings as metadata_findings
from ..pipeline import analyze
from ..plan import Plan
from .chips import NOISE_MARGIN, face_mask, faceless, featureless, scale_points
from .pairing import TimedFrame, _timed, check_sizes, pair_frames
from .report import AuditLeak, AuditReport, ProgressLike, longest_run, timecode

log = logging.getLogger(__name__)
# High recall: the analyze pass's threshold, but at full resolution (the analyze pass may shrink
# frames); a false face costs one comparison, a missed face is an unaudited leak.
DETECT_THRESHOLD = 0.3
PLAN_IOU = 0.3  # a detection belongs to a plan track when their boxes overlap at least this
TRACK_IOU = 0.3  # the audit's own tracker (no plan): same face in consecutive frames
EMBED_BATCH = 32  # faces per embedding call (each face is three chips: original, anonymized, faceless)
MatchMode = Literal["auto", "time", "start", "index"]
MATCH_MODES: tuple[str, ...] = ("auto", "time", "start", "index")


class _IouTracker:
    """Ids for faces across consecutive frames, so leaks group into runs without a plan."""

    def __init__(self) -> None:
        self.next_id = 0
        self.prev_frame = -2
        self.prev_boxes = np.zeros((0, 4), np.float32)
        self.prev_ids: list[int] = []

    def assign(self, frame_index: int, boxes: np.ndarray) -> list[int]:
        ids = [-1] * len(boxes)
        if frame_index == self.prev_frame + 1:
            for r, c in greedy_match(iou_matrix(boxes, self.prev_boxes), TRACK_IOU):
                ids[r] = self.prev_ids[c]
        for i, v in enumerate(ids):
            if v < 0:
                ids[i], self.next_id = self.next_id, self.next_id + 1
        self.prev_frame, self.prev_boxes, self.prev_ids = frame_index, boxes, ids
        return ids


class _PlanIndex:
    """The plan's tracked boxes per frame with the action and identity of each."""

    def __init__(self, plan: Plan) -> None:
        self.by_frame: dict[int, list[tuple[np.ndarray, str, int | None]]] = {}
        for t in plan.tracks:
            ident = plan.identity_of(t.track_id)
            action = ident.action if ident else "anonymize"
            ident_id = ident.identity_id if ident else None
            for f, box in zip(t.frames.tolist(), t.boxes):
                self.by_frame.setdefault(f, []).append((box, action, ident_id))

    def lookup(self, frame_index: int, boxes: np.ndarray) -> list[tuple[str, int | None] | None]:
        """Per detection: (action, identity) of the best-overlapping plan track, or None."""
        entries = self.by_frame.get(frame_index, [])
        out: list[tuple[str, int | None] | None] = [None] * len(boxes)
        if entries and len(boxes):
            iou = iou_matrix(np.asarray(boxes, np.float32), np.stack([e[0] for e in entries]).astype(np.float32))
            for r, c in greedy_match(iou, PLAN_IOU):
                out[r] = entries[c][1:]
        return out


def _kept_by(plan: Plan | None) -> Callable[[int, np.ndarray], bool] | None:
    """(frame, box) -> whether ``plan`` keeps the face there (the same matching as the recognizer part)."""
    if plan is None:
        return None
    index = _PlanIndex(plan)

    def kept(frame_index: int, box: np.ndarray) -> bool:
        (found,) = index.lookup(frame_index, box[None])
        return found is not None and found[0] == "keep"

    return kept


@dataclass
class _Pending:
    frame_index: int
    time: Fraction
    box: tuple[float, float, float, float]
    identity_id: int | None
    run_key: Any


class _Auditor:
    """The audit's state while frames stream through: detect in batches, embed in batches."""

    def __init__(self, detector: FaceDetector, embedder: Any, plan: Plan | None, threshold: float, min_face: int, det_threshold: float):
        self.detector, self.embedder, self.det_threshold = detector, embedder, det_threshold
        self.threshold, self.min_face = threshold, min_face
        self.plan_index = _PlanIndex(plan) if plan is not None else None
        self.tracker = _IouTracker()
        self.t0: Fraction | None = None
        self.pending: list[_Pending] = []
        self.chips_o: list[np.ndarray] = []
        self.chips_a: list[np.ndarray] = []
        self.leaks: list[AuditLeak] = []
        self.leak_frames: dict[Any, set[int]] = {}
        self.chips_n: list[np.ndarray] = []
        self.chips_f: list[np.ndarray] = []
        self.face_frames = self.unchecked = self.small = self.kept = self.unrecognisable = self.borderline = 0
        self.min_distance: float | None = None
        self.blank: np.ndarray | None = None  # descriptor of a black chip, computed once

    def process(self, pairs: Sequence[tuple[TimedFrame, TimedFrame | None]]) -> None:
        """Detect faces in the originals of ``pairs`` (one uniform-size batch) and queue their chips."""
        dets = self.detector.detect([o.image for o, _ in pairs], [o.index for o, _ in pairs], 1.0, self.det_threshold)
        for (o, a), d in zip(pairs, dets):
            if self.t0 is None:
                self.t0 = o.time
            if len(d) and d.landmarks is None:
                name = getattr(self.detector, "name", "?")
                raise ModelError(f"detector {name!r} gives no landmarks; the audit needs them to align faces: use centerface")
            track_ids = self.tracker.assign(o.index, d.boxes)
            planned = self.plan_index.lookup(o.index, d.boxes) if self.plan_index else [None] * len(d)
            for i in range(len(d)):
                box = d.boxes[i]
                if min(box[2] - box[0], box[3] - box[1]) < self.min_face:
                    self.small += 1
                    continue
                if self.plan_index is not None:
                    if planned[i] is not None and planned[i][0] == "keep":
                        self.kept += 1
                        continue
                    ident = planned[i][1] if planned[i] is not None else None
                    key: Any = ("identity", ident) if ident is not None else ("face", track_ids[i])
                else:
                    ident = track_ids[i]
                    key = ("face", ident)
                if a is None:
                    self.unchecked += 1
                    continue
                lm = d.landmarks[i]
                lm_a = scale_points(lm, o.image.shape[:2], a.image.shape[:2])
                to_chip = chip_transform(lm)
                chip = warp_chip(o.image, to_chip)
                self.chips_o.append(chip)
                self.chips_a.append(align_faces(a.image, lm_a[None])[0])
                self.chips_n.append(faceless(chip, face_mask(to_chip, box)))
                self.chips_f.append(featureless(chip))
                self.pending.append(_Pending(o.index, o.time - self.t0, tuple(float(v) for v in box), ident, key))
        if len(self.pending) >= EMBED_BATCH:
            self.embed()

    def embed(self) -> None:
        """Embed the queued chip pairs and record the leaks among them."""
        if not self.pending:
            return
        n = len(self.pending)
        if self.blank is None:
            self.blank = self.embedder.embed(np.zeros((1, CHIP_SIZE, CHIP_SIZE, 3), np.uint8))[0]
        desc = self.embedder.embed(np.stack(self.chips_o + self.chips_a + self.chips_n + self.chips_f))
        orig, anon, null, flat = desc[:n], desc[n : 2 * n], desc[2 * n : 3 * n], desc[3 * n :]
        dists = distance(orig, anon)
        baselines = np.minimum(np.minimum(distance(orig, null), distance(orig, self.blank)), distance(orig, flat))
        for p, dist, base in zip(self.pending, dists.tolist(), baselines.tolist()):
            if base < self.threshold:
                self.unrecognisable += 1
                continue
            self.face_frames += 1
            self.min_distance = dist if self.min_distance is None else min(self.min_distance, dist)
            if dist < self.threshold and dist > base - NOISE_MARGIN:
                self.borderline += 1
            elif dist < self.threshold:
                self.leaks.append(AuditLeak(p.frame_index, p.time, timecode(p.time), p.identity_id, p.box, dist, base))
                self.leak_frames.setdefault(p.run_key, set()).add(p.frame_index)
        self.pending.clear()
        self.chips_o.clear()
        self.chips_a.clear()
        self.chips_n.clear()
        self.chips_f.clear()


def audit(
    original: str | os.PathLike[str],
    anonymized: str | os.PathLike[str],
    plan: Plan | None = None,
    threshold: float = SAME_PERSON_L2,
    min_face: int = 24,
    progress: ProgressLike | None = None,
    detector: FaceDetector | None = None,
    embedder: FaceEmbedder | None = None,
    *,
    match: MatchMode = "auto",
    detect_threshold: float = DETECT_THRESHOLD,
    device: str = "auto",
    batch_size: int = 0,
    heads: bool = True,
    head_plan: Plan | None = None,
    sheet: str | os.PathLike[str] | None = None,
) -> AuditReport:
    """Compare every face of ``original`` with the same place in ``anonymized``; see the module docstring.

    ``plan`` (the original's) restricts the audit to identities meant to be anonymized and names
    them; ``threshold`` is the L2 distance under which two descriptors are the same person;
    ``min_face`` (pixels, short side of the original's face box) skips faces too small for any
    recogniser. ``detector``/``embedder`` are reused when given (tests, batch audits).
    ``InputError``/``DecodeError`` of either video pass through; ``ConfigError`` for bad options;
    ``PlanError`` when ``plan`` was made for another video.

    With ``heads`` (default) the original is also analyzed with the engine's head finding
    (``head_plan`` reuses such a plan) and every head is checked for a change in the copy
    (``coverage.HeadCheck``); the uncovered ones go to the PNG ``sheet`` when a path is given.
    ``InputError`` when the two files are not an original and its copy (``coverage.PairCheck``).
    """
    if not 0.0 < threshold <= 4.0:
        raise ConfigError(f"--threshold {threshold!r} is not allowed: use an L2 distance in 0..4 (default {SAME_PERSON_L2})")
    if min_face < 1:
        raise ConfigError(f"audit min_face {min_face!r} (Python API setting) is not allowed: use 1 pixel or more")
    if match not in MATCH_MODES:
        raise ConfigError(f"audit match {match!r} (Python API setting) is not allowed: use {', '.join(MATCH_MODES)}")
    if not 0.01 <= detect_threshold <= 0.99:
        raise ConfigError(f"audit detect_threshold {detect_threshold!r} (Python API setting) is not allowed: use a number in 0.01..0.99")
    orig_reader = VideoReader(original)
    anon_reader = VideoReader(anonymized)
    if plan is not None:
        plan.check_video(orig_reader.info, source="plan")
    check_sizes(orig_reader.info, anon_reader.info, str(original), str(anonymized))
    detector = detector or create_detector(DetectConfig(device=device))
    if heads and head_plan is None:
        cfg = AnalyzeConfig(detect=DetectConfig(device=device), identity=IdentityConfig(enabled=False))
        head_plan = analyze(original, cfg, progress=_Renamed(progress, "audit-heads"), detector=detector)
    head_check = HeadCheck(head_plan, _kept_by(plan)) if heads and head_plan is not None else None
    pair_check = PairCheck(str(original), str(anonymized), detector)
    embedder = embedder or FaceEmbedder(device=device, recognizer="exact")  # the proof uses the verified build
    batch = batch_size or (2 if detector.provider == "CPUExecutionProvider" else 8)
    rate = orig_reader.info.avg_rate or Fraction(30)
    tolerance = 1 / (2 * rate)
    total = orig_reader.info.frame_count
    auditor = _Auditor(detector, embedder, plan, threshold, min_face, detect_threshold)
    compared = unmatched = done = 0
    first_time: Fraction | None = None  # the original's first frame: report times count from it
    offset = Fraction(0)
    group: list[tuple[TimedFrame, TimedFrame | None]] = []
    try:
        originals = _timed(orig_reader.frames(), rate)
        others = _timed(anon_reader.frames(), anon_reader.info.avg_rate)
        for o, a, pair_offset in pair_frames(originals, others, tolerance, match):
            offset = pair_offset
            compared += a is not None
            unmatched += a is None
            pair_check.add(o.index, o.image, None if a is None else a.image)
            first_time = o.time if first_time is None else first_time
            if head_check is not None and a is not None:
                head_check.check(o.index, o.time - first_time, o.image, a.image)
            if group and group[0][0].image.shape != o.image.shape:
                auditor.process(group)  # resolution change mid-stream: detector batches must be uniform
                done += len(group)
                group = []
            group.append((o, a))
            if len(group) >= batch:
                auditor.process(group)
                done += len(group)
                group = []
                if progress:
                    progress.update("audit", done, max(total, done))
        if group:
            auditor.process(group)
            done += len(group)
        auditor.embed()
    finally:
        orig_reader.close()
        anon_reader.close()
    pair_check.verdict()
    written = head_check.write_sheet(sheet) if head_check is not None and sheet is not None else None
    if progress:
        progress.update("audit", done, done)
    if offset:
        log.warning("%s starts %+.3f s from %s; frames were paired relative to each video's start", anonymized, float(offset), original)
    return AuditReport(
        original=str(original),
        anonymized=str(anonymized),
        face_frames=auditor.face_frames,
        leaks=tuple(auditor.leaks),
        longest_run=longest_run(auditor.leak_frames),
        frames_compared=compared,
        frames_unmatched=unmatched,
        threshold=float(threshold),
        faces_unchecked=auditor.unchecked,
        faces_small=auditor.small,
        faces_unrecognisable=auditor.unrecognisable,
        faces_kept=auditor.kept,
        faces_borderline=auditor.borderline,
        min_distance=auditor.min_distance,
        time_offset=offset,
        match=match if match != "auto" else ("start" if offset else "time"),
        with_plan=plan is not None,
        heads_checked=head_check.checked if head_check else 0,
        heads_flat=head_check.flat if head_check else 0,
        heads_uncovered=tuple(head_check.uncovered) if head_check else (),
        sheet=None if written is None else str(written),
        metadata=tuple(metadata_findings(anonymized)),
    )


class _Renamed:
    """Progress of the head analysis reported under its own stage name."""

    def __init__(self, inner: ProgressLike | None, stage: str) -> None:
        self.inner, self.stage = inner, stage

    def update(self, stage: str, done: int, total: int) -> None:
        if self.inner is not None:
            self.inner.update(self.stage, done, total)

    def event(self, stage: str, **fields: Any) -> None:
        if self.inner is not None and hasattr(self.inner, "event"):
            self.inner.event(self.stage, **fields)
