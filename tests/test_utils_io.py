"""Atomic writes: all-or-nothing, refusal to overwrite, ordinary permissions."""

from __future__ import annotations

import json
import os
import stat

import pytest

from longrecipe.utils.io import atomic_dir, write_json_atomic


def test_write_json_atomic_roundtrip_and_permissions(tmp_path):
    path = write_json_atomic(tmp_path / "a" / "x.json", {"k": 1})
    assert json.loads(path.read_text()) == {"k": 1}
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~mask
    assert [p.name for p in path.parent.iterdir()] == ["x.json"]


def test_atomic_dir_failure_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError), atomic_dir(tmp_path / "out") as tmp:
        (tmp / "half.bin").write_bytes(b"x")
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_atomic_dir_refuses_existing_unless_overwrite(tmp_path):
    with atomic_dir(tmp_path / "out") as tmp:
        (tmp / "v").write_text("1")
    with pytest.raises(FileExistsError, match="overwrite=true"), atomic_dir(tmp_path / "out"):
        pass
    with atomic_dir(tmp_path / "out", overwrite=True) as tmp:
        (tmp / "v").write_text("2")
    assert (tmp_path / "out" / "v").read_text() == "2"
    assert stat.S_IMODE((tmp_path / "out").stat().st_mode) & 0o055 == 0o055 & ~os.umask(os.umask(0))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
