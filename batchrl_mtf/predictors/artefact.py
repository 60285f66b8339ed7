"""Frozen predictor artefacts: freeze, save, load (no pickle) and predict.

An artefact is a directory::

    weights.safetensors   network weights + per-id feature tables (safetensors, no pickle)
    config.json           the PredictorConfig, task kinds, regression scales, table sizes
    vocab.json            id vocabularies, feature names, numeric scaling
    metrics.json          held-out metrics, training losses
    meta.json             content hash, data hash, package versions

The content hash is ``sha256`` over ``weights.safetensors``, ``config.json`` and ``vocab.json``
(in that order, NUL-separated); loading recomputes it and refuses a mismatch.
"""

from __future__ import annotations

import json
import logging
import types
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from batchrl_mtf.core.config import config_from_mapping, config_to_dict
from batchrl_mtf.core.io import (
    atomic_dir,
    check_output_dir,
    dumps_json,
    hash_bytes,
    package_versions,
)
from batchrl_mtf.errors import ConfigError, PredictorError
from batchrl_mtf.predictors.config import PredictorConfig
from batchrl_mtf.predictors.features import Encoded, FeatureVocab
from batchrl_mtf.predictors.metrics import TaskMetrics
from batchrl_mtf.predictors.models import MultiTaskNet, build_model
from batchrl_mtf.predictors.training import TrainedPredictor, predict_encoded

__all__ = ["FORMAT_VERSION", "FrozenPredictor", "freeze", "load_predictor", "save_predictor"]

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
WEIGHTS, CONFIG, VOCAB, METRICS, META = (
    "weights.safetensors",
    "config.json",
    "vocab.json",
    "metrics.json",
    "meta.json",
)


def _stay_in_eval(self: torch.nn.Module, mode: bool = True) -> torch.nn.Module:
    """Replacement of ``Module.train`` on frozen networks: they stay in eval mode."""
    for module in self.modules():
        module.training = False
    return self


