"""Commands of the end-to-end stage: ``batchrl-mtf demo`` and ``batchrl-mtf run``."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
from tqdm.contrib.logging import logging_redirect_tqdm

from batchrl_mtf.cli._common import progress_enabled
from batchrl_mtf.core.config import parse_overrides
from batchrl_mtf.errors import ConfigError
from batchrl_mtf.pipeline import demo_document, load_pipeline, parse_pipeline, run_pipeline

__all__ = ["COMMANDS", "demo_command", "run_command"]

STAGES_HELP = (
    "Stage to re-run even when its inputs are unchanged (repeatable): simulate, dataset, "
    "train (every algorithm) or train:<algo>, evaluate, truth, export, report, or all."
)


def _progress() -> bool:
    """Progress bars unless ``--quiet``."""
    return progress_enabled()


QUIET_BY_DEFAULT = (
    "batchrl_mtf.data",
    "batchrl_mtf.export",
    "batchrl_mtf.ope",
    "batchrl_mtf.sim",
    "batchrl_mtf.training",
)
"""Loggers of the stages' own libraries: their per-step INFO lines only show with --verbose
(the pipeline's stage lines and progress bars say the same in less)."""


@contextlib.contextmanager
def _stage_logging() -> Iterator[None]:
    """Stage-level messages only (unless --verbose), printed above the progress bars."""
    root = logging.getLogger("batchrl_mtf")
    saved = {name: logging.getLogger(name).level for name in QUIET_BY_DEFAULT}
    if root.getEffectiveLevel() == logging.INFO:
        for name in QUIET_BY_DEFAULT:
            logging.getLogger(name).setLevel(logging.WARNING)
    try:
        with logging_redirect_tqdm(loggers=[root]):
            yield
    finally:
        for name, level in saved.items():
            logging.getLogger(name).setLevel(level)


def _finish(result: Any, started: float) -> None:
    click.echo("")
    click.echo(result.headline.rstrip("\n"))
    click.echo("")
    ran = [r.name for r in result.records if r.status == "ran"]
    skipped = [r.name for r in result.records if r.status != "ran"]
    click.echo(
        f"stages run: {', '.join(ran) or 'none'}"
        + (f"; skipped (unchanged): {', '.join(skipped)}" if skipped else "")
    )
    click.echo(f"report: {result.report_html}  (and {result.report_md.name} next to it)")
    click.echo(f"total: {time.perf_counter() - started:.0f} s")


@click.command(
    "demo",
    epilog="""\b
Examples:
  batchrl-mtf demo                                  # the full demo into runs/demo
  batchrl-mtf demo --out runs/demo2 --sessions 8000 --n-steps 3000
  batchrl-mtf demo --quick --out /tmp/demo          # tiny budget: checks every stage fast
  batchrl-mtf -q demo                               # no progress bars or stage messages

\b
The demo is envs/pipeline_demo.toml built in: simulate 4,000 sessions of the short-video
world with the mixed logging policy, build the dataset, train BCQ and BC, evaluate them and
the production, best-constant and logging policies offline (FQE, CFQE, WDR), roll every
policy out in the simulator for its true value, export a weight table keyed on two features,
and write OUT/report/report.html. Re-running skips unchanged stages. See docs/pipeline.md.""",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("runs/demo"),
    show_default=True,
    help="Run folder.",
)
@click.option("--quick", is_flag=True, help="A tiny budget (seconds, not minutes): for tests.")
@click.option(
    "--sessions",
    type=click.IntRange(min=50),
    default=None,
    help="Simulated logged sessions [default: 4000].",
)
@click.option(
    "--n-steps",
    type=click.IntRange(min=1),
    default=None,
    help="Gradient steps per algorithm [default: 1500].",
)
@click.option(
    "--fqe-steps",
    type=click.IntRange(min=1),
    default=None,
    help="Gradient steps per FQE fit [default: 1000].",
)
@click.option(
    "--truth-sessions",
    type=click.IntRange(min=2),
    default=None,
    help="Simulated sessions per policy for true values [default: 2000].",
)
@click.option("--force", multiple=True, metavar="STAGE", help=STAGES_HELP)
def demo_command(
    out: Path,
    quick: bool,
    sessions: int | None,
    n_steps: int | None,
    fqe_steps: int | None,
    truth_sessions: int | None,
    force: tuple[str, ...],
) -> None:
    """Run the whole story on the built-in simulator and write a report (a few minutes on 2 cores).

    Nothing to prepare: the demo makes its own logs. The report (OUT/report/report.html) holds
    the data summary, training curves, offline estimates next to the true values, the learned
    weights per task and per user segment, the exported weight table and a verdict.
    """

    started = time.perf_counter()
    doc = demo_document(quick, sessions, n_steps, fqe_steps, truth_sessions)
    config = parse_pipeline(doc, "demo", Path.cwd())
    label = "batchrl-mtf demo" + (" --quick" if quick else "")
    with _stage_logging():
        result = run_pipeline(config, out, force, progress=_progress(), label=label)
    _finish(result, started)


@click.command(
    "run",
    epilog="""\b
Examples:
  batchrl-mtf run envs/pipeline_demo.toml --out runs/demo
  batchrl-mtf run logs/pipeline_sample.toml --out runs/sample
  batchrl-mtf run logs/pipeline_sample.toml --set export.buckets=4   # re-runs export + report only
  batchrl-mtf run my.toml --set train.n_steps=5000 --force evaluate

\b
Sections of PIPELINE.toml (docs/pipeline.md has every key):
  [data]            logs = ["my_logs.parquet"] (schema v1), or a [data.simulate] table;
                    gamma, action_bounds, on_error, session_gap_s, ... (build-dataset options)
  [fusion]          formula, beta: the fusion the logged weights were applied with (recorded
                    in the dataset; required without [data.simulate], else the env's)
  [reward]          file = "reward.toml", or the [reward] table inline
  [features]        FeatureConfig keys (hist_n, feedback, ...)
  [train]           algos = ["bcq", "bc"], n_steps, seed, ... and [train.<algo>] tables
  [evaluate]        policies = ["behavior", "production", "best-constant"], estimators, ...
  [export]          policy, keys, buckets, min_support, max_delta, ... (formula, beta: a table
                    for another fusion than the dataset's)
  [truth]           env, sessions, seed: roll every policy out in a simulator (optional)
Relative paths are resolved against the file's folder. A re-run skips every stage whose
inputs (its section, the upstream outputs' hashes) are unchanged.""",
)
@click.argument("pipeline", type=click.Path(path_type=Path))
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Run folder [default: runs/<PIPELINE file name without .toml>].",
)
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="SECTION.KEY=VALUE",
    help="Override a setting of the file (repeatable).",
)
@click.option("--force", multiple=True, metavar="STAGE", help=STAGES_HELP)
def run_command(
    pipeline: Path, out: Path | None, overrides: tuple[str, ...], force: tuple[str, ...]
) -> None:
    """Run the pipeline described by PIPELINE (a TOML file), stage by stage, and write a report.

    Stages: [simulate] → dataset → train (each algorithm) → evaluate → [truth] → export →
    report. Each stage's outputs and a stage.json (its input hash) go to OUT/<stage>/.
    """

    started = time.perf_counter()
    if pipeline.suffix != ".toml":
        raise ConfigError(f"{pipeline}: expected a pipeline .toml file")
    config = load_pipeline(pipeline, parse_overrides(overrides))
    target = out if out is not None else Path("runs") / pipeline.stem
    label = f"batchrl-mtf run {pipeline}"
    with _stage_logging():
        result = run_pipeline(config, target, force, progress=_progress(), label=label)
    _finish(result, started)


COMMANDS: list[click.Command] = [demo_command, run_command]
