"""batchrl-mtf: learn multi-task fusion weights for recommender feeds with offline (batch) RL.

The data flow follows the package layout::

    schema / validate  ->  features, reward  ->  mdp, dataset  ->  training  ->  ope  ->  serving

Heavy modules (torch, d3rlpy) are imported on first use of the names that need them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from batchrl_mtf._version import __version__

if TYPE_CHECKING:
    from batchrl_mtf.dataset import build_dataset, load_dataset
    from batchrl_mtf.mdp import DatasetConfig
    from batchrl_mtf.reward import RewardConfig, load_reward

__all__ = [
    "DatasetConfig",
    "RewardConfig",
    "__version__",
    "build_dataset",
    "load_dataset",
    "load_reward",
]

_LAZY = {
    "build_dataset": "batchrl_mtf.dataset",
    "load_dataset": "batchrl_mtf.dataset",
    "DatasetConfig": "batchrl_mtf.mdp",
    "RewardConfig": "batchrl_mtf.reward",
    "load_reward": "batchrl_mtf.reward",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'batchrl_mtf' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
