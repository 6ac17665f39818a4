"""Topology specs and width scales: the text a user writes, parsed once into typed values.

Grammar of a topology spec (``--topology``)::

    dense
    random[:density=D][,mode=bernoulli|exact|fanin][,seed=N][,distribution=uniform|erk]
    radix:systems=10x10[+10x10...][,kron=8x3x1][,trim=16][,permute=SEED]
    radix:density=D | radix:auto   # a RadiX-Net fitted to the layers' shapes (topology.radix.radix_fit)
    file:PATH                      # a saved Topology (e.g. a pruned run's topology.npz)

A width scale (``--scale``) is ``connections:K`` (widen xK at density 1/K, the paper's "fixed connections")
or ``neurons:F`` (the dense shapes at density F, "fixed neurons"). A random spec's density is that of every
sparse layer (``distribution=uniform``) or of all of them together, spread over the layers by the
Erdős–Rényi-Kernel rule (``distribution=erk``, :func:`~sparsetopo.topology.randomnets.erk_densities`). Numbers may be written as decimals or
fractions (``0.1``, ``1/10``, ``1e-1``); ``str()`` of a parsed value is its one canonical spelling, so every
spelling of the same spec names the same run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from fractions import Fraction

from sparsetopo.errors import ConfigError

KINDS = ("dense", "random", "radix", "file")
RANDOM_MODES = ("bernoulli", "exact", "fanin")
SCALE_KINDS = ("connections", "neurons")
DISTRIBUTIONS = ("uniform", "erk")
_OPTIONS = {"random": ("density", "mode", "seed", "distribution"), "radix": ("systems", "kron", "trim", "permute", "density", "auto")}


def format_number(x: float) -> str:
    """The canonical text of a number: the shortest repr that reads back as the same float, integers bare."""
    return str(int(x)) if float(x).is_integer() else repr(float(x))


def parse_fraction(text: str) -> float:
    """``0.1``, ``1/10`` or ``1e-1`` as a float; ValueError (or ZeroDivisionError) when it is none."""
    value = float(Fraction(text.strip()))
    if not math.isfinite(value):
        raise ValueError(text)
    return value


@dataclass(frozen=True)
class TopologySpec:
    """A parsed ``--topology``; ``path`` may hold a ``{run:ID}`` reference to another run's directory."""

    kind: str = "dense"
    density: float | None = None
    mode: str = "bernoulli"
    seed: int | None = None
    systems: tuple[tuple[int, ...], ...] = ()
    kron: tuple[int, ...] = ()
    trim: int = 0
    permute: int | None = None  # radix: relabel the units at random with this seed (the same graph)
    path: str = ""
    auto: bool = False  # radix: fitted to the layers' shapes at the sparsest density that keeps them connected
    distribution: str = "uniform"  # random: the density per layer ("uniform") or over all layers ("erk")

    @property
    def fitted(self) -> bool:
        """A RadiX-Net chosen for the layers' shapes (``radix:density=D`` or ``radix:auto``)."""
        return self.kind == "radix" and not self.systems

    def __str__(self) -> str:
        if self.kind == "dense":
            return "dense"
        if self.kind == "file":
            return f"file:{self.path}"
        parts: list[str] = []
        if self.kind == "random":
            if self.density is not None:
                parts.append(f"density={format_number(self.density)}")
            if self.mode != "bernoulli":
                parts.append(f"mode={self.mode}")
            if self.seed is not None:
                parts.append(f"seed={self.seed}")
            if self.distribution != "uniform":
                parts.append(f"distribution={self.distribution}")
        elif self.fitted:
            if self.auto:
                parts.append("auto")
            elif self.density is not None:
                parts.append(f"density={format_number(self.density)}")
            if self.permute is not None:
                parts.append(f"permute={self.permute}")
        else:
            parts.append("systems=" + "+".join("x".join(map(str, s)) for s in self.systems))
            if self.kron:
                parts.append("kron=" + "x".join(map(str, self.kron)))
            if self.trim:
                parts.append(f"trim={self.trim}")
            if self.permute is not None:
                parts.append(f"permute={self.permute}")
        return self.kind + (":" + ",".join(parts) if parts else "")

    def ref_path(self) -> str | None:
        """The file a ``file:`` spec reads (it may name another run's directory as ``{run:ID}``)."""
        return self.path if self.kind == "file" else None

    def with_ref_path(self, path: str) -> TopologySpec:
        return replace(self, path=path)


@dataclass(frozen=True)
class Scale:
    """A parsed ``--scale``: ``connections:K`` (``value`` = K, an integer) or ``neurons:F`` (0 < F <= 1)."""

    kind: str
    value: float

    @property
    def density(self) -> float:
        """The density of the scaled sparse layers: 1/K or F."""
        return 1.0 / self.value if self.kind == "connections" else self.value

    @property
    def sparsity(self) -> float:
        return 1.0 - self.density

    @property
    def factor(self) -> int:
        """How many times wider the sparse layers are (K for connections:K, else 1)."""
        return int(self.value) if self.kind == "connections" else 1

    def __str__(self) -> str:
        return f"{self.kind}:{format_number(self.value)}"


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
        value = parse_fraction(text)
    except (ValueError, ZeroDivisionError):
        raise ConfigError(f"topology spec {spec!r}: density {text!r} is not a number (e.g. 0.1 or 1/10)") from None
    if not 0 < value <= 1:
        raise ConfigError(f"topology spec {spec!r}: density {text} must be in (0, 1]")
    return value


