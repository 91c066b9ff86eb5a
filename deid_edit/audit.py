"""Audit: does an anonymized video still show the faces of its original?

Input: the ORIGINAL, its ANONYMIZED copy (made by any tool) and optionally the original's plan.
Output: an ``AuditReport`` (leaked face-frames by identity, uncovered heads from ``coverage``,
identifying metadata; text or JSON); the CLI exits ``EXIT_LEAK`` (3) when it is not ok. Why
independent of the engine's plan: faces are re-detected at full resolution, frames paired by time,
and the aligned chip embedded in both videos. A face leaks only when the copy matches the original
better, by ``NOISE_MARGIN`` (the recognizer's frame-to-frame noise on an untouched face), than
identity-free stand-ins (black, mean-colour fill, ``featureless``); a face such a stand-in already
matches cannot be judged. Fails closed: a face whose frame has no partner makes the report not ok.
"""

from __future__ import annotations

import logging
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Literal, Protocol

import cv2
import numpy as np

from .config import AnalyzeConfig, DetectConfig, IdentityConfig
from .coverage import KEPT_DETAIL, HeadCheck, PairCheck, UncoveredHead
from .detect import FaceDetector, create_detector
from .embed import CHIP_SIZE, SAME_PERSON_L2, FaceEmbedder, align_faces, chip_transform, distance, warp_chip
from .errors import ConfigError, InputError, ModelError
from .geometry import greedy_match, iou_matrix
from .io.decode import VideoReader
from .io.metadata import findings as metadata_findings
from .pipeline import analyze
from .plan import Plan, frac_str
from .timefmt import clock

log = logging.getLogger(__name__)

SCHEMA = "deid_edit.Audit.1"
EXIT_LEAK = 3  # the CLI's exit code when the report is not ok (1 and 2 keep their usual meaning)
# High recall: the analyze pass's threshold, but at full resolution (the analyze pass may shrink
# frames); a false face costs one comparison, a missed face is an unaudited leak.
DETECT_THRESHOLD = 0.3
PLAN_IOU = 0.3  # a detection belongs to a plan track when their boxes overlap at least this
TRACK_IOU = 0.3  # the audit's own tracker (no plan): same face in consecutive frames
EMBED_BATCH = 32  # faces per embedding call (each face is three chips: original, anonymized, faceless)
SUMMARY_RANGES = 12  # timecode ranges listed per identity in the summary
MatchMode = Literal["auto", "time", "start", "index"]
MATCH_MODES: tuple[str, ...] = ("auto", "time", "start", "index")


class ProgressLike(Protocol):
    def update(self, stage: str, done: int, total: int) -> None: ...


@dataclass(frozen=True)
class AuditLeak:
    """One face in one frame whose anonymized crop still matches the original face."""

    frame_index: int  # in the original
    time: Fraction  # seconds since the original's first frame (what players show)
    timecode: str  # HH:MM:SS.mmm of ``time``
    identity_id: int | None  # plan identity; the audit's own track id without a plan; None: no plan track
    box: tuple[float, float, float, float]  # xyxy, upright pixels of the original
    distance: float  # L2 between the two descriptors; below the threshold means "same person"
    baseline: float | None = None  # L2 from the original to the nearest identity-free reference (>= threshold)


