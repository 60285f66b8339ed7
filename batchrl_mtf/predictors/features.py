"""Feature vocabulary of a predictor: id maps, numeric feature scaling and per-id feature tables.

Inputs of every model are a user id, an item id and one dense vector of numeric features
(``[user features u_*, item features, context features]``).

Unknown-id fallback (documented contract): an id that was not seen in training (or was seen fewer
than ``min_id_count`` times) maps to index 0, the reserved *unknown* row of its embedding table.
Training replaces a random ``id_dropout`` share of ids by index 0, so that row learns an average
user / item rather than staying at its random initialisation. A numeric feature that is missing
from the frame given at inference is looked up from the per-id table learnt in training (the id's
mean, standardised); for unknown ids, missing values (NaN) and missing context it is 0, the
training mean. Nothing about unseen inputs raises.

Numeric transform: ``z = (sign(x) * log1p(|x|) - mean) / std`` with ``mean``/``std`` from training.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from batchrl_mtf.errors import PredictorError

__all__ = ["UNKNOWN_INDEX", "Encoded", "FeatureVocab", "build_vocab", "signed_log"]

logger = logging.getLogger(__name__)

UNKNOWN_INDEX = 0


def signed_log(x: np.ndarray) -> np.ndarray:
    """``sign(x) * log1p(|x|)``, elementwise; compresses durations and counts."""
    return np.sign(x) * np.log1p(np.abs(x))


@dataclass(frozen=True)
class Encoded:
    """Model inputs for ``n`` (user, item) pairs.

    Attributes:
        user_idx: User embedding rows, int64, shape (n,); 0 is the unknown user.
        item_idx: Item embedding rows, int64, shape (n,); 0 is the unknown item.
        dense: Standardised numeric features, float32, shape (n, n_dense).
    """

    user_idx: np.ndarray
    item_idx: np.ndarray
    dense: np.ndarray

    def __len__(self) -> int:
        return int(self.user_idx.shape[0])

    def take(self, rows: np.ndarray) -> Encoded:
        """The subset at ``rows`` (int array, shape (m,))."""
        return Encoded(self.user_idx[rows], self.item_idx[rows], self.dense[rows])


@dataclass(frozen=True, eq=False)
class FeatureVocab:
    """What turns (users, items) frames into model inputs.

    Attributes:
        user_ids: Known user ids as strings; user ``user_ids[j]`` has embedding row ``j + 1``.
        item_ids: Known item ids as strings; item ``item_ids[j]`` has embedding row ``j + 1``.
        user_features: Numeric user feature columns (``u_*``).
        item_features: Numeric item feature columns (e.g. ``duration``).
        context_features: Numeric context columns (e.g. ``position``).
        means: Training mean of each dense column after ``signed_log``, shape (n_dense,).
        stds: Training standard deviation of each dense column after ``signed_log``.
        user_table: Standardised mean user features per user row, float32, (n_users + 1, n_uf).
        item_table: Standardised mean item features per item row, float32, (n_items + 1, n_if).
    """

    user_ids: tuple[str, ...]
    item_ids: tuple[str, ...]
    user_features: tuple[str, ...]
    item_features: tuple[str, ...]
    context_features: tuple[str, ...]
    means: tuple[float, ...]
    stds: tuple[float, ...]
    user_table: np.ndarray
    item_table: np.ndarray
    _user_index: _IdIndex = field(init=False, repr=False)
    _item_index: _IdIndex = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_user_index", _IdIndex(self.user_ids))
        object.__setattr__(self, "_item_index", _IdIndex(self.item_ids))
        if len(self.means) != self.n_dense or len(self.stds) != self.n_dense:
            raise PredictorError(
                f"feature vocabulary: expected {self.n_dense} means/stds, found {len(self.means)}/{len(self.stds)}"
            )
        if self.user_table.shape != (self.n_users, len(self.user_features)):
            raise PredictorError(
                f"feature vocabulary: user table has shape {self.user_table.shape}"
            )
        if self.item_table.shape != (self.n_items, len(self.item_features)):
            raise PredictorError(
                f"feature vocabulary: item table has shape {self.item_table.shape}"
            )

    @property
    def n_users(self) -> int:
        """Rows of the user embedding table (known users + the unknown row)."""
        return len(self.user_ids) + 1

    @property
    def n_items(self) -> int:
        """Rows of the item embedding table (known items + the unknown row)."""
        return len(self.item_ids) + 1

    @property
    def dense_features(self) -> tuple[str, ...]:
        """Names of the dense columns, in order."""
        return self.user_features + self.item_features + self.context_features

    @property
    def n_dense(self) -> int:
        """Width of the dense input."""
        return len(self.dense_features)

    def user_index(self, ids: pd.Series | np.ndarray | Sequence[object]) -> np.ndarray:
        """Embedding rows of user ids, int64 shape (n,); unknown ids give 0."""
        return self._user_index.lookup(ids)

    def item_index(self, ids: pd.Series | np.ndarray | Sequence[object]) -> np.ndarray:
        """Embedding rows of item ids, int64 shape (n,); unknown ids give 0."""
        return self._item_index.lookup(ids)

    def encode(self, users: pd.DataFrame, items: pd.DataFrame) -> Encoded:
        """Encode aligned rows of ``users`` and ``items``.

        Args:
            users: ``user_id`` plus any ``u_*`` columns, n rows.
            items: ``item_id`` plus numeric item features and context columns, n rows (row ``i``
                is shown to user row ``i``). Context columns may also come from ``users``.

        Raises:
            PredictorError: When an id column is missing or the frames differ in length.
        """
        for frame, id_col, name in ((users, "user_id", "users"), (items, "item_id", "items")):
            if id_col not in frame.columns:
                raise PredictorError(
                    f"{name}: missing column '{id_col}'; found {', '.join(map(str, frame.columns))}"
                )
        if len(users) != len(items):
            raise PredictorError(
                f"users and items must be aligned row by row; found {len(users)} and {len(items)} rows"
            )
        u = self.user_index(users["user_id"])
        i = self.item_index(items["item_id"])
        n = len(u)
        dense = np.zeros((n, self.n_dense), dtype=np.float32)
        col = 0
        for names, frame, table, idx in (
            (self.user_features, users, self.user_table, u),
            (self.item_features, items, self.item_table, i),
        ):
            for j, feature in enumerate(names):
                if feature in frame.columns:
                    dense[:, col] = self._standardise(col, frame[feature])
                else:
                    logger.debug("feature %s not given; using the per-id table", feature)
                    dense[:, col] = table[idx, j]
                col += 1
        for feature in self.context_features:
            source = items if feature in items.columns else users
            if feature in source.columns:
                dense[:, col] = self._standardise(col, source[feature])
            col += 1
        return Encoded(u, i, dense)

    def _standardise(self, col: int, values: pd.Series) -> np.ndarray:
        x = pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64)
        z = (signed_log(x) - self.means[col]) / self.stds[col]
        return np.nan_to_num(z, nan=0.0, posinf=0.0, neginf=0.0).astype(np.float32)

    def to_json(self) -> dict[str, object]:
        """The vocabulary without its tables, as a JSON-ready mapping."""
        return {
            "user_ids": list(self.user_ids),
            "item_ids": list(self.item_ids),
            "user_features": list(self.user_features),
            "item_features": list(self.item_features),
            "context_features": list(self.context_features),
            "means": list(self.means),
            "stds": list(self.stds),
        }

    @classmethod
    def from_json(
        cls, data: Mapping[str, object], user_table: np.ndarray, item_table: np.ndarray
    ) -> FeatureVocab:
        """Inverse of :meth:`to_json`, given the tables."""
        try:
            return cls(
                user_ids=tuple(str(x) for x in data["user_ids"]),  # type: ignore[attr-defined]
                item_ids=tuple(str(x) for x in data["item_ids"]),  # type: ignore[attr-defined]
                user_features=tuple(str(x) for x in data["user_features"]),  # type: ignore[attr-defined]
                item_features=tuple(str(x) for x in data["item_features"]),  # type: ignore[attr-defined]
                context_features=tuple(str(x) for x in data["context_features"]),  # type: ignore[attr-defined]
                means=tuple(float(x) for x in data["means"]),  # type: ignore[attr-defined]
                stds=tuple(float(x) for x in data["stds"]),  # type: ignore[attr-defined]
                user_table=np.asarray(user_table, dtype=np.float32),
                item_table=np.asarray(item_table, dtype=np.float32),
            )
        except (KeyError, TypeError) as exc:
            raise PredictorError(f"feature vocabulary: missing or malformed entry {exc}") from None


class _IdIndex:
    """Id -> embedding row (0 = unknown). Ids match by their string form; integer input is
    looked up numerically when every known id is a canonical integer (same result, faster)."""

    def __init__(self, ids: tuple[str, ...]) -> None:
        self.by_str = pd.Index(ids, dtype=object)
        if not self.by_str.is_unique:
            raise PredictorError("feature vocabulary: ids must be unique")
        self.by_int: pd.Index | None = None
        try:
            as_int = [int(x) for x in ids]
        except ValueError:
            return
        if [str(x) for x in as_int] == list(ids):
            self.by_int = pd.Index(np.asarray(as_int, dtype=np.int64))

    def lookup(self, ids: pd.Series | np.ndarray | Sequence[object]) -> np.ndarray:
        """Rows of ``ids`` (n,), int64; unknown ids give 0."""
        if len(self.by_str) == 0:
            return np.zeros(len(ids), dtype=np.int64)
        values = ids.to_numpy() if isinstance(ids, pd.Series) else np.asarray(ids)
        if self.by_int is not None and values.dtype.kind in "iu":
            pos = self.by_int.get_indexer(pd.Index(values.astype(np.int64)))
        else:
            pos = self.by_str.get_indexer(
                pd.Index(pd.Series(values).astype(str).to_numpy(), dtype=object)
            )
        return np.asarray(pos, dtype=np.int64) + 1


def build_vocab(
    train: pd.DataFrame,
    user_features: Sequence[str],
    item_features: Sequence[str],
    context_features: Sequence[str],
    min_id_count: int,
) -> FeatureVocab:
    """Fit the vocabulary on the training rows.

    Args:
        train: Training logs (``user_id``, ``item_id`` and every named feature column), n rows.
        user_features: Numeric user columns.
        item_features: Numeric item columns.
        context_features: Numeric context columns.
        min_id_count: Ids seen fewer times map to the unknown row.
    """
    user_ids = _frequent_ids(train["user_id"], min_id_count)
    item_ids = _frequent_ids(train["item_id"], min_id_count)
    names = (*user_features, *item_features, *context_features)
    means: list[float] = []
    stds: list[float] = []
    for name in names:
        x = signed_log(pd.to_numeric(train[name], errors="coerce").to_numpy(dtype=np.float64))
        finite = x[np.isfinite(x)]
        mean = float(finite.mean()) if finite.size else 0.0
        std = float(finite.std()) if finite.size else 1.0
        means.append(mean)
        stds.append(std if std > 1e-8 else 1.0)
    partial = FeatureVocab(
        user_ids=user_ids,
        item_ids=item_ids,
        user_features=tuple(user_features),
        item_features=tuple(item_features),
        context_features=tuple(context_features),
        means=tuple(means),
        stds=tuple(stds),
        user_table=np.zeros((len(user_ids) + 1, len(user_features)), dtype=np.float32),
        item_table=np.zeros((len(item_ids) + 1, len(item_features)), dtype=np.float32),
    )
    enc = partial.encode(train, train)
    n_uf, n_if = len(user_features), len(item_features)
    user_table = _mean_table(enc.user_idx, enc.dense[:, :n_uf], partial.n_users)
    item_table = _mean_table(enc.item_idx, enc.dense[:, n_uf : n_uf + n_if], partial.n_items)
    return FeatureVocab(
        user_ids=user_ids,
        item_ids=item_ids,
        user_features=tuple(user_features),
        item_features=tuple(item_features),
        context_features=tuple(context_features),
        means=tuple(means),
        stds=tuple(stds),
        user_table=user_table,
        item_table=item_table,
    )


def _frequent_ids(ids: pd.Series, min_count: int) -> tuple[str, ...]:
    counts = ids.astype(str).value_counts(sort=False)
    kept = counts[counts >= min_count].index
    return tuple(sorted(str(x) for x in kept))


def _mean_table(idx: np.ndarray, values: np.ndarray, n_rows: int) -> np.ndarray:
    """Per-row mean of ``values`` (n, f) grouped by ``idx`` (n,); row 0 and unseen rows are 0."""
    table = np.zeros((n_rows, values.shape[1]), dtype=np.float64)
    if values.shape[1] == 0:
        return table.astype(np.float32)
    counts = np.bincount(idx, minlength=n_rows).astype(np.float64)
    for j in range(values.shape[1]):
        table[:, j] = np.bincount(idx, weights=values[:, j], minlength=n_rows)
    table /= np.maximum(counts, 1.0)[:, None]
    table[0] = 0.0
    return table.astype(np.float32)
