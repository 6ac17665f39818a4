"""Atomic writes: all or nothing, with the permissions a plain write would give."""

from __future__ import annotations

import json
import os
import stat

import pytest

from sparsetopo.fileio import atomic_path, atomic_write_json


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_new_file_gets_the_umask_permissions(tmp_path):
    old = os.umask(0o027)
    try:
        atomic_write_json(tmp_path / "a.json", {"x": 1})
    finally:
        os.umask(old)
    assert _mode(tmp_path / "a.json") == 0o640
    assert json.loads((tmp_path / "a.json").read_text()) == {"x": 1}


def test_replaced_file_keeps_its_permissions(tmp_path):
    target = tmp_path / "b.json"
    target.write_text("{}")
    os.chmod(target, 0o604)
    atomic_write_json(target, [1, 2])
    assert _mode(target) == 0o604 and json.loads(target.read_text()) == [1, 2]


def test_failed_write_leaves_the_old_file_and_no_temp_file(tmp_path):
    target = tmp_path / "c.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("interrupted")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.txt"]
