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
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..nets.dlib_resnet import DlibResNet
from .chip_template import SHAPE_PREDICTOR_FILE, fit_chip_template
from .dlib_dat import DlibFormatError, DlibNet, Layer, read_dlib_net
from .files import cosine, package_file, sample_images, sha256_of

SOURCE_FILE = "dlib_face_recognition_resnet_model_v1.dat"
SOURCE_SHA256 = "55533b28a95800a551ba546ba62fe69625c7e95a7061c338adffead08719da30"  # face_recognition_models 0.3.0
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
