"""Build an MDP dataset from logs (``batchrl-mtf build-dataset``, the local engine).

A dataset directory holds:

- ``transitions.parquet``: one row per request (``user_id``, ``session_id``, ``request_id``,
  ``step``, ``ts``, ``obs``, ``action``, ``reward``, ``stickiness``, ``activeness``, ``terminal``,
  ``timeout``, ``behavior_logp``, ``split``);
- ``dataset.h5``: the same episodes as the flat arrays a d3rlpy ``MDPDataset`` is made of
  (``observations``, ``actions``, ``rewards``, ``terminals``, ``timeouts``; float32, the D4RL
  layout), readable by :func:`~batchrl_mtf.data.formats.load_d3rlpy_file` or any HDF5 reader;
- ``features.json``: the state definition, normalisation statistics, tasks, action bounds, gamma
  (:func:`dataset_spec`);
- ``reward.toml``: the reward used;
- ``report.json``: rows/requests/sessions read, kept and dropped by reason; reward and action
  statistics; hashes of the input and of the dataset (:func:`report_document`).

The logs become transitions through :func:`batchrl_mtf.data.parts.process_logs`, the same per-part
function the Spark engine runs (:mod:`batchrl_mtf.data.spark`); the file formats are in
:mod:`batchrl_mtf.data.formats`. The directory is written atomically and the same input gives
byte-identical Parquet and report.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import numpy.typing as npt

from batchrl_mtf.core.config import config_to_dict
from batchrl_mtf.core.io import (
    atomic_dir,
    check_output_dir,
    dumps_json,
    hash_bytes,
    hash_files,
    output_dir,
    package_versions,
)
from batchrl_mtf.core.version import __version__
from batchrl_mtf.data.config import DatasetConfig
from batchrl_mtf.data.features import FeatureSpec
from batchrl_mtf.data.formats import parquet_bytes, write_d3rlpy_file
from batchrl_mtf.data.parts import PartResult, process_logs
from batchrl_mtf.data.reward import RewardConfig, load_reward
from batchrl_mtf.data.spec import DatasetSpec, bounds_from_range, dataset_fusion, fusion_doc
from batchrl_mtf.data.stats import PartSummary
from batchrl_mtf.data.transitions import Transitions
from batchrl_mtf.errors import Problem
from batchrl_mtf.logs.schema import LogColumns, LogFrame, read_logs

__all__ = ["build_dataset", "build_dataset_from_frame", "dataset_spec", "report_document"]

logger = logging.getLogger(__name__)
FloatArray = npt.NDArray[np.float64]


def report_document(
    summary: PartSummary,
    problems: Sequence[Problem],
    columns: LogColumns,
    feature_names: Sequence[str],
    reward: RewardConfig,
    config: DatasetConfig,
    inputs: Sequence[str],
    data_hash: str,
    dataset_hash: str,
    low: FloatArray,
    high: FloatArray,
) -> dict[str, object]:
    """The ``report.json`` document, from the (merged) summary of the logs' parts."""
    sessions = summary.sessions
    return {
        "format": "batchrl-mtf/dataset-report@1",
        "version": __version__,
        "inputs": list(inputs),
        "data_hash": data_hash,
        "dataset_hash": dataset_hash,
        "accounting": summary.accounting.to_dict(),
        "problems": [
            {
                "rule": p.rule,
                "file": p.file,
                "column": p.column,
                "expected": p.expected,
                "found": p.found,
                "examples": list(p.examples),
                "n_rows": p.n_rows,
            }
            for p in problems
        ],
        "columns": {
            "tasks": list(columns.tasks),
            "user_features": list(columns.user_features),
            "feedback": list(columns.feedback),
            "unknown": list(columns.unknown),
        },
        "features": list(feature_names),
        "episodes": {
            "sessions": sessions,
            "requests": summary.requests,
            "terminal": summary.terminal,
            "timeout": summary.timeout,
            "mean_length": summary.requests / sessions if sessions else 0.0,
            "max_length": summary.max_length,
        },
        "reward": {
            "per_request": {
                "reward": summary.reward.stats(),
                "stickiness": summary.stickiness.stats(),
                "activeness": summary.activeness.stats(),
            },
            "session_return": summary.session_return.stats(),
        },
        "actions": {
            f"w_{task}": {**summary.actions.stats(i), "low": float(low[i]), "high": float(high[i])}
            for i, task in enumerate(columns.tasks)
        },
        "config": {
            "dataset": config_to_dict(config),
            "reward": reward.to_toml(),
            "fusion": fusion_doc(*dataset_fusion(config, columns.tasks), columns.tasks),
        },
        "versions": package_versions(),
    }


