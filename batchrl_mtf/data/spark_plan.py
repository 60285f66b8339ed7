"""The driver-side queries of the Spark engine (:mod:`batchrl_mtf.data.spark`): what one
aggregate over the id columns says about the logs (row count, missing ids, linked users), the id
types that follow, the ranges of users of the one-pass plan and the grouping key of the
linked-users plan.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from batchrl_mtf.data.spark_io import norm_uri
from batchrl_mtf.errors import SchemaError

__all__ = [
    "MAX_LISTED_LINKED_USERS",
    "MIXED_GROUP",
    "RANGE_SAMPLE_PER_PARTITION",
    "LogFacts",
    "group_key",
    "id_column_dtypes",
    "log_facts",
    "range_partition",
    "user_bounds",
]

logger = logging.getLogger(__name__)

MIXED_GROUP = -1
"""Group key of the rows of users linked by a shared request or session."""
MAX_LISTED_LINKED_USERS = 10_000


@dataclass(frozen=True)
class LogFacts:
    """What one aggregate job over the id columns finds (:func:`_log_facts`)."""

    rows: int
    nulls: dict[str, int]
    """Missing values per id column."""
    linked: bool
    """A request or a session links users (more than one ``user_id``, or a missing one and a
    present one)."""


def log_facts(raw: Any, id_cols: Sequence[str], has_session: bool) -> LogFacts:
    """Row count, missing ids and linked users in one job (id columns only: Parquet pruning)."""
    from pyspark.sql import functions as F  # noqa: N812

    user = F.col("user_id")
    # more than one distinct user (countDistinct(user) + max(user is null) > 1 of the routing)
    links = (F.min(user) != F.max(user)) | (
        (F.max(user.isNull().cast("int")) == 1) & (F.count(user) > 0)
    )
    counts = [F.count(F.lit(1)).alias("_rows")] + [
        F.sum(F.col(c).isNull().cast("long")).alias(f"null_{c}") for c in id_cols
    ]
    per_key = raw.groupBy("request_id").agg(*counts, F.coalesce(links, F.lit(False)).alias("_l"))
    per_key = per_key.withColumn("_l", F.col("_l") & F.col("request_id").isNotNull())
    per_key = per_key.drop("request_id")
    if has_session:
        zeros = [F.lit(0).cast("long").alias(c) for c in per_key.columns if c != "_l"]
        sessions = (
            raw.where(F.col("session_id").isNotNull())
            .groupBy("session_id")
            .agg(F.coalesce(links, F.lit(False)).alias("_l"))
            .select(*zeros, "_l")
        )
        per_key = per_key.unionByName(sessions)
    sums = [F.sum(c).alias(c) for c in per_key.columns if c != "_l"]
    row = per_key.agg(*sums, F.max(F.col("_l").cast("int")).alias("_l")).collect()[0].asDict()
    nulls = {c: int(row[f"null_{c}"] or 0) for c in id_cols}
    return LogFacts(int(row["_rows"] or 0), nulls, bool(row["_l"]))


def id_column_dtypes(
    raw: Any,
    files: Sequence[str],
    uris: dict[str, int],
    id_cols: Sequence[str],
    nulls: dict[str, int],
) -> dict[str, str]:
    """The dtype :func:`~batchrl_mtf.logs.schema.read_logs` gives each id column (a second small
    aggregate only for float id or ``ts`` columns)."""
    from pyspark.sql import functions as F  # noqa: N812
    from pyspark.sql import types as T  # noqa: N812

    types = {f.name: f.dataType for f in raw.schema.fields}
    floats = [c for c in id_cols if isinstance(types[c], (T.DoubleType, T.FloatType))]
    ts_float = "ts" in types and isinstance(types["ts"], (T.DoubleType, T.FloatType))
    per_file = [
        F.max((F.col(c) != F.floor(F.col(c))).cast("int")).alias(f"frac_{c}")
        for c in [*floats, *(["ts"] if ts_float else [])]
    ]
    frac: dict[str, set[int]] = {}
    if per_file:
        for row in raw.groupBy("_file_uri").agg(*per_file).collect():
            d = row.asDict()
            for c in [*floats, *(["ts"] if ts_float else [])]:
                if d[f"frac_{c}"]:
                    frac.setdefault(c, set()).add(uris[norm_uri(d["_file_uri"])])
    if "ts" in frac:
        first = files[min(frac["ts"])]
        raise SchemaError(
            f"{first}: column 'ts': expected int64 epoch milliseconds or timestamps; "
            "found fractional numbers",
            (),
        )
    out: dict[str, str] = {}
    for c in id_cols:
        t = types[c]
        if isinstance(t, T.IntegralType) or (c in floats and c not in frac):
            out[c] = "int64" if not nulls.get(c) else "Int64"
        else:
            out[c] = "string"
    return out


def group_key(spark: Any, raw: Any, has_session: bool) -> Any:
    """``_grp``: the user's hash, or :data:`MIXED_GROUP` for users linked by a request/session."""
    from pyspark.sql import functions as F  # noqa: N812

    user = F.col("user_id")
    linked_keys = ["request_id", *(["session_id"] if has_session else [])]
    marked: Any = None
    for key in linked_keys:
        n_users = F.countDistinct(user) + F.max(user.isNull().cast("int"))
        bad = (
            raw.where(F.col(key).isNotNull())
            .groupBy(key)
            .agg(n_users.alias("_n"))
            .where(F.col("_n") > 1)
            .select(key)
        )
        users = raw.join(bad, key, "left_semi").select(user.alias("_mu"))
        marked = users if marked is None else marked.union(users)
    listed = marked.distinct().limit(MAX_LISTED_LINKED_USERS + 1).collect()
    if not listed:
        return raw.withColumn("_grp", F.xxhash64(user))
    logger.info("%d+ users linked by shared requests/sessions go to one group", len(listed))
    if len(listed) <= MAX_LISTED_LINKED_USERS:
        values = [r["_mu"] for r in listed if r["_mu"] is not None]
        has_null = any(r["_mu"] is None for r in listed)
        is_marked = user.isin(values) if values else F.lit(False)
        if has_null:
            is_marked = is_marked | user.isNull()
        is_marked = F.coalesce(is_marked, F.lit(False))
        return raw.withColumn(
            "_grp", F.when(is_marked, F.lit(MIXED_GROUP)).otherwise(F.xxhash64(user))
        )
    flags = marked.distinct().withColumn("_m", F.lit(True))
    joined = raw.join(F.broadcast(flags), raw["user_id"].eqNullSafe(flags["_mu"]), "left")
    return joined.withColumn(
        "_grp", F.when(F.col("_m"), F.lit(MIXED_GROUP)).otherwise(F.xxhash64(user))
    ).drop("_mu", "_m")


