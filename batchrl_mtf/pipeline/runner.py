"""Run the pipeline's stages in order, skipping those whose inputs have not changed.

Every stage writes its outputs into its own folder under ``OUT`` and, last, a ``stage.json``
record holding the hash of its inputs: its config section(s) as canonical JSON, the output hashes
of the upstream stages it reads (the logs' hash, the ``dataset_hash``, each policy's model hash,
the OPE report's hash, ...), the hash of any platform spec it reads, and the package version. On
a re-run a stage whose input hash equals the recorded one (and whose outputs still exist) is
skipped; otherwise its record is removed first, so an interrupted stage never looks complete.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from batchrl_mtf._version import __version__
from batchrl_mtf.io import atomic_write_text, dumps_json, hash_bytes, package_versions
from batchrl_mtf.pipeline.config import PipelineConfig

__all__ = [
    "STAGE_FORMAT",
    "PipelineResult",
    "StageRecord",
    "read_record",
    "run_pipeline",
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


@dataclass(frozen=True)
class PipelineResult:
    """The outcome of :func:`run_pipeline`.

    Attributes:
        out: The run folder.
        records: One record per stage, in run order.
        seconds: Wall time of this run.
        report_md: Path of ``report.md``.
        report_html: Path of ``report.html``.
        headline: The summary table and verdict printed at the end (Markdown).
    """

    out: Path
    records: tuple[StageRecord, ...]
    seconds: float
    report_md: Path
    report_html: Path
    headline: str


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
    """

    name: str
    folder: Path
    version: int
    inputs: Callable[[], dict[str, Any]]
    run: Callable[[], tuple[str, dict[str, Any]]]
    outputs: Sequence[str] = ()


def execute(stage: Stage, force: bool) -> StageRecord:
    """Run ``stage`` unless its recorded input hash matches; write its record."""
    inputs = stage.inputs()
    h = input_hash(stage.name, stage.version, inputs)
    old = read_record(stage.folder)
    have = all((stage.folder / f).exists() for f in stage.outputs)
    if old is not None and old.get("input_hash") == h and have and not force:
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


@contextlib.contextmanager
def single_torch_thread() -> Iterator[None]:
    """One torch CPU thread while the pipeline runs (restored afterwards).

    Training (``n_threads = 1``) and OPE (``torch_threads = 1``) already use one thread for these
    small networks; this covers the rest (policy rollouts, tabulation, the report), where torch's
    default of one thread per core was measured 3x slower (BCQ acting on 2,000 states: 1.13 s with
    2 threads, 0.39 s with 1, on the 2-core machine under load).
    """
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def run_pipeline(
    config: PipelineConfig,
    out: str | Path,
    force: Sequence[str] = (),
    progress: bool = True,
    label: str = "",
) -> PipelineResult:
    """Run every stage of ``config`` into ``out`` (re-using unchanged stages) and write the report.

    Args:
        config: The parsed pipeline.
        out: Run folder.
        force: Stage names to re-run even when unchanged (``train`` forces every ``train:*``;
            ``all`` forces everything).
        progress: Show progress bars (stderr).
        label: How the run was started (recorded in the report), e.g. ``batchrl-mtf demo``.

    Raises:
        BatchRLMTFError: Whatever a stage raises for a user mistake (bad logs, bad keys, ...).
    """
    from batchrl_mtf.pipeline import stages as st

    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    ctx = st.Context(config=config, out=root, progress=progress, label=label)
    known = {s.name for s in st.plan(ctx)} | {"train", "all"}
    bad = [f for f in force if f not in known]
    if bad:
        from batchrl_mtf.errors import ConfigError

        raise ConfigError(
            f"--force: unknown stage(s) {bad}; expected one of {', '.join(sorted(known))}"
        )
    atomic_write_text(root / "pipeline.json", dumps_json(config.to_dict()))
    records: list[StageRecord] = []
    stages = st.plan(ctx)
    with single_torch_thread():
        for i, stage in enumerate(stages, 1):
            logger.info("[%d/%d] %s", i, len(stages), stage.name)
            forced = (
                "all" in force
                or stage.name in force
                or ("train" in force and stage.name.startswith("train:"))
            )
            rec = execute(stage, forced)
            ctx.records[stage.name] = rec
            records.append(rec)
    seconds = time.perf_counter() - start
    run_doc = {
        "format": "batchrl-mtf/pipeline-run@1",
        "label": label,
        "source": config.source,
        "seconds": round(seconds, 3),
        "finished": datetime.now(UTC).isoformat(timespec="seconds"),
        "stages": [
            {"stage": r.name, "status": r.status, "seconds": round(r.seconds, 3)} for r in records
        ],
    }
    atomic_write_text(root / "run.json", dumps_json(run_doc))
    report_dir = ctx.folder("report")
    headline = (report_dir / "headline.md").read_text(encoding="utf-8")
    return PipelineResult(
        out=root,
        records=tuple(records),
        seconds=seconds,
        report_md=report_dir / "report.md",
        report_html=report_dir / "report.html",
        headline=headline,
    )
