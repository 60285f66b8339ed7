"""The package's public surface: lazy exports resolve, import stays light, no gym noise."""

from __future__ import annotations

import subprocess
import sys

import pytest

import batchrl_mtf


@pytest.mark.parametrize("name", sorted(set(batchrl_mtf.__all__) - {"__version__"}))
def test_every_public_name_resolves(name: str) -> None:
    assert getattr(batchrl_mtf, name) is not None


def test_unknown_attribute() -> None:
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        batchrl_mtf.nope  # noqa: B018


def test_import_is_light_and_d3rlpy_import_is_quiet() -> None:
    code = (
        "import sys, batchrl_mtf, batchrl_mtf.cli; "
        "assert 'torch' not in sys.modules and 'd3rlpy' not in sys.modules, 'heavy import'; "
        "from batchrl_mtf._d3rlpy import d3rlpy"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stderr
    assert "Gym has been unmaintained" not in r.stderr + r.stdout
