"""The cloak networks: the generator (chip + identity descriptor in, cloaked chip + mask out), the
PatchGAN discriminator, and the frozen recognizer wrapped to expose its intermediate features for
the attractor-repeller loss (next: ``train`` optimizes them, ``export`` writes the generator to ONNX).

Needs torch (the ``train`` extra); nothing on the inference path imports this module.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from . import CROP_SIZE, DESCRIPTOR_SIZE, RECOGNIZER_SIZE


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


class PatchDiscriminator(nn.Module):
    """A small PatchGAN (pix2pix): one realism score per ~30 px patch, trained with the hinge loss.

    Spectral normalization keeps it Lipschitz without batch statistics, which matters at the small
    batches a CPU allows.
    """

    def __init__(self, width: int = 32) -> None:
        super().__init__()
        sn = nn.utils.parametrizations.spectral_norm
        self.net = nn.Sequential(
            sn(nn.Conv2d(3, width, 4, 2, 1)),
            nn.LeakyReLU(0.2, inplace=True),
            sn(nn.Conv2d(width, width * 2, 4, 2, 1)),
            nn.LeakyReLU(0.2, inplace=True),
            sn(nn.Conv2d(width * 2, width * 4, 4, 2, 1)),
            nn.LeakyReLU(0.2, inplace=True),
            sn(nn.Conv2d(width * 4, 1, 3, 1, 1)),
        )

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.net(image / 127.5 - 1.0)


class DetectorFeatures(nn.Module):
    """The engine's face detector (CenterFace, converted from ``models/centerface.onnx`` by the torch
    backend's onnx2torch loader), frozen: its heatmap and landmark maps of a chip.

    Why a second instrument: the recognizer's low/mid features are pooled over the whole chip, so the
    attractor barely notices the eyes turning into a smear, which is exactly where the repeller finds
    identity cheapest. The detector's landmark regression at the face centre measures what the renderer
    and the benchmark need kept (the 5 points, and "still a face"). Needs onnx2torch (installed
    ``--no-deps``, see the Makefile); loaded only when the ``landmarks`` loss weight is above 0.
    """

    def __init__(self, net: nn.Module | None = None) -> None:
        super().__init__()
        if net is None:
            from ..backend.torch_backend import convert_onnx

            net = convert_onnx("centerface")
        self.net = net.eval()
        for p in self.net.parameters():
            p.requires_grad_(False)

    def train(self, mode: bool = True) -> DetectorFeatures:
        """Always in eval mode, like the recognizer: a measuring instrument."""
        return super().train(False)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Heatmap [B,1,S/4,S/4] and landmark maps [B,10,S/4,S/4] (box-relative) of RGB 0..255 chips."""
        heat, _size, _offset, landmarks = self.net(image)
        return heat, landmarks


class RecognitionFeatures(nn.Module):
    """dlib's face recognition ResNet (frozen), returning features at several depths.

    Input: [B,3,S,S] RGB 0..255 at any S (resized to the recognizer's 150 here, differentiably).
    Output: the list of ``ATTRACT`` feature maps (low and mid level: stem, end of the 32-, 64- and
    128-channel stages) and the 128-d descriptor (high level, what identity is judged by). It
    drives the module's own layers (``stem``, ``blocks``, ``fc`` of ``DlibResNet``) instead of
    editing it, so the converter stays the single definition of the network.
    """

    ATTRACT = (2, 6, 9)  # block indices whose outputs are attracted, besides the stem

    def __init__(self, net: nn.Module | None = None) -> None:
        super().__init__()
        if net is None:
            from ..convert.dlib_resnet import SOURCE_FILE, DlibResNet, package_file, read_dlib_net

            net = DlibResNet(read_dlib_net(package_file(SOURCE_FILE)))
        self.net = net.eval()
        for p in self.net.parameters():
            p.requires_grad_(False)

    def train(self, mode: bool = True) -> RecognitionFeatures:
        """Always in eval mode: it is a fixed measuring instrument, not a trained part."""
        return super().train(False)

    def forward(self, image: torch.Tensor, depth: int | None = None) -> tuple[list[torch.Tensor], torch.Tensor | None]:
        """Features, and the descriptor unless ``depth`` stops early after that many blocks."""
        if image.shape[-1] != RECOGNIZER_SIZE:
            image = F.interpolate(image, size=(RECOGNIZER_SIZE, RECOGNIZER_SIZE), mode="bilinear", align_corners=False)
        net = self.net
        x = F.max_pool2d(F.relu(net.stem(image)), net.pool_window, net.pool_stride)
        feats = [x]
        for i, block in enumerate(net.blocks):
            if depth is not None and i >= depth:
                return feats, None
            x = block(x)
            if i in self.ATTRACT:
                feats.append(x)
        return feats, net.fc(x.mean(dim=(2, 3)))
