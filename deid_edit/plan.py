"""The plan: everything the analyze pass learned, as a versioned JSON sidecar (``.deid.json``).

analyze -> ``Plan`` -> ``save_plan`` / ``load_plan`` -> render (via ``Plan.regions_at``).
Only detections travel between the passes, never frames. Users re-render in another mode without
re-detecting, editors review or edit who is anonymized, plugins read it, tests keep golden plans.
The schema is labelled ``deid_edit.Plan.2`` (as OTIO labels ``Clip.2``): every field is
present, so readers index it and never guess a default. ``upgrade`` reads ``Plan.1`` files, filling
what they left out with what deid-edit did before the field existed. An unknown schema or a plan
made for another file is a ``PlanError``, never a silently wrong render.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from itertools import chain
from pathlib import Path
from typing import Any

import numpy as np

from .config import AnalyzeConfig
from .errors import PlanError
from .io.atomic import write_atomic
from .types import FaceRegion, FrameDetections, Identity, Shot, Track, VideoInfo, in_face_order

SCHEMA = "deid_edit.Plan.2"
PLAN_1 = "deid_edit.Plan.1"
# Detector boxes run from the brows to the chin; forehead and hair (which identify people too) sit
# above, and a face looking down drifts the box towards the chin: regions reach higher (upright).
TOP_EXTRA = 0.12
# A head is taller than wide. A detector box shorter than this (height/width, before TOP_EXTRA) is
# foreshortened: the face is pitched, most often looking down, and what the box lost is the
# forehead and crown above it (a person looking down shows mostly hair and brow). The region grows
# upward until the box is this tall (fail closed). Frontal CenterFace boxes have a median of
# 1.26-1.42 per clip on ../shared/footage; 1.45 took crowd_small_faces' leaked face-frames from 65
# to 9 (longest run 29 -> 2) for 0.7 points more false-mask area over eight clips (1.55% -> 2.23%,
# deface 1.5.0: 3.16%), benchmarks/leaks.py.
MIN_ASPECT = 1.45


def region_top(box: np.ndarray) -> float:
    """Top edge of the region of a tracked face box (xyxy): grown by ``TOP_EXTRA`` of its height,
    and further while the box is shorter than ``MIN_ASPECT`` times its width."""
    x1, y1, x2, y2 = (float(v) for v in box)
    w, h = x2 - x1, y2 - y1
    return y1 - h * TOP_EXTRA - max(0.0, MIN_ASPECT * w - h)


# A face turned towards profile shows the back of its head, ear and jaw beside and below the
# detector's box, which hugs the visible features (CenterFace boxes of profiles run from the nose to
# about the ear). The region grows towards the back of the head by up to PROFILE_BACK box widths and
# downward by PROFILE_DOWN box heights, ramping in once the nose has moved past an eye
# (``profile_turn``). On benchmarks/leaks.py's eight clips this took the leaked face-frames from 22 to
# 18 (hamilton's pianist in profile at the frame edge, crowd's long-haired woman) for 0.3 points
# more false-mask area (mean per clip 2.30% -> 2.61%; hamilton's large profile 5.1% -> 7.2%).
# Growing from a smaller turn (0.25) or further (0.4 / 0.15) gained one more face-frame for twice
# that area.
PROFILE_BACK = 0.3
PROFILE_DOWN = 0.1
PROFILE_RAMP = (0.5, 1.0)  # |turn| where the growth starts and where it is full


def profile_turn(landmarks: np.ndarray | None) -> float:
    """Signed head turn from 5-point landmarks: the nose's offset from the eyes' midpoint in units
    of the eye span (0 frontal, +-0.5 nose at an eye, larger past it); negative when the face looks
    towards image-left (the back of the head is on the right). 0 without usable landmarks."""
    if landmarks is None:
        return 0.0
    lm = np.asarray(landmarks, np.float64)
    if not np.isfinite(lm).all() or not in_face_order(lm):
        return 0.0  # nonsense landmarks (upside down, interpolated across a flip): no direction
    span = abs(lm[1, 0] - lm[0, 0])
    height = (lm[3, 1] + lm[4, 1]) / 2 - (lm[0, 1] + lm[1, 1]) / 2  # eyes to mouth
    return float((lm[2, 0] - (lm[0, 0] + lm[1, 0]) / 2) / max(span, 0.05 * height, 1e-3))


def profile_growth(landmarks: np.ndarray | None) -> tuple[float, float]:
    """(fraction of PROFILE_BACK/PROFILE_DOWN to apply, side: -1 grow left, +1 grow right)."""
    turn = profile_turn(landmarks)
    a, b = PROFILE_RAMP
    k = float(np.clip((abs(turn) - a) / (b - a), 0.0, 1.0))
    return k, (1.0 if turn < 0 else -1.0)


# A box clipped by the frame edge hides how far the face goes on: extend it past the edge so the
# ellipse's flat middle, not its curved end, lies along the border (jaw and cheek at the edge).
EDGE_TOUCH = 2.0
EDGE_EXTEND = 0.4
SCHEMA_FAMILY = "deid_edit.Plan"
# A cut is not always one clean frame: a dissolve blends both shots for a frame or more, and the
# shot detector places the cut at one of its frames, so the last face of the shot before shows as a
# ghost in the first frame after (plasticbubble_4people frames 64, 183, 536, 623). Regions that
# reach a cut are carried this many frames into the next shot, with this much extra margin. Not the
# other way: no labelled frame needed it, and a face of the next shot carried back would mask a
# kept person in the last frame before every cut. Tracks themselves stay inside their shot
# (identities rely on that).
CUT_CARRY = 1
CARRY_MARGIN = 0.1


def default_config() -> dict[str, Any]:
    """The config section of a plan made with the default settings (plans built in code, tests)."""
    return {**json.loads(json.dumps(AnalyzeConfig().to_dict())), "metadata_removed": None}


# What a Plan.1 file meant where it left a field out: the value deid-edit used before the field
# existed. Any other missing field makes the file damaged.
PLAN_1_CONFIG = {
    ("detect", "threshold"): 0.0,  # before weak tracks: no track counted as weak
    ("identity", "recognizer"): "exact",  # before the fast recognizer, descriptors came from the exact one
    ("identity", "linkage"): "average",  # before complete linkage
    ("identity", "link_threshold"): 0.55,
}
CONFIG_SECTIONS = ("detect", "shots", "track", "identity")


def upgrade(data: dict[str, Any], source: str = "plan") -> dict[str, Any]:
    """A plan file's JSON as ``Plan.2`` (a copy when it was older); ``PlanError`` for other schemas."""
    schema = data.get("schema") if isinstance(data, dict) else None
    if schema == SCHEMA:
        return data
    if schema != PLAN_1:
        hint = "made by a newer deid-edit; upgrade" if str(schema).startswith(SCHEMA_FAMILY) else "not a deid-edit plan"
        raise PlanError(f"{source}: unknown plan schema {schema!r} ({hint}); expected {SCHEMA}")
    d = copy.deepcopy(data)
    d["schema"] = SCHEMA
    d.setdefault("generator", "")
    config = d.setdefault("config", {})
    for section in CONFIG_SECTIONS:
        config.setdefault(section, {})
    for (section, key), value in PLAN_1_CONFIG.items():
        config[section].setdefault(key, value)
    config.setdefault("metadata_removed", None)  # not recorded then
    for t in d.get("tracks", []):
        t.setdefault("landmarks", None)
        t.setdefault("margin", [0.0] * len(t.get("boxes", [])))
        t.setdefault("embedding", None)
        t.setdefault("embed_samples", 0)
    for i in d.get("identities", []):
        i.setdefault("action", "anonymize")
        i.setdefault("label", "")
        i.setdefault("thumbnail", None)
    return d


