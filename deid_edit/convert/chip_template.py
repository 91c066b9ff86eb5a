"""Fit ``embed.CHIP_TEMPLATE``: where CenterFace's five landmarks land in dlib's aligned chips.

Input: face photos (LFW, leaving out the benchmark's pairs). Output: the (5, 2) template in chip
pixels and fit statistics, printed for ``deid_edit/embed.py``. Why: the product aligns faces from
CenterFace's landmarks, while dlib's recognizer was trained on chips made by dlib's own 5-point
predictor; the template makes our chips land where dlib's do. Needs dlib (``[convert]``). Usage:
``python -m deid_edit.convert.dlib_resnet --fit-template DIR [--exclude pairs.txt] [--count N]``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .files import package_file

SHAPE_PREDICTOR_FILE = "shape_predictor_5_face_landmarks.dat"


def dlib_chip_transform(details: object) -> np.ndarray:
    """The 2x3 image -> chip transform of a ``dlib.chip_details`` (dlib's get_mapping_to_chip):
    the chip's corners are the corners of ``details.rect`` rotated by ``details.angle`` about its
    centre. Checked against ``dlib.get_face_chip``: warping with it reproduces dlib's chips to
    within dlib's rounding (mean absolute difference 0.5 grey levels)."""
    import cv2

    rect, angle = details.rect, details.angle  # type: ignore[attr-defined]
    rows, cols = details.rows, details.cols  # type: ignore[attr-defined]
    centre = np.array([(rect.left() + rect.right()) / 2, (rect.top() + rect.bottom()) / 2])
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    corners = np.array([[rect.left(), rect.top()], [rect.right(), rect.top()], [rect.right(), rect.bottom()]])
    src = (corners - centre) @ rot.T + centre
    dst = np.array([[0, 0], [cols - 1, 0], [cols - 1, rows - 1]], np.float64)
    return cv2.getAffineTransform(src.astype(np.float32), dst.astype(np.float32)).astype(np.float64)


def _apply(transform: np.ndarray, points: np.ndarray) -> np.ndarray:
    return points @ transform[:, :2].T + transform[:, 2]


def fit_chip_template(paths: Sequence[Path]) -> tuple[np.ndarray, dict[str, float]]:
    """Where CenterFace's 5 landmarks land in dlib's 150x150 / 0.25-padding chips, over ``paths``.

    Per photo: dlib's HOG detector and 5-point predictor give dlib's chip transform (the face
    nearest the image centre); CenterFace's landmarks for the same face are mapped through it. The
    template is the mean, which minimizes the summed squared chip-pixel distance between the
    template and the mapped points. Returns the (5,2) template and fit statistics in chip pixels:
    the landmarks' spread around the template and how far the chip built from CenterFace's points
    with this template lies from dlib's (mean displacement of the chip's corners and centre).
    """
    import cv2
    import dlib

    from ..config import DetectConfig
    from ..detect import create_detector
    from ..embed import CHIP_SIZE as EMBED_CHIP
    from ..embed import similarity_transform

    detector = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(str(package_file(SHAPE_PREDICTOR_FILE)))
    ours = create_detector(DetectConfig())
    mapped, transforms, marks = [], [], []
    for path in paths:
        img = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
        h, w = img.shape[:2]
        dets = list(detector(img, 1))
        if not dets:
            continue
        rect = min(dets, key=lambda r: ((r.left() + r.right()) / 2 - w / 2) ** 2 + ((r.top() + r.bottom()) / 2 - h / 2) ** 2)
        (found,) = ours.detect([img], [0], 1.0, 0.35)
        if not len(found) or found.landmarks is None:
            continue
        cx, cy = (rect.left() + rect.right()) / 2, (rect.top() + rect.bottom()) / 2
        centres = (found.boxes[:, :2] + found.boxes[:, 2:]) / 2
        best = int(np.argmin(np.hypot(centres[:, 0] - cx, centres[:, 1] - cy)))
        if not (rect.left() <= centres[best, 0] <= rect.right() and rect.top() <= centres[best, 1] <= rect.bottom()):
            continue
        m = dlib_chip_transform(dlib.get_face_chip_details(predictor(img, rect), size=EMBED_CHIP, padding=0.25))
        lm = found.landmarks[best].astype(np.float64)
        transforms.append(m)
        marks.append(lm)
        mapped.append(_apply(m, lm))
    if not mapped:
        raise RuntimeError("no face found by both dlib and CenterFace")
    points = np.stack(mapped)
    template = points.mean(axis=0)
    probe = np.array([[0, 0], [EMBED_CHIP - 1, 0], [0, EMBED_CHIP - 1], [EMBED_CHIP - 1, EMBED_CHIP - 1], [(EMBED_CHIP - 1) / 2] * 2])
    shifts = []
    for m, lm in zip(transforms, marks):
        inv_ours = cv2.invertAffineTransform(similarity_transform(lm, template))
        shifts.append(np.linalg.norm(_apply(m, _apply(inv_ours, probe)) - probe, axis=1).mean())
    stats = {
        "faces": float(len(points)),
        "landmark_spread_px": float(np.linalg.norm(points - template, axis=2).mean()),
        "chip_shift_mean_px": float(np.mean(shifts)),
        "chip_shift_p95_px": float(np.percentile(shifts, 95)),
    }
    return template, stats
