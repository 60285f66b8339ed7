"""The pipeline file (``batchrl-mtf run PIPELINE.toml``): one frozen dataclass per section
(:mod:`batchrl_mtf.pipeline.parse` reads a file into them).

Sections, in run order (see ``docs/pipeline.md``)::

    [data]            logs = [...] or [data.simulate], plus DatasetConfig fields
    [data.simulate]   make the logs with the simulator first
    [fusion]          formula, beta: the fusion the logged weights were applied with (recorded
                      in the dataset; default with [data.simulate]: the env's)
    [reward]          the reward table inline, or file = "reward.toml"
    [features]        FeatureConfig fields
    [train]           algos = ["td3bc", "bc"], TrainConfig keys, [train.<algo>] tables
    [evaluate]        policies, the best-constant search, OPEConfig keys
    [export]          policy, ExportConfig keys (formula/beta: a table for another fusion)
    [truth]           simulator rollouts of every policy (optional)
    [select]          off-policy selection among the trained policies' tables (on by default;
                      ``enabled = false`` skips it); SelectConfig's export and trust-region keys

Unknown sections and keys raise :class:`~batchrl_mtf.errors.ConfigError` naming the file, the
section and the key. Relative paths are resolved against the pipeline file's folder.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from batchrl_mtf.core.config import config_from_mapping, config_to_dict, require
from batchrl_mtf.core.fusion import Fusion
from batchrl_mtf.data.config import DatasetConfig
from batchrl_mtf.data.reward import RewardConfig
from batchrl_mtf.errors import ConfigError
from batchrl_mtf.export.builder import ExportConfig
from batchrl_mtf.ope.config import ESTIMATOR_NAMES, OPEConfig
from batchrl_mtf.selection import SelectConfig
from batchrl_mtf.training import resolve_config

__all__ = [
    "PIPELINE_OPE_DEFAULTS",
    "SECTIONS",
    "SELECT_KEYS",
    "DataSection",
    "EvaluateSection",
    "ExportSection",
    "PipelineConfig",
    "SimulateSection",
    "TrainSection",
    "TruthSection",
    "build_section",
    "check_keys",
    "resolve_env",
    "resolve_path",
    "set_override",
]

T = TypeVar("T")

SECTIONS = (
    "data",
    "fusion",
    "reward",
    "features",
    "train",
    "evaluate",
    "export",
    "truth",
    "select",
)
"""The sections a pipeline file may hold, in run order."""

SPECIAL_POLICIES = ("behavior", "production", "best-constant")
"""Baseline policy names ``[evaluate] policies`` understands (besides ``constant:w1,...``)."""

IMPORTANCE_WEIGHTED = ("pdis", "wpdis", "dr", "wdr")

PIPELINE_OPE_DEFAULTS: dict[str, object] = {"gamma": 1.0, "estimators": ("fqe", "cfqe", "wdr")}
"""Where ``[evaluate]`` departs from ``OPEConfig``'s defaults: the undiscounted session return
(the unit of the simulator's true values) and the paper's estimators plus WDR."""


SELECT_KEYS = (
    "trust_steps",
    "keys",
    "buckets",
    "min_support",
    "require_support",
    "action_box",
    "seed",
)
"""The :class:`~batchrl_mtf.selection.SelectConfig` fields ``[select]`` sets (besides ``enabled``):
the pipeline's candidates are the ``[train]`` algorithms (no portfolio or budget keys) and they are
judged with the ``[evaluate]`` OPE settings (no ``ope.*`` keys)."""


def build_section(cls: type[T], mapping: Mapping[str, object], where: str) -> T:
    """``config_from_mapping`` with every error message prefixed by ``where``."""
    try:
        return config_from_mapping(cls, mapping, where)
    except ConfigError as exc:
        text = str(exc)
        raise ConfigError(text if text.startswith(where) else f"{where}: {text}") from None


def check_keys(mapping: Mapping[str, object], allowed: set[str], where: str) -> None:
    """Raise :class:`ConfigError` naming ``where`` and every key of ``mapping`` not ``allowed``."""
    if not isinstance(mapping, Mapping):
        raise ConfigError(f"{where}: expected a table of settings, found {type(mapping).__name__}")
    unknown = sorted(set(mapping) - allowed)
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) {', '.join(repr(k) for k in unknown)}; "
            f"expected one of {', '.join(sorted(allowed))}"
        )


def _is_path(value: str) -> bool:
    """Whether an env argument names a file (rather than a shipped spec such as ``short_video``)."""
    return "/" in value or "\\" in value or value.endswith(".toml")


def resolve_path(value: str, base: Path) -> str:
    """``value`` as an absolute path (relative ones against ``base``)."""
    p = Path(value).expanduser()
    return str(p if p.is_absolute() else (base / p).resolve())


def resolve_env(value: str, base: Path) -> str:
    """An env argument: a file path resolved against ``base``; a shipped spec name unchanged."""
    return resolve_path(value, base) if value and _is_path(value) else value


@dataclass(frozen=True)
class SimulateSection:
    """``[data.simulate]``: make the logs with the simulator before building the dataset.

    Attributes:
        env: Platform spec: a shipped name (``short_video``, ``ecommerce``) or a TOML path.
        sessions: Logged sessions.
        policy: Logging policy (``mixed``, ``action-noise``, ``random``, ``production``, ...).
        seed: Seed of the simulated users and noise.
        sigma: Noise of ``action-noise``/``mixed`` (``None`` = the spec's).
        random_sigma: Noise of ``random``/``mixed`` (``None`` = the spec's).
    """

    env: str = "short_video"
    sessions: int = 4000
    policy: str = "mixed"
    seed: int = 0
    sigma: float | None = None
    random_sigma: float | None = None

    def __post_init__(self) -> None:
        require(self.sessions >= 1, "sessions", f"expected an integer >= 1, found {self.sessions}")
        require(bool(self.env), "env", "expected a platform spec name or path")


@dataclass(frozen=True)
class DataSection:
    """``[data]``: where the logs come from and how they become the MDP dataset.

    Attributes:
        logs: Log files or folders (schema v1); empty when ``simulate`` makes them.
        simulate: Simulate the logs first (``[data.simulate]``).
        dataset: The :class:`~batchrl_mtf.data.config.DatasetConfig` (every other ``[data]`` key, and
            ``[features]``); with ``simulate`` the action bounds default to the spec's.
    """

    logs: tuple[str, ...] = ()
    simulate: SimulateSection | None = None
    dataset: DatasetConfig = field(default_factory=DatasetConfig)


@dataclass(frozen=True)
class TrainSection:
    """``[train]``: which algorithms to train and their settings.

    Attributes:
        algos: Algorithms to train (``bcq``, ``cql``, ``iql``, ``td3bc``, ``awac``, ``bc``), each into
            ``OUT/train/<algo>``; the first is the learned policy the export and verdict use by
            default.
        settings: ``TrainConfig`` keys shared by every algorithm and ``[train.<algo>]`` tables,
            resolved with :func:`batchrl_mtf.training.resolve_config`.
        parallel: Worker processes that train the algorithms at the same time (each with its
            ``n_threads``); 0 = one per CPU core, 1 = one after another in the pipeline's
            process. The policies are the same either way (each training is seeded).
    """

    algos: tuple[str, ...] = ("td3bc", "bc")
    settings: Mapping[str, object] = field(default_factory=dict)
    parallel: int = 0

    def __post_init__(self) -> None:
        require(
            isinstance(self.parallel, int)
            and not isinstance(self.parallel, bool)
            and self.parallel >= 0,
            "parallel",
            f"expected an integer >= 0 (0 = one per core), found {self.parallel!r}",
        )

    def resolved(self, algo: str, where: str = "[train]") -> Any:
        """The ``TrainConfig`` of ``algo``."""

        try:
            return resolve_config([(where, {**self.settings, "algo": algo})])
        except ConfigError as exc:
            text = str(exc)
            raise ConfigError(text if text.startswith(where) else f"{where}: {text}") from None


@dataclass(frozen=True)
class EvaluateSection:
    """``[evaluate]``: offline policy evaluation of the baselines and every trained policy.

    Attributes:
        policies: Baselines: ``behavior`` (the logging policy), ``production`` (the spec's
            production weights when simulated, else the logged actions' most common centre),
            ``best-constant`` (the constant an offline estimator rates best), ``constant:w1,...``.
            Every trained policy is added.
        split: Sessions evaluated on (``test``, ``train``, ``all``).
        best_constant_estimator: Estimator that rates the best-constant candidates.
        best_constant_candidates: Candidates of the best-constant search.
        best_constant_split: Sessions the best constant is chosen on.
        ope: The :class:`~batchrl_mtf.ope.OPEConfig` (every other key); defaults differ in
            ``gamma = 1`` and ``estimators = ["fqe", "cfqe", "wdr"]``.
    """

    policies: tuple[str, ...] = SPECIAL_POLICIES
    split: str = "test"
    best_constant_estimator: str = "wpdis"
    best_constant_candidates: int = 16
    best_constant_split: str = "train"
    ope: OPEConfig = field(default_factory=lambda: OPEConfig(**PIPELINE_OPE_DEFAULTS))  # type: ignore[arg-type]

    def __post_init__(self) -> None:
        for p in self.policies:
            require(
                p in SPECIAL_POLICIES or p.startswith("constant:"),
                "policies",
                f"expected {', '.join(SPECIAL_POLICIES)} or constant:w1,..., found {p!r}",
            )
        require(
            len(set(self.policies)) == len(self.policies),
            "policies",
            f"expected no duplicates, found {list(self.policies)}",
        )
        for name, value in (
            ("split", self.split),
            ("best_constant_split", self.best_constant_split),
        ):
            require(
                value in ("train", "test", "all"),
                name,
                f"expected 'train', 'test' or 'all', found {value!r}",
            )
        require(
            self.best_constant_estimator in ESTIMATOR_NAMES,
            "best_constant_estimator",
            f"expected one of {', '.join(ESTIMATOR_NAMES)}, found {self.best_constant_estimator!r}",
        )
        require(
            self.best_constant_candidates >= 1,
            "best_constant_candidates",
            f"expected >= 1, found {self.best_constant_candidates}",
        )


@dataclass(frozen=True)
class ExportSection:
    """``[export]``: the weight table built from a trained policy.

    Attributes:
        policy: The trained algorithm to export (empty = the first of ``[train] algos``).
        fusion: The fusion of the table; ``None`` = the dataset's (``[fusion]``, or the
            simulated env's). The flat keys ``formula``/``beta`` of earlier versions set it.
        ope: Also estimate the table's value offline (one FQE fit) to report the value lost.
        table: The :class:`~batchrl_mtf.export.ExportConfig` (every other key).
    """

    policy: str = ""
    fusion: Fusion | None = None
    ope: bool = True
    table: ExportConfig = field(default_factory=ExportConfig)


@dataclass(frozen=True)
class TruthSection:
    """``[truth]``: roll every policy out in a simulator for its true value.

    Attributes:
        env: Platform spec; empty = the ``[data.simulate]`` env.
        sessions: Fresh simulated sessions per policy (the same users for every policy).
        seed: Seed of those sessions (use another seed than the logs').
    """

    env: str = ""
    sessions: int = 2000
    seed: int = 12345

    def __post_init__(self) -> None:
        require(self.sessions >= 2, "sessions", f"expected an integer >= 2, found {self.sessions}")


@dataclass(frozen=True)
class PipelineConfig:
    """A whole pipeline file, parsed and validated.

    Attributes:
        data: ``[data]`` (and ``[data.simulate]``, ``[features]``).
        reward: The reward (``[reward]``; the env's when simulated and omitted; else the default).
        reward_source: Where the reward came from, in words.
        train: ``[train]``.
        evaluate: ``[evaluate]``.
        export: ``[export]``.
        truth: ``[truth]``, or ``None`` when absent.
        select: ``[select]`` (its :data:`SELECT_KEYS`; the OPE settings are ``[evaluate]``'s),
            or ``None`` with ``enabled = false``.
        source: The file it was read from (or ``"<demo>"``).
        base_dir: Folder relative paths were resolved against.
    """

    data: DataSection
    reward: RewardConfig
    reward_source: str
    train: TrainSection
    evaluate: EvaluateSection
    export: ExportSection
    truth: TruthSection | None
    select: SelectConfig | None = field(default_factory=SelectConfig)
    source: str = "<pipeline>"
    base_dir: str = "."

    @property
    def truth_env(self) -> str:
        """The simulator used for true values ("" when there is none)."""
        if self.truth is None:
            return ""
        if self.truth.env:
            return self.truth.env
        return self.data.simulate.env if self.data.simulate is not None else ""

    @property
    def learned(self) -> str:
        """The trained algorithm exported and judged in the verdict."""
        return self.export.policy or self.train.algos[0]

    def section(self, name: str) -> dict[str, object]:
        """One section as a plain mapping (what the stage cache hashes)."""
        if name == "reward":
            return {"valid_play_s": self.reward.valid_play_s, **config_to_dict(self.reward)}
        if name == "features":
            return config_to_dict(self.data.dataset.features)
        if name == "fusion":
            return (self.data.dataset.fusion or Fusion()).to_dict()
        if name == "train":
            return {
                "algos": list(self.train.algos),
                "settings": _plain(self.train.settings),
                "parallel": self.train.parallel,
            }
        if name == "select":
            if self.select is None:
                return {"enabled": False}
            own = self.select.to_dict()
            return {"enabled": True, **{k: own[k] for k in SELECT_KEYS}}
        value = getattr(self, name)
        return {} if value is None else config_to_dict(value)

    def to_dict(self) -> dict[str, object]:
        """The resolved configuration, section by section (for the report and run records)."""
        out: dict[str, object] = {name: self.section(name) for name in SECTIONS}
        out["reward_source"] = self.reward_source
        out["source"] = self.source
        return out


def _plain(value: object) -> object:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def set_override(doc: dict[str, Any], dotted: str, value: object) -> None:
    """Set ``section.key`` (or ``section.sub.key``) of a parsed pipeline document in place."""
    parts = dotted.split(".")
    if len(parts) < 2 or not all(parts):
        raise ConfigError(f"--set {dotted}: expected section.key=value (e.g. train.n_steps=500)")
    node = doc
    for p in parts[:-1]:
        child = node.setdefault(p, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--set {dotted}: {p!r} is not a table")
        node = child
    node[parts[-1]] = value
