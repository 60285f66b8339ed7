"""Small pieces the pipeline needs on top of the library's public APIs.

* :func:`truth_summary` and :func:`rollout_arrays`: what the truth and export stages write of a
  policy's true value (:func:`batchrl_mtf.sim.true_value`): the ``rollout`` figures plus the
  weights used per hidden user segment (the paper's action plots), and the per-session returns
  (for paired differences).
* :func:`load_npz` and :func:`npz_bytes`: the stage caches' ``.npz`` files.
* :func:`read_stage_json` and :func:`stage_json_or_none`: the stages' own JSON files.

The paired differences of two policies (``paired_difference``, ``bootstrap_difference``) live in
:mod:`batchrl_mtf.ope.paired`.
"""

from __future__ import annotations

import io
import json
import logging
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from batchrl_mtf.sim import TrueValue

logger = logging.getLogger("batchrl_mtf.pipeline")

__all__ = [
    "load_npz",
    "npz_bytes",
    "read_stage_json",
    "rollout_arrays",
    "stage_json_or_none",
    "truth_summary",
]

FloatArray = npt.NDArray[np.float64]


def truth_summary(value: TrueValue) -> dict[str, object]:
    """``values.json``'s entry of one policy: the ``rollout`` figures (return with 95% interval,
    parts, by segment) plus ``weights_by_segment`` and ``requests_by_segment``."""
    return {
        **value.summary,
        "weights_by_segment": value.weights_by_segment,
        "requests_by_segment": value.requests_by_segment,
    }


def rollout_arrays(name: str, value: TrueValue) -> dict[str, npt.NDArray[Any]]:
    """``rollouts.npz``'s arrays of policy ``name``: per-session returns and hidden segments,
    and per segment the recorded weight vectors (``weights|<segment>|<name>``)."""
    out: dict[str, npt.NDArray[Any]] = {
        f"returns|{name}": value.returns,
        f"segment|{name}": np.asarray(value.stats.segment, dtype=np.int64),
    }
    for seg, sample in value.samples.items():
        out[f"weights|{seg}|{name}"] = sample
    return out


def load_npz(path: Path) -> dict[str, npt.NDArray[Any]]:
    """The arrays of the ``.npz`` file ``path``; a missing or unreadable cache is empty (recomputed).

    ``np.load`` never unpickles here (``allow_pickle=False``): an object array is unreadable.
    """
    if not path.is_file():
        return {}
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        logger.warning("%s: unreadable cache, recomputing it (%s)", path, exc)
        return {}


def npz_bytes(arrays: dict[str, npt.NDArray[Any]]) -> bytes:
    """``arrays`` as the bytes of a compressed ``.npz`` file (for atomic writes)."""
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)  # type: ignore[arg-type]
    return buf.getvalue()


def read_stage_json(path: Path) -> Any:
    """A JSON file a stage of this run wrote (it must exist)."""
    return json.loads(path.read_text(encoding="utf-8"))


def stage_json_or_none(path: Path) -> Any:
    """:func:`read_stage_json`, or ``None`` when the file is absent (an optional stage output)."""
    return read_stage_json(path) if path.is_file() else None
