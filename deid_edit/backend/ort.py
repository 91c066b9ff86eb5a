"""The one place ONNX Runtime sessions are made, with the execution provider chosen by device.

Here in ``backend`` (not in ``detect``) because every network's session is made here: the detector's,
the recognizer's and the cloak generator's, through ``backend.OrtModel``. Imports ``onnxruntime``
only when called.

``auto`` takes every installed accelerator in the order TensorRT, CUDA, CoreML, DirectML, then the
CPU; an explicit ``--device`` that this ONNX Runtime build cannot serve is a ``ModelError`` listing
what is available, never a silent fall-back to the CPU.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from ..errors import ModelError

log = logging.getLogger(__name__)

PROVIDERS = {
    "tensorrt": "TensorrtExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "coreml": "CoreMLExecutionProvider",
    "directml": "DmlExecutionProvider",
    "cpu": "CPUExecutionProvider",
}


def conflicting_runtimes() -> bool:
    """True when both ONNX Runtime builds are installed: they share one module and break each other.

    pip extras cannot remove a base dependency, so ``pip install 'deid-edit[gpu]'`` brings
    onnxruntime-gpu *next to* onnxruntime; the README's GPU set-up removes the CPU build.
    """
    from importlib.metadata import PackageNotFoundError, version

    found = 0
    for dist in ("onnxruntime", "onnxruntime-gpu"):
        try:
            version(dist)
            found += 1
        except PackageNotFoundError:
            pass
    return found > 1


def available_devices() -> list[str]:
    """Device names this ONNX Runtime build can run on, best first."""
    import onnxruntime as ort

    have = set(ort.get_available_providers())
    return [name for name, prov in PROVIDERS.items() if prov in have]


def choose_providers(device: str) -> list[Any]:
    """Provider list for ``device`` ('auto', 'cpu', 'cuda', 'cuda:1', ...)."""
    available = available_devices()
    base, _, ordinal = device.partition(":")
    if base == "auto":
        return [PROVIDERS[d] for d in available]
    if base not in available:
        raise ModelError(
            f"--device {device!r} is not available in this ONNX Runtime build; available: "
            f"{', '.join(['auto', *available])} (for NVIDIA GPUs install deid-edit[gpu])"
        )
    provider: Any = PROVIDERS[base]
    if ordinal:
        if not ordinal.isdigit():
            raise ModelError(f"--device {device!r}: the device number must be an integer, e.g. cuda:0")
        provider = (provider, {"device_id": int(ordinal)})
    return [provider] if base == "cpu" else [provider, PROVIDERS["cpu"]]


def make_session(model_path: Path, device: str = "auto", threads: int = 0) -> Any:
    """An InferenceSession for ``model_path`` on ``device`` with ``threads`` intra-op threads."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    if threads:
        opts.intra_op_num_threads = threads
    # idle intra-op threads sleep instead of spinning: on a small CPU the decode thread, the shot
    # detector and the encoder need those cycles (sofa 1080p analyze: 14.7 s -> 14.1 s, 2 cores)
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    providers = choose_providers(device)
    if providers[0] == PROVIDERS["cpu"]:
        # no memory pattern on the CPU: ORT keeps one planned block per input shape and thread, and
        # a run sees several (coarse, normal, sweep tiles); the arena alone reuses its blocks.
        # Sofa 1080p streaming: peak 1,271-1,290 against 1,367-1,370 MiB, the same time
        opts.enable_mem_pattern = False
    if conflicting_runtimes():
        log.warning("both onnxruntime and onnxruntime-gpu are installed; keep one: pip uninstall -y onnxruntime")
    try:
        session = ort.InferenceSession(str(model_path), sess_options=opts, providers=providers)
    except Exception as exc:  # ORT raises its own exception types
        raise ModelError(f"{model_path}: cannot load on {device} ({exc}); run 'deid-edit models verify'") from exc
    log.info("%s runs on %s", model_path.name, session.get_providers()[0])
    return session
