"""The end-to-end pipeline: ``batchrl-mtf demo`` / ``run``, the stage cache, the report, errors."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from batchrl_mtf.cli import main
from batchrl_mtf.errors import ConfigError
from batchrl_mtf.pipeline import demo_document, load_pipeline, parse_pipeline, run_pipeline
from batchrl_mtf.pipeline.demo import DEMO

REPO = Path(__file__).resolve().parents[2]
STAGES = (
    "simulate", "dataset", "train/td3bc", "train/bc", "evaluate", "truth", "export", "select",
    "report",
)  # fmt: skip


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    """``batchrl-mtf demo --quick`` once for the module."""
    out = tmp_path_factory.mktemp("demo") / "run"
    result = CliRunner().invoke(main, ["-q", "demo", "--quick", "--out", str(out)])
    assert result.exit_code == 0, result.output + repr(result.exception)
    return out, result


def test_demo_writes_every_artefact(demo_run: tuple[Path, Any]) -> None:
    from batchrl_mtf.data.formats import load_dataset
    from batchrl_mtf.serving import WeightTable

    out, result = demo_run
    for stage in STAGES:
        rec = json.loads((out / stage / "stage.json").read_text(encoding="utf-8"))
        assert rec["format"] == "batchrl-mtf/stage@1"
        assert rec["input_hash"].startswith("sha256:")
        assert rec["output_hash"]
    assert len(load_dataset(out / "dataset")) > 0
    ope = json.loads((out / "evaluate" / "ope.json").read_text(encoding="utf-8"))
    assert ope["format"] == "batchrl-mtf/ope-report@1"
    assert {p["name"] for p in ope["policies"]} == {
        "behavior", "production", "best-constant", "td3bc", "bc"
    }  # fmt: skip
    assert all(p["estimates"]["fqe"]["ci"] is not None for p in ope["policies"])
    best = WeightTable.load(out / "evaluate" / "best_constant.json")
    assert best.keys == ()
    table = WeightTable.load(out / "export" / "weight_table.json")
    assert 1 <= len(table.keys) <= 2
    assert table.rows
    fid = table.meta["fidelity"]
    assert fid["ope"]["source"] == "ope:fqe"
    assert fid["true"]["source"].startswith("env:")
    with open(out / "export" / "weight_table.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == len(table.rows)
    assert "support" in rows[0]
    truth = json.loads((out / "truth" / "values.json").read_text(encoding="utf-8"))
    assert set(truth["policies"]) == {"behavior", "production", "best-constant", "td3bc", "bc"}
    for v in truth["policies"].values():
        assert v["return"]["ci95"][0] <= v["return"]["mean"] <= v["return"]["ci95"][1]
        assert set(v["weights_by_segment"]) == {"casual", "watcher", "social"}
    run = json.loads((out / "run.json").read_text(encoding="utf-8"))
    assert [s["stage"] for s in run["stages"]][-1] == "report"
    assert "| policy |" in result.output
    assert "production" in result.output
    # the select stage: `batchrl-mtf select`'s files, the trained algorithms as candidates
    sel = json.loads((out / "select" / "selection.json").read_text(encoding="utf-8"))
    assert sel["format"] == "batchrl-mtf/selection@1"
    names = [c["name"] for c in sel["candidates"]]
    assert names[0] == "production"
    assert {c["policy"] for c in sel["candidates"][1:]} == {"td3bc", "bc"}
    assert len(names) == 1 + 2 * len(sel["config"]["trust_steps"])
    assert sel["chosen"]["name"] in names
    chosen = WeightTable.load(out / "select" / "table.json")
    assert chosen.meta["policy"] == sel["chosen"]["name"]
    truth_sel = json.loads((out / "select" / "truth.json").read_text(encoding="utf-8"))
    assert truth_sel["chosen"] == sel["chosen"]["name"]
    lo, hi = truth_sel["vs_production"]["ci"]
    assert lo <= truth_sel["vs_production"]["diff"] <= hi
    assert "**Selection**" in result.output


def test_select_disabled_and_train_processes(demo_run: tuple[Path, Any], tmp_path: Path) -> None:
    """``[select] enabled = false`` plans no select stage; a training in a worker process (the
    runner's ``[train] parallel``) writes the same bytes as in the pipeline's process."""
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    from batchrl_mtf.pipeline.stages import Context, plan, train_job

    doc = demo_document(quick=True)
    doc["select"] = {"enabled": False}
    config = parse_pipeline(doc, "demo", REPO)
    names = [s.name for s in plan(Context(config=config, out=tmp_path / "run"))]
    assert "select" not in names and "report" in names
    assert config.to_dict()["select"] == {"enabled": False}

    out, _ = demo_run
    tc = config.train.resolved("bc")
    with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
        summary = pool.submit(train_job, str(out / "dataset"), str(tmp_path / "bc"), tc).result()
    assert summary["n_steps"] == tc.n_steps
    a = (tmp_path / "bc" / "model.safetensors").read_bytes()
    assert a == (out / "train" / "bc" / "model.safetensors").read_bytes()


def test_report_is_complete_and_self_contained(demo_run: tuple[Path, Any]) -> None:
    out, _ = demo_run
    md = (out / "report" / "report.md").read_text(encoding="utf-8")
    for heading in ("## Verdict", "## Data", "## Training", "## Offline evaluation",
                    "## Learned weights", "## Exported weight table", "## Timing",
                    "## Resolved configuration"):  # fmt: skip
        assert heading in md
    assert re.search(r"td3bc (\*\*)?(beats|does not beat|does worse than) production", md)
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert len(images) >= 6
    for rel in images:
        png = (out / "report" / rel).read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
    html = (out / "report" / "report.html").read_text(encoding="utf-8")
    assert html.startswith("<!DOCTYPE html>")
    assert html.rstrip().endswith("</html>")
    assert html.count('src="data:image/png;base64,') == len(images)
    assert "figures/" not in html  # nothing outside the file
    assert "<table>" in html
    assert "hidden segment" in html


def test_rerun_skips_and_export_edit_reruns_export_only(demo_run: tuple[Path, Any]) -> None:
    out, _ = demo_run
    again = CliRunner().invoke(main, ["demo", "--quick", "--out", str(out)])
    assert again.exit_code == 0, again.output
    assert "stages run: none" in again.output
    assert "skipped (unchanged)" in again.output

    doc = demo_document(quick=True)
    doc["export"]["buckets"] = 2
    config = parse_pipeline(doc, "demo", REPO)
    result = run_pipeline(config, out, progress=False, label="batchrl-mtf demo --quick")
    ran = {r.name for r in result.records if r.status == "ran"}
    assert ran == {"export", "report"}
    rec = json.loads((out / "export" / "stage.json").read_text(encoding="utf-8"))
    assert rec["inputs"]["export"]["table"]["buckets"] == 2

    forced = run_pipeline(config, out, force=["truth"], progress=False,
                          label="batchrl-mtf demo --quick")  # fmt: skip
    truth = next(r for r in forced.records if r.name == "truth")
    assert truth.status == "ran"
    # the truth stage caches per policy: forcing it re-rolls nothing whose identity is unchanged
    assert truth.summary["reused"] == truth.summary["rolled_out"]


def test_example_pipeline_files() -> None:
    demo_file = load_pipeline(REPO / "envs" / "pipeline_demo.toml")
    built_in = parse_pipeline(DEMO, "demo", REPO)
    a, b = demo_file.to_dict(), built_in.to_dict()
    a.pop("source"), b.pop("source")
    assert a == b
    sample = load_pipeline(REPO / "logs" / "pipeline_sample.toml")
    assert sample.data.logs[0].endswith("sample_short_video.parquet")
    assert sample.truth is None
    assert sample.data.simulate is None


def _demo_with(section: str, key: str, value: object) -> dict[str, Any]:
    doc = demo_document(quick=True)
    doc.setdefault(section, {})[key] = value
    return doc


@pytest.mark.parametrize(
    ("section", "key", "value", "match"),
    [
        ("data", "gama", 0.9, r"\[data\]: unknown key\(s\) 'gama'"),
        ("train", "n_step", 10, r"\[train\]: unknown key 'n_step'"),
        ("train", "algos", ["bcq", "xgboost"], r"\[train\]: 'algos'"),
        ("evaluate", "estimator", "fqe", r"\[evaluate\]: unknown key\(s\) 'estimator'"),
        ("evaluate", "policies", ["oracle"], r"\[evaluate\].*policies"),
        ("export", "bucket", 3, r"\[export\]: unknown key\(s\) 'bucket'"),
        ("export", "policy", "cql", r"\[export\]: 'policy'"),
        ("truth", "session", 10, r"\[truth\]: unknown key\(s\) 'session'"),
        ("select", "budget_minutes", 5, r"\[select\]: unknown key\(s\) 'budget_minutes'"),
        ("select", "ope.fqe_n_steps", 5, r"\[select\]: unknown key\(s\) 'ope.fqe_n_steps'"),
        ("select", "enabled", "yes", r"\[select\]: 'enabled': expected true or false"),
        ("select", "trust_steps", [-1.0], r"\[select\].*trust_steps"),
        ("train", "parallel", -1, r"\[train\]: parallel: expected an integer >= 0"),
        ("reward", "watch", 1.0, r"\[reward\]: unknown key\(s\) 'watch'"),
        ("features", "hist", 3, r"\[features\]: 'hist'"),
        ("trian", "n_steps", 10, r"unknown section\(s\) \[trian\]"),
    ],
)
def test_bad_keys_name_section_and_key(section: str, key: str, value: object, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        parse_pipeline(_demo_with(section, key, value), "p.toml", REPO)


def test_bad_simulate_key_and_missing_logs(tmp_path: Path) -> None:
    doc = demo_document(quick=True)
    doc["data"]["simulate"]["sesions"] = 10
    with pytest.raises(ConfigError, match=r"\[data\.simulate\]: unknown key\(s\) 'sesions'"):
        parse_pipeline(doc, "p.toml", REPO)
    p = tmp_path / "p.toml"
    p.write_text('[data]\nlogs = ["nope.parquet"]\n[export]\nformula = "sum"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"\[data\]: 'logs': no such file"):
        load_pipeline(p)
    p.write_text('[data]\nlogs = ["../x.parquet"]\n', encoding="utf-8")
    (tmp_path.parent / "x.parquet").write_bytes(b"")
    with pytest.raises(ConfigError, match=r"\[fusion\]: expected formula and beta"):
        load_pipeline(p)


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["run", "missing.toml"], "pipeline file not found"),
        (["run", "{bad}"], r"\[evaluate\]: unknown key\(s\) 'fqe_steps'"),
        (["run", "{good}", "--set", "train.n_step=5"], r"\[train\]: unknown key 'n_step'"),
        (["run", "{good}", "--force", "trainn"], r"--force: unknown stage"),
        (["demo", "--sessions", "3"], r"--sessions"),
    ],
)
def test_cli_user_mistakes(tmp_path: Path, args: list[str], match: str) -> None:
    good = tmp_path / "good.toml"
    good.write_text((REPO / "envs" / "pipeline_demo.toml").read_text(encoding="utf-8"),
                    encoding="utf-8")  # fmt: skip
    bad = tmp_path / "bad.toml"
    bad.write_text("[data.simulate]\nsessions = 10\n[evaluate]\nfqe_steps = 3\n", encoding="utf-8")
    argv = [a.format(good=good, bad=bad) for a in args]
    if argv[0] == "run" and "--force" in argv:
        argv += ["--out", str(tmp_path / "o"), "--set", "data.simulate.sessions=60"]
        argv += ["--set", "train.n_steps=5", "--set", "truth.sessions=20"]
    result = CliRunner().invoke(main, argv)
    assert result.exit_code == 2, result.output
    assert re.search(match, result.output), result.output


def test_help_and_version() -> None:
    runner = CliRunner()
    for cmd in ("demo", "run"):
        result = runner.invoke(main, [cmd, "--help"])
        assert result.exit_code == 0
        assert "Examples:" in result.output
    result = runner.invoke(main, ["--version"])
    assert result.exit_code == 0
    assert "batchrl-mtf" in result.output
