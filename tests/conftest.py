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
