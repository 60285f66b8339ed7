"""The ``batchrl-mtf`` command line.

Each stage's commands live in their own module and are listed in that module's ``COMMANDS``;
this module only assembles the group. Heavy libraries (torch, d3rlpy) are imported inside the
commands that need them, so ``--help`` stays fast.
"""

from __future__ import annotations

import click

from batchrl_mtf.cli import (
    data,
    demo,
    evaluate,
    export,
    learned,
    predictor,
    score,
    select,
    sim,
    train,
    upgrade,
    zoo,
)
from batchrl_mtf.cli._common import BatchRLGroup, setup_logging
from batchrl_mtf.core.version import __version__

__all__ = ["main"]


@click.group(cls=BatchRLGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="batchrl-mtf")
@click.option("--quiet", "-q", is_flag=True, help="Only warnings and errors.")
@click.option("--verbose", "-v", is_flag=True, help="Debug messages too.")
def main(quiet: bool, verbose: bool) -> None:
    """Learn multi-task fusion weights for recommender feeds with offline (batch) RL.

    \b
    Typical flow:
      batchrl-mtf validate logs/sample.parquet
      batchrl-mtf build-dataset logs/sample.parquet --reward envs/reward_default.toml --out runs/ds
    """
    setup_logging(quiet, verbose)


for _module in (
    data,
    sim,
    predictor,
    learned,
    train,
    evaluate,
    export,
    select,
    score,
    demo,
    zoo,
    upgrade,
):
    for _command in _module.COMMANDS:
        main.add_command(_command)
