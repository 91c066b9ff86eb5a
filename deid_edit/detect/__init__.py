"""Face detection: upright RGB frames in, ``FrameDetections`` out (next stage: track).

Detectors implement the ``FaceDetector`` protocol and are listed in ``DETECTORS``; the pipeline
builds one with ``create_detector`` from a ``DetectConfig``. Networks are loaded through
``deid_edit.backend`` (ONNX Runtime or PyTorch, ``DetectConfig.backend``), which also makes every
ONNX Runtime session (``backend.ort``) so provider choice is the same for every model.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np

from ..config import DetectConfig, flag_for
from ..errors import ConfigError
from ..geometry import nms
from ..types import FrameDetections


class FaceDetector(Protocol):
    """Finds faces in batches of same-sized upright RGB images."""

    name: str
    provider: str

    def detect(self, images: Sequence[np.ndarray], frame_indices: Sequence[int], scale: float, threshold: float) -> list[FrameDetections]:
        """Detect in ``images`` (already scaled by ``scale``); return boxes in source pixels."""
        ...


def _registry() -> dict[str, type]:
    from .centerface import CenterFace

    return {c.name: c for c in (CenterFace,)}


def detector_names() -> list[str]:
    return sorted(_registry())


def create_detector(cfg: DetectConfig) -> FaceDetector:
    """Instantiate the configured detector on the configured device."""
    registry = _registry()
    if cfg.model not in registry:
        raise ConfigError(f"{flag_for('detect', 'model')} {cfg.model!r} is unknown; use {', '.join(sorted(registry))}")
    return registry[cfg.model](device=cfg.device, threads=cfg.threads, backend=cfg.backend)


TILE_SIDE = 1024  # largest tile side of a full-resolution pass (a multiple of 32, as the model wants)


def tile_grid(height: int, width: int, overlap: int, side: int = TILE_SIDE) -> tuple[tuple[int, int], list[tuple[int, int]]]:
    """Equal tiles covering a ``height`` x ``width`` image, neighbours overlapping by at least
    ``overlap`` pixels: ``((tile_h, tile_w), [(y0, x0), ...])``. A face no larger than ``overlap``
    lies wholly inside at least one tile. An image within ``side`` is one tile. Tiles grow past
    ``side`` where ``overlap`` needs it (a large ``--min-face``)."""
    side = max(side, -(-(2 * overlap + 64) // 32) * 32)

    def axis(n: int) -> tuple[int, list[int]]:
        if n <= side:
            return n, [0]
        count = -(-(n - overlap) // (side - overlap))
        even = -(-(n + (count - 1) * overlap) // count)  # equal tiles, rounded up
        size = min(n, -(-even // 32) * 32)  # to the model's multiple of 32
        return size, [round(i * (n - size) / (count - 1)) for i in range(count)]

    th, ys = axis(height)
    tw, xs = axis(width)
    return (th, tw), [(y, x) for y in ys for x in xs]


def detect_tiled(detector: FaceDetector, image: np.ndarray, frame_index: int, threshold: float, overlap: int) -> FrameDetections:
    """Detect in one large image (source scale) tile by tile, duplicates across tiles suppressed.

    Why: the detector's working memory grows with its input. A 1080p frame in one piece took ONNX
    Runtime's arena from 0.4 to 0.9 GiB, more than a streaming run may spend; tiles of at most
    ``TILE_SIDE`` keep it where the normal-scale frames have it, and run side by side on the cores
    (one 1080p piece runs on one). A box cut by a tile's inner edge is dropped: a face up to
    ``overlap`` is whole in the next tile, and a cut piece of a larger one could outscore the
    whole face found at the normal scale and replace it there (a face half covered)."""
    from .centerface import NMS_IOU

    h, w = image.shape[:2]
    (th, tw), origins = tile_grid(h, w, overlap)
    if len(origins) == 1:
        return detector.detect([image], [frame_index], 1.0, threshold)[0]
    # on the CPU at most one tile per inference (a batch of tiles would need a whole frame's
    # memory again), side by side where the detector runs frames so; a GPU takes them in one batch
    cpu = detector.provider == "CPUExecutionProvider"
    group = max(1, int(getattr(detector, "concurrent", 1))) if cpu else len(origins)
    found: list[FrameDetections] = []
    for a in range(0, len(origins), group):
        part = origins[a : a + group]
        found += detector.detect([image[y : y + th, x : x + tw] for y, x in part], [frame_index] * len(part), 1.0, threshold)
    boxes, scores, marks = [], [], []
    for (y, x), d in zip(origins, found):
        b = d.boxes
        cut = ((b[:, 0] <= 0.5) & (x > 0)) | ((b[:, 1] <= 0.5) & (y > 0))
        cut |= ((b[:, 2] >= tw - 0.5) & (x + tw < w)) | ((b[:, 3] >= th - 0.5) & (y + th < h))
        whole = ~cut
        boxes.append(b[whole] + np.array([x, y, x, y], np.float32))
        scores.append(d.scores[whole])
        if d.landmarks is not None:
            marks.append(d.landmarks[whole] + np.array([x, y], np.float32))
    all_boxes, all_scores = np.concatenate(boxes), np.concatenate(scores)
    if not len(all_scores):
        return FrameDetections.empty(frame_index)
    keep = nms(all_boxes, all_scores, NMS_IOU)
    lms = np.concatenate(marks)[keep] if len(marks) == len(found) else None
    return FrameDetections(frame_index, all_boxes[keep], all_scores[keep], lms)
