"""Commands of the learned-environment stage: ``make-env``."""

from __future__ import annotations

from pathlib import Path
from typing import cast

import click

from batchrl_mtf.cli._common import echo_json_path, overwrite_option, parse_float_list
from batchrl_mtf.cli.options import ConfigOption, config_option
from batchrl_mtf.core.config import config_from_mapping
from batchrl_mtf.core.fusion import DEFAULT_BETA, DEFAULT_FORMULA, FORMULAS, Fusion
from batchrl_mtf.core.io import output_dir
from batchrl_mtf.errors import ConfigError
from batchrl_mtf.learned import LearnedEnvConfig, make_env

__all__ = ["COMMANDS", "make_env_command"]


@click.command("make-env")
@click.argument("logs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--reward", "reward", type=click.Path(path_type=Path), required=True, help="Reward TOML."
)
@click.option(
    "--out",
    "out",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="Environment spec to write, envs/NAME.toml (artefacts go to envs/NAME/).",
)
@click.option(
    "--predictor",
    "predictor_dir",
    type=click.Path(path_type=Path),
    default=None,
    help="The platform's frozen predictor (the ranker). Default: fit one on the earliest half of the rows.",
)
@click.option(
    "--n-candidates",
    type=click.IntRange(min=1),
    cls=ConfigOption,
    config=LearnedEnvConfig,
    field="n_candidates",
    help="Candidates drawn per request (at most the catalogue size).",
)
@click.option(
    "--candidates",
    type=click.Choice(["uniform", "exposure"]),
    cls=ConfigOption,
    config=LearnedEnvConfig,
    field="candidates",
    help="Candidate sampler over the logged catalogue.",
)
@click.option(
    "--catalogue-size",
    type=click.IntRange(min=1),
    default=None,
    help="Items the platform draws candidates from (default: only the logged items); unlogged "
    "items are taken as never shown, so fewer logged candidates compete per request.",
)
@click.option(
    "--ranker-targets",
    type=click.Choice(["auto", "pred", "labels"]),
    cls=ConfigOption,
    config=LearnedEnvConfig,
    field="ranker_targets",
    help="A fitted ranker copies the logged pred_<task> (pred; auto when every task has one) "
    "or fits the labels.",
)
@click.option(
    "--formula",
    type=click.Choice(FORMULAS),
    default=None,
    help=f"The fusion formula of the platform that ranked the logged candidates "
    f"(default: {DEFAULT_FORMULA}, reported as assumed).",
)
@click.option(
    "--beta",
    default=None,
    help=f"Its logsum offsets: one number, one per task in task order, or task=number,... "
    f"(default: {DEFAULT_BETA:g}, reported as assumed).",
)
@click.option("--production", default=None, help="Production weights (default: median logged).")
@click.option(
    "--action-bounds", default=None, help="LO,HI of every weight (default: logged range + 10%)."
)
@click.option(
    "--model",
    type=click.Choice(["soft-sharing", "shared-bottom", "mmoe", "ple", "esmm"]),
    cls=ConfigOption,
    config=LearnedEnvConfig,
    field="model",
    help="Architecture of the fitted predictors.",
)
@config_option(
    "--epochs", "n_epochs", config=LearnedEnvConfig, field="n_epochs", type=click.IntRange(min=1)
)
@click.option(
    "--leave-recency",
    type=click.FloatRange(min=0.0, max=1.0, max_open=True),
    cls=ConfigOption,
    config=LearnedEnvConfig,
    field="leave_recency_decay",
    help="Decay of the leave model's recent_* inputs (decayed feedback and weight sums); 0 = none.",
)
@click.option(
    "--leave-actions/--no-leave-actions",
    default=True,
    show_default=True,
    help="Give the leave model the request's weights (and their decayed sums).",
)
@click.option(
    "--leave-session-sums/--no-leave-session-sums",
    default=True,
    show_default=True,
    help="Keep the running session_*/prev_* sums among the leave model's inputs.",
)
@click.option(
    "--leave-classes",
    type=click.IntRange(min=1),
    cls=ConfigOption,
    config=LearnedEnvConfig,
    field="leave_classes",
    help="Latent user classes of the leave model (a mixture fitted by EM when > 1).",
)
@click.option(
    "--leave-l2",
    default="auto",
    show_default=True,
    help="L2 penalty of the leave model, or auto (chosen from 1, 10, 100, 1000 by validation "
    "log-loss on the training sessions).",
)
@click.option("--replay-sessions", type=click.IntRange(min=1), default=2000, show_default=True)
@click.option("--session-gap", type=float, default=None, help="As build-dataset --session-gap.")
@click.option(
    "--on-error", type=click.Choice(["fail", "drop-session"]), default="fail", show_default=True
)
@click.option("--seed", type=int, default=0, show_default=True)
@config_option(
    "--n-threads",
    "n_threads",
    config=LearnedEnvConfig,
    field="n_threads",
    type=click.IntRange(min=0),
    help="CPU threads of torch and BLAS while fitting (0 = one per core).",
)
@overwrite_option
def make_env_command(
    logs: tuple[Path, ...],
    reward: Path,
    out: Path,
    predictor_dir: Path | None,
    n_candidates: int,
    candidates: str,
    catalogue_size: int | None,
    ranker_targets: str,
    formula: str | None,
    beta: str | None,
    production: str | None,
    action_bounds: str | None,
    model: str,
    n_epochs: int,
    leave_recency: float,
    leave_actions: bool,
    leave_session_sums: bool,
    leave_classes: int,
    leave_l2: str,
    replay_sessions: int,
    session_gap: float | None,
    on_error: str,
    seed: int,
    n_threads: int,
    overwrite: bool,
) -> None:
    """Learn a Gymnasium environment (a world model) from LOGS and validate it against them.

    Fits the item catalogue, start states (the logs' first requests), a leave model (calibrated
    logistic regression), the ranker (--predictor, or fitted on the earliest half of the rows, by
    default copying the logged pred_<task>) and a
    response model (a second predictor fitted on the latest half, so the ranker is not graded by
    itself). Writes OUT (a spec with world.kind = "learned") and the artefacts in OUT's stem
    directory, then replays the logged weights in the learned env and prints the logs' and the
    env's statistics side by side (also in NAME/validation.json).

    \b
    Examples:
      batchrl-mtf make-env logs/train.parquet --reward envs/reward_default.toml \\
          --out envs/mine.toml
      batchrl-mtf make-env logs/ --reward reward.toml --predictor runs/pred --out envs/mine.toml
      batchrl-mtf rollout --env envs/mine.toml --policy production
    """

    mapping: dict[str, object] = {
        "n_candidates": n_candidates,
        "candidates": candidates,
        "catalogue_size": catalogue_size,
        "ranker_targets": ranker_targets,
        "fusion": None if formula is None and beta is None else Fusion.parse(formula, beta),
        "model": model,
        "n_epochs": n_epochs,
        "leave_recency_decay": leave_recency,
        "leave_action_inputs": leave_actions,
        "leave_session_sums": leave_session_sums,
        "leave_classes": leave_classes,
        "replay_sessions": replay_sessions,
        "session_gap_s": session_gap,
        "on_error": on_error,
        "seed": seed,
        "n_threads": n_threads,
    }
    if leave_l2 != "auto":
        l2 = parse_float_list(leave_l2, "--leave-l2")
        if len(l2) != 1:
            raise ConfigError(f"--leave-l2: expected 'auto' or one number, found {leave_l2!r}")
        mapping["leave_l2"] = l2[0]
    if production is not None:
        mapping["production"] = list(parse_float_list(production, "--production"))
    if action_bounds is not None:
        lo_hi = parse_float_list(action_bounds, "--action-bounds")
        if len(lo_hi) != 2:
            raise ConfigError(f"--action-bounds: expected LO,HI, found {action_bounds!r}")
        mapping["action_bounds"] = list(lo_hi)
    config = config_from_mapping(LearnedEnvConfig, mapping, "make-env")
    inputs = [*logs, reward, *([predictor_dir] if predictor_dir else [])]
    with output_dir(out.with_suffix(""), "env", inputs=inputs, overwrite=overwrite):
        res = make_env(list(logs), reward, out, config, predictor_dir, overwrite=overwrite)
    leave = res.report["leave_model"]
    assert isinstance(leave, dict)
    fusion = cast(dict[str, object], res.report["fusion"])
    used = Fusion.from_dict(fusion, "validation.json fusion", ignore=("source",))
    assumed = " (default: no --formula/--beta given)" if fusion["source"] == "default" else ""
    click.echo(f"fusion of the ranker: {used.describe()}{assumed}")
    click.echo(res.replay_text)
    click.echo(
        f"leave model (held-out sessions): mean predicted {leave['mean_predicted']:.4f}, "
        f"observed {leave['observed']:.4f}, log-loss {leave['log_loss']:.4f} "
        f"(constant {leave['log_loss_constant']:.4f}), l2 {leave['l2']:g}"
    )
    echo_json_path("env", res.spec_path)
    echo_json_path("validation", res.artefacts / "validation.json")


COMMANDS: list[click.Command] = [make_env_command]
