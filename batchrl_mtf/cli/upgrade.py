"""``batchrl-mtf upgrade``: convert a policy directory of the previous release (no pickle after)."""

from __future__ import annotations

from pathlib import Path

import click

from batchrl_mtf.training.upgrade import upgrade_policy

__all__ = ["COMMANDS", "upgrade_command"]


@click.command("upgrade")
@click.argument("policy_dir", type=click.Path(path_type=Path))
@click.option(
    "--trust-pickle",
    is_flag=True,
    help="Load the directory's pickles (model.d3, rng_state.pt) once; they can run code.",
)
def upgrade_command(policy_dir: Path, trust_pickle: bool) -> None:
    """Convert POLICY_DIR, written by the previous release, to the current format.

    The previous release kept the model as a pickle (model.d3); loading a pickle runs any code it
    names, so current releases refuse it. Only if you trust where POLICY_DIR came from, convert it
    once with --trust-pickle: the directory is rewritten (atomically) as model.json +
    model.safetensors + rng_state.json and never needs pickle again. See docs/security.md.

    \b
    Examples:
      batchrl-mtf upgrade runs/bcq-old                  # refused: says what --trust-pickle does
      batchrl-mtf upgrade runs/bcq-old --trust-pickle   # convert, once, a directory you trust
    """
    if upgrade_policy(policy_dir, trust_pickle=trust_pickle):
        click.echo(f"upgraded {policy_dir} (model.safetensors + model.json; no pickle)")
    else:
        click.echo(f"{policy_dir}: already in the current format; nothing to do")


COMMANDS: list[click.Command] = [upgrade_command]
