"""Sparse topologies for any PyTorch model: ``sparsify`` swaps its ``nn.Linear``/``nn.Conv2d`` modules for
``SparseLinear``/``SparseConv2d`` carrying a topology; ``densify`` gives the plain modules back.

    model, report = sparsify(MyNet(), "random:density=0.1")             # every hidden layer, ER at 1/10
    model, report = sparsify(net, "radix:density=0.1", layers=["fc*"])  # a RadiX-Net fitted to the fc layers
    model, report = sparsify(net, {"features.*": "random:density=0.5", "classifier.0": "radix:auto"})
    model, report = sparsify(net, lambda name, m: "random:density=0.1" if m.out_features > 100 else None)

``topology`` is a spec string or :class:`~sparsetopo.topology.spec.TopologySpec` for every chosen layer, a
:class:`~sparsetopo.topology.Topology` (one layer of it per chosen module, in module order), a mapping from
layer-name patterns (``fnmatch``) to specs (``None``: leave that layer dense), or a callable
``(name, module) -> spec | None``. ``layers`` chooses the modules by name pattern; the default is every
Linear and Conv2d except the first and the last, as the paper does.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn

from sparsetopo.errors import ConfigError
from sparsetopo.models.sparse import fit_chains, layer_densities
from sparsetopo.nn import SparseConv2d, SparseLinear
from sparsetopo.nn.layers import sparse_layers
from sparsetopo.topology import Topology, radix_net, random_topology
from sparsetopo.topology.randomnets import relabel_units
from sparsetopo.topology.spec import TopologySpec, parse_topology

Spec = str | TopologySpec | None
TopologyArg = str | TopologySpec | Topology | Mapping[str, Spec] | Callable[[str, nn.Module], Spec]
INITS = ("sparse", "dense", "keep")
GRANULARITIES = ("channel", "weight")


@dataclass(frozen=True)
class Replaced:
    """One module ``sparsify`` replaced."""

    name: str
    kind: str  # linear | conv
    shape: tuple[int, ...]  # the weight's shape
    nnz: int
    density: float
    backend: str


def weight_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The ``nn.Linear`` and ``nn.Conv2d`` modules of ``model``, in module order (sparse ones included)."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d, SparseLinear,
                                                                        SparseConv2d))]


def select(model: nn.Module, layers: Iterable[str] | None) -> list[tuple[str, nn.Module]]:
    """The plain Linear/Conv2d modules named by the patterns ``layers`` (default: all but the first and the
    last weight layer). A pattern that matches no such module is refused, naming them."""
    found = weight_modules(model)
    plain = [(n, m) for n, m in found if isinstance(m, (nn.Linear, nn.Conv2d))]
    if layers is None:
        inner = {n for n, _ in found[1:-1]}
        return [(n, m) for n, m in plain if n in inner]
    patterns = [layers] if isinstance(layers, str) else list(layers)
    names = [n for n, _ in plain]
    for pattern in patterns:
        if not any(fnmatch.fnmatchcase(n, pattern) for n in names):
            raise ConfigError(f"layers pattern {pattern!r} matches no nn.Linear or nn.Conv2d of the model; "
                              f"they are: {', '.join(names) or 'none'}")
    return [(n, m) for n, m in plain if any(fnmatch.fnmatchcase(n, p) for p in patterns)]


def named(model: nn.Module, names: Iterable[str]) -> list[tuple[str, nn.Module]]:
    """The weight layers called ``names`` (a saved topology's layer names), refusing a name the model lacks."""
    layers = dict(weight_modules(model))
    missing = [n for n in names if n not in layers]
    if missing:
        raise ConfigError(f"the topology names layer(s) {', '.join(missing)}, which the model does not have; its "
                          f"weight layers are {', '.join(layers)}")
    already = [n for n in names if isinstance(layers[n], (SparseLinear, SparseConv2d))]
    if already:
        raise ConfigError(f"layer(s) {', '.join(already)} are sparse already; sparsetopo.densify(model) first")
    return [(n, layers[n]) for n in names]


def _units(module: nn.Module) -> tuple[int, int]:
    """(inputs, outputs) as the topology sees the layer: features, or channels of a convolution."""
    if isinstance(module, nn.Linear):
        return module.in_features, module.out_features
    return module.in_channels, module.out_channels


def check_convs(layers: Iterable[tuple[str, nn.Module]]) -> None:
    """Refuse, before any layer is replaced, a convolution the sparse layers cannot take (grouped, padding
    given as a string, a padding mode other than zeros)."""
    for name, module in layers:
        if isinstance(module, nn.Conv2d):
            _check_conv(name, module)


def _check_conv(name: str, module: nn.Conv2d) -> None:
    if module.groups != 1:
        raise ConfigError(f"layer {name}: grouped convolutions (groups={module.groups}) cannot be sparsified")
    if isinstance(module.padding, str):
        raise ConfigError(f"layer {name}: padding={module.padding!r} is not supported; give the padding in pixels")
    if module.padding_mode != "zeros":
        raise ConfigError(f"layer {name}: padding_mode={module.padding_mode!r} is not supported (only 'zeros')")


def _spec_for(topology: TopologyArg, name: str, module: nn.Module) -> TopologySpec | None:
    if isinstance(topology, Mapping):
        for pattern, spec in topology.items():
            if fnmatch.fnmatchcase(name, pattern):
                return None if spec is None else parse_topology(spec)
        return None
    if callable(topology) and not isinstance(topology, (str, TopologySpec)):
        spec = topology(name, module)
        return None if spec is None else parse_topology(spec)
    return parse_topology(topology)  # type: ignore[arg-type]


def _random_densities(chosen: list[tuple[str, nn.Module, TopologySpec]]) -> dict[str, float]:
    """The density of every layer with a random spec; an ERK spec spreads its density over all the layers
    that share it (by their weight shapes, kernels included)."""
    by_spec: dict[str, list[tuple[str, nn.Module]]] = {}
    for name, module, spec in chosen:
        if spec.kind == "random":
            if spec.density is None:
                raise ConfigError(f"layer {name}: topology {spec} needs a density, e.g. random:density=0.1")
            by_spec.setdefault(str(spec), []).append((name, module))
    out: dict[str, float] = {}
    for text, group in by_spec.items():
        spec = parse_topology(text)
        assert spec.density is not None
        shapes = [tuple(m.weight.shape) for _, m in group]
        out |= dict(zip((n for n, _ in group), layer_densities(spec, spec.density, shapes)))
    return out


def _adjacencies(chosen: list[tuple[str, nn.Module, TopologySpec]], seed: int,
                 densities: dict[str, float]) -> dict[str, sp.csr_array]:
    """The (in x out) unit adjacency of every chosen layer; fitted RadiX-Nets and explicit ones span the
    layers that share one spec, in order."""
    out: dict[str, sp.csr_array] = {}
    by_spec: dict[str, list[tuple[str, nn.Module]]] = {}
    for name, module, spec in chosen:
        by_spec.setdefault(str(spec), []).append((name, module))
    for i, (name, module, spec) in enumerate(chosen):
        if spec.kind == "random":
            n_in, n_out = _units(module)
            s = seed if spec.seed is None else spec.seed
            out[name] = random_topology([n_in, n_out], densities[name], seed=s * 1009 + i, mode=spec.mode).layers[0]
    for text, group in by_spec.items():
        spec = parse_topology(text)
        if spec.kind != "radix":
            continue
        if spec.fitted:
            if spec.density is None and not spec.auto:
                raise ConfigError(f"topology {spec}: give density=D or auto")
            topo = fit_chains([_units(m) for _, m in group], None if spec.auto else spec.density)
        else:
            topo = radix_net([list(s) for s in spec.systems], list(spec.kron) if spec.kron else None,
                             trim_inputs=spec.trim)
            if len(topo.layers) != len(group):
                raise ConfigError(f"topology {spec} has {len(topo.layers)} layers, {len(group)} layers take it "
                                  f"({', '.join(n for n, _ in group)})")
        if spec.permute is not None:
            topo = relabel_units(topo, spec.permute)
        for (name, module), adj in zip(group, topo.layers):
            if tuple(adj.shape) != _units(module):
                raise ConfigError(f"layer {name} has {_units(module)[0]} inputs and {_units(module)[1]} outputs; "
                                  f"topology {spec} gives it {adj.shape[0]}x{adj.shape[1]}")
            out[name] = adj
    return out


def _weight_mask(adj: sp.csr_array | None, module: nn.Module, granularity: str, density: float | None,
                 rng: np.random.Generator) -> Any:
    """The mask in PyTorch's weight layout."""
    if isinstance(module, nn.Linear):
        return sp.csr_array(adj.T)  # type: ignore[union-attr]
    shape = tuple(module.weight.shape)
    if granularity == "weight" and density is not None:  # a random mask over every kernel weight
        return rng.random(shape) < density
    channels = adj.toarray().T  # type: ignore[union-attr]
    return np.ascontiguousarray(np.broadcast_to(channels[:, :, None, None], shape))


def _replacement(name: str, module: nn.Module, mask: Any, init: str, backend: str) -> nn.Module:
    """The sparse layer for ``module`` (checked by the caller with :func:`check_convs`)."""
    bias = module.bias is not None
    layer_init = "sparse" if init == "keep" else init
    if isinstance(module, nn.Linear):
        new: nn.Module = SparseLinear(module.in_features, module.out_features, mask, bias=bias, init=layer_init,
                                      backend=backend)
    else:
        new = SparseConv2d(module.in_channels, module.out_channels, module.kernel_size, mask, stride=module.stride,
                           padding=module.padding, bias=bias, init=layer_init, backend=backend,
                           dilation=module.dilation)
    new = new.to(device=module.weight.device, dtype=module.weight.dtype)
    if init == "keep":
        state = {"weight": module.weight.detach()}
        if bias:
            state["bias"] = module.bias.detach()
        new.load_state_dict(state, strict=False)
    return new


def replace_module(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def sparsify(model: nn.Module, topology: TopologyArg, *, layers: Iterable[str] | None = None,
             backend: str = "auto", init: str = "sparse", granularity: str = "channel",
             seed: int = 0) -> tuple[nn.Module, list[Replaced]]:
    """Replace the chosen layers of ``model`` (in place) by sparse layers with ``topology``; returns the
    model and what was replaced.

    ``init``: ``sparse`` (fresh weights scaled to each unit's actual fan-in), ``dense`` (PyTorch's default
    for the dense layer) or ``keep`` (the module's own weights, masked). ``granularity`` (convolutions):
    ``channel`` keeps whole kernels of connected channel pairs, ``weight`` draws a random spec's connections
    over single kernel weights. ``seed`` draws random topologies (a spec's own ``seed=`` wins).
    """
    if init not in INITS:
        raise ConfigError(f"init {init!r} is not allowed; choose one of: {', '.join(INITS)}")
    if granularity not in GRANULARITIES:
        raise ConfigError(f"granularity {granularity!r} is not allowed; choose one of: {', '.join(GRANULARITIES)}")
    densities: dict[str, float] = {}
    kernel_masks: dict[str, Any] = {}
    if isinstance(topology, Topology):
        candidates = select(model, layers) if topology.names is None or layers is not None else named(model, topology.names)
        if len(topology.layers) != len(candidates):
            raise ConfigError(f"the topology has {len(topology.layers)} layers; {len(candidates)} layers of the "
                              f"model are chosen ({', '.join(n for n, _ in candidates)})")
        adjs = dict(zip((n for n, _ in candidates), topology.layers))
        chosen = [(n, m, TopologySpec("file")) for n, m in candidates]
        kernel_masks = dict(zip((n for n, _ in candidates), topology.kernel_masks))
        for name, module in candidates:
            if tuple(adjs[name].shape) != _units(module):
                raise ConfigError(f"layer {name} has {_units(module)[0]} inputs and {_units(module)[1]} outputs; "
                                  f"the topology's layer is {adjs[name].shape[0]}x{adjs[name].shape[1]}")
    else:
        chosen = []
        for name, module in select(model, layers):
            spec = _spec_for(topology, name, module)
            if spec is None or spec.kind == "dense":
                continue
            if spec.kind == "file":
                raise ConfigError(f"layer {name}: give a file topology as a Topology object "
                                  "(sparsetopo.topology.load_topology(path))")
            chosen.append((name, module, spec))
        densities = _random_densities(chosen)
        adjs = _adjacencies(chosen, seed, densities)
    check_convs((name, module) for name, module, _ in chosen)  # before the first layer is built
    # every replacement is built before the first one goes in: a layer refused half-way leaves the model as
    # it was, not half converted
    rng = np.random.default_rng(seed)
    built: list[tuple[str, nn.Module, nn.Module]] = []
    for name, module, spec in chosen:
        density = densities.get(name) if spec.kind == "random" else None
        km = kernel_masks.get(name)
        mask = km if km is not None else _weight_mask(adjs[name], module, granularity, density, rng)
        built.append((name, module, _replacement(name, module, mask, init, backend)))
    report: list[Replaced] = []
    for name, module, new in built:
        replace_module(model, name, new)
        report.append(Replaced(name, "linear" if isinstance(module, nn.Linear) else "conv",
                               tuple(module.weight.shape), int(new.nnz), float(new.density), str(new.backend)))
    return model, report


def densify(model: nn.Module) -> nn.Module:
    """Replace every ``SparseLinear``/``SparseConv2d`` of ``model`` (in place) by the plain module with the
    same effective weights (zeros at missing connections), for export or comparison."""
    for name, layer in sparse_layers(model):
        bias = layer.bias is not None
        if isinstance(layer, SparseLinear):
            plain: nn.Module = nn.Linear(layer.in_features, layer.out_features, bias=bias)
        else:
            plain = nn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size, stride=layer.stride,
                              padding=layer.padding, dilation=layer.dilation, bias=bias)
        weight = layer.dense_weight()
        plain = plain.to(device=weight.device, dtype=weight.dtype)
        with torch.no_grad():
            plain.weight.copy_(weight)
            if bias:
                plain.bias.copy_(layer.bias)
        if name:
            replace_module(model, name, plain)
        else:
            raise ConfigError("densify needs a model containing sparse layers, not a sparse layer itself")
    return model