@dataclass(frozen=True)
class Plan:
    """Detections, shots, tracks and identities of one video, plus the config that made them."""

    video: VideoInfo
    shots: tuple[Shot, ...]
    detections: Sequence[FrameDetections]  # a tuple, or the analysis' DetectionLog (compact)
    tracks: tuple[Track, ...]
    identities: tuple[Identity, ...]
    config: dict[str, Any] = field(default_factory=default_config)
    generator: str = ""
    _by_frame: dict[int, list[tuple[int, int]]] = field(init=False, repr=False, compare=False)
    _identity_of: dict[int, Identity] = field(init=False, repr=False, compare=False)
    _weak: set[int] = field(init=False, repr=False, compare=False)  # weak tracks: never above the detect threshold
    _carried: dict[int, list[tuple[int, int]]] = field(init=False, repr=False, compare=False)  # CUT_CARRY

    def __post_init__(self) -> None:
        by_frame: dict[int, list[tuple[int, int]]] = {}
        for ti, t in enumerate(self.tracks):
            for j, f in enumerate(t.frames.tolist()):
                by_frame.setdefault(f, []).append((ti, j))
        carried: dict[int, list[tuple[int, int]]] = {}
        for shot in self.shots[1:]:
            cut = shot.start
            for ti, j in by_frame.get(cut - 1, ()):
                if j == len(self.tracks[ti].frames) - 1:  # the track reaches the cut from before
                    for k in range(CUT_CARRY):
                        carried.setdefault(cut + k, []).append((ti, j))
        object.__setattr__(self, "_carried", carried)
        identity_of = {tid: ident for ident in self.identities for tid in ident.track_ids}
        sure = float(self.config["detect"]["threshold"])
        weak = {t.track_id for t in self.tracks if t.observed.any() and float(t.scores[t.observed].max()) < sure}
        object.__setattr__(self, "_by_frame", by_frame)
        object.__setattr__(self, "_identity_of", identity_of)
        object.__setattr__(self, "_weak", weak)

    @property
    def frame_count(self) -> int:
        return self.video.frame_count

    @property
    def recognizer(self) -> str:
        """The recognizer that made the tracks' descriptors (photos must be compared with the same)."""
        return str(self.config["identity"]["recognizer"])

    @property
    def link_threshold(self) -> float:
        """The descriptor distance under which this plan's tracks were linked into one person."""
        return float(self.config["identity"]["link_threshold"])

    def identity_of(self, track_id: int) -> Identity | None:
        return self._identity_of.get(track_id)

    def is_weak(self, track_id: int) -> bool:
        """A weak track: never detected above the plan's --threshold (a dim face, or no face)."""
        return track_id in self._weak

    def regions_at(self, frame_index: int, include_kept: bool = False) -> list[FaceRegion]:
        """Regions to render in ``frame_index``; tracks without an identity are anonymized. Regions
        that reach a cut are carried across it (``CUT_CARRY``), unobserved and with more margin."""
        out = []
        own, carried_in = self._by_frame.get(frame_index, ()), self._carried.get(frame_index, ())
        for k, (ti, j) in enumerate(chain(own, carried_in)):
            carried = k >= len(own)
            t = self.tracks[ti]
            ident = self._identity_of.get(t.track_id)
            if ident is not None and ident.action == "keep" and not include_kept:
                continue
            out.append(
                FaceRegion(
                    identity_id=ident.identity_id if ident else -1,
                    track_id=t.track_id,
                    box=self._region_box(t.boxes[j], None if t.landmarks is None else t.landmarks[j]),
                    landmarks=None if t.landmarks is None else t.landmarks[j],
                    observed=bool(t.observed[j]) and not carried,
                    score=float(t.scores[j]),
                    margin=(float(t.margin[j]) if len(t.margin) else 0.0) + (CARRY_MARGIN if carried else 0.0),
                    weak=t.track_id in self._weak,
                )
            )
        return out

    def _region_box(self, box: np.ndarray, landmarks: np.ndarray | None = None) -> np.ndarray:
        """The tracked box grown upward (forehead, hair; more for a foreshortened face, see
        ``MIN_ASPECT``), towards the back of a turned head (``PROFILE_BACK``) and past any frame
        edge it touches."""
        x1, y1, x2, y2 = (float(v) for v in box)
        w, h = x2 - x1, y2 - y1
        y1 = region_top(box)
        k, side = profile_growth(landmarks)
        if k > 0:
            if side > 0:
                x2 += k * PROFILE_BACK * w
            else:
                x1 -= k * PROFILE_BACK * w
            y2 += k * PROFILE_DOWN * h
        if x1 <= EDGE_TOUCH:
            x1 -= w * EDGE_EXTEND
        if y1 <= EDGE_TOUCH:
            y1 -= h * EDGE_EXTEND
        if x2 >= self.video.width - EDGE_TOUCH:
            x2 += w * EDGE_EXTEND
        if y2 >= self.video.height - EDGE_TOUCH:
            y2 += h * EDGE_EXTEND
        return np.array([x1, y1, x2, y2], np.float32)

    def face_frames(self) -> int:
        """Number of (frame, face) samples that will be anonymized."""
        return sum(len(self.regions_at(f)) for f in self._by_frame)

    # -- JSON ---------------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        video = asdict(self.video)
        for key in ("time_base", "avg_rate", "duration"):
            video[key] = frac_str(video[key])
        return {
            "schema": SCHEMA,
            "generator": self.generator,
            "video": video,
            "config": self.config,
            "shots": [[s.start, s.end] for s in self.shots],
            "detections": [_det_row(d) for d in self.detections],
            "tracks": [_track_json(t) for t in self.tracks],
            "identities": [
                {"id": i.identity_id, "tracks": list(i.track_ids), "action": i.action, "label": i.label, "thumbnail": i.thumbnail}
                for i in self.identities
            ],
        }

    @staticmethod
    def from_json(data: dict[str, Any], source: str = "plan") -> Plan:
        data = upgrade(data, source)
        try:
            v = dict(data["video"])
            for key in ("time_base", "avg_rate", "duration"):
                v[key] = Fraction(v[key])
            video = VideoInfo(**v)
            shots = tuple(Shot(i, int(a), int(b)) for i, (a, b) in enumerate(data["shots"]))
            dets = tuple(_det_from_row(i, row) for i, row in enumerate(data["detections"]))
            tracks = tuple(_track_from_json(t) for t in data["tracks"])
            idents = tuple(
                Identity(int(i["id"]), tuple(int(t) for t in i["tracks"]), i["action"], i["label"], i["thumbnail"])
                for i in data["identities"]
            )
            config = dict(data["config"])
            for section in CONFIG_SECTIONS:
                if not isinstance(config[section], dict):
                    raise TypeError(f"config.{section} is not an object")
            for section, key in PLAN_1_CONFIG:
                config[section][key]  # noqa: B018 - present in every Plan.2 (KeyError: damaged)
            config["metadata_removed"]  # noqa: B018
            generator = str(data["generator"])
        except (KeyError, TypeError, ValueError) as exc:
            raise PlanError(f"{source}: damaged plan ({type(exc).__name__}: {exc}); re-run 'deid-edit analyze'") from exc
        for ident in idents:
            if ident.action not in ("anonymize", "keep"):
                raise PlanError(f"{source}: identity {ident.identity_id} has action {ident.action!r}; use 'anonymize' or 'keep'")
        return Plan(video, shots, dets, tracks, idents, config, generator)

    def check_video(self, info: VideoInfo, source: str = "plan") -> None:
        """Refuse to apply this plan to a different file (size, fingerprint, geometry)."""
        mine = self.video
        if (mine.size_bytes, mine.fingerprint) != (info.size_bytes, info.fingerprint) or (mine.width, mine.height) != (
            info.width,
            info.height,
        ):
            raise PlanError(
                f"{source}: was made for {mine.path} ({mine.size_bytes} bytes), not {info.path} ({info.size_bytes} bytes); "
                "run 'deid-edit analyze' on this video"
            )


