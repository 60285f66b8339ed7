"""Commands of the predictor stage: fit-predictor, rescore."""

from __future__ import annotations

from pathlib import Path

import click

import batchrl_mtf.predictors as predictors  # its torch-backed names load on first use
from batchrl_mtf.cli._common import echo_json_path, overwrite_option, split_csv_option
from batchrl_mtf.core.config import config_from_mapping, parse_overrides
from batchrl_mtf.core.io import hash_files, output_dir
from batchrl_mtf.logs.schema import read_table
from batchrl_mtf.predictors import PredictorConfig, format_metrics

__all__ = ["COMMANDS", "fit_predictor_command", "rescore_command"]

_MODELS = ("soft-sharing", "shared-bottom", "mmoe", "ple", "esmm")


@click.command("fit-predictor")
@click.argument("logs", type=click.Path(path_type=Path))
@click.option("--model", "model", type=click.Choice(_MODELS), required=True, help="Architecture.")
@click.option(
    "--tasks",
    "tasks",
    multiple=True,
    required=True,
    help="Feedback columns to predict, comma-separated (click,like,watch_time).",
)
@click.option(
    "--out", "out", type=click.Path(path_type=Path), required=True, help="Artefact directory."
)
@click.option(
    "--items",
    "items",
    type=click.Path(path_type=Path),
    default=None,
    help="Item table (Parquet/CSV: item_id + numeric columns) joined as item features.",
)
@click.option(
    "--regression",
    "regression",
    multiple=True,
    help="Tasks trained as regression (default: watch_time), comma-separated.",
)
@click.option("--context", "context", multiple=True, help="Numeric context columns, e.g. position.")
@click.option(
    "--loss-weighting",
    type=click.Choice(("fixed", "uncertainty")),
    default=None,
    help="Task-loss fusion (default fixed, all weights 1).",
)
@click.option("--epochs", "n_epochs", type=int, default=None, help="Passes over the training part.")
@click.option("--seed", type=int, default=None, help="Random seed (default 0).")
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="Any PredictorConfig field, e.g. --set hidden_dims=[32] --set learning_rate=3e-3.",
)
@click.option("--no-progress", is_flag=True, help="Hide the progress bar.")
@overwrite_option
def fit_predictor_command(
    logs: Path,
    model: str,
    tasks: tuple[str, ...],
    out: Path,
    items: Path | None,
    regression: tuple[str, ...],
    context: tuple[str, ...],
    loss_weighting: str | None,
    n_epochs: int | None,
    seed: int | None,
    overrides: tuple[str, ...],
    no_progress: bool,
    overwrite: bool,
) -> None:
    """Train a multi-task predictor on LOGS, report held-out metrics, save it frozen.

    The latest 20% of rows by ts are held out (valid_fraction); per-task AUC, log-loss and
    calibration (mean prediction vs observed rate) on them are printed and saved to
    OUT/metrics.json. OUT holds weights.safetensors (no pickle), config.json, vocab.json and
    meta.json with a content hash.

    \b
    Examples:
      batchrl-mtf fit-predictor logs.parquet --model mmoe --tasks click,like --out runs/pred
      batchrl-mtf fit-predictor logs/ --model esmm --tasks click,like,watch_time \\
          --items items.csv --set n_epochs=5 --out runs/esmm
      batchrl-mtf fit-predictor logs.csv --model ple --tasks click,follow \\
          --loss-weighting uncertainty --out runs/ple
    """

    mapping: dict[str, object] = dict(parse_overrides(overrides))
    mapping["model"] = model
    mapping["tasks"] = list(split_csv_option(tasks))
    if regression:
        mapping["regression_tasks"] = list(split_csv_option(regression))
    if context:
        mapping["context_features"] = list(split_csv_option(context))
    if loss_weighting is not None:
        mapping["loss_weighting"] = loss_weighting
    if n_epochs is not None:
        mapping["n_epochs"] = n_epochs
    if seed is not None:
        mapping["seed"] = seed
    config = config_from_mapping(PredictorConfig, mapping, "fit-predictor")
    inputs = [logs, *([items] if items is not None else [])]
    with output_dir(out, "predictor", inputs=inputs, overwrite=overwrite):
        frame = read_table(logs)
        item_table = read_table(items) if items is not None else None
        data_hash = hash_files(inputs)
        trained = predictors.fit_predictor(
            frame, config, item_table, file=str(logs), data_hash=data_hash, progress=not no_progress
        )
        frozen = predictors.save_predictor(trained, out, overwrite=overwrite)
    click.echo(
        f"held-out metrics ({trained.n_valid} latest rows of {trained.n_train + trained.n_valid}):"
    )
    click.echo(format_metrics(list(trained.metrics)))
    click.echo(f"content hash: {frozen.content_hash}")
    echo_json_path("predictor", out)


@click.command("rescore")
@click.argument("logs", type=click.Path(path_type=Path))
@click.option(
    "--predictor",
    "predictor_dir",
    type=click.Path(path_type=Path),
    required=True,
    help="Artefact directory written by fit-predictor.",
)
@click.option(
    "--out", "out", type=click.Path(path_type=Path), required=True, help="Output .parquet or .csv."
)
@click.option(
    "--items",
    "items",
    type=click.Path(path_type=Path),
    default=None,
    help="Item table for item features missing from LOGS (as for fit-predictor).",
)
def rescore_command(logs: Path, predictor_dir: Path, out: Path, items: Path | None) -> None:
    """Rewrite the pred_<task> columns of LOGS with a frozen predictor; write OUT.

    Columns of the predictor's tasks are overwritten (or added); all other columns and the row
    order are kept. Unknown user or item ids use the predictor's unknown-id fallback.

    \b
    Examples:
      batchrl-mtf rescore logs.parquet --predictor runs/pred --out logs_rescored.parquet
      batchrl-mtf rescore logs.csv --predictor runs/esmm --items items.csv --out rescored.csv
    """

    df = predictors.rescore_logs(logs, predictor_dir, out, items)
    click.echo(f"re-scored {len(df)} rows")
    echo_json_path("logs", out)


COMMANDS: list[click.Command] = [fit_predictor_command, rescore_command]
