"""``select`` end to end on a small zoo world where production is optimal: it must keep
production; the shape of selection.json; --out safety."""

from __future__ import annotations

import json
import math
from pathlib import Path
from statistics import NormalDist
from typing import Any

import pytest
import tomli_w
from click.testing import CliRunner

from batchrl_mtf.cli import main
from batchrl_mtf.errors import ConfigError
from batchrl_mtf.selection import SELECTION_FORMAT, check_out
from batchrl_mtf.selection.config import DEFAULT_SELECT_OPE
from batchrl_mtf.serving import WeightTable
from batchrl_mtf.sim.zoo import get_world

WORLD = "t11"  # tuning half, production (pred_click alone) is optimal in every state
SMALL = [
    "--set", "algorithms=['td3bc']", "--set", "conservativeness.td3bc=[2.5]",
    "--set", "n_steps=150", "--set", "trust_steps=[0, 0.5]", "--set", "ope.fqe_n_steps=150",
    "--set", "ope.n_bootstrap=100", "--budget-minutes", "0", "--no-progress",
]  # fmt: skip


def _invoke(args: list[str]) -> str:
    res = CliRunner().invoke(main, args, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return res.output


@pytest.fixture(scope="module")
def selected(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, tuple[float, ...]]:
    tmp = tmp_path_factory.mktemp("select")
    zw = get_world(WORLD)
    fusion = zw.doc["fusion"]
    (tmp / "reward.toml").write_text(tomli_w.dumps({"reward": zw.doc["reward"]}))
    _invoke(["zoo", "make", WORLD, "--out", str(tmp / "spec.toml")])
    _invoke(["simulate", "--env", str(tmp / "spec.toml"), "--sessions", "500", "--policy",
             zw.logging, "--seed", "3", "--out", str(tmp / "logs.parquet")])  # fmt: skip
    _invoke(["build-dataset", str(tmp / "logs.parquet"), "--reward", str(tmp / "reward.toml"),
             "--out", str(tmp / "ds")])  # fmt: skip
    prod = tuple(float(w) for w in fusion["production"])
    text = _invoke(
        ["select", str(tmp / "ds"), "--out", str(tmp / "sel"), "--formula", "logsum", "--beta",
         ",".join(map(str, fusion["beta"])), "--production", ",".join(map(str, prod)), *SMALL]
    )  # fmt: skip
    return tmp / "sel", text, prod


def test_select_keeps_production_where_production_is_optimal(
    selected: tuple[Path, str, tuple[float, ...]],
) -> None:
    out, text, prod = selected
    doc = json.loads((out / "selection.json").read_text())
    assert doc["chosen"]["name"] == "production", doc["chosen"]
    assert "keep production" in doc["chosen"]["reason"]
    assert "chosen: production" in text
    table = WeightTable.load(out / "table.json")
    assert table.keys == () and table.rows == ()
    assert table.default == pytest.approx(prod)
    # every candidate's FQE lower bound of its gain (the default rule's) is at or below the
    # margin, 2% of production's estimate (that is why)
    margin = 0.02 * abs(doc["candidates"][0]["estimate"]["value"])
    assert doc["config"]["bound"] == "fqe"
    for c in doc["candidates"][1:]:
        assert c["gain"]["by_estimator"]["fqe"]["lower"] <= margin


def test_selection_json_shape(selected: tuple[Path, str, tuple[float, ...]]) -> None:
    out, _, _ = selected
    doc = json.loads((out / "selection.json").read_text())
    assert doc["format"] == SELECTION_FORMAT
    assert {"dataset", "dataset_hash", "split", "n_sessions", "gamma", "production",
            "candidates", "chosen", "rule", "config", "versions"} <= set(doc)  # fmt: skip
    assert doc["split"] == "test" and doc["gamma"] == 1.0
    names = [c["name"] for c in doc["candidates"]]
    assert names == ["production", "td3bc-alpha2.5-s0", "td3bc-alpha2.5-s0-tr0.5"]
    for c in doc["candidates"]:
        assert set(c) >= {"name", "policy", "trust_step", "table", "estimate", "gain", "support"}
        est = c["estimate"]
        assert est["lower"] <= est["value"] <= est["upper"]
        # the quoted interval is the estimator's own one widened by the relative model error
        assert est["model_error"] == DEFAULT_SELECT_OPE.model_error > 0
        own_lo, own_hi = est["sampling_ci"]
        extra = NormalDist().inv_cdf(0.975) * est["model_error"] * abs(est["value"])
        assert est["lower"] == pytest.approx(
            est["value"] - math.hypot(est["value"] - own_lo, extra)
        )
        assert est["upper"] == pytest.approx(
            est["value"] + math.hypot(own_hi - est["value"], extra)
        )
        assert (out / c["table"]).is_file()
        assert 0.0 <= c["support"]["outside_share"] <= 1.0
        if c["name"] != "production":
            g = c["gain"]
            assert g["lower"] <= g["gain"] <= g["upper"]
            assert g["estimator"] == est["estimator"]
            # the same paired gain by every estimator valid for both (the rule's bound reads it)
            by = g["by_estimator"]
            assert by[g["estimator"]] == {k: g[k] for k in ("gain", "lower", "upper")}
            for d in by.values():
                assert d["lower"] <= d["gain"] <= d["upper"]
    ch = doc["chosen"]
    assert set(ch) >= {"name", "estimate", "lower", "upper", "reason"}
    prod = doc["candidates"][0]["estimate"]
    assert (ch["estimate"], ch["lower"], ch["upper"]) == (
        prod["value"],
        prod["lower"],
        prod["upper"],
    )
    md = (out / "selection.md").read_text()
    assert "Chosen: `production`" in md and "td3bc-alpha2.5-s0-tr0.5" in md
    assert json.loads((out / "timing.json").read_text())["seconds"] > 0


def test_out_refuses_a_directory_select_did_not_write(
    selected: tuple[Path, str, tuple[float, ...]], tmp_path: Path
) -> None:
    out, _, _ = selected
    check_out(out)  # its own output (the pipeline's select stage replaces it)
    check_out(tmp_path / "new")  # absent
    marker = json.loads((out / ".batchrl-mtf.json").read_text())
    assert marker["kind"] == "selection"
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(ConfigError, match="not written by batchrl-mtf select"):
        check_out(foreign)
    ds = str(out.parent / "ds")
    cases = [
        (foreign, "was not written by batchrl-mtf"),
        (out, "already holds a batchrl-mtf selection; pass --overwrite"),
        (out.parent / "ds", "is or contains the input"),
        (out.parent, "is or contains the input"),
    ]
    for target, message in cases:
        res = CliRunner().invoke(main, ["select", ds, "--out", str(target), *SMALL])
        assert res.exit_code == 2, (target, res.output)
        assert message in res.output and "Traceback" not in res.output
    assert (foreign / "notes.txt").read_text() == "keep me"
    assert (out / "selection.json").is_file()
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="not a directory"):
        check_out(tmp_path / "file")


