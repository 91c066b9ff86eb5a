"""Inference backends: one interface, two engines, for every network the engine runs.

Input: a model name from ``models/manifest.json`` (``centerface``, ``dlib_resnet_v1``, ``cloak``...)
and optionally the file to load for it instead of the manifest's (``path``: the cloak generator
under ``DEID_EDIT_CLOAK_MODEL``), a backend (``auto``, ``onnxruntime``, ``torch``) and a device
(``auto``, ``cpu``, ``cuda[:N]``, ``mps``, ``tensorrt``, ``coreml``, ``directml``). Output: an
``InferenceModel`` whose ``run(*inputs)`` maps the model's float32 batch-first inputs, in the
graph's input order (one NCHW blob for the detector and the recognizer; chips and descriptors for
the cloak generator), to its outputs as numpy arrays (next stage: the detector's or the embedder's
decoding, the cloak's paste-back). Callers never see sessions, modules or devices.

* ``onnxruntime`` (the default and the only one in the base install): the ``.onnx`` file run by an
  ONNX Runtime session from ``backend.ort.make_session``, which picks the execution provider
  (TensorRT, CUDA, CoreML, DirectML, CPU) from what the installed build has.
* ``torch`` (extra ``deid-edit[torch]``): the same ``.onnx`` files run by PyTorch on CUDA, MPS or
  the CPU (``backend.torch_backend``): the detector converted by onnx2torch, the recognizer and the
  cloak generator as their native torch modules with the files' weights. It exists because the
  common GPU machine has a CUDA PyTorch but not ``onnxruntime-gpu``, whose CUDA/cuDNN pins often
  clash with torch's. torch is imported only when this backend is used.

Every network runs on both: the detector and the recognizer for the analyze pass
(``DetectConfig``), the cloak generator and its recognizer for ``--mode cloak`` (``RenderConfig``'s
``device``/``backend``, the same flags). tests/test_backends.py holds the two to the same
detections, descriptors and cloak images within stated tolerances on the CPU.

How ``auto`` decides (``resolve_backend``), without importing torch on a machine that cannot use it:

1. ``--device cpu``, ``tensorrt``, ``coreml`` or ``directml`` -> onnxruntime (ORT is the faster CPU
   engine here; the other three are ORT providers). ``--device mps`` -> torch (ORT has no MPS).
2. ``--device auto``/``cuda[:N]``: the installed ONNX Runtime has a CUDA or TensorRT provider ->
   onnxruntime.
3. Otherwise torch, but only if ``torch`` and ``onnx2torch`` are installed (``find_spec``, no
   import), an NVIDIA driver is visible (``/proc/driver/nvidia/version``, ``/dev/nvidia0`` or
   ``nvidia-smi`` on PATH), and then, after importing torch, ``torch.cuda.is_available()``.
4. Else onnxruntime (on the CPU, for ``auto``).

Throughput on a GPU, what exists: the analyze pass detects in batches of frames
(``DetectConfig.batch_size``; 0 = 2 on an ONNX Runtime CPU session, 16 otherwise, which includes the
torch backend on any device) while ``io.decode.VideoReader`` decodes the next frames in its own
thread, so decode overlaps inference. The torch backend runs under ``torch.inference_mode()``,
uploads through reused pinned host buffers (one per input) with ``non_blocking=True`` on CUDA, and can run under
fp16 autocast (``fp16=True``; off by default because it changes scores and descriptors). A CUDA
out-of-memory error halves the batch (of every input together) and retries, and at batch 1 moves the model to the CPU with a
warning: a long file is never lost to a memory spike mid-way.
"""

from __future__ import annotations

import logging
import os
import shutil
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


def load_model(
    name: str, backend: str = "auto", device: str = "auto", threads: int = 0, fp16: bool = False, path: str | os.PathLike[str] | None = None
) -> InferenceModel:
    """Model ``name`` loaded on the backend ``resolve_backend`` picks; from the file ``path`` when
    given (a model under evaluation), else from the manifest's checksum-verified file. ``name``
    also says how the torch backend builds its module (``torch_backend.load_module``)."""
    chosen = resolve_backend(backend, device)
    file = Path(path) if path is not None else model_path(name)
    if chosen == "onnxruntime":
        if fp16:
            raise ModelError("fp16 autocast exists only on the torch backend (--backend torch)")
        return OrtModel(file, device, threads)
    from .torch_backend import TorchModel, load_module

    return TorchModel(load_module(name, file), device, threads=threads, fp16=fp16, name=file.name if path is not None else name)
