"""The package's architecture (docs/architecture.md): no import cycles, imports at module level.

The module graph is computed from the source with :mod:`ast` (every ``import`` and
``from ... import``, at module level or inside functions; ``if TYPE_CHECKING:`` blocks excluded),
so an import hidden inside a function to dodge a cycle still counts as an edge. The layer order
itself is checked by import-linter (``lint-imports``, contracts in pyproject.toml) in .ci/run.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "batchrl_mtf"
# Heavy optional packages: the only imports allowed inside functions (besides the standard library).
HEAVY = {"torch", "d3rlpy", "gym", "pyspark", "matplotlib", "onnx", "onnxruntime", "structlog"}
# Modules of light packages that import a heavy one (safetensors' torch API imports torch).
HEAVY_MODULES = {"safetensors.torch"}


@dataclass(frozen=True)
class Import:
    source: str  # importing module
    target: str  # imported module (resolved to a module of the package where it is one)
    in_function: bool


def _modules(root: Path) -> dict[str, Path]:
    out = {}
    for path in root.rglob("*.py"):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _imports(root: Path) -> Iterator[Import]:
    modules = _modules(root)

    def owner(name: str) -> str:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name

    for module, path in modules.items():
        is_pkg = path.name == "__init__.py"
        base = module if is_pkg else module.rpartition(".")[0]

        def walk(
            node: ast.AST, in_function: bool, module: str = module, base: str = base
        ) -> Iterator[Import]:
            for child in ast.iter_child_nodes(node):
                if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
                    yield from walk(child, True)
                elif isinstance(child, ast.If) and ast.unparse(child.test).endswith(
                    "TYPE_CHECKING"
                ):
                    continue
                elif isinstance(child, ast.Import):
                    for alias in child.names:
                        yield Import(module, owner(alias.name) or alias.name, in_function)
                elif isinstance(child, ast.ImportFrom):
                    if child.level:
                        parts = base.split(".")
                        prefix = ".".join(parts[: len(parts) - child.level + 1])
                        name = prefix + ("." + child.module if child.module else "")
                    else:
                        name = child.module or ""
                    for alias in child.names:
                        full = f"{name}.{alias.name}"
                        target = full if full in modules else (owner(name) or name)
                        yield Import(module, target, in_function)
                else:
                    yield from walk(child, in_function)

        yield from walk(ast.parse(path.read_text(encoding="utf-8")), False)


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]
    sys.setrecursionlimit(10_000)

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def _internal_graph(imports: list[Import]) -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {}
    for imp in imports:
        if imp.target.startswith("batchrl_mtf") and imp.target != imp.source:
            edges.setdefault(imp.source, set()).add(imp.target)
    return edges


def test_cycle_finder_sees_a_cycle_hidden_in_a_function(tmp_path: Path) -> None:
    pkg = tmp_path / "batchrl_mtf"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from batchrl_mtf.b import g\n\ndef f():\n    return g()\n")
    (pkg / "b.py").write_text("def g():\n    from batchrl_mtf.a import f\n    return f\n")
    imports = list(_imports(pkg))
    assert _cycles(_internal_graph(imports)) == [["batchrl_mtf.a", "batchrl_mtf.b"]]
    assert [i.in_function for i in imports if i.source == "batchrl_mtf.b"] == [True]


def test_no_import_cycles() -> None:
    cycles = _cycles(_internal_graph(list(_imports(PACKAGE))))
    assert not cycles, f"import cycles: {cycles}"


def test_imports_inside_functions_are_heavy_optional_packages_only() -> None:
    imports = list(_imports(PACKAGE))
    internal = [i for i in imports if i.target.startswith("batchrl_mtf")]
    hidden = [i for i in internal if i.in_function]
    assert len(hidden) <= 0.05 * len(internal)
    assert not hidden, "imports of the package inside functions: " + ", ".join(
        f"{i.source} -> {i.target}" for i in hidden
    )
    stdlib = set(sys.stdlib_module_names)
    light = sorted(
        {
            f"{i.source} -> {i.target}"
            for i in imports
            if i.in_function
            and not i.target.startswith("batchrl_mtf")
            and i.target.split(".")[0] not in stdlib | HEAVY
            and i.target not in HEAVY_MODULES
        }
    )
    assert not light, f"imports of light packages inside functions (move them up): {light}"
