"""The one Fusion value object: every input syntax, errors, the transform and score, round trips."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import tomli_w

from batchrl_mtf.core.config import config_from_mapping, config_to_dict
from batchrl_mtf.core.fusion import DEFAULT_BETA, Fusion, choose_fusion
from batchrl_mtf.errors import ConfigError, ExportError, FusionError

TASKS = ("click", "like", "follow")


# ------------------------------------------------------------------------------- construction


def test_defaults_are_logsum_with_the_one_default_beta() -> None:
    assert DEFAULT_BETA == 0.1
    assert Fusion() == Fusion("logsum", (0.1,))
    assert Fusion("logsum", None).beta == (DEFAULT_BETA,)
    assert Fusion("sum").beta is None
    assert Fusion().for_tasks(TASKS) == Fusion("logsum", (0.1, 0.1, 0.1))


def test_fusion_error_is_both_a_config_and_an_export_error() -> None:
    with pytest.raises(ConfigError):
        Fusion("product")  # type: ignore[arg-type]
    with pytest.raises(ExportError):
        Fusion("product")  # type: ignore[arg-type]


# ------------------------------------------------------------------------------- CLI text


@pytest.mark.parametrize(
    ("formula", "beta", "want"),
    [
        (None, None, Fusion("logsum", (0.1,))),
        ("logsum", None, Fusion("logsum", (0.1,))),
        ("logsum", "0.05", Fusion("logsum", (0.05,))),
        (None, "0.2", Fusion("logsum", (0.2,))),
        ("logsum", "0.1,0.05,0.2", Fusion("logsum", (0.1, 0.05, 0.2))),
        ("logsum", " 0.1 , 0.05 ,0.2 ", Fusion("logsum", (0.1, 0.05, 0.2))),
        (
            "logsum",
            "like=0.05,click=0.1,follow=0.2",
            Fusion("logsum", (0.05, 0.1, 0.2), ("like", "click", "follow")),
        ),
        ("logsum", "1e-3", Fusion("logsum", (0.001,))),
        ("sum", None, Fusion("sum")),
        ("sum", "", Fusion("sum")),
    ],
)
def test_parse_every_syntax(formula: str | None, beta: str | None, want: Fusion) -> None:
    assert Fusion.parse(formula, beta) == want


def test_named_offsets_are_put_in_task_order() -> None:
    named = Fusion.parse("logsum", "like=0.05,click=0.1,follow=0.2")
    assert named.for_tasks(TASKS) == Fusion("logsum", (0.1, 0.05, 0.2))
    assert named.for_tasks(TASKS).tasks is None
    assert Fusion.parse(None, "0.3").for_tasks(TASKS).beta == (0.3, 0.3, 0.3)


PARSE_ERRORS = [
    ("product", None, r"^--formula: expected one of \('logsum', 'sum'\), found 'product'$"),
    ("sum", "0.1", r"^--beta: expected no offsets with --formula sum$"),
    ("logsum", "abc", r"^--beta: expected a number \(0\.1\), numbers in task order"),
    ("logsum", "0.1,,0.2", r"^--beta: expected a number"),
    ("logsum", "0", r"^--beta\[0\]: expected a finite number > 0, found 0\.0$"),
    ("logsum", "0.1,-1", r"^--beta\[1\]: expected a finite number > 0, found -1\.0$"),
    ("logsum", "nan", r"^--beta\[0\]: expected a finite number > 0"),
    ("logsum", "inf", r"^--beta\[0\]: expected a finite number > 0"),
    ("logsum", "click=0.1,like", r"^--beta: expected task=number, found 'like'$"),
    ("logsum", "=0.1", r"^--beta: expected task=number, found '=0.1'$"),
    ("logsum", "click=0.1,click=0.2", r"^--beta: task 'click' given twice$"),
    ("logsum", "click=x", r"^--beta: expected a number"),
]


@pytest.mark.parametrize(("formula", "beta", "match"), PARSE_ERRORS)
def test_parse_errors_are_one_line(formula: str, beta: str | None, match: str) -> None:
    with pytest.raises(FusionError, match=match) as exc:
        Fusion.parse(formula, beta)
    assert "\n" not in str(exc.value)


# ------------------------------------------------------------------------------- TOML / JSON


@pytest.mark.parametrize(
    ("doc", "want"),
    [
        ({}, Fusion()),
        ({"formula": "logsum"}, Fusion()),
        ({"formula": "logsum", "beta": 0.05}, Fusion("logsum", (0.05,))),
        ({"beta": 1}, Fusion("logsum", (1.0,))),
        ({"formula": "logsum", "beta": [0.1, 0.2, 0.3]}, Fusion("logsum", (0.1, 0.2, 0.3))),
        (
            {"formula": "logsum", "beta": {"click": 0.1, "like": 0.2, "follow": 0.3}},
            Fusion("logsum", (0.1, 0.2, 0.3), TASKS),
        ),
        ({"formula": "sum"}, Fusion("sum")),
    ],
)
def test_from_dict(doc: dict[str, Any], want: Fusion) -> None:
    assert Fusion.from_dict(doc) == want


def test_from_toml_reads_the_fusion_table() -> None:
    text = '[other]\nx = 1\n\n[fusion]\nformula = "logsum"\nbeta = { click = 0.1, like = 0.05 }\n'
    assert Fusion.from_toml(text) == Fusion("logsum", (0.1, 0.05), ("click", "like"))
    assert Fusion.from_toml('[fusion]\nformula = "sum"\n') == Fusion("sum")
    assert Fusion.from_toml("[other]\n") == Fusion()  # no [fusion]: the default


def test_from_json_reads_an_object_or_a_documents_fusion_member() -> None:
    assert Fusion.from_json('{"formula": "logsum", "beta": [0.2]}') == Fusion("logsum", (0.2,))
    doc = '{"format": "x", "fusion": {"formula": "logsum", "beta": {"a": 0.3, "b": 0.4}}}'
    assert Fusion.from_json(doc).for_tasks(("b", "a")) == Fusion("logsum", (0.4, 0.3))


DICT_ERRORS = [
    ({"formula": "product"}, r"^src: 'formula': expected one of \('logsum', 'sum'\)"),
    ({"formula": "sum", "beta": 0.1}, r"^src: 'beta': expected no beta for formula 'sum'$"),
    ({"beta": "0.1"}, r"^src: 'beta': expected a list of numbers > 0, found '0\.1'$"),
    ({"beta": [0.1, 0]}, r"^src: 'beta'\[1\]: expected a finite number > 0, found 0$"),
    ({"beta": True}, r"^src: 'beta': expected a list of numbers > 0, found True$"),
    ({"beta": {"click": -1}}, r"^src: 'beta'\[0\]: expected a finite number > 0, found -1$"),
    ({"beta": []}, r"^src: 'beta': expected one offset per task, found none$"),
    (
        {"formula": "logsum", "bta": 0.1},
        r"^src: unknown key\(s\) \['bta'\]; expected formula, beta$",
    ),
]


@pytest.mark.parametrize(("doc", "match"), DICT_ERRORS)
def test_from_dict_errors_name_the_source_and_key(doc: dict[str, Any], match: str) -> None:
    with pytest.raises(FusionError, match=match):
        Fusion.from_dict(doc, "src")


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("[fusion\n", r"^pipe\.toml: invalid TOML"),
        ('[fusion]\nformula = "x"\n', r"^pipe\.toml \[fusion\]: 'formula': expected one of"),
    ],
)
def test_from_toml_errors(text: str, match: str) -> None:
    with pytest.raises(FusionError, match=match):
        Fusion.from_toml(text, "pipe.toml")


def test_from_json_error_is_one_line() -> None:
    with pytest.raises(FusionError, match=r"^f\.json: invalid JSON"):
        Fusion.from_json("{", "f.json")


@pytest.mark.parametrize(
    "fusion",
    [
        Fusion(),
        Fusion("sum"),
        Fusion("logsum", (0.1, 0.05, 0.2)),
        Fusion("logsum", (0.05, 0.1), ("like", "click")),
    ],
)
def test_round_trip_through_dict_toml_and_json(fusion: Fusion) -> None:
    doc = fusion.to_dict()
    assert Fusion.from_dict(doc) == fusion
    assert Fusion.from_json(json.dumps(doc)) == fusion
    assert Fusion.from_toml(tomli_w.dumps({"fusion": doc})) == fusion


def test_to_dict_names_offsets_by_task_when_the_tasks_are_given() -> None:
    assert Fusion().to_dict(("a", "b")) == {"formula": "logsum", "beta": {"a": 0.1, "b": 0.1}}
    assert Fusion("logsum", (0.1, 0.2)).to_dict() == {"formula": "logsum", "beta": [0.1, 0.2]}
    assert Fusion("sum").to_dict(("a", "b")) == {"formula": "sum"}


# ------------------------------------------------------------------------------- tasks


@pytest.mark.parametrize(
    ("fusion", "match"),
    [
        (Fusion("logsum", (0.1, 0.2)), r"^where: expected 1 or 3 offsets \(tasks \['click', "),
        (
            Fusion("logsum", (0.1, 0.2), ("click", "share")),
            r"^where: expected one offset for each task \['click', 'like', 'follow'\]; "
            r"missing \['like', 'follow'\], unknown \['share'\]$",
        ),
    ],
)
def test_for_tasks_errors(fusion: Fusion, match: str) -> None:
    with pytest.raises(FusionError, match=match):
        fusion.for_tasks(TASKS, "where")


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (("logsum", (0.1,), ("a", "b")), r"expected one offset per named task \['a', 'b'\]"),
        (("logsum", (0.1, 0.2), ("a", "a")), r"expected unique task names"),
        (("logsum", (0.1, 0.2), ("a", "")), r"expected unique task names"),
        (("sum", (0.1,)), r"^fusion.beta: expected no beta for formula 'sum'$"),
        (("logsum", (math.inf,)), r"^fusion.beta\[0\]: expected a finite number > 0"),
        (("logsum", "0.1"), r"^fusion.beta: expected a list of numbers > 0"),
    ],
)
def test_construction_errors(args: tuple[Any, ...], match: str) -> None:
    with pytest.raises(FusionError, match=match):
        Fusion(*args)


# ------------------------------------------------------------------------------- apply


def test_transform_and_score_against_hand_computed_numbers() -> None:
    preds = np.array([[0.5, 0.1], [0.2, 0.9], [0.0, 0.0]])
    fusion = Fusion("logsum", (0.1, 0.2))
    # log(0.6) = -0.5108256, log(0.3) = -1.2039728, log(0.3), log(1.1) = 0.0953102, ...
    want_x = np.array(
        [
            [-0.5108256238, -1.2039728043],
            [-1.2039728043, 0.0953101798],
            [-2.3025850930, -1.6094379124],
        ]
    )
    np.testing.assert_allclose(fusion.transform(preds), want_x, rtol=1e-9)
    w = np.array([1.0, 2.0])
    np.testing.assert_allclose(
        fusion.score(preds, w), [-2.9187712324, -1.0133524447, -5.5214609178], rtol=1e-9
    )
    np.testing.assert_allclose(Fusion("sum").score(preds, w), [0.7, 2.0, 0.0])
    # one offset for every task
    np.testing.assert_allclose(
        Fusion("logsum", (0.5,)).transform([[0.5, 1.5]]), [[0.0, math.log(2.0)]]
    )


def test_score_of_a_batch_equals_per_request_scores() -> None:
    rng = np.random.default_rng(0)
    preds = rng.uniform(size=(4, 7, 3))
    w = rng.uniform(size=(4, 3))
    fusion = Fusion("logsum", (0.1, 0.05, 0.2))
    got = fusion.score(preds, w)
    assert got.shape == (4, 7)
    for r in range(4):
        np.testing.assert_allclose(got[r], fusion.score(preds[r], w[r]))


@pytest.mark.parametrize(
    ("fusion", "preds", "weights", "match"),
    [
        (Fusion("sum"), np.ones((3, 2)), np.ones(3), r"found \(3, 2\) and \(3,\)"),
        (Fusion("sum"), np.ones((2, 3, 2)), np.ones(2), "n_requests"),
        (Fusion("logsum", (0.1, 0.2)), np.ones((3, 3)), np.ones(3), "expected 1 or 3 offsets"),
        (
            Fusion("logsum", (0.1, 0.2), ("a", "b")),
            np.ones((3, 2)),
            np.ones(2),
            "put them in task order first",
        ),
    ],
)
def test_score_errors(fusion: Fusion, preds: Any, weights: Any, match: str) -> None:
    with pytest.raises(FusionError, match=match):
        fusion.score(preds, weights)


def test_describe() -> None:
    assert Fusion().describe() == "logsum, beta 0.1"
    assert Fusion("sum").describe(TASKS) == "sum"
    assert Fusion("logsum", (0.1, 0.05, 0.2)).describe(TASKS) == (
        "logsum, beta click=0.1,like=0.05,follow=0.2"
    )
    assert Fusion("logsum", (0.1, 0.05)).describe() == "logsum, beta 0.1,0.05"


# ------------------------------------------------------------------------------- choosing


def test_choose_fusion_prefers_flags_and_says_where_it_came_from() -> None:
    recorded = Fusion("logsum", (0.05, 0.05, 0.05))
    f, line = choose_fusion(TASKS, recorded, origin="the dataset ds")
    assert f == recorded
    assert line == "fusion: logsum, beta 0.05 (the dataset ds's)"
    f, line = choose_fusion(
        TASKS, Fusion().for_tasks(TASKS), None, None, "default", "the dataset ds"
    )
    assert f == Fusion("logsum", (0.1,) * 3)
    assert "recorded as the default: it was built without --formula/--beta" in line
    f, line = choose_fusion(TASKS, recorded, "logsum", "click=0.2,like=0.1,follow=0.1", "given")
    assert f == Fusion("logsum", (0.2, 0.1, 0.1))
    assert line == (
        "fusion: logsum, beta click=0.2,like=0.1,follow=0.1 (--formula/--beta override "
        "the dataset's logsum, beta 0.05)"
    )
    f, line = choose_fusion(TASKS, recorded, None, "0.05")
    assert line.endswith("(--formula/--beta, same as the dataset's)")
    f, line = choose_fusion(TASKS, None, "sum", None)
    assert (f, line) == (Fusion("sum"), "fusion: sum (--formula/--beta)")


def test_choose_fusion_without_flag_or_record_is_a_one_line_error() -> None:
    with pytest.raises(FusionError, match=r"^--formula: the dataset ds records no fusion"):
        choose_fusion(TASKS, None, origin="the dataset ds")


# ------------------------------------------------------------------------------- config field


@dataclass(frozen=True)
class WithFusion:
    """A config dataclass with a fusion field (as ``LearnedEnvConfig``, ``DatasetConfig``)."""

    n: int = 1
    fusion: Fusion | None = None


def test_config_field_reads_tables_and_the_flat_keys_of_earlier_versions() -> None:
    flat = config_from_mapping(WithFusion, {"formula": "logsum", "beta": [0.05]}, "cfg")
    assert flat.fusion == Fusion("logsum", (0.05,))
    table = config_from_mapping(
        WithFusion, {"fusion": {"formula": "logsum", "beta": {"a": 0.2}}}, "cfg"
    )
    assert table.fusion == Fusion("logsum", (0.2,), ("a",))
    assert config_to_dict(table)["fusion"] == {"formula": "logsum", "beta": {"a": 0.2}}
    assert config_from_mapping(WithFusion, {}, "cfg").fusion is None
    # the earlier "empty = not set" values of the flat keys
    assert config_from_mapping(WithFusion, {"formula": "", "beta": []}, "cfg").fusion is None
    with pytest.raises(ConfigError, match=r"^cfg: give either 'fusion' or \['beta'\], not both$"):
        config_from_mapping(WithFusion, {"fusion": {}, "beta": 0.1}, "cfg")
    with pytest.raises(ConfigError, match=r"^cfg: 'formula': expected one of"):
        config_from_mapping(WithFusion, {"formula": "x"}, "cfg")
