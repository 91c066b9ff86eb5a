"""Inference backends: ONNX Runtime and PyTorch give the same detections, descriptors and cloak
images; ``auto`` decides without importing torch on a CPU machine; CUDA out-of-memory halves the
batch (all inputs together), then falls back to the CPU. Tests marked ``gpu`` need a CUDA torch
(benchmarks/gpu.sh runs them)."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import footage

import deid_edit.backend as backend
from deid_edit.config import DetectConfig, RenderConfig
from deid_edit.detect import create_detector
from deid_edit.errors import ConfigError, ModelError
from deid_edit.io.decode import VideoReader
from deid_edit.types import FaceRegion, FrameDetections

# what "the same" means between the backends (float32 both; different conv kernels round differently)
BOX_PX = 1.0
SCORE_TOL = 1e-3
EMBED_ABS = 1e-3
EMBED_COS = 0.99999
THRESHOLD = 0.3
CLOAK_PX = 1e-3  # generator's cloaked chip, 0..255 (measured 3e-5 on this file's generator, CPU)
CLOAK_MASK = 1e-5  # generator's mask, 0..1 (measured 1e-7)
CLOAK_RENDER = 1  # rendered frame, grey levels (measured 1: paste rounding; int8 vs float32 recognizer included)


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
    # the cloak renderer's networks: the same flags, the same checks
    assert (RenderConfig().device, RenderConfig().backend) == ("auto", "auto")
    assert RenderConfig(mode="cloak", device="cuda:1", backend="torch").device == "cuda:1"
    with pytest.raises(ConfigError, match="--backend"):
        RenderConfig(backend="tensorflow")
    with pytest.raises(ConfigError, match="mps"):
        RenderConfig(backend="onnxruntime", device="mps")
    with pytest.raises(ConfigError, match="--device"):
        RenderConfig(device="tpu")


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


@pytest.mark.slow  # ~1.5 s: a fresh interpreter
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


@pytest.mark.slow  # ~1.7 s: both backends on the clip
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


@pytest.mark.slow  # ~1 s: both backends
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


@pytest.mark.slow  # ~10 s: analyzes on the torch backend
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


def test_cli_device_and_backend_reach_the_render_config(monkeypatch, tmp_path):
    """``render`` has --device/--backend (for --mode cloak); ``run`` and ``batch`` pass their analyze
    flags on to the RenderConfig as well."""
    import deid_edit.pipeline as pipeline
    from deid_edit.cli import cli

    seen: dict[str, RenderConfig] = {}

    def fake_render(video, plan, out, rcfg, *_a, **_k):
        seen["render"] = rcfg
        return out

    def fake_run(video, out, acfg, rcfg, *_a, **_k):
        seen["run"] = rcfg
        assert acfg.detect.backend == rcfg.backend and acfg.detect.device == rcfg.device
        return out, SimpleNamespace(identities=[], tracks=[], frame_count=0)

    def fake_batch(in_dir, out_dir, acfg, rcfg, *_a, **_k):
        seen["batch"] = rcfg
        return []

    import deid_edit.plan as plan_module

    monkeypatch.setattr(plan_module, "load_plan", lambda path: SimpleNamespace(identities=[], tracks=[], frame_count=0))
    monkeypatch.setattr(pipeline, "render", fake_render)
    monkeypatch.setattr(pipeline, "run", fake_run)
    import deid_edit.folder_batch as folder_batch

    monkeypatch.setattr(folder_batch, "batch", fake_batch)
    video, flags = str(tmp_path / "v.mp4"), ["--mode", "cloak", "--backend", "torch", "--device", "cpu", "--progress", "none"]
    for argv in (
        ["render", video, "-o", str(tmp_path / "o.mp4")],
        ["run", video, "-o", str(tmp_path / "o.mp4")],
        ["batch", str(tmp_path), "-o", str(tmp_path / "out")],
    ):
        res = CliRunner().invoke(cli, argv + flags)
        assert res.exit_code == 0, res.output
        rcfg = seen[argv[0]]
        assert (rcfg.mode, rcfg.backend, rcfg.device) == ("cloak", "torch", "cpu"), argv[0]
    res = CliRunner().invoke(cli, ["render", video, "--mode", "cloak", "--backend", "onnxruntime", "--device", "mps"])
    assert isinstance(res.exception, ConfigError) and "mps" in str(res.exception)


# -- the cloak generator ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cloak_file(tmp_path_factory) -> Path:
    """A cloak generator as 'deid-edit export-cloak' writes it (generator.export.export_onnx), with
    seeded random weights: no trained cloak ships, and agreement does not depend on training. Its
    descriptor projection is scaled up (x100) so the descriptor steers the output as a trained
    generator's does (a fresh one barely listens to it: a misfed descriptor would go unnoticed)."""
    needs_torch()
    import torch

    from deid_edit.generator.export import export_onnx
    from deid_edit.nets.cloak import CloakGenerator

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        gen = CloakGenerator()
    with torch.no_grad():
        for p in gen.cond.parameters():
            p.mul_(100.0)
    return export_onnx(gen, tmp_path_factory.mktemp("cloak") / "cloak.onnx")


