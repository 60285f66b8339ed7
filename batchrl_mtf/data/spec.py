"""The dataset spec (``features.json``): what a policy needs to know about the data it meets.

:class:`DatasetSpec` (features with normalisation statistics, tasks, action bounds, gamma,
hashes), the action bounds rule (:func:`action_bounds`), reading ``features.json``
(:func:`read_spec`) and the one check that a policy's features fit the data
(:func:`check_feature_spec`). The builder fills the spec in :func:`batchrl_mtf.data.build.dataset_spec`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from batchrl_mtf.data.config import DatasetConfig
from batchrl_mtf.data.features import FeatureSpec
from batchrl_mtf.errors import ConfigError, DatasetError, PolicyError

__all__ = [
    "DATASET_FORMAT",
    "DatasetSpec",
    "action_bounds",
    "bounds_from_range",
    "check_feature_spec",
    "read_spec",
]

DATASET_FORMAT = "batchrl-mtf/dataset@1"
FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class DatasetSpec:
    """What a policy needs to know about the dataset it is trained on or applied to.

    Attributes:
        features: The state definition with normalisation statistics.
        tasks: Task names in action order.
        action_low: Lower weight bound per task, shape (n_tasks,).
        action_high: Upper weight bound per task, shape (n_tasks,).
        gamma: The dataset's discount factor.
        has_behavior_logp: Whether the logs carried ``behavior_logp``.
        dataset_hash: Hash of ``transitions.parquet``.
        data_hash: Hash of the input logs.
    """

    features: FeatureSpec
    tasks: tuple[str, ...]
    action_low: tuple[float, ...]
    action_high: tuple[float, ...]
    gamma: float
    has_behavior_logp: bool
    dataset_hash: str
    data_hash: str

    @property
    def feature_names(self) -> tuple[str, ...]:
        """Feature names in observation order."""
        return self.features.names

    def to_dict(self) -> dict[str, object]:
        """The ``features.json`` document."""
        return {
            "format": DATASET_FORMAT,
            "features": self.features.to_dict(),
            "tasks": list(self.tasks),
            "action_low": list(self.action_low),
            "action_high": list(self.action_high),
            "gamma": self.gamma,
            "has_behavior_logp": self.has_behavior_logp,
            "dataset_hash": self.dataset_hash,
            "data_hash": self.data_hash,
        }

    @classmethod
    def from_dict(cls, doc: dict[str, object], source: str) -> DatasetSpec:
        """Inverse of :meth:`to_dict`."""
        if doc.get("format") != DATASET_FORMAT:
            raise DatasetError(
                f"{source}: expected format {DATASET_FORMAT!r}, found {doc.get('format')!r}"
            )
        try:
            feats = doc["features"]
            if not isinstance(feats, dict):
                raise TypeError("features")
            return cls(
                features=FeatureSpec.from_dict(feats, source),
                tasks=tuple(str(t) for t in doc["tasks"]),  # type: ignore[attr-defined]
                action_low=tuple(float(x) for x in doc["action_low"]),  # type: ignore[attr-defined]
                action_high=tuple(float(x) for x in doc["action_high"]),  # type: ignore[attr-defined]
                gamma=float(doc["gamma"]),  # type: ignore[arg-type]
                has_behavior_logp=bool(doc["has_behavior_logp"]),
                dataset_hash=str(doc["dataset_hash"]),
                data_hash=str(doc["data_hash"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise DatasetError(f"{source}: missing or invalid field {exc}") from None


def action_bounds(
    actions: FloatArray, tasks: Sequence[str], config: DatasetConfig
) -> tuple[FloatArray, FloatArray]:
    """Per-task weight bounds: ``config.action_bounds`` or the logged range plus a margin.

    From the logs, each task's range ``[min, max]`` is widened by ``action_margin`` times its
    width (at least 1e-3) on both sides; a lower bound is never pushed below 0 when every logged
    weight is non-negative.

    Raises:
        ConfigError: Explicit bounds exclude logged weights.
    """
    return bounds_from_range(actions.min(axis=0), actions.max(axis=0), tasks, config)


def bounds_from_range(
    mn: FloatArray, mx: FloatArray, tasks: Sequence[str], config: DatasetConfig
) -> tuple[FloatArray, FloatArray]:
    """:func:`action_bounds` from the per-task minimum and maximum logged weight, shape (n_tasks,).

    Raises:
        ConfigError: Explicit bounds exclude logged weights.
    """
    if config.action_bounds is not None:
        lo, hi = config.action_bounds
        outside = [t for t, a, b in zip(tasks, mn, mx, strict=True) if a < lo or b > hi]
        if outside:
            raise ConfigError(
                f"--action-bounds {lo},{hi}: expected every logged weight inside; found w_{outside[0]} "
                f"in [{mn[list(tasks).index(outside[0])]:.4g}, {mx[list(tasks).index(outside[0])]:.4g}]"
            )
        return np.full(len(tasks), float(lo)), np.full(len(tasks), float(hi))
    width = np.maximum(mx - mn, 1e-3)
    low = mn - config.action_margin * width
    low = np.where(mn >= 0, np.maximum(low, 0.0), low)
    high = mx + config.action_margin * width
    return low.astype(np.float64), high.astype(np.float64)


def read_spec(root: Path) -> DatasetSpec:
    """The spec of a dataset directory (its ``features.json``).

    Raises:
        DatasetError: The directory or the file is missing, or the file is not a spec.
    """
    if not root.is_dir():
        raise DatasetError(f"{root}: no such dataset directory")
    fpath = root / "features.json"
    if not fpath.is_file():
        raise DatasetError(f"{root}: not a dataset directory (missing {fpath.name})")
    try:
        doc = json.loads(fpath.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{fpath}: not valid JSON ({exc})") from None
    return DatasetSpec.from_dict(doc, str(fpath))


def check_feature_spec(
    trained: DatasetSpec | Sequence[str],
    other: DatasetSpec | FeatureSpec | Sequence[str],
    policy_name: str,
    source: str,
) -> None:
    """Raise :class:`PolicyError` unless ``other`` has the features (and tasks) of ``trained``.

    The one check that a policy fits the data it meets (training on an environment, evaluating,
    exporting, resolving ``--policy``).

    Args:
        trained: The spec the policy was trained on, or its feature names.
        other: The dataset spec, feature spec or feature names of the data the policy meets
            (tasks are compared when both are dataset specs).
        policy_name: The policy, for the message.
        source: Where ``other`` came from (a dataset directory, ``"logs"``), for the message.
    """
    mine = trained.features.names if isinstance(trained, DatasetSpec) else tuple(trained)
    if isinstance(other, DatasetSpec):
        theirs = other.features.names
        if isinstance(trained, DatasetSpec) and tuple(other.tasks) != tuple(trained.tasks):
            raise PolicyError(
                f"{policy_name}: task mismatch: the policy sets weights for tasks "
                f"{list(trained.tasks)}; {source} has tasks {list(other.tasks)}"
            )
    elif isinstance(other, FeatureSpec):
        theirs = other.names
    else:
        theirs = tuple(other)
    if tuple(theirs) != tuple(mine):
        missing = [n for n in mine if n not in theirs]
        extra = [n for n in theirs if n not in mine]
        detail = (
            f" (missing {missing}, extra {extra})" if missing or extra else " (different order)"
        )
        raise PolicyError(
            f"{policy_name}: feature spec mismatch: the policy was trained on features "
            f"{list(mine)}; {source} has {list(theirs)}{detail}"
        )
