"""Gymnasium environments learned from logs (world models), validated against the logs.

``make_env`` turns logged sessions into a platform spec with ``world.kind = "learned"`` and its
artefacts (item catalogue, start states, ranker, response model, leave model); the simulator's
:class:`~batchrl_mtf.sim.World`, ``FusionEnv`` (``batchrl_mtf/Fusion-v0``), ``simulate``,
``rollout`` and ``train --env`` then use it like any other spec. See ``docs/learned_env.md``.
"""

from __future__ import annotations

from batchrl_mtf.learned.config import LearnedEnvConfig
from batchrl_mtf.learned.fit import MakeEnvResult, make_env
from batchrl_mtf.learned.leave import calibration_table, fit_leave_mixture, fit_leave_model
from batchrl_mtf.learned.leave_model import LeaveMixture, LeaveModel
from batchrl_mtf.learned.runtime import LearnedModel
from batchrl_mtf.learned.validate import LoggedSessions, format_replay, replay_check

__all__ = [
    "LearnedEnvConfig",
    "LearnedModel",
    "LeaveMixture",
    "LeaveModel",
    "LoggedSessions",
    "MakeEnvResult",
    "calibration_table",
    "fit_leave_mixture",
    "fit_leave_model",
    "format_replay",
    "make_env",
    "replay_check",
]
