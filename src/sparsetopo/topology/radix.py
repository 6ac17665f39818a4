"""Exact RadiX-Nets (Robinett & Kepner): mixed-radix layers, Kronecker-expanded.

For a radix ``n`` at place value ``p`` (the product of the earlier radices of the same system) on
``N'`` neurons, the layer is ``A[x, y] = 1`` iff ``(x - y) mod N'`` is one of ``0, p, ..., (n-1)p``.
Layer ``i`` of the net is ``ones(B_i, B_{i+1}) kron A_i`` (neuron index = block * N' + x).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from sparsetopo.errors import ConfigError
from sparsetopo.topology.core import Topology, _canonical_csr


def _as_int(value: Any, what: str, minimum: int) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise ConfigError(f"{what} must be an integer >= {minimum}, got {value!r}")
    if value < minimum:
        raise ConfigError(f"{what} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def normalize_systems(systems: Any) -> list[list[int]]:
    """Accept one system ``(2, 2, 2)`` or a list of systems ``[(2, 2, 2), (2, 2)]``; validate them."""
    if isinstance(systems, (str, bytes)) or not isinstance(systems, Sequence):
        raise ConfigError(f"systems must be a tuple of radices or a list of such tuples, got {systems!r}")
    if len(systems) == 0:
        raise ConfigError("systems is empty: give at least one mixed-radix system, e.g. (2, 2, 2)")
    if not any(isinstance(s, Sequence) and not isinstance(s, (str, bytes)) for s in systems):
        systems = [systems]
    out: list[list[int]] = []
    for j, system in enumerate(systems):
        if isinstance(system, (str, bytes)) or not isinstance(system, Sequence):
            raise ConfigError(f"system {j} must be a tuple of radices, got {system!r}")
        if len(system) == 0:
            raise ConfigError(f"system {j} is empty: a mixed-radix system needs at least one radix")
        out.append([_as_int(n, f"radix {n!r} in system {j} {tuple(system)!r}", 1) for n in system])
    n_prime = math.prod(out[0])
    for j, system in enumerate(out[:-1]):
        if math.prod(system) != n_prime:
            raise ConfigError(
                f"system {j} {tuple(system)} has product {math.prod(system)}, but every system except the last "
                f"must have the first system's product N' = {n_prime}"
            )
    last = math.prod(out[-1])
    if n_prime % last != 0:
        raise ConfigError(f"the last system {tuple(out[-1])} has product {last}, which does not divide N' = {n_prime}")
    return out


def _radix_block(n_prime: int, radix: int, place: int, b_out: int) -> tuple[np.ndarray, int]:
    """Sorted output columns of each of the ``n_prime`` base rows (shape n_prime x b_out*radix).

    Row ``x`` connects to ``(x - k p) mod N'`` for ``k < radix``. Those with ``k <= x // p`` do not wrap
    and descend with ``k``; the rest wrap above ``x``. So ascending order is ``k = m, m-1, .., 0, n-1, .., m+1``
    with ``m = min(n - 1, x // p)``: a rotation, no sort needed."""
    x = np.arange(n_prime, dtype=np.int64)
    m = np.minimum(radix - 1, x // place)
    ks = (m[:, None] - np.arange(radix, dtype=np.int64)[None, :]) % radix
    base = (x[:, None] - ks * place) % n_prime  # n_prime x radix, ascending
    if b_out == 1:
        return base, radix
    blocks = np.arange(b_out, dtype=np.int64) * n_prime
    cols = (blocks[None, :, None] + base[:, None, :]).reshape(n_prime, b_out * radix)
    return cols, b_out * radix


def radix_net(systems: Any, kron: Sequence[int] | None = None, trim_inputs: int = 0) -> Topology:
    """The RadiX-Net of mixed-radix ``systems`` with Kronecker widths ``kron`` (``B_1 .. B_{M+1}``).

    ``systems``: one system ``(N_1, ..., N_L)`` or a list of them; all but the last share the product
    ``N'``, the last's product divides ``N'``. ``kron`` defaults to all ones. ``trim_inputs=k`` removes
    input neurons ``0..k-1`` of the first layer. Invalid values raise ``ConfigError`` (a ``ValueError``).
    """
    systems_n = normalize_systems(systems)
    n_prime = math.prod(systems_n[0])
    radices: list[tuple[int, int]] = []  # (radix, place value)
    for system in systems_n:
        place = 1
        for n in system:
            radices.append((n, place))
            place *= n
    n_layers = len(radices)
    if kron is None:
        kron_l = [1] * (n_layers + 1)
    else:
        if isinstance(kron, (str, bytes)) or not isinstance(kron, Sequence):
            raise ConfigError(f"kron must be a sequence of {n_layers + 1} integers, got {kron!r}")
        if len(kron) != n_layers + 1:
            raise ConfigError(
                f"kron {tuple(kron)!r} has {len(kron)} entries; {n_layers} layers need {n_layers + 1} (B_1 .. B_{n_layers + 1})"
            )
        kron_l = [_as_int(b, f"kron width {b!r} in {tuple(kron)!r}", 1) for b in kron]
    trim = _as_int(trim_inputs, "trim_inputs", 0)
    n_inputs = kron_l[0] * n_prime
    if trim >= n_inputs:
        raise ConfigError(f"trim_inputs={trim} removes all {n_inputs} input neurons (must be below {n_inputs})")
    layers = []
    for i, (n, place) in enumerate(radices):
        b_in, b_out = kron_l[i], kron_l[i + 1]
        base, per_row = _radix_block(n_prime, n, place, b_out)
        rows = b_in * n_prime - (trim if i == 0 else 0)
        start = trim if i == 0 else 0
        # row r takes base row r mod N'; the first `start` rows are trimmed away
        indices = (np.tile(base, (b_in, 1)) if b_in > 1 else base)[start:].reshape(-1)
        indptr = np.arange(0, rows * per_row + 1, per_row, dtype=np.int64)
        layers.append(_canonical_csr(indices, indptr, (rows, b_out * n_prime)))
    meta = {"kind": "radix_net", "systems": systems_n, "kron": kron_l, "trim_inputs": trim}
    return Topology._from_canonical(layers, meta=meta)


def radix_fit(sizes: Sequence[int], density: float | None = None) -> Topology:
    """A RadiX-Net of exactly the layer sizes ``(s_0, s_1, ..., s_L)`` at about ``density`` per layer.

    The rule. ``L`` layers use the mixed-radix system ``(n, ..., n)`` (``L`` radices, ``N' = n^L``), whose
    layers all have density ``n / N' = n^(1 - L)``; ``n`` is the integer nearest ``density^(-1/(L-1))``
    (``density=None``: the sparsest system that fits), at least 2, lowered until ``N'`` is at most the
    smallest hidden size. The Kronecker widths are ``B_i = ceil(s_i / N')``, and each layer is trimmed to its
    first ``s_i`` rows and ``s_(i+1)`` columns. Every hidden layer keeps at least one full block of ``N'``
    units, so every input still reaches every output (the property RadiX-Nets are built for), and every
    input-output pair by at least one path per kept block combination. One layer (``L = 1``) has no such
    property below density 1: it is the first layer of the two-layer net ``(n, n)``, density ``1/n``.

    ``sizes=(784, 300, 100)`` at density 0.1 gives ``n = 10``, ``B = (8, 3, 1)``: the paper's RadiX-Net with
    its last 16 inputs trimmed instead of its first.
    """
    sizes = [_as_int(s, f"layer size {s!r}", 1) for s in sizes]
    if len(sizes) < 2:
        raise ConfigError(f"radix_fit needs at least two sizes (one layer), got {sizes}")
    if density is not None and not 0 < density <= 1:
        raise ConfigError(f"radix density {density} must be in (0, 1]")
    n_layers = len(sizes) - 1
    if n_layers == 1:
        n = max(2, round(1 / density)) if density is not None else 2
        systems, first_only = [[n, n]], True
    else:
        limit = min(sizes[1:-1])
        if density is None:
            n = max(2, math.floor(limit ** (1 / n_layers) + 1e-9))
        else:
            n = max(2, round(density ** (-1 / (n_layers - 1))))
        while n > 2 and n ** n_layers > limit:
            n -= 1
        if n ** n_layers > limit:
            raise ConfigError(f"no RadiX-Net fits layer sizes {sizes}: the smallest system (2,)*{n_layers} needs "
                              f"hidden layers of at least {2 ** n_layers} units, the smallest has {limit}")
        systems, first_only = [[n] * n_layers], False
    n_prime = math.prod(systems[0])
    kron = [math.ceil(s / n_prime) for s in sizes]
    if first_only:
        kron = [kron[0], kron[1], 1]
    net = radix_net(systems, kron)
    layers = [net.layers[i][: sizes[i], : sizes[i + 1]] for i in range(n_layers)]
    meta = {"kind": "radix_net", "systems": systems, "kron": kron, "fitted_to": sizes,
            "density_asked": density}
    topo = Topology(layers, meta=meta)
    if density is not None:
        _warn_density(sizes, density, topo.density, systems[0])
    return topo


# A fitted layer whose density is off the one asked by more than this factor either way gets a warning.
DENSITY_WARN_FACTOR = 1.25


def _warn_density(sizes: list[int], asked: float, got: list[float], system: list[int]) -> None:
    """Warn when the RadiX-Net that fits ``sizes`` is much denser or sparser than ``asked`` (the rule cannot
    reach every density: ``N' = n^L`` must fit the smallest hidden layer, and ``n`` is an integer)."""
    if all(asked / DENSITY_WARN_FACTOR <= d <= asked * DENSITY_WARN_FACTOR for d in got):
        return
    hidden = min(sizes[1:-1]) if len(sizes) > 2 else None
    why = (f"its system {tuple(system)} needs N' = {math.prod(system)} units in every hidden layer, the "
           f"smallest has {hidden}" if hidden is not None else f"one layer is the first of the net {tuple(system)}")
    warnings.warn(f"radix density {asked:g} on layer sizes {sizes}: the RadiX-Net that fits has layer densities "
                  f"{', '.join(f'{d:.3g}' for d in got)} ({why}); use random:density={asked:g} for that density "
                  "exactly", UserWarning, stacklevel=3)
