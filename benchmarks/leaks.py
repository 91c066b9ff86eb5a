"""Leak benchmark: how many face-frames does the engine leave uncovered, and how does deface 1.5.0 do?

Input: clips (names in ../shared/footage, or paths). For every clip:

1. reference faces in the *original* video, found per frame by an independent pass (YuNet at native
   resolution + CenterFace at full resolution with a low threshold, union + NMS), cached as
   ``benchmarks/out/ref_<clip>.json`` (keyed by the clip's sha256 and size);
2. our covered mask per frame (``analyze`` or a saved plan; ``region_mask`` alpha >= 0.999, i.e. the
   fully opaque part of what the renderer draws);
3. with ``--deface``: deface 1.5.0 ``--replacewith solid`` run through a separate venv (made by
   ``benchmarks/deface_venv.sh``), its output cached as ``benchmarks/out/deface_<clip>_<sha>.mp4``
   and its mask recovered as "black in the output, clearly brighter in the input", blobs taken as
   the rectangles deface paints. Clips that ffmpeg would read with repeated or dropped frames (variable
   rate, late video start) are given to deface as a lossless constant-rate copy of the same frames,
   so deface's frame i is our frame i.

A reference face is LEAKED in a frame when less than 90 % of its box is covered. Output: a table on
stdout (leaked face-frames, leaks per 1000 face-frames, longest run of consecutive leaked frames of
one face, false-mask area in % of the frame), ``--json OUT`` with every number, ``--dump-leaks DIR``
with PNG crops of leaked faces for humans to judge. Run from the repository root:

    nice -n 10 .venv/bin/python benchmarks/leaks.py [CLIP ...] [--deface] [--plan-dir DIR] [--json F] [--dump-leaks DIR]

The reference is a pair of detectors, not ground truth: look at the dumped crops before trusting a
small leak count either way. Boxes of the reference that a person looked at and found not to be
faces (a fist, a map graphic, snake skin) are listed with what they are in
``benchmarks/not_faces.json`` (keyed by the clip's sha256). The table is printed twice: against the
raw reference, and against the reviewed one (the raw one minus those boxes), for both systems. A
box enters that file only after its crop was looked at; ``--dump-leaks`` makes the crops.

Beside the detector reference, clips with a hand-checked head set (``benchmarks/heads/``: boxes on
the visible face of every head, profiles and heads cut by the edge included, on every 10th frame and
around cuts and track ends, labelled by people looking at the frames) are scored against it: a head
is leaked when less than 90 % of its visible face area is covered. That table is the one that can
see what frontal detectors miss. ``--heads-only`` skips the detector reference (fast).

Tests call ``measure_leaks(clip_path, plan)`` and ``measure_heads(clip_path, plan)``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path[:1]:
    # measure the working tree, not a (possibly stale) copy installed in the venv's site-packages
    sys.path.insert(0, str(REPO))

from deid_edit import analyze, load_plan, save_plan  # noqa: E402
from deid_edit.config import DetectConfig, RenderConfig  # noqa: E402
from deid_edit.detect.centerface import CenterFace  # noqa: E402
from deid_edit.geometry import iou_matrix, nms  # noqa: E402
from deid_edit.io.decode import VideoReader, probe  # noqa: E402
from deid_edit.plan import Plan  # noqa: E402
from deid_edit.render.shapes import FULL_ALPHA, covered_mask, padded_box  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent / "heads"))
import heads as headset  # noqa: E402

FOOTAGE = REPO.parent / "shared" / "footage"
YUNET_DIR = REPO.parent / "shared" / "refmodels" / "yunet"
YUNET_MODELS = ("yunet_n_dynamic.onnx", "yunet_n_640_640.onnx")  # first that accepts arbitrary sizes wins
OUT_DIR = Path(__file__).resolve().parent / "out"
DEFAULT_CLIPS = [
    "hamilton_stage.mp4",
    "talkinghead_1.mp4",
    "studio_interview_2people.mp4",
    "crowd_small_faces_1080p.mp4",
    "film_dark_vfr_3shots.mp4",
    "phone_selfie_2faces.mp4",
    "portrait_driving_d6.mp4",
    "news_anchor_480p.mp4",
]
DEFAULT_DEFACE_VENV = Path(os.environ.get("DEFACE_VENV", "/tmp/deface-venv"))

# reference pass (changing any of these invalidates the cache)
REF_VERSION = 1
YUNET_SCORE = 0.6
YUNET_NMS = 0.3
CF_THRESHOLD = 0.3
REF_NMS_IOU = 0.4
MIN_REF_SIDE = 12.0
CF_BATCH = 4
SRC_YUNET, SRC_CF = 1, 2  # bit flags; 3 = both detectors found the face

# scoring
COVER_OK = 0.90  # a reference box needs this fraction covered, else it leaked
ALPHA_FULL = FULL_ALPHA  # alpha at or above this counts as covered (fully opaque; render.shapes.covered_mask)
FALSE_DILATE = 0.25  # mask inside reference boxes grown by this much is not a false mask
TRACK_IOU = 0.3  # reference boxes in consecutive frames with more IoU are the same face
BIG_FACE = DetectConfig().min_face  # faces from this short side up are in the engine's default scope

# deface mask recovery (solid mode paints black, 0,0,0)
DEFACE_BLACK = 12  # output pixel with all channels below this may be painted
PAINT_MARGIN = 8  # ... and is when the input is this much brighter (codec noise on dark areas: about +-6)
ALIGN_BLACK = 16  # low-res gray below this is ignored when aligning frames
ALIGN_SEARCH = 2  # frames either side of the time-predicted frame tried by content


NOT_FACES_FILE = Path(__file__).resolve().parent / "not_faces.json"


def load_not_faces(name: str, sha256: str, path: Path = NOT_FACES_FILE) -> dict[int, list[list[float]]]:
    """Reviewed non-face boxes of clip ``name`` by frame; none when the file or the clip's entry is
    missing, or when the entry was made for another file of that name (sha256 differs)."""
    if not path.is_file():
        return {}
    entry = json.loads(path.read_text()).get(name)
    if not entry:
        return {}
    if entry["sha256"] != sha256:
        log(f"{name}: {path.name} was reviewed on another file of this name; not used")
        return {}
    out: dict[int, list[list[float]]] = {}
    for item in entry["boxes"]:
        out.setdefault(int(item["frame"]), []).append([float(v) for v in item["box"]])
    return out


# -- small geometry helpers ----------------------------------------------------------------------
def box_slices(box: np.ndarray, hw: tuple[int, int]) -> tuple[slice, slice]:
    """Pixel rows/columns of a float xyxy box, rounded and clipped, at least one pixel each way."""
    h, w = hw
    x0 = int(np.clip(round(float(box[0])), 0, w - 1))
    y0 = int(np.clip(round(float(box[1])), 0, h - 1))
    x1 = int(np.clip(round(float(box[2])), x0 + 1, w))
    y1 = int(np.clip(round(float(box[3])), y0 + 1, h))
    return slice(y0, y1), slice(x0, x1)


def resolve_clip(name: str | os.PathLike[str]) -> Path:
    """A clip name in the shared footage folder, or any existing path."""
    p = Path(name)
    if p.is_file():
        return p.resolve()
    q = FOOTAGE / p.name
    if q.is_file():
        return q
    raise SystemExit(f"{name}: no such clip (looked in {FOOTAGE})")


def file_key(path: Path) -> dict[str, Any]:
    """sha256 and size of the whole file: caches must never be reused for another file."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return {"sha256": h.hexdigest(), "size": path.stat().st_size}


