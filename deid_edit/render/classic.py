"""The classic anonymizers: blur, pixelate, solid, matte, and the debug overlay for review.

``blur`` is not a cosmetic softening: the face area is averaged down to about six samples across
the face (which destroys identity irreversibly), mixed with fixed noise, scaled back up and then
Gaussian-smoothed so it reads as a soft blob. ``pixelate`` uses blocks relative to face size.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import cv2
import numpy as np

from ..config import RenderConfig
from ..types import FaceRegion
from .shapes import RegionMask, blend, mask_for

BLUR_SAMPLES_ACROSS_FACE = 6.0
BLUR_NOISE = 12.0


def _masks(image: np.ndarray, regions: Sequence[FaceRegion], cfg: RenderConfig) -> Iterator[tuple[FaceRegion, RegionMask]]:
    for region in regions:
        mask = mask_for(region, image.shape[:2], cfg)
        if mask is not None:
            yield region, mask


class Blur:
    """Strong, irreversible blur scaled to the face."""

    name = "blur"
    full_frame = False
    hides_faces = True

    def apply(self, image: np.ndarray, regions: Sequence[FaceRegion], cfg: RenderConfig) -> np.ndarray:
        for region, mask in _masks(image, regions, cfg):
            roi = image[mask.slices]
            rh, rw = roi.shape[:2]
            px = mask.face_size / (BLUR_SAMPLES_ACROSS_FACE / cfg.strength)
            sw, sh = max(1, round(rw / px)), max(1, round(rh / px))
            small = cv2.resize(roi, (sw, sh), interpolation=cv2.INTER_AREA).astype(np.float32)
            rng = np.random.default_rng(region.track_id & 0xFFFF)
            small += rng.normal(0.0, BLUR_NOISE, small.shape).astype(np.float32)
            small = np.clip(small, 0, 255).astype(np.uint8)
            # smooth at 4 samples per cell, then scale up: the look of a wide Gaussian at a tiny cost
            mid = cv2.resize(small, (sw * 4, sh * 4), interpolation=cv2.INTER_LINEAR)
            mid = cv2.GaussianBlur(mid, (0, 0), sigmaX=3.0, sigmaY=3.0, borderType=cv2.BORDER_REFLECT)
            big = cv2.resize(mid, (rw, rh), interpolation=cv2.INTER_LINEAR)
            blend(image, mask, big)
        return image


class Pixelate:
    """Mosaic with a fixed number of blocks across the (padded) face."""

    name = "pixelate"
    full_frame = False
    hides_faces = True

    def apply(self, image: np.ndarray, regions: Sequence[FaceRegion], cfg: RenderConfig) -> np.ndarray:
        for region, mask in _masks(image, regions, cfg):
            roi = image[mask.slices]
            rh, rw = roi.shape[:2]
            x1, y1, x2, y2 = region.box
            block = max((x2 - x1) * (1 + 2 * cfg.padding) / cfg.blocks, 2.0)
            sw, sh = max(1, round(rw / block)), max(1, round(rh / block))
            small = cv2.resize(roi, (sw, sh), interpolation=cv2.INTER_AREA)
            blend(image, mask, cv2.resize(small, (rw, rh), interpolation=cv2.INTER_NEAREST))
        return image


class Solid:
    """An opaque shape in one colour."""

    name = "solid"
    full_frame = False
    hides_faces = True

    def apply(self, image: np.ndarray, regions: Sequence[FaceRegion], cfg: RenderConfig) -> np.ndarray:
        color = np.asarray(cfg.color, np.uint8)
        for _region, mask in _masks(image, regions, cfg):
            blend(image, mask, np.broadcast_to(color, mask.alpha.shape + (3,)))
        return image


class Matte:
    """The mask itself, white on black, for an editor's own effect (track matte)."""

    name = "matte"
    full_frame = True
    hides_faces = True  # the output holds no picture at all

    def apply(self, image: np.ndarray, regions: Sequence[FaceRegion], cfg: RenderConfig) -> np.ndarray:
        image[...] = 0
        for _region, mask in _masks(image, regions, cfg):
            ys, xs = mask.slices
            value = np.maximum(image[ys, xs, 0], (mask.alpha * 255.0 + 0.5).astype(np.uint8))
            image[ys, xs] = value[..., None]
        return image


class Debug:
    """Review overlay: shapes, track/identity ids and scores drawn on the untouched picture."""

    name = "debug"
    full_frame = False
    hides_faces = False

    def apply(self, image: np.ndarray, regions: Sequence[FaceRegion], cfg: RenderConfig) -> np.ndarray:
        thick = max(1, image.shape[0] // 360)
        for region, mask in _masks(image, regions, cfg):
            color = (0, 255, 0) if region.observed else (255, 160, 0)
            edge = ((mask.alpha >= 1.0) & (mask.alpha < 1.0 + 1e-6)).astype(np.uint8)
            contours, _ = cv2.findContours(edge, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
            roi = np.ascontiguousarray(image[mask.slices])
            cv2.drawContours(roi, contours, -1, color, thick)
            image[mask.slices] = roi
            x1, y1 = int(region.box[0]), int(region.box[1])
            label = f"id{region.identity_id} t{region.track_id} {region.score:.2f}"
            cv2.putText(image, label, (x1, max(y1 - 4, 10)), cv2.FONT_HERSHEY_SIMPLEX, 0.4 * thick, color, thick)
            if region.landmarks is not None:
                for x, y in np.asarray(region.landmarks):
                    cv2.circle(image, (int(x), int(y)), thick + 1, (255, 0, 0), -1)
        return image
