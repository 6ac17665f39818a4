"""Model factories of a user's own, for the CLI and sweep tests (no tests here)."""

from __future__ import annotations

from torch import nn


def mlp(input_shape: tuple[int, int, int], num_classes: int, hidden: int = 64) -> nn.Module:
    c, h, w = input_shape
    return nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                         nn.Linear(hidden, num_classes))


def not_a_model(input_shape: tuple[int, int, int], num_classes: int) -> int:
    return 3


def blobs():
    """A small dataset of the user's own: 4 Gaussian blobs as 1x4x4 images (fixed seed)."""
    import torch

    g = torch.Generator().manual_seed(0)
    centres = torch.randn(4, 1, 4, 4, generator=g) * 3

    def draw(n: int):
        labels = torch.randint(0, 4, (n,), generator=g)
        return centres[labels] + torch.randn(n, 1, 4, 4, generator=g), labels

    xtr, ytr = draw(400)
    xte, yte = draw(200)
    return xtr, ytr, xte, yte


def cnn(input_shape: tuple[int, int, int], num_classes: int, channels: int = 8) -> nn.Module:
    """Two 3x3 convolutions in a block of their own and a linear head (dotted layer names)."""
    c, h, w = input_shape
    features = nn.Sequential(nn.Conv2d(c, channels, 3, padding=1), nn.ReLU(), nn.Conv2d(channels, channels, 3, padding=1),
                             nn.ReLU())
    return nn.Sequential(features, nn.Flatten(), nn.Linear(channels * h * w, num_classes))
