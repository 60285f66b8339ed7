"""Policy arguments: constants, weight tables (with and without keys), trained directories."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from batchrl_mtf.errors import PolicyError
from batchrl_mtf.policy import ConstantPolicy, TablePolicy
from batchrl_mtf.resolve import resolve_policy
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


def test_resolve_policy_forms(tmp_path: Path) -> None:
    p = resolve_policy("constant:1.5,0.2", TASKS, NAMES)
    assert isinstance(p, ConstantPolicy) and p.name == "constant:1.5,0.2"
    np.testing.assert_allclose(p.act(np.zeros((3, 2))), [[1.5, 0.2]] * 3)
    path = tmp_path / "t.json"
    _table((), (TableRow((), (2.0, 0.5), 10),)).save(path)
    assert isinstance(resolve_policy(str(path), TASKS, NAMES), TablePolicy)


@pytest.mark.parametrize(
    ("arg", "tasks", "names", "match"),
    [
        ("constant:1,2,3", TASKS, NAMES, r"expected 2 weights \(tasks click, like\), found 3"),
        ("constant:a,b", TASKS, NAMES, r"expected constant:<w_click>,\.\.\. with 2 numbers"),
        ("constant:1,nan", TASKS, NAMES, "expected finite weights"),
        ("missing_dir", TASKS, NAMES, "found no such file or directory"),
        ("TABLE", ("click", "share"), NAMES, r"table tasks \['click', 'like'\] differ"),
        ("KEYED", TASKS, ("u_activity",), r"table keys \['session_depth'\] are not state features"),
        ("DIR", TASKS, NAMES, "directory has no policy.json"),
    ],
)
def test_resolve_policy_errors(
    tmp_path: Path, arg: str, tasks: tuple[str, ...], names: tuple[str, ...], match: str
) -> None:
    if arg == "TABLE":
        arg = str(tmp_path / "t.json")
        _table((), (TableRow((), (2.0, 0.5), 10),)).save(arg)
    elif arg == "KEYED":
        arg = str(tmp_path / "k.json")
        _table(
            (TableKey("session_depth", (2.0,)),),
            (TableRow(((None, 2.0),), (0.5, 0.5), 5),),
        ).save(arg)
    elif arg == "DIR":
        (tmp_path / "d").mkdir()
        arg = str(tmp_path / "d")
    with pytest.raises(PolicyError, match=match):
        resolve_policy(arg, tasks, names)
