"""Commands of the train stage: ``batchrl-mtf train``."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import click

from batchrl_mtf.cli._common import overwrite_option, progress_enabled, read_config_table
from batchrl_mtf.core.config import parse_overrides
from batchrl_mtf.training import TrainConfig, config_for_resume, resolve_config, train

__all__ = ["COMMANDS", "train_command"]

ALGOS = ("bcq", "cql", "iql", "td3bc", "awac", "bc")

_DEFAULTS = (
    TrainConfig()
)  # the --help defaults are the config's (these options merge with --config)


@click.command(
    "train",
    epilog="""\b
Examples:
  batchrl-mtf train runs/ds --out runs/td3bc                     # TD3+BC, CPU defaults
  batchrl-mtf train runs/ds --algo iql --n-steps 20000 --seed 1 --out runs/iql
  batchrl-mtf train runs/ds --algo bcq --set preset=paper --device cuda:0 --out runs/bcq-paper
  batchrl-mtf train runs/ds --algo bcq --set bcq.action_flexibility=0.1 --out runs/b
  batchrl-mtf train runs/ds --env envs/short_video.toml --eval-every 2 --out runs/td3bc
  batchrl-mtf train runs/ds --out runs/td3bc --resume --n-steps 20000  # continue to 20k

\b
Settings (TOML via --config, either top-level or under [train]; --set key=value):
  algo, preset, n_steps, n_steps_per_epoch, seed, batch_size, gamma, hidden_units,
  device, split, n_threads, env, eval_every, eval_episodes, checkpoint_every,
  and <algo>.<field> (e.g. bcq.actor_learning_rate) or a bare field of the chosen algo.
See docs/training.md.""",
)
@click.argument("dataset_dir", type=click.Path(path_type=Path))
@click.option(
    "--out",
    "out",
    required=True,
    type=click.Path(path_type=Path),
    help="Policy directory to write.",
)
@click.option(
    "--algo", type=click.Choice(ALGOS), default=None, help=f"Algorithm [default: {_DEFAULTS.algo}]."
)
@click.option(
    "--n-steps",
    type=int,
    default=None,
    help=f"Total gradient steps [default: {_DEFAULTS.n_steps}].",
)
@click.option("--seed", type=int, default=None, help=f"Random seed [default: {_DEFAULTS.seed}].")
@click.option(
    "--config",
    "config_file",
    type=click.Path(path_type=Path),
    default=None,
    help="TOML settings file.",
)
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override a setting (repeatable).",
)
@click.option("--env", default=None, help="Simulator spec: report the true return while training.")
@click.option("--eval-every", type=int, default=None, help="Epochs between simulator evaluations.")
@click.option("--device", default=None, help=f"cpu, cuda, cuda:N [default: {_DEFAULTS.device}].")
@click.option(
    "--split",
    type=click.Choice(["train", "all"]),
    default=None,
    help=f"Sessions to train on [default: {_DEFAULTS.split}].",
)
@click.option(
    "--resume", is_flag=True, help="Continue the policy in --out from its last checkpoint."
)
@overwrite_option
@click.option("--progress/--no-progress", default=True, help="Show a progress bar.")
def train_command(
    dataset_dir: Path,
    out: Path,
    algo: str | None,
    n_steps: int | None,
    seed: int | None,
    config_file: Path | None,
    overrides: tuple[str, ...],
    env: str | None,
    eval_every: int | None,
    device: str | None,
    split: str | None,
    resume: bool,
    overwrite: bool,
    progress: bool,
) -> None:
    """Train a fusion policy on DATASET_DIR with batch RL (d3rlpy) and write it to --out.

    The policy picks fusion weights per state, within the dataset's weight bounds. --out gets the
    d3rlpy model (model.json + model.safetensors, no pickle), rng_state.json, config.json, features.json, metrics.csv (one row per epoch: losses,
    TD error, initial state value, action statistics, and with --env the true return) and the
    policy.json manifest. Load it with batchrl_mtf.load_policy(DIR).
    """

    layers: list[tuple[str, Mapping[str, object]]] = []
    if config_file is not None:
        layers.append((f"--config {config_file}", read_config_table(config_file, "train")))
    flags: dict[str, object] = {}
    for key, value in (
        ("algo", algo),
        ("n_steps", n_steps),
        ("seed", seed),
        ("env", env),
        ("eval_every", eval_every),
        ("device", device),
        ("split", split),
    ):
        if value is not None:
            flags[key] = value
    if flags:
        layers.append(("command-line flags", flags))
    if overrides:
        layers.append(("--set", parse_overrides(overrides)))
    config = config_for_resume(out, layers) if resume else resolve_config(layers)

    show = progress and progress_enabled()
    result = train(dataset_dir, out, config, resume=resume, overwrite=overwrite, show_progress=show)
    click.echo(f"policy: {result.path}")
    click.echo(
        f"algo {result.config.algo} ({result.config.preset}), {result.n_steps_done} steps, "
        f"{result.seconds / 60:.2f} min this run"
    )
    if result.metrics:
        last = result.metrics[-1]
        shown = {
            k: v for k, v in last.items() if k in ("td_error", "initial_state_value", "true_return")
        }
        if shown:
            click.echo("last epoch: " + ", ".join(f"{k} {v:.4g}" for k, v in shown.items()))


COMMANDS: list[click.Command] = [train_command]
