"""batchrl-mtf: learn multi-task fusion weights for recommender feeds with offline (batch) RL.

The public API. The package is layered (``docs/architecture.md``), bottom to top::

    core -> logs -> data -> policy -> serving | predictors -> sim -> training | ope
         -> learned -> export -> app (resolve, pipeline, cli)

Everything a user needs is importable from here; torch and d3rlpy load on first use.
"""

from __future__ import annotations

from batchrl_mtf.core.fusion import Fusion
from batchrl_mtf.core.version import __version__
from batchrl_mtf.data.build import build_dataset
from batchrl_mtf.data.config import DatasetConfig
from batchrl_mtf.data.formats import load_dataset
from batchrl_mtf.data.reward import RewardConfig, load_reward
from batchrl_mtf.data.spec import DatasetSpec
from batchrl_mtf.data.transitions import Transitions
from batchrl_mtf.export import ExportConfig, ExportResult, export_table
from batchrl_mtf.ope import OPEConfig, evaluate_policies
from batchrl_mtf.policy import ConstantPolicy, LoggingPolicy, Policy, TablePolicy
from batchrl_mtf.predictors import FrozenPredictor, load_predictor, predict
from batchrl_mtf.resolve import resolve_ope_policy, resolve_policy, resolve_sim_policy
from batchrl_mtf.serving import WeightTable, fuse, rank
from batchrl_mtf.sim import register_envs
from batchrl_mtf.training import TrainConfig, load_policy, train

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
    "RewardConfig",
    "TablePolicy",
    "TrainConfig",
    "Transitions",
    "WeightTable",
    "__version__",
    "build_dataset",
    "evaluate_policies",
    "export_table",
    "fuse",
    "load_dataset",
    "load_policy",
    "load_predictor",
    "load_reward",
    "predict",
    "rank",
    "register_envs",
    "resolve_ope_policy",
    "resolve_policy",
    "resolve_sim_policy",
    "train",
]
