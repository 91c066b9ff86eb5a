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
