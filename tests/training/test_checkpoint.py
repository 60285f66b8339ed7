"""batchrl_mtf.training.checkpoint: manifest paths stay inside; no pickle loader in the package."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import batchrl_mtf
from batchrl_mtf.errors import PolicyError
from batchrl_mtf.training.checkpoint import inside

PACKAGE = Path(batchrl_mtf.__file__).parent
UNPICKLERS = re.compile(
    r"pickle\.loads?\(|torch\.load\(|load_learnable\(|allow_pickle\s*=\s*True|weights_only\s*=\s*False"
)


@pytest.mark.parametrize(
    "name", ["../x", "/etc/passwd", "a/../../x", "", 7, None, "ok/\x00"], ids=repr
)
def test_inside_refuses_names_that_leave_the_directory(name: object, tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="manifest entry"):
        inside(tmp_path, name, "model")


def test_inside_accepts_a_plain_file_name(tmp_path: Path) -> None:
    assert (
        inside(tmp_path, "model.safetensors", "model") == (tmp_path / "model.safetensors").resolve()
    )


def test_only_the_explicit_upgrade_can_unpickle() -> None:
    found = [
        f"{p.relative_to(PACKAGE)}:{i}"
        for p in sorted(PACKAGE.rglob("*.py"))
        for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1)
        if UNPICKLERS.search(line) and not line.lstrip().startswith("#")
    ]
    assert [f for f in found if not f.startswith("training/upgrade.py")] == []
    assert any(f.startswith("training/upgrade.py") for f in found)  # the scan sees real calls
