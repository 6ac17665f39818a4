"""The gradual pruning schedule of Zhu & Gupta (2017): a cubic ramp from ``initial`` to ``final`` sparsity."""

from __future__ import annotations

from sparsetopo.errors import ConfigError


def check_schedule(final: float, initial: float, begin: int, end: int, frequency: int) -> None:
    if not 0 <= initial <= final < 1:
        raise ConfigError(f"sparsities must satisfy 0 <= initial <= final < 1, got initial {initial}, final {final}")
    if begin < 0 or begin > end:
        raise ConfigError(f"need 0 <= begin <= end, got begin {begin}, end {end}")
    if frequency < 1:
        raise ConfigError(f"frequency must be >= 1, got {frequency}")


def is_pruning_step(step: int, begin: int = 2000, end: int = 5000, frequency: int = 200) -> bool:
    """Whether the masks are updated after ``step`` steps: ``begin``, ``begin + frequency``, ... up to
    ``end``, and always at ``end`` itself (so the target is reached even when ``end - begin`` is not a
    multiple of ``frequency``)."""
    return begin <= step <= end and ((step - begin) % frequency == 0 or step == end)


def pruning_steps(begin: int = 2000, end: int = 5000, frequency: int = 200) -> list[int]:
    """Every step at which the masks are updated, in order."""
    return [s for s in range(begin, end + 1, frequency)] + ([end] if (end - begin) % frequency else [])


def cubic_sparsity(step: int, final: float, initial: float = 0.0, begin: int = 2000, end: int = 5000,
                   frequency: int = 200) -> float:
    """The target sparsity in force after ``step`` training steps.

    ``0`` before ``begin`` (dense training); at each pruning step ``t`` (see :func:`is_pruning_step`)
    ``s_t = final + (initial - final) * (1 - (t - begin) / (end - begin)) ** 3``, held constant until the next
    pruning step; ``final`` from ``end`` on. With ``begin == end`` the network is pruned to ``final`` at once.
    """
    check_schedule(final, initial, begin, end, frequency)
    if step < begin:
        return 0.0
    if step >= end or begin == end:
        return float(final)
    last = begin + (step - begin) // frequency * frequency
    progress = (last - begin) / (end - begin)
    return float(final + (initial - final) * (1.0 - progress) ** 3)
