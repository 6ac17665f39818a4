"""Reading checkpoints and weight snapshots as data, never as code (``torch.load(weights_only=True)``),
with one clear error for a damaged file."""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from sparsetopo.errors import UserError


def load_file(path: Path, what: str) -> Any:
    """``torch.load`` of a file this package wrote: tensors, numbers, strings, lists and dicts only (no
    pickled code), on the CPU. A truncated, empty or foreign file is a UserError that names the file and how
    to start again."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise UserError(f"{path}: no such {what}") from None
    except (RuntimeError, EOFError, OSError, ValueError, KeyError, IndexError, TypeError,
            pickle.UnpicklingError, zipfile.BadZipFile) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"{path}: unreadable {what} ({first[:200]}); move it away to start the run again "
                        "from the beginning") from None


def load_tensors(path: Path) -> dict[str, torch.Tensor]:
    """A weight snapshot: a flat dict of tensors."""
    state = load_file(path, "weight snapshot")
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"{path}: not a weight snapshot (a dict of tensors)")
    return state


def load_checkpoint_file(path: Path, keys: tuple[str, ...]) -> dict[str, Any]:
    """A checkpoint: a dict with at least ``keys``."""
    payload = load_file(path, "checkpoint")
    missing = [k for k in keys if not isinstance(payload, dict) or k not in payload]
    if missing:
        raise UserError(f"{path}: not a sparsetopo checkpoint (no {', '.join(missing)}); move it away to start "
                        "the run again from the beginning")
    return payload
