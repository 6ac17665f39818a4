"""Model factories of a user's own, for the CLI and sweep tests (no tests here)."""

from __future__ import annotations

from torch import nn


def mlp(input_shape: tuple[int, int, int], num_classes: int, hidden: int = 64) -> nn.Module:
    c, h, w = input_shape
    return nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                         nn.Linear(hidden, num_classes))


def not_a_model(input_shape: tuple[int, int, int], num_classes: int) -> int:
    return 3
