"""Run the pipeline's stages in order, skipping those whose inputs have not changed.

What a stage hashes, records and skips is :mod:`batchrl_mtf.pipeline.stage`'s; this module plans
the run (:func:`run_pipeline`), executes the stages and writes ``run.json``.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from batchrl_mtf.core.io import atomic_write_text, dumps_json, output_dir, write_marker
from batchrl_mtf.core.threads import limit_threads, usable_cores
from batchrl_mtf.errors import ConfigError
from batchrl_mtf.pipeline import stages as st
from batchrl_mtf.pipeline.config import PipelineConfig
from batchrl_mtf.pipeline.stage import (
    STAGE_FORMAT,
    Stage,
    StageRecord,
    execute,
    is_fresh,
    read_record,
)

__all__ = [
    "STAGE_FORMAT",
    "PipelineResult",
    "StageRecord",
    "read_record",
    "run_pipeline",
]

logger = logging.getLogger("batchrl_mtf.pipeline")


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
        OutputError: ``out`` is not a pipeline run folder of ours (see
            :func:`~batchrl_mtf.core.io.output_dir`).

    ``out`` is the pipeline's stage cache: a run folder of ours is re-used (unchanged stages are
    skipped, a stage whose inputs changed replaces its own folder without ``--overwrite``); any
    other non-empty folder is refused.
    """
    root = Path(out)
    with output_dir(root, "pipeline", resume=True):
        root.mkdir(parents=True, exist_ok=True)
        write_marker(root, "pipeline")
        return _run(config, root, force, progress, label)


def _job_group(stages: Sequence[Stage], first: int) -> list[Stage]:
    """The consecutive stages from ``first`` on that have a ``job`` (e.g. every ``train:*``)."""
    group = []
    for stage in stages[first:]:
        if stage.job is None:
            break
        group.append(stage)
    return group


def _start_jobs(ctx: st.Context, todo: list[Stage], pools: contextlib.ExitStack) -> None:
    """Start ``todo``'s jobs in worker processes (``[train] parallel``; at least two stages to
    run and two workers, else they run in this process one after another)."""
    parallel = ctx.config.train.parallel or usable_cores()
    workers = min(parallel, len(todo))
    if workers < 2:
        return
    logger.info("running %s in %d worker processes", ", ".join(s.name for s in todo), workers)
    pool = pools.enter_context(
        ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
    )
    for stage in todo:
        fn, args = stage.job  # type: ignore[misc]
        ctx.jobs[stage.name] = pool.submit(fn, *args)


def _run(
    config: PipelineConfig, root: Path, force: Sequence[str], progress: bool, label: str
) -> PipelineResult:
    start = time.perf_counter()
    ctx = st.Context(config=config, out=root, progress=progress, label=label)
    known = {s.name for s in st.plan(ctx)} | {"train", "all"}
    bad = [f for f in force if f not in known]
    if bad:
        raise ConfigError(
            f"--force: unknown stage(s) {bad}; expected one of {', '.join(sorted(known))}"
        )
    atomic_write_text(root / "pipeline.json", dumps_json(config.to_dict()))
    records: list[StageRecord] = []
    stages = st.plan(ctx)

    def forced(stage: Stage) -> bool:
        return (
            "all" in force
            or stage.name in force
            or ("train" in force and stage.name.startswith("train:"))
        )

    with limit_threads(1), contextlib.ExitStack() as pools:
        for i, stage in enumerate(stages, 1):
            logger.info("[%d/%d] %s", i, len(stages), stage.name)
            if stage.job is not None and stage.name not in ctx.jobs:
                group = _job_group(stages, i - 1)
                _start_jobs(ctx, [s for s in group if not is_fresh(s, forced(s))], pools)
            rec = execute(stage, forced(stage))
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
