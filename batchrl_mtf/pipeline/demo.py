"""The demo: a built-in pipeline that simulates its own logs (``batchrl-mtf demo``).

``DEMO`` is the pipeline document; ``envs/pipeline_demo.toml`` is the same pipeline as a file
(a test checks that both parse to the same configuration). The budget (sessions, gradient steps,
FQE steps, rollout sessions) was chosen so that the whole demo runs in a few minutes on 2 CPU
cores; :func:`demo_document` scales it.
"""

from __future__ import annotations

import copy
from typing import Any

from batchrl_mtf.pipeline.config import set_override

__all__ = ["DEMO", "QUICK", "demo_document"]

DEMO: dict[str, Any] = {
    "data": {
        "gamma": 0.95,
        "simulate": {"env": "short_video", "sessions": 4000, "policy": "mixed", "seed": 0},
    },
    "train": {"algos": ["td3bc", "bc"], "n_steps": 5000, "n_steps_per_epoch": 500, "seed": 0},
    "evaluate": {
        "policies": ["behavior", "production", "best-constant"],
        "estimators": ["fqe", "cfqe", "dr", "wdr"],
        "gamma": 1.0,
        "fqe_n_steps": 1000,
        "fqe_target_update_interval": 20,
        "n_bootstrap": 200,
        "best_constant_estimator": "wpdis",
        "best_constant_candidates": 16,
    },
    "export": {"keys": ["auto"], "n_auto_keys": 2, "buckets": 3, "min_support": 200},
    "truth": {"sessions": 2000, "seed": 12345},
}
"""The demo pipeline (the document of ``envs/pipeline_demo.toml``)."""

QUICK: dict[str, object] = {
    "data.simulate.sessions": 300,
    "train.n_steps": 40,
    "train.n_steps_per_epoch": 20,
    "evaluate.fqe_n_steps": 40,
    "evaluate.n_bootstrap": 20,
    "evaluate.best_constant_candidates": 3,
    "export.min_support": 20,
    "truth.sessions": 100,
}
"""Overrides of ``--quick``: a tiny budget that checks every stage in well under a minute."""


def demo_document(
    quick: bool = False,
    sessions: int | None = None,
    n_steps: int | None = None,
    fqe_steps: int | None = None,
    truth_sessions: int | None = None,
) -> dict[str, Any]:
    """The demo's pipeline document with the budget overrides applied (later ones win)."""

    doc = copy.deepcopy(DEMO)
    overrides: dict[str, object] = dict(QUICK) if quick else {}
    budget: dict[str, int | None] = {
        "data.simulate.sessions": sessions,
        "train.n_steps": n_steps,
        "evaluate.fqe_n_steps": fqe_steps,
        "truth.sessions": truth_sessions,
    }
    overrides.update({k: v for k, v in budget.items() if v is not None})
    if n_steps is not None:
        overrides["train.n_steps_per_epoch"] = max(1, n_steps // 6)
    for key, value in overrides.items():
        set_override(doc, key, value)
    return doc
