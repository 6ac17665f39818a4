"""Models of the user's own in the CLI, experiment files and sweeps: ``--model package.module:factory``.

The factory is called as ``factory(input_shape=(C, H, W), num_classes=K, **model_args)`` and returns an
``nn.Module``; ``--topology`` is then applied by :func:`~sparsetopo.models.sparsify.sparsify` to its hidden
Linear and Conv2d layers (all but the first and the last). The factory's import path and its arguments are
part of the run's name.
"""

from __future__ import annotations

from typing import Any

from sparsetopo.desc.factories import load_factory
from sparsetopo.errors import ConfigError


def build_factory_model(name: str, args: Any, input_shape: tuple[int, int, int],
                        num_classes: int) -> Any:
    """The user's ``nn.Module`` (torch is imported only here: parsing the options does not load it)."""
    from torch import nn

    factory = load_factory(name, "--model")
    kwargs = args.kwargs if args is not None else {}
    try:
        model = factory(input_shape=input_shape, num_classes=num_classes, **kwargs)
    except Exception as exc:  # the user's code failed: say so in one line, with its own message
        raise ConfigError(f"--model {name}: the factory raised {type(exc).__name__}: {exc}; it is called as "
                          "factory(input_shape=..., num_classes=..., **model_args)") from None
    if not isinstance(model, nn.Module):
        raise ConfigError(f"--model {name}: the factory returned {type(model).__name__}, not an nn.Module")
    return model


def arch_of(name: str, model: Any) -> Any:
    """The weight layers (a ModelArch) of any model, in module order; the hidden ones (all but the first and
    the last) take a topology by default."""
    from torch import nn

    from sparsetopo.models.lenet import LayerShape, ModelArch
    from sparsetopo.models.sparsify import weight_modules

    layers = []
    for layer_name, m in weight_modules(model):
        if isinstance(m, nn.Linear) or hasattr(m, "in_features"):
            layers.append(LayerShape(layer_name, "linear", m.in_features, m.out_features))
        else:
            ks = tuple(m.kernel_size)
            layers.append(LayerShape(layer_name, "conv", m.in_channels, m.out_channels, (int(ks[0]), int(ks[1]))))
    if not layers:
        raise ConfigError(f"--model {name}: the model has no nn.Linear or nn.Conv2d")
    return ModelArch(name, tuple(layers), tuple(layer.name for layer in layers[1:-1]))