RANGE_SAMPLE_PER_PARTITION = 1_000
"""Sampled ``user_id`` values per range partition (Spark's range partitioning samples 100 per
partition, about 3x over)."""


def user_bounds(raw: Any, rows: int, n_parts: int) -> list[Any]:
    """Upper bounds of the ``user_id`` ranges of ``n_parts`` partitions of about equal rows.

    A row sample of the ``user_id`` column alone (Parquet column pruning; seeded, so the bounds
    are the same run after run for the same inputs) instead of Spark's range partitioning, which
    samples whole rows (every column) in a job of its own. Fewer than ``n_parts - 1`` bounds when
    the sample holds fewer distinct users.
    """
    from pyspark.sql import functions as F  # noqa: N812

    if n_parts <= 1 or rows == 0:
        return []
    fraction = min(1.0, RANGE_SAMPLE_PER_PARTITION * n_parts / rows)
    ids = raw.select("user_id").where(F.col("user_id").isNotNull())
    if fraction < 1.0:
        ids = ids.sample(withReplacement=False, fraction=fraction, seed=0)
    values = sorted(r[0] for r in ids.collect())
    if not values:
        return []
    bounds: list[Any] = []
    for i in range(1, n_parts):
        b = values[min(len(values) - 1, (i * len(values)) // n_parts)]
        if b > (bounds[-1] if bounds else values[0]):  # no empty range
            bounds.append(b)
    return bounds


def range_partition(df: Any, n_parts: int, bounds: Sequence[Any]) -> Any:
    """``df`` in ``n_parts`` partitions by ranges of ``user_id``: partition ``i`` holds the users
    ``bounds[i-1] <= user_id < bounds[i]`` (missing users in partition 0), so every user is in one
    partition and the partitions ascend. Spark >= 4.1 (``repartitionById``); older versions use
    Spark's own range partitioning."""
    from pyspark.sql import functions as F  # noqa: N812

    if not hasattr(df, "repartitionById"):
        return df.repartitionByRange(n_parts, "user_id")
    user = F.col("user_id")

    def part(lo: int, hi: int) -> Any:  # partitions lo..hi: a balanced tree of comparisons
        if lo == hi:
            return F.lit(lo)
        mid = (lo + hi + 1) // 2
        return F.when(user < F.lit(bounds[mid - 1]), part(lo, mid - 1)).otherwise(part(mid, hi))

    pid = F.when(user.isNull(), F.lit(0)).otherwise(part(0, len(bounds)))
    return df.withColumn("_pid", pid.cast("int")).repartitionById(n_parts, "_pid").drop("_pid")
