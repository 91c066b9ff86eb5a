"""The audit's picture checks: do the two files belong together, and which heads did the mask miss?

Input: frame pairs (original, anonymized) as ``audit`` streams them, and a plan that the audit
makes of the original itself with the engine's own head finding (detection at full strength, weak
tracks, tracks held over gaps, to cuts and out of the picture). Output: a refusal (``InputError``)
when the files are not an original and its anonymized copy, and the heads of the original whose
face area the anonymized frame left unchanged, with a PNG sheet of them for a person to check.
Why pictures: a recognizer cannot judge a profile, an edge-cut or a small dark face, which are
exactly the faces that slip through; a head whose face area is unchanged was not anonymized.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np

from .errors import InputError
from .plan import Plan

log = logging.getLogger(__name__)

THUMB_W = 96  # pictures are compared as grey thumbnails this wide
SAME_LEVEL = 8  # thumbnail pixels closer than this (0-255) agree (encoding noise is a few levels)
GRID = 4  # the thumbnail is cut into GRID x GRID cells...
CELL_OK = 0.8  # ...and a cell agrees when this share of its pixels do
# Files belong together when, in the median frame pair, this share of cells agree. A copy differs in
# compact blobs (the masks) and agrees elsewhere: talkinghead_1 with a solid head 0.50, hamilton
# blurred 0.75, sofa 0.81; two renders of the generated sample with different backgrounds 0.12.
SAME_SHARE = 0.3
EARLY_FRAMES = 24  # the pair check decides after this many paired frames (and again at the end)
SWAP_EVERY = 8  # faces are counted in both files on every N-th of the first frames...
SWAP_FRAMES = 96  # ...up to this frame
SWAP_SCORE = 0.5  # a clearly visible face
KEPT_DETAIL = 0.5  # a head is uncovered when the copy keeps this much of its facial detail (correlation)
FLAT_DETAIL = 1.0  # a face with less detail than this (grey levels) cannot show a change: not judged
SHEET_MAX = 24  # heads shown on the sheet


def _grey_thumb(image: np.ndarray, width: int = THUMB_W, height: int | None = None) -> np.ndarray:
    h, w = image.shape[:2]
    height = height or max(1, round(width * h / w))
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    return cv2.resize(grey, (width, height), interpolation=cv2.INTER_AREA).astype(np.int16)


def picture_agreement(original: np.ndarray, anonymized: np.ndarray) -> float:
    """Share of the picture's cells (``GRID`` x ``GRID``) in which the two frames agree: most of a
    cell's grey thumbnail pixels within ``SAME_LEVEL``. Masks change a few compact cells of a copy;
    another video differs in nearly all of them."""
    a = _grey_thumb(original)
    b = _grey_thumb(anonymized, a.shape[1], a.shape[0])
    ok = np.abs(a - b) < SAME_LEVEL
    h, w = ok.shape
    cells = [
        ok[i * h // GRID : (i + 1) * h // GRID, j * w // GRID : (j + 1) * w // GRID].mean() >= CELL_OK
        for i in range(GRID)
        for j in range(GRID)
    ]
    return float(np.mean(cells))


class PairCheck:
    """Refuses an audit of two files that are not an original and its anonymized copy.

    Different videos: their pictures disagree in most frame pairs (an anonymized copy agrees
    everywhere but on faces). Swapped arguments: faces are clearly visible in the second file where
    the first shows none (the first is the anonymized one).
    """

    def __init__(self, original: str, anonymized: str, detector: object) -> None:
        self.original, self.anonymized, self.detector = original, anonymized, detector
        self.agreements: list[float] = []
        self.faces_o = self.faces_a = 0
        self.decided = False

    def add(self, frame_index: int, original: np.ndarray, anonymized: np.ndarray | None) -> None:
        if anonymized is None:
            return
        self.agreements.append(picture_agreement(original, anonymized))
        if frame_index < SWAP_FRAMES and frame_index % SWAP_EVERY == 0:
            (do,) = self.detector.detect([original], [frame_index], 1.0, SWAP_SCORE)  # type: ignore[attr-defined]
            (da,) = self.detector.detect([anonymized], [frame_index], 1.0, SWAP_SCORE)  # type: ignore[attr-defined]
            self.faces_o += len(do)
            self.faces_a += len(da)
        if not self.decided and len(self.agreements) >= EARLY_FRAMES:
            self.decided = True
            self.verdict()

    def verdict(self) -> None:
        """Raise ``InputError`` when the files do not belong together (nothing to say otherwise)."""
        if self.agreements:
            agree = float(np.median(self.agreements))
            if agree < SAME_SHARE:
                raise InputError(
                    f"{self.anonymized}: not an anonymized copy of {self.original} (their pictures agree in "
                    f"{100 * agree:.0f}% of the frame, a copy outside its masks); give the original first, then its copy"
                )
        if self.faces_a >= 3 and self.faces_o * 3 <= self.faces_a:
            raise InputError(
                f"{self.original} shows {self.faces_o} clear faces where {self.anonymized} shows {self.faces_a}: the arguments "
                "look swapped; use: deid-edit audit ORIGINAL ANONYMIZED"
            )


@dataclass(frozen=True)
class UncoveredHead:
    """A head of the original whose face area the anonymized frame leaves (mostly) unchanged."""

    frame_index: int
    time: Fraction
    box: tuple[float, float, float, float]  # xyxy, upright pixels of the original
    kept: float  # how much of the face's detail the copy still holds (correlation; ~1 untouched)
    weak: bool  # found only at low detector scores: maybe no face (a person looks)
    held: bool = False  # a sample beyond the track's detections (held to a cut, followed out of the picture)


def kept_detail(original: np.ndarray, anonymized: np.ndarray, box: np.ndarray) -> tuple[float, float]:
    """(how much of the original's facial detail the copy still holds, how much detail there is).

    Detail is the grey picture minus its blur at a twelfth of the face width (eyes, brows, mouth,
    edges); the first number is the normalised correlation of the two files' detail over the face
    area (the ellipse inscribed in ``box``): about 1 for an untouched face, also a dark one and
    after re-encoding, about 0 after a blur, a mosaic or a solid mask. The second is the detail's
    standard deviation in grey levels: a face without any cannot show whether it was hidden.
    ``anonymized`` is already at the original's size.
    """
    h, w = original.shape[:2]
    bw = float(box[2] - box[0])
    pad = int(np.ceil(0.25 * max(bw, float(box[3] - box[1]))))
    x1, y1 = max(0, int(np.floor(box[0])) - pad), max(0, int(np.floor(box[1])) - pad)
    x2, y2 = min(w, int(np.ceil(box[2])) + pad), min(h, int(np.ceil(box[3])) + pad)
    if x2 - x1 < 4 or y2 - y1 < 4:
        return 0.0, 0.0
    sigma = max(1.0, bw / 12.0)
    o = cv2.cvtColor(original[y1:y2, x1:x2], cv2.COLOR_RGB2GRAY).astype(np.float32)
    a = cv2.cvtColor(anonymized[y1:y2, x1:x2], cv2.COLOR_RGB2GRAY).astype(np.float32)
    ho, ha = o - cv2.GaussianBlur(o, (0, 0), sigma), a - cv2.GaussianBlur(a, (0, 0), sigma)
    yy, xx = np.mgrid[y1:y2, x1:x2].astype(np.float32) + 0.5
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    rx, ry = max(bw / 2, 0.5), max((box[3] - box[1]) / 2, 0.5)
    inside = ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1.0
    if inside.sum() < 16:
        return 0.0, 0.0
    vo, va = ho[inside] - ho[inside].mean(), ha[inside] - ha[inside].mean()
    so, sa = float(np.sqrt((vo**2).mean())), float(np.sqrt((va**2).mean()))
    if so < 1e-6 or sa < 1e-6:
        return 0.0, so
    return float((vo * va).mean() / (so * sa)), so


class HeadCheck:
    """Every head the audit's own plan finds in the original, checked for a change in the copy.

    Heads that the render's plan keeps (``is_kept``) are not checked. Every sample of a track is,
    also where the track is held (over a gap, to a cut, out of the picture): that is where faces
    slip through. A held sample whose place in the copy is untouched may show only background; the
    sheet says "held" so that a person looks.
    """

    def __init__(self, heads: Plan, is_kept: Callable[[int, np.ndarray], bool] | None = None) -> None:
        self.heads = heads
        self.is_kept = is_kept  # (frame, box) -> whether the render's plan keeps the face there
        self.by_frame: dict[int, list[tuple[np.ndarray, bool, bool]]] = {}
        for t in heads.tracks:
            obs = t.frames[t.observed]
            if not len(obs):
                continue
            held = (t.frames < obs.min()) | (t.frames > obs.max())
            for f, box, h in zip(t.frames.tolist(), t.boxes, held.tolist()):
                self.by_frame.setdefault(f, []).append((box, heads.is_weak(t.track_id), h))
        self.checked = self.flat = self.kept_count = 0
        self.uncovered: list[UncoveredHead] = []
        self.tiles: list[np.ndarray] = []

    def check(self, frame_index: int, time: Fraction, original: np.ndarray, anonymized: np.ndarray) -> None:
        entries = self.by_frame.get(frame_index)
        if not entries:
            return
        h, w = original.shape[:2]
        if anonymized.shape[:2] != (h, w):
            anonymized = cv2.resize(anonymized, (w, h), interpolation=cv2.INTER_AREA)
        for box, weak, held in entries:
            if self.is_kept is not None and self.is_kept(frame_index, box):
                self.kept_count += 1
                continue
            kept, detail = kept_detail(original, anonymized, box)
            if detail < FLAT_DETAIL:
                self.flat += 1
                continue
            self.checked += 1
            if kept >= KEPT_DETAIL:
                head = UncoveredHead(frame_index, time, tuple(float(v) for v in box), kept, weak, held)
                self.uncovered.append(head)
                if len(self.tiles) < SHEET_MAX:
                    self.tiles.append(_tile(original, anonymized, box, head))

    def write_sheet(self, path: str | Path) -> Path | None:
        """The flagged heads, original beside copy, 4 to a row; None when nothing was flagged."""
        if not self.tiles:
            return None
        tiles = list(self.tiles)
        while len(tiles) % 4:
            tiles.append(np.zeros_like(tiles[0]))
        sheet = np.concatenate([np.concatenate(tiles[i : i + 4], axis=1) for i in range(0, len(tiles), 4)], axis=0)
        out = Path(path)
        if not cv2.imwrite(str(out), sheet):
            log.warning("could not write the audit sheet %s", out)
            return None
        return out


TILE = 160  # each side of a sheet tile (original | copy), pixels


def _tile(original: np.ndarray, anonymized: np.ndarray, box: np.ndarray, head: UncoveredHead) -> np.ndarray:
    """Original and copy around one flagged head, the head boxed, frame and time written below."""
    h, w = original.shape[:2]
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    side = max(box[2] - box[0], box[3] - box[1]) * 1.8
    x1, y1 = int(max(0, cx - side / 2)), int(max(0, cy - side / 2))
    x2, y2 = int(min(w, cx + side / 2)), int(min(h, cy + side / 2))
    parts = []
    for img in (original, anonymized):
        crop = cv2.cvtColor(np.ascontiguousarray(img[y1:y2, x1:x2]), cv2.COLOR_RGB2BGR)
        scale = TILE / max(crop.shape[:2])
        crop = cv2.resize(
            crop, (max(1, round(crop.shape[1] * scale)), max(1, round(crop.shape[0] * scale))), interpolation=cv2.INTER_LINEAR
        )
        canvas = np.zeros((TILE, TILE, 3), np.uint8)
        canvas[: crop.shape[0], : crop.shape[1]] = crop
        bx = [int((box[0] - x1) * scale), int((box[1] - y1) * scale), int((box[2] - x1) * scale), int((box[3] - y1) * scale)]
        cv2.rectangle(canvas, (bx[0], bx[1]), (bx[2], bx[3]), (0, 0, 255), 1)
        parts.append(canvas)
    tile = np.concatenate(parts, axis=1)
    label = f"frame {head.frame_index}  {float(head.time):.2f}s"
    label += ("  maybe no face" if head.weak else "") + ("  held" if head.held else "")
    band = np.zeros((18, tile.shape[1], 3), np.uint8)
    cv2.putText(band, label, (4, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 255, 255), 1)
    return np.concatenate([tile, band], axis=0)
