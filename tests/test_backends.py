"""Inference backends: ONNX Runtime and PyTorch give the same detections and descriptors; ``auto``
decides without importing torch on a CPU machine; CUDA out-of-memory halves the batch, then falls
back to the CPU. Tests marked ``gpu`` need a CUDA torch (benchmarks/gpu.sh runs them)."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import footage

import deid_edit.backend as backend
from deid_edit.config import DetectConfig
from deid_edit.detect import create_detector
from deid_edit.errors import ConfigError, ModelError
from deid_edit.io.decode import VideoReader
from deid_edit.types import FrameDetections

# what "the same" means between the backends (float32 both; different conv kernels round differently)
BOX_PX = 1.0
SCORE_TOL = 1e-3
EMBED_ABS = 1e-3
EMBED_COS = 0.99999
THRESHOLD = 0.3


def needs_torch():
    pytest.importorskip("torch")
    pytest.importorskip("onnx")
    if not backend.torch_installed():
        pytest.skip("needs the torch extra: pip install 'deid-edit[torch]'")


def needs_cuda():
    needs_torch()
    import torch

    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU (benchmarks/gpu.sh)")


def first_frames(path: Path, count: int, scale: float) -> list[np.ndarray]:
    frames = []
    for frame in VideoReader(path, scale=scale).frames():
        frames.append(frame.image)
        if len(frames) == count:
            break
    return frames


def assert_same_detections(a: list[FrameDetections], b: list[FrameDetections]) -> int:
    """Same faces, boxes and landmarks within BOX_PX, scores within SCORE_TOL; returns the face count."""
    assert [d.frame_index for d in a] == [d.frame_index for d in b]
    total = 0
    for da, db in zip(a, b):
        assert len(da) == len(db), f"frame {da.frame_index}: {len(da)} faces vs {len(db)}"
        order_a, order_b = np.argsort(-da.scores, kind="stable"), np.argsort(-db.scores, kind="stable")
        np.testing.assert_allclose(db.boxes[order_b], da.boxes[order_a], atol=BOX_PX, rtol=0)
        np.testing.assert_allclose(db.scores[order_b], da.scores[order_a], atol=SCORE_TOL, rtol=0)
        np.testing.assert_allclose(db.landmarks[order_b], da.landmarks[order_a], atol=BOX_PX, rtol=0)
        total += len(da)
    return total


# -- how auto decides -----------------------------------------------------------------------------


@pytest.fixture
def probes(monkeypatch):
    """Control what ``resolve_backend`` sees: ORT GPU provider, NVIDIA driver, torch installed and CUDA."""
    state = {"ort_gpu": False, "driver": False, "torch": True, "cuda": False}
    monkeypatch.setattr(backend, "_ort_has_gpu", lambda: state["ort_gpu"])
    monkeypatch.setattr(backend, "nvidia_driver_visible", lambda: state["driver"])
    monkeypatch.setattr(backend, "torch_installed", lambda: state["torch"])
    monkeypatch.setattr(backend, "_torch_cuda_available", lambda: state["cuda"])
    return state


def test_auto_picks_onnxruntime_on_a_cpu_machine(probes):
    assert backend.resolve_backend("auto", "auto") == "onnxruntime"
    probes.update(driver=True, cuda=False)  # driver but torch sees no GPU
    assert backend.resolve_backend("auto", "auto") == "onnxruntime"


def test_auto_picks_torch_for_cuda_only_when_onnxruntime_has_no_gpu(probes):
    probes.update(driver=True, cuda=True)
    assert backend.resolve_backend("auto", "auto") == "torch"
    assert backend.resolve_backend("auto", "cuda:0") == "torch"
    assert backend.resolve_backend("auto", "cpu") == "onnxruntime"
    probes.update(ort_gpu=True)
    assert backend.resolve_backend("auto", "auto") == "onnxruntime"


def test_auto_without_the_torch_extra_warns_and_uses_onnxruntime(probes, caplog):
    probes.update(driver=True, cuda=True, torch=False)
    assert backend.resolve_backend("auto", "auto") == "onnxruntime"
    assert any("deid-edit[torch]" in r.getMessage() for r in caplog.records)


def test_device_names_route_to_the_engine_that_has_them(probes):
    assert backend.resolve_backend("auto", "mps") == "torch"
    assert backend.resolve_backend("auto", "coreml") == "onnxruntime"
    with pytest.raises(ModelError, match="--backend torch"):
        backend.resolve_backend("onnxruntime", "mps")
    with pytest.raises(ModelError, match="--backend onnxruntime"):
        backend.resolve_backend("torch", "tensorrt")


def test_config_validates_backend_and_device_pairs():
    assert DetectConfig().backend == "auto"
    with pytest.raises(ConfigError, match="--backend"):
        DetectConfig(backend="tensorflow")
    with pytest.raises(ConfigError, match="mps"):
        DetectConfig(backend="onnxruntime", device="mps")
    with pytest.raises(ConfigError, match="--device"):
        DetectConfig(backend="torch", device="directml")


@pytest.mark.skipif(backend.nvidia_driver_visible(), reason="an NVIDIA driver is visible: auto may rightly import torch")
def test_default_path_never_imports_torch():
    code = (
        "import sys\n"
        "from deid_edit.config import DetectConfig\n"
        "from deid_edit.detect import create_detector\n"
        "from deid_edit.embed import FaceEmbedder\n"
        "d = create_detector(DetectConfig())\n"
        "e = FaceEmbedder()\n"
        "print(d.provider, e.provider, 'torch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out[-1] == "False", "the default (auto, CPU) path imported torch"
    assert out[0] == "CPUExecutionProvider"


def test_missing_onnx2torch_names_the_extra(monkeypatch):
    needs_torch()
    from deid_edit.backend import torch_backend

    monkeypatch.setitem(sys.modules, "onnx2torch", None)  # import now raises ImportError
    with pytest.raises(ModelError, match=r"deid-edit\[torch\]"):
        torch_backend.convert_onnx("centerface")


# -- same results on both engines -----------------------------------------------------------------


@pytest.fixture(scope="module")
def detectors():
    needs_torch()
    return create_detector(DetectConfig(device="cpu", backend="onnxruntime")), create_detector(DetectConfig(device="cpu", backend="torch"))


def test_torch_backend_reports_itself(detectors):
    ort_det, torch_det = detectors
    assert ort_det.provider == "CPUExecutionProvider"
    assert torch_det.provider == "torch:cpu"


def test_same_detections_on_the_sample_clip(detectors, sample_clip):
    path, _ = sample_clip
    images = first_frames(path, 6, 1.0)
    idx = list(range(len(images)))
    ort_det, torch_det = detectors
    a = ort_det.detect(images, idx, 1.0, THRESHOLD)
    assert assert_same_detections(a, torch_det.detect(images, idx, 1.0, THRESHOLD)) >= len(images)


@pytest.mark.media
def test_same_detections_on_real_footage(detectors):
    path = footage("crowd_small_faces_1080p.mp4")
    scale = DetectConfig().detection_scale(1920, 1080)
    images = first_frames(path, 4, scale)
    ort_det, torch_det = detectors
    # the low threshold the pipeline detects at (tracking needs the weak ones too)
    a = ort_det.detect(images, [0, 1, 2, 3], scale, THRESHOLD / 2)
    assert assert_same_detections(a, torch_det.detect(images, [0, 1, 2, 3], scale, THRESHOLD / 2)) > 8


def sample_chips(path: Path, detector) -> np.ndarray:
    from deid_edit.embed import align_faces

    chips = []
    for i, img in enumerate(first_frames(path, 30, 1.0)[::3]):
        (det,) = detector.detect([img], [i], 1.0, THRESHOLD)
        chips.extend(align_faces(img, det.landmarks))
    return np.asarray(chips)


def test_same_descriptors(detectors, sample_clip):
    from deid_edit.embed import MODEL_NAME, FaceEmbedder

    chips = sample_chips(sample_clip[0], detectors[0])
    assert len(chips) >= 10
    exact = FaceEmbedder(device="cpu", recognizer="exact", backend="onnxruntime", batch_size=4)
    torch_emb = FaceEmbedder(device="cpu", recognizer="exact", backend="torch", batch_size=4)
    a, b = exact.embed(chips), torch_emb.embed(chips)
    assert np.abs(a - b).max() < EMBED_ABS
    cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert cos.min() > EMBED_COS
    # "fast" (int8) exists only for ONNX Runtime: torch runs the float32 network and says so
    fast_on_torch = FaceEmbedder(device="cpu", recognizer="fast", backend="torch")
    assert fast_on_torch.name == MODEL_NAME
    assert np.abs(fast_on_torch.embed(chips[:3]) - a[:3]).max() < EMBED_ABS


def test_cli_backend_option_reaches_the_plan(sample_clip, tmp_path):
    needs_torch()
    from deid_edit.cli import cli
    from deid_edit.plan import load_plan

    path, _ = sample_clip
    out = tmp_path / "s.deid.json"
    res = CliRunner().invoke(cli, ["analyze", str(path), "-o", str(out), "--backend", "torch", "--device", "cpu", "--progress", "none"])
    assert res.exit_code == 0, res.output
    plan = load_plan(out)
    assert plan.config["provider"] == "torch:cpu"
    assert plan.config["detect"]["backend"] == "torch"
    assert sum(len(d) for d in plan.detections) >= 30


# -- out of memory ---------------------------------------------------------------------------------


def flaky(module, fails: int):
    """``module`` whose first ``fails`` calls raise CUDA's out-of-memory error; records batch sizes."""
    import torch

    class Flaky(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner, self.fails, self.sizes = module, fails, []

        def forward(self, x):
            self.sizes.append(int(x.shape[0]))
            if self.fails > 0:
                self.fails -= 1
                raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (injected)")
            return self.inner(x)

    return Flaky()


def oom_detector(fails: int, device: str = "cpu"):
    from deid_edit.backend.torch_backend import TorchModel, load_module
    from deid_edit.detect.centerface import CenterFace

    det = CenterFace(device=device, backend="torch")
    wrapped = flaky(load_module("centerface"), fails)
    # fallback=True: on the CPU there is nowhere to fall back to, so the test opts in to see the policy
    det.model = TorchModel(wrapped, device, name="centerface", fallback=True)
    return det, wrapped


def test_oom_halves_the_batch_then_falls_back_to_the_cpu(detectors, sample_clip, caplog):
    path, _ = sample_clip
    images = first_frames(path, 4, 1.0)
    expected = detectors[0].detect(images, [0, 1, 2, 3], 1.0, THRESHOLD)
    det, wrapped = oom_detector(fails=3)
    with caplog.at_level(logging.WARNING, logger="deid_edit"):
        got = det.detect(images, [0, 1, 2, 3], 1.0, THRESHOLD)
    assert wrapped.sizes == [4, 2, 1, 4], "halve 4 -> 2 -> 1, then the CPU takes the whole batch"
    messages = [r.getMessage() for r in caplog.records]
    assert any("retrying at batch 2" in m for m in messages) and any("retrying at batch 1" in m for m in messages)
    assert any("continuing on the CPU" in m for m in messages)
    assert det.model.device.type == "cpu" and not det.model.fallback
    assert_same_detections(expected, got)


def test_oom_once_keeps_the_halved_batch(detectors, sample_clip, caplog):
    path, _ = sample_clip
    images = first_frames(path, 4, 1.0)
    expected = detectors[0].detect(images, [0, 1, 2, 3], 1.0, THRESHOLD)
    det, wrapped = oom_detector(fails=1)
    got = det.detect(images, [0, 1, 2, 3], 1.0, THRESHOLD)
    assert wrapped.sizes == [4, 2, 2]
    assert det.model.max_batch == 2 and det.model.fallback, "still on its device, at the smaller batch"
    assert not any("continuing on the CPU" in r.getMessage() for r in caplog.records)
    assert_same_detections(expected, got)


def test_oom_on_the_cpu_is_a_model_error_and_other_errors_pass_through(detectors):
    import torch

    from deid_edit.backend.torch_backend import TorchModel, load_module

    blob = np.zeros((2, 3, 64, 64), np.float32)
    with pytest.raises(ModelError, match="out of memory"):
        TorchModel(flaky(load_module("centerface"), 1), "cpu", name="centerface").run(blob)

    class Broken(torch.nn.Module):
        def forward(self, x):
            raise RuntimeError("shape mismatch")

    with pytest.raises(RuntimeError, match="shape mismatch"):
        TorchModel(Broken(), "cpu", fallback=True).run(blob)


# -- on a CUDA GPU (benchmarks/gpu.sh) -------------------------------------------------------------


@pytest.fixture(scope="module")
def one_shot_clip(tmp_path_factory):
    """A one-shot sample clip: needs only matplotlib's photo, so the GPU machine needs no scikit-image."""
    from deid_edit.sample import make_sample_clip

    path = tmp_path_factory.mktemp("gpu") / "one_shot.mp4"
    make_sample_clip(path, frames=16, cut_frame=16)
    return path


@pytest.mark.gpu
def test_cuda_detections_and_descriptors_match_onnxruntime(one_shot_clip):
    needs_cuda()
    from deid_edit.embed import FaceEmbedder

    path = one_shot_clip
    images = first_frames(path, 8, 1.0)
    idx = list(range(len(images)))
    ort_det = create_detector(DetectConfig(device="cpu", backend="onnxruntime"))
    cuda_det = create_detector(DetectConfig(device="cuda", backend="torch"))
    assert cuda_det.provider.startswith("torch:cuda")
    assert assert_same_detections(ort_det.detect(images, idx, 1.0, THRESHOLD), cuda_det.detect(images, idx, 1.0, THRESHOLD)) >= 8
    chips = sample_chips(path, ort_det)
    a = FaceEmbedder(device="cpu", recognizer="exact", backend="onnxruntime").embed(chips)
    b = FaceEmbedder(device="cuda", recognizer="exact", backend="torch").embed(chips)
    assert np.abs(a - b).max() < EMBED_ABS


@pytest.mark.gpu
def test_cuda_oom_falls_back_to_the_cpu_with_the_same_detections(one_shot_clip):
    needs_cuda()
    path = one_shot_clip
    images = first_frames(path, 4, 1.0)
    expected = create_detector(DetectConfig(device="cpu", backend="onnxruntime")).detect(images, [0, 1, 2, 3], 1.0, THRESHOLD)
    det, wrapped = oom_detector(fails=3, device="cuda")
    assert det.model.device.type == "cuda"
    got = det.detect(images, [0, 1, 2, 3], 1.0, THRESHOLD)
    assert wrapped.sizes == [4, 2, 1, 4] and det.model.device.type == "cpu"
    assert next(wrapped.parameters()).device.type == "cpu"
    assert_same_detections(expected, got)


@pytest.mark.gpu
def test_auto_picks_cuda_torch_here():
    needs_cuda()
    if backend._ort_has_gpu():
        pytest.skip("onnxruntime-gpu is installed: auto rightly keeps ONNX Runtime")
    det = create_detector(DetectConfig())
    assert det.provider.startswith("torch:cuda")