def parse_topology(spec: str | TopologySpec) -> TopologySpec:
    """Parse a ``--topology`` spec; a malformed one is refused naming the bad part."""
    if isinstance(spec, TopologySpec):
        return spec
    if not isinstance(spec, str):
        raise ConfigError(f"topology spec {spec!r} must be a string such as dense, random:density=0.1 or file:PATH")
    kind, _, rest = spec.strip().partition(":")
    kind = kind.strip()
    if kind == "dense":
        if rest:
            raise ConfigError(f"topology spec {spec!r}: 'dense' takes no options, got {rest!r}")
        return TopologySpec("dense")
    if kind == "file":
        if not rest.strip():
            raise ConfigError(f"topology spec {spec!r}: 'file:' needs a path, e.g. file:runs/prune/topology.npz")
        return TopologySpec("file", path=rest.strip())
    if kind not in _OPTIONS:
        raise ConfigError(f"topology spec {spec!r}: unknown kind {kind!r}; use dense, random[:density=D,...], "
                          "radix:systems=... or file:PATH")
    options: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in rest.split(","))):
        if kind == "radix" and part == "auto":
            part = "auto=1"
        key, eq, value = part.partition("=")
        key, value = key.strip(), value.strip()
        if not eq or not value:
            raise ConfigError(f"topology spec {spec!r}: {part!r} is not key=value")
        if key in options:
            raise ConfigError(f"topology spec {spec!r}: {key!r} given twice")
        options[key] = value
    allowed = _OPTIONS[kind]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ConfigError(f"topology spec {spec!r}: unknown option(s) {', '.join(unknown)}; {kind} takes "
                          f"{', '.join(allowed)}")
    if kind == "random":
        mode = options.get("mode", "bernoulli")
        if mode not in RANDOM_MODES:
            raise ConfigError(f"topology spec {spec!r}: mode {mode!r} must be one of {', '.join(RANDOM_MODES)}")
        density = _density(options["density"], spec) if "density" in options else None
        seed = _int(options["seed"], "seed", spec) if "seed" in options else None
        if seed is not None and seed < 0:
            raise ConfigError(f"topology spec {spec!r}: seed {seed} must be >= 0")
        distribution = options.get("distribution", "uniform")
        if distribution not in DISTRIBUTIONS:
            raise ConfigError(f"topology spec {spec!r}: distribution {distribution!r} must be one of "
                              f"{', '.join(DISTRIBUTIONS)}")
        return TopologySpec("random", density=density, mode=mode, seed=seed, distribution=distribution)
    permute = _int(options["permute"], "permute", spec) if "permute" in options else None
    if permute is not None and permute < 0:
        raise ConfigError(f"topology spec {spec!r}: permute {permute} must be a seed >= 0")
    if "systems" not in options:
        fit = [k for k in ("density", "auto") if k in options]
        if len(fit) > 1 or set(options) - {"density", "auto", "permute"}:
            raise ConfigError(f"topology spec {spec!r}: radix needs systems=... (e.g. radix:systems=10x10,kron=8x3x1,"
                              "trim=16), or density=D or auto alone to fit a RadiX-Net to the layers' shapes")
        density = _density(options["density"], spec) if "density" in options else None
        return TopologySpec("radix", density=density, permute=permute, auto="auto" in options)
    if "density" in options or "auto" in options:
        raise ConfigError(f"topology spec {spec!r}: give systems=... or density=/auto, not both")
    systems = tuple(_dims(s, "system", spec) for s in options["systems"].split("+"))
    kron = _dims(options["kron"], "kron", spec) if "kron" in options else ()
    trim = _int(options.get("trim", "0"), "trim", spec)
    if trim < 0:
        raise ConfigError(f"topology spec {spec!r}: trim {trim} must be >= 0")
    return TopologySpec("radix", systems=systems, kron=kron, trim=trim, permute=permute)


def agreed_density(spec: TopologySpec, scale: Scale | None) -> float | None:
    """The density a random or fitted RadiX spec gets: its own ``density=``, else the scale's. A spec and a
    scale that name different densities are refused, naming both."""
    if spec.density is not None and scale is not None and not math.isclose(spec.density, scale.density,
                                                                            rel_tol=1e-9, abs_tol=1e-12):
        raise ConfigError(f"--topology {spec} has density {format_number(spec.density)} but --scale {scale} implies "
                          f"{format_number(scale.density)}; drop the density from the spec or make them agree")
    if spec.density is not None:
        return spec.density
    return None if scale is None else scale.density


def parse_scale(text: str | Scale | None) -> Scale | None:
    """Parse a ``--scale``; None or an empty string is no scale."""
    if text is None or isinstance(text, Scale):
        return text
    if not isinstance(text, str):
        raise ConfigError(f"--scale {text!r}: use connections:K (integer K >= 1) or neurons:F (0 < F <= 1)")
    if text.strip() == "":
        return None
    kind, sep, value = text.strip().partition(":")
    if not sep or kind not in SCALE_KINDS:
        raise ConfigError(f"--scale {text!r}: use connections:K (integer K >= 1) or neurons:F (0 < F <= 1)")
    try:
        number = parse_fraction(value)
    except (ValueError, ZeroDivisionError):
        number = math.nan
    if kind == "connections":
        if not (number >= 1 and number.is_integer()):
            raise ConfigError(f"--scale {text!r}: K must be an integer >= 1")
        return Scale(kind, float(number))
    if math.isnan(number):
        raise ConfigError(f"--scale {text!r}: F must be a number in (0, 1], e.g. 0.1 or 1/10")
    if not 0 < number <= 1:
        raise ConfigError(f"--scale {text!r}: F must be in (0, 1]")
    return Scale(kind, number)
