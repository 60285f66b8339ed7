"""The run report only reads what the stages wrote: it renders the same with no policy to load
and no dataset transitions to read."""

from __future__ import annotations

import json
import re
from pathlib import Path

from batchrl_mtf.pipeline import load_pipeline, run_pipeline
from batchrl_mtf.pipeline.context import Context
from batchrl_mtf.pipeline.report import _ci, write_report
from batchrl_mtf.pipeline.stage import StageRecord, read_record

REPO = Path(__file__).resolve().parents[2]
TINY = {
    "train.algos": ["bc"],
    "train.n_steps": 20,
    "train.n_steps_per_epoch": 10,
    "evaluate.fqe_n_steps": 20,
    "evaluate.n_bootstrap": 10,
    "evaluate.best_constant_candidates": 2,
    "export.min_support": 20,
    "truth.env": "short_video",
    "truth.sessions": 60,
    "truth.seed": 12345,
}


def _without_timing(md: str) -> str:
    md = re.sub(r"## Timing.*?## Resolved configuration", "", md, flags=re.S)
    return re.sub(r"stages took \d+ s", "", md)


def test_report_renders_from_stage_files_alone(tmp_path: Path) -> None:
    config = load_pipeline(REPO / "logs" / "pipeline_sample.toml", overrides=TINY)
    out = tmp_path / "run"
    result = run_pipeline(config, out, progress=False, label="test")
    first = result.report_md.read_text(encoding="utf-8")
    headline = result.headline
    # nothing left to load a policy from or to act on: models and transitions are gone
    removed = [*out.glob("train/*/model.d3"), *out.glob("dataset/transitions.parquet")]
    removed += list(out.glob("dataset/*.h5"))
    assert len(removed) >= 2
    for path in removed:
        path.unlink()
    records = {}
    for name in ("dataset", "train:bc", "evaluate", "truth", "export"):
        folder = out.joinpath(*name.split(":"))
        rec = read_record(folder)
        assert rec is not None
        records[name] = StageRecord(
            name, folder, "ran", float(rec["seconds"]), rec["input_hash"], rec["output_hash"],
            dict(rec["summary"]),
        )  # fmt: skip
    again = tmp_path / "again"
    ctx = Context(config=config, out=out, progress=False, label="test", records=records)
    write_report(ctx, again)
    second = (again / "report.md").read_text(encoding="utf-8")
    assert "## Learned weights" in second and "hidden segment" in second
    assert "table:bc" in second
    assert _without_timing(second) == _without_timing(first)
    assert (again / "headline.md").read_text(encoding="utf-8") == headline
    assert (again / "figures" / "weights_by_task.png").read_bytes()[:4] == b"\x89PNG"


def test_headline_quotes_the_recommended_interval_with_its_model_error(tmp_path: Path) -> None:
    config = load_pipeline(REPO / "logs" / "pipeline_sample.toml", overrides=TINY)
    result = run_pipeline(config, tmp_path / "run", progress=False, label="test")
    ope = json.loads((tmp_path / "run" / "evaluate" / "ope.json").read_text())
    for p in ope["policies"]:
        rec = p["recommended"]
        assert rec["model_error"] > 0 and rec["ci"] != rec["sampling_ci"]
        quoted = f"{_ci(rec['value'], *rec['ci'])} ({rec['estimator']})"
        assert f"| {p['name']} | {quoted} |" in result.headline.replace("**", "")
    t = json.loads((tmp_path / "run" / "export" / "fidelity.json").read_text())["ope_table"]
    assert t["quoted_ci"][0] < t["ci"][0] and t["quoted_ci"][1] > t["ci"][1]
    quoted = f"{_ci(t['value'], *t['quoted_ci'])} ({t['estimator']})"
    assert f"| table:bc | {quoted} |" in result.headline