# -- reference faces -------------------------------------------------------------------------------
@dataclass
class Reference:
    """Reference faces of one clip: per frame an (N, 6) array x1, y1, x2, y2, score, source flags."""

    clip: str
    width: int
    height: int
    boxes: list[np.ndarray]
    seconds: float  # time the reference pass took when it was computed
    cached: bool = False
    tracks: list[np.ndarray] = field(default_factory=list)  # per frame, a face id per box
    sha256: str = ""  # of the clip file (load_reference sets it; not_faces.json entries are keyed by it)

    @property
    def hw(self) -> tuple[int, int]:
        return self.height, self.width

    @property
    def face_frames(self) -> int:
        return sum(len(b) for b in self.boxes)

    def reviewed(self) -> tuple[Reference, int]:
        """This reference minus the boxes a person reviewed as not faces (``NOT_FACES_FILE``), and
        how many were removed. A box is removed when it overlaps a reviewed box of its frame (IoU >= 0.5)."""
        not_faces = load_not_faces(self.clip, self.sha256)
        boxes, tracks, removed = [], [], 0
        for i, (b, t) in enumerate(zip(self.boxes, self.tracks, strict=True)):
            drop = np.zeros(len(b), bool)
            if i in not_faces and len(b):
                drop = iou_matrix(b[:, :4], np.asarray(not_faces[i], np.float32).reshape(-1, 4)).max(axis=1) >= 0.5
            removed += int(drop.sum())
            boxes.append(b[~drop])
            tracks.append(t[~drop])
        return replace(self, boxes=boxes, tracks=tracks), removed


def make_yunet(w: int, h: int) -> tuple[Any, str]:
    """YuNet at the frame's native size; the first model file that accepts that size is used.

    The 640x640 export only runs at other sizes on OpenCV builds that reshape it; trying both keeps
    the benchmark working on either kind of OpenCV.
    """
    probe_img = np.zeros((h, w, 3), np.uint8)
    errors = []
    for name in YUNET_MODELS:
        path = YUNET_DIR / name
        try:
            det = cv2.FaceDetectorYN.create(str(path), "", (w, h), YUNET_SCORE, YUNET_NMS, 5000)
            det.detect(probe_img)
            return det, name
        except cv2.error as exc:
            errors.append(f"{name}: {str(exc).strip().splitlines()[-1]}")
    raise SystemExit(f"no YuNet model runs at {w}x{h}: {'; '.join(errors)}")


