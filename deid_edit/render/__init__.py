"""Anonymizers: a frame and its ``FaceRegion`` list in, the anonymized frame out (next: encode).

Each mode is a class with a ``name`` listed in ``ANONYMIZERS``; the CLI's ``--mode`` choices come
from this registry, so a new mode never touches the CLI. All modes share one region geometry
(``render.shapes``): ellipse or box, padding relative to the face, a feathered edge outside the
fully covered area, and extra margin for uncertain (interpolated/extended) samples. ``cloak``
(``render.cloak``) is the learned mode; it loads its ONNX generator on first use, so registering
it costs the other modes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np

from ..config import MODES, RenderConfig
from ..types import FaceRegion
from .classic import Blur, Debug, Matte, Pixelate, Solid
from .cloak import Cloak


class Anonymizer(Protocol):
    """Draws over the regions of one RGB frame, in place."""

    name: str
    full_frame: bool  # True when frames without regions must be rendered too (matte)
    hides_faces: bool  # False for review modes (debug) that leave faces visible

    def apply(self, image: np.ndarray, regions: Sequence[FaceRegion], cfg: RenderConfig) -> np.ndarray: ...


ANONYMIZERS: dict[str, type] = {c.name: c for c in (Blur, Pixelate, Solid, Matte, Debug, Cloak)}
# config.MODES validates --mode without importing this package; a mode added to one but not the other fails here, at import
if set(ANONYMIZERS) != set(MODES):
    raise ImportError(f"render.ANONYMIZERS {sorted(ANONYMIZERS)} and config.MODES {sorted(MODES)} disagree; update both")


def get_anonymizer(name: str) -> Anonymizer:
    """A new anonymizer of the given mode name (validated by RenderConfig)."""
    return ANONYMIZERS[name]()
