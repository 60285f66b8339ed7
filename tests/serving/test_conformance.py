"""The conformance suite: current, right (checked against independent formulas), and passed by the
Java and C++ ports; the checker catches a wrong port; the ``score`` programs agree end to end."""

from __future__ import annotations

import json
import math
import shutil
import stat
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner
from close_values import differences
from scipy import stats

from batchrl_mtf.cli import main
from batchrl_mtf.errors import ExportError
from batchrl_mtf.serving import WeightTable
from batchrl_mtf.serving.conformance import check_scorer, write_suite
from batchrl_mtf.serving.conformance import main as conformance_main

REPO = Path(__file__).resolve().parents[2]
SUITE = REPO / "serving" / "conformance"


@pytest.fixture(scope="module")
def fresh(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_suite(tmp_path_factory.mktemp("suite") / "suite")


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


SUITE_RTOL = 1e-9
"""Floats of the suite may differ by this much (relative) from the committed bytes: another CPU
rounds the reference's last bits differently (measured: at most 1.0e-13 across three CPUs)."""


def _parsed(name: str, data: bytes) -> Any:
    text = data.decode()
    if name.endswith(".jsonl"):
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    return json.loads(text)


def test_committed_suite_is_what_the_reference_writes(fresh: Path) -> None:
    """The committed files are what the reference writes now: the same bytes, or (another CPU)
    the same documents with floats equal up to ``SUITE_RTOL``."""
    committed, written = _files(SUITE), _files(fresh)
    assert sorted(committed) == sorted(written)
    changed = {
        name: differences(
            _parsed(name, committed[name]), _parsed(name, written[name]), rtol=SUITE_RTOL
        )
        for name in written
        if committed[name] != written[name]
    }
    changed = {name: found for name, found in changed.items() if found}
    assert not changed, (
        f"regenerate with python -m batchrl_mtf.serving.conformance --out {SUITE}: {changed}"
    )[:2000]


def test_suite_comparison_catches_a_changed_value(fresh: Path) -> None:
    name = "manifest.json"
    doc = _parsed(name, _files(fresh)[name])
    assert differences(doc, doc, rtol=SUITE_RTOL) == []
    edited = json.loads(json.dumps(doc).replace('"keys1_edges"', '"keys1_edge"'))
    assert differences(doc, edited, rtol=SUITE_RTOL) != []


def test_suite_covers_the_issue_list(fresh: Path) -> None:
    manifest = json.loads((fresh / "manifest.json").read_text())
    names = {c["name"] for c in manifest["valid"]}
    assert {
        "keys0_sum_default",
        "keys1_edges",
        "keys2_no_action_bounds",
        "keys3_grid",
        "keys4_grid",
    } <= names
    assert {"extreme_predictions", "ties_and_nan", "explore_gaussian", "explore_uniform"} <= names
    assert len(manifest["invalid"]) >= 60
    tables = [json.loads((fresh / "valid" / f"{n}.json").read_text()) for n in names]
    bounds = [b for t in tables for r in t["rows"] for pair in r["bounds"].values() for b in pair]
    assert None in bounds and any(b is not None for b in bounds)
    assert {t["fusion"]["formula"] for t in tables} == {"logsum", "sum"}


# ------------------------------------------------------------ the expected values, independently


def _brute_weights(doc: dict[str, Any], feats: dict[str, Any]) -> list[float]:
    """Scan the rows of the JSON document: half-open [lo, hi), null unbounded, NaN -> default."""
    wn = [f"w_{t}" for t in doc["tasks"]]
    for row in doc["rows"]:
        inside = True
        for key, (lo, hi) in row["bounds"].items():
            x = feats[key]
            if x is None or (lo is not None and x < lo) or (hi is not None and x >= hi):
                inside = False
        if inside:
            return [row["weights"][w] for w in wn]
    return [doc["default"][w] for w in wn]


def _logp(doc: dict[str, Any], mu: list[float], w: list[float]) -> float:
    """The exploration density with scipy: truncated normal or uniform, product over tasks."""
    ex = doc["exploration"]
    wn = [f"w_{t}" for t in doc["tasks"]]
    bounds = doc.get("action_bounds")
    total = 0.0
    for name, m, v in zip(wn, mu, w, strict=True):
        lo, hi = bounds[name] if bounds else (-math.inf, math.inf)
        if ex["distribution"] == "gaussian":
            s = ex["sigma"][name]
            total += float(stats.truncnorm.logpdf(v, (lo - m) / s, (hi - m) / s, loc=m, scale=s))
        else:
            h = ex["halfwidth"][name]
            total -= math.log(min(m + h, hi) - max(m - h, lo))
    return total


@pytest.mark.parametrize(
    "case", [p.name.removesuffix(".json") for p in sorted((SUITE / "valid").glob("*[!l].json"))]
)
def test_expected_values_match_independent_formulas(case: str) -> None:
    doc = json.loads((SUITE / "valid" / f"{case}.json").read_text())
    requests = (SUITE / "valid" / f"{case}.requests.jsonl").read_text().splitlines()
    expected = (SUITE / "valid" / f"{case}.expected.jsonl").read_text().splitlines()
    assert len(requests) == len(expected)
    wn = [f"w_{t}" for t in doc["tasks"]]
    checked = 0
    for req_line, exp_line in zip(requests, expected, strict=True):
        exp = json.loads(exp_line)
        if "error" in exp:
            continue
        req = json.loads(req_line)
        mu = _brute_weights(doc, req["features"])
        w = [exp["weights"][n] for n in wn]
        if "draws" in req:  # the sampled weights from the draws, then the density
            assert exp["behavior_logp"] == pytest.approx(_logp(doc, mu, w), rel=1e-9, abs=1e-9)
        else:
            assert w == mu
        beta = doc["fusion"].get("beta")
        scores = []
        for i in range(len(req["preds"][doc["tasks"][0]])):
            p = [req["preds"][t][i] for t in doc["tasks"]]
            if any(v is None for v in p):
                scores.append(None)
            elif beta:
                scores.append(
                    sum(
                        wk * math.log(pk + beta[t])
                        for wk, pk, t in zip(w, p, doc["tasks"], strict=True)
                    )
                )
            else:
                scores.append(sum(wk * pk for wk, pk in zip(w, p, strict=True)))
        for got, want in zip(exp["scores"], scores, strict=True):
            assert (got is None) == (want is None)
            if want is not None:
                assert got == pytest.approx(want, rel=1e-12, abs=1e-12 * 100)
        key = [(s is None, -(s or 0.0), i) for i, s in enumerate(exp["scores"])]
        assert exp["order"] == sorted(range(len(key)), key=lambda i: key[i])
        checked += 1
    assert checked > 0


def test_gaussian_draws_are_consumed_by_rejection() -> None:
    lines = (SUITE / "valid" / "explore_gaussian.requests.jsonl").read_text().splitlines()
    expected = (SUITE / "valid" / "explore_gaussian.expected.jsonl").read_text().splitlines()
    doc = json.loads((SUITE / "valid" / "explore_gaussian.json").read_text())
    req, exp = json.loads(lines[0]), json.loads(expected[0])
    assert req["draws"][:2] == [9.0, -9.0]  # both land outside [0, 2] for every task
    mu = _brute_weights(doc, req["features"])
    sigma = doc["exploration"]["sigma"]
    draws = iter(req["draws"])
    for t, m in zip(doc["tasks"], mu, strict=True):
        while True:
            v = m + sigma[f"w_{t}"] * next(draws)
            if 0.0 <= v <= 2.0:
                break
        assert exp["weights"][f"w_{t}"] == v


def test_every_invalid_table_is_refused_by_the_reference() -> None:
    manifest = json.loads((SUITE / "manifest.json").read_text())
    for case in manifest["invalid"]:
        path = SUITE / "invalid" / f"{case['name']}.json"
        with pytest.raises(ExportError) as info:
            WeightTable.load(path)
        assert case["error"] in str(info.value), case
        assert "\n" not in str(info.value) and len(str(info.value)) < 400


# ------------------------------------------------------------------------------------- the ports


@pytest.mark.parametrize("lang", ["cpp", "java"])
def test_port_passes_the_whole_suite(ports: dict[str, Path], lang: str) -> None:
    failures = check_scorer(SUITE, [str(ports[lang])])
    assert not failures, "\n".join(map(str, failures[:30]))


@pytest.mark.parametrize("lang", ["cpp", "java"])
def test_port_is_thread_safe_after_load(ports: dict[str, Path], lang: str) -> None:
    import subprocess

    prog = ports[lang].parent / f"thread-check-{lang}"
    proc = subprocess.run(
        [str(prog), str(SUITE / "valid" / "keys3_grid.json")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "8 threads agree with the serial run" in proc.stdout


def _mini_suite(tmp_path: Path) -> Path:
    root = tmp_path / "mini"
    manifest = json.loads((SUITE / "manifest.json").read_text())
    manifest["valid"] = [
        c for c in manifest["valid"] if c["name"] in ("keys1_edges", "ties_and_nan", "bad_requests")
    ]
    manifest["invalid"] = [c for c in manifest["invalid"] if c["name"] in ("overlap", "nan_token")]
    for sub in ("valid", "invalid"):
        (root / sub).mkdir(parents=True)
    for c in manifest["valid"]:
        for suffix in (".json", ".requests.jsonl", ".expected.jsonl"):
            shutil.copy(
                SUITE / "valid" / f"{c['name']}{suffix}", root / "valid" / f"{c['name']}{suffix}"
            )
    for c in manifest["invalid"]:
        shutil.copy(SUITE / "invalid" / f"{c['name']}.json", root / "invalid" / f"{c['name']}.json")
    (root / "manifest.json").write_text(json.dumps(manifest))
    return root


WRONG_PORT = """\
import json, sys
from batchrl_mtf.serving import WeightTable
from batchrl_mtf.serving.scoring import score_request
try:
    table = WeightTable.load(sys.argv[1])
except Exception as exc:
    print("error: nothing useful", file=sys.stderr)
    sys.exit(2)
for line in sys.stdin:
    r = score_request(table, json.loads(line))
    r["order"] = list(range(len(r["order"])))          # forgets to rank
    r["scores"] = [None if s is None else s * (1 + 1e-9) for s in r["scores"]]
    print(json.dumps(r))
"""


def test_checker_finds_a_wrong_port(tmp_path: Path) -> None:
    script = tmp_path / "wrong.py"
    script.write_text(WRONG_PORT)
    failures = [str(f) for f in check_scorer(_mini_suite(tmp_path), [sys.executable, str(script)])]
    assert any("scores[" in f for f in failures)
    assert any("order[" in f for f in failures)
    assert any("invalid/overlap" in f and "does not contain 'rows[2]: '" in f for f in failures)


def test_python_score_command_passes_the_suite(tmp_path: Path) -> None:
    wrapper = tmp_path / "score-python"
    wrapper.write_text(f'#!/bin/sh\nexec {sys.executable} -m batchrl_mtf score "$@"\n')
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IEXEC)
    assert check_scorer(_mini_suite(tmp_path), [str(wrapper)]) == []


def test_conformance_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert conformance_main(["--out", str(tmp_path / "s")]) == 0
    assert (tmp_path / "s" / "manifest.json").is_file()
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    assert conformance_main(["--out", str(tmp_path / "mine")]) == 2
    assert "not a conformance suite" in capsys.readouterr().err
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


# ------------------------------------------------------------------------------------ end to end


def _ok(args: list[str], stdin: str | None = None) -> str:
    r = CliRunner().invoke(main, args, input=stdin)
    assert r.exit_code == 0, r.output + repr(r.exception)
    return r.output


def test_score_programs_agree_on_an_exported_trained_policy(
    ports: dict[str, Path], tmp_path: Path
) -> None:
    import subprocess

    from batchrl_mtf.data.formats import load_dataset

    logs, ds, pol, table = (
        tmp_path / "logs.parquet",
        tmp_path / "ds",
        tmp_path / "bc",
        tmp_path / "t.json",
    )
    _ok(["simulate", "--sessions", "120", "--policy", "mixed", "--seed", "0", "--out", str(logs)])
    _ok(
        [
            "build-dataset",
            str(logs),
            "--reward",
            str(REPO / "envs/reward_default.toml"),
            "--out",
            str(ds),
        ]
    )
    _ok(
        [
            "train",
            str(ds),
            "--algo",
            "bc",
            "--n-steps",
            "30",
            "--seed",
            "0",
            "--out",
            str(pol),
            "--set",
            "n_steps_per_epoch=30",
        ]
    )
    _ok(
        [
            "export", str(pol), "--dataset", str(ds), "--keys", "session_depth,hist_sessions",
            "--buckets", "3", "--min-support", "10", "--explore", "gaussian:0.1", "--formula", "logsum", "--beta", "0.1",
            "--fqe-steps", "50", "--fqe-fits", "1", "--out", str(table),
        ]
    )  # fmt: skip
    data = load_dataset(ds)
    names = list(data.spec.feature_names)
    loaded = WeightTable.load(table)
    rng = np.random.default_rng(0)
    lines = []
    for obs in data.observations[:: max(1, len(data.observations) // 40)][:40]:
        req: dict[str, Any] = {
            "features": {n: float(v) for n, v in zip(names, obs, strict=True)},
            "preds": {t: rng.uniform(0, 1, 20).tolist() for t in loaded.tasks},
        }
        if len(lines) % 2:
            req["draws"] = rng.standard_normal(50).tolist()
        lines.append(json.dumps(req))
    stdin = "\n".join(lines) + "\n"
    reference = _ok(["score", str(table)], stdin=stdin).splitlines()
    assert len(reference) == len(lines)
    from batchrl_mtf.serving.conformance import _compare, score_scales

    for lang, prog in ports.items():
        proc = subprocess.run(
            [str(prog), str(table)], input=stdin.encode(), capture_output=True, check=False
        )
        assert proc.returncode == 0, proc.stderr.decode()
        got = proc.stdout.decode().splitlines()
        assert len(got) == len(reference)
        for g, want_line, req_line in zip(got, reference, lines, strict=True):
            want = json.loads(want_line)
            scales = score_scales(
                loaded, json.loads(req_line), np.array(list(want["weights"].values()))
            )
            assert _compare(g, want, scales, 1e-12) == [], lang
