"""The cloak generator as a torch module: an aligned face chip and its identity descriptor in, the
cloaked chip and its edit mask out.

Here rather than in ``generator`` (the training) because the torch backend rebuilds it from the
shipped ``cloak.onnx`` at inference time (``backend.torch_backend``), and the inference path must
not import the training code. ``GeneratorConfig`` travels in every checkpoint and in the ONNX file's
``deid_edit.cloak`` metadata, so whoever loads weights rebuilds the architecture they were made for.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from . import CROP_SIZE, DESCRIPTOR_SIZE


@dataclass(frozen=True)
class GeneratorConfig:
    """Architecture of the generator; stored in every checkpoint so a run rebuilds what it trained.

    ``widths`` are the encoder's channels at 1, 1/2, 1/4, 1/8 and 1/16 of the crop size (the last
    is the bottleneck, 8x8 for 128 px); ``cond`` is the width the descriptor is projected to before
    it is tiled over the bottleneck.
    """

    size: int = CROP_SIZE
    widths: tuple[int, ...] = (16, 32, 64, 128, 128)
    cond: int = 64
    mask_bias: float = -2.0  # sigmoid(-2) = 0.12: the first steps barely touch the face

    def __post_init__(self) -> None:
        if self.size % (2 ** (len(self.widths) - 1)):
            raise ValueError(f"crop size {self.size} must be divisible by {2 ** (len(self.widths) - 1)} for {len(self.widths)} levels")

    def to_json(self) -> dict[str, object]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, object]) -> GeneratorConfig:
        values = dict(data)
        values["widths"] = tuple(values["widths"])  # type: ignore[arg-type]
        return cls(**values)  # type: ignore[arg-type]


def _conv(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    """3x3 conv + LeakyReLU: no normalization layer, so the exported graph is just Conv/LeakyRelu
    (fast everywhere) and the output of a face never depends on the other faces in the batch."""
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride, 1), nn.LeakyReLU(0.2, inplace=True))


class CloakGenerator(nn.Module):
    """U-Net-like autoencoder conditioned on the recognizer's descriptor of the input face.

    Input: ``image`` [B,3,S,S] RGB 0..255 (the aligned chip resized to S) and ``descriptor``
    [B,128] (dlib's, unnormalized, as ``deid_edit.embed`` computes it; normalized here). Output:
    the cloaked chip ``m*z + (1-m)*x`` [B,3,S,S] 0..255 and the mask ``m`` [B,1,S,S] in [0,1].
    Skips are added (LinkNet style) rather than concatenated, which halves the decoder's cost; the
    descriptor is projected, tiled and concatenated at the bottleneck (Gafni et al.).
    """

    def __init__(self, cfg: GeneratorConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg = cfg or GeneratorConfig()
        w = cfg.widths
        self.inc = _conv(3, w[0])
        self.down = nn.ModuleList(_conv(w[i], w[i + 1], stride=2) for i in range(len(w) - 1))
        self.cond = nn.Sequential(nn.Linear(DESCRIPTOR_SIZE, cfg.cond), nn.LeakyReLU(0.2, inplace=True))
        self.fuse = _conv(w[-1] + cfg.cond, w[-1])
        self.up = nn.ModuleList(_conv(w[i + 1], w[i]) for i in reversed(range(len(w) - 1)))
        self.refine = _conv(w[0], w[0])
        self.head = nn.Conv2d(w[0], 4, 3, 1, 1)
        with torch.no_grad():
            self.head.bias[3].fill_(cfg.mask_bias)

    def forward(self, image: torch.Tensor, descriptor: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = image / 127.5 - 1.0
        h = self.inc(x)
        skips = [h]
        for layer in self.down:
            h = layer(h)
            skips.append(h)
        d = descriptor / torch.sqrt((descriptor * descriptor).sum(dim=1, keepdim=True) + 1e-8)
        c = self.cond(d)[:, :, None, None].expand(-1, -1, h.shape[2], h.shape[3])
        h = self.fuse(torch.cat([h, c], dim=1))
        for layer, skip in zip(self.up, reversed(skips[:-1])):
            h = layer(F.interpolate(h, scale_factor=2.0, mode="nearest")) + skip
        out = self.head(self.refine(h))
        z = (torch.tanh(out[:, :3]) + 1.0) * 127.5
        mask = torch.sigmoid(out[:, 3:4])
        cloaked = mask * z + (1.0 - mask) * image
        return cloaked, mask
