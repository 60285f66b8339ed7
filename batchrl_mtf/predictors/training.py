"""Training a multi-task predictor on impression logs (time-ordered split, held-out metrics).

Task losses (``docs/predictors.md``):

- binary task ``k``: binary cross-entropy ``L_k = -mean(y log p + (1 - y) log(1 - p))``;
- regression task ``k`` (``watch_time``-like, >= 0): the target is scaled into [0, 1] by
  ``y' = min(log1p(y) / log1p(c_k), 1)`` with ``c_k`` the ``regression_cap_quantile`` of the
  training targets, and ``L_k = mean((p - y')^2)`` on the sigmoid output ``p`` (the prediction
  in seconds is ``expm1(p * log1p(c_k))``);
- fixed fusion: ``L = sum_k w_k L_k`` (``task_weights``);
- uncertainty weighting (Kendall, Gal & Cipolla, CVPR 2018), with learnt ``s_k = log sigma_k^2``:
  ``L = sum_k c_k exp(-s_k) L_k + s_k / 2`` with ``c_k = 1`` for binary and ``1/2`` for
  regression tasks;
- soft sharing adds its L2 penalty between task networks.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm import tqdm

from batchrl_mtf.core.io import hash_bytes
from batchrl_mtf.errors import PredictorError, Problem, SchemaError
from batchrl_mtf.logs.schema import normalise_ts
from batchrl_mtf.predictors.config import PredictorConfig
from batchrl_mtf.predictors.features import Encoded, FeatureVocab, build_vocab
from batchrl_mtf.predictors.metrics import TaskMetrics, task_metrics
from batchrl_mtf.predictors.models import MultiTaskNet, build_model

__all__ = [
    "TrainedPredictor",
    "check_training_columns",
    "fit_predictor",
    "frame_hash",
    "join_items",
    "predict_encoded",
    "scale_regression",
    "time_split",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class TrainedPredictor:
    """A freshly trained predictor and what was measured on its held-out part.

    Attributes:
        config: The configuration it was trained with.
        vocab: Its feature vocabulary.
        model: The trained network (still trainable; freeze it with ``freeze``).
        regression_caps: Scale ``c_k`` of each regression task (seconds for ``watch_time``).
        metrics: Held-out metrics, one per task, in task order.
        epoch_losses: Mean training loss of each epoch.
        task_log_vars: Learnt ``s_k = log sigma_k^2`` under uncertainty weighting, else empty.
        n_train: Training rows.
        n_valid: Held-out rows.
        data_hash: Hash of the training logs.
    """

    config: PredictorConfig
    vocab: FeatureVocab
    model: MultiTaskNet
    regression_caps: Mapping[str, float]
    metrics: tuple[TaskMetrics, ...]
    epoch_losses: tuple[float, ...]
    task_log_vars: tuple[float, ...]
    n_train: int
    n_valid: int
    data_hash: str


def frame_hash(df: pd.DataFrame) -> str:
    """A content hash of a data frame (values and column names, not the index)."""
    values = pd.util.hash_pandas_object(df, index=False).to_numpy().tobytes()
    return hash_bytes(values + "\x00".join(map(str, df.columns)).encode())


def time_split(ts_ms: np.ndarray, valid_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """Split rows by time: the latest ``valid_fraction`` of rows (by ``ts``) are held out.

    Args:
        ts_ms: Epoch milliseconds, shape (n,).
        valid_fraction: Share of rows held out.

    Returns:
        ``(train_rows, valid_rows)``, int arrays; every training row is no later than every
        held-out row (ties broken by row order).
    """
    n = len(ts_ms)
    n_valid = max(1, round(n * valid_fraction))
    if n - n_valid < 1:
        raise PredictorError(
            f"logs: need at least 2 rows to split into training and held-out parts, found {n}"
        )
    order = np.argsort(ts_ms, kind="stable")
    return np.sort(order[: n - n_valid]), np.sort(order[n - n_valid :])


def join_items(
    logs: pd.DataFrame, items: pd.DataFrame | None, file: str = "<items>"
) -> tuple[pd.DataFrame, tuple[str, ...]]:
    """Join numeric item features onto logs and name the item feature columns.

    Item features are ``duration`` when the logs have it, plus every numeric column of the
    optional item table (joined on ``item_id``; a column also present in the logs keeps the logs'
    values).

    Returns:
        ``(logs with the table's columns, item feature names)``.
    """
    names: list[str] = []
    if "duration" in logs.columns and pd.api.types.is_numeric_dtype(logs["duration"]):
        names.append("duration")
    if items is None:
        return logs, tuple(names)
    if "item_id" not in items.columns:
        raise SchemaError(
            f"{file}: missing column 'item_id'; found {', '.join(map(str, items.columns))}"
        )
    keys = items["item_id"].astype(str)
    if keys.duplicated().any():
        raise SchemaError(
            f"{file}: column 'item_id': expected unique ids, found {int(keys.duplicated().sum())} repeated"
        )
    cols = [
        c
        for c in items.columns
        if c != "item_id"
        and pd.api.types.is_numeric_dtype(items[c])
        and not pd.api.types.is_bool_dtype(items[c])
    ]
    clash = [c for c in cols if c in logs.columns]
    if clash:
        logger.warning(
            "%s: column(s) %s are also in the logs; the logs' values are used",
            file,
            ", ".join(clash),
        )
    cols = [c for c in cols if c not in logs.columns]
    if not cols:
        return logs, tuple(names)
    table = items[cols].set_axis(keys.to_numpy(), axis=0)
    joined = table.reindex(logs["item_id"].astype(str).to_numpy())
    out = logs.copy()
    for c in cols:
        out[c] = joined[c].to_numpy()
    return out, (*names, *cols)


def scale_regression(y: np.ndarray, cap: float) -> np.ndarray:
    """``min(log1p(y) / log1p(cap), 1)``, shape like ``y``."""
    return np.clip(np.log1p(np.maximum(y, 0.0)) / math.log1p(cap), 0.0, 1.0)


def _targets(df: pd.DataFrame, config: PredictorConfig, caps: Mapping[str, float]) -> np.ndarray:
    """Training targets, float32 (n, K); ESMM post-click tasks get ``click * task``."""
    out = np.zeros((len(df), len(config.tasks)), dtype=np.float32)
    for k, task in enumerate(config.tasks):
        y = df[task].to_numpy(dtype=np.float64)
        if config.is_regression(task):
            y = scale_regression(y, caps[task])
        elif config.model == "esmm" and task != config.ctr_task:
            y = y * df[config.ctr_task].to_numpy(dtype=np.float64)
        out[:, k] = y
    return out


class _TaskLoss(nn.Module):
    """Fused task loss: fixed weights or uncertainty weighting (see the module docstring)."""

    def __init__(self, config: PredictorConfig) -> None:
        super().__init__()
        self.regression = torch.tensor([config.is_regression(t) for t in config.tasks])
        self.fixed = torch.tensor(config.weights(), dtype=torch.float32)
        self.uncertainty = config.loss_weighting == "uncertainty"
        self.log_vars = nn.Parameter(torch.zeros(len(config.tasks)), requires_grad=self.uncertainty)

    def per_task(self, p: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Loss of each task, shape (K,), from probabilities and targets (n, K)."""
        q = p.clamp(1e-7, 1 - 1e-7)
        bce = -(y * torch.log(q) + (1 - y) * torch.log(1 - q)).mean(dim=0)
        mse = ((p - y) ** 2).mean(dim=0)
        return torch.where(self.regression, mse, bce)

    def forward(self, p: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        losses = self.per_task(p, y)
        if not self.uncertainty:
            return (self.fixed * losses).sum()
        c = torch.where(self.regression, 0.5, 1.0)
        return (c * torch.exp(-self.log_vars) * losses + 0.5 * self.log_vars).sum()


def _tensors(enc: Encoded) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return (
        torch.from_numpy(enc.user_idx),
        torch.from_numpy(enc.item_idx),
        torch.from_numpy(enc.dense),
    )


def predict_encoded(model: MultiTaskNet, enc: Encoded, batch_size: int = 65536) -> np.ndarray:
    """Probabilities of ``model`` on encoded inputs, float64 (n, K), in eval mode, no gradients."""
    was_training = model.training
    model.eval()
    outs = []
    u, i, d = _tensors(enc)
    with torch.inference_mode():
        for start in range(0, len(enc), batch_size):
            sl = slice(start, start + batch_size)
            outs.append(model(u[sl], i[sl], d[sl]).double().numpy())
    model.train(was_training)
    if not outs:
        return np.zeros((0, len(model.tasks)), dtype=np.float64)
    return np.concatenate(outs, axis=0)


def check_training_columns(
    df: pd.DataFrame, tasks: Sequence[str], regression_tasks: Sequence[str], file: str
) -> None:
    """Check that ``df`` has what training needs: ids, ``ts`` and clean task labels.

    Args:
        df: The logs.
        tasks: Task label columns.
        regression_tasks: Tasks that are regression targets (numeric >= 0); the others must be 0/1.
        file: The logs' file name, for messages.

    Raises:
        SchemaError: Listing every problem found, each naming the file and column.
    """
    problems: list[Problem] = []
    for col in ("user_id", "item_id", "ts"):
        if col not in df.columns:
            problems.append(
                Problem("required_column", file, col, "the column to exist", "it is missing")
            )
    for task in tasks:
        if task not in df.columns:
            problems.append(
                Problem(
                    "task_column", file, task, f"a label column for task '{task}'", "it is missing"
                )
            )
            continue
        labels = df[task]
        if not pd.api.types.is_numeric_dtype(labels):
            problems.append(
                Problem("label_type", file, task, "numeric labels", f"dtype {labels.dtype}")
            )
            continue
        values = labels.to_numpy(dtype=np.float64)
        n_nan = int(np.isnan(values).sum())
        if n_nan:
            problems.append(
                Problem(
                    "label_missing",
                    file,
                    task,
                    "no missing labels",
                    f"{n_nan} missing",
                    n_rows=n_nan,
                )
            )
            continue
        if task in regression_tasks:
            bad = values < 0
            if bad.any():
                problems.append(
                    Problem(
                        "label_range",
                        file,
                        task,
                        "regression labels >= 0",
                        f"min {values.min():g}",
                        n_rows=int(bad.sum()),
                    )
                )
        else:
            bad = (values != 0) & (values != 1)
            if bad.any():
                problems.append(
                    Problem(
                        "label_binary",
                        file,
                        task,
                        "binary 0/1 labels (list the task in regression_tasks / --regression otherwise)",
                        f"values such as {values[bad][0]:g}",
                        n_rows=int(bad.sum()),
                    )
                )
    if problems:
        first = problems[0]
        raise SchemaError(
            f"{file}: {len(problems)} problem(s) with the predictor's columns; first: column "
            f"'{first.column}': expected {first.expected}, found {first.found}",
            tuple(problems),
        )
    if len(df) == 0:
        raise SchemaError(f"{file}: the logs have no rows")
    logger.debug("%s: %d rows, columns checked for tasks %s", file, len(df), ", ".join(tasks))


def fit_predictor(
    logs: pd.DataFrame,
    config: PredictorConfig,
    items: pd.DataFrame | None = None,
    *,
    file: str = "<dataframe>",
    data_hash: str = "",
    progress: bool = False,
) -> TrainedPredictor:
    """Train a multi-task predictor on logs with a time-ordered split.

    Args:
        logs: Impression logs (log schema v1): ``user_id``, ``item_id``, ``ts``, one label column
            per task, optional ``u_*``, ``duration`` and context columns; n rows.
        config: What to train.
        items: Optional item table (``item_id`` + numeric columns), joined on ``item_id``.
        file: Name of the logs for messages.
        data_hash: Hash of the logs for the artefact (computed from ``logs`` when empty).
        progress: Show a progress bar on stderr.

    Raises:
        SchemaError: When columns are missing or labels are invalid.
        PredictorError: When the logs are too small to split.
    """
    check_training_columns(logs, config.tasks, config.regression_tasks, file)
    missing_ctx = [c for c in config.context_features if c not in logs.columns]
    if missing_ctx:
        raise SchemaError(
            f"{file}: missing context column(s) {', '.join(map(repr, missing_ctx))} named in context_features"
        )
    ts = normalise_ts(logs["ts"], file).to_numpy(dtype=np.int64)
    n_missing = int(np.count_nonzero(ts == np.iinfo(np.int64).min))
    if n_missing:
        raise SchemaError(f"{file}: column 'ts' has {n_missing} missing value(s)")
    df, item_features = join_items(logs, items)
    user_features = tuple(
        sorted(
            c
            for c in df.columns
            if str(c).startswith("u_") and pd.api.types.is_numeric_dtype(df[c])
        )
    )
    train_rows, valid_rows = time_split(ts, config.valid_fraction)
    train_df = df.iloc[train_rows].reset_index(drop=True)
    valid_df = df.iloc[valid_rows].reset_index(drop=True)
    vocab = build_vocab(
        train_df, user_features, item_features, config.context_features, config.min_id_count
    )
    caps = {}
    for task in config.tasks:
        if config.is_regression(task):
            q = float(
                np.quantile(
                    train_df[task].to_numpy(dtype=np.float64), config.regression_cap_quantile
                )
            )
            caps[task] = q if q > 0 else 1.0
    enc_train = vocab.encode(train_df, train_df)
    enc_valid = vocab.encode(valid_df, valid_df)
    y_train = torch.from_numpy(_targets(train_df, config, caps))
    y_valid = _targets(valid_df, config, caps)
    logger.info(
        "training %s on %d rows (%d held out): %d users, %d items, %d dense features",
        config.model,
        len(train_df),
        len(valid_df),
        vocab.n_users - 1,
        vocab.n_items - 1,
        vocab.n_dense,
    )

    torch.manual_seed(config.seed)
    model = build_model(config, vocab.n_users, vocab.n_items, vocab.n_dense)
    loss_fn = _TaskLoss(config)
    params = [p for p in (*model.parameters(), *loss_fn.parameters()) if p.requires_grad]
    opt = torch.optim.Adam(params, lr=config.learning_rate, weight_decay=config.weight_decay)
    rng = np.random.default_rng(config.seed)
    u_all, i_all, d_all = _tensors(enc_train)
    n = len(enc_train)
    n_batches = math.ceil(n / config.batch_size)
    epoch_losses: list[float] = []
    model.train()
    with tqdm(
        total=config.n_epochs * n_batches,
        desc=f"fit {config.model}",
        disable=not progress,
        leave=False,
    ) as bar:
        for _epoch in range(config.n_epochs):
            perm = torch.from_numpy(rng.permutation(n))
            total = 0.0
            for start in range(0, n, config.batch_size):
                rows = perm[start : start + config.batch_size]
                u, i = u_all[rows].clone(), i_all[rows].clone()
                if config.id_dropout > 0:
                    u[torch.from_numpy(rng.random(len(rows)) < config.id_dropout)] = 0
                    i[torch.from_numpy(rng.random(len(rows)) < config.id_dropout)] = 0
                p = model(u, i, d_all[rows])
                loss = loss_fn(p, y_train[rows]) + model.penalty()
                opt.zero_grad()
                loss.backward()
                opt.step()
                total += float(loss.detach()) * len(rows)
                bar.update(1)
            epoch_losses.append(total / n)
            logger.debug("epoch %d: mean training loss %.5f", _epoch + 1, epoch_losses[-1])
    model.eval()
    p_valid = predict_encoded(model, enc_valid)
    metrics = tuple(
        task_metrics(
            t, "regression" if config.is_regression(t) else "binary", y_valid[:, k], p_valid[:, k]
        )
        for k, t in enumerate(config.tasks)
    )
    log_vars = tuple(float(x) for x in loss_fn.log_vars.detach()) if loss_fn.uncertainty else ()
    return TrainedPredictor(
        config=config,
        vocab=vocab,
        model=model,
        regression_caps=caps,
        metrics=metrics,
        epoch_losses=tuple(epoch_losses),
        task_log_vars=log_vars,
        n_train=len(train_df),
        n_valid=len(valid_df),
        data_hash=data_hash or frame_hash(logs),
    )
