"""Gymnasium registration of the fusion environments.

Each id is registered with an ``entry_point`` string (``batchrl_mtf.sim.env:FusionEnv``), so the
environment class is loaded by Gymnasium only when the environment is made. Importing this module
registers nothing; call :func:`register_envs` (idempotent), or let Gymnasium import
:mod:`batchrl_mtf.envs` through its module prefix,
``gymnasium.make("batchrl_mtf.envs:batchrl_mtf/ShortVideo-v0")``.
"""

from __future__ import annotations

import gymnasium

__all__ = ["ENTRY_POINT", "ENV_IDS", "register_envs"]

ENV_IDS = ("batchrl_mtf/ShortVideo-v0", "batchrl_mtf/ECommerce-v0", "batchrl_mtf/Fusion-v0")
ENTRY_POINT = "batchrl_mtf.sim.env:FusionEnv"
_KWARGS: dict[str, dict[str, object]] = {
    ENV_IDS[0]: {"spec": "short_video"},
    ENV_IDS[1]: {"spec": "ecommerce"},
    ENV_IDS[2]: {},
}


def register_envs() -> None:
    """Register the three environment ids with Gymnasium (idempotent)."""
    for env_id, kw in _KWARGS.items():
        if env_id not in gymnasium.registry:
            gymnasium.register(id=env_id, entry_point=ENTRY_POINT, kwargs=kw)
