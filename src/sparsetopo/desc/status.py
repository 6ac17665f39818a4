"""The status of a run, one enum for every module that records or reads it."""

from __future__ import annotations

from enum import Enum


class RunStatus(str, Enum):
    """``completed`` and ``diverged`` runs are finished (never run again); ``failed`` and ``blocked`` (a run
    it depends on did not complete) are retried by the next sweep. A ``str`` enum: JSON and SQLite store
    the plain value."""

    COMPLETED = "completed"
    DIVERGED = "diverged"
    FAILED = "failed"
    BLOCKED = "blocked"

    @property
    def finished(self) -> bool:
        return self in FINISHED

    def __str__(self) -> str:
        return self.value


FINISHED = frozenset({RunStatus.COMPLETED, RunStatus.DIVERGED})
