"""Inference backends: one interface (``InferenceModel.run``) for every network, on two engines.

Input: a manifest model name (or a file), a backend (``auto``, ``onnxruntime``, ``torch``) and a
device. Output: an ``InferenceModel`` mapping float32 batch-first inputs to numpy outputs (next: the
detector's, embedder's or cloak's decoding). ``onnxruntime`` (base install) runs the ``.onnx`` files;
``torch`` (``torch_backend``, ``[torch]`` extra) runs the same files where a CUDA PyTorch exists but
``onnxruntime-gpu`` does not. How ``auto`` decides (``resolve_backend``): ORT for ``cpu`` and ORT-only
providers, torch for ``mps``; else ORT when it has CUDA/TensorRT; else torch when torch and onnx2torch
are installed, an NVIDIA driver is visible and CUDA works; else ORT on the CPU. torch is imported only
after those cheap checks pass.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
from pathlib import Path
from typing import Protocol

import numpy as np

from ..errors import ModelError
from ..models import model_path
from .extras import TORCH_EXTRA_HINT, torch_installed
from .ort import available_devices, make_session

log = logging.getLogger(__name__)

BACKENDS = ("auto", "onnxruntime", "torch")
ORT_ONLY_DEVICES = ("tensorrt", "coreml", "directml")
TORCH_ONLY_DEVICES = ("mps",)


class InferenceModel(Protocol):
    """One loaded network on one device."""

    provider: str  # where it runs, for logs and the plan: "CUDAExecutionProvider", "torch:cuda:0", ...

    def run(self, *inputs: np.ndarray) -> list[np.ndarray]:
        """The model's outputs (float32 numpy, batch first) for its float32 batch-first ``inputs``
        (in the graph's input order, all of one batch size)."""
        ...


class OrtModel:
    """An ONNX Runtime session on the model file ``path`` behind ``InferenceModel``."""

    def __init__(self, path: Path, device: str = "auto", threads: int = 0) -> None:
        self.path = Path(path)
        self.session = make_session(self.path, device, threads)
        self.provider: str = self.session.get_providers()[0]
        self.input_names: list[str] = [i.name for i in self.session.get_inputs()]
        self.output_names: list[str] = [o.name for o in self.session.get_outputs()]

    def run(self, *inputs: np.ndarray) -> list[np.ndarray]:
        if len(inputs) != len(self.input_names):
            raise ModelError(f"{self.path.name}: takes {len(self.input_names)} inputs ({', '.join(self.input_names)}), got {len(inputs)}")
        return list(self.session.run(self.output_names, dict(zip(self.input_names, inputs))))


def nvidia_driver_visible() -> bool:
    """A cheap sign of an NVIDIA GPU, so ``auto`` imports torch only where CUDA may work."""
    return os.path.exists("/proc/driver/nvidia/version") or os.path.exists("/dev/nvidia0") or shutil.which("nvidia-smi") is not None


def _ort_has_gpu() -> bool:
    return any(d in ("cuda", "tensorrt") for d in available_devices())


def _torch_cuda_available() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def resolve_backend(backend: str, device: str) -> str:
    """``onnxruntime`` or ``torch`` for the requested ``backend`` and ``device`` (see the module
    docstring for how ``auto`` decides); a combination that cannot work is a ``ModelError``."""
    if backend not in BACKENDS:
        raise ModelError(f"--backend {backend!r} is unknown; use {', '.join(BACKENDS)}")
    base = device.split(":")[0]
    if backend == "onnxruntime":
        if base in TORCH_ONLY_DEVICES:
            raise ModelError(f"--device {device} needs --backend torch (ONNX Runtime has no {base} provider)")
        return backend
    if backend == "torch":
        if base in ORT_ONLY_DEVICES:
            raise ModelError(f"--device {device} is an ONNX Runtime provider; use --backend onnxruntime (or auto)")
        return backend
    if base in ORT_ONLY_DEVICES or base == "cpu":
        return "onnxruntime"
    if base in TORCH_ONLY_DEVICES:
        return "torch"
    if _ort_has_gpu():
        return "onnxruntime"
    if not nvidia_driver_visible():
        return "onnxruntime"
    if not torch_installed():
        log.warning(
            "an NVIDIA GPU is visible but neither onnxruntime-gpu nor the torch backend is installed; running on the CPU "
            "(install deid-edit[gpu], or %s)",
            TORCH_EXTRA_HINT,
        )
        return "onnxruntime"
    if _torch_cuda_available():
        return "torch"
    return "onnxruntime"


# Models loaded in this process, so a batch (threads, or a Ray worker running file after file)
# loads each model once, not once per file. Keyed by the file's identity too: a replaced file is
# loaded (and checksum-verified) again. ORT sessions and the torch modules are used read-only.
_LOADED: dict[tuple[object, ...], InferenceModel] = {}
_LOADED_LOCK = threading.Lock()
_LOADS = 0


def load_count() -> int:
    """How many times this process has read a model from disk (tests, the Ray worker's report)."""
    return _LOADS


def load_model(
    name: str, backend: str = "auto", device: str = "auto", threads: int = 0, fp16: bool = False, path: str | os.PathLike[str] | None = None
) -> InferenceModel:
    """Model ``name`` loaded on the backend ``resolve_backend`` picks; from the file ``path`` when
    given (a model under evaluation), else from the manifest's checksum-verified file. ``name``
    also says how the torch backend builds its module (``torch_backend.load_module``). Loaded
    once per process for the same file and settings."""
    global _LOADS
    chosen = resolve_backend(backend, device)
    file = Path(path) if path is not None else model_path(name)
    st = file.stat()
    key = (name, chosen, str(file.resolve()), st.st_mtime_ns, st.st_size, device, threads, fp16)
    with _LOADED_LOCK:
        model = _LOADED.get(key)
        if model is None:
            model = _LOADED[key] = _read_model(name, chosen, file, device, threads, fp16, path is not None)
            _LOADS += 1
    return model


def _read_model(name: str, chosen: str, file: Path, device: str, threads: int, fp16: bool, given: bool) -> InferenceModel:
    if chosen == "onnxruntime":
        if fp16:
            raise ModelError("fp16 autocast exists only on the torch backend (--backend torch)")
        return OrtModel(file, device, threads)
    from .torch_backend import TorchModel, load_module

    return TorchModel(load_module(name, file), device, threads=threads, fp16=fp16, name=file.name if given else name)