@pytest.fixture(scope="module")
def cloak_inputs(detectors, sample_clip) -> tuple[np.ndarray, np.ndarray]:
    """Generator inputs from the sample clip: aligned chips at 128 (uint8 levels as float32) and
    their dlib descriptors, as the cloak renderer makes them."""
    import cv2

    from deid_edit.embed import FaceEmbedder
    from deid_edit.nets import CROP_SIZE

    chips = sample_chips(sample_clip[0], detectors[0])[:12]
    desc = FaceEmbedder(device="cpu", recognizer="exact", backend="onnxruntime").embed(chips)
    x = np.stack([cv2.resize(c, (CROP_SIZE, CROP_SIZE), interpolation=cv2.INTER_AREA) for c in chips]).astype(np.float32)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2)), desc


@pytest.mark.slow  # ~10 s with the generator's export (cloak_file)
def test_same_cloak_generator_outputs(cloak_file, cloak_inputs):
    """ONNX Runtime and the native torch ``CloakGenerator`` (weights read from the ONNX file) on the
    CPU agree within CLOAK_PX on the 0..255 chip and CLOAK_MASK on the mask. Measured on this file's
    generator and the sample clip's 12 chips (torch 2.13 CPU, onnxruntime CPU): 3.1e-5 and 1.0e-7."""
    from deid_edit.nets.cloak import CloakGenerator

    x, d = cloak_inputs
    ort_gen = backend.load_model("cloak", "onnxruntime", "cpu", path=cloak_file)
    torch_gen = backend.load_model("cloak", "torch", "cpu", path=cloak_file)
    assert ort_gen.provider == "CPUExecutionProvider" and torch_gen.provider == "torch:cpu"
    assert isinstance(torch_gen.module, CloakGenerator), "the native module, not a converted graph"
    (ya, ma), (yb, mb) = ort_gen.run(x, d), torch_gen.run(x, d)
    assert ya.shape == yb.shape == x.shape and ma.shape == mb.shape == (len(x), 1, *x.shape[2:])
    assert np.abs(ya - yb).max() <= CLOAK_PX
    assert np.abs(ma - mb).max() <= CLOAK_MASK
    assert np.abs(ya - x).max() > 10.0, "the generator must edit the chips, or agreement proves nothing"
    # the descriptor matters (the second input reaches the network on both engines)
    other = np.random.default_rng(0).normal(0.0, 0.1, d.shape).astype(np.float32)
    (yc, _), (yd, _) = ort_gen.run(x, other), torch_gen.run(x, other)
    assert np.abs(yc - ya).max() > 100 * CLOAK_PX and np.abs(yc - yd).max() <= CLOAK_PX
    with pytest.raises(ModelError, match="takes 2 inputs"):
        ort_gen.run(x)


def _rewritten(src: Path, dst: Path, meta: str | None) -> Path:
    """``src`` with its cloak metadata replaced by ``meta`` (None: removed)."""
    import onnx

    proto = onnx.load(str(src))
    kept = [(p.key, p.value) for p in proto.metadata_props if p.key != "deid_edit.cloak"]
    del proto.metadata_props[:]
    for key, value in kept + ([("deid_edit.cloak", meta)] if meta is not None else []):
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(proto, str(dst))
    return dst


