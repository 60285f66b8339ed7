"""Commands of the data stage: ``validate`` and ``build-dataset``."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any, cast

import click
import pandas as pd

from batchrl_mtf.cli._common import EXIT_USER_ERROR, overwrite_option, parse_float_list
from batchrl_mtf.cli.options import ConfigOption, config_option
from batchrl_mtf.core.fusion import DEFAULT_BETA, DEFAULT_FORMULA, FORMULAS, Fusion
from batchrl_mtf.core.io import atomic_write_text, dumps_json, output_dir
from batchrl_mtf.data.build import build_dataset
from batchrl_mtf.data.clean import account, check_logs
from batchrl_mtf.data.config import DatasetConfig
from batchrl_mtf.data.features import FeatureConfig
from batchrl_mtf.data.formats import write_d3rlpy_file_from_transitions
from batchrl_mtf.data.reward import load_reward
from batchrl_mtf.data.spark import SparkOptions, build_dataset_spark
from batchrl_mtf.errors import ConfigError, SchemaError
from batchrl_mtf.logs.schema import read_logs

__all__ = ["COMMANDS", "build_dataset_command", "validate_command"]


def _parse_time_ms(text: str | None, flag: str) -> int | None:
    if text is None:
        return None
    if text.lstrip("-").isdigit():
        return int(text)
    try:
        ts = pd.Timestamp(text)
    except ValueError:
        raise ConfigError(
            f"{flag}: expected epoch milliseconds or an ISO timestamp, found {text!r}"
        ) from None
    if ts.tzinfo is None:
        ts = ts.tz_localize("UTC")
    return int(ts.value // 1_000_000)


def _dataset_config(
    gamma: float,
    action_bounds: str | None,
    session_gap: float | None,
    window_end: str | None,
    window_margin: float,
    on_error: str,
    hist_n: int,
    feedback: str | None,
    fusion: Fusion | None = None,
) -> object:

    bounds = None
    if action_bounds is not None:
        vals = parse_float_list(action_bounds, "--action-bounds")
        if len(vals) != 2:
            raise ConfigError(f"--action-bounds: expected LO,HI, found {action_bounds!r}")
        bounds = (vals[0], vals[1])
    fb = tuple(c.strip() for c in feedback.split(",") if c.strip()) if feedback else ()
    return DatasetConfig(
        gamma=gamma,
        action_bounds=bounds,
        session_gap_s=session_gap,
        window_end_ms=_parse_time_ms(window_end, "--window-end"),
        window_margin_s=window_margin,
        on_error=on_error,  # type: ignore[arg-type]
        features=FeatureConfig(hist_n=hist_n, feedback=fb),
        fusion=fusion,
    )


@click.command("validate")
@click.argument("logs", nargs=-1, required=True, type=click.Path())
@click.option("--reward", type=click.Path(), help="Reward TOML; also checks the columns it names.")
@click.option(
    "--session-gap", type=float, help="Split users' requests into sessions at gaps > SECONDS."
)
@click.option("--json", "json_out", type=click.Path(), help="Also write the findings as JSON here.")
def validate_command(
    logs: tuple[str, ...], reward: str | None, session_gap: float | None, json_out: str | None
) -> None:
    """Check impression LOGS against log schema v1 and list every problem.

    Each problem names the file, the column, what was expected, what was found and up to five
    example request_ids. Exit code 0 when the logs are clean, 2 otherwise.

    \b
    Examples:
      batchrl-mtf validate logs/sample_short_video.parquet
      batchrl-mtf validate day1.parquet day2.parquet --reward envs/reward_default.toml
      batchrl-mtf validate logs_dir/ --session-gap 1800 --json findings.json
    """

    reward_cfg = load_reward(reward) if reward else None
    frame = read_logs(list(logs))
    checked = check_logs(frame, reward_cfg, DatasetConfig(session_gap_s=session_gap))
    _keep, acc = account(checked.codes, checked.flags.reason)
    if acc.rows_read == 0:
        raise SchemaError(f"{', '.join(map(str, logs))}: no rows; nothing to validate or build")
    cols = checked.columns
    click.echo(
        f"read {acc.rows_read} rows, {acc.requests_read} requests, {acc.sessions_read} sessions"
    )
    click.echo(f"tasks: {', '.join(cols.tasks)}")
    click.echo(f"user features: {', '.join(cols.user_features) or '(none)'}")
    click.echo(f"feedback: {', '.join(cols.feedback) or '(none)'}")
    if cols.unknown:
        click.echo(f"unknown columns (kept out of the dataset): {', '.join(cols.unknown)}")
    problems = checked.flags.problems
    if json_out:
        doc = {
            "ok": not problems,
            "columns": {
                "tasks": list(cols.tasks),
                "user_features": list(cols.user_features),
                "feedback": list(cols.feedback),
                "unknown": list(cols.unknown),
            },
            "problems": [p.__dict__ for p in problems],
            "accounting_if_dropped": acc.to_dict(),
        }
        atomic_write_text(json_out, dumps_json(doc))
    if not problems:
        click.echo("OK: no problems found")
        return
    for p in problems:
        click.echo(f"  {p}", err=True)
    dropped = acc.rows_read - acc.rows_kept
    click.echo(
        f"error: {len(problems)} problem(s); --on-error drop-session would drop "
        f"{dropped} of {acc.rows_read} rows ({json.dumps(acc.rows_dropped)})",
        err=True,
    )
    raise SystemExit(EXIT_USER_ERROR)


@click.command("build-dataset")
@click.argument("logs", nargs=-1, type=click.Path())
@click.option(
    "--reward", type=click.Path(), help="Reward TOML ([reward] table); required with LOGS."
)
@click.option(
    "--out",
    type=click.Path(),
    help="Dataset directory to write (local path or, with Spark, a URI).",
)
@click.option(
    "--engine",
    type=click.Choice(["local", "spark"]),
    default="local",
    show_default=True,
    help="local: in this process; spark: on a Spark cluster (pip install 'batchrl-mtf[spark]').",
)
@click.option(
    "--spark-master", help="Spark master for --engine spark (local[2], spark://HOST:7077, yarn)."
)
@click.option(
    "--spark-partitions",
    default=0,
    type=int,
    help="Partitions of the Spark job and of transitions/ (default: spark.sql.shuffle.partitions).",
)
@click.option(
    "--from-transitions",
    type=click.Path(),
    help="Write DIR/dataset.h5 from DIR's transitions (streaming; after a Spark build).",
)
@config_option("--gamma", config=DatasetConfig, field="gamma", type=float, help="Discount factor.")
@click.option("--action-bounds", help="LO,HI bounds of every weight (default: logged range + 10%).")
@click.option("--session-gap", type=float, help="Make sessions from gaps > SECONDS per user.")
@click.option(
    "--window-end", help="End of the log window (epoch ms or ISO time): later sessions time out."
)
@click.option(
    "--window-margin",
    cls=ConfigOption,
    config=DatasetConfig,
    field="window_margin_s",
    type=float,
    help="Sessions ending within this many seconds of --window-end are timeouts.",
)
@click.option(
    "--on-error",
    type=click.Choice(["fail", "drop-session"]),
    cls=ConfigOption,
    config=DatasetConfig,
    field="on_error",
    help="Fail on any problem, or drop the affected sessions and account for them.",
)
@click.option(
    "--hist-n",
    cls=ConfigOption,
    config=FeatureConfig,
    field="hist_n",
    type=int,
    help="User-history window (impressions).",
)
@click.option("--feedback", help="Feedback columns for session/prev/hist features (default: all).")
@click.option(
    "--formula",
    type=click.Choice(FORMULAS),
    help="Fusion formula the logged w_* weights were applied with, recorded in the dataset for "
    f"train/evaluate/export (default: {DEFAULT_FORMULA}, recorded as source 'default').",
)
@click.option(
    "--beta",
    help="Its logsum offsets: one number, one per task in task order, or task=number,... "
    f"(default: {DEFAULT_BETA:g} for every task).",
)
@overwrite_option
def build_dataset_command(
    logs: tuple[str, ...],
    reward: str,
    out: str,
    gamma: float,
    action_bounds: str | None,
    session_gap: float | None,
    window_end: str | None,
    window_margin: float,
    on_error: str,
    hist_n: int,
    feedback: str | None,
    engine: str,
    spark_master: str | None,
    spark_partitions: int,
    from_transitions: str | None,
    formula: str | None,
    beta: str | None,
    overwrite: bool,
) -> None:
    """Turn impression LOGS into a d3rlpy-ready MDP dataset directory.

    One session is one episode, one request one step; the action is the request's w_* vector and
    the reward is stickiness + activeness from the reward TOML. The directory holds
    transitions.parquet, dataset.h5 (d3rlpy), features.json, reward.toml and report.json, and is
    written atomically. features.json records the fusion (--formula/--beta) the logged weights
    were applied with; later commands (export, best-constant) read it from there.

    \b
    Examples:
      batchrl-mtf build-dataset logs/sample_short_video.parquet \\
          --reward envs/reward_default.toml --out runs/ds --formula logsum --beta 0.1
      batchrl-mtf build-dataset day*.parquet --reward reward.toml --out ds \\
          --on-error drop-session --window-end 2026-11-01T00:00:00 --gamma 0.9
      batchrl-mtf build-dataset hdfs:///logs/day=2026-11-01/ --reward reward.toml \\
          --out hdfs:///datasets/d1 --engine spark --spark-master yarn
      batchrl-mtf build-dataset --from-transitions ds    # dataset.h5 after a Spark build

    With --engine spark the transitions are a transitions/ directory of Parquet parts and
    dataset.h5 is made afterwards, on the training machine, with --from-transitions.
    """

    if from_transitions is not None:
        if logs:
            raise ConfigError("--from-transitions: expected no LOGS (it reads DIR's transitions)")

        path = write_d3rlpy_file_from_transitions(from_transitions)
        click.echo(f"wrote {path}")
        return
    if not logs:
        raise ConfigError("build-dataset: expected LOGS (or --from-transitions DIR)")
    if reward is None or out is None:
        missing = "--reward" if reward is None else "--out"
        raise ConfigError(f"{missing}: required when building from LOGS")
    given = formula is not None or beta is not None
    cfg = _dataset_config(
        gamma,
        action_bounds,
        session_gap,
        window_end,
        window_margin,
        on_error,
        hist_n,
        feedback,
        Fusion.parse(formula, beta) if given else None,
    )
    remote = "://" in out
    claim = (
        contextlib.nullcontext()
        if remote
        else output_dir(out, "dataset", inputs=[*logs, reward], overwrite=overwrite)
    )
    with claim:
        if engine == "spark":
            opts = SparkOptions(master=spark_master, partitions=spark_partitions)
            report = build_dataset_spark(list(logs), reward, out, cast(DatasetConfig, cfg), opts)
        else:
            dcfg = cast(DatasetConfig, cfg)
            report = build_dataset(list(logs), reward, out, dcfg, overwrite=overwrite)
    acc = cast(dict[str, dict[str, Any]], report["accounting"])
    rows, req, ses = acc["rows"], acc["requests"], acc["sessions"]
    click.echo(
        f"wrote {Path(out)}: {ses['kept']} sessions, {req['kept']} requests "
        f"from {rows['read']} rows ({rows['read'] - rows['kept']} dropped: "
        f"{json.dumps(rows['dropped'])})"
    )
    fusion = cast(dict[str, Any], cast(dict[str, Any], report["config"])["fusion"])
    recorded = Fusion.from_dict(fusion, "report.json fusion", ignore=("source",))
    note = " (default: no --formula/--beta given)" if fusion["source"] == "default" else ""
    click.echo(f"fusion recorded: {recorded.describe()}{note}")


COMMANDS: list[click.Command] = [validate_command, build_dataset_command]