def merge_reference(yunet: np.ndarray, cf: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """Union of both detectors' boxes, too-small ones dropped, then NMS; flags say who agreed."""
    h, w = hw
    parts = []
    for boxes, flag in ((yunet, SRC_YUNET), (cf, SRC_CF)):
        if len(boxes):
            arr = np.zeros((len(boxes), 6), np.float32)
            arr[:, :5] = boxes[:, :5]
            arr[:, 5] = flag
            parts.append(arr)
    if not parts:
        return np.zeros((0, 6), np.float32)
    allb = np.concatenate(parts)
    allb[:, [0, 2]] = np.clip(allb[:, [0, 2]], 0, w)
    allb[:, [1, 3]] = np.clip(allb[:, [1, 3]], 0, h)
    side = np.minimum(allb[:, 2] - allb[:, 0], allb[:, 3] - allb[:, 1])
    allb = allb[side >= MIN_REF_SIDE]
    if not len(allb):
        return allb
    # agreement: the other detector has a box overlapping this one like a duplicate would
    ious = iou_matrix(allb, allb)
    for i in range(len(allb)):
        other = allb[:, 5] != allb[i, 5]
        if other.any() and float(ious[i, other].max()) >= REF_NMS_IOU:
            allb[i, 5] = SRC_YUNET | SRC_CF
    keep = nms(allb[:, :4], allb[:, 4], REF_NMS_IOU)
    return allb[keep]


def reference_pass(clip: Path, threads: int) -> Reference:
    """Detect reference faces in every frame of the original clip with two detectors at full resolution.

    Independent of the engine's settings: no downscaling, no tracking, a second model family (YuNet),
    and CenterFace at a threshold well below the engine's, so faces the engine drops are still here.
    """
    t0 = time.perf_counter()
    info = probe(clip)
    w, h = info.width, info.height
    yunet, _ = make_yunet(w, h)
    cf = CenterFace(device="cpu", threads=threads)
    yunet_boxes: list[np.ndarray] = []
    cf_boxes: list[np.ndarray] = []
    batch: list[np.ndarray] = []
    batch_idx: list[int] = []

    def flush() -> None:
        for d in cf.detect(batch, batch_idx, 1.0, CF_THRESHOLD):
            cf_boxes.append(np.concatenate([d.boxes, d.scores[:, None]], axis=1) if len(d) else np.zeros((0, 5), np.float32))
        batch.clear()
        batch_idx.clear()

    for frame in VideoReader(clip).frames():
        img = frame.image
        if img.shape[:2] != (h, w):
            raise SystemExit(f"{clip}: frame {frame.index} is {img.shape[1]}x{img.shape[0]}, not {w}x{h}")
        _, faces = yunet.detect(np.ascontiguousarray(img[..., ::-1]))
        if faces is None or not len(faces):
            yunet_boxes.append(np.zeros((0, 5), np.float32))
        else:
            x, y, bw, bh = faces[:, 0], faces[:, 1], faces[:, 2], faces[:, 3]
            yunet_boxes.append(np.stack([x, y, x + bw, y + bh, faces[:, 14]], axis=1).astype(np.float32))
        batch.append(img)
        batch_idx.append(frame.index)
        if len(batch) >= CF_BATCH:
            flush()
    flush()
    boxes = [merge_reference(a, b, (h, w)) for a, b in zip(yunet_boxes, cf_boxes, strict=True)]
    return Reference(clip.name, w, h, boxes, time.perf_counter() - t0)


def ref_params() -> dict[str, Any]:
    """Everything that changes the reference; part of the cache key."""
    return {
        "version": REF_VERSION,
        "yunet_score": YUNET_SCORE,
        "yunet_nms": YUNET_NMS,
        "cf_threshold": CF_THRESHOLD,
        "nms_iou": REF_NMS_IOU,
        "min_side": MIN_REF_SIDE,
    }


def load_reference(clip: Path, threads: int = 2, refresh: bool = False) -> Reference:
    """The clip's reference faces from ``benchmarks/out/ref_<clip>.json``, computed when missing or stale."""
    cache = OUT_DIR / f"ref_{clip.name}.json"
    key = file_key(clip)
    if cache.is_file() and not refresh:
        try:
            data = json.loads(cache.read_text())
            if data.get("key") == key and data.get("params") == ref_params():
                boxes = [np.asarray(f, np.float32).reshape(-1, 6) for f in data["boxes"]]
                ref = Reference(data["clip"], data["width"], data["height"], boxes, float(data["seconds"]), cached=True)
                ref.tracks = link_faces(ref.boxes)
                ref.sha256 = key["sha256"]
                return ref
        except (OSError, ValueError, KeyError, TypeError):
            pass  # unreadable cache: recompute
    ref = reference_pass(clip, threads)
    ref.tracks = link_faces(ref.boxes)
    ref.sha256 = key["sha256"]
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    payload = {
        "clip": ref.clip,
        "key": key,
        "params": ref_params(),
        "width": ref.width,
        "height": ref.height,
        "frames": len(ref.boxes),
        "seconds": round(ref.seconds, 2),
        "columns": ["x1", "y1", "x2", "y2", "score", "source (1 yunet, 2 centerface, 3 both)"],
        "boxes": [np.round(b.astype(np.float64), 2).tolist() for b in ref.boxes],
    }
    tmp = cache.with_name(cache.name + ".tmp")
    tmp.write_text(json.dumps(payload, separators=(",", ":")))
    os.replace(tmp, cache)
    return ref


def link_faces(boxes: list[np.ndarray], iou: float = TRACK_IOU) -> list[np.ndarray]:
    """Give every reference box a face id, carried frame to frame by greedy IoU matching.

    Only needed to find the longest run of one face leaked in consecutive frames; a frame in which
    the reference misses the face ends its id.
    """
    out: list[np.ndarray] = []
    prev = np.zeros((0, 6), np.float32)
    prev_ids = np.zeros((0,), np.int64)
    next_id = 0
    for cur in boxes:
        ids = np.full(len(cur), -1, np.int64)
        m = iou_matrix(cur, prev)
        while m.size and m.max() > iou:
            i, j = np.unravel_index(int(np.argmax(m)), m.shape)
            ids[i] = prev_ids[j]
            m[i, :] = -1
            m[:, j] = -1
        for i in np.nonzero(ids < 0)[0]:
            ids[i] = next_id
            next_id += 1
        out.append(ids)
        prev, prev_ids = cur, ids
    return out


# -- scoring ---------------------------------------------------------------------------------------
@dataclass
class Leak:
    """One reference face in one frame that a mask covered less than ``COVER_OK``."""

    frame: int
    face: int
    box: list[float]
    coverage: float
    source: int
    score: float


@dataclass
class Score:
    """Leak numbers of one system on one clip."""

    frames: int = 0  # frames evaluated
    face_frames: int = 0
    leaked: int = 0
    false_px: float = 0.0  # sum over frames of false-mask fraction
    longest: int = 0
    longest_face: int = -1
    longest_start: int = -1
    leaks: list[Leak] = field(default_factory=list)
    missing_frames: int = 0  # frames the system never produced (deface's frame-rate conversion)
    big_face_frames: int = 0  # reference face-frames with a short side >= BIG_FACE
    big_leaked: int = 0

    @property
    def per_1000(self) -> float:
        return 1000.0 * self.leaked / self.face_frames if self.face_frames else 0.0

    @property
    def false_pct(self) -> float:
        return 100.0 * self.false_px / self.frames if self.frames else 0.0

    def by_source(self) -> dict[str, int]:
        names = {SRC_YUNET: "yunet_only", SRC_CF: "centerface_only", SRC_YUNET | SRC_CF: "both"}
        out = dict.fromkeys(names.values(), 0)
        for lk in self.leaks:
            out[names[lk.source]] += 1
        return out

    def summary(self) -> dict[str, Any]:
        return {
            "frames_evaluated": self.frames,
            "missing_frames": self.missing_frames,
            "ref_face_frames": self.face_frames,
            "leaked": self.leaked,
            "leaks_per_1000": round(self.per_1000, 2),
            "longest_run": self.longest,
            "longest_run_face": self.longest_face,
            "longest_run_start_frame": self.longest_start,
            "false_mask_pct": round(self.false_pct, 3),
            "leaked_by_reference_source": self.by_source(),
            "big_face_min_side": BIG_FACE,
            "big_ref_face_frames": self.big_face_frames,
            "big_leaked": self.big_leaked,
        }


def score_all(refs: Sequence[Reference], masks: Iterable[tuple[int, np.ndarray | None]]) -> list[Score]:
    """Score per-frame covered masks (bool, frame-sized; None = frame not produced) against several
    references of one clip (raw and reviewed) in one pass:
    the masks are costly (deface's needs two videos decoded), so they are made once.

    One rule for every system, so our numbers and deface's are comparable: a face is leaked when
    less than ``COVER_OK`` of its reference box is covered; false mask is covered area outside every
    reference box grown by ``FALSE_DILATE``, as a fraction of the frame.
    """
    scores = [Score() for _ in refs]
    runs: list[dict[int, tuple[int, int]]] = [{} for _ in refs]  # face id -> (start, length) of its leaked run
    hw = refs[0].hw
    area = float(hw[0] * hw[1])
    for i, mask in masks:
        if i >= len(refs[0].boxes):
            break
        for k, (ref, s) in enumerate(zip(refs, scores, strict=True)):
            if mask is None:
                s.missing_frames += 1
                runs[k] = {}
                continue
            s.frames += 1
            allowed = np.zeros(hw, bool)
            new_run: dict[int, tuple[int, int]] = {}
            for b, fid in zip(ref.boxes[i], ref.tracks[i], strict=True):
                s.face_frames += 1
                big = min(b[2] - b[0], b[3] - b[1]) >= BIG_FACE
                s.big_face_frames += int(big)
                ys, xs = box_slices(b, hw)
                cov = float(mask[ys, xs].mean())
                pys, pxs = box_slices(padded_box(b[:4], FALSE_DILATE), hw)
                allowed[pys, pxs] = True
                if cov < COVER_OK:
                    s.leaked += 1
                    s.big_leaked += int(big)
                    s.leaks.append(Leak(i, int(fid), [round(float(v), 1) for v in b[:4]], round(cov, 3), int(b[5]), round(float(b[4]), 3)))
                    start, length = runs[k].get(int(fid), (i, 0))
                    new_run[int(fid)] = (start, length + 1)
                    if length + 1 > s.longest:
                        s.longest, s.longest_face, s.longest_start = length + 1, int(fid), start
            runs[k] = new_run
            s.false_px += float(np.count_nonzero(mask & ~allowed)) / area
    return scores


def our_mask(plan: Plan, index: int, hw: tuple[int, int], rcfg: RenderConfig) -> np.ndarray:
    """Pixels our renderer covers fully in frame ``index``: union of the regions' opaque alpha."""
    return covered_mask(plan.regions_at(index), hw, rcfg)


def plan_misses(reference: Plan, plan: Plan, rcfg: RenderConfig | None = None) -> tuple[int, list[int]]:
    """Face-frames (observed regions) of ``reference`` and the frames of those that ``plan``'s
    rendered mask covers less than ``COVER_OK``: what one path masks and another would leak (the
    GPU plan against the CPU plan, the half-scale pass against the normal scale)."""
    rcfg = rcfg or RenderConfig()
    hw = (reference.video.height, reference.video.width)
    total, missed = 0, []
    for i in range(reference.frame_count):
        regions = [r for r in reference.regions_at(i) if r.observed]
        if not regions:
            continue
        covered = our_mask(plan, i, hw, rcfg)
        for r in regions:
            total += 1
            if float(covered[box_slices(r.box, hw)].mean()) < COVER_OK:
                missed.append(i)
    return total, missed


def our_masks(plan: Plan, ref: Reference, rcfg: RenderConfig | None = None) -> Iterator[tuple[int, np.ndarray | None]]:
    """Our covered mask for every frame of the reference (frames past the plan: nothing covered)."""
    rcfg = rcfg or RenderConfig()
    for i in range(len(ref.boxes)):
        yield i, our_mask(plan, i, ref.hw, rcfg)


def measure_leaks(clip_path: str | os.PathLike[str], plan: Plan, threads: int = 2, rcfg: RenderConfig | None = None) -> dict[str, Any]:
    """Leak numbers of ``plan`` on ``clip_path`` (for tests): reference face-frames, leaked, longest run.

    Reads or creates the cached reference of the clip, so a test pays for the reference pass once.
    Import this file with ``benchmarks`` on ``sys.path`` (``import leaks``), or register the module in
    ``sys.modules`` before ``exec_module`` when loading it by path: its dataclasses need that.
    """
    clip = resolve_clip(clip_path)
    ref = load_reference(clip, threads)
    if plan.frame_count != len(ref.boxes):
        raise ValueError(f"{clip.name}: plan covers {plan.frame_count} frames, the reference {len(ref.boxes)}")
    reviewed, removed = ref.reviewed()
    raw, rev = score_all([ref, reviewed], our_masks(plan, ref, rcfg))
    return {"clip": clip.name, "frames": len(ref.boxes), **raw.summary(), "not_faces": removed, "reviewed": rev.summary()}


def measure_heads(clip_path: str | os.PathLike[str], plan: Plan, rcfg: RenderConfig | None = None) -> dict[str, Any]:
    """``plan`` scored against the clip's hand-checked head set (for tests)."""
    clip = resolve_clip(clip_path)
    labels = headset.load_labels(clip)["frames"]
    rcfg = rcfg or RenderConfig()
    hw = (plan.video.height, plan.video.width)
    score = headset.score_heads(labels, ((i, our_mask(plan, i, hw, rcfg)) for i in sorted(labels) if i < plan.frame_count))
    return {"clip": clip.name, **score.summary()}


class Capture:
    """Passes (frame, mask) pairs through and keeps the masks of the wanted frames (one decode of
    deface's output serves both references)."""

    def __init__(self, masks: Iterable[tuple[int, np.ndarray | None]], wanted: Iterable[int]) -> None:
        self.masks, self.wanted, self.kept = masks, set(wanted), {}

    def __iter__(self) -> Iterator[tuple[int, np.ndarray | None]]:
        for i, m in self.masks:
            if i in self.wanted:
                self.kept[i] = m
            yield i, m

    def pairs(self) -> list[tuple[int, np.ndarray | None]]:
        return sorted(self.kept.items(), key=lambda kv: kv[0])


# -- deface ----------------------------------------------------------------------------------------
def deface_exe(venv: Path) -> Path:
    """The venv's deface executable, with the command that creates it when missing."""
    exe = venv / "bin" / "deface"
    if not exe.is_file():
        raise SystemExit(f"{exe}: missing; run benchmarks/deface_venv.sh {venv}")
    return exe


def deface_sees_every_frame(clip: Path) -> bool:
    """True when ffmpeg's constant-rate reading (what deface gets) yields each decoded frame exactly once.

    imageio-ffmpeg reads at the stream's r_frame_rate, slotting frames by timestamp from the
    container's start; any frame off its slot (variable rate, late start, a guessed rate that is not
    the real one) makes ffmpeg repeat or drop frames.
    """
    with av.open(str(clip)) as c:
        stream = c.streams.video[0]
        rate = float(stream.guessed_rate or 0)
        start = (c.start_time or 0) / 1_000_000
        tb = stream.time_base
        pts = sorted(float(p.pts * tb) for p in c.demux(stream) if p.pts is not None and p.size)
    if not rate or not pts:
        return False
    slots = np.round((np.asarray(pts) - start) * rate)
    return bool(np.array_equal(slots, np.arange(len(pts))))


def lossless_cfr_copy(clip: Path, dst: Path) -> Path:
    """The clip's upright RGB frames, bit-exact (H.264 RGB, qp 0), one per slot of a constant rate.

    Given to deface instead of a clip it would read with repeated or dropped frames, so that its
    output frame i is our frame i and its pixels are exactly the ones our reference pass saw.
    """
    info = probe(clip)
    with av.open(str(dst), "w") as out:
        stream = out.add_stream("libx264rgb", rate=info.avg_rate or 25, options={"qp": "0", "preset": "ultrafast"})
        stream.width, stream.height, stream.pix_fmt = info.width, info.height, "rgb24"
        for f in VideoReader(clip).frames():
            frame = av.VideoFrame.from_ndarray(f.image, format="rgb24")
            frame.pts = f.index
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return dst


def run_deface(clip: Path, venv: Path, refresh: bool = False) -> tuple[Path, dict[str, Any]]:
    """deface's solid-mode output of ``clip`` (cached under benchmarks/out), and how it was made.

    deface runs with its defaults (threshold 0.2, mask scale 1.3, full-resolution inference) plus
    ``--replacewith solid``, so its mask can be read back from the output as black pixels. Clips
    that ffmpeg would read with repeated or dropped frames are handed over as a lossless
    constant-rate copy of the same frames (``lossless_cfr_copy``).
    """
    key = file_key(clip)
    stem = f"deface_{clip.name}_{key['sha256'][:12]}"
    out, meta_path = OUT_DIR / f"{stem}.mp4", OUT_DIR / f"{stem}.json"
    if out.is_file() and meta_path.is_file() and not refresh:
        meta = json.loads(meta_path.read_text())
        meta["cached"] = True
        return out, meta
    exe = deface_exe(venv)
    has_ort = subprocess.run([str(venv / "bin" / "python"), "-c", "import onnxruntime"], capture_output=True).returncode == 0
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="deface-") as tmp:
        source, given = clip, "original"
        if not deface_sees_every_frame(clip):
            source, given = lossless_cfr_copy(clip, Path(tmp) / f"{clip.stem}_cfr.mkv"), "lossless constant-rate copy"
        tmp_out = Path(tmp) / f"{clip.stem}_deface.mp4"
        cmd = [str(exe), str(source), "-o", str(tmp_out), "--replacewith", "solid"]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        seconds = time.perf_counter() - t0
        (OUT_DIR / f"{stem}.log").write_text(proc.stdout + proc.stderr)
        if proc.returncode != 0 or not tmp_out.is_file():
            raise SystemExit(f"deface failed on {clip.name} (exit {proc.returncode}); see {OUT_DIR / (stem + '.log')}")
        shutil.move(str(tmp_out), out)
    meta = {
        "key": key,
        "seconds": round(seconds, 2),
        "input": given,
        "command": ["deface", source.name, "-o", out.name, "--replacewith", "solid"],
        "backend": "onnxrt" if has_ort else "opencv",
    }
    meta_path.write_text(json.dumps(meta, indent=1))
    meta["cached"] = False
    return out, meta


