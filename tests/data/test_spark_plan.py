"""The Spark engine's driver-side queries: the id aggregate and the ranges of users."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

pytest.importorskip("pyspark")

from batchrl_mtf.data.spark import spark_session
from batchrl_mtf.data.spark_plan import log_facts, range_partition, user_bounds

ID_COLS = ("user_id", "session_id", "request_id")
SCHEMA = "user_id long, session_id long, request_id long"


@pytest.fixture(scope="module")
def spark() -> Any:
    return spark_session("local[2]")


# rows (user, session, request); what the aggregate says: rows, missing users, linked
CASES = [
    ("clean", [(1, 10, 100), (1, 10, 100), (1, 10, 101), (2, 20, 200)], 0, False),
    ("request spans users", [(1, 10, 100), (2, 20, 100), (2, 20, 201)], 0, True),
    ("session spans users", [(1, 10, 100), (2, 10, 200)], 0, True),
    ("missing and present user", [(1, 10, 100), (None, 10, 100)], 1, True),
    ("missing user alone", [(None, 10, 100), (None, 10, 100), (2, 20, 200)], 2, False),
    ("missing request and session", [(1, None, None), (2, None, None)], 0, False),
    ("request in two sessions, one user", [(1, 10, 100), (1, 11, 100)], 0, False),
]


@pytest.mark.parametrize(("name", "rows", "null_users", "linked"), CASES, ids=[c[0] for c in CASES])
def test_log_facts_count_rows_and_find_linked_users(
    spark: Any, name: str, rows: list[tuple[Any, ...]], null_users: int, linked: bool
) -> None:
    df = spark.createDataFrame(rows, SCHEMA)
    facts = log_facts(df, ID_COLS, has_session=True)
    assert facts.rows == len(rows)
    assert facts.nulls["user_id"] == null_users
    assert facts.linked is linked


def test_log_facts_without_logged_sessions_ignore_them(spark: Any) -> None:
    df = spark.createDataFrame([(1, 10, 100), (2, 10, 200)], SCHEMA)
    assert log_facts(df, ID_COLS, has_session=True).linked
    assert not log_facts(df, ID_COLS, has_session=False).linked  # sessions come from the gap


@pytest.mark.parametrize("kind", ["long", "string"])
def test_ranges_hold_complete_users_in_ascending_partitions(spark: Any, kind: str) -> None:
    users = [u * 7 % 23 for u in range(23)]  # 23 users, 1 to 23 rows each
    rows = [(str(u) if kind == "string" else u, i) for u in users for i in range(u + 1)]
    rows += [(None, 0), (None, 1)]
    df = spark.createDataFrame(rows, f"user_id {kind}, n long")
    bounds = user_bounds(df, len(rows), 4)
    assert bounds == sorted(set(bounds)) and len(bounds) == 3
    parts = range_partition(df, 4, bounds).rdd.glom().collect()
    assert len(parts) == 4 and sum(map(len, parts)) == len(rows)
    assert {r["user_id"] for r in parts[0]} >= {None}  # missing users go to the first partition
    users_of = [{r["user_id"] for r in p if r["user_id"] is not None} for p in parts]
    for a, b in itertools.pairwise(users_of):
        assert not a & b, "a user in two partitions"
        if a and b:
            assert max(a) < min(b), "partitions do not ascend"  # type: ignore[operator]
    assert all(users_of), "an empty partition"


def test_bounds_of_fewer_users_than_partitions(spark: Any) -> None:
    df = spark.createDataFrame([(5,), (5,), (9,)], "user_id long")
    assert user_bounds(df, 3, 8) == [9]  # two users: one bound, partitions 2..7 stay empty
    assert user_bounds(df, 3, 1) == []
