"""Re-scoring logs with a frozen predictor: rewrite their ``pred_<task>`` columns."""

from __future__ import annotations

import io
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from batchrl_mtf.core.io import atomic_write_bytes
from batchrl_mtf.errors import PredictorError, SchemaError
from batchrl_mtf.logs.schema import read_table
from batchrl_mtf.predictors.artefact import FrozenPredictor, load_predictor
from batchrl_mtf.predictors.training import join_items

__all__ = ["predict", "rescore_frame", "rescore_logs", "write_table"]

logger = logging.getLogger(__name__)


def predict(
    predictor: FrozenPredictor | str | Path, users: pd.DataFrame, items: pd.DataFrame
) -> dict[str, np.ndarray]:
    """Batched ``pred_<task>`` for aligned (user, item) rows; see :meth:`FrozenPredictor.predict`.

    Args:
        predictor: A frozen predictor or the path of its artefact directory.
        users: ``user_id`` and ``u_*`` columns, n rows.
        items: ``item_id`` and numeric item features (and context), n rows.

    Returns:
        ``{"pred_<task>": float64 array (n,)}``.
    """
    frozen = predictor if isinstance(predictor, FrozenPredictor) else load_predictor(predictor)
    return frozen.predict(users, items)


def rescore_frame(
    logs: pd.DataFrame, predictor: FrozenPredictor, items: pd.DataFrame | None = None
) -> pd.DataFrame:
    """Return a copy of ``logs`` whose ``pred_<task>`` columns come from ``predictor``.

    Columns of the predictor's tasks are overwritten (or added); other ``pred_*`` columns are
    kept as they are. Row order and every other column are unchanged.

    Args:
        logs: Impression logs with ``user_id``, ``item_id`` and the predictor's features, n rows.
        predictor: The frozen predictor.
        items: Optional item table (``item_id`` + numeric columns) for item features that are not
            in the logs.
    """
    for col in ("user_id", "item_id"):
        if col not in logs.columns:
            raise SchemaError(f"logs: missing column '{col}' needed to re-score")
    features, _ = join_items(logs, items)
    preds = predictor.predict(features, features)
    out = logs.copy()
    for name, values in preds.items():
        out[name] = values
    kept = sorted(c for c in logs.columns if str(c).startswith("pred_") and c not in preds)
    if kept:
        logger.warning(
            "columns %s are not predicted by this predictor and were kept", ", ".join(kept)
        )
    return out


def write_table(df: pd.DataFrame, out: str | Path) -> None:
    """Write ``df`` atomically as Parquet (``.parquet``/``.pq``) or CSV (``.csv``)."""
    path = Path(out)
    suffix = path.suffix.lower()
    if suffix in (".parquet", ".pq"):
        buf = io.BytesIO()
        df.to_parquet(buf, index=False)
        atomic_write_bytes(path, buf.getvalue())
    elif suffix == ".csv":
        atomic_write_bytes(path, df.to_csv(index=False).encode("utf-8"))
    else:
        raise PredictorError(
            f"{path}: unsupported output file type {suffix or '(none)'!r}; expected .parquet or .csv"
        )


def rescore_logs(
    logs_path: str | Path,
    predictor_dir: str | Path,
    out: str | Path,
    items_path: str | Path | None = None,
) -> pd.DataFrame:
    """Read logs, rewrite their ``pred_<task>`` columns with a saved predictor, write ``out``.

    Returns:
        The re-scored logs.
    """
    if Path(out).suffix.lower() not in (".parquet", ".pq", ".csv"):
        raise PredictorError(f"{out}: unsupported output file type; expected .parquet or .csv")
    predictor = load_predictor(predictor_dir)
    logs = read_table(logs_path)
    items = read_table(items_path) if items_path is not None else None
    try:
        out_df = rescore_frame(logs, predictor, items)
    except SchemaError as exc:
        raise SchemaError(f"{logs_path}: {exc}", exc.problems) from None
    write_table(out_df, out)
    logger.info(
        "re-scored %d rows of %s with predictor %s",
        len(out_df),
        logs_path,
        predictor.content_hash[:19],
    )
    return out_df