@dataclass(frozen=True)
class AuditReport:
    """What the audit found; ``ok`` is the verdict, ``summary()`` for people, ``to_json()`` for programs."""

    original: str
    anonymized: str
    face_frames: int  # faces compared (original faces meant to be anonymized, big enough, in paired frames)
    leaks: tuple[AuditLeak, ...]
    longest_run: int  # most consecutive frames in which one face/identity leaked
    frames_compared: int  # original frames paired with an anonymized frame
    frames_unmatched: int  # original frames without a partner within half a frame
    threshold: float
    faces_unchecked: int = 0  # faces in unmatched frames: could not be audited (fail closed)
    faces_small: int = 0  # faces below ``min_face``: not compared (recognisers fail on them too)
    faces_unrecognisable: int = 0  # faces an identity-free chip already matches: the recogniser cannot judge them
    faces_kept: int = 0  # faces of identities the plan keeps visible
    faces_borderline: int = 0  # compared faces under the threshold but within NOISE_MARGIN of an identity-free face
    min_distance: float | None = None  # closest pair seen: how near the output came to leaking
    time_offset: Fraction = Fraction(0)  # anonymized time - original time used for pairing
    match: str = "time"  # how frames were paired: "time", "start" (relative to first frames) or "index"
    with_plan: bool = False  # identity ids are the plan's (else the audit's own face tracks)
    heads_checked: int = 0  # head samples of the audit's own plan whose face area was compared pixel by pixel
    heads_flat: int = 0  # head samples too flat (dark, featureless) to show a change
    heads_uncovered: tuple[UncoveredHead, ...] = ()  # heads the copy leaves (mostly) unchanged
    sheet: str | None = None  # PNG of the uncovered heads, original beside copy
    metadata: tuple[str, ...] = ()  # tags and streams of the copy that can locate or identify the source (io.metadata)

    @property
    def ok(self) -> bool:
        """True when no face leaked, no head was left uncovered, every detected face could be
        checked and the copy carries no identifying metadata. Heads found only at low detector
        scores ("maybe no face") are listed for a person to look at but do not fail the audit on
        their own."""
        return not self.leaks and self.faces_unchecked == 0 and not self.sure_uncovered and not self.metadata

    @property
    def sure_uncovered(self) -> tuple[UncoveredHead, ...]:
        return tuple(h for h in self.heads_uncovered if not h.weak)

    @property
    def nothing_checked(self) -> bool:
        """No face was compared by the recognizer and no head by its pixels: an OK would mean nothing."""
        return self.face_frames == 0 and self.heads_checked == 0

    @property
    def leak_fraction(self) -> float:
        return len(self.leaks) / self.face_frames if self.face_frames else 0.0

    def by_identity(self) -> dict[int | None, list[AuditLeak]]:
        """Leaks grouped by identity, in order of first appearance."""
        groups: dict[int | None, list[AuditLeak]] = {}
        for leak in self.leaks:
            groups.setdefault(leak.identity_id, []).append(leak)
        return groups

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (Fractions as "num/den" strings, as in the plan, plus float seconds)."""
        return {
            "schema": SCHEMA,
            "original": self.original,
            "anonymized": self.anonymized,
            "ok": self.ok,
            "threshold": self.threshold,
            "face_frames": self.face_frames,
            "leak_count": len(self.leaks),
            "leak_fraction": round(self.leak_fraction, 6),
            "longest_run": self.longest_run,
            "frames_compared": self.frames_compared,
            "frames_unmatched": self.frames_unmatched,
            "faces_unchecked": self.faces_unchecked,
            "faces_small": self.faces_small,
            "faces_unrecognisable": self.faces_unrecognisable,
            "faces_kept": self.faces_kept,
            "faces_borderline": self.faces_borderline,
            "min_distance": None if self.min_distance is None else round(self.min_distance, 4),
            "match": self.match,
            "nothing_checked": self.nothing_checked,
            "heads_checked": self.heads_checked,
            "heads_flat": self.heads_flat,
            "heads_uncovered": [
                {
                    "frame": h.frame_index,
                    "seconds": round(float(h.time), 6),
                    "timecode": timecode(h.time),
                    "box": [round(v, 1) for v in h.box],
                    "kept_detail": round(h.kept, 3),
                    "maybe_no_face": h.weak,
                    "held": h.held,
                }
                for h in self.heads_uncovered
            ],
            "sheet": self.sheet,
            "metadata": list(self.metadata),
            "identity_source": "plan" if self.with_plan else "track",
            "time_offset": frac_str(self.time_offset),
            "identities": [
                {
                    "identity_id": ident,
                    "leaks": len(items),
                    "ranges": [
                        {"start_frame": a.frame_index, "end_frame": b.frame_index, "start": a.timecode, "end": b.timecode}
                        for a, b in _ranges(items)
                    ],
                }
                for ident, items in self.by_identity().items()
            ],
            "leaks": [
                {
                    "frame": leak.frame_index,
                    "time": frac_str(leak.time),
                    "seconds": round(float(leak.time), 6),
                    "timecode": leak.timecode,
                    "identity_id": leak.identity_id,
                    "box": [round(v, 1) for v in leak.box],
                    "distance": round(leak.distance, 4),
                    "baseline": None if leak.baseline is None else round(leak.baseline, 4),
                }
                for leak in self.leaks
            ],
        }

    def summary(self) -> str:
        """Human text: verdict, counts, leaks per identity as timecode ranges, longest run."""
        lines = [f"Audit of {self.anonymized}", f"  against {self.original}"]
        if self.nothing_checked and self.ok:
            lines.append("  NOTHING CHECKED: no face of the original could be compared (none found, or all too small, flat or kept)")
        elif self.ok:
            lines.append("  OK: no anonymized face is recognisable as its original, and no head was left uncovered")
        else:
            lines.append(
                f"  NOT OK: {len(self.leaks)} leaked face-frames, {len(self.sure_uncovered)} uncovered heads, "
                f"{self.faces_unchecked} unchecked, {len(self.metadata)} identifying metadata entries (exit code {EXIT_LEAK})"
            )
        if self.metadata:
            lines.append(f"  metadata that can locate or identify the source: {', '.join(self.metadata)}")
        lines.append(
            f"  {self.heads_checked} head-frames checked pixel by pixel (a head is uncovered when the copy keeps its facial "
            f"detail, correlation >= {KEPT_DETAIL:g}){f'; {self.heads_flat} too flat to tell' if self.heads_flat else ''}"
        )
        if self.heads_uncovered:
            weak = len(self.heads_uncovered) - len(self.sure_uncovered)
            frames = sorted({h.frame_index for h in self.heads_uncovered})
            shown = ", ".join(str(f) for f in frames[: SUMMARY_RANGES * 2]) + (" ..." if len(frames) > SUMMARY_RANGES * 2 else "")
            lines.append(
                f"  uncovered heads: {len(self.heads_uncovered)} head-frames"
                + (f" ({weak} maybe no face)" if weak else "")
                + f" in frames {shown}"
                + (f"; look at them: {self.sheet}" if self.sheet else "")
            )
        closest = "" if self.min_distance is None else f"; closest pair {self.min_distance:.3f}"
        lines.append(f"  {self.face_frames} face-frames compared (leak when L2 < {self.threshold:g}{closest})")
        frames = f"  {self.frames_compared} frames paired by {self.match}"
        if self.time_offset:
            frames += f" (anonymized clock shifted by {float(self.time_offset):+.3f} s)"
        if self.frames_unmatched:
            frames += f", {self.frames_unmatched} original frames without a partner"
        lines.append(frames)
        if self.faces_borderline:
            lines.append(
                f"  {self.faces_borderline} face-frames under {self.threshold:g} but matched no better than an identity-free face "
                f"(within {NOISE_MARGIN:g}): borderline, not leaks"
            )
        skipped = [
            (self.faces_small, "too small"),
            (self.faces_unrecognisable, "unrecognisable (a blank or featureless face already matches them)"),
            (self.faces_kept, "kept by the plan"),
            (self.faces_unchecked, "unchecked (no partner frame)"),
        ]
        if any(n for n, _ in skipped):
            lines.append("  faces not compared: " + ", ".join(f"{n} {why}" for n, why in skipped if n))
        if self.leaks:
            lines.append(f"  leaks: {len(self.leaks)} face-frames ({100 * self.leak_fraction:.1f}%), longest run {self.longest_run} frames")
            for ident, items in self.by_identity().items():
                name = "face outside the plan" if ident is None else f"identity {ident}" if self.with_plan else f"face {ident}"
                ranges = _ranges(items)
                parts = [
                    a.timecode if a is b else f"{a.timecode}-{b.timecode} ({b.frame_index - a.frame_index + 1} frames)" for a, b in ranges
                ]
                more = f", ... {len(parts) - SUMMARY_RANGES} more ranges" if len(parts) > SUMMARY_RANGES else ""
                lines.append(f"    {name}: {len(items)} face-frames: {', '.join(parts[:SUMMARY_RANGES])}{more}")
        if self.frames_unmatched and self.frames_compared < self.frames_unmatched:
            lines.append("  most frames found no partner: if the anonymized video was re-timed to a constant rate, pair them by index")
        return "\n".join(lines)


# -- pairing frames ---------------------------------------------------------------------------
@dataclass(frozen=True)
class TimedFrame:
    """A decoded frame with its presentation time in seconds (Fraction)."""

    index: int
    time: Fraction
    image: np.ndarray = field(repr=False)


def _timed(frames: Iterable[Any], rate: Fraction) -> Iterator[TimedFrame]:
    """``Frame`` -> ``TimedFrame``; frames without pts get index / average rate."""
    for f in frames:
        t = Fraction(f.pts) * Fraction(f.time_base) if f.pts is not None else Fraction(f.index) / (rate or 30)
        yield TimedFrame(f.index, t, f.image)


def pair_frames(
    originals: Iterable[TimedFrame], anonymized: Iterable[TimedFrame], tolerance: Fraction, match: str = "auto"
) -> Iterator[tuple[TimedFrame, TimedFrame | None, Fraction]]:
    """Yield ``(original, anonymized or None, offset)`` for every original frame, in order.

    A streaming merge of two time-ordered streams: only anonymized frames within ``tolerance`` of
    the current original time are held, so memory stays a few frames whatever the lengths. The
    nearest anonymized frame strictly within ``tolerance`` wins. ``offset`` is what was added to
    original times: 0 for "time", the difference of the first frames' times for "start" (and for
    "auto" when the first frames are further apart than ``tolerance``).
    """
    orig_it, anon_it = iter(originals), iter(anonymized)
    if match == "index":
        for o in orig_it:
            yield o, next(anon_it, None), Fraction(0)
        return
    first_o = next(orig_it, None)
    if first_o is None:
        return
    buf: deque[TimedFrame] = deque()
    first_a = next(anon_it, None)
    if first_a is not None:
        buf.append(first_a)
    offset = Fraction(0)
    if first_a is not None and match in ("start", "auto"):
        gap = first_a.time - first_o.time
        if match == "start" or abs(gap) >= tolerance:
            offset = gap
    exhausted = first_a is None
    for o in _chain(first_o, orig_it):
        t = o.time + offset
        while not exhausted and (not buf or buf[-1].time < t + tolerance):
            a = next(anon_it, None)
            if a is None:
                exhausted = True
            else:
                buf.append(a)
        while buf and buf[0].time <= t - tolerance:
            buf.popleft()
        near = [a for a in buf if abs(a.time - t) < tolerance]
        yield o, (min(near, key=lambda a: abs(a.time - t)) if near else None), offset


def _chain(first: TimedFrame, rest: Iterator[TimedFrame]) -> Iterator[TimedFrame]:
    yield first
    yield from rest


# -- geometry and identities ------------------------------------------------------------------
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


def scale_points(points: np.ndarray, src_hw: tuple[int, int], dst_hw: tuple[int, int]) -> np.ndarray:
    """Map pixel coordinates between two sizes of the same picture (pixel centres stay centres)."""
    sy, sx = dst_hw[0] / src_hw[0], dst_hw[1] / src_hw[1]
    if (sx, sy) == (1.0, 1.0):
        return np.asarray(points, np.float64)
    p = np.asarray(points, np.float64).copy()
    p[..., 0] = (p[..., 0] + 0.5) * sx - 0.5
    p[..., 1] = (p[..., 1] + 0.5) * sy - 0.5
    return p


def face_mask(transform: np.ndarray, box: np.ndarray, size: int = CHIP_SIZE) -> np.ndarray:
    """Boolean (size,size) mask of the ellipse inscribed in the detector's face ``box``, in chip pixels.

    The box is what the detector calls the face and what every anonymizer is built to cover at
    the least; ``transform`` (image -> chip, a similarity) maps it into the chip, rotation included.
    """
    m = np.asarray(transform, np.float64)
    x1, y1, x2, y2 = (float(v) for v in box)
    cx, cy = m @ np.array([(x1 + x2) / 2, (y1 + y2) / 2, 1.0])
    scale = float(np.sqrt(abs(np.linalg.det(m[:, :2]))))
    angle = float(np.degrees(np.arctan2(m[1, 0], m[0, 0])))
    mask = np.zeros((size, size), np.uint8)
    shift = 4  # cv2 fixed-point bits: sub-pixel centre and axes
    centre = (int(round(cx * 16)), int(round(cy * 16)))
    axes = (max(1, int(round(scale * (x2 - x1) / 2 * 16))), max(1, int(round(scale * (y2 - y1) / 2 * 16))))
    cv2.ellipse(mask, centre, axes, angle, 0, 360, 1, -1, cv2.LINE_8, shift)
    return mask.astype(bool)


def faceless(chip: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The chip with the face (``mask``) filled by its own mean colour: identity-free, context kept.

    What a perfect face-only anonymizer would leave. If the recogniser still matches it to the
    original, its match comes from context (hair, background, lighting) or from nothing at all,
    and says nothing about whether the face was anonymized.
    """
    out = chip.copy()
    if mask.any():
        out[mask] = chip[mask].mean(axis=0).round().astype(np.uint8)
    return out


