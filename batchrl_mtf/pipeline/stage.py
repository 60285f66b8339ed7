"""A pipeline stage and its record: what it hashes, what it writes, and when it is skipped.

Every stage writes its outputs into its own folder under ``OUT`` and, last, a ``stage.json``
record holding the hash of its inputs: its config section(s) as canonical JSON, the output hashes
of the upstream stages it reads (the logs' hash, the ``dataset_hash``, each policy's model hash,
the OPE report's hash, ...), the hash of any platform spec it reads, and the package version. On
a re-run a stage whose input hash equals the recorded one (and whose outputs still exist) is
skipped; otherwise its record is removed first, so an interrupted stage never looks complete.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from batchrl_mtf.core.io import atomic_write_text, dumps_json, hash_bytes, package_versions
from batchrl_mtf.core.version import __version__

__all__ = [
    "RECORD",
    "STAGE_FORMAT",
    "Stage",
    "StageRecord",
    "execute",
    "input_hash",
    "is_fresh",
    "read_record",
]

logger = logging.getLogger("batchrl_mtf.pipeline")

STAGE_FORMAT = "batchrl-mtf/stage@1"
RECORD = "stage.json"


@dataclass(frozen=True)
class StageRecord:
    """What a stage did (this run or an earlier one).

    Attributes:
        name: Stage name (``dataset``, ``train:bcq``, ...).
        folder: Its output folder.
        status: ``"ran"`` or ``"skipped"`` (unchanged inputs) in this run.
        seconds: Wall time when it ran (for a skipped stage: the time it took when it ran).
        input_hash: Hash of its inputs.
        output_hash: Hash of its outputs (what downstream stages key on).
        summary: Stage-specific facts for the report.
    """

    name: str
    folder: Path
    status: str
    seconds: float
    input_hash: str
    output_hash: str
    summary: dict[str, Any] = field(default_factory=dict)


def read_record(folder: Path) -> dict[str, Any] | None:
    """The ``stage.json`` of ``folder``, or ``None`` when absent or unreadable."""
    try:
        doc = json.loads((folder / RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) and doc.get("format") == STAGE_FORMAT else None


def input_hash(name: str, version: int, inputs: dict[str, Any]) -> str:
    """Hash of a stage's inputs (canonical JSON)."""
    doc = {"stage": name, "stage_version": version, "package": __version__, "inputs": inputs}
    return hash_bytes(dumps_json(doc).encode("utf-8"))


@dataclass
class Stage:
    """One step of the pipeline (internal).

    Attributes:
        name: Stage name.
        folder: Output folder (holds ``stage.json``).
        version: Bumped when the stage's implementation changes what it writes.
        inputs: Builds the hashed input document (called after upstream stages ran).
        run: Does the work; returns ``(output_hash, summary)``.
        outputs: Files that must exist for a cached result to be used (relative to ``folder``).
        job: ``(function, args)``: a module-level function and picklable arguments that do the
            stage's work in another process, so that consecutive stages with a job run in
            parallel (the runner starts them; ``run`` then collects the result). ``None``: the
            stage runs in the pipeline's process only.
    """

    name: str
    folder: Path
    version: int
    inputs: Callable[[], dict[str, Any]]
    run: Callable[[], tuple[str, dict[str, Any]]]
    outputs: Sequence[str] = ()
    job: tuple[Callable[..., Any], tuple[Any, ...]] | None = None


def _cached(stage: Stage, old: dict[str, Any] | None, h: str) -> bool:
    """Whether ``stage``'s record ``old`` holds input hash ``h`` and its outputs exist."""
    have = all((stage.folder / f).exists() for f in stage.outputs)
    return old is not None and old.get("input_hash") == h and have


def is_fresh(stage: Stage, force: bool) -> bool:
    """Whether ``execute`` would skip ``stage`` (its recorded input hash matches, its outputs
    exist, and it is not forced)."""
    if force:
        return False
    h = input_hash(stage.name, stage.version, stage.inputs())
    return _cached(stage, read_record(stage.folder), h)


def execute(stage: Stage, force: bool) -> StageRecord:
    """Run ``stage`` unless its recorded input hash matches; write its record."""
    inputs = stage.inputs()
    h = input_hash(stage.name, stage.version, inputs)
    old = read_record(stage.folder)
    if old is not None and not force and _cached(stage, old, h):
        logger.info("%s: skipped (unchanged)", stage.name)
        return StageRecord(
            stage.name,
            stage.folder,
            "skipped",
            float(old.get("seconds", 0.0)),
            h,
            str(old.get("output_hash", "")),
            dict(old.get("summary", {})),
        )
    (stage.folder / RECORD).unlink(missing_ok=True)
    why = "forced" if force and old is not None else ("inputs changed" if old else "first run")
    logger.info("%s: running (%s)", stage.name, why)
    start = time.perf_counter()
    output_hash, summary = stage.run()
    seconds = time.perf_counter() - start
    record = {
        "format": STAGE_FORMAT,
        "stage": stage.name,
        "input_hash": h,
        "inputs": inputs,
        "output_hash": output_hash,
        "outputs": list(stage.outputs),
        "seconds": round(seconds, 3),
        "finished": datetime.now(UTC).isoformat(timespec="seconds"),
        "summary": summary,
        "versions": package_versions(),
    }
    stage.folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(stage.folder / RECORD, dumps_json(record))
    logger.info("%s: done in %.1f s", stage.name, seconds)
    return StageRecord(stage.name, stage.folder, "ran", seconds, h, output_hash, summary)
