"""Anonymizing a decoded YUV 4:2:0 frame in place, converting only the regions to RGB.

Most of a frame never changes, so converting the whole picture to RGB and back (and re-encoding
its colours through a second matrix) costs time and fidelity for nothing. Here each group of
overlapping regions is cut out of the Y, U and V planes, converted to RGB, handed to the
anonymizer, converted back, and written only where the mask is non-zero: every pixel outside the
masks stays bit-identical to the decoded frame. Previous stage: plan.regions_at; next: encode.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import av
import cv2
import numpy as np

from ..config import RenderConfig
from ..types import FaceRegion
from .shapes import mask_bounds, mask_for

SUPPORTED = {"yuv420p", "yuvj420p"}


def _plane(frame: av.VideoFrame, i: int, h: int, w: int) -> np.ndarray:
    p = frame.planes[i]
    return np.asarray(memoryview(p)).reshape(p.height, p.line_size)[:h, :w]


def _groups(rects: list[list[int]]) -> list[list[int]]:
    """Merge overlapping rectangles [x0, y0, x1, y1] until none overlap."""
    merged = True
    while merged:
        merged = False
        out: list[list[int]] = []
        for r in rects:
            for o in out:
                if r[0] < o[2] and o[0] < r[2] and r[1] < o[3] and o[1] < r[3]:
                    o[:] = [min(o[0], r[0]), min(o[1], r[1]), max(o[2], r[2]), max(o[3], r[3])]
                    merged = True
                    break
            else:
                out.append(list(r))
        rects = out
    return rects


def apply_yuv420(frame: av.VideoFrame, regions: Sequence[FaceRegion], anonymizer: object, cfg: RenderConfig) -> bool:
    """Anonymize ``frame`` in place; False (frame untouched) when its format is not supported."""
    w, h = frame.width, frame.height
    if frame.format.name not in SUPPORTED or w % 2 or h % 2:
        return False
    rects = []
    for r in regions:
        bounds = mask_bounds(r, (h, w), cfg)
        if bounds is not None:  # even-aligned so chroma samples map 1:1
            x0, y0, x1, y1 = bounds
            rects.append([x0 & ~1, y0 & ~1, min(w, (x1 + 1) & ~1), min(h, (y1 + 1) & ~1)])
    if not rects:
        return True
    frame.make_writable()
    y, u, v = _plane(frame, 0, h, w), _plane(frame, 1, h // 2, w // 2), _plane(frame, 2, h // 2, w // 2)
    for x0, y0, x1, y1 in _groups(rects):
        rh, rw = y1 - y0, x1 - x0
        cy, cx = slice(y0 // 2, y1 // 2), slice(x0 // 2, x1 // 2)
        i420 = np.concatenate([y[y0:y1, x0:x1].ravel(), u[cy, cx].ravel(), v[cy, cx].ravel()]).reshape(rh * 3 // 2, rw)
        rgb = cv2.cvtColor(i420, cv2.COLOR_YUV2RGB_I420)
        shift = np.array([x0, y0], np.float32)
        local = [replace(r, box=r.box - np.tile(shift, 2), landmarks=None if r.landmarks is None else r.landmarks - shift) for r in regions]
        touched = np.zeros((rh, rw), bool)
        for r in local:
            m = mask_for(r, (rh, rw), cfg)
            if m is not None:
                touched[m.slices] |= m.alpha > 0
        if not touched.any():
            continue
        anonymizer.apply(rgb, local, cfg)  # type: ignore[attr-defined]
        back = cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV_I420).ravel()
        n = rh * rw
        ny = back[:n].reshape(rh, rw)
        nu = back[n : n + n // 4].reshape(rh // 2, rw // 2)
        nv = back[n + n // 4 :].reshape(rh // 2, rw // 2)
        np.copyto(y[y0:y1, x0:x1], ny, where=touched)
        # a chroma sample changes where any of its four luma pixels does
        tc = touched[0::2, 0::2] | touched[1::2, 0::2] | touched[0::2, 1::2] | touched[1::2, 1::2]
        np.copyto(u[cy, cx], nu, where=tc)
        np.copyto(v[cy, cx], nv, where=tc)
    return True
