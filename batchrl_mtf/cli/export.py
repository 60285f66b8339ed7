"""Commands of the export stage: ``batchrl-mtf export`` (weight table, TorchScript or ONNX)."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, cast

import click

from batchrl_mtf.cli._common import parse_float_list
from batchrl_mtf.data.dataset import load_dataset
from batchrl_mtf.errors import ConfigError, ExportError
from batchrl_mtf.export import (
    NETWORK_FORMATS,
    ExportConfig,
    ValueComparison,
    export_network,
    fidelity_report,
    tabulate_policy,
    tabulation_gap,
)
from batchrl_mtf.ope import OPEConfig
from batchrl_mtf.policy import TablePolicy
from batchrl_mtf.resolve import resolve_policy
from batchrl_mtf.serving import Fusion

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


def _fusion(spec: Any, formula: str | None, beta: str | None) -> Any:
    """The fusion the table is for: ``--formula/--beta``, else the dataset's recorded fusion."""

    tasks = tuple(spec.tasks)
    recorded = getattr(spec, "fusion", None)
    if formula is None and recorded is not None:
        return recorded if isinstance(recorded, Fusion) else Fusion(recorded.formula, recorded.beta)
    if formula is None:
        raise ConfigError(
            "--formula: the dataset records no fusion formula; give --formula logsum --beta 0.1 "
            "(or --formula sum)"
        )
    if formula == "sum":
        return Fusion("sum", None)
    values = parse_float_list(beta or "0.1", "--beta")
    if len(values) == 1:
        values = values * len(tasks)
    if len(values) != len(tasks):
        raise ConfigError(f"--beta: expected 1 or {len(tasks)} offsets, found {len(values)}")
    return Fusion("logsum", values)


def _hook(module: str, name: str) -> Any:
    """``module.name`` from another stage, or ``None`` when that stage does not provide it."""
    import importlib

    try:
        return getattr(importlib.import_module(module), name, None)
    except ImportError:
        return None


def _offline_values(
    network: Any, table_policy: Any, data: Any, fqe_steps: int, fqe_fits: int, seed: int
) -> Any:
    """Offline (OPE) values of the network and its table, or ``None`` when OPE is unavailable.

    The recommended estimate over ``fqe`` and, when the logs carry ``behavior_logp``, ``dr`` and
    ``wdr`` (``cfqe`` is a lower bound and pure importance sampling is rarely usable with
    continuous weights, so neither is fitted here; ``evaluate`` runs them all).
    """

    estimate_policy_value = _hook("batchrl_mtf.ope", "estimate_policy_value")
    if estimate_policy_value is None:
        logger.warning("off-policy evaluation is not available; the report has no offline values")
        return None

    config = OPEConfig(
        estimators=("dr", "wdr", "fqe") if data.spec.has_behavior_logp else ("fqe",),
        fqe_n_steps=fqe_steps,
        fqe_n_fits=fqe_fits,
        seed=seed,
    )
    net = estimate_policy_value(network, data, config)
    tab = estimate_policy_value(table_policy, data, config)
    return ValueComparison(
        source=f"ope:{getattr(net, 'estimator', 'default')}",
        network=float(getattr(net, "value", net)),
        table=float(getattr(tab, "value", tab)),
        network_lower=getattr(net, "lower", None),
        table_lower=getattr(tab, "lower", None),
    )


def _true_values(env_spec: str, network: Any, table_policy: Any, seed: int) -> Any:
    """True values of the network and its table in the simulated world ``env_spec``."""

    true_value = _hook("batchrl_mtf.sim", "true_value")
    if true_value is None:
        raise ExportError(f"--env {env_spec}: the simulator is not available")
    return ValueComparison(
        source=f"env:{env_spec}",
        network=float(true_value(env_spec, network, seed=seed)),
        table=float(true_value(env_spec, table_policy, seed=seed)),
    )


