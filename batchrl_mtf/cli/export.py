"""Commands of the export stage: ``batchrl-mtf export`` (weight table, TorchScript or ONNX)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, cast

import click

from batchrl_mtf.cli._common import fusion_override_options, parse_float_list
from batchrl_mtf.cli.options import ConfigOption, config_option
from batchrl_mtf.core.fusion import choose_fusion
from batchrl_mtf.data.formats import load_dataset
from batchrl_mtf.errors import ConfigError, ExportError
from batchrl_mtf.export import (
    NETWORK_FORMATS,
    ExportConfig,
    ExportResult,
    export_network,
    export_table,
    offline_config,
)
from batchrl_mtf.ope import OPEConfig
from batchrl_mtf.ope.config import FQE_ENGINES, KERNEL_BOUNDARIES
from batchrl_mtf.resolve import resolve_policy
from batchrl_mtf.training import load_policy

logger = logging.getLogger(__name__)


def parse_edges(values: Sequence[str]) -> dict[str, tuple[float, ...]]:
    """Parse ``--edges u_activity=-0.4,0.3,1.0`` (repeatable) into ``{key: edges}``."""
    out: dict[str, tuple[float, ...]] = {}
    for v in values:
        key, sep, rest = v.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--edges: expected KEY=e1,e2,..., found {v!r}")
        if key.strip() in out:
            raise ConfigError(f"--edges: key {key.strip()!r} given twice")
        out[key.strip()] = parse_float_list(rest, f"--edges {key.strip()}")
    return out


def parse_explore(text: str | None) -> tuple[Literal["none", "gaussian", "uniform"], float]:
    """Parse ``--explore gaussian:SIGMA`` or ``uniform:HALFWIDTH``."""
    if text is None:
        return "none", 0.0
    kind, sep, scale = text.partition(":")
    if kind not in ("gaussian", "uniform") or not sep:
        raise ConfigError(
            f"--explore: expected gaussian:SIGMA or uniform:HALFWIDTH, found {text!r}"
        )
    try:
        value = float(scale)
    except ValueError:
        raise ConfigError(
            f"--explore: expected a number after '{kind}:', found {scale!r}"
        ) from None
    return cast(Literal["gaussian", "uniform"], kind), value


def _load_inputs(policy_dir: str, dataset_dir: str) -> tuple[Any, Any]:
    """Load the dataset and the policy applied to its states (``resolve_policy`` checks both fit)."""

    data = load_dataset(dataset_dir)
    policy = resolve_policy(policy_dir, data.spec.tasks, data.spec.feature_names)
    return policy, data


def _fusion(spec: Any, formula: str | None, beta: str | None, origin: str) -> tuple[Any, str]:
    """The fusion the table is for: ``--formula/--beta``, else the dataset's recorded fusion."""

    return choose_fusion(
        spec.tasks,
        getattr(spec, "fusion", None),
        formula,
        beta,
        getattr(spec, "fusion_source", "given"),
        origin,
    )


def _print_result(result: ExportResult, written: tuple[Path, ...]) -> None:
    """The lines ``export`` prints: files written, action gap, offline and true values."""
    table = result.table
    click.echo(
        f"wrote {written[0]}: {len(table.rows)} rows over keys "
        f"{', '.join(table.key_names) or '(none)'}"
    )
    for path in written[1:]:
        click.echo(f"wrote {path} (CSV twin)")
    click.echo(
        f"action gap (table vs network): mean |dw|/range = {result.gap['mean_abs_scaled']:.4f}"
    )
    for label, cmp in (("offline estimate", result.ope), ("true value", result.true)):
        if cmp is not None:
            bounds = ""
            if cmp.table_lower is not None and cmp.network_lower is not None:
                bounds = (
                    f"; lower bounds: network {cmp.network_lower:.4f}, table {cmp.table_lower:.4f}"
                )
            click.echo(
                f"{label} ({cmp.source}): network {cmp.network:.4f}, table {cmp.table:.4f}, "
                f"lost {cmp.value_lost:.4f}{bounds}"
            )


