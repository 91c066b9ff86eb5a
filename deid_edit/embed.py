"""Face embeddings: RGB images with the detector's 5 landmarks in, 128-d descriptors out (next:
identities, which links tracks and matches reference photos by descriptor distance).

``align_faces`` cuts a 150x150 chip per face with the similarity transform that best maps the 5
CenterFace landmarks onto ``CHIP_TEMPLATE``, fitted so the chips reproduce dlib's ``get_face_chip``
(size 150, padding 0.25) although dlib aligns by other points. ``FaceEmbedder`` runs dlib's ResNet
(``convert.dlib_resnet``): the int8 build by default (``fast``) or the float32 one (``exact``), on ONNX
Runtime or the torch backend. Descriptors are not normalized; two faces are the same person when their
L2 distance is below ``SAME_PERSON_L2``. No dlib is needed, and torch only on the torch backend.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np

from .backend import load_model, resolve_backend

MODEL_NAME = "dlib_resnet_v1"
# Two builds of the same network (models/README.md): "exact" is the float32 conversion, verified
# against dlib; "fast" is its int8 quantization (deid_edit.convert.quantize), 2.5x faster on a CPU,
# descriptors within ~0.05 L2 of the exact ones. Analysis defaults to fast (it embeds thousands of
# faces per video), the audit to exact (it is the proof). Descriptors of the two are never mixed:
# the plan records which one made its track descriptors.
RECOGNIZERS = {"fast": "dlib_resnet_v1_int8", "exact": MODEL_NAME}
DEFAULT_RECOGNIZER = "fast"
CHIP_SIZE = 150
EMBEDDING_SIZE = 128
# dlib's threshold for this network (the distance threshold stored in its loss layer). On LFW with
# our detector and alignment the best threshold per fold is 0.61-0.64 (benchmarks/lfw.py), and 0.6
# loses only 0.02 points of accuracy there; it is kept because it is the stricter side: a false
# "same person" can merge someone to be anonymized into someone kept.
SAME_PERSON_L2 = 0.6
# Where CenterFace's left eye, right eye, nose tip, left and right mouth corner land in dlib's
# 150x150 / 0.25-padding chips (chip pixels, pixel centres at integers): the least-squares fit
# (the mean) of CenterFace's landmarks mapped by dlib's own chip transform, over 1,992 LFW photos
# that are not in the benchmark's pairs (python -m deid_edit.convert.dlib_resnet --fit-template
# ../shared/faces/lfw/lfw_deepfunneled --exclude ../shared/faces/lfw/pairs.txt --count 2000). The
# points scatter 4.4 px around it and a chip lies 6.7 px (mean corner shift) from dlib's for the
# same photo: the two detectors' landmarks disagree that much, not the fit.
CHIP_TEMPLATE = np.array(
    [
        [47.06, 46.80],
        [101.93, 45.62],
        [73.83, 79.34],
        [50.75, 105.36],
        [96.79, 104.25],
    ],
    dtype=np.float64,
)
# Below this scale (chip pixels per image pixel) bilinear sampling would skip image pixels and
# alias; the face region is first shrunk with area averaging, as dlib's chip extraction does with
# its image pyramid.
_MIN_WARP_SCALE = 0.5


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The 2x3 similarity transform (no reflection) mapping ``src`` points onto ``dst`` in the
    least-squares sense (Umeyama 1991).

    Least squares over all five points rather than OpenCV's RANSAC estimator: five points are too
    few for outlier rejection to help, and the fit must be deterministic.
    """
    src = np.asarray(src, np.float64)
    dst = np.asarray(dst, np.float64)
    mu_s, mu_d = src.mean(axis=0), dst.mean(axis=0)
    s, d = src - mu_s, dst - mu_d
    var_s = (s**2).sum() / len(src)
    cov = d.T @ s / len(src)
    u, sig, vt = np.linalg.svd(cov)
    sign = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[1] = -1.0
    rot = u @ np.diag(sign) @ vt
    scale = (sig * sign).sum() / var_s if var_s > 0 else 1.0
    m = np.empty((2, 3))
    m[:, :2] = scale * rot
    m[:, 2] = mu_d - m[:, :2] @ mu_s
    return m


def chip_transform(landmarks: np.ndarray) -> np.ndarray:
    """2x3 transform from image pixels to chip pixels for one face's (5,2) landmarks."""
    return similarity_transform(landmarks, CHIP_TEMPLATE)