class FrozenPredictor:
    """A trained multi-task predictor that cannot be trained any more.

    The network is in eval mode (``train()`` is a no-op), every parameter has
    ``requires_grad=False``, and predictions run under ``torch.inference_mode``, so no training
    code can compute gradients through it. :meth:`verify` re-hashes the weights against
    :attr:`content_hash`.

    Attributes:
        config: The configuration it was trained with.
        vocab: Its feature vocabulary.
        regression_caps: Scale ``c_k`` of each regression task.
        content_hash: ``sha256:<hex>`` of the serialised artefact.
    """

    def __init__(
        self,
        model: MultiTaskNet,
        vocab: FeatureVocab,
        config: PredictorConfig,
        regression_caps: Mapping[str, float],
        content_hash: str = "",
    ) -> None:
        model.eval()
        for p in model.parameters():
            p.requires_grad_(False)
        model.train = types.MethodType(_stay_in_eval, model)  # type: ignore[method-assign]
        for m in model.modules():
            if m is not model:
                m.train = types.MethodType(_stay_in_eval, m)  # type: ignore[method-assign]
        self._model = model
        self.vocab = vocab
        self.config = config
        self.regression_caps = dict(regression_caps)
        self.content_hash = content_hash or hash_bytes(
            _joined(*_serialise(model, vocab, config, regression_caps))
        )

    @property
    def tasks(self) -> tuple[str, ...]:
        """Predicted tasks, in output order."""
        return tuple(self.config.tasks)

    @property
    def model(self) -> MultiTaskNet:
        """The frozen network (eval mode, no gradients)."""
        return self._model

    def encode(self, users: pd.DataFrame, items: pd.DataFrame) -> Encoded:
        """Encode aligned ``users``/``items`` rows (see :meth:`FeatureVocab.encode`)."""
        return self.vocab.encode(users, items)

    def predict_arrays(
        self, user_idx: np.ndarray, item_idx: np.ndarray, dense: np.ndarray, batch_size: int = 65536
    ) -> np.ndarray:
        """Fast path on encoded inputs.

        Args:
            user_idx: User rows from ``vocab.user_index``, int64, shape (n,).
            item_idx: Item rows from ``vocab.item_index``, int64, shape (n,).
            dense: Standardised features, float32, shape (n, vocab.n_dense).
            batch_size: Rows per forward pass.

        Returns:
            Probabilities, float64, shape (n, K), columns in :attr:`tasks` order.
        """
        enc = Encoded(
            np.ascontiguousarray(user_idx, dtype=np.int64),
            np.ascontiguousarray(item_idx, dtype=np.int64),
            np.ascontiguousarray(dense, dtype=np.float32),
        )
        if enc.dense.shape != (len(enc), self.vocab.n_dense):
            raise PredictorError(
                f"dense: expected shape ({len(enc)}, {self.vocab.n_dense}), found {enc.dense.shape}"
            )
        return predict_encoded(self._model, enc, batch_size)

    def predict(
        self, users: pd.DataFrame, items: pd.DataFrame, batch_size: int = 65536
    ) -> dict[str, np.ndarray]:
        """Predict every task for aligned (user, item) rows.

        Args:
            users: ``user_id`` and ``u_*`` columns, n rows.
            items: ``item_id``, numeric item features (e.g. ``duration``) and context columns,
                n rows; row ``i`` is shown to user row ``i``.
            batch_size: Rows per forward pass.

        Returns:
            ``{"pred_<task>": float64 array (n,) in [0, 1]}``. Regression tasks give their scaled
            target; :meth:`to_target_units` converts it back (seconds for ``watch_time``).
            Unknown ids and missing features use the documented fallback (never raise).
        """
        enc = self.encode(users, items)
        probs = np.clip(predict_encoded(self._model, enc, batch_size), 0.0, 1.0)
        return {f"pred_{t}": np.ascontiguousarray(probs[:, k]) for k, t in enumerate(self.tasks)}

    def to_target_units(self, task: str, pred: np.ndarray) -> np.ndarray:
        """Convert a regression task's prediction (n,) in [0, 1] back to target units (n,)."""
        if task not in self.regression_caps:
            raise PredictorError(f"task {task!r} is not a regression task of this predictor")
        return np.expm1(np.asarray(pred, dtype=np.float64) * np.log1p(self.regression_caps[task]))

    def verify(self) -> None:
        """Raise :class:`PredictorError` unless the weights still hash to :attr:`content_hash`."""
        now = hash_bytes(
            _joined(*_serialise(self._model, self.vocab, self.config, self.regression_caps))
        )
        if now != self.content_hash:
            raise PredictorError(
                f"frozen predictor was modified: content hash {now} != {self.content_hash}"
            )


def _joined(weights: bytes, config_text: str, vocab_text: str) -> bytes:
    return weights + b"\x00" + config_text.encode() + b"\x00" + vocab_text.encode()


