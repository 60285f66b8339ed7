"""Import d3rlpy without the noise.

d3rlpy 2.8.1 imports the unmaintained ``gym`` package, which prints a multi-line notice to stderr
and raises deprecation warnings at import time. Every module of this package imports d3rlpy from
here, so that noise never reaches our users' terminals or logs.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings

with contextlib.redirect_stderr(io.StringIO()), warnings.catch_warnings():
    warnings.simplefilter("ignore")
    import d3rlpy
    import gym  # noqa: F401  (imported here so that its notice is swallowed once)

__all__ = ["d3rlpy", "quiet_d3rlpy_logging"]


def quiet_d3rlpy_logging() -> None:
    """Show only d3rlpy's structlog warnings and errors (its info lines are noise to our users)."""
    import structlog

    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
    )


quiet_d3rlpy_logging()
