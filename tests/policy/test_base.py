"""The Policy protocol: constant and table policies, renamed(), and the logging-policy marker."""

from __future__ import annotations

import numpy as np
import pytest

from batchrl_mtf.policy import (
    LOGGING_NAMES,
    ConstantPolicy,
    LoggingPolicy,
    Policy,
    RenamedPolicy,
    TablePolicy,
)
from batchrl_mtf.serving import Fusion, TableKey, TableRow, WeightTable

TASKS = ("click", "like")
NAMES = ("u_activity", "session_depth")


def _table(keys: tuple[TableKey, ...], rows: tuple[TableRow, ...]) -> WeightTable:
    return WeightTable(
        tasks=TASKS,
        fusion=Fusion("logsum", (0.1, 0.1)),
        action_low=(0.0, 0.0),
        action_high=(3.0, 3.0),
        keys=keys,
        default=(1.0, 1.0),
        rows=rows,
    )


def test_keyless_table_acts_on_every_state() -> None:
    table = _table((), (TableRow((), (2.0, 0.5), 10),))
    obs = np.random.default_rng(0).normal(size=(7, 2))
    actions = TablePolicy(table, NAMES, "t").act(obs)
    assert actions.shape == (7, 2)
    np.testing.assert_allclose(actions, np.tile([2.0, 0.5], (7, 1)))


def test_keyed_table_looks_up_by_feature_name_not_position() -> None:
    table = _table(
        (TableKey("session_depth", (2.0,)),),
        (TableRow(((None, 2.0),), (0.5, 0.5), 5), TableRow(((2.0, None),), (2.5, 2.5), 5)),
    )
    obs = np.array([[9.0, 0.0], [-9.0, 3.0]])
    np.testing.assert_allclose(TablePolicy(table, NAMES, "t").act(obs), [[0.5, 0.5], [2.5, 2.5]])


def _keyed() -> WeightTable:
    return _table(
        (TableKey("session_depth", (2.0,)),),
        (TableRow(((None, 2.0),), (0.5, 0.5), 5), TableRow(((2.0, None),), (2.5, 2.5), 5)),
    )


OBS = np.array([[9.0, 0.0], [-9.0, 3.0], [0.0, 1.0]])


@pytest.mark.parametrize(
    "policy",
    [
        ConstantPolicy((1.5, 0.2), TASKS, name="c"),
        TablePolicy(_keyed(), NAMES, "t"),
        RenamedPolicy(ConstantPolicy((0.3, 0.7), TASKS), "r"),
    ],
    ids=["constant", "table", "wrapper"],
)
def test_renamed_keeps_the_weights_and_the_kind(policy: Policy) -> None:
    other = policy.renamed("shown")
    assert other.name == "shown" and policy.name != "shown"  # the original keeps its name
    assert type(other) is type(policy)  # a table stays a table (the simulator samples tables)
    assert other.tasks == policy.tasks == TASKS
    np.testing.assert_array_equal(other.act(OBS), policy.act(OBS))
    assert isinstance(other, Policy)
    assert other.renamed("again").name == "again"


def test_renamed_table_shares_the_table_and_features() -> None:
    table = TablePolicy(_keyed(), NAMES, "t").renamed("table:bcq")
    assert isinstance(table, TablePolicy)
    assert table.feature_names == NAMES
    np.testing.assert_allclose(table.act(OBS), [[0.5, 0.5], [2.5, 2.5], [0.5, 0.5]])


def test_a_policy_written_elsewhere_renames_through_the_wrapper() -> None:
    class Doubler:
        name = "doubler"
        tasks = TASKS

        def act(self, observations: np.ndarray) -> np.ndarray:
            return 2.0 * np.asarray(observations)

        def renamed(self, name: str) -> RenamedPolicy:
            return RenamedPolicy(self, name)

    shown = Doubler().renamed("x2")
    assert shown.name == "x2" and shown.tasks == TASKS
    np.testing.assert_array_equal(shown.act(OBS[:, :2]), 2.0 * OBS[:, :2])
    assert shown.renamed("y").policy.name == "doubler"  # no wrapper around a wrapper


def test_logging_policy_is_a_marker_not_a_policy() -> None:
    marker = LoggingPolicy(TASKS)
    assert marker.name == "behavior" and marker.tasks == TASKS
    assert not hasattr(marker, "act")  # it cannot act on arbitrary states
    assert not isinstance(marker, Policy)
    logged = marker.renamed("logged")
    assert isinstance(logged, LoggingPolicy) and logged.name == "logged"
    assert logged.tasks == TASKS
    assert LOGGING_NAMES == ("behavior", "logged")