def _two_candidates(**fields: object) -> Any:
    """A ``SelectConfig`` of two quick candidates (TD3+BC alpha 2.5 and BC, 100 steps, no trust
    region, FQE only) with ``fields`` on top."""
    from batchrl_mtf.ope import OPEConfig
    from batchrl_mtf.selection import SelectConfig

    return SelectConfig(
        algorithms=("td3bc", "bc"),
        conservativeness={"td3bc": (2.5,)},
        n_steps=100,
        trust_steps=(0.0,),
        budget_minutes=0,
        ope=OPEConfig(estimators=("fqe",), gamma=1.0, fqe_n_steps=100, n_bootstrap=50),
        **fields,  # type: ignore[arg-type]
    )


def test_parallel_training_selects_the_same(
    selected: tuple[Path, str, tuple[float, ...]], tmp_path: Path
) -> None:
    """Candidates trained in worker processes (``parallel``) are the same policies, estimated the
    same, as one after another in this process."""
    import dataclasses

    from batchrl_mtf.selection import select_policy
    from batchrl_mtf.serving import Fusion

    out, _, prod = selected
    fusion = get_world(WORLD).doc["fusion"]
    config = _two_candidates()
    docs = []
    for parallel in (1, 2):
        res = select_policy(
            out.parent / "ds",
            tmp_path / f"p{parallel}",
            dataclasses.replace(config, parallel=parallel),
            fusion=Fusion("logsum", tuple(fusion["beta"])),
            production=prod,
        )
        assert [c.name for c in res.candidates] == ["production", "td3bc-alpha2.5-s0", "bc-s0"]
        docs.append(json.loads((tmp_path / f"p{parallel}" / "selection.json").read_text()))
    for name in ("td3bc-alpha2.5-s0", "bc-s0"):
        a = (tmp_path / "p1" / "candidates" / name / "model.safetensors").read_bytes()
        assert a == (tmp_path / "p2" / "candidates" / name / "model.safetensors").read_bytes()
    assert docs[0]["candidates"] == docs[1]["candidates"]
    assert docs[0]["chosen"] == docs[1]["chosen"]


