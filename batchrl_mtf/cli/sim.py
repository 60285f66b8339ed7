"""Commands of the sim stage: ``simulate``, ``rollout`` and ``search-constant``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from batchrl_mtf.core.io import (
    atomic_write_bytes,
    atomic_write_text,
    dumps_json,
    hash_bytes,
    hash_files,
    package_versions,
)
from batchrl_mtf.errors import ConfigError
from batchrl_mtf.resolve import resolve_sim_policy
from batchrl_mtf.sim import World, load_spec, run_sessions, search_constant, true_value

__all__ = ["COMMANDS", "rollout_command", "search_constant_command", "simulate_command"]

ENV_HELP = (
    "Platform spec: a TOML path or a shipped name (short_video, ecommerce). "
    "Default: envs/short_video.toml."
)
POLICY_HELP = (
    "production | action-noise | random | mixed | constant:w1,w2,... | a weight-table .json | "
    "a trained policy directory."
)


def _world(env: str | None) -> Any:

    return World(load_spec(env))


def _policy(world: Any, arg: str, sigma: float | None, random_sigma: float | None) -> Any:

    return resolve_sim_policy(world, arg, sigma, random_sigma)


def _meta(world: Any, **extra: object) -> dict[str, object]:

    return {
        "env": world.spec.source,
        "env_hash": hash_files([world.spec.source]),
        "versions": package_versions(),
        **extra,
    }


@click.command("simulate")
@click.option("--env", "env", default=None, help=ENV_HELP)
@click.option("--sessions", type=click.IntRange(min=1), required=True, help="Sessions to log.")
@click.option("--policy", default="mixed", show_default=True, help="Logging policy: " + POLICY_HELP)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of users and noise.")
@click.option(
    "--sigma", type=float, default=None, help="Noise of action-noise/mixed (default: the spec's)."
)
@click.option(
    "--random-sigma", type=float, default=None, help="Noise of random/mixed (default: the spec's)."
)
@click.option(
    "--out", type=click.Path(dir_okay=False), required=True, help="Log file (.parquet or .csv)."
)
def simulate_command(
    env: str | None,
    sessions: int,
    policy: str,
    seed: int,
    sigma: float | None,
    random_sigma: float | None,
    out: str,
) -> None:
    """Write impression logs (schema v1, with behavior_logp for stochastic policies).

    Users have several sessions (spec users.sessions_per_user) and their history carries over.
    A run record (spec, policy, seed, hashes, versions) is written next to the logs as
    OUT.meta.json.

    \b
    Examples:
      batchrl-mtf simulate --sessions 20000 --policy mixed --seed 1 --out logs/train.parquet
      batchrl-mtf simulate --env ecommerce --sessions 5000 --policy action-noise --sigma 0.3 \\
          --out runs/ecom.parquet
      batchrl-mtf simulate --sessions 1000 --policy constant:1,0.4,0.3,0.1,0.1,0.1 --out p.csv
    """
    import io

    target = Path(out)
    if target.suffix.lower() not in (".parquet", ".csv"):
        raise ConfigError(f"--out {out}: expected a .parquet or .csv file name")
    world = _world(env)
    pol = _policy(world, policy, sigma, random_sigma)
    stats, logs = run_sessions(world, pol, sessions, seed, record=True)
    assert logs is not None
    buf = io.BytesIO()
    if target.suffix.lower() == ".csv":
        logs.to_csv(buf, index=False)
    else:
        logs.to_parquet(buf, index=False, compression="zstd")
    data = buf.getvalue()
    atomic_write_bytes(target, data)
    meta = _meta(
        world,
        command="simulate",
        policy=policy,
        policy_name=pol.name,
        sessions=sessions,
        seed=seed,
        sigma=sigma,
        random_sigma=random_sigma,
        rows=len(logs),
        requests=int(stats.length.sum()),
        data_hash=hash_bytes(data),
    )
    atomic_write_text(target.with_name(target.name + ".meta.json"), dumps_json(meta))
    click.echo(
        f"wrote {out}: {sessions} sessions, {int(stats.length.sum())} requests, {len(logs)} rows "
        f"(policy {pol.name}, mean session return {stats.returns.mean():.3f})"
    )


@click.command("rollout")
@click.option("--env", "env", default=None, help=ENV_HELP)
@click.option("--policy", required=True, help="Policy to value: " + POLICY_HELP)
@click.option("--sessions", type=click.IntRange(min=2), default=4000, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--sigma", type=float, default=None, help="Noise of action-noise/mixed.")
@click.option("--random-sigma", type=float, default=None, help="Noise of random/mixed.")
@click.option(
    "--out", type=click.Path(dir_okay=False), default=None, help="Also write the JSON here."
)
def rollout_command(
    env: str | None,
    policy: str,
    sessions: int,
    seed: int,
    sigma: float | None,
    random_sigma: float | None,
    out: str | None,
) -> None:
    """True value of a policy: run it online in the simulator and print JSON.

    The JSON holds the mean session return with a 95% interval, its stickiness and activeness
    parts, mean session length, watch time and interaction rate per request, and the return
    per (hidden) user segment.

    \b
    Examples:
      batchrl-mtf rollout --policy production --sessions 4000
      batchrl-mtf rollout --policy runs/table.json --seed 1 --out runs/true_value.json
    """

    world = _world(env)
    value = true_value(world, _policy(world, policy, sigma, random_sigma), sessions, seed)
    doc = {
        **value.summary,
        **_meta(world, command="rollout", policy=policy, seed=seed),
    }
    text = dumps_json(doc)
    if out is not None:
        atomic_write_text(out, text)
    click.echo(text, nl=False)


@click.command("search-constant")
@click.option("--env", "env", default=None, help=ENV_HELP)
@click.option("--method", type=click.Choice(["cem", "grid"]), default="cem", show_default=True)
@click.option(
    "--sessions",
    type=click.IntRange(min=2),
    default=500,
    show_default=True,
    help="Sessions per candidate evaluation.",
)
@click.option(
    "--iterations",
    type=click.IntRange(min=1),
    default=6,
    show_default=True,
    help="CEM iterations (grid: passes, at most 2).",
)
@click.option("--population", type=click.IntRange(min=2), default=24, show_default=True)
@click.option("--elite", type=click.IntRange(min=1), default=6, show_default=True)
@click.option("--grid-points", type=click.IntRange(min=2), default=5, show_default=True)
@click.option(
    "--eval-sessions",
    type=click.IntRange(min=2),
    default=4000,
    show_default=True,
    help="Fresh sessions valuing the winner.",
)
@click.option("--segment", default=None, help="Only users of this hidden segment (an oracle).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--out", type=click.Path(dir_okay=False), default=None, help="Also write the JSON here."
)
def search_constant_command(
    env: str | None,
    method: str,
    sessions: int,
    iterations: int,
    population: int,
    elite: int,
    grid_points: int,
    eval_sessions: int,
    segment: str | None,
    seed: int,
    out: str | None,
) -> None:
    """Search the best constant fusion weights online (the paper's BO/ES-style baseline).

    Prints the best weights (as a --policy constant:... argument) and their value with a 95%
    interval, valued on fresh sessions.

    \b
    Examples:
      batchrl-mtf search-constant --method cem
      batchrl-mtf search-constant --method grid --grid-points 5 --sessions 300
      batchrl-mtf search-constant --segment watcher --out runs/watcher.json
    """

    world = _world(env)
    seg_index = None
    if segment is not None:
        if segment not in world.segment_names:
            raise ConfigError(
                f"--segment: expected one of {', '.join(world.segment_names)}, found {segment!r}"
            )
        seg_index = world.segment_names.index(segment)
    res = search_constant(
        world,
        method=method,  # type: ignore[arg-type]
        sessions=sessions,
        iterations=iterations,
        population=population,
        elite=elite,
        grid_points=grid_points,
        eval_sessions=eval_sessions,
        seed=seed,
        segment=seg_index,
    )
    policy = "constant:" + ",".join(f"{w:.4g}" for w in res.weights)
    doc = {
        "method": method,
        "segment": segment,
        "weights": dict(zip((f"w_{t}" for t in world.tasks), res.weights, strict=True)),
        "policy": policy,
        "return": {"mean": res.value, "ci95": list(res.ci95)},
        "evaluations": res.evaluations,
        "history": list(res.history),
        **_meta(world, command="search-constant", seed=seed, sessions=sessions),
    }
    if out is not None:
        atomic_write_text(out, dumps_json(doc))
    click.echo(f"best: {policy}")
    click.echo(f"value: {res.value:.4f} (95% CI {res.ci95[0]:.4f} .. {res.ci95[1]:.4f})")


COMMANDS: list[click.Command] = [simulate_command, rollout_command, search_constant_command]