def frac_str(x: Fraction) -> str:
    return f"{x.numerator}/{x.denominator}"


def _r(a: np.ndarray) -> list[Any]:
    return np.round(np.asarray(a, np.float64), 2).tolist()


def _det_row(d: FrameDetections) -> list[list[float]]:
    rows = []
    for i in range(len(d)):
        row = _r(d.boxes[i]) + [round(float(d.scores[i]), 4)]
        if d.landmarks is not None:
            row += _r(d.landmarks[i].reshape(-1))
        rows.append(row)
    return rows


def _det_from_row(index: int, rows: Sequence[Sequence[float]]) -> FrameDetections:
    if not rows:
        return FrameDetections.empty(index)
    arr = np.asarray(rows, np.float32)
    lms = arr[:, 5:15].reshape(-1, 5, 2) if arr.shape[1] >= 15 else None
    return FrameDetections(index, arr[:, :4].copy(), arr[:, 4].copy(), lms)


def _track_json(t: Track) -> dict[str, Any]:
    return {
        "id": t.track_id,
        "shot": t.shot_index,
        "start": t.start,
        "boxes": _r(t.boxes),
        "scores": np.round(t.scores.astype(np.float64), 3).tolist(),
        "landmarks": None if t.landmarks is None else _r(t.landmarks.reshape(len(t.frames), -1)),
        "observed": "".join("1" if o else "0" for o in t.observed),
        "margin": np.round(t.margin.astype(np.float64), 3).tolist(),
        "embedding": None if t.embedding is None else np.round(t.embedding.astype(np.float64), 5).tolist(),
        "embed_samples": t.embed_samples,
    }


