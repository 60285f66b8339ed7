"""Commands of off-policy selection: ``batchrl-mtf select``."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import click

from batchrl_mtf.cli._common import (
    fusion_override_options,
    overwrite_option,
    parse_float_list,
    progress_enabled,
    read_config_table,
)
from batchrl_mtf.core.config import parse_overrides
from batchrl_mtf.core.fusion import choose_fusion
from batchrl_mtf.core.io import check_output_dir
from batchrl_mtf.data.formats import load_dataset
from batchrl_mtf.selection import SelectConfig, resolve_select_config, select_policy

__all__ = ["COMMANDS", "select_command"]

_DEFAULT = SelectConfig()


@click.command(
    "select",
    epilog=f"""\b
Examples:
  batchrl-mtf select runs/ds --out runs/select --formula logsum --beta 0.1
  batchrl-mtf select runs/ds --out runs/select --budget-minutes 30 --set seeds=[0,1]
  batchrl-mtf select runs/ds --out runs/select --set ope.fqe_n_steps=5000
  batchrl-mtf train runs/ds --out runs/policy && batchrl-mtf select runs/ds --out runs/select --reuse runs/policy

\b
Default portfolio: algorithms {",".join(_DEFAULT.algorithms)}; TD3+BC alpha
{",".join(f"{v:g}" for v in _DEFAULT.conservativeness["td3bc"])}; seeds {_DEFAULT.seeds[0]};
trust-region steps {",".join(f"{v:g}" for v in _DEFAULT.trust_steps)}; {_DEFAULT.n_steps} steps each.
Settings (TOML via --config, top-level or [select]; --set key=value): algorithms,
conservativeness.<algo>, seeds, n_steps, trust_steps, action_box, keys, buckets, min_support,
budget_minutes, n_threads, parallel, seed, ope.<OPEConfig field>. See docs/selection.md.""",
)
@click.argument("dataset_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Directory to write.")
@click.option(
    "--budget-minutes",
    type=float,
    default=None,
    help=f"Wall-clock budget; 0 = none [default: {_DEFAULT.budget_minutes:g}].",
)
@click.option(
    "--production",
    default=None,
    help="Production weights in task order (default: the logged actions' most common centre).",
)
@fusion_override_options
@click.option(
    "--config", "config_file", type=click.Path(path_type=Path), default=None, help="TOML settings."
)
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a setting.")
@click.option(
    "--reuse",
    "reuse",
    multiple=True,
    type=click.Path(path_type=Path),
    metavar="POLICY_DIR",
    help="A policy trained before (batchrl-mtf train --out POLICY_DIR); a candidate it holds "
    "exactly (same settings, dataset and package versions) is copied, not retrained. Repeatable.",
)
@click.option("--progress/--no-progress", default=True, help="Show progress bars.")
@overwrite_option
def select_command(
    dataset_dir: Path,
    out: Path,
    budget_minutes: float | None,
    production: str | None,
    formula: str | None,
    beta: str | None,
    config_file: Path | None,
    overrides: tuple[str, ...],
    reuse: tuple[Path, ...],
    progress: bool,
    overwrite: bool,
) -> None:
    """Choose a weight table offline: train a small portfolio on DATASET_DIR, export each
    candidate's table, estimate every table and production with paired intervals on the held-out
    split, and keep the table with the highest lower bound of its gain over production (FQE's
    paired bound for every candidate), or production when no lower bound is above the margin (2%
    of production's estimated value by default; --set margin=0 for zero, --set
    bound=recommended for the recommended estimator's bound, --set bound=all-estimators for the
    lowest bound over FQE, DR and WDR). When production's own weights leave the logged support,
    the gains are over the logging policy instead (--set baseline=production to keep them over
    production).

    Writes --out/table.json (weight-table@1), selection.json, selection.md, timing.json and
    candidates/. With --reuse POLICY_DIR (e.g. the default `batchrl-mtf train` of the same
    dataset, which is the portfolio's td3bc-alpha10-s0) that candidate is copied instead of
    trained; the selection is the same. An existing selection at --out is replaced only with --overwrite; any other
    non-empty directory, a file, or a path holding the dataset is refused.
    """
    # before any work: refuse what is not ours to write
    check_output_dir(out, "selection", inputs=[dataset_dir], overwrite=overwrite)
    layers: list[tuple[str, Mapping[str, object]]] = []
    if config_file is not None:
        layers.append((f"--config {config_file}", read_config_table(config_file, "select")))
    if overrides:
        layers.append(("--set", parse_overrides(overrides)))
    if budget_minutes is not None:
        layers.append(("--budget-minutes", {"budget_minutes": budget_minutes}))
    config = resolve_select_config(layers)
    data = load_dataset(dataset_dir)
    spec = data.spec
    fusion, fusion_line = choose_fusion(
        spec.tasks, spec.fusion, formula, beta, spec.fusion_source, f"the dataset {dataset_dir}"
    )
    click.echo(fusion_line)
    prod = None if production is None else parse_float_list(production, "--production")
    result = select_policy(
        data,
        out,
        config,
        fusion=fusion,
        production=prod,
        progress=progress and progress_enabled(),
        overwrite=overwrite,
        reuse=reuse,
    )
    ch = result.chosen
    est = ch.estimate or {}
    click.echo(f"wrote {out}/table.json, selection.json, selection.md")
    click.echo(
        f"chosen: {ch.name}: estimate {est.get('value', float('nan')):.4g} "
        f"(lower bound {est.get('lower', float('nan')):.4g}, upper {est.get('upper', float('nan')):.4g})"
    )
    click.echo(f"why: {result.choice.reason}")


COMMANDS: list[click.Command] = [select_command]