# Gaussian sigma, in chip pixels (chips are 150 wide), of the "featureless" reference: eyes, nose
# and mouth merge into one blob, so no identity is left. Measured with the exact recognizer: on
# well-lit frontal faces (talkinghead_1, studio_interview_2people) it never matches the original
# (median L2 0.71-0.85); on hamilton_stage.mp4's dim, turned faces 65% of faces still "match" it.
FEATURELESS_SIGMA = 16.0


def featureless(chip: np.ndarray) -> np.ndarray:
    """The chip blurred until no facial feature is left: an identity-free reference with the
    face's own colours and layout. Where even this matches the original, a match says nothing."""
    return cv2.GaussianBlur(chip, (0, 0), FEATURELESS_SIGMA)


# See the module docstring: the median descriptor change of an untouched face between frames.
NOISE_MARGIN = 0.1


def timecode(seconds: Fraction) -> str:
    """HH:MM:SS.mmm, rounded to the millisecond (negative offsets clamp to zero)."""
    return clock(max(Fraction(seconds), Fraction(0)))


def _ranges(leaks: Sequence[AuditLeak]) -> list[tuple[AuditLeak, AuditLeak]]:
    """Consecutive-frame stretches of ``leaks`` (sorted by frame), as (first, last) pairs."""
    out: list[tuple[AuditLeak, AuditLeak]] = []
    for leak in sorted(leaks, key=lambda x: x.frame_index):
        if out and leak.frame_index <= out[-1][1].frame_index + 1:
            out[-1] = (out[-1][0], leak)
        else:
            out.append((leak, leak))
    return out