@pytest.mark.slow  # needs the generator's export (cloak_file, ~9 s)
def test_a_file_that_is_not_this_generator_is_a_model_error(cloak_file, tmp_path):
    """On the torch backend the file must carry the generator's metadata and exactly the weights it
    describes (strict); a mismatch is one line naming the file, never a half-loaded module."""
    from deid_edit.models import model_path
    from deid_edit.nets.cloak import GeneratorConfig

    narrow = json.dumps({"size": 128, "generator": GeneratorConfig(widths=(8, 16, 32, 64, 64)).to_json()})
    cases = {
        _rewritten(cloak_file, tmp_path / "narrow.onnx", narrow): "do not fit the generator",
        _rewritten(cloak_file, tmp_path / "nometa.onnx", None): "not a cloak generator",
        _rewritten(cloak_file, tmp_path / "badmeta.onnx", '{"size": 128}'): "unreadable",
        model_path("centerface"): "not a cloak generator",
    }
    (tmp_path / "junk.onnx").write_bytes(b"not a protobuf at all")
    cases[tmp_path / "junk.onnx"] = "not a readable ONNX model"
    for path, why in cases.items():
        with pytest.raises(ModelError, match=why) as err:
            backend.load_model("cloak", "torch", "cpu", path=path)
        assert str(path) in str(err.value) and "\n" not in str(err.value), str(err.value)
    # the real file loads; the same file with its own metadata rewritten identically still does
    same = _rewritten(cloak_file, tmp_path / "same.onnx", json.dumps({"size": 128, "generator": GeneratorConfig().to_json()}))
    backend.load_model("cloak", "torch", "cpu", path=same)


def test_cloak_renderer_refuses_a_foreign_graph_on_onnxruntime(detectors, sample_clip):
    from deid_edit.models import model_path
    from deid_edit.render.cloak import Cloak

    img = first_frames(sample_clip[0], 1, 1.0)[0]
    (det,) = detectors[0].detect([img], [0], 1.0, THRESHOLD)
    regions = [FaceRegion(0, 0, det.boxes[0], det.landmarks[0], True)]
    for be in ("onnxruntime", "torch"):
        with pytest.raises(ModelError, match="not a cloak generator"):
            Cloak(model=model_path("centerface")).apply(img.copy(), regions, RenderConfig(mode="cloak", device="cpu", backend=be))


@pytest.mark.slow  # needs the generator's export (cloak_file, ~9 s)
def test_cloak_renderer_same_pixels_on_both_backends(cloak_file, detectors, sample_clip):
    """The Cloak renderer with RenderConfig(backend=onnxruntime) and (backend=torch), CPU, on the
    same frames and regions (both shots, the per-track averages carried over frames): the frames
    differ by at most CLOAK_RENDER grey level (measured: 1, a few pixels rounded the other way at
    the paste). ONNX Runtime's recognizer is the int8 build and torch's the float32 one (the
    descriptor the generator gets); the bound includes that."""
    from deid_edit.render.cloak import Cloak

    path = sample_clip[0]
    frames = first_frames(path, 40, 1.0)
    idx = [0, 1, 2, 20, 21, 39]
    dets = detectors[0].detect([frames[i] for i in idx], idx, 1.0, THRESHOLD)
    outs, cloaks = {}, {}
    for be in ("onnxruntime", "torch"):
        cloak = cloaks[be] = Cloak(model=cloak_file, verify=False)
        cfg = RenderConfig(mode="cloak", device="cpu", backend=be)
        outs[be] = [
            cloak.apply(frames[i].copy(), [FaceRegion(0, k, b, lm, True) for k, (b, lm) in enumerate(zip(d.boxes, d.landmarks))], cfg)
            for i, d in zip(idx, dets)
        ]
    assert cloaks["onnxruntime"]._model.provider == cloaks["onnxruntime"]._embedder.provider == "CPUExecutionProvider"
    assert cloaks["torch"]._model.provider == cloaks["torch"]._embedder.provider == "torch:cpu"
    assert cloaks["torch"].stats.cloaked == cloaks["onnxruntime"].stats.cloaked == len(idx)
    for i, a, b in zip(idx, outs["onnxruntime"], outs["torch"]):
        assert np.abs(a.astype(np.int16) - b).max() <= CLOAK_RENDER, f"frame {i}"
        assert np.any(a != frames[i], axis=2).sum() > 5000, "the cloak must change the face, or agreement proves nothing"


# -- out of memory ---------------------------------------------------------------------------------


