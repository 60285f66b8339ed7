from __future__ import annotations

import json
from pathlib import Path

import pytest

from batchrl_mtf.core.io import (
    MARKER,
    atomic_dir,
    atomic_write_text,
    dumps_json,
    hash_files,
    output_dir,
    read_marker,
    write_marker,
)
from batchrl_mtf.errors import OutputError


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


def test_atomic_dir_marks_what_it_builds(tmp_path: Path) -> None:
    with atomic_dir(tmp_path / "d", kind="dataset") as tmp:
        assert read_marker(tmp) == "dataset"  # first, so a killed run's temp is recognisable
    assert read_marker(tmp_path / "d") == "dataset"
    assert read_marker(tmp_path) is None
    write_marker(tmp_path, "pipeline")
    assert read_marker(tmp_path) == "pipeline"


OUT_REFUSALS = [
    ("a file", lambda t: (t / "f").write_text("x") and t / "f", {}, "existing file"),
    ("an input", lambda t: t / "in", {"inputs": ["in/logs.csv"]}, "is or contains the input"),
    ("a foreign dir", lambda t: (t / "in" / "x").write_text("x") and t / "in", {}, "not written"),
    ("ours, no overwrite", lambda t: _ours(t, "dataset"), {}, "pass --overwrite"),
    ("ours, other kind", lambda t: _ours(t, "policy"), {"overwrite": True}, "holds a batchrl-mtf"),
]


def _ours(t: Path, kind: str) -> Path:
    d = t / "ours"
    with atomic_dir(d, kind=kind) as tmp:
        (tmp / "a").write_text("a")
    return d


@pytest.mark.parametrize(
    ("label", "make", "kw", "message"), OUT_REFUSALS, ids=[r[0] for r in OUT_REFUSALS]
)
def test_output_dir_refuses(
    label: str,
    make: object,
    kw: dict[str, object],
    message: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "logs.csv").write_text("a\n")
    target = make(tmp_path)  # type: ignore[operator]
    with pytest.raises(OutputError, match=message), output_dir(target, "dataset", **kw):  # type: ignore[arg-type]
        pass
    assert not list(tmp_path.glob(".*.lock"))


def test_output_dir_is_reentrant_and_removes_its_lock(tmp_path: Path) -> None:
    out = tmp_path / "ds"
    with output_dir(out, "dataset") as a:
        assert (tmp_path / ".ds.lock").is_file()
        with output_dir(out, "dataset") as b:  # the library call inside the CLI's
            assert a == b
    assert not (tmp_path / ".ds.lock").exists()


def test_output_dir_removes_only_our_stale_temporaries(tmp_path: Path) -> None:
    ours = tmp_path / ".ds.x1.tmp"
    ours.mkdir()
    (ours / MARKER).write_text(json.dumps({"format": "batchrl-mtf/output@1", "kind": "dataset"}))
    theirs = tmp_path / ".ds.x2.tmp"
    theirs.mkdir()
    (theirs / "keep").write_text("k")
    with output_dir(tmp_path / "ds", "dataset"):
        pass
    assert not ours.exists() and (theirs / "keep").is_file()
