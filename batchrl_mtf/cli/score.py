"""``batchrl-mtf score``: the Python reference scorer (the contract every port's ``score`` follows)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from batchrl_mtf.cli._common import EXIT_USER_ERROR
from batchrl_mtf.serving import WeightTable
from batchrl_mtf.serving.scoring import score_lines

__all__ = ["COMMANDS", "score_command"]


@click.command("score")
@click.argument("table", type=click.Path(path_type=Path, dir_okay=False))
def score_command(table: Path) -> None:
    """Score requests (JSON lines on stdin) with weight table TABLE; responses on stdout.

    \b
    A request line:  {"features": {"u_activity": 0.3, ...}, "preds": {"click": [..], ...}}
    A response line: {"weights": {"w_click": .., ...}, "scores": [..], "order": [..]}
    Optional "draws" sample exploratory weights (adds "behavior_logp"). An invalid request gets
    {"error": "line N: ..."} and the exit status is 2 at the end; an invalid TABLE exits 2 at once.
    See docs/serving.md. serving/bin/score-java and serving/bin/score-cpp follow the same contract.

    \b
    Example:
      batchrl-mtf score policies/sample_table.json < requests.jsonl > responses.jsonl
    """
    loaded = WeightTable.load(table)  # an invalid table: one line, exit 2 (BatchRLGroup)
    summary = score_lines(loaded, sys.stdin.buffer, sys.stdout)
    sys.stdout.flush()
    if summary.n_errors:
        click.echo(
            f"error: {summary.n_errors} of {summary.n_requests} requests invalid "
            f"(first: {summary.first_error})",
            err=True,
        )
        sys.exit(EXIT_USER_ERROR)


COMMANDS: list[click.Command] = [score_command]
