"""Face chips the audit compares: aligned crops, the face mask, identity-free stand-ins.

Input: a frame and a face's landmarks. Output: chips for the recognizer, and stand-ins (black,
mean-colour fill, ``featureless``) whose distance tells how much a match on this face can mean.
"""

from __future__ import annotations

import cv2
import numpy as np

from ..embed import CHIP_SIZE


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
