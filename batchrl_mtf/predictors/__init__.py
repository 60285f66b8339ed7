"""Frozen multi-task predictors: Shared-Bottom, MMoE, PLE, ESMM and soft sharing.

A predictor is trained on impression logs (:func:`fit_predictor`), frozen and saved as an artefact
directory without pickle (:func:`save_predictor`), loaded frozen (:func:`load_predictor`) and
applied to aligned (user, item) rows (:meth:`FrozenPredictor.predict`, :func:`predict`) or to whole
logs (:func:`rescore_frame`, :func:`rescore_logs`). See ``docs/predictors.md``.

Example:
    >>> from batchrl_mtf.predictors import PredictorConfig, fit_predictor, save_predictor
    >>> trained = fit_predictor(logs, PredictorConfig(model="mmoe", tasks=("click", "like")))
    >>> frozen = save_predictor(trained, "runs/predictor")
    >>> frozen.predict(users, items)["pred_click"]  # float64 (n,)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from batchrl_mtf.core.lazy import lazy_names
from batchrl_mtf.predictors.config import MODELS, PredictorConfig
from batchrl_mtf.predictors.features import UNKNOWN_INDEX, Encoded, FeatureVocab
from batchrl_mtf.predictors.metrics import TaskMetrics, format_metrics

if TYPE_CHECKING:  # the torch-backed modules: loaded on first use (``__getattr__`` below)
    from batchrl_mtf.predictors.artefact import (
        FrozenPredictor,
        freeze,
        load_predictor,
        save_predictor,
    )
    from batchrl_mtf.predictors.rescore import predict, rescore_frame, rescore_logs
    from batchrl_mtf.predictors.training import TrainedPredictor, fit_predictor

_LAZY = {
    "batchrl_mtf.predictors.artefact": (
        "FrozenPredictor",
        "freeze",
        "load_predictor",
        "save_predictor",
    ),
    "batchrl_mtf.predictors.rescore": ("predict", "rescore_frame", "rescore_logs"),
    "batchrl_mtf.predictors.training": ("TrainedPredictor", "fit_predictor"),
}
__getattr__, __dir__ = lazy_names(__name__, _LAZY, globals())


__all__ = [
    "MODELS",
    "UNKNOWN_INDEX",
    "Encoded",
    "FeatureVocab",
    "FrozenPredictor",
    "PredictorConfig",
    "TaskMetrics",
    "TrainedPredictor",
    "fit_predictor",
    "format_metrics",
    "freeze",
    "load_predictor",
    "predict",
    "rescore_frame",
    "rescore_logs",
    "save_predictor",
]