def to_input_geometry(out: np.ndarray, hw: tuple[int, int], how: str) -> np.ndarray:
    """deface's frame brought back to the input's size: imageio-ffmpeg pads/scales to multiples of 16."""
    h, w = hw
    if out.shape[:2] == (h, w):
        return out
    if how == "crop":
        return np.ascontiguousarray(out[:h, :w])
    return cv2.resize(out, (w, h), interpolation=cv2.INTER_AREA)


def choose_geometry(clip: Path, out: Path) -> str:
    """'same', 'crop' or 'resize': whichever maps deface's first frame closest onto the input's."""
    a = next(iter(VideoReader(clip).frames())).image
    b = next(iter(VideoReader(out).frames())).image
    if a.shape == b.shape:
        return "same"
    if b.shape[0] < a.shape[0] or b.shape[1] < a.shape[1]:
        return "resize"
    errs = {}
    for how in ("crop", "resize"):
        c = to_input_geometry(b, a.shape[:2], how)
        ok = c.max(axis=2) >= DEFACE_BLACK
        errs[how] = float(np.abs(a.astype(np.int16) - c.astype(np.int16))[ok].mean()) if ok.any() else 1e9
    return min(errs, key=lambda k: errs[k])


def small_gray(img: np.ndarray) -> np.ndarray:
    """A quarter-size gray frame: enough to tell neighbouring frames apart, cheap to keep in memory."""
    h, w = img.shape[:2]
    g = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
    return cv2.resize(g, (max(1, w // 4), max(1, h // 4)), interpolation=cv2.INTER_AREA).astype(np.int16)


def cfr_prediction(clip: Path, times: list[float], n_out: int) -> tuple[list[int], float, str]:
    """Input frame shown by each of deface's ``n_out`` frames, predicted from the timeline.

    ffmpeg's constant-rate conversion puts an input frame at slot round(t * rate), t counted from
    the container's start (so a late first frame is repeated at the start), and repeats a frame
    until the next one's slot. The rate is the stream's r_frame_rate when that explains the output's
    frame count, else the count spread evenly over the clip.
    """
    with av.open(str(clip)) as c:
        start = (c.start_time or 0) / 1_000_000
        guessed = c.streams.video[0].guessed_rate
    t = np.asarray(times) - start
    step = float(np.median(np.diff(t))) if len(t) > 1 else 0.0
    rate, how = float(guessed or 0), "r_frame_rate"
    if not rate or abs(int(round(t[-1] * rate)) + 1 - n_out) > 1:
        rate, how = n_out / max(t[-1] + step, 1e-6), "frame count"
    slots = np.round(t * rate).astype(np.int64)
    predicted = [int(np.clip(np.searchsorted(slots, k, side="right") - 1, 0, len(t) - 1)) for k in range(n_out)]
    return predicted, rate, how


def align_deface(clip: Path, out: Path, how: str) -> tuple[list[int | None], dict[str, Any]]:
    """For each input frame, the deface output frame that shows it (None when deface never output it).

    deface reads through imageio-ffmpeg, which converts to a constant rate (the stream's r_frame_rate),
    so variable-rate clips come out with repeated or dropped frames and timestamps that do not match.
    Same frame counts map one to one; otherwise the mapping is predicted from the timeline and only
    overridden by content where a neighbouring input frame matches clearly better (near-static
    footage looks alike from frame to frame, so small content differences are noise).
    """
    in_small: list[np.ndarray] = []
    times: list[float] = []
    hw: tuple[int, int] = (0, 0)
    for f in VideoReader(clip).frames():
        hw = f.image.shape[:2]
        in_small.append(small_gray(f.image))
        times.append(float((f.pts or 0) * f.time_base))
    out_small = [small_gray(to_input_geometry(f.image, hw, how)) for f in VideoReader(out).frames()]
    n_in, n_out = len(in_small), len(out_small)
    if n_in == n_out:
        predicted, rate, rate_from = list(range(n_in)), 0.0, "same count"
    else:
        predicted, rate, rate_from = cfr_prediction(clip, times, n_out)
    mapping_out: list[int] = []
    costs: list[float] = []
    overrides = 0
    lo = 0
    for k in range(n_out):
        valid = out_small[k] >= ALIGN_BLACK

        def cost(i: int, k: int = k, valid: np.ndarray = valid) -> float:
            d = np.abs(in_small[i] - out_small[k])
            return float(d[valid].mean()) if valid.any() else 0.0

        pick = max(predicted[k], lo)
        pick_cost = cost(pick)
        for i in range(max(lo, predicted[k] - ALIGN_SEARCH), min(n_in, predicted[k] + ALIGN_SEARCH + 1)):
            c = cost(i)
            if c < 0.8 * pick_cost and pick_cost - c > 1.0:
                pick, pick_cost = i, c
        overrides += pick != predicted[k]
        mapping_out.append(pick)
        costs.append(pick_cost)
        lo = pick
    first: list[int | None] = [None] * n_in
    for k, i in enumerate(mapping_out):
        if first[i] is None:
            first[i] = k
    info = {
        "input_frames": n_in,
        "output_frames": n_out,
        "geometry": how,
        "rate": round(rate, 4),
        "rate_from": rate_from,
        "content_overrides": overrides,
        "unmatched_input_frames": sum(1 for x in first if x is None),
        "mean_align_diff": round(float(np.mean(costs)), 2) if costs else 0.0,
        "max_align_diff": round(float(np.max(costs)), 2) if costs else 0.0,
    }
    return first, info


def deface_mask(inp: np.ndarray, out: np.ndarray) -> np.ndarray:
    """Pixels deface painted: black in its output where the input was clearly brighter.

    ``--replacewith solid`` paints filled black rectangles. Where the input is dark too (stage and
    film footage) a painted pixel differs from an unpainted one only by how much darker the output
    is than the input: the codec moves unpainted dark pixels by a few levels, paint moves them to 0.
    So a pixel is certainly painted when its 3x3 mean is black in the output and ``PAINT_MARGIN``
    below the input's. The certain pixels are cleaned (closing bridges noise, opening drops specks)
    and each remaining blob is taken as a painted rectangle: its bounding box, restricted to pixels
    black in the output. A visible output pixel is never counted as covered; input pixels too dark
    to tell apart (which reveal nothing either way) are, inside such a box.
    """
    h, w = inp.shape[:2]
    out_max = out.max(axis=2)
    out_black = out_max < DEFACE_BLACK
    im = cv2.blur(inp.max(axis=2).astype(np.float32), (3, 3))
    om = cv2.blur(out_max.astype(np.float32), (3, 3))
    cand = (om < DEFACE_BLACK) & (im - om >= PAINT_MARGIN)
    k = max(3, int(round(min(h, w) / 150)) | 1)
    kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (k, k))
    m = cv2.morphologyEx(cand.astype(np.uint8), cv2.MORPH_CLOSE, kernel)
    m = cv2.morphologyEx(m, cv2.MORPH_OPEN, kernel)
    n, _, stats, _ = cv2.connectedComponentsWithStats(m, connectivity=8)
    mask = np.zeros((h, w), bool)
    for x, y, bw, bh, area in stats[1:n]:
        if area >= 4 * k * k:
            mask[y : y + bh, x : x + bw] |= out_black[y : y + bh, x : x + bw]
    return mask


def deface_masks(clip: Path, out: Path, first: list[int | None], how: str) -> Iterator[tuple[int, np.ndarray | None]]:
    """deface's mask for every input frame, streaming both videos once in step."""
    out_frames = iter(VideoReader(out).frames())
    k_cur, cur = -1, None
    for f in VideoReader(clip).frames():
        k = first[f.index] if f.index < len(first) else None
        if k is None:
            yield f.index, None
            continue
        while k_cur < k:
            cur = next(out_frames).image
            k_cur += 1
        assert cur is not None
        yield f.index, deface_mask(f.image, to_input_geometry(cur, f.image.shape[:2], how))


# -- crops for humans ------------------------------------------------------------------------------
def pick_leaks(score: Score, count: int) -> list[Leak]:
    """A few leaks worth looking at: one per face, worst faces first, from the middle of its leaks."""
    by_face: dict[int, list[Leak]] = {}
    for lk in score.leaks:
        by_face.setdefault(lk.face, []).append(lk)
    faces = sorted(by_face.values(), key=len, reverse=True)
    return [lks[len(lks) // 2] for lks in faces[:count]]


def crop_with_box(img: np.ndarray, box: list[float], mask: np.ndarray | None, label: str) -> np.ndarray:
    """BGR crop around a reference box (red), the covered mask outlined in green, a label on top."""
    h, w = img.shape[:2]
    x1, y1, x2, y2 = box
    bw, bh = x2 - x1, y2 - y1
    cx0, cy0 = int(max(0, x1 - bw)), int(max(0, y1 - bh))
    cx1, cy1 = int(min(w, x2 + bw)), int(min(h, y2 + bh))
    bgr = np.ascontiguousarray(img[..., ::-1])
    if mask is not None:
        contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(bgr, contours, -1, (0, 255, 0), 1)
    cv2.rectangle(bgr, (int(x1), int(y1)), (int(x2), int(y2)), (0, 0, 255), 1)
    crop = bgr[cy0:cy1, cx0:cx1]
    zoom = max(1.0, 240.0 / max(1, crop.shape[0]))
    crop = cv2.resize(crop, None, fx=zoom, fy=zoom, interpolation=cv2.INTER_NEAREST)
    (tw, _), _ = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, 0.4, 1)
    width = max(crop.shape[1], tw + 4)
    tile = np.zeros((18 + crop.shape[0], width, 3), np.uint8)
    tile[18:, : crop.shape[1]] = crop
    cv2.putText(tile, label, (2, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1)
    return tile


def dump_leaks(
    clip: Path,
    folder: Path,
    picks: dict[str, list[Leak]],
    masks: dict[str, Callable[[int, np.ndarray, np.ndarray | None], np.ndarray]],
    deface: tuple[Path, list[int | None], str] | None,
) -> list[Path]:
    """Save PNG crops of the picked leaks: the input with the reference box and the system's mask.

    For deface the crop of its own output is put beside the input's, to show what it painted.
    """
    folder.mkdir(parents=True, exist_ok=True)
    need = {lk.frame for lks in picks.values() for lk in lks}
    frames: dict[int, np.ndarray] = {}
    for f in VideoReader(clip).frames():
        if f.index in need:
            frames[f.index] = f.image
    out_frames: dict[int, np.ndarray] = {}
    if deface is not None and picks.get("deface"):
        out_path, first, how = deface
        want = {first[lk.frame]: lk.frame for lk in picks["deface"] if first[lk.frame] is not None}
        for f in VideoReader(out_path).frames():
            if f.index in want:
                out_frames[want[f.index]] = to_input_geometry(f.image, frames[want[f.index]].shape[:2], how)
    names = {1: "yunet", 2: "cf", 3: "both"}
    saved = []
    for system, lks in picks.items():
        for lk in lks:
            img = frames[lk.frame]
            out_img = out_frames.get(lk.frame) if system == "deface" else None
            mask = masks[system](lk.frame, img, out_img)
            label = f"{system} f{lk.frame} face{lk.face} cov {lk.coverage:.0%} ref {names[lk.source]} {lk.score:.2f}"
            tile = crop_with_box(img, lk.box, mask, label)
            if out_img is not None:
                tile = np.hstack([tile, crop_with_box(out_img, lk.box, None, "deface output")])
            p = folder / f"{clip.stem}_{system}_f{lk.frame:05d}_face{lk.face}.png"
            cv2.imwrite(str(p), tile)
            saved.append(p)
    return saved


# -- driver ----------------------------------------------------------------------------------------
def get_plan(clip: Path, plan_dir: Path | None) -> tuple[Plan, float, str]:
    """Our plan for ``clip``: ``<plan_dir>/<clip>.deid.json`` when it exists, else a fresh analyze.

    A freshly analyzed plan is saved into ``plan_dir`` (when given) so the next run can reuse it.
    """
    if plan_dir is not None:
        path = plan_dir / f"{clip.name}.deid.json"
        if path.is_file():
            plan = load_plan(path)
            plan.check_video(probe(clip), str(path))
            return plan, 0.0, f"loaded {path}"
    t0 = time.perf_counter()
    plan = analyze(clip)
    seconds = time.perf_counter() - t0
    if plan_dir is not None:
        plan_dir.mkdir(parents=True, exist_ok=True)
        save_plan(plan, plan_dir / f"{clip.name}.deid.json")
    return plan, seconds, "analyzed"


def log(msg: str) -> None:
    """Progress on stderr, so stdout holds only the table."""
    print(msg, file=sys.stderr, flush=True)


def head_labels(clip: Path) -> dict[int, list[dict[str, Any]]] | None:
    """The clip's hand-checked head set, or None (none made, or made for another file of that name)."""
    if not headset.has_labels(clip):
        return None
    labels = headset.load_labels(clip)
    if labels["sha256"] != file_key(clip)["sha256"]:
        log(f"{clip.name}: the head set was made for another file of this name; not scored")
        return None
    return labels["frames"]


def measure_heads_only(clip: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Only the head-set numbers of one clip (no detector reference): ours, and deface when asked."""
    labels = head_labels(clip)
    if labels is None:
        raise SystemExit(f"{clip.name}: no hand-checked head set in benchmarks/heads/")
    plan, _, how_plan = get_plan(clip, args.plan_dir)
    rcfg = RenderConfig(region=args.region)
    hw = (plan.video.height, plan.video.width)
    row: dict[str, Any] = {"clip": clip.name, "plan": how_plan, "heads": {}}
    row["heads"]["ours"] = headset.score_heads(
        labels, ((i, our_mask(plan, i, hw, rcfg)) for i in sorted(labels) if i < plan.frame_count)
    ).summary()
    if args.deface:
        out, _meta = run_deface(clip, args.deface_venv, args.refresh)
        how = choose_geometry(clip, out)
        first, _align = align_deface(clip, out, how)
        row["heads"]["deface"] = headset.score_heads(labels, deface_masks(clip, out, first, how)).summary()
    log(f"{clip.name}: heads {row['heads']['ours']['heads']}, ours leaked {row['heads']['ours']['leaked']}")
    return row


def measure_clip(clip: Path, args: argparse.Namespace) -> dict[str, Any]:
    """All numbers of one clip: reference, ours, and deface when asked; crops when asked."""
    if args.heads_only:
        return measure_heads_only(clip, args)
    row: dict[str, Any] = {"clip": clip.name}
    ref = load_reference(clip, args.threads, args.refresh)
    row["frames"] = len(ref.boxes)
    row["ref_face_frames"] = ref.face_frames
    row["ref_seconds"] = round(ref.seconds, 2)
    row["ref_cached"] = ref.cached
    cached = "cached, " if ref.cached else ""
    log(f"{clip.name}: reference {ref.face_frames} face-frames in {len(ref.boxes)} frames ({cached}{ref.seconds:.1f}s)")

    plan, an_s, how_plan = get_plan(clip, args.plan_dir)
    row["plan"] = how_plan
    row["analyze_seconds"] = round(an_s, 2)
    if plan.frame_count != len(ref.boxes):
        log(f"{clip.name}: WARNING plan covers {plan.frame_count} frames, the reference {len(ref.boxes)}")
    rcfg = RenderConfig(region=args.region)
    reviewed, removed = ref.reviewed()
    row["not_faces"] = removed
    row["reviewed_ref_face_frames"] = reviewed.face_frames
    labels = head_labels(clip)
    ours_masks = Capture(our_masks(plan, ref, rcfg), labels or ())
    ours, ours_rev = score_all([ref, reviewed], ours_masks)
    if labels is not None:
        row["heads"] = {"ours": headset.score_heads(labels, ours_masks.pairs()).summary()}
    row["ours"] = ours.summary()
    row["ours"]["reviewed"] = ours_rev.summary()
    row["ours"]["leaks"] = [lk.__dict__ for lk in ours.leaks]
    log(f"{clip.name}: ours {how_plan} ({an_s:.1f}s): {ours.leaked} leaked")

    picks: dict[str, list[Leak]] = {"ours": pick_leaks(ours, args.dump_count)}
    masks: dict[str, Callable[[int, np.ndarray, np.ndarray | None], np.ndarray]] = {
        "ours": lambda i, inp, out_img: our_mask(plan, i, ref.hw, rcfg),
    }
    deface_info: tuple[Path, list[int | None], str] | None = None
    if args.deface:
        out, meta = run_deface(clip, args.deface_venv, args.refresh)
        t0 = time.perf_counter()
        how = choose_geometry(clip, out)
        first, align = align_deface(clip, out, how)
        deface_all = Capture(deface_masks(clip, out, first, how), labels or ())
        dscore, dscore_rev = score_all([ref, reviewed], deface_all)
        if labels is not None:
            row["heads"]["deface"] = headset.score_heads(labels, deface_all.pairs()).summary()
        row["deface"] = {
            **dscore.summary(),
            "reviewed": dscore_rev.summary(),
            "seconds": meta["seconds"],
            "cached": meta["cached"],
            "backend": meta.get("backend"),
            "input": meta.get("input"),
            "output": str(out),
            "mask_extract_seconds": round(time.perf_counter() - t0, 2),
            "alignment": align,
            "leaks": [lk.__dict__ for lk in dscore.leaks],
        }
        cached = "cached, " if meta["cached"] else ""
        log(f"{clip.name}: deface ({cached}{meta['seconds']:.1f}s, {meta.get('backend')}): {dscore.leaked} leaked; alignment {align}")
        picks["deface"] = pick_leaks(dscore, args.dump_count)
        deface_info = (out, first, how)
        masks["deface"] = lambda i, inp, out_img: deface_mask(inp, out_img) if out_img is not None else np.zeros(ref.hw, bool)
    if args.dump_leaks:
        saved = dump_leaks(clip, args.dump_leaks, picks, masks, deface_info)
        row["dumped"] = [str(p) for p in saved]
    return row


def print_rows(head: list[str], table: list[list[Any]]) -> None:
    """A table with its header, a rule above the TOTAL line, and a blank line after."""
    widths = [max(len(str(x[i])) for x in [head, *table]) for i in range(len(head))]
    print(fmt_row(head, widths))
    for line in table:
        if line[0] == "TOTAL":
            print("-" * (sum(widths) + 2 * (len(widths) - 1)))
        print(fmt_row(line, widths))
    print()


def fmt_row(cells: list[Any], widths: list[int]) -> str:
    """One table line, first column left-aligned, the rest right-aligned."""
    return "  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))


def print_table(rows: list[dict[str, Any]], with_deface: bool) -> dict[str, Any]:
    """The per-clip table plus a TOTAL row (leaks per 1000 over all face-frames, false mask frame-weighted)."""
    head = ["clip", "frames", "ref", "leaked", "/1000", "longest", "false%"]
    if with_deface:
        head += ["d.leaked", "d./1000", "d.longest", "d.false%"]
    total: dict[str, Any] = {"frames": 0, "ref_face_frames": 0}
    systems = ["ours"] + (["deface"] if with_deface else [])
    for s in systems:
        total[s] = {"ref_face_frames": 0, "leaked": 0, "longest_run": 0, "false_px": 0.0, "frames": 0}
    table = []
    for r in rows:
        line = [r["clip"], r["frames"], r["ref_face_frames"]]
        total["frames"] += r["frames"]
        total["ref_face_frames"] += r["ref_face_frames"]
        for s in systems:
            d = r[s]
            line += [d["leaked"], f"{d['leaks_per_1000']:.1f}", d["longest_run"], f"{d['false_mask_pct']:.2f}"]
            t = total[s]
            t["ref_face_frames"] += d["ref_face_frames"]
            t["leaked"] += d["leaked"]
            t["longest_run"] = max(t["longest_run"], d["longest_run"])
            t["false_px"] += d["false_mask_pct"] * d["frames_evaluated"]
            t["frames"] += d["frames_evaluated"]
        table.append(line)
    tline = ["TOTAL", total["frames"], total["ref_face_frames"]]
    for s in systems:
        t = total[s]
        t["leaks_per_1000"] = round(1000.0 * t["leaked"] / t["ref_face_frames"], 2) if t["ref_face_frames"] else 0.0
        t["false_mask_pct"] = round(t.pop("false_px") / t["frames"], 3) if t["frames"] else 0.0
        tline += [t["leaked"], f"{t['leaks_per_1000']:.1f}", t["longest_run"], f"{t['false_mask_pct']:.2f}"]
    table.append(tline)
    print_rows(head, table)
    print("ref = reference face-frames; leaked = face-frames < 90% covered; longest = most consecutive leaked frames of one face;")
    print(
        "false% = covered area outside reference boxes (+25%) in % of the frame, mean per frame."
        + (" d.* = deface 1.5.0 --replacewith solid." if with_deface else "")
    )
    for s in systems:
        big = sum(r[s]["big_leaked"] for r in rows)
        big_ref = sum(r[s]["big_ref_face_frames"] for r in rows)
        per = 1000.0 * big / big_ref if big_ref else 0.0
        print(f"{s} on faces >= {BIG_FACE} px (the engine's default --min-face): {big} leaked of {big_ref} ({per:.1f} per 1000)")
        total[s]["big_leaked"], total[s]["big_ref_face_frames"] = big, big_ref
    for s in systems:
        src = {"yunet_only": 0, "centerface_only": 0, "both": 0}
        for r in rows:
            for k, v in r[s]["leaked_by_reference_source"].items():
                src[k] += v
        print(
            f"{s} leaks by reference source: both {src['both']}, yunet only {src['yunet_only']}, centerface only {src['centerface_only']}"
        )
    return total


def print_heads_table(rows: list[dict[str, Any]], with_deface: bool) -> dict[str, Any]:
    """The hand-checked head set: per clip, heads labelled, leaked, longest leaked run, false mask."""
    rows = [r for r in rows if "heads" in r]
    head = ["clip", "frames", "heads", "leaked", "longest", "false%"] + (["d.leaked", "d.longest", "d.false%"] if with_deface else [])
    systems = ["ours"] + (["deface"] if with_deface else [])
    total: dict[str, Any] = {s: {"heads": 0, "leaked": 0, "longest_run": 0, "false": 0.0, "labelled_frames": 0} for s in systems}
    table = []
    for r in rows:
        line = [r["clip"], r["heads"]["ours"]["labelled_frames"], r["heads"]["ours"]["heads"]]
        for s in systems:
            d, t = r["heads"][s], total[s]
            line += [d["leaked"], d["longest_run"], f"{d['false_mask_pct']:.2f}"]
            t["heads"] += d["heads"]
            t["leaked"] += d["leaked"]
            t["longest_run"] = max(t["longest_run"], d["longest_run"])
            t["false"] += d["false_mask_pct"] * d["labelled_frames"]
            t["labelled_frames"] += d["labelled_frames"]
        table.append(line)
    tline: list[Any] = ["TOTAL", total["ours"]["labelled_frames"], total["ours"]["heads"]]
    for s in systems:
        t = total[s]
        t["false_mask_pct"] = round(t.pop("false") / t["labelled_frames"], 3) if t["labelled_frames"] else 0.0
        tline += [t["leaked"], t["longest_run"], f"{t['false_mask_pct']:.2f}"]
    table.append(tline)
    print_rows(head, table)
    print("frames = labelled frames; heads = labelled heads (visible faces) over them; leaked = heads whose visible face area")
    print("is < 90% covered; longest = most consecutive labelled frames one head leaked; false% = covered area outside the labelled")
    print(
        f"faces grown by {headset.HEAD_ALLOWED:.0%} on each side, in % of the frame."
        + (" d.* = deface 1.5.0 --replacewith solid." if with_deface else "")
    )
    return total


def reviewed_row(row: dict[str, Any], with_deface: bool) -> dict[str, Any]:
    """A clip's row with the numbers against the reviewed reference in place of the raw ones."""
    out = {**row, "ref_face_frames": row["reviewed_ref_face_frames"], "ours": row["ours"]["reviewed"]}
    if with_deface:
        out["deface"] = row["deface"]["reviewed"]
    return out


def target_verdict(name: str, total: dict[str, Any], rows: list[dict[str, Any]], with_deface: bool) -> str:
    """The issue's target, checked: at most 1 leak per 1000 face-frames over all clips, no leaked run
    over 2 frames, and fewer leaks than deface on every clip (a clip where both leak nothing passes)."""
    ours = total["ours"]
    parts = [
        f"{ours['leaks_per_1000']:.2f} per 1000 ({'ok' if ours['leaks_per_1000'] <= 1.0 else 'over 1'})",
        f"longest run {ours['longest_run']} ({'ok' if ours['longest_run'] <= 2 else 'over 2'})",
    ]
    if with_deface:
        worse = [r["clip"] for r in rows if r["ours"]["leaked"] and r["ours"]["leaked"] >= r["deface"]["leaked"]]
        parts.append("fewer than deface on every clip" if not worse else "not fewer than deface on " + ", ".join(worse))
    met = ours["leaks_per_1000"] <= 1.0 and ours["longest_run"] <= 2 and not (with_deface and worse)
    return f"target vs the {name} reference: {'MET' if met else 'NOT met'}: " + "; ".join(parts)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("clips", nargs="*", help="clip names in ../shared/footage or paths (default: eight varied clips)")
    ap.add_argument("--deface", action="store_true", help="also measure deface 1.5.0 (--replacewith solid)")
    ap.add_argument("--deface-venv", type=Path, default=DEFAULT_DEFACE_VENV, help="venv made by benchmarks/deface_venv.sh")
    ap.add_argument("--plan-dir", type=Path, help="use <DIR>/<clip>.deid.json when present, else analyze and save it there")
    ap.add_argument("--json", type=Path, help="write every number (and every leak) to this JSON file")
    ap.add_argument("--dump-leaks", type=Path, metavar="DIR", help="save PNG crops of a few leaked faces per clip and system")
    ap.add_argument("--dump-count", type=int, default=6, help="crops per clip and system (default 6)")
    ap.add_argument("--threads", type=int, default=2, help="ONNX Runtime threads of the reference CenterFace (default 2)")
    ap.add_argument("--refresh", action="store_true", help="recompute the cached reference and deface outputs")
    ap.add_argument("--heads-only", action="store_true", help="only the hand-checked head set (benchmarks/heads/), no detector reference")
    ap.add_argument("--region", choices=["head", "face"], help="score this --region (default: the renderer's default, head)")
    args = ap.parse_args(argv)
    cv2.setNumThreads(max(1, args.threads))
    clips = [resolve_clip(c) for c in (args.clips or DEFAULT_CLIPS)]
    rows = []
    for clip in clips:
        rows.append(measure_clip(clip, args))
    if any("heads" in r for r in rows):
        print("Against the hand-checked head set (benchmarks/heads/):\n")
        heads_total = print_heads_table(rows, args.deface)
        print()
    if args.heads_only:
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps({"clips": rows, "heads_total": heads_total}, indent=1))
        return
    print("Against the raw reference:\n")
    total = print_table(rows, args.deface)
    reviewed = [reviewed_row(r, args.deface) for r in rows]
    removed = sum(r["not_faces"] for r in rows)
    print(f"\nAgainst the reviewed reference ({removed} face-frames a person judged not to be faces removed, {NOT_FACES_FILE.name}):\n")
    total["reviewed"] = print_table(reviewed, args.deface)
    print()
    for name, t, rs in (("raw", total, rows), ("reviewed", total["reviewed"], reviewed)):
        print(target_verdict(name, t, rs, args.deface))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        params = {**ref_params(), "cover_ok": COVER_OK, "alpha_full": ALPHA_FULL, "false_dilate": FALSE_DILATE, "track_iou": TRACK_IOU}
        args.json.write_text(json.dumps({"params": params, "clips": rows, "total": total}, indent=1))


if __name__ == "__main__":
    main()
