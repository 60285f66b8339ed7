from __future__ import annotations

import json
from pathlib import Path

import pytest

from batchrl_mtf.core.io import atomic_dir, atomic_write_text, dumps_json, hash_files


def test_atomic_dir_keeps_old_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "out"
    target.mkdir()
    (target / "old.txt").write_text("old")

    def build() -> None:
        with atomic_dir(target) as tmp:
            (tmp / "new.txt").write_text("new")
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        build()
    assert sorted(p.name for p in target.iterdir()) == ["old.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no temporary left behind


def test_atomic_dir_replaces_on_success(tmp_path: Path) -> None:
    target = tmp_path / "out"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with atomic_dir(target) as tmp:
        (tmp / "new.txt").write_text("new")
    assert sorted(p.name for p in target.iterdir()) == ["new.txt"]


def test_atomic_write_and_json(tmp_path: Path) -> None:
    p = tmp_path / "a" / "b.json"
    atomic_write_text(p, dumps_json({"b": float("nan"), "a": [1, 2.5]}))
    assert json.loads(p.read_text()) == {"a": [1, 2.5], "b": None}
    assert p.read_text().index('"a"') < p.read_text().index('"b"')


def test_hash_files_content_only(tmp_path: Path) -> None:
    (tmp_path / "x").write_text("same")
    (tmp_path / "y").write_text("same")
    (tmp_path / "z").write_text("diff")
    assert hash_files([tmp_path / "x"]) == hash_files([tmp_path / "y"])
    assert hash_files([tmp_path / "x"]) != hash_files([tmp_path / "z"])


def test_outputs_get_the_usual_permissions(tmp_path: Path) -> None:
    import os
    import stat

    mask = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "f.txt", "x")
        with atomic_dir(tmp_path / "d") as tmp:
            (tmp / "a").write_text("a")
    finally:
        os.umask(mask)
    assert stat.S_IMODE((tmp_path / "f.txt").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "d").stat().st_mode) == 0o755
