"""Import d3rlpy without the noise.

d3rlpy 2.8.1 imports the unmaintained ``gym`` package, which prints a multi-line notice to stderr
and raises deprecation warnings at import time. Every module of this package gets d3rlpy from
:func:`load_d3rlpy`, so that noise never reaches our users' terminals or logs, and d3rlpy (with
torch) is imported only when a function needs it.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from types import ModuleType

__all__ = ["load_d3rlpy", "quiet_d3rlpy_logging"]


def quiet_d3rlpy_logging() -> None:
    """Show only d3rlpy's structlog warnings and errors (its info lines are noise to our users)."""
    import structlog

    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
    )


def load_d3rlpy() -> ModuleType:
    """The ``d3rlpy`` module, imported quietly on first use (its logging at warning level)."""
    with contextlib.redirect_stderr(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import d3rlpy
        import gym  # noqa: F401  (imported here so that its notice is swallowed once)
    quiet_d3rlpy_logging()
    return d3rlpy
