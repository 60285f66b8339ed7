"""Commands of the evaluate stage: ``batchrl-mtf evaluate`` and ``batchrl-mtf best-constant``."""

from __future__ import annotations

from pathlib import Path

import click

from batchrl_mtf.cli._common import fusion_override_options, split_csv_option
from batchrl_mtf.cli.options import ConfigOption
from batchrl_mtf.core.fusion import choose_fusion
from batchrl_mtf.core.io import atomic_write_text, dumps_json
from batchrl_mtf.data.formats import load_dataset
from batchrl_mtf.errors import ConfigError, DatasetError, OPEInputError
from batchrl_mtf.ope import (
    OPEConfig,
    best_constant,
    best_constant_table,
    evaluate_policies,
    format_table,
    plot_report,
    report_to_dict,
)
from batchrl_mtf.ope.config import KERNEL_BOUNDARIES
from batchrl_mtf.resolve import resolve_ope_policy

__all__ = ["COMMANDS", "best_constant_command", "evaluate_command"]

ESTIMATOR_CHOICES = ("fqe", "cfqe", "pdis", "wpdis", "dr", "wdr")
FQE_ENGINES = ("batched", "d3rlpy")  # batchrl_mtf.ope.config.FQE_ENGINES (a test checks)


def _config(
    estimators: tuple[str, ...],
    gamma: float | None,
    n_bootstrap: int,
    seed: int,
    bandwidth: float | None,
    fqe_steps: int | None,
    cfqe_alpha: float | None,
    fqe_fits: int | None = None,
    fqe_engine: str | None = None,
    model_error: float | None = None,
    kernel_boundary: str | None = None,
) -> object:

    fields: dict[str, object] = {
        "estimators": estimators,
        "gamma": gamma,
        "n_bootstrap": n_bootstrap,
        "seed": seed,
        "bandwidth": bandwidth,
    }
    if fqe_steps is not None:
        fields["fqe_n_steps"] = fqe_steps
    if cfqe_alpha is not None:
        fields["cfqe_alpha"] = cfqe_alpha
    if fqe_fits is not None:
        fields["fqe_n_fits"] = fqe_fits
    if fqe_engine is not None:
        fields["fqe_engine"] = fqe_engine
    if model_error is not None:
        fields["model_error"] = model_error
    if kernel_boundary is not None:
        fields["kernel_boundary"] = kernel_boundary
    return OPEConfig(**fields)  # type: ignore[arg-type]


kernel_boundary_option = click.option(
    "--kernel-boundary",
    type=click.Choice(KERNEL_BOUNDARIES),
    default=None,
    help="renormalise: the importance ratios' kernel is divided by its mass inside the logged "
    "action box (policies on its edge keep their weight); none: the plain kernel "
    f"[default: {OPEConfig().kernel_boundary}].",
)
"""``--kernel-boundary`` of ``evaluate`` and ``best-constant`` (``OPEConfig.kernel_boundary``)."""


def _select(data: object, split: str) -> object:

    try:
        return data.select(split)  # type: ignore[attr-defined]
    except DatasetError as exc:
        raise OPEInputError(f"--split {split}: {exc}") from None


