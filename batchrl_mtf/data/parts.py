"""What every engine runs on one part of the logs, and how the parts' results are checked.

A *part* is any set of complete users: every row of each of its users, plus every row that shares
a request or a session with them. Validation, accounting, sessionisation, state features and the
reward are per user, so running :func:`process_part` on the parts of a log and merging the
:class:`~batchrl_mtf.data.stats.PartSummary` results gives what running it once on the whole log
gives. The local engine (:func:`process_logs`: ``build-dataset``, ``make-env``) runs it once on
everything; the Spark engine runs it on executors, one partition at a time
(:mod:`batchrl_mtf.data.spark`). Both check the merged result with :func:`check_summary`. There
is no second copy of any rule, feature or reward.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from batchrl_mtf.data.clean import (
    Prepared,
    account,
    check_columns,
    check_rows,
    kept_rows,
    log_source,
    raise_all_dropped,
    raise_problems,
)
from batchrl_mtf.data.config import DatasetConfig
from batchrl_mtf.data.features import feature_spec
from batchrl_mtf.data.reward import RewardConfig
from batchrl_mtf.data.stats import PartSummary
from batchrl_mtf.data.transitions import Transitions, compute_transitions
from batchrl_mtf.errors import Problem
from batchrl_mtf.logs.schema import LogColumns, LogFrame
from batchrl_mtf.logs.validate import merge_problems

__all__ = ["PartResult", "check_summary", "process_logs", "process_part"]


@dataclass(frozen=True)
class PartResult:
    """What :func:`process_part` returns.

    Attributes:
        transitions: The part's transitions in canonical order, with their ``split`` (``None``
            when nothing was kept, or when ``on_error="fail"`` and the part has problems).
        summary: Accounting, findings and statistics of the part.
        columns: The classified columns.
        kept: The part's kept rows in canonical order (positions into its logs; ``None`` when
            ``transitions`` is).
    """

    transitions: Transitions | None
    summary: PartSummary
    columns: LogColumns
    kept: Prepared | None


def process_part(
    logs: LogFrame,
    columns: LogColumns,
    reward: RewardConfig,
    config: DatasetConfig,
) -> PartResult:
    """Validate one part of the logs, keep its clean sessions and make their transitions.

    The part's problems do not raise here: the caller merges the parts' findings and fails the
    build (:func:`check_summary`) when ``config.on_error == "fail"`` and there are any; with
    ``"fail"``, a part with problems makes no transitions (the build fails anyway).

    Args:
        logs: Rows of a set of complete users (see the module docstring), with ``ts`` in int64 ms
            and the id columns in the dtypes :func:`batchrl_mtf.logs.schema.read_logs` gives.
        columns: The classified columns (from :func:`batchrl_mtf.data.clean.check_columns`).
        reward: The reward.
        config: Dataset options.
    """
    checked = check_rows(logs, columns, config)
    keep, accounting = account(checked.codes, checked.flags.reason)
    t: Transitions | None = None
    prepared: Prepared | None = None
    failing = config.on_error == "fail" and bool(checked.flags.raw)
    if keep.any() and not failing:
        prepared = kept_rows(logs, checked, keep, accounting)
        t = compute_transitions(prepared, reward, config)
    n_features = len(feature_spec(columns, config.features).names)
    summary = PartSummary.of(accounting, checked.flags.raw, t, n_features, len(columns.tasks))
    return PartResult(t, summary, columns, prepared)


def check_summary(
    summary: PartSummary, files: Sequence[str], config: DatasetConfig
) -> tuple[Problem, ...]:
    """The problems of the (merged) parts; raise when they fail the build.

    Returns:
        One problem per (rule check, file) (:func:`batchrl_mtf.logs.validate.merge_problems`).

    Raises:
        SchemaError: There are problems and ``config.on_error == "fail"``, or every session was
            dropped.
    """
    problems = merge_problems(summary.raw_problems, files)
    if problems and config.on_error == "fail":
        raise_problems(problems)
    if summary.accounting.rows_kept == 0:
        raise_all_dropped(log_source(files), problems)
    return problems


def process_logs(
    logs: LogFrame, reward: RewardConfig, config: DatasetConfig
) -> tuple[PartResult, tuple[Problem, ...]]:
    """The local engine: check the columns, run :func:`process_part` on the whole log as one
    part, and check the result (``build-dataset``, ``make-env``).

    Returns:
        The result (its ``transitions`` and ``kept`` are not ``None``) and the problems found
        (empty unless ``config.on_error == "drop-session"``).

    Raises:
        SchemaError: A column is missing or mistyped, or rows break a rule and
            ``config.on_error == "fail"``, or nothing is left.
        ConfigError: The reward or ``features.feedback`` names a column absent from the logs.
    """
    columns = check_columns(logs.frame, log_source(logs.files), reward, config)
    result = process_part(logs, columns, reward, config)
    problems = check_summary(result.summary, logs.files, config)
    return result, problems
