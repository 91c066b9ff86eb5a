"""Read dlib's ``.dat`` network files with numpy alone (no dlib, no torch).

Input: a dlib ``loss_metric`` network with an ``input_rgb_image_sized`` input, such as
``dlib_face_recognition_resnet_model_v1.dat``. Output: a ``DlibNet`` (mean colour, input size, the
layers in dlib's own terms, the distance threshold). Next: ``convert.dlib_resnet`` builds the torch
network from these layers. Why: dlib's serialization is undocumented and its Python wheel does not
expose weights; reading the bytes keeps the conversion checkable and free of dlib at run time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


class DlibFormatError(ValueError):
    """The file is not the dlib network this converter understands."""


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
