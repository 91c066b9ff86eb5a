"""dlib's face recognition ResNet as a torch module: 150x150 RGB 0..255 in, 128-d descriptor out.

Built from its layers (already-weighted convolutions and the fc), not from a file: the converter
(``convert.dlib_resnet``) makes them from dlib's ``.dat``, the torch backend
(``backend.torch_backend``) from the exported ``.onnx``; both then get the same module, the one the
ONNX file was exported from, so its ``state_dict`` keys are the ONNX initializer names.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from . import RECOGNIZER_SIZE


def _out_size(size: int, window: int, stride: int, padding: int) -> int:
    """dlib's (and PyTorch's) output size for a conv or pool with floor rounding."""
    return 1 + (size + 2 * padding - window) // stride


class ResidualBlock(nn.Module):
    """dlib's ``ares`` / ``ares_down``: relu(add_prev(block(x), shortcut(x))).

    The shortcut is the identity, or for downsampling blocks a 2x2/2 average pool. dlib's add_prev
    adds tensors of different sizes by zero-extending each to the larger channel count and spatial
    size (at the end: extra channels last, extra rows at the bottom, extra columns at the right);
    the sizes are fixed by the 150x150 input, so the padding amounts are constants here.
    """

    def __init__(self, conv1: nn.Conv2d, conv2: nn.Conv2d, down: bool, in_shape: tuple[int, int]) -> None:
        super().__init__()
        self.conv1, self.conv2, self.down = conv1, conv2, down
        in_c, size = in_shape
        main_size = _out_size(size, 3, conv1.stride[0], conv1.padding[0])
        short_size = _out_size(size, 2, 2, 0) if down else size
        out_c, self.out_size = conv2.out_channels, max(main_size, short_size)
        self.out_channels = max(out_c, in_c)
        # F.pad order for NCHW: (left, right, top, bottom, front, back)
        self.pad_main = (0, self.out_size - main_size, 0, self.out_size - main_size, 0, self.out_channels - out_c)
        self.pad_short = (0, self.out_size - short_size, 0, self.out_size - short_size, 0, self.out_channels - in_c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv2(F.relu(self.conv1(x)))
        s = F.avg_pool2d(x, 2, 2) if self.down else x
        if any(self.pad_main):
            y = F.pad(y, self.pad_main)
        if any(self.pad_short):
            s = F.pad(s, self.pad_short)
        return F.relu(y + s)


class DlibResNet(nn.Module):
    """dlib's face recognition ResNet: 150x150 RGB 0..255 in, 128-d descriptor out.

    ``stem`` is the first convolution (dlib's con + affine folded, and the input normalization of
    dlib's ``input_rgb_image_sized``, (pixel - channel mean) / 256, folded into it as well, so the
    module takes raw pixels and callers cannot get it wrong), followed by relu and a max pool of
    ``pool`` = (window, stride). ``blocks`` are the residual blocks' (conv1, conv2) pairs, input side
    first; a block downsamples when its conv1 has stride 2. ``fc`` maps the global average pool to
    the descriptor. ``size`` is the input side the blocks' zero-extension amounts are computed for.
    """

    def __init__(
        self,
        stem: nn.Conv2d,
        pool: tuple[int, int],
        blocks: Sequence[tuple[nn.Conv2d, nn.Conv2d]],
        fc: nn.Linear,
        size: int = RECOGNIZER_SIZE,
    ) -> None:
        super().__init__()
        self.stem = stem
        self.pool_window, self.pool_stride = int(pool[0]), int(pool[1])
        side = _out_size(_out_size(size, stem.kernel_size[0], stem.stride[0], stem.padding[0]), self.pool_window, self.pool_stride, 0)
        channels, built = stem.out_channels, []
        for conv1, conv2 in blocks:
            block = ResidualBlock(conv1, conv2, conv1.stride[0] == 2, (channels, side))
            built.append(block)
            channels, side = block.out_channels, block.out_size
        self.blocks = nn.Sequential(*built)
        self.fc = fc

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.stem(image))
        x = F.max_pool2d(x, self.pool_window, self.pool_stride)
        x = self.blocks(x)
        x = x.mean(dim=(2, 3))
        return self.fc(x)