def warp_chip(image_rgb: np.ndarray, transform: np.ndarray, size: int = CHIP_SIZE) -> np.ndarray:
    """The ``size`` x ``size`` chip that ``transform`` (image -> chip, 2x3) maps out of the image.

    Outside the image the chip is black, as dlib's. A face much larger than the chip is first
    shrunk with area averaging (see ``_MIN_WARP_SCALE``) so the chip is not aliased.
    """
    m = np.asarray(transform, np.float64)
    scale = float(np.sqrt(abs(np.linalg.det(m[:, :2]))))
    src = image_rgb
    if scale < _MIN_WARP_SCALE:
        inv = cv2.invertAffineTransform(m)
        corners = np.array([[0, 0, 1], [size - 1, 0, 1], [0, size - 1, 1], [size - 1, size - 1, 1]], np.float64) @ inv.T
        h, w = image_rgb.shape[:2]
        x0, y0 = (int(max(0, np.floor(v) - 2)) for v in corners.min(axis=0))
        x1, y1 = (int(min(lim, np.ceil(v) + 3)) for v, lim in zip(corners.max(axis=0), (w, h)))
        if x1 > x0 and y1 > y0:
            crop = image_rgb[y0:y1, x0:x1]
            cw, ch = max(1, round((x1 - x0) * scale)), max(1, round((y1 - y0) * scale))
            src = cv2.resize(crop, (cw, ch), interpolation=cv2.INTER_AREA)
            fx, fy = cw / (x1 - x0), ch / (y1 - y0)
            # small = f * (image - origin + 0.5) - 0.5 (pixel centres at integers), so
            # image = (small + 0.5) / f + origin - 0.5, composed with m
            to_image = np.array([[1 / fx, 0, x0 - 0.5 + 0.5 / fx], [0, 1 / fy, y0 - 0.5 + 0.5 / fy]])
            m = np.hstack([m[:, :2] @ to_image[:, :2], (m[:, :2] @ to_image[:, 2] + m[:, 2])[:, None]])
    return cv2.warpAffine(src, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def align_faces(image_rgb: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """(N,150,150,3) uint8 chips, one per face, from an RGB uint8 image and (N,5,2) landmarks.

    Landmarks are the detector's, in image pixels: left eye, right eye, nose, left and right mouth
    corner (left/right as seen in the image).
    """
    lms = np.asarray(landmarks, np.float64).reshape(-1, 5, 2)
    chips = np.empty((len(lms), CHIP_SIZE, CHIP_SIZE, 3), np.uint8)
    for i, lm in enumerate(lms):
        chips[i] = warp_chip(image_rgb, chip_transform(lm))
    return chips


def distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """L2 distance between descriptors along the last axis (broadcasting: (N,128) vs (128,) etc.)."""
    diff = np.asarray(a, np.float32) - np.asarray(b, np.float32)
    return np.sqrt(np.einsum("...i,...i->...", diff, diff))


class FaceEmbedder:
    """dlib's face recognition ResNet run by ONNX Runtime: chips in, 128-d descriptors out.

    ``recognizer`` picks the build (``RECOGNIZERS``): ``fast`` (int8) or ``exact`` (float32). The
    int8 build exists only for ONNX Runtime; on the torch backend (``backend``, resolved as in
    ``deid_edit.backend``) both run the float32 network, which a GPU runs fast anyway, and ``name``
    says so.

    ``batch_size`` chips go through the network per call: on a CPU larger batches amortize the
    per-call overhead (a few percent), on a GPU they are what makes it fast.
    """

    def __init__(
        self, device: str = "auto", threads: int = 0, batch_size: int = 32, recognizer: str = DEFAULT_RECOGNIZER, backend: str = "auto"
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if recognizer not in RECOGNIZERS:
            raise ValueError(f"recognizer must be one of {', '.join(RECOGNIZERS)}, got {recognizer!r}")
        self.recognizer = recognizer
        self.backend = resolve_backend(backend, device)
        self.name = RECOGNIZERS[recognizer] if self.backend == "onnxruntime" else MODEL_NAME
        self.model: Any = load_model(self.name, self.backend, device, threads)
        self.provider: str = self.model.provider
        self.batch_size = batch_size

    def embed(self, chips: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
        """(N,128) float32 descriptors for (N,150,150,3) RGB chips (as made by ``align_faces``)."""
        chips = np.asarray(chips)
        if chips.ndim != 4 or chips.shape[1:] != (CHIP_SIZE, CHIP_SIZE, 3):
            raise ValueError(f"chips must be (N, {CHIP_SIZE}, {CHIP_SIZE}, 3) RGB, got {chips.shape}")
        out = np.empty((len(chips), EMBEDDING_SIZE), np.float32)
        for start in range(0, len(chips), self.batch_size):
            batch = chips[start : start + self.batch_size]
            blob = np.ascontiguousarray(batch.transpose(0, 3, 1, 2), dtype=np.float32)
            (out[start : start + len(batch)],) = self.model.run(blob)
        return out

    def embed_faces(self, image_rgb: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        """(N,128) descriptors for the faces with (N,5,2) ``landmarks`` in ``image_rgb``."""
        return self.embed(align_faces(image_rgb, landmarks))
