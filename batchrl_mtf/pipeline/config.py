"""The pipeline file (``batchrl-mtf run PIPELINE.toml``): one frozen dataclass per section.

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

Unknown sections and keys raise :class:`~batchrl_mtf.errors.ConfigError` naming the file, the
section and the key. Relative paths are resolved against the pipeline file's folder.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from batchrl_mtf.core.config import config_from_mapping, config_to_dict, read_toml, require
from batchrl_mtf.core.fusion import Fusion
from batchrl_mtf.data.config import DatasetConfig
from batchrl_mtf.data.features import FeatureConfig
from batchrl_mtf.data.reward import RewardConfig, default_reward, load_reward, parse_reward
from batchrl_mtf.errors import ConfigError
from batchrl_mtf.export.builder import ExportConfig
from batchrl_mtf.ope.config import ESTIMATOR_NAMES, OPEConfig
from batchrl_mtf.sim import load_spec
from batchrl_mtf.training import ALGORITHMS, resolve_config

__all__ = [
    "SECTIONS",
    "DataSection",
    "EvaluateSection",
    "ExportSection",
    "PipelineConfig",
    "SimulateSection",
    "TrainSection",
    "TruthSection",
    "load_pipeline",
    "parse_pipeline",
    "set_override",
]

T = TypeVar("T")

SECTIONS = ("data", "fusion", "reward", "features", "train", "evaluate", "export", "truth")
"""The sections a pipeline file may hold, in run order."""

SPECIAL_POLICIES = ("behavior", "production", "best-constant")
"""Baseline policy names ``[evaluate] policies`` understands (besides ``constant:w1,...``)."""

IMPORTANCE_WEIGHTED = ("pdis", "wpdis", "dr", "wdr")

PIPELINE_OPE_DEFAULTS: dict[str, object] = {"gamma": 1.0, "estimators": ("fqe", "cfqe", "wdr")}
"""Where ``[evaluate]`` departs from ``OPEConfig``'s defaults: the undiscounted session return
(the unit of the simulator's true values) and the paper's estimators plus WDR."""


def _build(cls: type[T], mapping: Mapping[str, object], where: str) -> T:
    """``config_from_mapping`` with every error message prefixed by ``where``."""
    try:
        return config_from_mapping(cls, mapping, where)
    except ConfigError as exc:
        text = str(exc)
        raise ConfigError(text if text.startswith(where) else f"{where}: {text}") from None


def _check_keys(mapping: Mapping[str, object], allowed: set[str], where: str) -> None:
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


def _resolve(value: str, base: Path) -> str:
    p = Path(value).expanduser()
    return str(p if p.is_absolute() else (base / p).resolve())


def _resolve_env(value: str, base: Path) -> str:
    return _resolve(value, base) if value and _is_path(value) else value


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
    """

    algos: tuple[str, ...] = ("td3bc", "bc")
    settings: Mapping[str, object] = field(default_factory=dict)

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
            return {"algos": list(self.train.algos), "settings": _plain(self.train.settings)}
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


def _data_section(
    doc: Mapping[str, object], features: FeatureConfig, src: str, base: Path
) -> DataSection:
    where = f"{src} [data]"
    dataset_fields = {f.name for f in dataclasses.fields(DatasetConfig)} - {"features", "fusion"}
    table = doc.get("data", {})
    _check_keys(table, dataset_fields | {"logs", "simulate"}, where)  # type: ignore[arg-type]
    assert isinstance(table, Mapping)
    sim_doc = table.get("simulate")
    simulate = None
    if sim_doc is not None:
        simulate = _build(SimulateSection, sim_doc, f"{src} [data.simulate]")
        simulate = dataclasses.replace(simulate, env=_resolve_env(simulate.env, base))
    logs_raw = table.get("logs", [])
    if isinstance(logs_raw, str):
        logs_raw = [logs_raw]
    if not isinstance(logs_raw, list) or not all(isinstance(x, str) for x in logs_raw):
        raise ConfigError(f"{where}: 'logs': expected a list of file paths, found {logs_raw!r}")
    logs = tuple(_resolve(x, base) for x in logs_raw)
    if simulate is None and not logs:
        raise ConfigError(
            f'{where}: expected logs = ["file.parquet", ...] or a [data.simulate] table; found neither'
        )
    if simulate is not None and logs:
        raise ConfigError(f"{where}: expected either logs or [data.simulate], found both")
    missing = [x for x in logs if not Path(x).exists()]
    if missing:
        raise ConfigError(f"{where}: 'logs': no such file or folder: {', '.join(missing)}")
    rest = {k: v for k, v in table.items() if k not in ("logs", "simulate")}
    dataset = _build(DatasetConfig, {**rest, "features": features}, where)
    return DataSection(logs=logs, simulate=simulate, dataset=dataset)


def _reward(
    doc: Mapping[str, object], simulate: SimulateSection | None, src: str, base: Path
) -> tuple[RewardConfig, str]:
    table = doc.get("reward")
    where = f"{src} [reward]"
    if table is None:
        if simulate is not None:
            return load_spec(simulate.env).reward, f"the [reward] table of {simulate.env}"

        return default_reward(), "the paper-style default (envs/reward_default.toml)"
    if not isinstance(table, Mapping):
        raise ConfigError(f"{where}: expected a table, found {table!r}")
    if "file" in table:
        _check_keys(table, {"file"}, where)
        path = _resolve(str(table["file"]), base)
        return load_reward(path), path
    _check_keys(table, {"valid_play_s", "stickiness", "activeness"}, where)
    return parse_reward({"reward": table}, where), "inline [reward]"


def _train(doc: Mapping[str, object], src: str, base: Path) -> TrainSection:

    where = f"{src} [train]"
    table = dict(doc.get("train", {}))  # type: ignore[call-overload]
    algos_raw = table.pop("algos", ["td3bc", "bc"])
    if isinstance(algos_raw, str):
        algos_raw = [algos_raw]
    if (
        not isinstance(algos_raw, list)
        or not algos_raw
        or not all(isinstance(a, str) and a in ALGORITHMS for a in algos_raw)
    ):
        raise ConfigError(
            f"{where}: 'algos': expected a non-empty list of {', '.join(ALGORITHMS)}, "
            f"found {algos_raw!r}"
        )
    if len(set(algos_raw)) != len(algos_raw):
        raise ConfigError(f"{where}: 'algos': expected no duplicates, found {algos_raw}")
    if "algo" in table:
        raise ConfigError(
            f"{where}: unknown key 'algo'; list the algorithms as algos = [\"bcq\", ...]"
        )
    if isinstance(table.get("env"), str):
        table["env"] = _resolve_env(str(table["env"]), base)
    section = TrainSection(algos=tuple(algos_raw), settings=table)
    for algo in section.algos:  # validate every algorithm's settings now, not after simulating
        section.resolved(algo, where)
    return section


def _evaluate(doc: Mapping[str, object], src: str) -> EvaluateSection:
    where = f"{src} [evaluate]"
    own = {f.name for f in dataclasses.fields(EvaluateSection)} - {"ope"}
    ope_fields = {f.name for f in dataclasses.fields(OPEConfig)}
    table = doc.get("evaluate", {})
    _check_keys(table, own | ope_fields, where)  # type: ignore[arg-type]
    assert isinstance(table, Mapping)
    ope = _build(
        OPEConfig,
        {**PIPELINE_OPE_DEFAULTS, **{k: v for k, v in table.items() if k in ope_fields}},
        where,
    )
    mine = {k: v for k, v in table.items() if k in own}
    return _build(EvaluateSection, {**mine, "ope": ope}, where)


def _export(doc: Mapping[str, object], src: str, algos: tuple[str, ...]) -> ExportSection:
    where = f"{src} [export]"
    own = {f.name for f in dataclasses.fields(ExportSection)} - {"table"}
    table_fields = {f.name for f in dataclasses.fields(ExportConfig)}
    table = doc.get("export", {})
    _check_keys(table, own | table_fields | {"formula", "beta"}, where)  # type: ignore[arg-type]
    assert isinstance(table, Mapping)
    cfg = _build(ExportConfig, {k: v for k, v in table.items() if k in table_fields}, where)
    mine = {k: v for k, v in table.items() if k in own or k in ("formula", "beta")}
    section = _build(ExportSection, {**mine, "table": cfg}, where)
    if section.policy and section.policy not in algos:
        raise ConfigError(
            f"{where}: 'policy': expected one of the trained algorithms {list(algos)}, "
            f"found {section.policy!r}"
        )
    return section


def _fusion(
    doc: Mapping[str, object], data: DataSection, export: ExportSection, src: str
) -> Fusion:
    """The fusion the logged weights were applied with, which the dataset records.

    ``[fusion]``; else the simulated env's; else (files of earlier versions) ``[export]``'s.
    """
    where = f"{src} [fusion]"
    table = doc.get("fusion")
    env = None if data.simulate is None else load_spec(data.simulate.env)
    env_fusion = None if env is None else env.fusion.to_fusion()
    if table is None:
        if env_fusion is not None:
            return env_fusion
        if export.fusion is not None:
            return export.fusion
        raise ConfigError(
            f"{where}: expected formula and beta (the fusion the logged weights were applied "
            'with, e.g. formula = "logsum", beta = 0.1): without [data.simulate] it is not known'
        )
    fusion = Fusion.from_dict(table, where)  # type: ignore[arg-type]
    if env is not None and env_fusion is not None:
        tasks = env.world.tasks
        if fusion.for_tasks(tasks, f"{where}.beta") != env_fusion:
            raise ConfigError(
                f"{where}: with [data.simulate] the fusion must be the one of "
                f"{env.source} ({env_fusion.describe(tasks)}); found "
                f"{fusion.describe(tasks)} (omit [fusion] to use the env's)"
            )
    return fusion


def parse_pipeline(
    doc: Mapping[str, object], source: str = "<pipeline>", base_dir: str | Path = "."
) -> PipelineConfig:
    """Build a :class:`PipelineConfig` from a parsed pipeline document.

    Args:
        doc: The TOML document (sections as tables).
        source: Its file name, used in error messages.
        base_dir: Folder that relative paths are resolved against.

    Raises:
        ConfigError: An unknown section or key (naming both), a wrong type, an invalid value,
            missing logs, or inconsistent sections.
    """
    base = Path(base_dir).resolve()
    unknown = sorted(set(doc) - set(SECTIONS))
    if unknown:
        raise ConfigError(
            f"{source}: unknown section(s) {', '.join(f'[{u}]' for u in unknown)}; "
            f"expected {', '.join(f'[{s}]' for s in SECTIONS)}"
        )
    data_doc = doc.get("data")
    sim_doc = data_doc.get("simulate") if isinstance(data_doc, Mapping) else None
    features_doc = doc.get("features")
    if features_doc is None and isinstance(sim_doc, Mapping):
        env = _resolve_env(str(sim_doc.get("env", SimulateSection.env)), base)
        features = load_spec(env).features
    else:
        features = _build(FeatureConfig, features_doc or {}, f"{source} [features]")  # type: ignore[arg-type]
    data = _data_section(doc, features, source, base)
    if data.simulate is not None:
        spec = load_spec(data.simulate.env)
        if features != spec.features:
            raise ConfigError(
                f"{source} [features]: with [data.simulate] the features must equal the "
                f"[features] of {data.simulate.env} ({config_to_dict(spec.features)}); "
                f"found {config_to_dict(features)} (omit [features] to use the env's)"
            )
        if data.dataset.action_bounds is None:
            bounds = (float(spec.fusion.low), float(spec.fusion.high))
            data = dataclasses.replace(
                data, dataset=dataclasses.replace(data.dataset, action_bounds=bounds)
            )
    reward, reward_source = _reward(doc, data.simulate, source, base)
    train = _train(doc, source, base)
    evaluate = _evaluate(doc, source)
    export = _export(doc, source, train.algos)
    truth = None
    if "truth" in doc:
        truth = _build(TruthSection, doc["truth"], f"{source} [truth]")  # type: ignore[arg-type]
        truth = dataclasses.replace(truth, env=_resolve_env(truth.env, base))
        if not truth.env and data.simulate is None:
            raise ConfigError(
                f"{source} [truth]: 'env': expected the platform spec to roll the policies out in "
                "(there is no [data.simulate] env to default to)"
            )
    data = dataclasses.replace(
        data,
        dataset=dataclasses.replace(data.dataset, fusion=_fusion(doc, data, export, source)),
    )
    return PipelineConfig(
        data=data,
        reward=reward,
        reward_source=reward_source,
        train=train,
        evaluate=evaluate,
        export=export,
        truth=truth,
        source=source,
        base_dir=str(base),
    )


def read_pipeline_doc(path: str | Path) -> dict[str, Any]:
    """The parsed TOML document of a pipeline file.

    Raises:
        ConfigError: Missing file or invalid TOML.
    """
    return read_toml(path, "pipeline file")


def load_pipeline(
    path: str | Path, overrides: Mapping[str, object] | None = None
) -> PipelineConfig:
    """Read and validate a pipeline file.

    Args:
        path: The TOML file.
        overrides: ``{"train.n_steps": 500, ...}`` applied on top of the file.

    Raises:
        ConfigError: See :func:`parse_pipeline`.
    """
    doc = read_pipeline_doc(path)
    for key, value in (overrides or {}).items():
        set_override(doc, key, value)
    return parse_pipeline(doc, str(path), Path(path).parent)