def dataset_spec(
    summary: PartSummary,
    spec: FeatureSpec,
    tasks: Sequence[str],
    low: FloatArray,
    high: FloatArray,
    config: DatasetConfig,
    has_behavior_logp: bool,
    dataset_hash: str,
    data_hash: str,
) -> DatasetSpec:
    """The ``features.json`` document's spec, with normalisation statistics from ``summary``."""
    fusion, source = dataset_fusion(config, tasks)
    d = len(spec.names)
    mean = summary.obs.mean if summary.obs.n else np.zeros(d)
    std = summary.obs.std if summary.obs.n else np.ones(d)
    std = np.where(std > 1e-8, std, 1.0)
    features = FeatureSpec(
        names=spec.names,
        user_features=spec.user_features,
        feedback=spec.feedback,
        config=spec.config,
        mean=tuple(float(x) for x in mean),
        std=tuple(float(x) for x in std),
    )
    return DatasetSpec(
        features=features,
        tasks=tuple(tasks),
        action_low=tuple(float(x) for x in low),
        action_high=tuple(float(x) for x in high),
        gamma=config.gamma,
        has_behavior_logp=has_behavior_logp,
        dataset_hash=dataset_hash,
        data_hash=data_hash,
        fusion=fusion,
        fusion_source=source,
    )


def _finish(
    result: PartResult,
    problems: Sequence[Problem],
    reward: RewardConfig,
    config: DatasetConfig,
    inputs: Sequence[str],
    data_hash: str,
) -> tuple[Transitions, bytes, dict[str, object]]:
    """The dataset of the local engine's one part: its spec, Parquet bytes and report."""
    t = result.transitions
    assert t is not None  # process_logs raised otherwise
    summary = result.summary
    with ThreadPoolExecutor(1) as pool:  # Arrow encodes the Parquet without the GIL
        parquet_job = pool.submit(parquet_bytes, t)
        low, high = bounds_from_range(
            summary.actions.min, summary.actions.max, t.spec.tasks, config
        )
        parquet = parquet_job.result()
    dataset_hash = hash_bytes(parquet)
    spec = dataset_spec(
        summary,
        t.spec.features,
        t.spec.tasks,
        low,
        high,
        config,
        t.spec.has_behavior_logp,
        dataset_hash,
        data_hash,
    )
    report = report_document(
        summary,
        problems,
        result.columns,
        t.spec.features.names,
        reward,
        config,
        inputs,
        data_hash,
        dataset_hash,
        low,
        high,
    )
    return dataclasses.replace(t, spec=spec), parquet, report


def build_dataset_from_frame(
    logs: LogFrame, reward: RewardConfig, config: DatasetConfig, data_hash: str = ""
) -> tuple[Transitions, dict[str, object]]:
    """Validate logs held in memory and build the dataset without writing anything.

    Returns:
        The dataset and its report (the ``report.json`` document).
    """
    result, problems = process_logs(logs, reward, config)
    t, _parquet, report = _finish(result, problems, reward, config, logs.files, data_hash)
    return t, report


def build_dataset(
    paths: Sequence[str | Path],
    reward: RewardConfig | str | Path,
    out_dir: str | Path,
    config: DatasetConfig | None = None,
    overwrite: bool = False,
) -> dict[str, object]:
    """Read logs, validate them, and write a dataset directory atomically.

    Args:
        paths: Log files or directories (schema v1).
        reward: A reward config or the path of a reward TOML file.
        out_dir: The dataset directory to create (replaced only when the build succeeds).
        config: Dataset options; defaults to :class:`DatasetConfig()`.
        overwrite: Replace a dataset already in ``out_dir`` (see
            :func:`~batchrl_mtf.core.io.output_dir` for what is refused).

    Returns:
        The report written to ``report.json``.

    Raises:
        SchemaError: The logs break schema v1 (and ``on_error`` is ``"fail"``).
        ConfigError: The reward or options do not fit the logs.
    """
    config = config or DatasetConfig()
    inputs = [*paths, *([] if isinstance(reward, RewardConfig) else [reward])]
    check_output_dir(out_dir, "dataset", inputs=inputs, overwrite=overwrite)
    reward_cfg = reward if isinstance(reward, RewardConfig) else load_reward(reward)
    with ThreadPoolExecutor(1) as pool:  # hashing the input overlaps reading and validating it
        hash_job = pool.submit(hash_files, list(paths))
        logs = read_logs(paths)
        files = logs.files
        result, problems = process_logs(logs, reward_cfg, config)
        # the kept rows hold the logs as read; the transitions are all that is left to write
        result = dataclasses.replace(result, kept=None)
        del logs
        data_hash = hash_job.result()
    data, parquet, report = _finish(result, problems, reward_cfg, config, files, data_hash)
    acc = result.summary.accounting
    del result
    claim = output_dir(out_dir, "dataset", inputs=inputs, overwrite=overwrite)
    with claim, atomic_dir(out_dir, kind="dataset") as tmp:
        (tmp / "transitions.parquet").write_bytes(parquet)
        (tmp / "features.json").write_text(dumps_json(data.spec.to_dict()), encoding="utf-8")
        (tmp / "reward.toml").write_text(reward_cfg.to_toml(), encoding="utf-8")
        (tmp / "report.json").write_text(dumps_json(report), encoding="utf-8")
        write_d3rlpy_file(tmp / "dataset.h5", data)
    logger.debug(
        "dataset %s: %d sessions, %d requests from %d rows (%d dropped)",
        out_dir,
        acc.sessions_kept,
        acc.requests_kept,
        acc.rows_read,
        acc.rows_read - acc.rows_kept,
    )
    return report
