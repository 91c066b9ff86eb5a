"""Region geometry shared by every anonymizer: padded ellipse/box masks with a feathered edge.

The covered area (alpha = 1) is the padded shape; the feather ramps from 1 to 0 *outside* it, so
feathering never uncovers face pixels. With the default padding the inscribed ellipse of the padded
box still contains every corner of the detected box.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import TYPE_CHECKING

import cv2
import numpy as np

from ..types import FaceRegion

if TYPE_CHECKING:
    from ..config import RenderConfig


@dataclass(frozen=True)
class RegionMask:
    """Where a region's effect goes: the ROI slices and the alpha over that ROI."""

    y0: int
    y1: int
    x0: int
    x1: int
    alpha: np.ndarray  # (y1-y0, x1-x0) float32 in [0, 1]
    face_size: float  # short side of the unpadded face box, pixels

    @property
    def slices(self) -> tuple[slice, slice]:
        return slice(self.y0, self.y1), slice(self.x0, self.x1)


def padded_box(box: np.ndarray, padding: float) -> np.ndarray:
    """``box`` grown by ``padding`` times its width/height on every side."""
    x1, y1, x2, y2 = (float(v) for v in box)
    pw, ph = (x2 - x1) * padding, (y2 - y1) * padding
    return np.array([x1 - pw, y1 - ph, x2 + pw, y2 + ph], np.float32)


# --region head: hair and ears identify people too. The face region (the plan's box: brows or
# forehead to chin, grown upward and towards the back of a turned head) is widened on both sides for
# the ears and raised for the crown.
HEAD_SIDE = 0.15  # of the region's width, each side
HEAD_TOP = 0.2  # of its height


def head_box(box: np.ndarray) -> np.ndarray:
    """The head around a face region box (xyxy): wider by ``HEAD_SIDE`` each side, taller by ``HEAD_TOP`` upward."""
    x1, y1, x2, y2 = (float(v) for v in box)
    w, h = x2 - x1, y2 - y1
    return np.array([x1 - HEAD_SIDE * w, y1 - HEAD_TOP * h, x2 + HEAD_SIDE * w, y2], np.float32)


def _geometry(region: FaceRegion, frame_hw: tuple[int, int], padding: float, feather: float, reach: str) -> tuple:
    """The ROI clipped to the frame (int x0, x1, y0, y1), then the padded shape's centre and
    half-axes and the feather."""
    h, w = frame_hw
    box = padded_box(head_box(region.box) if reach == "head" else region.box, padding + region.margin)
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2  # float32, as the alpha computes with them
    a, b = max((box[2] - box[0]) / 2, 0.5), max((box[3] - box[1]) / 2, 0.5)
    f = max(feather, 1e-3)
    x0 = int(np.floor(max(cx - a * (1 + f), 0)))
    x1 = int(np.ceil(min(cx + a * (1 + f), w)))
    y0 = int(np.floor(max(cy - b * (1 + f), 0)))
    y1 = int(np.ceil(min(cy + b * (1 + f), h)))
    return x0, x1, y0, y1, cx, cy, a, b, f


@lru_cache(maxsize=8)  # the faces of one frame; few, as a 4K close-up's alpha is 7 MB
def _alpha(x0: int, x1: int, y0: int, y1: int, cx: float, cy: float, a: float, b: float, f: float, shape: str) -> np.ndarray:
    """The alpha of one ROI (read-only: cached, because the YUV path and the anonymizer ask for the
    same mask of a frame more than once)."""
    dx = ((np.arange(x0, x1, dtype=np.float32) + 0.5) - cx) / a
    dy = ((np.arange(y0, y1, dtype=np.float32) + 0.5) - cy) / b
    # one ROI-sized array, every step in place: a 1080p close-up's ROI is ~0.6 M pixels, and each
    # temporary cost a fresh (page-faulted) allocation; the float32 steps are those of
    # clip((1 + f - r) / f, 0, 1), so the alpha is bit for bit what it was
    if shape == "box":
        r = np.maximum.outer(np.abs(dy), np.abs(dx))
    else:
        r = np.add.outer(dy * dy, dx * dx)
        np.sqrt(r, out=r)
    np.subtract(np.float32(1.0 + f), r, out=r)
    np.divide(r, np.float32(f), out=r)
    np.clip(r, 0.0, 1.0, out=r)
    r.flags.writeable = False
    return r


