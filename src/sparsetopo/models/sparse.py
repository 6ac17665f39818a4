"""From a topology spec and a width scale to a model whose layers carry that topology.

The specs are :mod:`sparsetopo.topology.spec`'s typed values (text is parsed there, once). ``connections:K``
widens every sparse layer so that exactly one dimension of each sparse matrix is multiplied by K and gives it
density 1/K (the paper's "fixed connections"); ``neurons:F`` keeps the shapes and gives the sparse layers
density F ("fixed neurons").
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from sparsetopo.errors import ConfigError
from sparsetopo.models.lenet import ModelArch
from sparsetopo.models.registry import DEFAULT_WIDTHS, model_arch
from sparsetopo.topology import Topology, load_topology, radix_net, random_topology
from sparsetopo.topology.radix import radix_fit
from sparsetopo.topology.randomnets import erk_densities, relabel_units
from sparsetopo.topology.spec import Scale, TopologySpec, agreed_density, parse_scale, parse_topology


def scaled_widths(model: str, widths: tuple[int, ...] | None, scale: Scale | None) -> tuple[int, ...]:
    """Hidden widths after ``connections:K`` (LeNet-300-100: first hidden layer xK; LeNet-5: conv2 channels xK;
    ResNet-20, whose sparse convolutions widen on both sides: every stage's channels x sqrt(K), rounded)."""
    base = tuple(widths or DEFAULT_WIDTHS[model])
    if scale is None or scale.kind != "connections":
        return base
    k = scale.factor
    if model == "resnet20":
        return tuple(max(1, round(w * math.sqrt(k))) for w in base)
    if model == "lenet300":
        return (base[0] * k, base[1])
    return (base[0], base[1] * k, base[2])


def fit_chains(shapes: list[tuple[int, int]], density: float | None) -> Topology:
    """Fitted RadiX-Nets (:func:`~sparsetopo.topology.radix.radix_fit`) for layers of ``(in, out)`` units:
    each maximal run of layers that chain (one's outputs are the next one's inputs) is one RadiX-Net, so
    its inputs reach all its outputs; a layer that chains with neither neighbour, or a chain deeper than its
    widths allow a RadiX-Net of (``2^L`` above its narrowest layer), is fitted layer by layer."""
    layers: list[Any] = []
    metas: list[dict] = []
    start = 0
    for i in range(1, len(shapes) + 1):
        if i == len(shapes) or shapes[i][0] != shapes[i - 1][1]:
            sizes = [shapes[start][0]] + [out for _, out in shapes[start:i]]
            try:
                chain = [radix_fit(sizes, density)]
            except ConfigError:  # a chain too deep for its widths (n^L > the smallest layer): layer by layer
                chain = [radix_fit(sizes[j:j + 2], density) for j in range(len(sizes) - 1)]
            for fitted in chain:
                layers += fitted.layers
                metas.append(fitted.meta)
            start = i
    return Topology(layers, meta={"kind": "radix_fit", "density": density, "chains": metas})


def layer_densities(spec: TopologySpec, density: float, weight_shapes: list[tuple[int, ...]]) -> list[float]:
    """The density of each of a random spec's layers: ``density`` for each (``distribution=uniform``) or the
    ERK share of ``density`` over all of them together (``distribution=erk``)."""
    if spec.distribution == "erk":
        return erk_densities(weight_shapes, density)
    return [density] * len(weight_shapes)


@dataclass
class Network:
    """Everything needed to build the model: its architecture and the masks of its sparse layers."""

    arch: ModelArch
    masks: dict[str, Any]  # layer name -> PyTorch-layout mask (scipy sparse out x in, or dense bool array)
    topology: Topology | None  # the topology applied (None for dense)
    module: Any = None  # a user's model (--model package.module:factory), built and sparsified already


def _layer_mask(topo: Topology, i: int, kind: str) -> Any:
    km = topo.kernel_masks[i]
    if km is not None:
        return km
    adjacency = topo.layers[i]
    return sp.csr_array(adjacency.T) if kind == "linear" else adjacency.toarray().T


def _check_shapes(arch: ModelArch, names: list[str], topo: Topology, origin: str) -> None:
    for name, (n_in, n_out) in zip(names, topo.shapes):
        layer = arch.layer(name)
        if (layer.fan_in, layer.fan_out) != (n_in, n_out):
            raise ConfigError(
                f"{origin}: layer {name} of {arch.name} needs a {layer.fan_in}x{layer.fan_out} (in x out) "
                f"adjacency, the topology gives {n_in}x{n_out}"
            )
        km = topo.kernel_masks[names.index(name)]
        if km is not None and tuple(km.shape) != layer.weight_shape:
            raise ConfigError(f"{origin}: layer {name} needs a weight mask of shape {layer.weight_shape}, got {km.shape}")


def resolve_network(
    model: str, input_shape: tuple[int, int, int], num_classes: int, *, topology: str | TopologySpec = "dense",
    scale: str | Scale | None = None, widths: tuple[int, ...] | None = None, seed: int = 0, sample: bool = True,
) -> Network:
    """Work out the architecture and per-layer masks for a topology spec and scale (no torch involved).

    With ``sample=False`` random layers are checked but not drawn (their masks are left out): every
    refusal of a bad combination happens, at no cost, before a run starts."""
    spec = parse_topology(topology)
    sc = parse_scale(scale)
    arch = model_arch(model, input_shape, num_classes, scaled_widths(model, widths, sc))
    sparse_names = list(arch.sparse_by_default)
    density = sc.density if sc is not None else None
    if spec.kind == "dense":
        if density is not None and density != 1.0:
            raise ConfigError(f"--scale {scale} asks for density {density:g}, but --topology dense has density 1; "
                              "use --topology random (or radix:...)")
        return Network(arch, {}, None)
    if spec.kind == "random":
        d = agreed_density(spec, sc)
        if d is None:
            raise ConfigError(f"--topology {topology}: give density=D in the spec or a --scale")
        topo_seed = seed if spec.seed is None else spec.seed
        if not sample:
            return Network(arch, {}, None)
        per_layer = layer_densities(spec, d, [arch.layer(n).weight_shape for n in sparse_names])
        layers = [
            random_topology([arch.layer(n).fan_in, arch.layer(n).fan_out], dl, seed=topo_seed * 1009 + i, mode=spec.mode).layers[0]
            for i, (n, dl) in enumerate(zip(sparse_names, per_layer))
        ]
        meta = {"kind": "random", "density": d, "mode": spec.mode, "seed": topo_seed}
        if spec.distribution != "uniform":
            meta |= {"distribution": spec.distribution, "densities": per_layer}
        topo = Topology(layers, names=sparse_names, meta=meta)
    elif spec.kind == "radix" and spec.fitted:
        d = None if spec.auto and spec.density is None else agreed_density(spec, sc)
        if d is None and not spec.auto:
            raise ConfigError(f"--topology {topology}: give density=D or auto in the spec, or a --scale")
        shapes = [(arch.layer(n).fan_in, arch.layer(n).fan_out) for n in sparse_names]
        topo = fit_chains(shapes, d)
        if spec.permute is not None:
            topo = relabel_units(topo, spec.permute)
        topo = Topology(topo.layers, names=sparse_names, meta=topo.meta)
    elif spec.kind == "radix":
        topo = radix_net([list(s) for s in spec.systems], list(spec.kron) if spec.kron else None, trim_inputs=spec.trim)
        if spec.permute is not None:
            topo = relabel_units(topo, spec.permute)
        if len(topo.layers) != len(sparse_names):
            raise ConfigError(f"--topology {topology} has {len(topo.layers)} layers; {model} has {len(sparse_names)} "
                              f"sparse layers ({', '.join(sparse_names)})")
        topo = Topology(topo.layers, names=sparse_names, meta=topo.meta)
        if density is not None and not all(np.isclose(d, density) for d in topo.density):
            raise ConfigError(f"--topology {topology} has densities {[round(d, 4) for d in topo.density]}, "
                              f"but --scale {scale} implies {density:g}")
    else:
        path = Path(spec.path)
        if not path.exists():
            raise ConfigError(f"--topology {topology}: no such file {path}")
        topo = load_topology(path)
        if topo.names is not None:
            unknown = [n for n in topo.names if n not in arch.names]
            if unknown:
                raise ConfigError(f"{path}: layer(s) {', '.join(unknown)} are not layers of {model} ({', '.join(arch.names)})")
            sparse_names = list(topo.names)
        elif len(topo.layers) != len(sparse_names):
            raise ConfigError(f"{path} has {len(topo.layers)} unnamed layers; {model} has {len(sparse_names)} sparse "
                              f"layers ({', '.join(sparse_names)})")
        else:
            topo = Topology(topo.layers, names=sparse_names, kernel_masks=topo.kernel_masks, meta=topo.meta)
    _check_shapes(arch, sparse_names, topo, f"--topology {topology}")
    masks = {name: _layer_mask(topo, i, arch.layer(name).kind) for i, name in enumerate(sparse_names)}
    return Network(arch, masks, topo)