def longest_run(frames_by_key: dict[Any, set[int]]) -> int:
    """Most consecutive frame indices held by any one key."""
    best = 0
    for frames in frames_by_key.values():
        run, prev = 0, None
        for f in sorted(frames):
            run = run + 1 if prev is not None and f == prev + 1 else 1
            prev = f
            best = max(best, run)
    return best


# -- the audit --------------------------------------------------------------------------------
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


def check_sizes(orig: Any, anon: Any, original: str, anonymized: str) -> None:
    """Refuse two files that cannot be an original and its copy: another shape or another length."""
    ar_o, ar_a = orig.width / max(orig.height, 1), anon.width / max(anon.height, 1)
    if abs(ar_o - ar_a) > 0.03 * ar_o:
        raise InputError(
            f"{anonymized}: {anon.width}x{anon.height} cannot be an anonymized copy of {original} ({orig.width}x{orig.height}); "
            "give the original first, then its copy"
        )
    d_o, d_a = float(orig.duration), float(anon.duration)
    if d_o > 0 and d_a > 0 and abs(d_o - d_a) > max(1.0, 0.1 * max(d_o, d_a)):
        raise InputError(
            f"{anonymized} lasts {d_a:.1f} s and {original} {d_o:.1f} s: not the same video; give the original first, then its copy"
        )
