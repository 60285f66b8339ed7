"""Running one hostile case and judging how it ended (shared by the hostile tests)."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import traceback
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from click.testing import CliRunner

from batchrl_mtf.cli import main
from batchrl_mtf.errors import BatchRLMTFError

LEFTOVER_SUFFIXES = (".tmp", ".lock", ".probe")


class Payload:
    """A pickle whose loading creates ``marker`` (stands for arbitrary code execution)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        return (os.system, (f"touch {self.marker}",))


def malicious_pickle(path: Path, marker: Path) -> None:
    """Write a pickle to ``path`` that creates ``marker`` when loaded."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(Payload(marker)))


def snapshot(paths: Iterable[Path]) -> dict[str, str]:
    """Hash of every file under ``paths`` (files or directories)."""
    out: dict[str, str] = {}
    for p in paths:
        files = sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p]
        for f in files:
            if f.is_file():
                out[str(f)] = hashlib.sha256(f.read_bytes()).hexdigest()
    return out


def leftovers(folder: Path) -> list[str]:
    """Temporary files or directories, locks and probes of ours left in ``folder``."""
    if not folder.is_dir():
        return []
    return sorted(
        p.name
        for p in folder.iterdir()
        if p.name.startswith(".") and (p.name.endswith(LEFTOVER_SUFFIXES) or ".old." in p.name)
    )


@dataclass
class Ended:
    """How a case ended."""

    exit_code: int
    output: str
    traceback: str


def run_cli(args: Sequence[str]) -> Ended:
    """Run ``batchrl-mtf ARGS`` in-process."""
    r = CliRunner().invoke(main, [str(a) for a in args])
    tb = ""
    if r.exception is not None and not isinstance(r.exception, SystemExit):
        tb = "".join(traceback.format_exception(r.exception))
    return Ended(r.exit_code, r.output, tb)


def run_call(fn: Callable[[], object]) -> Ended:
    """Run a library call; our errors become exit 2 with their one line, like the CLI."""
    try:
        fn()
    except BatchRLMTFError as exc:
        return Ended(2, f"error: {exc}\n", "")
    except Exception as exc:  # a traceback in the CLI
        return Ended(1, "", "".join(traceback.format_exception(exc)))
    return Ended(0, "", "")


def judge(
    ended: Ended,
    *,
    expect: str,
    watched: dict[str, str],
    marker: Path | None = None,
    out: Path | None = None,
    out_existed: bool = False,
    folders: Sequence[Path] = (),
) -> str:
    """The case's outcome (``clean``, ``ok``, ``traceback``, ``data_lost``, ``code_executed``,
    ``partial``, ``wrong``)."""
    if marker is not None and marker.exists():
        return "code_executed"
    if ended.traceback or "Traceback" in ended.output:
        return "traceback"
    now = snapshot(Path(p) for p in watched)
    if any(now.get(p) != h for p, h in watched.items()):
        return "data_lost"
    for folder in folders:
        if leftovers(folder):
            return "partial"
    if expect == "clean":
        lines = [ln for ln in ended.output.splitlines() if ln.startswith("error:")]
        if ended.exit_code != 2 or len(lines) != 1:
            return "wrong"
        if out is not None and out.exists() and not out_existed:
            return "partial"
        return "clean"
    return "ok" if ended.exit_code == 0 else "wrong"


def check_accounting(out: Path) -> None:
    """Kept + dropped = read for rows, requests and sessions; kept = what the dataset holds."""
    acc = json.loads((out / "report.json").read_text())["accounting"]
    for level in ("rows", "requests", "sessions"):
        a = acc[level]
        assert a["kept"] + sum(a["dropped"].values()) == a["read"], (level, a)
    trans = pd.read_parquet(out / "transitions.parquet")
    assert acc["requests"]["kept"] == len(trans)
    assert acc["sessions"]["kept"] == trans["session_id"].nunique()