def _serialise(
    model: MultiTaskNet, vocab: FeatureVocab, config: PredictorConfig, caps: Mapping[str, float]
) -> tuple[bytes, str, str]:
    tensors = {f"model.{k}": v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    tensors["vocab.user_table"] = torch.from_numpy(
        np.ascontiguousarray(vocab.user_table, dtype=np.float32)
    )
    tensors["vocab.item_table"] = torch.from_numpy(
        np.ascontiguousarray(vocab.item_table, dtype=np.float32)
    )
    # No safetensors metadata: its key order is not stable and the content hash covers the bytes.
    weights = st_save(tensors)
    config_text = dumps_json(
        {
            "format_version": FORMAT_VERSION,
            "predictor": config_to_dict(config),
            "task_kinds": {
                t: "regression" if config.is_regression(t) else "binary" for t in config.tasks
            },
            "regression_caps": dict(caps),
            "n_users": vocab.n_users,
            "n_items": vocab.n_items,
            "n_dense": vocab.n_dense,
        }
    )
    return weights, config_text, dumps_json(vocab.to_json())


def freeze(trained: TrainedPredictor) -> FrozenPredictor:
    """Freeze a trained predictor in memory (its network is shared, then frozen)."""
    return FrozenPredictor(trained.model, trained.vocab, trained.config, trained.regression_caps)


def _metrics_json(metrics: tuple[TaskMetrics, ...]) -> list[dict[str, object]]:
    return [config_to_dict(m) for m in metrics]


def save_predictor(
    trained: TrainedPredictor, out: str | Path, overwrite: bool = False
) -> FrozenPredictor:
    """Freeze ``trained`` and write its artefact directory ``out`` atomically.

    ``out`` is never something this toolkit did not write; a predictor written before is replaced
    only with ``overwrite`` (see :func:`~batchrl_mtf.core.io.output_dir`).

    Returns:
        The frozen predictor (same content hash as the artefact).
    """
    check_output_dir(out, "predictor", overwrite=overwrite)
    frozen = freeze(trained)
    weights, config_text, vocab_text = _serialise(
        frozen.model, frozen.vocab, frozen.config, frozen.regression_caps
    )
    metrics = {
        "held_out": _metrics_json(trained.metrics),
        "epoch_losses": list(trained.epoch_losses),
        "task_log_vars": list(trained.task_log_vars),
        "n_train": trained.n_train,
        "n_valid": trained.n_valid,
    }
    meta = {
        "content_hash": frozen.content_hash,
        "data_hash": trained.data_hash,
        "versions": package_versions(),
        "format_version": FORMAT_VERSION,
        "files": [WEIGHTS, CONFIG, VOCAB],
    }
    with atomic_dir(out, kind="predictor") as tmp:
        (tmp / WEIGHTS).write_bytes(weights)
        (tmp / CONFIG).write_text(config_text, encoding="utf-8")
        (tmp / VOCAB).write_text(vocab_text, encoding="utf-8")
        (tmp / METRICS).write_text(dumps_json(metrics), encoding="utf-8")
        (tmp / META).write_text(dumps_json(meta), encoding="utf-8")
    logger.info("saved predictor %s to %s", frozen.content_hash[:19], out)
    return frozen


def _read(path: Path) -> bytes:
    if not path.is_file():
        raise PredictorError(f"{path}: missing predictor artefact file")
    return path.read_bytes()


def load_predictor(path: str | Path) -> FrozenPredictor:
    """Load a predictor artefact directory (no pickle); the result is frozen and verified.

    Raises:
        PredictorError: When a file is missing or corrupt, or the content hash does not match.
    """
    root = Path(path)
    if not root.is_dir():
        raise PredictorError(
            f"{root}: not a predictor artefact directory (expected {WEIGHTS}, {CONFIG}, {VOCAB})"
        )
    weights, config_bytes, vocab_bytes, meta_bytes = (
        _read(root / f) for f in (WEIGHTS, CONFIG, VOCAB, META)
    )
    try:
        config_text, vocab_text = config_bytes.decode(), vocab_bytes.decode()
        meta = json.loads(meta_bytes)
        cfg = json.loads(config_text)
        vocab_json = json.loads(vocab_text)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise PredictorError(f"{root}: corrupt JSON in the predictor artefact: {exc}") from None
    expected = meta.get("content_hash") if isinstance(meta, dict) else None
    actual = hash_bytes(_joined(weights, config_text, vocab_text))
    if expected != actual:
        raise PredictorError(
            f"{root}: content hash mismatch (meta.json says {expected}, files hash to {actual})"
        )
    if not isinstance(cfg, dict) or cfg.get("format_version") != FORMAT_VERSION:
        raise PredictorError(
            f"{root / CONFIG}: expected format_version {FORMAT_VERSION}, found {cfg.get('format_version') if isinstance(cfg, dict) else type(cfg).__name__!r}"
        )
    try:
        config = config_from_mapping(
            PredictorConfig, cfg["predictor"], f"{root / CONFIG} [predictor]"
        )
        tensors = st_load(weights)
    except (ConfigError, KeyError, SafetensorError) as exc:
        raise PredictorError(f"{root}: cannot read the predictor artefact: {exc}") from None
    try:
        vocab = FeatureVocab.from_json(
            vocab_json, tensors["vocab.user_table"].numpy(), tensors["vocab.item_table"].numpy()
        )
        model = build_model(config, vocab.n_users, vocab.n_items, vocab.n_dense)
        state = {k.removeprefix("model."): v for k, v in tensors.items() if k.startswith("model.")}
        model.load_state_dict(state, strict=True)
    except (KeyError, RuntimeError) as exc:
        raise PredictorError(
            f"{root / WEIGHTS}: weights do not fit the configured model: {exc}"
        ) from None
    caps = {str(k): float(v) for k, v in cfg.get("regression_caps", {}).items()}
    return FrozenPredictor(model, vocab, config, caps, content_hash=actual)