@click.command(
    "evaluate",
    epilog="""\b
Examples:
  batchrl-mtf evaluate runs/ds --policy runs/bcq --policy behavior --out runs/ope.json
  batchrl-mtf evaluate runs/ds --policy constant:1.5,0.2,0.8 --policy tables/bcq.json \\
      --estimators fqe,cfqe,wpdis,wdr --gamma 1 --n-bootstrap 1000 --out ope.json --plot ope.png
  batchrl-mtf evaluate runs/ds --policy runs/iql --estimators fqe,cfqe --out ope.json  # no behavior_logp

\b
Policies: a trained policy directory, a weight-table JSON, constant:w1,w2,... (task order),
or 'behavior' / 'logged' for the logging policy itself (on-policy sanity line).
Estimators: fqe, cfqe (conservative FQE), pdis, wpdis (kernel importance sampling), dr, wdr
(doubly robust with the FQE model). IS/DR need behavior_logp in the logs.
See docs/ope.md for formulas, the bandwidth rule, the recommended-estimate rule and the JSON.""",
)
@click.argument("dataset_dir", type=click.Path(path_type=Path))
@click.option(
    "--policy",
    "policies",
    multiple=True,
    required=True,
    metavar="P",
    help="Policy to evaluate (repeatable).",
)
@click.option(
    "--estimators",
    "estimators",
    multiple=True,
    metavar="LIST",
    help="Comma-separated estimators [default: all six].",
)
@click.option(
    "--gamma",
    type=float,
    default=None,
    help="Discount [default: the dataset's; 1 = undiscounted session return].",
)
@click.option(
    "--split",
    type=click.Choice(["train", "test", "all"]),
    default="test",
    show_default=True,
    help="Sessions to evaluate on.",
)
@click.option(
    "--n-bootstrap",
    type=int,
    cls=ConfigOption,
    config=OPEConfig,
    field="n_bootstrap",
    help="Bootstrap resamples for the 95% intervals (0 = none).",
)
@click.option(
    "--seed",
    type=int,
    cls=ConfigOption,
    config=OPEConfig,
    field="seed",
    help="Seed of the bootstrap and FQE.",
)
@click.option(
    "--bandwidth",
    type=float,
    default=None,
    help="Kernel bandwidth on [0,1]-normalised actions [default: Scott's rule].",
)
@kernel_boundary_option
@click.option(
    "--fqe-steps",
    type=int,
    default=None,
    help="Gradient steps per FQE fit (the batched engine: at most, see docs/ope.md) "
    f"[default: {OPEConfig().fqe_n_steps}].",
)
@click.option(
    "--cfqe-alpha",
    type=float,
    default=None,
    help=f"Conservative penalty of cfqe [default: {OPEConfig().cfqe_alpha:g}].",
)
@click.option(
    "--fqe-fits",
    type=int,
    default=None,
    help="Independent FQE fits averaged per policy; intervals include their spread "
    f"[default: {OPEConfig().fqe_n_fits}].",
)
@click.option(
    "--fqe-engine",
    type=click.Choice(FQE_ENGINES),
    default=None,
    help="batched: every FQE fit as one vectorised ensemble with early stopping; d3rlpy: one "
    "d3rlpy FQE after another, fqe-steps each (reference) [default: batched].",
)
@click.option(
    "--model-error",
    type=click.FloatRange(min=0),
    default=None,
    help="Relative model error added to the recommended interval (0 = the estimator's own "
    f"interval; docs/ope.md) [default: {OPEConfig().model_error:g}].",
)
@click.option(
    "--out", "out", required=True, type=click.Path(path_type=Path), help="Report JSON to write."
)
@click.option(
    "--plot",
    "plot",
    type=click.Path(path_type=Path),
    default=None,
    help="Also write a PNG of the estimates.",
)
def evaluate_command(
    dataset_dir: Path,
    policies: tuple[str, ...],
    estimators: tuple[str, ...],
    gamma: float | None,
    split: str,
    n_bootstrap: int,
    seed: int,
    bandwidth: float | None,
    kernel_boundary: str | None,
    fqe_steps: int | None,
    cfqe_alpha: float | None,
    fqe_fits: int | None,
    fqe_engine: str | None,
    model_error: float | None,
    out: Path,
    plot: Path | None,
) -> None:
    """Estimate from logs alone how well each --policy would do, with 95% intervals.

    Writes the report JSON (--out), prints a table and ranks the policies by their recommended
    estimate.
    """

    names = split_csv_option(estimators) or ESTIMATOR_CHOICES
    unknown = [n for n in names if n not in ESTIMATOR_CHOICES]
    if unknown:
        raise ConfigError(
            f"--estimators: expected names among {', '.join(ESTIMATOR_CHOICES)}, found {unknown}"
        )
    config = _config(
        names,
        gamma,
        n_bootstrap,
        seed,
        bandwidth,
        fqe_steps,
        cfqe_alpha,
        fqe_fits,
        fqe_engine,
        model_error,
        kernel_boundary,
    )
    full = load_dataset(dataset_dir)
    data = _select(full, split)
    spec = full.spec
    resolved = [resolve_ope_policy(p, spec.tasks, spec.feature_names) for p in policies]
    result = evaluate_policies(data, resolved, config)  # type: ignore[arg-type]
    doc = report_to_dict(result, split, str(dataset_dir), spec.dataset_hash)
    atomic_write_text(out, dumps_json(doc))
    click.echo(format_table(result))
    click.echo(f"report: {out}")
    if plot is not None:
        plot_report(result, plot)
        click.echo(f"plot: {plot}")


