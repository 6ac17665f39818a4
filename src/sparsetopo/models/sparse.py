"""From a topology spec and a width scale to a model whose layers carry that topology.

Spec grammar (``--topology``)::

    dense
    random:density=0.1[,mode=bernoulli|exact|fanin][,seed=N]
    radix:systems=10x10[+10x10...],kron=8x3x1[,trim=16]
    file:PATH                      # a saved Topology (e.g. a pruned run's topology.npz)

Scale (``--scale``): ``connections:K`` widens every sparse layer so that exactly one dimension of each sparse
matrix is multiplied by K and gives it density 1/K (the paper's "fixed connections"); ``neurons:F`` keeps the
shapes and gives the sparse layers density F ("fixed neurons").
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from sparsetopo.errors import ConfigError
from sparsetopo.models.lenet import ModelArch
from sparsetopo.models.registry import DEFAULT_WIDTHS, model_arch
from sparsetopo.topology import Topology, load_topology, radix_net, random_topology

RANDOM_MODES = ("bernoulli", "exact", "fanin")


@dataclass(frozen=True)
class TopologySpec:
    kind: str  # dense | random | radix | file
    density: float | None = None
    mode: str = "bernoulli"
    seed: int | None = None
    systems: tuple[tuple[int, ...], ...] = ()
    kron: tuple[int, ...] = ()
    trim: int = 0
    path: str = ""


@dataclass(frozen=True)
class Scale:
    kind: str  # connections | neurons
    value: float

    @property
    def density(self) -> float:
        return 1.0 / self.value if self.kind == "connections" else self.value


def _int(text: str, what: str, spec: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ConfigError(f"topology spec {spec!r}: {what} {text!r} is not an integer") from None


def _dims(text: str, what: str, spec: str) -> tuple[int, ...]:
    parts = tuple(_int(p, what, spec) for p in text.split("x"))
    if any(p < 1 for p in parts):
        raise ConfigError(f"topology spec {spec!r}: {what} {text!r} must be positive integers joined by 'x'")
    return parts


def _density(text: str, spec: str) -> float:
    try:
        value = float(Fraction(text))
    except (ValueError, ZeroDivisionError):
        raise ConfigError(f"topology spec {spec!r}: density {text!r} is not a number (e.g. 0.1 or 1/10)") from None
    if not 0 < value <= 1:
        raise ConfigError(f"topology spec {spec!r}: density {text} must be in (0, 1]")
    return value


def parse_topology(spec: str) -> TopologySpec:
    """Parse a ``--topology`` spec; a malformed one is refused naming the bad part."""
    kind, _, rest = spec.partition(":")
    kind = kind.strip()
    if kind == "dense":
        if rest:
            raise ConfigError(f"topology spec {spec!r}: 'dense' takes no options, got {rest!r}")
        return TopologySpec("dense")
    if kind == "file":
        if not rest:
            raise ConfigError(f"topology spec {spec!r}: 'file:' needs a path, e.g. file:runs/prune/topology.npz")
        return TopologySpec("file", path=rest)
    if kind not in ("random", "radix"):
        raise ConfigError(f"topology spec {spec!r}: unknown kind {kind!r}; use dense, random:..., radix:... or file:PATH")
    options: dict[str, str] = {}
    for part in filter(None, rest.split(",")):
        key, eq, value = part.partition("=")
        if not eq or not value:
            raise ConfigError(f"topology spec {spec!r}: {part!r} is not key=value")
        if key in options:
            raise ConfigError(f"topology spec {spec!r}: {key!r} given twice")
        options[key.strip()] = value.strip()
    allowed = {"random": ("density", "mode", "seed"), "radix": ("systems", "kron", "trim")}[kind]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ConfigError(f"topology spec {spec!r}: unknown option(s) {', '.join(unknown)}; {kind} takes {', '.join(allowed)}")
    if kind == "random":
        mode = options.get("mode", "bernoulli")
        if mode not in RANDOM_MODES:
            raise ConfigError(f"topology spec {spec!r}: mode {mode!r} must be one of {', '.join(RANDOM_MODES)}")
        density = _density(options["density"], spec) if "density" in options else None
        seed = _int(options["seed"], "seed", spec) if "seed" in options else None
        return TopologySpec("random", density=density, mode=mode, seed=seed)
    if "systems" not in options:
        raise ConfigError(f"topology spec {spec!r}: radix needs systems=..., e.g. radix:systems=10x10,kron=8x3x1,trim=16")
    systems = tuple(_dims(s, "system", spec) for s in options["systems"].split("+"))
    kron = _dims(options["kron"], "kron", spec) if "kron" in options else ()
    trim = _int(options.get("trim", "0"), "trim", spec)
    if trim < 0:
        raise ConfigError(f"topology spec {spec!r}: trim {trim} must be >= 0")
    return TopologySpec("radix", systems=systems, kron=kron, trim=trim)


def parse_scale(text: str | None) -> Scale | None:
    if text is None or text == "":
        return None
    kind, sep, value = text.partition(":")
    if not sep or kind not in ("connections", "neurons"):
        raise ConfigError(f"--scale {text!r}: use connections:K (integer K >= 1) or neurons:F (0 < F <= 1)")
    if kind == "connections":
        try:
            k = int(value)
        except ValueError:
            raise ConfigError(f"--scale {text!r}: K must be an integer >= 1") from None
        if k < 1:
            raise ConfigError(f"--scale {text!r}: K must be an integer >= 1")
        return Scale(kind, float(k))
    try:
        f = float(Fraction(value))
    except (ValueError, ZeroDivisionError):
        raise ConfigError(f"--scale {text!r}: F must be a number in (0, 1], e.g. 0.1 or 1/10") from None
    if not 0 < f <= 1:
        raise ConfigError(f"--scale {text!r}: F must be in (0, 1]")
    return Scale(kind, f)


def scaled_widths(model: str, widths: tuple[int, ...] | None, scale: Scale | None) -> tuple[int, ...]:
    """Hidden widths after ``connections:K`` (LeNet-300-100: first hidden layer xK; LeNet-5: conv2 channels xK)."""
    base = tuple(widths or DEFAULT_WIDTHS[model])
    if scale is None or scale.kind != "connections":
        return base
    k = int(scale.value)
    if model == "lenet300":
        return (base[0] * k, base[1])
    return (base[0], base[1] * k, base[2])


@dataclass
class Network:
    """Everything needed to build the model: its architecture and the masks of its sparse layers."""

    arch: ModelArch
    masks: dict[str, Any]  # layer name -> PyTorch-layout mask (scipy sparse out x in, or dense bool array)
    topology: Topology | None  # the topology applied (None for dense)


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
    model: str, input_shape: tuple[int, int, int], num_classes: int, *, topology: str = "dense",
    scale: str | None = None, widths: tuple[int, ...] | None = None, seed: int = 0,
) -> Network:
    """Work out the architecture and per-layer masks for a topology spec and scale (no torch involved)."""
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
        if spec.density is not None and density is not None and not np.isclose(spec.density, density):
            raise ConfigError(f"--topology {topology} has density {spec.density:g} but --scale {scale} implies "
                              f"{density:g}; drop the density from the spec or make them agree")
        d = spec.density if spec.density is not None else density
        if d is None:
            raise ConfigError(f"--topology {topology}: give density=D in the spec or a --scale")
        topo_seed = seed if spec.seed is None else spec.seed
        layers = [
            random_topology([arch.layer(n).fan_in, arch.layer(n).fan_out], d, seed=topo_seed * 1009 + i, mode=spec.mode).layers[0]
            for i, n in enumerate(sparse_names)
        ]
        topo = Topology(layers, names=sparse_names, meta={"kind": "random", "density": d, "mode": spec.mode, "seed": topo_seed})
    elif spec.kind == "radix":
        topo = radix_net([list(s) for s in spec.systems], list(spec.kron) if spec.kron else None, trim_inputs=spec.trim)
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
