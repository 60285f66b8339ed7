"""limit_threads: torch's and the BLAS libraries' thread counts inside a block, restored after."""

from __future__ import annotations

import pytest
import torch
from threadpoolctl import threadpool_info

from batchrl_mtf.core.threads import limit_threads, usable_cores


def _blas_threads() -> set[int]:
    return {int(p["num_threads"]) for p in threadpool_info() if p["user_api"] == "blas"}


def test_limit_threads_sets_both_libraries_and_restores_them() -> None:
    torch.set_num_threads(2)
    blas_before = _blas_threads()
    with limit_threads(1):
        assert torch.get_num_threads() == 1
        assert _blas_threads() <= {1}
    assert torch.get_num_threads() == 2
    assert _blas_threads() == blas_before


def test_limit_threads_restores_after_an_error() -> None:
    torch.set_num_threads(2)
    with pytest.raises(RuntimeError, match="boom"), limit_threads(1):
        raise RuntimeError("boom")
    assert torch.get_num_threads() == 2


def test_zero_leaves_the_libraries_alone() -> None:
    torch.set_num_threads(2)
    with limit_threads(0):
        assert torch.get_num_threads() == 2


def test_usable_cores_is_the_affinity_mask(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    if hasattr(os, "sched_getaffinity"):
        assert usable_cores() == len(os.sched_getaffinity(0))
    monkeypatch.delattr(os, "sched_getaffinity", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 3)
    assert usable_cores() == 3
    monkeypatch.setattr(os, "cpu_count", lambda: None)
    assert usable_cores() == 1
