"""The PyTorch backend: the shipped ``.onnx`` models run by torch on CUDA, MPS or the CPU.

Input: a model name, its ``.onnx`` file and a device. Output: a ``TorchModel``
(``backend.InferenceModel``; next: the caller's decoding). Imported only when this backend is chosen
(``[torch]`` extra). How each network is made (``load_module``): the detector converted by onnx2torch
at load (torchvision stubbed during that import when absent, so the extra never pulls in a torchvision
that must match the installed torch); the recognizer and the cloak generator as their native modules
(``deid_edit.nets``) with the file's weights, loaded strictly (a missing key or another shape is a
``ModelError``); the int8 recognizer has no torch form (``embed`` runs the float32 one instead).
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import types
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ModelError
from ..models import model_path
from .extras import TORCH_EXTRA_HINT

log = logging.getLogger(__name__)

CLOAK_METADATA = "deid_edit.cloak"  # metadata_props key generator.export writes: {"size", "generator": GeneratorConfig}

try:
    import torch
    from torch import nn
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ModelError(f"--backend torch needs PyTorch: {TORCH_EXTRA_HINT}") from exc


def _import_onnx2torch() -> Any:
    """``onnx2torch``, importable without torchvision (see the module docstring)."""
    import importlib.util

    stubbed = importlib.util.find_spec("torchvision") is None
    if stubbed:

        def missing(*_: Any, **__: Any) -> Any:
            raise ModelError("this ONNX graph needs torchvision (NMS/RoIAlign): pip install torchvision matching your torch")

        tv, ops = types.ModuleType("torchvision"), types.ModuleType("torchvision.ops")
        ops.nms = ops.roi_align = ops.box_convert = missing  # type: ignore[attr-defined]
        tv.ops = ops  # type: ignore[attr-defined]
        sys.modules.update({"torchvision": tv, "torchvision.ops": ops})
    try:
        import onnx2torch
    except ImportError as exc:
        raise ModelError(f"--backend torch needs onnx2torch and onnx: {TORCH_EXTRA_HINT}") from exc
    finally:
        if stubbed:
            sys.modules.pop("torchvision", None)
            sys.modules.pop("torchvision.ops", None)
    return onnx2torch


def _load_onnx(path: Path) -> Any:
    try:
        import onnx
    except ImportError as exc:
        raise ModelError(f"--backend torch needs onnx: {TORCH_EXTRA_HINT}") from exc
    try:
        return onnx.load(str(path))
    except Exception as exc:  # protobuf's DecodeError, OSError
        raise ModelError(f"{path}: not a readable ONNX model ({type(exc).__name__}: {exc})") from exc


def convert_onnx(name: str, path: Path | None = None) -> nn.Module:
    """The ONNX model ``name`` (its file ``path``, default the manifest's) as a torch module, converted by onnx2torch."""
    onnx2torch = _import_onnx2torch()
    try:
        return onnx2torch.convert(_load_onnx(path or model_path(name)))
    except NotImplementedError as exc:
        raise ModelError(f"{name}: onnx2torch cannot convert this graph ({exc}); use --backend onnxruntime") from exc


def dlib_resnet_from_onnx(name: str = "dlib_resnet_v1", path: Path | None = None) -> nn.Module:
    """dlib's ResNet as the native ``DlibResNet`` module, weights and geometry from the ONNX file."""
    from onnx import helper, numpy_helper

    from ..nets import RECOGNIZER_SIZE
    from ..nets.dlib_resnet import DlibResNet

    graph = _load_onnx(path or model_path(name)).graph
    weights = {t.name: torch.from_numpy(numpy_helper.to_array(t).copy()) for t in graph.initializer}
    attrs = {
        n.input[1] if n.op_type in ("Conv", "Gemm") else n.op_type: (n, {a.name: helper.get_attribute_value(a) for a in n.attribute})
        for n in graph.node
        if n.op_type in ("Conv", "Gemm", "MaxPool")
    }

    def conv(prefix: str) -> nn.Conv2d:
        node, at = attrs.get(f"{prefix}.weight", (None, None))
        if node is None or at is None:
            raise ModelError(f"{name}: no convolution {prefix} in the graph; the file is not the shipped recognizer")
        pads = at.get("pads", [0, 0, 0, 0])
        if pads[:2] != pads[2:]:
            raise ModelError(f"{name}: asymmetric padding {pads} in {prefix}")
        w = weights[f"{prefix}.weight"]
        c = nn.Conv2d(w.shape[1], w.shape[0], tuple(w.shape[2:]), stride=tuple(at.get("strides", [1, 1])), padding=tuple(pads[:2]))
        with torch.no_grad():
            c.weight.copy_(w)
            c.bias.copy_(weights[f"{prefix}.bias"])
        return c

    stem = conv("stem")
    _, pool = attrs["MaxPool"]
    convs, i = [], 0
    while f"blocks.{i}.conv1.weight" in weights:
        convs.append((conv(f"blocks.{i}.conv1"), conv(f"blocks.{i}.conv2")))
        i += 1
    fc_w = weights["fc.weight"]
    _, gemm = attrs["fc.weight"]
    if not gemm.get("transB", 0):
        fc_w = fc_w.T
    fc = nn.Linear(fc_w.shape[1], fc_w.shape[0], bias="fc.bias" in weights)
    with torch.no_grad():
        fc.weight.copy_(fc_w)
        if "fc.bias" in weights:
            fc.bias.copy_(weights["fc.bias"])
    return DlibResNet(stem, (int(pool["kernel_shape"][0]), int(pool["strides"][0])), convs, fc, RECOGNIZER_SIZE)


def cloak_generator_from_onnx(path: Path) -> nn.Module:
    """The cloak generator as the native ``CloakGenerator``: config from the file's metadata,
    weights from its initializers (strict; see the module docstring)."""
    from onnx import helper, numpy_helper

    from ..nets.cloak import CloakGenerator, GeneratorConfig

    proto = _load_onnx(path)
    raw = {p.key: p.value for p in proto.metadata_props}.get(CLOAK_METADATA)
    if raw is None:
        raise ModelError(f"{path}: not a cloak generator (no {CLOAK_METADATA!r} metadata); make one with 'deid-edit export-cloak'")
    try:
        cfg = GeneratorConfig.from_json(json.loads(raw)["generator"])
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        raise ModelError(f"{path}: unreadable {CLOAK_METADATA!r} metadata ({type(exc).__name__}: {exc})") from exc
    gen = CloakGenerator(cfg)
    init = {t.name: t for t in proto.graph.initializer}
    expected = gen.state_dict()
    state = {k: torch.from_numpy(numpy_helper.to_array(init[k]).copy()) for k in expected if k in init}
    for node in proto.graph.node:  # nn.Linear exports as Gemm(x, W, b, transB=1); a W stored the other way round is W.T
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type == "Gemm" and node.input[1] in state and not attrs.get("transB", 0):
            state[node.input[1]] = state[node.input[1]].T.contiguous()
    bad = [k for k, v in expected.items() if k not in state or state[k].shape != v.shape]
    if bad:
        got = tuple(state[bad[0]].shape) if bad[0] in state else "missing"
        raise ModelError(
            f"{path}: its weights do not fit the generator its metadata describes (widths {list(cfg.widths)}, cond {cfg.cond}): "
            f"{len(bad)} of {len(expected)} tensors missing or misshapen, e.g. {bad[0]} {got} for {tuple(expected[bad[0]].shape)}"
        )
    gen.load_state_dict(state, strict=True)
    return gen


def load_module(name: str, path: Path | None = None) -> nn.Module:
    """The torch module for model ``name``, read from ``path`` (default: the manifest's file); see
    the module docstring for how each is made."""
    if name == "dlib_resnet_v1":
        return dlib_resnet_from_onnx(name, path)
    if name == "cloak":
        return cloak_generator_from_onnx(path or model_path(name))
    if name.endswith("_int8"):
        raise ModelError(f"{name}: the int8 build runs only on ONNX Runtime; use the float32 model on --backend torch")
    return convert_onnx(name, path)


def torch_device(device: str) -> torch.device:
    """The torch device for ``--device`` (auto = CUDA, then MPS, then the CPU); unavailable is an error."""
    base, _, ordinal = device.partition(":")
    if base == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        return torch.device("mps" if mps is not None and mps.is_available() else "cpu")
    if base == "cuda":
        if not torch.cuda.is_available():
            raise ModelError(f"--device {device}: this PyTorch ({torch.__version__}) sees no CUDA GPU; use --device cpu")
        if ordinal and (not ordinal.isdigit() or int(ordinal) >= torch.cuda.device_count()):
            raise ModelError(f"--device {device}: use cuda:0..cuda:{torch.cuda.device_count() - 1}")
        return torch.device(device)
    if base == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise ModelError("--device mps: this PyTorch has no MPS (Apple GPU) support here; use --device cpu")
        return torch.device("mps")
    if base == "cpu":
        return torch.device("cpu")
    raise ModelError(f"--device {device!r} is not a torch device; use auto, cpu, cuda[:N] or mps")


def is_out_of_memory(exc: BaseException) -> bool:
    """CUDA (or MPS) ran out of memory, as opposed to any other failure."""
    oom = getattr(torch, "OutOfMemoryError", None) or getattr(torch.cuda, "OutOfMemoryError", None)
    return (oom is not None and isinstance(exc, oom)) or (isinstance(exc, RuntimeError) and "out of memory" in str(exc))


class TorchModel:
    """A torch module on one device behind ``InferenceModel``, with out-of-memory recovery.

    ``run`` splits its inputs (all batch first, one batch size) into the same chunks of at most
    ``max_batch`` items (None: the whole batch). On an out-of-memory error on an accelerator the
    chunk is halved and retried; at one item the module moves to the CPU for the rest of its life,
    with a warning. ``fallback`` enables this (default: on for every device but the CPU, where there
    is nowhere to go and the error is a ``ModelError``).
    """

    def __init__(
        self,
        module: nn.Module,
        device: str = "auto",
        threads: int = 0,
        fp16: bool = False,
        name: str = "model",
        fallback: bool | None = None,
    ) -> None:
        self.name = name
        self.device = torch_device(device)
        if threads and self.device.type == "cpu":
            torch.set_num_threads(threads)
        self.module = module.eval().to(self.device)
        if self.device.type == "cuda" and not fp16:
            # TF32 convolutions (torch's default on Ampere and later) move scores by ~1e-3; the backends
            # must agree with ONNX Runtime (tests/test_backends.py), so full fp32 unless fp16 was asked for
            torch.backends.cudnn.allow_tf32 = False
            torch.backends.cuda.matmul.allow_tf32 = False
        self.fp16 = fp16
        self.fallback = self.device.type != "cpu" if fallback is None else fallback
        self._lock = threading.Lock()
        self.max_batch: int | None = None
        self._pinned: dict[int, torch.Tensor] = {}  # per input position
        log.info("%s runs on torch %s%s", name, self.device, " (fp16 autocast)" if fp16 else "")

    @property
    def provider(self) -> str:
        return f"torch:{self.device}"

    def _upload(self, chunk: np.ndarray, slot: int = 0) -> torch.Tensor:
        """``chunk`` (input number ``slot``) on the device; on CUDA through a reused pinned buffer, asynchronously."""
        host = torch.from_numpy(np.ascontiguousarray(chunk, dtype=np.float32))
        if self.device.type != "cuda":
            return host.to(self.device)
        pinned = self._pinned.get(slot)
        if pinned is None or pinned.numel() < host.numel():
            pinned = self._pinned[slot] = torch.empty(host.numel(), dtype=torch.float32, pin_memory=True)
        staged = pinned[: host.numel()].view(host.shape)
        staged.copy_(host)
        return staged.to(self.device, non_blocking=True)

    def _forward(self, chunks: tuple[np.ndarray, ...]) -> list[np.ndarray]:
        autocast = torch.autocast(self.device.type, dtype=torch.float16) if self.fp16 else nullcontext()
        with torch.inference_mode(), autocast:
            out = self.module(*(self._upload(c, i) for i, c in enumerate(chunks)))
        outs = out if isinstance(out, list | tuple) else [out]
        # .cpu() waits for the device, so the pinned buffer is free again when this returns
        return [o.float().cpu().numpy() for o in outs]

    def _to_cpu(self, reason: str) -> None:
        log.warning("%s: %s out of memory even at batch 1 (%s); continuing on the CPU (slower)", self.name, self.device, reason)
        self.module = self.module.to("cpu")
        self.device = torch.device("cpu")
        self.fallback, self.max_batch, self._pinned = False, None, {}
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def run(self, *inputs: np.ndarray) -> list[np.ndarray]:
        with self._lock:  # one model is shared by a batch's threads (backend.load_model); the pinned buffers are not
            return self._run(inputs)

    def _run(self, inputs: tuple[np.ndarray, ...]) -> list[np.ndarray]:
        n = len(inputs[0])
        if any(len(x) != n for x in inputs):
            raise ValueError(f"{self.name}: inputs of different batch sizes {[len(x) for x in inputs]}")
        parts: list[list[np.ndarray]] = []
        start = 0
        while start < n:
            size = min(self.max_batch or n, n - start)
            oom: str | None = None
            try:
                parts.append(self._forward(tuple(x[start : start + size] for x in inputs)))
            except Exception as exc:
                if not is_out_of_memory(exc):
                    raise
                oom = str(exc).splitlines()[0] if str(exc) else type(exc).__name__  # not exc: its traceback pins device tensors
            if oom is None:
                start += size
                continue
            if not self.fallback:
                raise ModelError(f"{self.name}: out of memory on {self.device} at batch {size} ({oom}); use a smaller --batch-size")
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            if size > 1:
                self.max_batch = size // 2
                log.warning("%s: %s out of memory at batch %d; retrying at batch %d", self.name, self.device, size, self.max_batch)
            else:
                self._to_cpu(oom)
        if len(parts) == 1:
            return parts[0]
        return [np.concatenate(chunks) for chunks in zip(*parts)]
