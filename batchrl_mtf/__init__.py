"""batchrl-mtf: learn multi-task fusion weights for recommender feeds with offline (batch) RL.

The data flow follows the package layout::

    schema / validate  ->  features, reward  ->  mdp, dataset  ->  training  ->  ope  ->  serving

Heavy modules (torch, d3rlpy) are imported on first use of the names that need them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from batchrl_mtf._version import __version__
from batchrl_mtf.sim import register_envs as _register_envs

_register_envs()  # gymnasium.make("batchrl_mtf/ShortVideo-v0") works after `import batchrl_mtf`

if TYPE_CHECKING:
    from batchrl_mtf.dataset import build_dataset, load_dataset
    from batchrl_mtf.mdp import DatasetConfig
    from batchrl_mtf.ope import evaluate_policies
    from batchrl_mtf.policy import resolve_policy
    from batchrl_mtf.predictors import FrozenPredictor, load_predictor, predict
    from batchrl_mtf.reward import RewardConfig, load_reward
    from batchrl_mtf.serving import WeightTable, fuse, rank
    from batchrl_mtf.training import load_policy, train

__all__ = [
    "DatasetConfig",
    "FrozenPredictor",
    "RewardConfig",
    "WeightTable",
    "__version__",
    "build_dataset",
    "evaluate_policies",
    "fuse",
    "load_dataset",
    "load_policy",
    "load_predictor",
    "load_reward",
    "predict",
    "rank",
    "resolve_policy",
    "train",
]

_LAZY = {
    "build_dataset": "batchrl_mtf.dataset",
    "load_dataset": "batchrl_mtf.dataset",
    "DatasetConfig": "batchrl_mtf.mdp",
    "RewardConfig": "batchrl_mtf.reward",
    "load_reward": "batchrl_mtf.reward",
    "evaluate_policies": "batchrl_mtf.ope",
    "resolve_policy": "batchrl_mtf.policy",
    "load_predictor": "batchrl_mtf.predictors",
    "FrozenPredictor": "batchrl_mtf.predictors",
    "predict": "batchrl_mtf.predictors",
    "WeightTable": "batchrl_mtf.serving",
    "fuse": "batchrl_mtf.serving",
    "rank": "batchrl_mtf.serving",
    "load_policy": "batchrl_mtf.training",
    "train": "batchrl_mtf.training",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'batchrl_mtf' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
