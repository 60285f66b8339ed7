"""``batchrl-mtf run`` on logs (no simulator): the shipped sample pipeline with a tiny budget."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from batchrl_mtf.cli import main

REPO = Path(__file__).resolve().parents[2]
TINY = {
    "train.algos": '["bc"]',
    "train.n_steps": "20",
    "train.n_steps_per_epoch": "10",
    "evaluate.fqe_n_steps": "20",
    "evaluate.n_bootstrap": "10",
    "evaluate.best_constant_candidates": "2",
    "export.min_support": "20",
}


def test_sample_logs_pipeline(tmp_path: Path) -> None:
    out = tmp_path / "sample"
    argv = ["-q", "run", str(REPO / "logs" / "pipeline_sample.toml"), "--out", str(out)]
    for key, value in TINY.items():
        argv += ["--set", f"{key}={value}"]
    result = CliRunner().invoke(main, argv)
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert not (out / "simulate").exists()
    assert not (out / "truth").exists()
    summary = json.loads((out / "evaluate" / "summary.json").read_text(encoding="utf-8"))
    assert summary["production"]["source"] == "the logged actions' most common centre"
    md = (out / "report" / "report.md").read_text(encoding="utf-8")
    assert "tertile of `u_" in md  # no hidden segments without a simulator
    assert "bc " in md
    assert "true value" not in md
    html = (out / "report" / "report.html").read_text(encoding="utf-8")
    assert 'src="data:image/png;base64,' in html
    table = json.loads((out / "export" / "weight_table.json").read_text(encoding="utf-8"))
    assert table["fusion"]["formula"] == "logsum"
    assert table["fusion"]["beta"]["click"] == 0.05
