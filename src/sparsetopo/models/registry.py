"""The small registry of models by name."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from sparsetopo.errors import ConfigError
from sparsetopo.models.lenet import LeNet5, LeNet300, ModelArch, dense_or_sparse
from sparsetopo.models.resnet import ResNet20

ModelClass = type[LeNet300] | type[LeNet5] | type[ResNet20]
MODELS: dict[str, ModelClass] = {"lenet300": LeNet300, "lenet5": LeNet5, "resnet20": ResNet20}
DEFAULT_WIDTHS = {"lenet300": (300, 100), "lenet5": (20, 50, 500), "resnet20": (16, 32, 64)}


def _model_class(name: str) -> ModelClass:
    if name not in MODELS:
        raise ConfigError(f"unknown model {name!r}; choose one of: {', '.join(MODELS)}")
    return MODELS[name]


def model_arch(
    name: str, input_shape: tuple[int, int, int], num_classes: int, widths: tuple[int, ...] | None = None
) -> ModelArch:
    """The layer shapes of model ``name`` for an input shape, without building it."""
    cls = _model_class(name)
    try:
        return cls.architecture(input_shape, num_classes, tuple(widths or DEFAULT_WIDTHS[name]))
    except ValueError as exc:
        raise ConfigError(f"{name}: {exc}") from None


def build_model(
    name: str,
    input_shape: tuple[int, int, int],
    num_classes: int,
    *,
    widths: tuple[int, ...] | None = None,
    masks: Mapping[str, Any] | None = None,
    **sparse_kwargs: Any,
) -> nn.Module:
    """Build model ``name``; layers named in ``masks`` become sparse (``sparse_kwargs`` go to their constructor)."""
    return instantiate(model_arch(name, input_shape, num_classes, widths), masks, **sparse_kwargs)


def instantiate(arch: ModelArch, masks: Mapping[str, Any] | None = None, **sparse_kwargs: Any) -> nn.Module:
    """Build the model described by ``arch``; layers named in ``masks`` become sparse."""
    name = arch.name
    masks = dict(masks or {})
    unknown = sorted(set(masks) - set(arch.names))
    if unknown:
        raise ConfigError(f"{name} has no layer(s) {', '.join(unknown)}; its layers are {', '.join(arch.names)}")
    return _model_class(name)(arch, lambda layer: dense_or_sparse(layer, masks.get(layer.name), **sparse_kwargs))