def export_table(
    network: Any,
    data: Any,
    config: Any,
    fusion: Any,
    out: Path,
    policy_name: str,
    env_spec: str | None = None,
    write_csv: bool = True,
    fqe_steps: int = 5000,
    fqe_fits: int = 3,
) -> Any:
    """Build, check and write the table of ``network`` over ``data``'s states; return it.

    Args:
        network: A policy with ``act(observations (n, d)) -> (n, k)`` and ``tasks``.
        data: A dataset with ``observations`` (n, d), ``actions`` (n, k) and ``spec``
            (``feature_names``, ``tasks``, ``action_low``, ``action_high``, ``dataset_hash``).
        config: An :class:`~batchrl_mtf.export.ExportConfig`.
        fusion: The :class:`~batchrl_mtf.serving.Fusion` the weights are for.
        out: Destination JSON; the CSV twin goes next to it with suffix ``.csv``.
        policy_name: Recorded as ``meta.policy``.
        env_spec: Simulated world to measure both true values in (``None``: skip).
        write_csv: Also write the CSV twin.
        fqe_steps: Gradient steps per FQE fit of the offline estimates.
        fqe_fits: Independent FQE fits averaged per estimate.
    """

    spec = data.spec
    names = tuple(spec.feature_names)
    obs = data.observations
    table, actions = tabulate_policy(network, data, config, fusion, policy_name)
    table_policy = TablePolicy(table, names, name=str(out))
    gap = tabulation_gap(
        actions, table_policy.act(obs), spec.tasks, spec.action_low, spec.action_high
    )
    ope = _offline_values(network, table_policy, data, fqe_steps, fqe_fits, config.seed)
    true = None if env_spec is None else _true_values(env_spec, network, table_policy, config.seed)
    meta = {**table.meta, "fidelity": fidelity_report(gap, ope, true)}
    meta["ope"] = None if ope is None else ope.to_dict()
    table = dataclasses.replace(table, meta=meta)
    table.save(out)
    click.echo(
        f"wrote {out}: {len(table.rows)} rows over keys {', '.join(table.key_names) or '(none)'}"
    )
    if write_csv:
        table.save_csv(out.with_suffix(".csv"))
        click.echo(f"wrote {out.with_suffix('.csv')} (CSV twin)")
    click.echo(f"action gap (table vs network): mean |dw|/range = {gap['mean_abs_scaled']:.4f}")
    for label, cmp in (("offline estimate", ope), ("true value", true)):
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
    return table


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
    "--n-keys", default=2, show_default=True, type=int, help="Keys picked by --keys auto."
)
@click.option("--buckets", default=4, show_default=True, type=int, help="Quantile buckets per key.")
@click.option(
    "--edges", multiple=True, help="Explicit edges KEY=e1,e2,... (repeatable); override --buckets."
)
@click.option(
    "--min-support",
    default=200,
    show_default=True,
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
@click.option(
    "--formula",
    type=click.Choice(["logsum", "sum"]),
    help="Fusion formula of the table (default: the dataset's).",
)
@click.option("--beta", help="logsum offsets: one number, or one per task (default 0.1).")
@click.option("--env", "env_spec", help="Simulated world: also report both true values.")
@click.option("--csv/--no-csv", "write_csv", default=True, show_default=True, help="CSV twin.")
@click.option(
    "--fqe-steps",
    default=5000,
    show_default=True,
    type=click.IntRange(min=1),
    help="Gradient steps per FQE fit of the offline estimates (as in evaluate).",
)
@click.option(
    "--fqe-fits",
    default=3,
    show_default=True,
    type=click.IntRange(min=1),
    help="FQE fits averaged per offline estimate (as in evaluate).",
)
@click.option("--seed", default=0, show_default=True, type=int, help="Seed (auto keys, env, FQE).")
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
    fusion = _fusion(data.spec, formula, beta)
    target = Path(out) if out else Path(policy_dir) / "weight_table.json"
    if target.suffix != ".json":
        raise ConfigError(f"--out {target}: expected a .json file for a weight table")
    export_table(
        network,
        data,
        config,
        fusion,
        target,
        policy_dir,
        env_spec,
        write_csv,
        fqe_steps,
        fqe_fits,
    )


def _export_network_command(
    policy_dir: str,
    dataset_dir: str | None,
    fmt: Literal["torchscript", "onnx"],
    out: str | None,
) -> None:

    target = Path(out) if out else Path(policy_dir) / f"policy{NETWORK_FORMATS[fmt]}"
    load_policy = _hook("batchrl_mtf.training", "load_policy")
    if load_policy is None:
        raise ExportError(f"{policy_dir}: cannot load trained policies (training is not available)")
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