def _track_from_json(d: dict[str, Any]) -> Track:
    boxes = np.asarray(d["boxes"], np.float32).reshape(-1, 4)
    n = len(boxes)
    lms = None if d["landmarks"] is None else np.asarray(d["landmarks"], np.float32).reshape(n, 5, 2)
    observed = np.array([c == "1" for c in d["observed"]], bool)
    margin = np.asarray(d["margin"], np.float32)
    if len(observed) != n or len(margin) != n or len(d["scores"]) != n:
        raise ValueError(f"track {d['id']}: arrays of different lengths")
    emb = d["embedding"]
    return Track(
        int(d["id"]),
        int(d["shot"]),
        np.arange(int(d["start"]), int(d["start"]) + n, dtype=np.int64),
        boxes,
        np.asarray(d["scores"], np.float32),
        lms,
        observed,
        margin,
        None if emb is None else np.asarray(emb, np.float32),
        int(d["embed_samples"]),
    )


def save_plan(plan: Plan, path: str | os.PathLike[str]) -> Path:
    """Write the plan atomically (temporary file + rename)."""
    p = Path(path)
    write_atomic(p, json.dumps(plan.to_json(), separators=(",", ":")), PlanError, "plan", "check the folder")
    return p


def load_plan(path: str | os.PathLike[str]) -> Plan:
    """Read and validate a plan file."""
    p = Path(path)
    try:
        data = json.loads(p.read_text())
    except FileNotFoundError as exc:
        raise PlanError(f"{p}: no such plan file; run 'deid-edit analyze' first") from exc
    except (OSError, ValueError) as exc:
        raise PlanError(f"{p}: not a readable plan ({exc}); re-run 'deid-edit analyze'") from exc
    return Plan.from_json(data, source=str(p))
