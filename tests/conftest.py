from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

# The real datasets: $SPARSETOPO_DATA when set, else the shared folder beside the repository.
os.environ.setdefault("SPARSETOPO_DATA", str(SHARED_DATA))


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep every test's derived files out of the user's cache."""
    monkeypatch.setenv("SPARSETOPO_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.fixture(scope="session")
def data_root() -> Path:
    return Path(os.environ["SPARSETOPO_DATA"])


class Interrupted(Exception):
    """Raised by :func:`killed_after` in place of a kill."""


@pytest.fixture
def killed_after(monkeypatch: pytest.MonkeyPatch):
    """``killed_after(step)``: the next run stops (raises :class:`Interrupted`) right after writing its
    checkpoint at ``step``, as a run killed there would leave its folder; later runs are not touched."""
    import sparsetopo.training.loop as loop

    real = loop.save_checkpoint

    def arm(step: int) -> None:
        def save_then_stop(path, model, optimizer, state, callbacks):
            real(path, model, optimizer, state, callbacks)
            if state.step == step:
                monkeypatch.setattr(loop, "save_checkpoint", real)
                raise Interrupted(f"stopped after the checkpoint at step {step}")

        monkeypatch.setattr(loop, "save_checkpoint", save_then_stop)

    return arm
