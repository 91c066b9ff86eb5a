"""What the optional torch backend needs, told without importing it.

Its own module because both ``backend`` (deciding ``auto``) and ``backend.torch_backend`` (failing
to import what is missing) name the extra, and the torch backend must not import ``backend``'s
``__init__`` back: that would tie the two into an import circle.
"""

from __future__ import annotations

import importlib.util

TORCH_EXTRA_HINT = "pip install 'deid-edit[torch]' (torch, onnx and onnx2torch)"


def torch_installed() -> bool:
    """torch, onnx and onnx2torch can be imported (checked without importing them)."""
    return all(importlib.util.find_spec(m) is not None for m in ("torch", "onnx", "onnx2torch"))