def mask_bounds(region: FaceRegion, frame_hw: tuple[int, int], cfg: RenderConfig) -> tuple[int, int, int, int] | None:
    """``(x0, y0, x1, y1)`` of ``mask_for``'s ROI without computing its alpha, or None outside the frame."""
    x0, x1, y0, y1 = _geometry(region, frame_hw, cfg.padding, cfg.feather, cfg.reach)[:4]
    return None if x1 <= x0 or y1 <= y0 else (x0, y0, x1, y1)


def region_mask(
    region: FaceRegion, frame_hw: tuple[int, int], shape: str, padding: float, feather: float, reach: str = "face"
) -> RegionMask | None:
    """The mask of ``region`` clipped to the frame, or None when it lies outside the frame.
    ``reach`` "head" covers the whole head (``head_box``), "face" the face region itself."""
    x0, x1, y0, y1, cx, cy, a, b, f = _geometry(region, frame_hw, padding, feather, reach)
    if x1 <= x0 or y1 <= y0:
        return None
    alpha = _alpha(x0, x1, y0, y1, cx, cy, a, b, f, shape)
    fx1, fy1, fx2, fy2 = region.box
    return RegionMask(y0, y1, x0, x1, alpha, float(max(min(fx2 - fx1, fy2 - fy1), 1.0)))


def mask_for(region: FaceRegion, frame_hw: tuple[int, int], cfg: RenderConfig) -> RegionMask | None:
    """``region_mask`` with the shape, padding, feather and reach of a render configuration."""
    return region_mask(region, frame_hw, cfg.shape, cfg.padding, cfg.feather, cfg.reach)


FULL_ALPHA = 0.999  # where a mask counts as covering (the feather ramps outside the covered area)


def covered_mask(regions: Sequence[FaceRegion], frame_hw: tuple[int, int], cfg: RenderConfig) -> np.ndarray:
    """The pixels the renderer covers fully (alpha 1) for ``regions``: what leak checks compare to faces."""
    covered = np.zeros(frame_hw, bool)
    for region in regions:
        m = mask_for(region, frame_hw, cfg)
        if m is not None:
            covered[m.slices] |= m.alpha >= FULL_ALPHA
    return covered


def blend(image: np.ndarray, mask: RegionMask, effect: np.ndarray) -> None:
    """Composite ``effect`` (the ROI's replacement) into ``image`` through the mask's alpha."""
    ys, xs = mask.slices
    roi = image[ys, xs]
    a = mask.alpha
    # one multithreaded pass (rounded to nearest): alpha 1 gives the effect, 0 the picture, exactly
    image[ys, xs] = cv2.blendLinear(np.ascontiguousarray(effect), np.ascontiguousarray(roi), a, 1.0 - a)


def to_coded(regions: Sequence[FaceRegion], k: int, coded_w: int, coded_h: int) -> list[FaceRegion]:
    """Map upright-frame regions to the coded frame, where ``upright = np.rot90(coded, k)``.

    Rendering in the coded orientation lets the encoder keep the source's display rotation without
    rotating every frame twice.
    """
    k %= 4
    if k == 0:
        return list(regions)

    def pts(p: np.ndarray) -> np.ndarray:
        x, y = p[..., 0], p[..., 1]
        if k == 1:
            return np.stack([coded_w - y, x], axis=-1)
        if k == 2:
            return np.stack([coded_w - x, coded_h - y], axis=-1)
        return np.stack([y, coded_h - x], axis=-1)

    out = []
    for r in regions:
        corners = pts(np.asarray(r.box, np.float32).reshape(2, 2))
        box = np.concatenate([corners.min(axis=0), corners.max(axis=0)]).astype(np.float32)
        lm = None if r.landmarks is None else pts(np.asarray(r.landmarks, np.float32)).astype(np.float32)
        out.append(replace(r, box=box, landmarks=lm))
    return out
