"""Make ``models/dlib_resnet_v1_int8.onnx``: the face recognizer quantized to 8 bits for speed.

Input: ``models/dlib_resnet_v1.onnx`` and a folder of LFW photos. Output: the int8 model, the analysis
default (``--recognizer fast``; next: ``embed``). Why: analysis embeds every sampled face of every
track, and the float32 network already runs near the CPU's float32 peak; ONNX Runtime's static QDQ
quantization (per-channel int8 weights, uint8 activations) is much faster with LFW accuracy unchanged
within noise (speed and agreement: models/README.md). The float32 model stays the exact one (verified
against dlib, used by ``deid-edit audit``). Calibration chips are made as the product makes them,
from LFW photos outside the benchmark pairs, with a fixed seed (reproducible). Usage:
``python -m deid_edit.convert.quantize OUT.onnx --faces DIR --exclude pairs.txt``.
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from ..config import DetectConfig
from ..detect import create_detector
from ..embed import align_faces
from ..models import model_path
from .files import cosine, sample_images, sha256_of


def face_chips(paths: Sequence[Path]) -> np.ndarray:
    """(N,150,150,3) chips of the face nearest the centre of each photo (photos without one are skipped)."""
    detector = create_detector(DetectConfig(device="cpu"))
    chips = []
    for path in paths:
        rgb = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
        (det,) = detector.detect([rgb], [0], 1.0, DetectConfig().threshold)  # type: ignore[attr-defined]
        if not len(det) or det.landmarks is None:
            continue
        centres = (det.boxes[:, :2] + det.boxes[:, 2:]) / 2
        h, w = rgb.shape[:2]
        best = int(np.argmin(np.hypot(centres[:, 0] - w / 2, centres[:, 1] - h / 2)))
        chips.append(align_faces(rgb, det.landmarks[best : best + 1])[0])
    return np.stack(chips)


def quantize(src: Path, out: Path, calibration: np.ndarray, batch: int = 10) -> None:
    """Static QDQ int8 quantization of ``src`` into ``out``, activations calibrated on ``calibration`` chips."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    nchw = np.ascontiguousarray(calibration.transpose(0, 3, 1, 2), dtype=np.float32)
    blobs = [nchw[i : i + batch] for i in range(0, len(nchw), batch)]

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter(blobs)

        def get_next(self) -> dict[str, np.ndarray] | None:
            blob = next(self._it, None)
            return None if blob is None else {"image": blob}

    with tempfile.TemporaryDirectory() as tmp:
        pre = Path(tmp) / "pre.onnx"
        quant_pre_process(str(src), str(pre))
        quantize_static(
            str(pre),
            str(out),
            Reader(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
        )


def compare(exact: Path, fast: Path, chips: np.ndarray) -> dict[str, float]:
    """How far the int8 descriptors are from the float32 ones on ``chips`` (cosine, L2)."""
    import onnxruntime as ort

    x = np.ascontiguousarray(chips.transpose(0, 3, 1, 2), dtype=np.float32)
    a = ort.InferenceSession(str(exact), providers=["CPUExecutionProvider"]).run(None, {"image": x})[0]
    b = ort.InferenceSession(str(fast), providers=["CPUExecutionProvider"]).run(None, {"image": x})[0]
    cos = cosine(a, b)
    l2 = np.linalg.norm(a - b, axis=1)
    return {"cos_min": float(cos.min()), "cos_mean": float(cos.mean()), "l2_mean": float(l2.mean()), "l2_max": float(l2.max())}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deid_edit.convert.quantize", description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="int8 ONNX file to write, e.g. models/dlib_resnet_v1_int8.onnx")
    parser.add_argument("--faces", type=Path, required=True, help="folder of face photos, e.g. ../shared/faces/lfw/lfw_deepfunneled")
    parser.add_argument("--exclude", type=Path, help="LFW pairs.txt whose images are left out (the benchmark's)")
    parser.add_argument("--count", type=int, default=150, help="calibration photos (default 150)")
    parser.add_argument("--check", type=int, default=110, help="further held-out photos to compare float32 and int8 on")
    args = parser.parse_args(argv)

    paths = sample_images(args.faces, args.count + args.check, args.exclude, seed=5)
    chips = face_chips(paths)
    cal, held = chips[: args.count], chips[args.count :]
    src = model_path("dlib_resnet_v1")
    quantize(src, args.out, cal)
    stats = compare(src, args.out, held)
    print(f"wrote {args.out} (sha256 {sha256_of(args.out)}), calibrated on {len(cal)} chips")
    print(
        f"vs float32 on {len(held)} held-out chips: cosine min {stats['cos_min']:.5f} mean {stats['cos_mean']:.6f}, "
        f"L2 mean {stats['l2_mean']:.4f} max {stats['l2_max']:.4f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
