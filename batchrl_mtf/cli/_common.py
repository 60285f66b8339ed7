"""Shared pieces of the command line: error handling, logging flags, small parsers."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import click

from batchrl_mtf.core.config import read_toml
from batchrl_mtf.core.fusion import DEFAULT_BETA, FORMULAS
from batchrl_mtf.core.io import describe_os_error
from batchrl_mtf.errors import BatchRLMTFError, ConfigError, SchemaError

__all__ = [
    "EXIT_USER_ERROR",
    "BatchRLGroup",
    "echo_json_path",
    "fusion_override_options",
    "overwrite_option",
    "parse_float_list",
    "read_config_table",
]

EXIT_USER_ERROR = 2


class BatchRLGroup(click.Group):
    """A click group that turns :class:`BatchRLMTFError` into one clear line and exit code 2."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except SchemaError as exc:
            for problem in exc.problems:
                click.echo(f"  {problem}", err=True)
            click.echo(f"error: {exc}", err=True)
            sys.exit(EXIT_USER_ERROR)
        except BatchRLMTFError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(EXIT_USER_ERROR)
        except OSError as exc:
            # disk full, read-only file system, permission denied: the environment, not a bug;
            # every writer removes its temporary file or directory before this is reached
            if exc.errno is None and not isinstance(exc, FileNotFoundError):
                raise
            click.echo(f"error: {describe_os_error(exc)}; nothing was replaced", err=True)
            sys.exit(EXIT_USER_ERROR)


overwrite_option = click.option(
    "--overwrite",
    is_flag=True,
    help="Replace an output this toolkit wrote before at --out (anything else is never replaced).",
)
"""The ``--overwrite`` flag of every command that writes a directory."""


def setup_logging(quiet: bool, verbose: bool) -> None:
    """Configure the package logger for the command line (stderr, one line per message)."""
    level = logging.WARNING if quiet else (logging.DEBUG if verbose else logging.INFO)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    root = logging.getLogger("batchrl_mtf")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


def progress_enabled() -> bool:
    """Progress bars are shown unless ``batchrl-mtf --quiet`` was given."""
    return logging.getLogger("batchrl_mtf").getEffectiveLevel() <= logging.INFO


def parse_float_list(text: str, where: str) -> tuple[float, ...]:
    """Parse ``"1.5,0.2,0.3"`` into floats; raise a ConfigError naming ``where`` otherwise."""

    try:
        return tuple(float(x) for x in text.split(",") if x.strip() != "")
    except ValueError:
        raise ConfigError(f"{where}: expected comma-separated numbers, found {text!r}") from None


def echo_json_path(label: str, path: object) -> None:
    """Print where an artefact was written."""
    click.echo(f"{label}: {path}")


def split_csv_option(values: Sequence[str]) -> tuple[str, ...]:
    """Flatten ``--x a,b --x c`` into ``("a", "b", "c")``."""
    out: list[str] = []
    for v in values:
        out.extend(p.strip() for p in v.split(",") if p.strip())
    return tuple(out)


def read_config_table(path: Path, section: str) -> Mapping[str, object]:
    """The settings of a ``--config`` TOML file: its ``[section]`` table, else its top level.

    Raises:
        ConfigError: Unreadable file, invalid TOML, or ``section`` not a table.
    """
    doc = read_toml(path, "--config file")
    table = doc.get(section, doc)
    if not isinstance(table, Mapping):
        raise ConfigError(f"--config {path}: expected a [{section}] table")
    return table


F = TypeVar("F", bound=Callable[..., Any])


def fusion_override_options(command: F) -> F:
    """``--formula``/``--beta`` of a command that reads the dataset's fusion (they override it)."""
    command = click.option(
        "--beta",
        help="logsum offsets: one number, one per task in task order, or task=number,... "
        f"(default: the dataset's; with --formula alone, {DEFAULT_BETA:g}).",
    )(command)
    return click.option(
        "--formula",
        type=click.Choice(FORMULAS),
        help="Fusion formula of the table (default: the one the dataset records; a flag "
        "overrides it, with a note).",
    )(command)
