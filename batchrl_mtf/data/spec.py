"""The dataset spec (``features.json``): what a policy needs to know about the data it meets.

:class:`DatasetSpec` (features with normalisation statistics, tasks, action bounds, gamma,
hashes), the action bounds rule (:func:`action_bounds`), reading ``features.json``
(:func:`read_spec`) and the one check that a policy's features fit the data
(:func:`check_feature_spec`). The builder fills the spec in :func:`batchrl_mtf.data.build.dataset_spec`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from batchrl_mtf.core.fusion import Fusion
from batchrl_mtf.core.io import read_json
from batchrl_mtf.data.config import DatasetConfig
from batchrl_mtf.data.features import FeatureSpec
from batchrl_mtf.errors import ConfigError, DatasetError, FusionError, PolicyError

__all__ = [
    "DATASET_FORMAT",
    "DatasetSpec",
    "action_bounds",
    "bounds_from_range",
    "check_feature_spec",
    "dataset_fusion",
    "fusion_doc",
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
        fusion: The fusion the logged weights were applied with, one offset per task in task
            order; ``None`` for a dataset written before datasets recorded it.
        fusion_source: ``"given"`` (``build-dataset --formula/--beta`` or ``[fusion]``),
            ``"default"`` (nothing given: the default fusion was recorded) or ``""`` (none recorded).
    """

    features: FeatureSpec
    tasks: tuple[str, ...]
    action_low: tuple[float, ...]
    action_high: tuple[float, ...]
    gamma: float
    has_behavior_logp: bool
    dataset_hash: str
    data_hash: str
    fusion: Fusion | None = None
    fusion_source: str = ""

    @property
    def feature_names(self) -> tuple[str, ...]:
        """Feature names in observation order."""
        return self.features.names

    def to_dict(self) -> dict[str, object]:
        """The ``features.json`` document."""
        doc: dict[str, object] = {
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
        if self.fusion is not None:
            doc["fusion"] = fusion_doc(self.fusion, self.fusion_source, self.tasks)
        return doc

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
            tasks = tuple(str(t) for t in doc["tasks"])  # type: ignore[attr-defined]
            fusion, fusion_source = _recorded_fusion(doc.get("fusion"), tasks, source)
            return cls(
                features=FeatureSpec.from_dict(feats, source),
                tasks=tasks,
                action_low=tuple(float(x) for x in doc["action_low"]),  # type: ignore[attr-defined]
                action_high=tuple(float(x) for x in doc["action_high"]),  # type: ignore[attr-defined]
                gamma=float(doc["gamma"]),  # type: ignore[arg-type]
                has_behavior_logp=bool(doc["has_behavior_logp"]),
                dataset_hash=str(doc["dataset_hash"]),
                data_hash=str(doc["data_hash"]),
                fusion=fusion,
                fusion_source=fusion_source,
            )
        except FusionError:
            raise
        except (KeyError, TypeError, ValueError) as exc:
            raise DatasetError(f"{source}: missing or invalid field {exc}") from None


def _recorded_fusion(doc: object, tasks: tuple[str, ...], source: str) -> tuple[Fusion | None, str]:
    """The fusion recorded in ``features.json`` (``None`` in datasets written before it was)."""
    if doc is None:
        return None, ""
    where = f"{source}: fusion"
    if not isinstance(doc, dict):
        raise FusionError(f"{where}: expected an object with formula and beta, found {doc!r}")
    fusion = Fusion.from_dict(doc, where, ignore=("source",)).for_tasks(tasks, f"{where}.beta")
    return fusion, str(doc.get("source", "given"))


def dataset_fusion(config: DatasetConfig, tasks: Sequence[str]) -> tuple[Fusion, str]:
    """The fusion a dataset records, one offset per task, and its source.

    Returns:
        ``config.fusion`` (or the default :class:`~batchrl_mtf.core.fusion.Fusion` when it is
        ``None``) in task order, and ``"given"`` or ``"default"``.

    Raises:
        FusionError: Offsets that do not fit ``tasks`` (named offsets of other tasks, or neither
            one nor one per task).
    """
    fusion = (config.fusion or Fusion()).for_tasks(tasks, "fusion.beta")
    return fusion, "default" if config.fusion is None else "given"


def fusion_doc(fusion: Fusion, source: str, tasks: Sequence[str]) -> dict[str, object]:
    """The ``fusion`` object of ``features.json`` and ``report.json``."""
    return {**fusion.to_dict(tasks), "source": source}


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
    doc = read_json(fpath, DatasetError)
    if not isinstance(doc, dict):
        raise DatasetError(f"{fpath}: expected a JSON object, found {type(doc).__name__}")
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
