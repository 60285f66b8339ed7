"""batchrl-mtf: learn multi-task fusion weights for recommender feeds with offline (batch) RL.

The public API. The package is layered (``docs/architecture.md``), bottom to top::

    core -> logs -> data -> policy -> serving | predictors -> sim -> training | ope
         -> learned -> export -> app (resolve, pipeline, cli)

Everything a user needs is importable from here. ``import batchrl_mtf`` stays light (no torch, no
d3rlpy: every Spark worker and CLI start imports it): the names of the layers that need torch
(training, predictors, OPE, the simulator, export, the pipeline) are imported on first use, through
the module's ``__getattr__``; ``from batchrl_mtf import train`` works as before.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from batchrl_mtf.core.fusion import Fusion
from batchrl_mtf.core.lazy import lazy_names
from batchrl_mtf.core.version import __version__
from batchrl_mtf.data.build import build_dataset
from batchrl_mtf.data.config import DatasetConfig
from batchrl_mtf.data.formats import load_dataset
from batchrl_mtf.data.reward import RewardConfig, load_reward
from batchrl_mtf.data.spec import DatasetSpec
from batchrl_mtf.data.transitions import Transitions
from batchrl_mtf.policy import ConstantPolicy, LoggingPolicy, Policy, TablePolicy
from batchrl_mtf.serving import WeightTable, fuse, rank

if TYPE_CHECKING:  # loaded on first use (``__getattr__`` below)
    from batchrl_mtf.export import ExportConfig, ExportResult, export_table
    from batchrl_mtf.ope import OPEConfig, evaluate_policies, format_table
    from batchrl_mtf.pipeline import demo_document, load_pipeline, parse_pipeline, run_pipeline
    from batchrl_mtf.predictors import (
        FrozenPredictor,
        PredictorConfig,
        fit_predictor,
        load_predictor,
        predict,
        save_predictor,
    )
    from batchrl_mtf.resolve import resolve_ope_policy, resolve_policy, resolve_sim_policy
    from batchrl_mtf.sim import register_envs
    from batchrl_mtf.training import TrainConfig, load_policy, train

_LAZY = {
    "batchrl_mtf.export": ("ExportConfig", "ExportResult", "export_table"),
    "batchrl_mtf.ope": ("OPEConfig", "evaluate_policies", "format_table"),
    "batchrl_mtf.pipeline": ("demo_document", "load_pipeline", "parse_pipeline", "run_pipeline"),
    "batchrl_mtf.predictors": (
        "FrozenPredictor",
        "PredictorConfig",
        "fit_predictor",
        "load_predictor",
        "predict",
        "save_predictor",
    ),
    "batchrl_mtf.resolve": ("resolve_ope_policy", "resolve_policy", "resolve_sim_policy"),
    "batchrl_mtf.sim": ("register_envs",),
    "batchrl_mtf.training": ("TrainConfig", "load_policy", "train"),
}
__getattr__, __dir__ = lazy_names(__name__, _LAZY, globals())


__all__ = [
    "ConstantPolicy",
    "DatasetConfig",
    "DatasetSpec",
    "ExportConfig",
    "ExportResult",
    "FrozenPredictor",
    "Fusion",
    "LoggingPolicy",
    "OPEConfig",
    "Policy",
    "PredictorConfig",
    "RewardConfig",
    "TablePolicy",
    "TrainConfig",
    "Transitions",
    "WeightTable",
    "__version__",
    "build_dataset",
    "demo_document",
    "evaluate_policies",
    "export_table",
    "fit_predictor",
    "format_table",
    "fuse",
    "load_dataset",
    "load_pipeline",
    "load_policy",
    "load_predictor",
    "load_reward",
    "parse_pipeline",
    "predict",
    "rank",
    "register_envs",
    "resolve_ope_policy",
    "resolve_policy",
    "resolve_sim_policy",
    "run_pipeline",
    "save_predictor",
    "train",
]
