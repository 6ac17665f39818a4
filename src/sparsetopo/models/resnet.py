"""ResNet-20 for CIFAR-10 (He et al. 2016, section 4.2): a 3x3 stem, three stages of three basic blocks
(two 3x3 convolutions with batch norm each) at 16, 32 and 64 channels, the first block of the second and
third stages at stride 2 with a zero-padded identity shortcut (option A, no parameters), global average
pooling and a linear classifier: 0.27 M parameters.

Every convolution but the stem is sparse by default (the classifier stays dense, as the paper keeps the
first and last layers of LeNet-5 dense). Widths are the three stages' channel counts.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from sparsetopo.models.lenet import LayerShape, ModelArch


class ResNet20(nn.Module):
    def __init__(self, arch: ModelArch, make: Callable[[LayerShape], nn.Module]) -> None:
        super().__init__()
        self.arch = arch
        layers = {layer.name: layer for layer in arch.layers}
        self.conv1 = make(layers["conv1"])
        self.bn1 = nn.BatchNorm2d(layers["conv1"].fan_out)
        names = [layer.name for layer in arch.layers if layer.name.startswith("s")]
        for name in names:
            setattr(self, name.replace(".", "_"), make(layers[name]))
            setattr(self, "bn_" + name.replace(".", "_"), nn.BatchNorm2d(layers[name].fan_out))
        self.blocks = [(f"s{s}b{b}c1", f"s{s}b{b}c2") for s in (1, 2, 3) for b in (1, 2, 3)]
        self.fc = make(layers["fc"])

    @staticmethod
    def architecture(input_shape: tuple[int, int, int], num_classes: int,
                     widths: tuple[int, ...] = (16, 32, 64)) -> ModelArch:
        c, h, w = input_shape
        if len(widths) != 3:
            raise ValueError(f"resnet20 takes 3 widths (the stages' channels), got {widths}")
        if h < 8 or w < 8:
            raise ValueError(f"resnet20 needs inputs of at least 8x8, got {h}x{w}")
        layers = [LayerShape("conv1", "conv", c, widths[0], (3, 3), padding=1, batch_norm=True)]
        previous = widths[0]
        for s, width in enumerate(widths, start=1):
            for b in (1, 2, 3):
                stride = 2 if s > 1 and b == 1 else 1
                layers.append(LayerShape(f"s{s}b{b}c1", "conv", previous, width, (3, 3), stride=stride, padding=1,
                                         batch_norm=True))
                layers.append(LayerShape(f"s{s}b{b}c2", "conv", width, width, (3, 3), padding=1, batch_norm=True))
                previous = width
        layers.append(LayerShape("fc", "linear", widths[-1], num_classes))
        sparse = tuple(layer.name for layer in layers[1:-1])
        return ModelArch("resnet20", tuple(layers), sparse)

    def _conv_bn(self, name: str, x: torch.Tensor) -> torch.Tensor:
        return getattr(self, "bn_" + name)(getattr(self, name)(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.contiguous(memory_format=torch.channels_last)
        x = torch.relu(self.bn1(self.conv1(x)))
        for c1, c2 in self.blocks:
            out = torch.relu(self._conv_bn(c1, x))
            out = self._conv_bn(c2, out)
            if out.shape != x.shape:  # option A: subsample and zero-pad the channels
                short = x[:, :, ::2, ::2]
                pad = out.shape[1] - short.shape[1]
                short = nn.functional.pad(short, (0, 0, 0, 0, pad // 2, pad - pad // 2))
            else:
                short = x
            x = torch.relu(out + short)
        x = torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1)
        return self.fc(x)