@click.command(
    "best-constant",
    epilog="""\b
Examples:
  batchrl-mtf best-constant runs/ds --out tables/best_constant.json
  batchrl-mtf best-constant runs/ds --estimator wpdis --n-candidates 64 --out best.json
  batchrl-mtf evaluate runs/ds --policy tables/best_constant.json --policy behavior --out ope.json

\b
Candidates: the logged actions' mean, their per-task median, and logged action vectors drawn
at random (so every candidate lies where the logs have support), clipped to the bounds.
The winner is written as a weight table without keys: its weights are the table's default.""",
)
@click.argument("dataset_dir", type=click.Path(path_type=Path))
@click.option(
    "--estimator",
    type=click.Choice(ESTIMATOR_CHOICES),
    default="fqe",
    show_default=True,
    help="Estimator that rates the candidates.",
)
@click.option(
    "--n-candidates", type=int, default=16, show_default=True, help="Candidate constant vectors."
)
@click.option(
    "--split",
    type=click.Choice(["train", "test", "all"]),
    default="train",
    show_default=True,
    help="Sessions to choose on.",
)
@click.option("--gamma", type=float, default=None, help="Discount [default: the dataset's].")
@click.option(
    "--seed",
    type=int,
    default=0,
    show_default=True,
    help="Seed of the candidates, bootstrap and FQE.",
)
@click.option(
    "--n-bootstrap",
    type=int,
    default=200,
    show_default=True,
    help="Bootstrap resamples for the winner's interval.",
)
@kernel_boundary_option
@click.option(
    "--fqe-steps",
    type=int,
    default=None,
    help="Gradient steps per FQE fit (the batched engine: at most, see docs/ope.md) "
    f"[default: {OPEConfig().fqe_n_steps}].",
)
@fusion_override_options
@click.option(
    "--out",
    "out",
    required=True,
    type=click.Path(path_type=Path),
    help="Weight-table JSON to write.",
)
def best_constant_command(
    dataset_dir: Path,
    estimator: str,
    n_candidates: int,
    split: str,
    gamma: float | None,
    seed: int,
    n_bootstrap: int,
    kernel_boundary: str | None,
    fqe_steps: int | None,
    formula: str | None,
    beta: str | None,
    out: Path,
) -> None:
    """Pick the constant fusion weights an offline estimator rates best; write them as a table.

    The table is for the fusion the dataset records (build-dataset --formula/--beta);
    --formula/--beta override it, with a note.
    """

    config = _config(
        (estimator,), gamma, n_bootstrap, seed, None, fqe_steps, None,
        kernel_boundary=kernel_boundary,
    )  # fmt: skip
    full = load_dataset(dataset_dir)
    spec = full.spec
    fusion, fusion_line = choose_fusion(
        spec.tasks, spec.fusion, formula, beta, spec.fusion_source, f"the dataset {dataset_dir}"
    )
    data = _select(full, split)
    result = best_constant(data, estimator, n_candidates, seed, config)  # type: ignore[arg-type]
    table = best_constant_table(result, data, fusion)  # type: ignore[arg-type]
    table.save(out)  # type: ignore[attr-defined]
    w = ", ".join(f"w_{t}={x:.4g}" for t, x in zip(result.tasks, result.weights, strict=True))
    est = result.estimate
    ci = "" if est.ci is None else f" [{est.ci[0]:.4g}, {est.ci[1]:.4g}]"
    click.echo(f"best constant ({estimator} = {est.value:.4g}{ci}): {w}")
    click.echo(f"table: {out}")
    click.echo(fusion_line)


COMMANDS: list[click.Command] = [evaluate_command, best_constant_command]
