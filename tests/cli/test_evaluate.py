"""``batchrl-mtf evaluate`` and ``batchrl-mtf best-constant`` end to end on tiny logs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from logs_factory import make_logs

from batchrl_mtf.cli import main
from batchrl_mtf.data.build import build_dataset
from batchrl_mtf.data.formats import load_dataset
from batchrl_mtf.data.reward import RewardConfig
from batchrl_mtf.serving import WeightTable

REWARD = RewardConfig(stickiness={"watch_time": 0.02, "valid_play": 0.3}, activeness={"like": 1.0})


def _dataset(tmp_path: Path, behavior_logp: bool = True, name: str = "ds") -> Path:
    logs = make_logs(n_users=6, sessions_per_user=3, seed=1, behavior_logp=behavior_logp)
    src = tmp_path / f"{name}.parquet"
    logs.to_parquet(src)
    out = tmp_path / name
    build_dataset([src], REWARD, out)
    return out


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _dataset(tmp_path_factory.mktemp("ope"))


def _run(args: list[str]) -> tuple[int, str]:
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    return result.exit_code, result.output


def test_evaluate_writes_the_report_contract(dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "ope.json"
    png = tmp_path / "ope.png"
    code, text = _run([
        "evaluate", str(dataset), "--policy", "constant:1,1,1", "--policy", "behavior",
        "--estimators", "fqe,cfqe,pdis,wpdis,dr,wdr", "--gamma", "1", "--split", "all",
        "--n-bootstrap", "20", "--fqe-steps", "30", "--out", str(out), "--plot", str(png),
    ])  # fmt: skip
    assert code == 0, text
    doc = json.loads(out.read_text())
    assert doc["gamma"] == 1.0
    assert doc["n_sessions"] == 18
    assert [p["name"] for p in doc["policies"]] == ["constant:1,1,1", "behavior"]
    assert sorted(doc["ranking"]) == ["behavior", "constant:1,1,1"]
    for p in doc["policies"]:
        assert set(p["estimates"]) == {"fqe", "cfqe", "pdis", "wpdis", "dr", "wdr"}
        for name, est in p["estimates"].items():
            assert isinstance(est["value"], float)
            assert len(est["ci"]) == 2
            assert est["ci"][0] <= est["ci"][1]
            assert ("ess" in est) == (name in {"pdis", "wpdis", "dr", "wdr"})
        assert set(p["recommended"]) >= {"estimator", "value", "ci"}
    # the logging policy's IS/DR estimates are the on-policy average, whatever the model
    beh = doc["policies"][1]["estimates"]
    avg = beh["pdis"]["value"]
    for name in ("wpdis", "dr", "wdr"):
        assert beh[name]["value"] == pytest.approx(avg, rel=1e-9)
    assert png.stat().st_size > 1000
    assert "ranking:" in text
    assert "constant:1,1,1" in text


def test_evaluate_weight_table_policy(dataset: Path, tmp_path: Path) -> None:
    table = tmp_path / "best.json"
    code, text = _run([
        "best-constant", str(dataset), "--estimator", "wpdis", "--n-candidates", "5",
        "--split", "all", "--out", str(table),
    ])  # fmt: skip
    assert code == 0, text
    loaded = WeightTable.load(table)
    assert loaded.keys == ()
    assert loaded.rows == ()
    assert loaded.tasks == ("click", "longview", "like")
    assert loaded.fusion.formula == "logsum"
    out = tmp_path / "r.json"
    code, text = _run([
        "evaluate", str(dataset), "--policy", str(table), "--estimators", "wpdis",
        "--split", "all", "--n-bootstrap", "0", "--out", str(out),
    ])  # fmt: skip
    assert code == 0, text
    doc = json.loads(out.read_text())
    assert doc["policies"][0]["name"] == str(table)
    assert doc["policies"][0]["estimates"]["wpdis"]["ci"] is None


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["--policy", "constant:1,1", "--estimators", "wpdis"], r"expected 3 weights"),
        (["--policy", "constant:1,1,1", "--estimators", "ips"], r"--estimators: expected names among"),
        (["--policy", "nope.json", "--estimators", "wpdis"], r"no such file or directory"),
        (["--policy", "behavior", "--policy", "behavior", "--estimators", "pdis"], r"distinct names"),
        (["--policy", "constant:1,1,1", "--bandwidth", "-1"], r"bandwidth: expected a number > 0"),
    ],
)  # fmt: skip
def test_evaluate_errors_are_one_line(
    dataset: Path, tmp_path: Path, args: list[str], match: str
) -> None:
    code, text = _run(
        ["evaluate", str(dataset), *args, "--split", "all", "--out", str(tmp_path / "x.json")]
    )
    assert code == 2
    assert pytest.importorskip("re").search(match, text), text
    assert not (tmp_path / "x.json").exists()


def test_missing_behavior_logp_is_an_error_for_is(tmp_path: Path) -> None:
    ds = _dataset(tmp_path, behavior_logp=False, name="nolog")
    code, text = _run([
        "evaluate", str(ds), "--policy", "constant:1,1,1", "--estimators", "wdr",
        "--split", "all", "--out", str(tmp_path / "x.json"),
    ])  # fmt: skip
    assert code == 2
    assert "has no behavior_logp" in text


def test_empty_split_is_an_error(tmp_path: Path) -> None:
    logs: pd.DataFrame = make_logs(n_users=1, sessions_per_user=1, seed=0)
    src = tmp_path / "one.parquet"
    logs.to_parquet(src)
    build_dataset([src], REWARD, tmp_path / "one")
    from batchrl_mtf.data.formats import load_dataset

    split = str(load_dataset(tmp_path / "one").split[0])
    other = "test" if split == "train" else "train"
    code, text = _run([
        "evaluate", str(tmp_path / "one"), "--policy", "behavior", "--estimators", "pdis",
        "--split", other, "--out", str(tmp_path / "x.json"),
    ])  # fmt: skip
    assert code == 2
    assert f"split '{other}'" in text
    assert "holds no session" in text


def test_evaluate_fqe_fits_reports_the_fitting_error(dataset: Path, tmp_path: Path) -> None:
    docs = {}
    for fits in ("1", "2"):
        out = tmp_path / f"ope{fits}.json"
        code, text = _run([
            "evaluate", str(dataset), "--policy", "constant:1,1,1", "--estimators", "fqe,dr",
            "--gamma", "1", "--split", "all", "--n-bootstrap", "20", "--fqe-steps", "30",
            "--fqe-fits", fits, "--out", str(out),
        ])  # fmt: skip
        assert code == 0, text
        docs[fits] = json.loads(out.read_text())["policies"][0]["estimates"]
    for name in ("fqe", "dr"):
        assert "fit_se" not in docs["1"][name]
        est = docs["2"][name]
        assert est["fit_se"] > 0
        assert est["ci"][0] <= est["value"] - 1.9 * est["fit_se"]
        assert est["ci"][1] >= est["value"] + 1.9 * est["fit_se"]
    # two fits (seeds 0 and 1) average to another value than the single fit (seed 0)
    assert docs["2"]["fqe"]["value"] != pytest.approx(docs["1"]["fqe"]["value"], abs=1e-9)
    code, text = _run(["evaluate", str(dataset), "--policy", "behavior", "--fqe-fits", "0",
                       "--out", str(tmp_path / "x.json")])  # fmt: skip
    assert code == 2
    assert "fqe_n_fits: expected >= 1, found 0" in text


def test_evaluate_flags_a_policy_whose_actions_leave_the_logged_support(
    dataset: Path, tmp_path: Path
) -> None:
    data = load_dataset(dataset)
    inside = ",".join(f"{w:g}" for w in np.median(data.actions, axis=0))
    outside = ",".join(f"{w + 5:g}" for w in data.spec.action_high)
    out = tmp_path / "ope.json"
    code, text = _run([
        "evaluate", str(dataset), "--policy", f"constant:{inside}", "--policy",
        f"constant:{outside}", "--policy", "behavior", "--estimators", "fqe", "--gamma", "1",
        "--split", "all", "--n-bootstrap", "20", "--fqe-steps", "20", "--out", str(out),
    ])  # fmt: skip
    assert code == 0, text
    doc = json.loads(out.read_text())
    ins, outs, beh = doc["policies"]
    assert ins["support"]["flag"] is False and ins["support"]["outside_share"] == 0.0
    assert outs["support"]["flag"] is True and outs["support"]["outside_share"] == 1.0
    assert "support" not in beh  # the logging policy is its own support
    assert f"WARNING constant:{outside}: 100% of its actions leave the logged support" in text
    assert f"WARNING constant:{inside}" not in text
    # a lower bound next to every recommended estimate
    for p in doc["policies"]:
        rec = p["recommended"]
        assert rec["lower"] == rec["ci"][0] <= rec["value"]
    assert "lower bound" in text


def test_kernel_boundary_flag_reaches_the_importance_ratios(dataset: Path, tmp_path: Path) -> None:
    """``--kernel-boundary``: a policy on the action box's lower edge keeps more kernel mass
    renormalised (PDIS larger, ESS the same ratios up to one factor per request), and the report
    echoes the setting."""
    data = load_dataset(dataset)
    edge = ",".join(f"{x:g}" for x in data.spec.action_low)  # on the lower edge of every task
    docs = {}
    for boundary in ("none", "renormalise"):
        out = tmp_path / f"{boundary}.json"
        code, text = _run([
            "evaluate", str(dataset), "--policy", f"constant:{edge}", "--estimators", "pdis",
            "--gamma", "1", "--split", "all", "--n-bootstrap", "0", "--bandwidth", "0.05",
            "--kernel-boundary", boundary, "--out", str(out),
        ])  # fmt: skip
        assert code == 0, text
        docs[boundary] = json.loads(out.read_text())
    assert docs["renormalise"]["config"]["kernel_boundary"] == "renormalise"
    plain = docs["none"]["policies"][0]["estimates"]["pdis"]["value"]
    renorm = docs["renormalise"]["policies"][0]["estimates"]["pdis"]["value"]
    # a narrow kernel on the edge of 3 tasks keeps 1/8 of its mass: each ratio grows 8-fold
    assert plain > 0 and renorm > plain * 7.9
    code, text = _run([
        "evaluate", str(dataset), "--policy", f"constant:{edge}", "--kernel-boundary", "reflect",
        "--out", str(tmp_path / "x.json"),
    ])  # fmt: skip
    assert code == 2 and "--kernel-boundary" in text and "Traceback" not in text
