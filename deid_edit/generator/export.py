"""Cloak export: a training run folder in, ``cloak.onnx`` out (next: the renderer's cloak mode runs
it with ONNX Runtime, no torch).

The graph: inputs ``image`` float32 [B,3,S,S] RGB 0..255 (the aligned chip, ``deid_edit.embed``
geometry resized from 150 to S) and ``descriptor`` float32 [B,128] (dlib's descriptor of the
150x150 chip, from the engine's ONNX recognizer, which the inference path runs anyway for
identities); outputs ``cloaked`` [B,3,S,S] 0..255 and ``mask`` [B,1,S,S] in 0..1. The batch
dimension is dynamic. The descriptor is an input rather than a subgraph so the cloak stays a
~0.7 M-parameter network and the recognizer is not run twice per face.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from ..convert.dlib_resnet import scrub_export_annotations
from ..errors import EncodeError
from ..io.atomic import write_atomic
from ..nets import DESCRIPTOR_SIZE
from ..nets.cloak import CloakGenerator
from .train import load_generator

OPSET = 18


def export_onnx(gen: CloakGenerator, out: Path, force: bool = False) -> Path:
    """Write ``gen`` as ONNX to ``out`` (temporary file, then rename); returns ``out``."""
    out = Path(out)
    if out.exists() and not force:
        raise EncodeError(f"{out}: already exists; use --force to overwrite it or choose another name")
    gen = gen.eval()
    size = gen.cfg.size
    example = (torch.full((2, 3, size, size), 128.0), torch.zeros(2, DESCRIPTOR_SIZE))
    batch = torch.export.Dim("batch")
    program = torch.onnx.export(
        gen,
        example,
        input_names=["image", "descriptor"],
        output_names=["cloaked", "mask"],
        dynamic_shapes=({0: batch}, {0: batch}),
        opset_version=OPSET,
        dynamo=True,
        external_data=False,
        verbose=False,
    )
    proto = program.model_proto
    scrub_export_annotations(proto)  # the exporter's stack traces (paths of this machine): reproducible file
    entry = proto.metadata_props.add()
    entry.key, entry.value = "deid_edit.cloak", json.dumps({"size": size, "generator": gen.cfg.to_json()})
    write_atomic(out, proto.SerializeToString(deterministic=True), EncodeError, "the cloak model", "choose a writable location", True)
    return out


def export_run(run_dir: Path, out: Path, force: bool = False) -> Path:
    """Export the generator of a training run folder."""
    return export_onnx(load_generator(run_dir), out, force)


def max_abs_diff(gen: CloakGenerator, path: Path, image: np.ndarray, descriptor: np.ndarray) -> float:
    """Largest |torch - ONNX Runtime| over both outputs (cloaked in 0..255 units, mask in 0..1)."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"image": image.astype(np.float32), "descriptor": descriptor.astype(np.float32)})
    with torch.no_grad():
        want = gen.eval()(torch.from_numpy(image.astype(np.float32)), torch.from_numpy(descriptor.astype(np.float32)))
    return max(float(np.abs(g - w.numpy()).max()) for g, w in zip(got, want))
