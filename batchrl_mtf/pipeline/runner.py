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
import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from batchrl_mtf.core.io import atomic_write_text, dumps_json, output_dir, write_marker
from batchrl_mtf.errors import ConfigError
from batchrl_mtf.pipeline import stages as st
from batchrl_mtf.pipeline.config import PipelineConfig
from batchrl_mtf.pipeline.stage import STAGE_FORMAT, StageRecord, execute, read_record

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
