"""Commands of the world zoo: ``zoo list`` and ``zoo make`` (``docs/zoo.md``)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from batchrl_mtf.core.io import atomic_write_text
from batchrl_mtf.errors import ConfigError
from batchrl_mtf.sim.zoo import get_world, zoo_worlds

__all__ = ["COMMANDS", "zoo_group"]

HEADER = "# Zoo world "


@click.group("zoo")
def zoo_group() -> None:
    """The world zoo: 36 seeded platform specs, a tuning half and a held-out half.

    Choose defaults on the tuning half (t01..t12, h01..h12), report on the held-out half
    (n01..n12; h01..h12 were held out until they were looked at).
    See docs/zoo.md.

    \b
    Examples:
      batchrl-mtf zoo list
      batchrl-mtf zoo list --json
      batchrl-mtf zoo make h03 --out envs/h03.toml
    """


@zoo_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list (name, half, axes).")
def list_command(as_json: bool) -> None:
    """List the zoo's worlds with their half and axes of variation.

    \b
    Examples:
      batchrl-mtf zoo list
      batchrl-mtf zoo list --json
    """
    worlds = zoo_worlds()
    if as_json:
        click.echo(json.dumps([w.summary() for w in worlds], indent=2))
        return
    click.echo(
        f"{'name':<5} {'half':<8} {'seed':>6} {'kind':<19} {'K':>2} {'G':>2} {'sessions':>8} "
        f"{'logging':<13} {'formula':<7} {'gap':<8} {'bait':>4} tail"
    )
    for w in worlds:
        a = w.axes
        click.echo(
            f"{w.name:<5} {w.half:<8} {w.seed:>6} {w.kind:<19} {a['tasks']:>2} "
            f"{a['segments']:>2} {w.sessions:>8} {w.logging:<13} {a['formula']:<7} "
            f"{a['production_gap']:<8} {a['clickbait']:>4} {'yes' if a['heavy_tail'] else 'no'}"
        )


@zoo_group.command("make")
@click.argument("name")
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    required=True,
    help="Spec TOML to write.",
)
def make_command(name: str, out: Path) -> None:
    """Write the spec of zoo world NAME (simulate, rollout, search-constant and the
    Gymnasium env accept it); its header comment says how its logs are made.

    \b
    Examples:
      batchrl-mtf zoo make h03 --out envs/h03.toml
      batchrl-mtf simulate --env envs/h03.toml --sessions 6000 --policy mixed --seed 15015 \\
          --out logs/h03.parquet
    """
    world = get_world(name)
    if out.is_dir():
        raise ConfigError(f"--out {out}: expected a file name, found a directory")
    if out.exists() and not out.read_text(encoding="utf-8", errors="replace").startswith(HEADER):
        raise ConfigError(f"--out {out}: exists and was not written by 'zoo make'; not replacing")
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, world.to_toml())
    click.echo(
        f"wrote {out}: zoo world {world.name} ({world.half} half, {world.kind}); logs: "
        f"simulate --sessions {world.sessions} --policy {world.logging} --seed {world.log_seed}"
    )


COMMANDS: list[click.Command] = [zoo_group]
