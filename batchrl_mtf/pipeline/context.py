"""Shared state of one pipeline run and what several stages derive from it.

The :class:`Context` loads the run's dataset and worlds once; the functions here (the trained
policies, the production weights, the OPE settings, the fusion) are read by the evaluate, truth,
export and report stages alike.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from batchrl_mtf.core.fusion import Fusion
from batchrl_mtf.data.formats import load_dataset
from batchrl_mtf.errors import ConfigError, PolicyError
from batchrl_mtf.export import logged_centre
from batchrl_mtf.pipeline.config import IMPORTANCE_WEIGHTED, PipelineConfig
from batchrl_mtf.pipeline.stage import StageRecord
from batchrl_mtf.sim import World, feature_names_of, load_spec
from batchrl_mtf.training import TrainedPolicy, load_policy

__all__ = [
    "Context",
    "check_env_fits",
    "fusion",
    "load_trained",
    "ope_config",
    "production_weights",
]

logger = logging.getLogger("batchrl_mtf.pipeline")


@dataclass
class Context:
    """Shared state of one pipeline run.

    Attributes:
        config: The parsed pipeline.
        out: The run folder.
        progress: Show progress bars.
        label: How the run was started.
        records: Records of the stages run so far, by name.
        jobs: Stages the runner started in worker processes (name -> future of their summary),
            which their ``run`` collects.
    """

    config: PipelineConfig
    out: Path
    progress: bool = True
    label: str = ""
    records: dict[str, StageRecord] = field(default_factory=dict)
    jobs: dict[str, Any] = field(default_factory=dict)
    _cache: dict[str, Any] = field(default_factory=dict)

    def folder(self, name: str) -> Path:
        """Output folder of stage ``name`` (``train:bcq`` → ``train/bcq``)."""
        return self.out.joinpath(*name.split(":"))

    def upstream(self, *names: str) -> dict[str, str]:
        """Output hashes of earlier stages (what a stage's input hash includes)."""
        return {n: self.records[n].output_hash for n in names if n in self.records}

    def dataset(self) -> Any:
        """The dataset of this run (loaded once)."""
        if "dataset" not in self._cache:
            self._cache["dataset"] = load_dataset(self.folder("dataset"))
        return self._cache["dataset"]

    def world(self, env: str) -> Any:
        """A simulated world (built once per spec)."""
        key = f"world:{env}"
        if key not in self._cache:
            self._cache[key] = World(load_spec(env))
        return self._cache[key]


def load_trained(ctx: Context, algo: str) -> TrainedPolicy:
    """The trained policy ``algo`` of this run, named ``algo``."""

    data = ctx.dataset()
    return load_policy(ctx.folder(f"train:{algo}"), spec=data.spec).renamed(algo)


def production_weights(ctx: Context) -> tuple[tuple[float, ...], str]:
    """The production weights and where they come from."""
    cfg = ctx.config
    data = ctx.dataset()
    tasks = tuple(data.spec.tasks)
    env = cfg.data.simulate.env if cfg.data.simulate is not None else cfg.truth_env
    if env:
        world = ctx.world(env)
        if tuple(world.tasks) == tasks:
            return tuple(float(w) for w in world.production), f"fusion.production of {env}"

    return logged_centre(data.actions), "the logged actions' most common centre"


def ope_config(ctx: Context) -> Any:
    """The OPE settings, without importance-weighted estimators when the logs lack behavior_logp."""
    ope = ctx.config.evaluate.ope
    if ctx.dataset().spec.has_behavior_logp:
        return ope
    kept = tuple(e for e in ope.estimators if e not in IMPORTANCE_WEIGHTED) or ("fqe",)
    if kept != ope.estimators:
        logger.warning(
            "the logs carry no behavior_logp: running %s only (not %s)",
            ", ".join(kept),
            ", ".join(e for e in ope.estimators if e in IMPORTANCE_WEIGHTED),
        )
    return dataclasses.replace(ope, estimators=kept)


def fusion(ctx: Context) -> Fusion:
    """The fusion the learned weights are for: ``[export]``'s when given, else the dataset's.

    The dataset records the fusion its logs were applied with (``[fusion]``, or the simulated
    env's); an ``[export]`` fusion that differs from it is logged as an override.
    """

    spec = ctx.dataset().spec
    tasks = tuple(spec.tasks)
    recorded = spec.fusion or ctx.config.data.dataset.fusion
    ex = ctx.config.export.fusion
    if ex is None:
        if recorded is None:
            raise ConfigError(f"{ctx.config.source} [fusion]: expected formula and beta")
        return recorded.for_tasks(tasks)
    chosen = ex.for_tasks(tasks, f"{ctx.config.source} [export] beta")
    if recorded is not None and chosen != recorded.for_tasks(tasks):
        logger.info(
            "fusion: %s ([export] overrides the dataset's %s)",
            chosen.describe(tasks),
            recorded.describe(tasks),
        )
    return chosen


def check_env_fits(ctx: Context, world: Any, env: str) -> None:
    """Raise :class:`PolicyError` unless the env's state and tasks are the dataset's."""

    spec = ctx.dataset().spec
    if tuple(world.tasks) != tuple(spec.tasks):
        raise PolicyError(
            f"[truth] env {env}: tasks {list(world.tasks)} differ from the dataset's "
            f"{list(spec.tasks)}; the policies cannot be rolled out there"
        )
    names = feature_names_of(world)
    if tuple(names) != tuple(spec.feature_names):
        raise PolicyError(
            f"[truth] env {env}: its state features {list(names)} differ from the dataset's "
            f"{list(spec.feature_names)}; build the dataset with the env's [features]"
        )
