"""Train/test assignment of sessions: a deterministic hash of the session id."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pandas as pd

__all__ = ["TEST_FRACTION", "session_split"]

TEST_FRACTION = 0.2


def session_split(
    session_id: npt.NDArray[np.generic], test_fraction: float = TEST_FRACTION
) -> npt.NDArray[np.str_]:
    """Deterministic train/test assignment of each session by a hash of its id.

    The hash is pandas' SipHash of the session id's text (fixed key), so the same session lands in
    the same split in every run, on every machine and whatever else is in the logs.
    """
    ids = np.asarray(session_id)
    if len(ids) == 0:
        return np.zeros(0, dtype="<U5")
    # a session's steps are usually contiguous: hash each run of equal ids once
    heads = np.flatnonzero(np.concatenate([[True], ids[1:] != ids[:-1]]))
    text = pd.Series(ids[heads].astype(str), dtype=object)
    h = pd.util.hash_pandas_object(text, index=False).to_numpy()
    run_split = np.where(h < np.uint64(test_fraction * 2**64), "test", "train").astype("<U5")
    return np.repeat(run_split, np.diff(np.append(heads, len(ids))))
