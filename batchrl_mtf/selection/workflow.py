"""The ``select`` workflow: train a portfolio, export each table, estimate, choose, write DIR.

:func:`select_policy` (used by ``batchrl-mtf select``):

1. loads the dataset (it needs a held-out ``test`` split: candidates are trained on ``train``
   and judged on ``test``);
2. evaluates production (``production`` weights, default the logged actions' most common
   centre) on ``test``;
3. for each trained candidate of the portfolio (:func:`batchrl_mtf.selection.config.portfolio`,
   within the time budget): trains it on ``train``, exports its weight table at every trust-region
   step (:func:`export_candidate`) and evaluates each *table* (the gain is estimated on the states
   and actions the table produces, not the network's) on ``test`` with the same OPE settings and
   seed as production, so that per-session values are paired;
4. takes each table's paired gain over production (:func:`batchrl_mtf.ope.paired.paired_vs`) and
   applies the rule of :mod:`batchrl_mtf.selection.rule`;
5. writes DIR atomically (:mod:`batchrl_mtf.selection.report`).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import multiprocessing
import shutil
import time
from collections import deque
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from batchrl_mtf.core.io import atomic_dir, output_dir
from batchrl_mtf.core.threads import usable_cores
from batchrl_mtf.data.box import action_box
from batchrl_mtf.data.formats import load_dataset
from batchrl_mtf.data.transitions import Transitions
from batchrl_mtf.errors import ConfigError, DatasetError
from batchrl_mtf.export import ExportConfig, export_table, logged_centre
from batchrl_mtf.ope import OPEConfig, OPEResult, evaluate_policies
from batchrl_mtf.ope.evaluate import IMPORTANCE_WEIGHTED, quoted_ci
from batchrl_mtf.ope.paired import merge_results, paired_vs, per_session_values
from batchrl_mtf.policy import ConstantPolicy, LoggingPolicy, TablePolicy
from batchrl_mtf.selection.config import CandidateSpec, SelectConfig, portfolio
from batchrl_mtf.selection.report import check_out, write_selection
from batchrl_mtf.selection.rule import (
    LOGGED,
    PRODUCTION,
    Choice,
    Gain,
    choose,
    gain_from_doc,
    margin_gain,
)
from batchrl_mtf.serving import Fusion, WeightTable
from batchrl_mtf.training import load_policy, resolve_config, reuse_mismatch, train

__all__ = [
    "Candidate",
    "SelectionResult",
    "export_candidate",
    "select_among",
    "select_policy",
    "train_candidate",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Candidate:
    """One candidate table and what was measured of it.

    Attributes:
        name: ``<trained policy>[-tr<step>]``, or ``production``.
        policy: The trained policy's name (``None`` for production).
        trust_step: The trust-region step (0 = none; ``None`` for production).
        table: The table (``None`` when skipped).
        estimate: ``{"estimator", "value", "lower", "upper", "sampling_ci", "model_error"}`` of
            its policy value (``lower``/``upper``: ``sampling_ci`` widened by the relative model
            error, :func:`batchrl_mtf.ope.evaluate.quoted_ci`).
        gain: ``{"estimator", "gain", "lower", "upper"}`` over production (paired).
        baseline_gain: The same over the logging policy when that is the rule's baseline
            (production outside the logged support; ``None`` otherwise).
        support: The support diagnostic of the table's actions on the held-out states.
        seconds: Wall-clock seconds spent on it (training shared by its trust-region steps is
            counted on the first).
        skipped: Why it was not evaluated (``None`` when it was).
    """

    name: str
    policy: str | None
    trust_step: float | None
    table: WeightTable | None
    estimate: dict[str, Any] | None = None
    gain: dict[str, Any] | None = None
    support: dict[str, object] | None = None
    seconds: float = 0.0
    skipped: str | None = None
    baseline_gain: dict[str, Any] | None = None

    @property
    def rule_gain(self) -> dict[str, Any] | None:
        """The gain the rule judged it by: over the baseline (:attr:`baseline_gain` when set)."""
        return self.baseline_gain if self.baseline_gain is not None else self.gain


@dataclass(frozen=True)
class SelectionResult:
    """What ``select`` decided.

    Attributes:
        out: The directory written.
        production: The production weights, shape (n_tasks,).
        candidates: Production first, then every candidate in portfolio order.
        choice: The chosen candidate and why.
        seconds: Wall-clock seconds of the whole selection.
        baseline: ``{"name", "reason", "estimate"}``: what the gains were measured against
            (``production`` or ``logged``, :data:`~batchrl_mtf.selection.rule.BASELINES`).
    """

    out: Path
    production: tuple[float, ...]
    candidates: tuple[Candidate, ...]
    choice: Choice
    seconds: float
    baseline: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def chosen(self) -> Candidate:
        """The chosen candidate."""
        return next(c for c in self.candidates if c.name == self.choice.name)


def _ope_for(config: OPEConfig, data: Transitions) -> OPEConfig:
    """``config`` without importance-weighted estimators when the logs lack ``behavior_logp``."""
    if data.spec.has_behavior_logp:
        return config
    kept = tuple(e for e in config.estimators if e not in IMPORTANCE_WEIGHTED) or ("fqe",)
    order = tuple(e for e in config.recommend_order if e in kept) or kept
    return dataclasses.replace(config, estimators=kept, recommend_order=order)


def production_table(
    weights: Sequence[float], data: Transitions, fusion: Fusion, meta: dict[str, object]
) -> WeightTable:
    """A key-less weight table that serves ``weights`` everywhere."""
    spec = data.spec
    low = np.minimum(np.asarray(spec.action_low), np.asarray(weights))
    high = np.maximum(np.asarray(spec.action_high), np.asarray(weights))
    return WeightTable(
        tasks=tuple(spec.tasks),
        fusion=fusion,
        action_low=tuple(float(x) for x in low),
        action_high=tuple(float(x) for x in high),
        keys=(),
        default=tuple(float(w) for w in weights),
        rows=(),
        meta={"policy": PRODUCTION, "dataset_hash": spec.dataset_hash, **meta},
    )


def export_candidate(
    policy: Any,
    data: Transitions,
    fusion: Fusion,
    config: SelectConfig,
    production: tuple[float, ...],
    max_delta: float | None,
    name: str,
) -> WeightTable:
    """The weight table of a trained candidate (:func:`batchrl_mtf.export.export_table`, the
    export's workflow, without offline values: ``select`` estimates every table itself).

    Args:
        policy: The trained policy (``act(obs (n, d)) -> (n, k)``).
        data: The dataset (its states are bucketed; all splits, as ``export`` does).
        fusion: The fusion the weights are for.
        config: Keys, buckets and shrinkage of the export.
        production: The table's default (shrinkage and the trust region centre on it).
        max_delta: Trust region around production (``None`` = none).
        name: Recorded as ``meta.policy``.
    """
    export_cfg = ExportConfig(
        keys=config.keys,
        buckets=config.buckets,
        min_support=config.min_support,
        max_delta=max_delta,
        default=production,
        seed=config.seed,
    )
    return export_table(policy, data, export_cfg, fusion, policy_name=name).table


def _estimate(result: OPEResult, name: str, estimator: str | None) -> dict[str, Any] | None:
    p = next(p for p in result.policies if p.name == name)
    est_name = estimator or (p.recommended.estimator if p.recommended is not None else None)
    if est_name is None or est_name not in p.estimates:
        return None
    est = p.estimates[est_name]
    ci = quoted_ci(est, result.config)
    lo, hi = ci if ci is not None else (math.nan, math.nan)
    own = list(est.ci) if est.ci is not None else None
    return {
        "estimator": est_name,
        "value": est.value,
        "lower": lo,
        "upper": hi,
        "sampling_ci": own,
        "model_error": result.config.model_error,
    }


class _Budget:
    """Wall-clock budget: skip a trained candidate whose projected cost would pass it."""

    def __init__(self, minutes: float) -> None:
        self.limit = minutes * 60.0
        self.start = time.perf_counter()
        self.costs: list[float] = []

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def allows(self) -> bool:
        if self.limit <= 0 or not self.costs:
            return True
        return self.elapsed() + float(np.mean(self.costs)) <= self.limit


_Row = tuple[str, str | None, float | None, float, str | None]
"""``(candidate, trained policy, trust step, seconds, skipped)`` of one candidate."""


class _Judge:
    """Exports, estimates and finally judges candidates against production (steps 2-4 of the
    module docstring); :func:`select_policy` and :func:`select_among` feed it policies."""

    def __init__(
        self,
        data: Transitions,
        config: SelectConfig,
        fusion: Fusion,
        production: Sequence[float] | None,
    ) -> None:
        if not bool(np.any(data.split == "test")) or not bool(np.any(data.split == "train")):
            raise DatasetError(
                f"{data.path or 'dataset'}: select needs a train and a test split (candidates "
                "are judged on held-out sessions); build the dataset with a test fraction > 0"
            )
        tasks = tuple(data.spec.tasks)
        prod = tuple(float(w) for w in (production or logged_centre(data.actions)))
        if len(prod) != len(tasks):
            raise ConfigError(
                f"--production: expected {len(tasks)} weights ({', '.join(tasks)}), "
                f"found {len(prod)}"
            )
        self.data, self.config, self.fusion, self.production = data, config, fusion, prod
        self.ope = _ope_for(config.ope, data)
        self.test = data.select("test")
        low, high = action_box(data.select("train").actions, config.action_box)
        self.width = float(np.median(high - low))
        self.names = tuple(data.spec.feature_names)
        self.start = time.perf_counter()
        prod_policy = ConstantPolicy(prod, tasks, name=PRODUCTION)
        self.parts = [evaluate_policies(self.test, [prod_policy], self.ope)]
        self.per_session = per_session_values(self.parts[0])
        self.baseline, self.baseline_reason = _baseline(config.baseline, self.parts[0])
        if self.baseline == LOGGED:
            logger.warning("select: %s", self.baseline_reason)
            logged = evaluate_policies(self.test, [LoggingPolicy(tasks, name=LOGGED)], self.ope)
            self.parts.append(logged)
            self.per_session.update(per_session_values(logged))
        self.tables: dict[str, WeightTable] = {
            PRODUCTION: production_table(prod, data, fusion, {"source": "production weights"})
        }
        self.rows: list[_Row] = [(PRODUCTION, None, None, time.perf_counter() - self.start, None)]

    def steps(self, policy_name: str) -> list[str]:
        """Candidate names of ``policy_name``'s tables, one per trust-region step."""
        return [
            policy_name if s == 0 else f"{policy_name}-tr{s:g}" for s in self.config.trust_steps
        ]

    def skip(self, policy_name: str, reason: str) -> None:
        """Record every table of ``policy_name`` as skipped for ``reason``."""
        self.rows += [
            (n, policy_name, s, 0.0, reason)
            for n, s in zip(self.steps(policy_name), self.config.trust_steps, strict=True)
        ]
        logger.info("skipping %s: %s", policy_name, reason)

    def add(self, policies: Sequence[tuple[str, Any]], seconds: Sequence[float] = ()) -> None:
        """Export every policy's table at every trust-region step and estimate all of them on
        the held-out split in one call (so the batched FQE fits train as one ensemble).

        Args:
            policies: ``(name, policy)`` pairs, ``policy.act(obs (n, d)) -> (n, k)``.
            seconds: Seconds already spent on each policy (its training), counted on its first
                table.
        """
        t0 = time.perf_counter()
        added: list[tuple[str, str, float, float]] = []
        table_policies = []
        for i, (pname, policy) in enumerate(policies):
            spent = seconds[i] if i < len(seconds) else 0.0
            for cname, step in zip(self.steps(pname), self.config.trust_steps, strict=True):
                delta = None if step == 0 else step * self.width
                table = export_candidate(
                    policy, self.data, self.fusion, self.config, self.production, delta, cname
                )
                self.tables[cname] = table
                table_policies.append(TablePolicy(table, self.names, name=cname))
                added.append((cname, pname, step, spent if cname == pname else 0.0))
        if not table_policies:
            return
        res = evaluate_policies(self.test, table_policies, self.ope)
        self.parts.append(res)
        self.per_session.update(per_session_values(res))
        share = (time.perf_counter() - t0) / len(added)
        self.rows += [(c, p, s, spent + share, None) for c, p, s, spent in added]

    def decide(self, out: Path) -> SelectionResult:
        """Paired gains over production (and the logging policy when it is the baseline), the
        rule, the result (step 4)."""
        merged = merge_results(self.parts)
        vs = paired_vs(self.per_session, PRODUCTION, merged, self.ope)
        vs_base = (
            vs
            if self.baseline == PRODUCTION
            else paired_vs(self.per_session, self.baseline, merged, self.ope)
        )
        by_name = {p.name: p for p in merged.policies}
        gains: list[Gain] = []
        candidates: list[Candidate] = []
        for cname, pol, tstep, secs, skipped in self.rows:
            if skipped is not None:
                candidates.append(Candidate(cname, pol, tstep, None, seconds=0.0, skipped=skipped))
                continue
            gain = base_gain = None
            if cname != PRODUCTION:
                gain = _gain_doc(vs[cname])
                if self.baseline != PRODUCTION:
                    base_gain = _gain_doc(vs_base[cname])
            est_name = None if cname == PRODUCTION else vs_base[cname]["estimator"]
            cand = Candidate(
                cname,
                pol,
                tstep,
                self.tables[cname],
                estimate=_estimate(merged, cname, est_name),
                gain=gain,
                support=by_name[cname].support,
                seconds=secs,
                baseline_gain=base_gain,
            )
            candidates.append(cand)
            if cand.rule_gain is not None:
                gains.append(gain_from_doc(cname, cand.rule_gain, cand.support))
        base_est = _estimate(merged, self.baseline, None) or {}
        min_gain = margin_gain(self.config.margin, base_est.get("value"))
        choice = choose(
            gains, self.config.require_support, self.config.bound, min_gain, self.baseline
        )
        elapsed = time.perf_counter() - self.start
        baseline = {"name": self.baseline, "reason": self.baseline_reason, "estimate": base_est}
        return SelectionResult(
            out, self.production, tuple(candidates), choice, elapsed, baseline=baseline
        )


def _gain_doc(entry: Mapping[str, Any]) -> dict[str, Any] | None:
    """A candidate's ``gain`` object from its :func:`~batchrl_mtf.ope.paired.paired_vs` entry
    (``None`` when no estimator is valid for both policies)."""
    est_name = entry["estimator"]
    diff = entry["by_estimator"].get(est_name) if est_name else None
    if diff is None:
        return None
    return {
        "estimator": est_name,
        "gain": float(diff["diff"]),
        "lower": float(diff["ci"][0]),
        "upper": float(diff["ci"][1]),
        "by_estimator": {
            e: {"gain": float(d["diff"]), "lower": float(d["ci"][0]), "upper": float(d["ci"][1])}
            for e, d in entry["by_estimator"].items()
        },
    }


def _baseline(setting: str, production: OPEResult) -> tuple[str, str]:
    """``(baseline, why)``: what the gains are measured against (``SelectConfig.baseline``)."""
    support = production.policies[0].support or {}
    if setting == "production" or not support.get("flag", False):
        return PRODUCTION, "production, evaluated on the held-out sessions"
    share = float(support.get("outside_share", math.nan))  # type: ignore[arg-type]
    return LOGGED, (
        f"production's weights leave the logged support ({share:.0%} of its actions outside the "
        "logged quantile box), so its estimate is an extrapolation; gains are measured against "
        "the logging policy, whose value the held-out sessions measure directly (production's "
        "own gain over it is not known from these logs)"
    )


def select_policy(
    dataset: Transitions | str | Path,
    out: str | Path,
    config: SelectConfig | None = None,
    *,
    fusion: Fusion,
    production: Sequence[float] | None = None,
    progress: bool = False,
    overwrite: bool = False,
    reuse: Sequence[str | Path] = (),
) -> SelectionResult:
    """Train, export and estimate the portfolio; choose; write ``out`` (module docstring).

    Args:
        dataset: A loaded dataset or a dataset directory (with a ``test`` split).
        out: The directory to write (``table.json``, ``selection.json``, ``selection.md``,
            ``candidates/``), claimed with :func:`batchrl_mtf.core.io.output_dir` (kind
            ``selection``): an existing selection is replaced only with ``overwrite``; anything
            else, or a path that holds the dataset, is refused.
        config: The portfolio, budget and OPE settings.
        fusion: The fusion the weights are for.
        production: Production weights in task order (default: the logged actions' most common
            centre).
        progress: Show progress bars.
        overwrite: Replace an existing selection at ``out``.
        reuse: Policy directories trained before (``batchrl-mtf train``, a pipeline's train
            stage, an earlier selection's ``candidates/``): a candidate that one of them holds
            exactly (:func:`batchrl_mtf.training.reuse_mismatch`: the same resolved settings,
            dataset and package versions, so the same bytes) is copied into ``candidates/``
            instead of trained, and costs nothing against the time budget. The selection is
            the same as without them.

    Raises:
        DatasetError: No ``test`` split.
        OutputError: ``out`` is not ours to write (see ``output_dir``).
        ConfigError: Bad production weights.
    """
    config = config or SelectConfig()
    data = dataset if isinstance(dataset, Transitions) else load_dataset(dataset)
    inputs = [data.path] if data.path is not None else []
    with output_dir(out, "selection", inputs=inputs, overwrite=overwrite) as out_path:
        return _select(data, out_path, config, fusion, production, progress, reuse)


def _reused(spec: CandidateSpec, reuse: Sequence[str | Path], data: Transitions) -> Path | None:
    """The first of ``reuse`` that holds candidate ``spec`` exactly (``None``: train it)."""
    if not reuse:
        return None
    tcfg = resolve_config([("select portfolio", spec.overrides)])
    for folder in reuse:
        why = reuse_mismatch(folder, tcfg, data.spec)
        if why is None:
            logger.info("%s: reusing %s (the same training)", spec.name, folder)
            return Path(folder)
        logger.info("%s: not reusing %s: %s", spec.name, folder, why)
    return None


def _select(
    data: Transitions,
    out_path: Path,
    config: SelectConfig,
    fusion: Fusion,
    production: Sequence[float] | None,
    progress: bool,
    reuse: Sequence[str | Path] = (),
) -> SelectionResult:
    budget = _Budget(config.budget_minutes)
    judge = _Judge(data, config, fusion, production)
    specs = portfolio(config)
    workers = min(config.parallel or usable_cores(), len(specs))
    with atomic_dir(out_path, kind="selection") as tmp:
        if workers >= 2 and data.path is not None:
            _train_parallel(data, specs, tmp, judge, budget, config, workers, reuse)
        else:
            for spec in specs:
                pdir = tmp / "candidates" / spec.name
                source = _reused(spec, reuse, data)
                if source is not None:
                    shutil.copytree(source, pdir)
                    judge.add([(spec.name, load_policy(pdir))], [0.0])
                    continue
                if not budget.allows():
                    judge.skip(spec.name, f"time budget of {config.budget_minutes:g} min")
                    continue
                t0 = time.perf_counter()
                trained = train_candidate(data, str(pdir), spec.overrides, progress)
                judge.add([(spec.name, load_policy(pdir))], [trained])
                budget.costs.append(time.perf_counter() - t0)
                logger.info("%s: %.1f s", spec.name, budget.costs[-1])
        result = judge.decide(out_path)
        write_selection(tmp, result, config, data)
    return result


def train_candidate(
    dataset: Transitions | str, pdir: str, overrides: Mapping[str, object], progress: bool = False
) -> float:
    """Train one portfolio candidate into ``pdir`` (also run in a worker process); returns the
    seconds it took."""
    t0 = time.perf_counter()
    tcfg = resolve_config([("select portfolio", overrides)])
    train(dataset, pdir, tcfg, show_progress=progress)
    return time.perf_counter() - t0


def _train_parallel(
    data: Transitions,
    specs: Sequence[CandidateSpec],
    tmp: Path,
    judge: _Judge,
    budget: _Budget,
    config: SelectConfig,
    workers: int,
    reuse: Sequence[str | Path] = (),
) -> None:
    """Train the candidates in ``workers`` spawned processes (at most ``workers`` at once, each
    with ``n_threads``), judging each one in portfolio order as it finishes; a candidate is
    started only while the budget allows it (the projected cost of the next one is the mean
    wall time of those trained so far). A candidate found in ``reuse`` is copied, not trained,
    and judged in its place in the order."""
    todo = iter(specs)
    pending: deque[tuple[CandidateSpec, Any, float | None]] = deque()
    logger.info("training up to %d candidates at once in worker processes", workers)
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:

        def submit_next() -> None:
            for spec in todo:
                source = _reused(spec, reuse, data)
                if source is not None:
                    shutil.copytree(source, tmp / "candidates" / spec.name)
                    done: Future[float] = Future()
                    done.set_result(0.0)
                    pending.append((spec, done, None))  # no cost against the budget
                    continue
                if budget.allows():
                    pdir = str(tmp / "candidates" / spec.name)
                    job = pool.submit(train_candidate, str(data.path), pdir, dict(spec.overrides))
                    pending.append((spec, job, time.perf_counter()))
                    return
                judge.skip(spec.name, f"time budget of {config.budget_minutes:g} min")

        for _ in range(workers):
            submit_next()
        while pending:
            spec, job, t0 = pending.popleft()
            trained = job.result()
            if t0 is not None:
                budget.costs.append(time.perf_counter() - t0)
            judge.add([(spec.name, load_policy(tmp / "candidates" / spec.name))], [trained])
            if t0 is not None:
                logger.info("%s: %.1f s", spec.name, time.perf_counter() - t0)
                submit_next()


def select_among(
    dataset: Transitions | str | Path,
    policies: Sequence[tuple[str, Any]],
    out: str | Path,
    config: SelectConfig | None = None,
    *,
    fusion: Fusion,
    production: Sequence[float] | None = None,
) -> SelectionResult:
    """:func:`select_policy` on policies trained elsewhere (the pipeline's ``[train]`` algorithms):
    export each one's table at every trust-region step, estimate every table and production on
    the held-out split, choose, write ``out``. ``config``'s portfolio fields (``algorithms``,
    ``conservativeness``, ``seeds``, ``n_steps``, ``budget_minutes``) are not used.

    Args:
        dataset: A loaded dataset or a dataset directory (with a ``test`` split).
        policies: ``(name, policy)`` pairs, ``policy.act(obs (n, d)) -> (n, k)``.
        out: The directory to write (as :func:`select_policy`; no ``candidates/<policy>``
            directories, the policies live where they were trained).
        config: Trust-region steps, export and OPE settings.
        fusion: The fusion the weights are for.
        production: Production weights in task order (default: the logged actions' centre).

    Raises:
        DatasetError: No ``test`` split.
        ConfigError: ``out`` is not a directory ``select`` wrote; bad production weights.
    """
    config = config or SelectConfig()
    data = dataset if isinstance(dataset, Transitions) else load_dataset(dataset)
    out_path = Path(out)
    check_out(out_path)
    judge = _Judge(data, config, fusion, production)
    judge.add(policies)
    result = judge.decide(out_path)
    with atomic_dir(out_path) as tmp:
        write_selection(tmp, result, config, data)
    return result
