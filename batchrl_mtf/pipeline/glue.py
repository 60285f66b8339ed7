"""Small pieces the pipeline needs on top of the library's public APIs.

* :func:`truth_summary` and :func:`rollout_arrays`: what the truth and export stages write of a
  policy's true value (:func:`batchrl_mtf.sim.true_value`): the ``rollout`` figures plus the
  weights used per hidden user segment (the paper's action plots), and the per-session returns
  (for paired differences).
* :func:`paired_difference` and :func:`bootstrap_difference`: intervals of a difference of two
  policies measured on the same sessions.
"""

from __future__ import annotations

import io
import logging
import math
import zipfile
from collections.abc import Sequence
from pathlib import Path
from statistics import NormalDist
from typing import Any

import numpy as np
import numpy.typing as npt

from batchrl_mtf.sim import TrueValue

logger = logging.getLogger("batchrl_mtf.pipeline")

__all__ = [
    "bootstrap_difference",
    "load_npz",
    "npz_bytes",
    "paired_difference",
    "rollout_arrays",
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


def paired_difference(
    a: Sequence[float] | FloatArray, b: Sequence[float] | FloatArray, level: float = 0.95
) -> tuple[float, float, float]:
    """Mean of ``a - b`` over paired sessions and its normal-approximation interval.

    Returns:
        ``(difference, low, high)``.
    """
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    m = float(d.mean()) if d.size else math.nan
    if d.size < 2:
        return m, math.nan, math.nan
    z = _z(level)
    h = z * float(d.std(ddof=1)) / math.sqrt(d.size)
    return m, m - h, m + h


def bootstrap_difference(
    a: FloatArray, b: FloatArray, n_bootstrap: int, level: float, seed: int
) -> tuple[float, float, float]:
    """Mean of ``a - b`` (per-session values of two estimates) with a percentile bootstrap.

    Sessions are resampled with replacement together for both policies (a paired interval). With
    ``n_bootstrap = 0`` the normal approximation is used.
    """
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    if n_bootstrap <= 0 or d.size < 2:
        return paired_difference(a, b, level)
    rng = np.random.default_rng(seed)
    n = d.size
    means = np.empty(n_bootstrap)
    chunk = max(1, 2_000_000 // n)
    for lo in range(0, n_bootstrap, chunk):
        size = min(chunk, n_bootstrap - lo)
        idx = rng.integers(0, n, size=(size, n))
        means[lo : lo + size] = d[idx].mean(axis=1)
    tail = (1.0 - level) / 2.0 * 100.0
    low, high = np.percentile(means, [tail, 100.0 - tail])
    return float(d.mean()), float(low), float(high)


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


def _z(level: float) -> float:
    return NormalDist().inv_cdf(0.5 + level / 2.0)