def flaky(module, fails: int):
    """``module`` whose first ``fails`` calls raise CUDA's out-of-memory error; records the batch
    size of each call (``sizes``: the first input's; ``all_sizes``: every input's)."""
    import torch

    class Flaky(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner, self.fails, self.sizes, self.all_sizes = module, fails, [], []

        def forward(self, *xs):
            self.sizes.append(int(xs[0].shape[0]))
            self.all_sizes.append([int(x.shape[0]) for x in xs])
            if self.fails > 0:
                self.fails -= 1
                raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (injected)")
            return self.inner(*xs)

    return Flaky()


def oom_detector(fails: int, device: str = "cpu"):
    from deid_edit.backend.torch_backend import TorchModel, load_module
    from deid_edit.detect.centerface import CenterFace

    det = CenterFace(device=device, backend="torch")
    wrapped = flaky(load_module("centerface"), fails)
    # fallback=True: on the CPU there is nowhere to fall back to, so the test opts in to see the policy
    det.model = TorchModel(wrapped, device, name="centerface", fallback=True)
    return det, wrapped


@pytest.mark.slow  # ~1.3 s: the torch backend on the clip
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


@pytest.mark.slow  # ~1 s: the torch backend on the clip
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


@pytest.mark.slow  # needs the generator's export (cloak_file, ~9 s)
@pytest.mark.parametrize("fails, sizes", [(3, [4, 2, 1, 4]), (1, [4, 2, 2])])
def test_oom_chunks_every_input_together(cloak_file, cloak_inputs, fails, sizes, caplog):
    """``run(image, descriptor)``: under an injected out-of-memory error both inputs are halved
    together (each chip keeps its own descriptor), and the result equals an unchunked run."""
    from deid_edit.backend.torch_backend import TorchModel, load_module

    x, d = (a[:4] for a in cloak_inputs)
    d = d + np.arange(4, dtype=np.float32)[:, None]  # four clearly different descriptors
    expected = TorchModel(load_module("cloak", cloak_file), "cpu", name="cloak").run(x, d)
    wrapped = flaky(load_module("cloak", cloak_file), fails)
    model = TorchModel(wrapped, "cpu", name="cloak", fallback=True)
    with caplog.at_level(logging.WARNING, logger="deid_edit"):
        got = model.run(x, d)
    assert wrapped.sizes == sizes and all(a == b for a, b in wrapped.all_sizes)
    assert (model.device.type == "cpu" and not model.fallback) if fails == 3 else model.max_batch == 2
    assert len(got) == 2 and [g.shape for g in got] == [e.shape for e in expected]
    for g, e in zip(got, expected):
        np.testing.assert_allclose(g, e, rtol=0, atol=1e-4)
    with pytest.raises(ValueError, match="batch sizes"):
        model.run(x, d[:3])


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


CLOAK_PX_CUDA = 0.05  # generator on CUDA (fp32, TF32 off) vs ONNX Runtime on the CPU, 0..255: other conv algorithms


@pytest.mark.slow  # needs the generator's export (cloak_file, ~9 s), built before the skip
@pytest.mark.gpu
def test_cuda_cloak_generator_matches_onnxruntime(cloak_file, one_shot_clip):
    needs_cuda()
    import cv2

    from deid_edit.embed import FaceEmbedder
    from deid_edit.nets import CROP_SIZE

    chips = sample_chips(one_shot_clip, create_detector(DetectConfig(device="cpu", backend="onnxruntime")))
    d = FaceEmbedder(device="cpu", recognizer="exact", backend="onnxruntime").embed(chips)
    x = np.stack([cv2.resize(c, (CROP_SIZE, CROP_SIZE), interpolation=cv2.INTER_AREA) for c in chips]).astype(np.float32)
    x = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    gen = backend.load_model("cloak", "torch", "cuda", path=cloak_file)
    assert gen.provider.startswith("torch:cuda")
    (ya, ma), (yb, mb) = backend.load_model("cloak", "onnxruntime", "cpu", path=cloak_file).run(x, d), gen.run(x, d)
    assert np.abs(ya - x).max() > 10.0, "the generator must edit the chips, or agreement proves nothing"
    assert np.abs(ya - yb).max() <= CLOAK_PX_CUDA and np.abs(ma - mb).max() <= 1e-4


@pytest.mark.gpu
def test_cuda_plan_masks_what_the_cpu_plan_masks(one_shot_clip):
    """The GPU path leaks nothing the CPU path covers: same tracks, region boxes within a pixel."""
    needs_cuda()
    from deid_edit import analyze
    from deid_edit.config import AnalyzeConfig

    cpu = analyze(one_shot_clip, AnalyzeConfig.from_options(device="cpu", backend="onnxruntime"))
    gpu = analyze(one_shot_clip, AnalyzeConfig.from_options(device="cuda", backend="torch"))
    assert gpu.config["provider"].startswith("torch:cuda")
    assert len(gpu.tracks) == len(cpu.tracks) > 0
    for i in range(cpu.frame_count):
        a = sorted(tuple(r.box) for r in cpu.regions_at(i))
        b = sorted(tuple(r.box) for r in gpu.regions_at(i))
        assert len(a) == len(b), i
        assert all(np.abs(np.subtract(p, q)).max() <= BOX_PX for p, q in zip(a, b)), i
