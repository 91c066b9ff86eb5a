"""Video input and output with PyAV: ``decode`` reads, ``encode`` writes; nothing else touches av."""

from .decode import VideoReader, probe
from .encode import VideoWriter

__all__ = ["VideoReader", "VideoWriter", "probe"]
