"""Reading a pipeline file: TOML document -> :class:`~batchrl_mtf.pipeline.config.PipelineConfig`.

One function per section (the sections' dataclasses and their fields are in
:mod:`batchrl_mtf.pipeline.config`); :func:`parse_pipeline` checks the sections against each other
(the features and fusion of a simulated env, the ``[export] policy``, the ``[truth]`` env).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from batchrl_mtf.core.config import config_to_dict, read_toml
from batchrl_mtf.core.fusion import Fusion
from batchrl_mtf.data.config import DatasetConfig
from batchrl_mtf.data.features import FeatureConfig
from batchrl_mtf.data.reward import RewardConfig, default_reward, load_reward, parse_reward
from batchrl_mtf.errors import ConfigError
from batchrl_mtf.export.builder import ExportConfig
from batchrl_mtf.ope.config import OPEConfig
from batchrl_mtf.pipeline.config import (
    PIPELINE_OPE_DEFAULTS,
    SECTIONS,
    SELECT_KEYS,
    DataSection,
    EvaluateSection,
    ExportSection,
    PipelineConfig,
    SimulateSection,
    TrainSection,
    TruthSection,
    build_section,
    check_keys,
    resolve_env,
    resolve_path,
    set_override,
)
from batchrl_mtf.selection import SelectConfig, resolve_select_config
from batchrl_mtf.sim import load_spec
from batchrl_mtf.training import ALGORITHMS

__all__ = ["load_pipeline", "parse_pipeline", "read_pipeline_doc"]


def _data_section(
    doc: Mapping[str, object], features: FeatureConfig, src: str, base: Path
) -> DataSection:
    where = f"{src} [data]"
    dataset_fields = {f.name for f in dataclasses.fields(DatasetConfig)} - {"features", "fusion"}
    table = doc.get("data", {})
    check_keys(table, dataset_fields | {"logs", "simulate"}, where)  # type: ignore[arg-type]
    assert isinstance(table, Mapping)
    sim_doc = table.get("simulate")
    simulate = None
    if sim_doc is not None:
        simulate = build_section(SimulateSection, sim_doc, f"{src} [data.simulate]")
        simulate = dataclasses.replace(simulate, env=resolve_env(simulate.env, base))
    logs_raw = table.get("logs", [])
    if isinstance(logs_raw, str):
        logs_raw = [logs_raw]
    if not isinstance(logs_raw, list) or not all(isinstance(x, str) for x in logs_raw):
        raise ConfigError(f"{where}: 'logs': expected a list of file paths, found {logs_raw!r}")
    logs = tuple(resolve_path(x, base) for x in logs_raw)
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
    dataset = build_section(DatasetConfig, {**rest, "features": features}, where)
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
        check_keys(table, {"file"}, where)
        path = resolve_path(str(table["file"]), base)
        return load_reward(path), path
    check_keys(table, {"valid_play_s", "stickiness", "activeness"}, where)
    return parse_reward({"reward": table}, where), "inline [reward]"


def _train(doc: Mapping[str, object], src: str, base: Path) -> TrainSection:

    where = f"{src} [train]"
    table = dict(doc.get("train", {}))  # type: ignore[call-overload]
    algos_raw = table.pop("algos", ["td3bc", "bc"])
    parallel = table.pop("parallel", TrainSection.parallel)
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
        table["env"] = resolve_env(str(table["env"]), base)
    try:
        section = TrainSection(algos=tuple(algos_raw), settings=table, parallel=parallel)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    for algo in section.algos:  # validate every algorithm's settings now, not after simulating
        section.resolved(algo, where)
    return section


def _evaluate(doc: Mapping[str, object], src: str) -> EvaluateSection:
    where = f"{src} [evaluate]"
    own = {f.name for f in dataclasses.fields(EvaluateSection)} - {"ope"}
    ope_fields = {f.name for f in dataclasses.fields(OPEConfig)}
    table = doc.get("evaluate", {})
    check_keys(table, own | ope_fields, where)  # type: ignore[arg-type]
    assert isinstance(table, Mapping)
    ope = build_section(
        OPEConfig,
        {**PIPELINE_OPE_DEFAULTS, **{k: v for k, v in table.items() if k in ope_fields}},
        where,
    )
    mine = {k: v for k, v in table.items() if k in own}
    return build_section(EvaluateSection, {**mine, "ope": ope}, where)


def _export(doc: Mapping[str, object], src: str, algos: tuple[str, ...]) -> ExportSection:
    where = f"{src} [export]"
    own = {f.name for f in dataclasses.fields(ExportSection)} - {"table"}
    table_fields = {f.name for f in dataclasses.fields(ExportConfig)}
    table = doc.get("export", {})
    check_keys(table, own | table_fields | {"formula", "beta"}, where)  # type: ignore[arg-type]
    assert isinstance(table, Mapping)
    cfg = build_section(ExportConfig, {k: v for k, v in table.items() if k in table_fields}, where)
    mine = {k: v for k, v in table.items() if k in own or k in ("formula", "beta")}
    section = build_section(ExportSection, {**mine, "table": cfg}, where)
    if section.policy and section.policy not in algos:
        raise ConfigError(
            f"{where}: 'policy': expected one of the trained algorithms {list(algos)}, "
            f"found {section.policy!r}"
        )
    return section


def _select(doc: Mapping[str, object], src: str) -> SelectConfig | None:
    where = f"{src} [select]"
    table = doc.get("select", {})
    if not isinstance(table, Mapping):
        raise ConfigError(f"{where}: expected a table, found {table!r}")
    check_keys(table, {"enabled", *SELECT_KEYS}, where)
    enabled = table.get("enabled", True)
    if not isinstance(enabled, bool):
        raise ConfigError(f"{where}: 'enabled': expected true or false, found {enabled!r}")
    if not enabled:
        return None
    try:
        return resolve_select_config([(where, {k: v for k, v in table.items() if k != "enabled"})])
    except ConfigError as exc:
        text = str(exc)
        raise ConfigError(text if text.startswith(where) else f"{where}: {text}") from None


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
        env = resolve_env(str(sim_doc.get("env", SimulateSection.env)), base)
        features = load_spec(env).features
    else:
        features = build_section(FeatureConfig, features_doc or {}, f"{source} [features]")  # type: ignore[arg-type]
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
        truth = build_section(TruthSection, doc["truth"], f"{source} [truth]")  # type: ignore[arg-type]
        truth = dataclasses.replace(truth, env=resolve_env(truth.env, base))
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
        select=_select(doc, source),
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