def test_reuse_copies_a_matching_training_and_selects_the_same(
    selected: tuple[Path, str, tuple[float, ...]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``reuse``: a candidate held exactly by a given policy directory is copied, not trained;
    one that is not (bc here) is trained; the selection is the same as without reuse, with the
    candidates in this process and in worker processes."""
    from batchrl_mtf.selection import SelectConfig, select_policy, workflow
    from batchrl_mtf.serving import Fusion

    out, _, prod = selected
    fusion = get_world(WORLD).doc["fusion"]
    config = _two_candidates(parallel=1)

    def run(name: str, cfg: SelectConfig, reuse: list[Path]) -> dict[str, object]:
        select_policy(
            out.parent / "ds", tmp_path / name, cfg, fusion=Fusion("logsum", tuple(fusion["beta"])),
            production=prod, reuse=reuse,
        )  # fmt: skip
        return json.loads((tmp_path / name / "selection.json").read_text())  # type: ignore[no-any-return]

    fresh = run("fresh", config, [])
    trained: list[str] = []
    real = workflow.train_candidate

    def spy(dataset: object, pdir: str, overrides: object, progress: bool = False) -> float:
        trained.append(Path(pdir).name)
        return real(dataset, pdir, overrides, progress)  # type: ignore[arg-type]

    monkeypatch.setattr(workflow, "train_candidate", spy)
    source = tmp_path / "fresh" / "candidates" / "td3bc-alpha2.5-s0"
    reused = run("reused", config, [tmp_path / "nothing", source])
    assert trained == ["bc-s0"]
    assert reused["candidates"] == fresh["candidates"] and reused["chosen"] == fresh["chosen"]
    model = "model.safetensors"
    copy = tmp_path / "reused" / "candidates" / "td3bc-alpha2.5-s0" / model
    assert copy.read_bytes() == (source / model).read_bytes()
    monkeypatch.undo()
    import dataclasses

    parallel = run("parallel", dataclasses.replace(config, parallel=2), [source])
    assert parallel["candidates"] == fresh["candidates"] and parallel["chosen"] == fresh["chosen"]


def test_production_outside_the_logged_support_is_judged_against_the_logging_policy(
    selected: tuple[Path, str, tuple[float, ...]], tmp_path: Path
) -> None:
    """Production weights outside the logged box: its estimate extrapolates, so the gains are
    measured against the logging policy (``baseline = "auto"``); ``baseline = "production"``
    keeps the rule before, and the gains over production are the same numbers either way."""
    import dataclasses

    import numpy as np

    from batchrl_mtf.data.formats import load_dataset
    from batchrl_mtf.policy import ConstantPolicy
    from batchrl_mtf.selection import select_among
    from batchrl_mtf.serving import Fusion

    out, _, _ = selected
    data = load_dataset(out.parent / "ds")
    tasks = tuple(data.spec.tasks)
    # the largest logged weight of every task: within the action bounds (a table can serve it),
    # outside the logged 1%-99% box on every task
    far = tuple(float(x) for x in data.spec.action_high)
    centre = tuple(float(x) for x in np.median(data.actions, axis=0))
    fusion = get_world(WORLD).doc["fusion"]
    config = _two_candidates()
    # with DR (the logs carry behavior_logp) the logging policy's value is its on-policy average
    config = dataclasses.replace(
        config, ope=dataclasses.replace(config.ope, estimators=("fqe", "dr"))
    )
    docs = {}
    for baseline in ("auto", "production"):
        select_among(
            data, [("centre", ConstantPolicy(centre, tasks, name="centre"))],
            tmp_path / baseline, dataclasses.replace(config, baseline=baseline),
            fusion=Fusion("logsum", tuple(fusion["beta"])), production=far,
        )  # fmt: skip
        docs[baseline] = json.loads((tmp_path / baseline / "selection.json").read_text())
    auto, prod = docs["auto"], docs["production"]
    assert auto["candidates"][0]["support"]["flag"] is True
    assert auto["baseline"]["name"] == "logged"
    assert "leave the logged support" in auto["baseline"]["reason"]
    assert prod["baseline"]["name"] == "production"
    assert all("baseline_gain" not in c for c in prod["candidates"])
    base_value = auto["baseline"]["estimate"]["value"]
    test = data.select("test")
    # the logging policy's value is the held-out sessions' own mean return (gamma 1)
    assert auto["baseline"]["estimate"]["estimator"] == "dr"
    assert base_value == pytest.approx(float(test.rewards.sum()) / test.n_sessions, rel=1e-9)
    centre_doc = next(c for c in auto["candidates"] if c["name"] == "centre")
    bg = centre_doc["baseline_gain"]
    assert bg["lower"] <= bg["gain"] <= bg["upper"]
    assert bg["gain"] == pytest.approx(centre_doc["estimate"]["value"] - base_value)
    assert (
        centre_doc["gain"] == next(c for c in prod["candidates"] if c["name"] == "centre")["gain"]
    )
    assert "over the logging policy" in auto["chosen"]["reason"]
    assert "over production" in prod["chosen"]["reason"]
    md = (tmp_path / "auto" / "selection.md").read_text()
    assert "Baseline: production's weights leave the logged support" in md
    assert "gain over logged" in md
