"""One command, end to end: logs (or a simulator) → dataset → training → OPE → export → report.

``batchrl-mtf run PIPELINE.toml`` and ``batchrl-mtf demo`` run the stages with a content-hash
cache (a re-run skips stages whose inputs are unchanged) and write ``report.md`` and a
self-contained ``report.html``. See ``docs/pipeline.md``.

Python::

    from batchrl_mtf.pipeline import load_pipeline, run_pipeline

    result = run_pipeline(load_pipeline("envs/pipeline_demo.toml"), "runs/demo")
    print(result.headline)
"""

from __future__ import annotations

from batchrl_mtf.pipeline.config import SECTIONS, PipelineConfig
from batchrl_mtf.pipeline.demo import DEMO, demo_document
from batchrl_mtf.pipeline.parse import load_pipeline, parse_pipeline
from batchrl_mtf.pipeline.runner import PipelineResult, StageRecord, read_record, run_pipeline

__all__ = [
    "DEMO",
    "SECTIONS",
    "PipelineConfig",
    "PipelineResult",
    "StageRecord",
    "demo_document",
    "load_pipeline",
    "parse_pipeline",
    "read_record",
    "run_pipeline",
]