@click.command("export")
@click.argument("policy_dir", type=click.Path(exists=True, file_okay=False))
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "torchscript", "onnx"]),
    default="table",
    show_default=True,
    help="A weight table (JSON + CSV twin), or the network as TorchScript or ONNX.",
)
@click.option(
    "--dataset",
    "dataset_dir",
    type=click.Path(exists=True, file_okay=False),
    help="Dataset whose states are bucketed (required for a table; parity states for a network).",
)
@click.option(
    "--keys", default="auto", show_default=True, help="Comma-separated key features, or 'auto'."
)
@click.option(
    "--n-keys",
    cls=ConfigOption,
    config=ExportConfig,
    field="n_auto_keys",
    type=int,
    help="Keys picked by --keys auto.",
)
@config_option(
    "--buckets", config=ExportConfig, field="buckets", type=int, help="Quantile buckets per key."
)
@click.option(
    "--edges", multiple=True, help="Explicit edges KEY=e1,e2,... (repeatable); override --buckets."
)
@click.option(
    "--min-support",
    cls=ConfigOption,
    config=ExportConfig,
    field="min_support",
    type=int,
    help="Buckets with fewer states shrink toward the default.",
)
@click.option("--max-delta", type=float, help="Keep every weight within +-D of the default.")
@click.option(
    "--default",
    "default_weights",
    help="Default weights in task order (default: the logged actions' most common centre).",
)
@click.option("--explore", help="Add exploration: gaussian:SIGMA or uniform:HALFWIDTH.")
@fusion_override_options
@click.option("--env", "env_spec", help="Simulated world: also report both true values.")
@click.option("--csv/--no-csv", "write_csv", default=True, show_default=True, help="CSV twin.")
@click.option(
    "--fqe-steps",
    cls=ConfigOption,
    config=OPEConfig,
    field="fqe_n_steps",
    type=click.IntRange(min=1),
    help="Gradient steps per FQE fit of the offline estimates (as in evaluate).",
)
@click.option(
    "--fqe-fits",
    cls=ConfigOption,
    config=OPEConfig,
    field="fqe_n_fits",
    type=click.IntRange(min=1),
    help="FQE fits averaged per offline estimate (as in evaluate).",
)
@click.option(
    "--fqe-engine",
    type=click.Choice(FQE_ENGINES),
    default=None,
    help="FQE engine of the offline estimates (as in evaluate) "
    f"[default: {OPEConfig().fqe_engine}].",
)
@click.option(
    "--model-error",
    cls=ConfigOption,
    config=OPEConfig,
    field="model_error",
    type=click.FloatRange(min=0),
    help="Relative model error of the offline estimates' lower bounds (as in evaluate).",
)
@click.option(
    "--kernel-boundary",
    cls=ConfigOption,
    config=OPEConfig,
    field="kernel_boundary",
    type=click.Choice(KERNEL_BOUNDARIES),
    help="Kernel of the importance ratios at the action box's edge (as in evaluate).",
)
@config_option(
    "--seed", config=ExportConfig, field="seed", type=int, help="Seed (auto keys, env, FQE)."
)
@click.option("--out", type=click.Path(dir_okay=False), help="Output file.")
def export_command(
    policy_dir: str,
    fmt: str,
    dataset_dir: str | None,
    keys: str,
    n_keys: int,
    buckets: int,
    edges: tuple[str, ...],
    min_support: int,
    max_delta: float | None,
    default_weights: str | None,
    explore: str | None,
    formula: str | None,
    beta: str | None,
    env_spec: str | None,
    write_csv: bool,
    fqe_steps: int,
    fqe_fits: int,
    fqe_engine: str | None,
    model_error: float,
    kernel_boundary: str,
    seed: int,
    out: str | None,
) -> None:
    """Export the trained policy in POLICY_DIR for serving.

    A weight table buckets the dataset's states on a few key features and stores, per bucket, the
    policy's mean weights (shrunk toward the default where support is low). The report compares
    the table with the network: action gap, offline estimates, and with --env the true values.
    See docs/weight-table.md.

    \b
    Examples:
      batchrl-mtf export runs/cql --dataset runs/ds --keys u_activity,session_depth --buckets 4
      batchrl-mtf export runs/cql --dataset runs/ds --keys auto --max-delta 0.3 \\
          --explore gaussian:0.05 --out runs/table.json
      batchrl-mtf export runs/cql --format onnx --out runs/policy.onnx
    """
    if fmt != "table":
        _export_network_command(policy_dir, dataset_dir, cast(Any, fmt), out)
        return

    if dataset_dir is None:
        raise ConfigError("--dataset: required to export a weight table")
    explore_kind, explore_scale = parse_explore(explore)
    config = ExportConfig(
        keys=tuple(k.strip() for k in keys.split(",") if k.strip()),
        n_auto_keys=n_keys,
        buckets=buckets,
        edges=parse_edges(edges),
        min_support=min_support,
        max_delta=max_delta,
        default=None if default_weights is None else parse_float_list(default_weights, "--default"),
        explore=explore_kind,
        explore_scale=explore_scale,
        seed=seed,
    )
    network, data = _load_inputs(policy_dir, dataset_dir)
    fusion, fusion_line = _fusion(data.spec, formula, beta, f"the dataset {dataset_dir}")
    target = Path(out) if out else Path(policy_dir) / "weight_table.json"
    if target.suffix != ".json":
        raise ConfigError(f"--out {target}: expected a .json file for a weight table")
    result = export_table(
        network,
        data,
        config,
        fusion,
        policy_name=policy_dir,
        table_name=str(target),
        ope=offline_config(
            data.spec, fqe_steps, fqe_fits, seed, fqe_engine, model_error, kernel_boundary
        ),
        env=env_spec,
    )
    _print_result(result, result.save(target, csv=write_csv))
    click.echo(fusion_line)


def _export_network_command(
    policy_dir: str,
    dataset_dir: str | None,
    fmt: Literal["torchscript", "onnx"],
    out: str | None,
) -> None:

    target = Path(out) if out else Path(policy_dir) / f"policy{NETWORK_FORMATS[fmt]}"
    policy = load_policy(policy_dir)
    algo = getattr(policy, "algo", None)
    if algo is None:
        raise ExportError(f"{policy_dir}: the policy has no d3rlpy network to export")
    obs = None
    if dataset_dir is not None:
        obs = load_dataset(dataset_dir).observations[:256]
    diff = export_network(algo, target, fmt, obs)
    click.echo(f"wrote {target} ({fmt}); max |action difference| vs the policy: {diff:.2g}")


COMMANDS: list[click.Command] = [export_command]
