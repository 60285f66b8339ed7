"""Gymnasium's entry to the fusion environments: ``gymnasium.make("batchrl_mtf.envs:<id>")``.

Gymnasium imports the module named before the colon and then makes the id, so importing this
module registers the ids of :data:`batchrl_mtf.sim.ENV_IDS` (with entry-point strings; nothing
else is loaded until an environment is made). No other module of the package registers on import.
"""

from __future__ import annotations

from batchrl_mtf.sim.registration import ENV_IDS, register_envs

__all__ = ["ENV_IDS"]

register_envs()
