"""LeNet-300-100 and the Caffe LeNet-5 of the pruning literature, with named, optionally sparse layers."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from sparsetopo.nn import conv_max_pool2d


@dataclass(frozen=True)
class LayerShape:
    """A weight layer as the topology sees it: ``fan_in`` inputs (channels for conv) to ``fan_out`` outputs."""

    name: str
    kind: str  # "linear" or "conv"
    fan_in: int
    fan_out: int
    kernel: tuple[int, int] = (1, 1)
    stride: int = 1
    padding: int = 0
    batch_norm: bool = False  # followed by batch norm: no bias of its own

    @property
    def weight_shape(self) -> tuple[int, ...]:
        if self.kind == "conv":
            return (self.fan_out, self.fan_in, *self.kernel)
        return (self.fan_out, self.fan_in)

    @property
    def weights(self) -> int:
        return self.fan_in * self.fan_out * self.kernel[0] * self.kernel[1]


@dataclass(frozen=True)
class ModelArch:
    """The weight layers of a model, in order, plus which of them take a topology by default."""

    name: str
    layers: tuple[LayerShape, ...]
    sparse_by_default: tuple[str, ...]

    def layer(self, name: str) -> LayerShape:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(name)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(layer.name for layer in self.layers)


LayerFactory = Callable[[LayerShape, Any], nn.Module]


def dense_or_sparse(shape: LayerShape, mask: Any, **sparse_kwargs: Any) -> nn.Module:
    """A plain ``nn.Linear``/``nn.Conv2d`` when ``mask`` is None, else the sparse layer with that mask."""
    if mask is None:
        if shape.kind == "conv":
            return nn.Conv2d(shape.fan_in, shape.fan_out, shape.kernel, stride=shape.stride, padding=shape.padding,
                             bias=not shape.batch_norm)
        return nn.Linear(shape.fan_in, shape.fan_out)
    from sparsetopo.nn import SparseConv2d, SparseLinear

    if shape.kind == "conv":
        return SparseConv2d(shape.fan_in, shape.fan_out, shape.kernel, mask, stride=shape.stride,
                            padding=shape.padding, bias=not shape.batch_norm, **sparse_kwargs)
    return SparseLinear(shape.fan_in, shape.fan_out, mask, **sparse_kwargs)


class LeNet300(nn.Module):
    """784-300-100-10 fully connected with ReLU (hidden widths are parameters)."""

    def __init__(self, arch: ModelArch, make: Callable[[LayerShape], nn.Module]) -> None:
        super().__init__()
        self.arch = arch
        self.fc1, self.fc2, self.fc3 = (make(layer) for layer in arch.layers)

    @staticmethod
    def architecture(input_shape: tuple[int, int, int], num_classes: int, widths: tuple[int, ...] = (300, 100)) -> ModelArch:
        c, h, w = input_shape
        if len(widths) != 2:
            raise ValueError(f"lenet300 takes 2 hidden widths, got {widths}")
        sizes = (c * h * w, *widths, num_classes)
        layers = tuple(LayerShape(f"fc{i + 1}", "linear", sizes[i], sizes[i + 1]) for i in range(3))
        return ModelArch("lenet300", layers, ("fc1", "fc2"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(x, 1)
        x = torch.relu(self.fc1(x))
        x = torch.relu(self.fc2(x))
        return self.fc3(x)


class LeNet5(nn.Module):
    """Caffe LeNet-5: conv 20@5x5, max-pool 2, conv 50@5x5, max-pool 2, fc 500, fc 10, ReLU after each hidden layer."""

    def __init__(self, arch: ModelArch, make: Callable[[LayerShape], nn.Module]) -> None:
        super().__init__()
        self.arch = arch
        self.conv1, self.conv2, self.fc1, self.fc2 = (make(layer) for layer in arch.layers)
        self.to(memory_format=torch.channels_last)  # 4-D weights (and masks) in the activations' layout

    @staticmethod
    def architecture(
        input_shape: tuple[int, int, int], num_classes: int, widths: tuple[int, ...] = (20, 50, 500)
    ) -> ModelArch:
        c, h, w = input_shape
        if len(widths) != 3:
            raise ValueError(f"lenet5 takes 3 widths (conv1, conv2 channels, fc1 units), got {widths}")
        c1, c2, f1 = widths
        side_h, side_w = ((h - 4) // 2 - 4) // 2, ((w - 4) // 2 - 4) // 2
        if side_h < 1 or side_w < 1:
            raise ValueError(f"lenet5 needs inputs of at least 16x16, got {h}x{w}")
        layers = (
            LayerShape("conv1", "conv", c, c1, (5, 5)),
            LayerShape("conv2", "conv", c1, c2, (5, 5)),
            LayerShape("fc1", "linear", c2 * side_h * side_w, f1),
            LayerShape("fc2", "linear", f1, num_classes),
        )
        return ModelArch("lenet5", layers, ("conv2", "fc1"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Channels-last activations (oneDNN's fast layout on CPU, and cuDNN's on recent GPUs); pooling before
        # the ReLU gives exactly max_pool(relu(x)), values and gradients, on a quarter of the elements.
        x = x.contiguous(memory_format=torch.channels_last)
        x = torch.relu(torch.max_pool2d(self.conv1(x), 2))
        # a wide sparse conv2 pools as it computes: its full-resolution output is never stored
        x = conv_max_pool2d(self.conv2, x, 2, relu=True)
        x = torch.flatten(x, 1)  # in (channel, row, column) order whatever the layout
        x = torch.relu(self.fc1(x))
        return self.fc2(x)
