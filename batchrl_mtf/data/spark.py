"""Build a dataset on Apache Spark (``batchrl-mtf build-dataset --engine spark``).

The executors run the same Python functions as the local engine (:func:`process_part`: the
validation rules, the accounting, the sessions, the state features and the reward) on parts of the
logs that hold complete users; the driver merges the parts' small summaries with the same code
(:class:`~batchrl_mtf.data.stats.PartSummary`, :func:`~batchrl_mtf.data.parts.check_summary`,
:func:`~batchrl_mtf.data.build.report_document`). See ``docs/scale.md``.

Plan of the job (``docs/scale.md`` has its profile):

1. Column checks on the logs' schema (driver, no job); one aggregate job over the id columns
   (per request and per session, side by side) gives the row count, the missing ids per id
   column and whether any request or session links users (more than one ``user_id``, or a
   missing one and a present one); id and ``ts`` type decisions follow from it.
2. No linked users (the usual case): ranges of complete users (bounds from a sample of the
   ``user_id`` column alone, rows placed by ``repartitionById``), ``mapInArrow``: each task runs
   :func:`process_part` on its rows (cut into chunks of complete users of about ``chunk_rows``
   rows only when a partition holds more, after ``sortWithinPartitions``); the tasks' JSON summaries come back through an accumulator and
   their transitions, already in canonical order (partition ranges ascend, each chunk's rows are
   canonical), are written as they come: one pass over the logs, no sort of the output.
3. Linked users: every row of the linked users goes to one shared group (each group is closed
   under "shares a request or a session"), other rows are grouped by user; ``repartition`` by
   group, ``mapInArrow`` as above with the summaries as rows; the result is persisted, the
   summaries collected, and the transitions written globally sorted in canonical order.
4. The driver merges the summaries (in partition, chunk order), fails when ``on_error="fail"``
   and there are problems (nothing is left behind), writes ``transitions/part-*.parquet``,
   ``features.json``, ``reward.toml``, ``report.json``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from batchrl_mtf.core.config import require
from batchrl_mtf.core.io import atomic_dir, dumps_json, hash_files
from batchrl_mtf.data.build import dataset_spec, report_document
from batchrl_mtf.data.clean import check_columns, log_source
from batchrl_mtf.data.config import DatasetConfig
from batchrl_mtf.data.features import feature_spec
from batchrl_mtf.data.parts import check_summary
from batchrl_mtf.data.reward import RewardConfig, load_reward
from batchrl_mtf.data.spark_io import (
    column_names,
    input_files,
    is_uri,
    norm_uri,
    sha_parts_local,
    sha_parts_remote,
    spark_uri,
    write_remote,
)
from batchrl_mtf.data.spark_plan import (
    group_key,
    id_column_dtypes,
    log_facts,
    range_partition,
    user_bounds,
)
from batchrl_mtf.data.spark_task import OUT_HELPER_COLUMNS, PartTask, map_partition
from batchrl_mtf.data.spec import bounds_from_range, dataset_fusion
from batchrl_mtf.data.stats import PartSummary
from batchrl_mtf.errors import ConfigError, Problem, SchemaError
from batchrl_mtf.logs.schema import ID_COLUMNS, LogColumns

__all__ = ["INSTALL_HINT", "SparkOptions", "build_dataset_spark", "spark_session"]

logger = logging.getLogger(__name__)

INSTALL_HINT = (
    "--engine spark needs PySpark and Java 17: pip install 'batchrl-mtf[spark]' "
    "(or pip install 'pyspark>=3.5')"
)


@dataclass(frozen=True)
class SparkOptions:
    """How the Spark job runs.

    Attributes:
        master: Spark master (``local[2]``, ``spark://host:7077``, ``yarn``); ``None`` = the active
            session's or spark-submit's.
        partitions: Partitions of the grouped logs and of the written transitions; 0 = the
            session's ``spark.sql.shuffle.partitions`` (``N`` for ``local[N]``), raised to
            ``ceil(rows / chunk_rows)`` when the logs are larger.
        chunk_rows: Log rows per call of the shared part function on an executor (bounds executor
            memory; a user, or the group of linked users, larger than this is processed whole).
            A partition of at most ``chunk_rows`` rows on average is processed as one chunk
            (up to the imbalance of the range partitioning).
    """

    master: str | None = None
    partitions: int = 0
    chunk_rows: int = 1_000_000

    def __post_init__(self) -> None:
        require(self.partitions >= 0, "partitions", f"expected >= 0, found {self.partitions}")
        require(self.chunk_rows >= 1, "chunk_rows", f"expected >= 1, found {self.chunk_rows}")


def spark_session(master: str | None = None) -> Any:
    """The active Spark session, or a new one on ``master``, set up for the job (UTC, Arrow).

    Raises:
        ConfigError: PySpark is not installed.
    """
    try:
        from pyspark.sql import SparkSession
    except ImportError:
        raise ConfigError(INSTALL_HINT) from None
    builder = SparkSession.builder.appName("batchrl-mtf build-dataset")
    if master:
        builder = builder.master(master)
        m = re.fullmatch(r"local\[(\d+|\*)\]", master)
        if m:  # Spark's default of 200 shuffle partitions is for clusters, not for N local cores:
            # each mapInArrow task costs ~0.2 s of fixed overhead, so one task per core
            cores = (os.cpu_count() or 2) if m.group(1) == "*" else int(m.group(1))
            builder = builder.config("spark.sql.shuffle.partitions", str(cores))
    if (master is None or master.startswith("local")) and "PYSPARK_PYTHON" not in os.environ:
        # local workers must run this interpreter (its virtualenv has batchrl_mtf and its
        # dependencies), not whatever `python3` is first on PATH
        os.environ["PYSPARK_PYTHON"] = sys.executable
        builder = builder.config("spark.pyspark.python", sys.executable)
    builder = (
        builder.config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.execution.arrow.useLargeVarTypes", "false")
        .config("spark.hadoop.mapreduce.fileoutputcommitter.marksuccessfuljobs", "false")
    )
    spark = builder.getOrCreate()
    spark.conf.set("spark.sql.session.timeZone", "UTC")
    spark.conf.set("spark.sql.execution.arrow.useLargeVarTypes", "false")
    return spark


class _ListParam:
    """A Spark ``AccumulatorParam`` (by its two methods) that concatenates lists."""

    def zero(self, value: list[Any]) -> list[Any]:
        return []

    def addInPlace(self, a: list[Any], b: list[Any]) -> list[Any]:  # noqa: N802
        a.extend(b)
        return a


def _ddl(kind: str) -> str:
    """Spark type of an id column in the transitions (kept rows never have a missing id)."""
    return "string" if kind == "string" else "bigint"


def _rethrow(exc: BaseException) -> None:
    """Turn our errors raised on an executor back into themselves."""
    text = str(exc)
    for cls in (SchemaError, ConfigError):
        m = re.search(rf"{cls.__name__}: (.*)", text)
        if m:
            raise cls(m.group(1).strip()) from None


def build_dataset_spark(
    paths: Sequence[str | Path],
    reward: RewardConfig | str | Path,
    out_dir: str | Path,
    config: DatasetConfig | None = None,
    options: SparkOptions | None = None,
) -> dict[str, object]:
    """Build a dataset directory with Spark; the same content as
    :func:`batchrl_mtf.data.build.build_dataset`, with the transitions as ``transitions/`` parts.

    Args:
        paths: Parquet log files or directories: local paths or Hadoop-compatible URIs.
        reward: A reward config or the path of a reward TOML file (read on the driver).
        out_dir: The dataset directory: a local path (written atomically) or a URI (written to a
            temporary sibling, then renamed).
        config: Dataset options.
        options: Spark options.

    Returns:
        The report written to ``report.json``.

    Raises:
        ConfigError: PySpark is missing, or options do not fit the logs.
        SchemaError: The logs break schema v1 (and ``on_error`` is ``"fail"``).
    """
    config = config or DatasetConfig()
    options = options or SparkOptions()
    reward_cfg = reward if isinstance(reward, RewardConfig) else load_reward(reward)
    spark = spark_session(options.master)
    try:
        return _build(spark, paths, reward_cfg, out_dir, config, options)
    except (SchemaError, ConfigError):
        raise
    except Exception as exc:
        _rethrow(exc)
        raise


def _build(
    spark: Any,
    paths: Sequence[str | Path],
    reward: RewardConfig,
    out_dir: str | Path,
    config: DatasetConfig,
    options: SparkOptions,
) -> dict[str, object]:
    from pyspark import StorageLevel
    from pyspark.sql import functions as F  # noqa: N812
    from pyspark.sql import types as T  # noqa: N812
    from pyspark.sql.pandas.types import to_arrow_schema

    files = input_files(spark, paths)
    uris = [spark_uri(f) for f in files]
    file_index = {norm_uri(u): i for i, u in enumerate(uris)}
    first = column_names(spark, files, uris)
    raw = spark.read.parquet(*uris).select(*first)
    source = log_source(files)
    # the column checks need names and types only: an empty frame of the logs' schema (no job)
    empty = to_arrow_schema(raw.schema).empty_table().to_pandas()
    columns = check_columns(empty, source, reward, config)
    keep_cols = [c for c in first if c not in columns.unknown]
    raw = raw.select(*keep_cols, F.col("_metadata.file_path").alias("_file_uri"))
    for c in ID_COLUMNS:  # NaN ids are missing ids, as in pandas
        if c in keep_cols and dict(raw.dtypes)[c] in ("double", "float"):
            raw = raw.withColumn(c, F.when(F.isnan(c), None).otherwise(F.col(c)))
    id_cols = [c for c in ID_COLUMNS if c in keep_cols]
    has_session = config.session_gap_s is None
    facts = log_facts(raw, id_cols, has_session)
    id_dtypes = id_column_dtypes(raw, files, file_index, id_cols, facts.nulls)
    if len(files) == 1:  # every row is from files[0]: no per-row file name to move around
        raw = raw.drop("_file_uri")
    n_parts = options.partitions or max(
        int(spark.conf.get("spark.sql.shuffle.partitions")),
        math.ceil(facts.rows / options.chunk_rows),
    )
    sorted_groups = facts.rows > n_parts * options.chunk_rows  # chunks within partitions
    user_type = raw.schema["user_id"].dataType
    # ranges of user_id are ranges of the transitions' canonical order when Spark orders the
    # ids as the part function does: integers (or integral floats) numerically, text by code point
    in_order = id_dtypes["user_id"] != "string" or isinstance(user_type, T.StringType)
    by_range = in_order and not facts.linked
    if by_range:
        bounds = user_bounds(raw, facts.rows, n_parts)
        grouped = range_partition(raw, n_parts, bounds)
        if sorted_groups:  # _grp marks where a user ends (chunks are cut there)
            grouped = grouped.withColumn("_grp", F.xxhash64("user_id"))
            grouped = grouped.sortWithinPartitions("user_id")
    else:
        if facts.linked:
            logger.info("requests or sessions link users: grouping them first")
        keyed = group_key(spark, raw, has_session)
        grouped = keyed.repartition(n_parts, "_grp")
        if sorted_groups:
            grouped = grouped.sortWithinPartitions("_grp")

    spec = feature_spec(columns, config.features)
    sess_kind = "string" if not has_session else id_dtypes["session_id"]
    out_ddl = (
        f"user_id {_ddl(id_dtypes['user_id'])}, session_id {_ddl(sess_kind)}, "
        f"request_id {_ddl(id_dtypes['request_id'])}, step int, ts bigint, obs array<double>, "
        "action array<double>, reward double, stickiness double, activeness double, "
        "terminal boolean, timeout boolean, behavior_logp double, split string, "
        "_sess_start bigint, _stats string, _part bigint, _seq bigint"
    )
    from pyspark.sql.types import _parse_datatype_string

    out_schema = to_arrow_schema(_parse_datatype_string(out_ddl))  # type: ignore[arg-type]
    task = PartTask(
        columns=columns,
        reward=reward,
        config=config,
        files=tuple(files),
        file_index=file_index,
        id_dtypes=id_dtypes,
        chunk_rows=options.chunk_rows,
        out_schema=out_schema,
        sorted_groups=sorted_groups,
        file_column=len(files) > 1,
    )
    dataset_fusion(config, columns.tasks)  # offsets that do not fit fail before any work

    stats: Any = None
    collected: list[tuple[int, int, str]] = []
    if by_range:
        # one pass: the tasks' summaries come back with the write job (an accumulator in its
        # result stage: applied once per partition) and the transitions are written as they come
        stats = spark.sparkContext.accumulator([], _ListParam())
        mapped = grouped.mapInArrow(lambda it: map_partition(task, it, stats), out_ddl)
        transitions = mapped.drop(*OUT_HELPER_COLUMNS)
    else:
        mapped = grouped.mapInArrow(lambda it: map_partition(task, it), out_ddl)
        mapped = mapped.persist(StorageLevel.MEMORY_AND_DISK)
    try:
        if not by_range:
            rows = mapped.where(F.col("_stats").isNotNull()).select("_part", "_seq", "_stats")
            collected = [(r["_part"], r["_seq"], r["_stats"]) for r in rows.collect()]
            _merged(collected, files, config, columns)  # fail before writing
            order = ("user_id", "_sess_start", "session_id", "step")
            kept = mapped.where(F.col("_stats").isNull())
            if (
                options.partitions
            ):  # exactly that many range partitions (adaptive execution keeps it)
                kept = kept.repartitionByRange(options.partitions, *order).sortWithinPartitions(
                    *order
                )
            else:  # adaptive execution sizes the range partitions
                kept = kept.orderBy(*order)
            transitions = kept.drop(*OUT_HELPER_COLUMNS)
        any_uri = any(is_uri(str(p)) for p in paths)
        data_hash = (
            sha_parts_remote(spark, uris) if any_uri else hash_files([str(p) for p in paths])
        )

        def documents(dataset_hash: str) -> tuple[str, str]:
            docs = collected if stats is None else list(stats.value)
            summary, problems, low, high = _merged(docs, files, config, columns)
            ds = dataset_spec(
                summary,
                spec,
                columns.tasks,
                low,
                high,
                config,
                columns.has_behavior_logp,
                dataset_hash,
                data_hash,
            )
            report = report_document(
                summary,
                problems,
                columns,
                spec.names,
                reward,
                config,
                files,
                data_hash,
                dataset_hash,
                low,
                high,
            )
            return dumps_json(ds.to_dict()), dumps_json(report)

        writer = transitions.write.option("compression", "zstd")
        if is_uri(str(out_dir)):
            report_text = write_remote(spark, str(out_dir), writer, reward, documents)
        else:
            with atomic_dir(out_dir, kind="dataset") as tmp:
                writer.parquet((tmp / "transitions").resolve().as_uri())
                for crc in (tmp / "transitions").glob(".*.crc"):
                    crc.unlink()
                _parts, dataset_hash = sha_parts_local(tmp / "transitions")
                features_text, report_text = documents(dataset_hash)
                (tmp / "features.json").write_text(features_text, encoding="utf-8")
                (tmp / "reward.toml").write_text(reward.to_toml(), encoding="utf-8")
                (tmp / "report.json").write_text(report_text, encoding="utf-8")
    finally:
        if not by_range:
            mapped.unpersist()
    doc: dict[str, object] = json.loads(report_text)
    return doc


def _merged(
    docs: Sequence[tuple[int, int, str]],
    files: Sequence[str],
    config: DatasetConfig,
    columns: LogColumns,
) -> tuple[PartSummary, tuple[Problem, ...], npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """The chunks' summaries merged in (partition, chunk) order, checked (may raise), and the
    action bounds."""
    ordered = sorted(docs)
    summary = PartSummary.merge([PartSummary.from_json(json.loads(d)) for _, _, d in ordered])
    problems = check_summary(summary, files, config)
    low, high = bounds_from_range(summary.actions.min, summary.actions.max, columns.tasks, config)
    return summary, problems, low, high
