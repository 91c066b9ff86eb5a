"""The training-only cloak networks: the PatchGAN discriminator, and the frozen detector and
recognizer wrapped to expose the features the losses compare (next: ``train`` optimizes the
generator against them). The generator itself is ``deid_edit.nets.cloak.CloakGenerator``, shared
with the torch backend.

Needs torch (the ``train`` extra); nothing on the inference path imports this module.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..nets import RECOGNIZER_SIZE


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
    drives the module's own layers (``stem``, ``blocks``, ``fc`` of ``nets.dlib_resnet.DlibResNet``) instead
    of editing it, so that module stays the single definition of the network.
    """

    ATTRACT = (2, 6, 9)  # block indices whose outputs are attracted, besides the stem

    def __init__(self, net: nn.Module | None = None) -> None:
        super().__init__()
        if net is None:
            from ..convert.dlib_resnet import resnet_from_dat

            net = resnet_from_dat()
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
