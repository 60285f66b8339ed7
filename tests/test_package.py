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


def test_d3rlpy_loads_on_first_use_and_quietly() -> None:
    code = (
        "import sys, batchrl_mtf, batchrl_mtf.cli; "
        "assert 'd3rlpy' not in sys.modules, 'd3rlpy imported by the package import'; "
        "from batchrl_mtf.core.d3rlpy import load_d3rlpy; load_d3rlpy()"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stderr
    assert "Gym has been unmaintained" not in r.stderr + r.stdout


@pytest.mark.parametrize(
    "modules",
    [
        ("batchrl_mtf",),
        # every command's start (`batchrl-mtf --help` took 2.3 s with torch, 0.8 s without)
        ("batchrl_mtf.cli",),
        # what a Spark Python worker imports to run a build task (docs/scale.md)
        ("batchrl_mtf.data.spark_task", "batchrl_mtf.data.spark"),
    ],
)
def test_package_import_and_spark_workers_do_not_import_torch(modules: tuple[str, ...]) -> None:
    code = (
        f"import importlib, sys; [importlib.import_module(m) for m in {modules!r}]; "
        "heavy = lambda: [m for m in ('torch', 'd3rlpy', 'safetensors.torch') if m in sys.modules]; "
        "assert not heavy(), f'imported {heavy()}'; "
        # the lazily loaded names still load (torch with the first that needs it)
        "from batchrl_mtf import train, evaluate_policies; assert callable(train); "
        "import batchrl_mtf.predictors as p; assert 'torch' not in sys.modules; "
        "p.fit_predictor; assert 'torch' in sys.modules; "
        "from batchrl_mtf.predictors import FrozenPredictor, rescore_logs"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("command", sorted(__import__("batchrl_mtf.cli").cli.main.commands))
def test_every_command_has_help_with_examples(command: str) -> None:
    from click.testing import CliRunner

    from batchrl_mtf.cli import main

    r = CliRunner().invoke(main, [command, "--help"])
    assert r.exit_code == 0, r.output
    assert "example" in r.output.lower(), f"{command} --help shows no example"


def test_docs_import_only_from_the_public_api() -> None:
    """Python in README.md and docs/*.md imports from ``batchrl_mtf`` itself, and the names exist."""
    import ast
    import re
    from pathlib import Path

    import batchrl_mtf

    root = Path(__file__).resolve().parents[1]
    pages = [root / "README.md", *sorted((root / "docs").glob("*.md"))]
    deep, missing = [], []
    for page in pages:
        for block in re.findall(r"```python\n(.*?)```", page.read_text(encoding="utf-8"), re.S):
            for node in ast.walk(ast.parse(block)):
                if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
                    "batchrl_mtf"
                ):
                    if node.module != "batchrl_mtf":
                        deep.append(f"{page.name}: {node.module}")
                    missing += [
                        f"{page.name}: {a.name}"
                        for a in node.names
                        if node.module == "batchrl_mtf" and a.name not in batchrl_mtf.__all__
                    ]
                elif isinstance(node, ast.Import):
                    deep += [
                        f"{page.name}: {a.name}" for a in node.names if "batchrl_mtf." in a.name
                    ]
    assert not deep, f"docs importing from subpackages: {deep}"
    assert not missing, f"names the docs import that batchrl_mtf does not export: {missing}"
