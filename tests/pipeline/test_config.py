"""The pipeline file's fusion: ``[fusion]``, the simulated env's, and ``[export]``'s flat keys."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from batchrl_mtf.core.fusion import Fusion
from batchrl_mtf.errors import ConfigError
from batchrl_mtf.pipeline import demo_document, load_pipeline, parse_pipeline

REPO = Path(__file__).resolve().parents[2]
SAMPLE_BETA = (0.05, 0.05, 0.01, 0.005, 0.005, 0.005)


def _logs_doc(**sections: Any) -> dict[str, Any]:
    return {"data": {"logs": [str(REPO / "logs" / "sample_short_video.parquet")]}, **sections}


def test_the_sample_records_its_fusion_section_in_the_dataset_config() -> None:
    sample = load_pipeline(REPO / "logs" / "pipeline_sample.toml")
    assert sample.data.dataset.fusion == Fusion("logsum", SAMPLE_BETA)
    assert sample.export.fusion is None  # the table is for the dataset's fusion
    assert sample.section("fusion") == {"formula": "logsum", "beta": list(SAMPLE_BETA)}
    assert sample.to_dict()["data"]["dataset"]["fusion"] == sample.section("fusion")  # type: ignore[index]


@pytest.mark.parametrize(
    ("table", "want"),
    [
        ({"formula": "sum"}, Fusion("sum")),
        ({"beta": 0.2}, Fusion("logsum", (0.2,))),
        ({"beta": {"click": 0.1, "like": 0.05}}, Fusion("logsum", (0.1, 0.05), ("click", "like"))),
    ],
)
def test_fusion_section(table: dict[str, Any], want: Fusion) -> None:
    cfg = parse_pipeline(_logs_doc(fusion=table), "p.toml", REPO)
    assert cfg.data.dataset.fusion == want


def test_flat_export_keys_of_earlier_versions_still_set_the_fusion() -> None:
    cfg = parse_pipeline(_logs_doc(export={"formula": "logsum", "beta": [0.3]}), "p.toml", REPO)
    assert cfg.export.fusion == Fusion("logsum", (0.3,))
    assert cfg.data.dataset.fusion == Fusion("logsum", (0.3,))  # they described the logs' too
    cfg = parse_pipeline(_logs_doc(fusion={"beta": 0.1}, export={"formula": "sum"}), "p.toml", REPO)
    assert (cfg.data.dataset.fusion, cfg.export.fusion) == (Fusion(), Fusion("sum"))


def test_a_simulated_pipeline_uses_the_envs_fusion() -> None:
    cfg = parse_pipeline(demo_document(quick=True), "demo", REPO)
    assert cfg.data.dataset.fusion == Fusion("logsum", SAMPLE_BETA)  # envs/short_video.toml


@pytest.mark.parametrize(
    ("doc", "match"),
    [
        (_logs_doc(), r"^p\.toml \[fusion\]: expected formula and beta"),
        (_logs_doc(fusion={"formula": "prod"}), r"^p\.toml \[fusion\]: 'formula': expected one of"),
        (_logs_doc(fusion={"beta": -1}), r"^p\.toml \[fusion\]: 'beta'\[0\]: expected a finite"),
        (_logs_doc(fusion={"bta": 1}), r"^p\.toml \[fusion\]: unknown key\(s\) \['bta'\]"),
        (_logs_doc(data={"fusion": {}}), r"\[data\]: unknown key\(s\) 'fusion'"),
        (
            _logs_doc(export={"formula": "sum", "fusion": {"formula": "sum"}}),
            r"\[export\]: give either 'fusion' or \['formula'\], not both",
        ),
    ],
)
def test_fusion_errors_name_the_section(doc: dict[str, Any], match: str) -> None:
    if "fusion" in doc.get("data", {}):
        doc["data"]["logs"] = _logs_doc()["data"]["logs"]
    with pytest.raises(ConfigError, match=match):
        parse_pipeline(doc, "p.toml", REPO)


def test_a_simulated_pipeline_refuses_another_fusion_than_the_envs() -> None:
    doc = demo_document(quick=True)
    doc["fusion"] = {"beta": 0.1}
    with pytest.raises(ConfigError, match=r"demo \[fusion\]: with \[data\.simulate\] the fusion"):
        parse_pipeline(doc, "demo", REPO)
    doc["fusion"] = {"beta": list(SAMPLE_BETA)}
    assert parse_pipeline(doc, "demo", REPO).data.dataset.fusion == Fusion("logsum", SAMPLE_BETA)
