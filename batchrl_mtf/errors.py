"""The one error hierarchy of batchrl-mtf.

Everything a user, a config file or a log file can cause is raised as a subclass of
:class:`BatchRLMTFError`. The command line turns these into one clear line on stderr and exit
code 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = [
    "BatchRLMTFError",
    "ConfigError",
    "DatasetError",
    "EnvError",
    "ExportError",
    "FusionError",
    "OPEInputError",
    "OutputError",
    "PolicyError",
    "PredictorError",
    "Problem",
    "SchemaError",
]


class BatchRLMTFError(Exception):
    """Base class of every error this package raises on purpose."""


class ConfigError(BatchRLMTFError, ValueError):
    """A configuration value (dataclass field, TOML key, CLI flag) is missing or invalid."""


@dataclass(frozen=True)
class Problem:
    """One problem found in the logs by validation.

    Attributes:
        rule: Stable identifier of the validation rule (e.g. ``"prob_range"``).
        file: The input file the offending rows came from (``"<dataframe>"`` for in-memory input).
        column: The offending column, or ``""`` when the rule is about rows rather than a column.
        expected: What the rule expects, in words.
        found: What was found, in words (counts, values).
        examples: Up to 5 example ``request_id`` values, as strings.
        n_rows: Number of input rows affected.
    """

    rule: str
    file: str
    column: str
    expected: str
    found: str
    examples: tuple[str, ...] = field(default_factory=tuple)
    n_rows: int = 0

    def __str__(self) -> str:
        col = f" column '{self.column}'" if self.column else ""
        ex = f" (e.g. request_id {', '.join(self.examples)})" if self.examples else ""
        return f"{self.file}:{col} [{self.rule}] expected {self.expected}; found {self.found}{ex}"


class SchemaError(BatchRLMTFError, ValueError):
    """The logs do not follow log schema v1.

    Attributes:
        problems: Every problem found, in rule order. Empty when the error is about the input as a
            whole (for example an unreadable file).
    """

    def __init__(self, message: str, problems: tuple[Problem, ...] = ()) -> None:
        super().__init__(message)
        self.problems = problems


class DatasetError(BatchRLMTFError):
    """A dataset directory is missing, incomplete, or does not match what is applied to it."""


class PolicyError(BatchRLMTFError):
    """A policy cannot be loaded, or does not fit the dataset or environment it is applied to."""


class OPEInputError(BatchRLMTFError, ValueError):
    """Off-policy evaluation got inputs it cannot use (missing behaviour log-probabilities, ...)."""


class ExportError(BatchRLMTFError, ValueError):
    """A weight table or exported model is invalid or cannot be written."""


class FusionError(ConfigError, ExportError):
    """A fusion formula or its offsets are invalid (in a flag, a config file, a dataset or a table).

    A :class:`ConfigError` and an :class:`ExportError` at once, so code that catches either (config
    validation, weight-table validation) sees it.
    """


class EnvError(BatchRLMTFError):
    """A simulated or learned environment spec cannot be used."""


class PredictorError(BatchRLMTFError):
    """A multi-task predictor cannot be trained, loaded, or applied."""


class OutputError(BatchRLMTFError):
    """An output path (``--out``) cannot be written safely: not ours, an input, locked, read-only,
    or the disk is full. Nothing was replaced."""
