"""The dataset's file formats: ``transitions.parquet`` and the d3rlpy HDF5 file ``dataset.h5``.

``transitions.parquet`` holds one row per request (``user_id``, ``session_id``, ``request_id``,
``step``, ``ts``, ``obs``, ``action``, ``reward``, ``stickiness``, ``activeness``, ``terminal``,
``timeout``, ``behavior_logp``, ``split``); the Spark engine writes the same table as a
``transitions/`` directory of part files. ``dataset.h5`` holds the same episodes as the flat
float32 arrays a d3rlpy ``MDPDataset`` is made of (``observations``, ``actions``, ``rewards``,
``terminals``, ``timeouts``; the D4RL layout). :func:`load_dataset` reads a dataset directory
back into :class:`~batchrl_mtf.data.transitions.Transitions`.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from pathlib import Path

import h5py
import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.parquet as pq

from batchrl_mtf.core.d3rlpy import load_d3rlpy
from batchrl_mtf.data.spec import DATASET_FORMAT, read_spec
from batchrl_mtf.data.transitions import Transitions
from batchrl_mtf.errors import DatasetError

__all__ = [
    "load_d3rlpy_file",
    "load_dataset",
    "parquet_bytes",
    "transition_parts",
    "transitions_table",
    "write_d3rlpy_file",
    "write_d3rlpy_file_from_transitions",
]

FloatArray = npt.NDArray[np.float64]


def _id_array(values: npt.NDArray[np.generic]) -> pa.Array:
    if values.dtype.kind in "iu":
        return pa.array(values.astype(np.int64), type=pa.int64())
    return pa.array([None if v is None else str(v) for v in values], type=pa.string())


def _fixed_list(matrix: FloatArray) -> pa.Array:
    _n, d = matrix.shape
    flat = pa.array(np.ascontiguousarray(matrix, dtype=np.float64).reshape(-1), type=pa.float64())
    return pa.FixedSizeListArray.from_arrays(flat, d)


def transitions_table(t: Transitions) -> pa.Table:
    """The transitions as the Arrow table of ``transitions.parquet`` (without file metadata)."""
    return pa.table(
        {
            "user_id": _id_array(t.user_id),
            "session_id": _id_array(t.session_id),
            "request_id": _id_array(t.request_id),
            "step": pa.array(t.step, type=pa.int32()),
            "ts": pa.array(t.ts_ms, type=pa.int64()),
            "obs": _fixed_list(t.observations),
            "action": _fixed_list(t.actions),
            "reward": pa.array(t.rewards, type=pa.float64()),
            "stickiness": pa.array(t.stickiness, type=pa.float64()),
            "activeness": pa.array(t.activeness, type=pa.float64()),
            "terminal": pa.array(t.terminals, type=pa.bool_()),
            "timeout": pa.array(t.timeouts, type=pa.bool_()),
            "behavior_logp": pa.array(t.behavior_logp, type=pa.float64()),
            "split": pa.array(t.split, type=pa.string()),
        }
    )


_STATS_COLUMNS = ("user_id", "session_id", "request_id", "step", "ts", "reward", "split")


def parquet_bytes(t: Transitions) -> bytes:
    """``transitions.parquet``: the table of :func:`transitions_table` with the file metadata."""
    table = transitions_table(t)
    # the metadata keys are part of the file format (not module paths): keep them as they are
    table = table.replace_schema_metadata(
        {
            "batchrl_mtf.format": DATASET_FORMAT,
            "batchrl_mtf.features": json.dumps(list(t.spec.features.names)),
        }
    )
    buf = io.BytesIO()
    pq.write_table(
        table,
        buf,
        compression="snappy",  # measured: faster to write than lz4 or zstd, and smaller than lz4
        use_dictionary=["split"],
        write_statistics=list(_STATS_COLUMNS),  # not on the obs/action lists (slow, unused)
        row_group_size=1 << 20,
    )
    return buf.getvalue()


def write_d3rlpy_file(path: str | Path, data: Transitions) -> None:
    """Write the episodes as flat float32 arrays (D4RL layout) to an HDF5 file.

    One HDF5 dataset per field, rather than d3rlpy's one group per episode, keeps writing fast for
    millions of sessions; :func:`load_d3rlpy_file` turns it back into a d3rlpy ``MDPDataset``.
    """
    with h5py.File(path, "w") as f:
        f.attrs["format"] = DATASET_FORMAT
        f.attrs["action_space"] = "continuous"
        f.create_dataset("observations", data=data.observations.astype(np.float32))
        f.create_dataset("actions", data=data.actions.astype(np.float32))
        f.create_dataset("rewards", data=data.rewards.astype(np.float32))
        f.create_dataset("terminals", data=data.terminals.astype(np.float32))
        f.create_dataset("timeouts", data=data.timeouts.astype(np.float32))


def load_d3rlpy_file(path: str | Path) -> object:
    """Read ``dataset.h5`` into a d3rlpy ``MDPDataset`` with a continuous action space.

    Raises:
        DatasetError: The file is missing or not written by :func:`write_d3rlpy_file`.
    """
    d3rlpy = load_d3rlpy()

    p = Path(path)
    if not p.is_file():
        raise DatasetError(f"{p}: no such d3rlpy dataset file")
    try:
        with h5py.File(p, "r") as f:
            if f.attrs.get("format") != DATASET_FORMAT:
                raise DatasetError(
                    f"{p}: expected format {DATASET_FORMAT!r}, found {f.attrs.get('format')!r}"
                )
            arrays = {
                k: f[k][()] for k in ("observations", "actions", "rewards", "terminals", "timeouts")
            }
    except OSError as exc:
        raise DatasetError(f"{p}: not an HDF5 file ({exc})") from None
    return d3rlpy.dataset.MDPDataset(
        observations=arrays["observations"],
        actions=arrays["actions"],
        rewards=arrays["rewards"].reshape(-1, 1),
        terminals=arrays["terminals"],
        timeouts=arrays["timeouts"],
        action_space=d3rlpy.ActionSpace.CONTINUOUS,
        action_size=arrays["actions"].shape[1],
    )


def transition_parts(root: str | Path) -> list[Path]:
    """The Parquet file(s) holding a dataset directory's transitions, in canonical order.

    The local engine writes one ``transitions.parquet``; the Spark engine writes a
    ``transitions/`` directory of part files, globally sorted, so that reading the parts in name
    order gives the canonical order.

    Raises:
        DatasetError: Neither exists, or the directory holds no part file.
    """
    root = Path(root)
    single = root / "transitions.parquet"
    if single.is_file():
        return [single]
    parts_dir = root / "transitions"
    if parts_dir.is_dir():
        parts = sorted(
            f
            for f in parts_dir.iterdir()
            if f.is_file() and f.suffix == ".parquet" and not f.name.startswith((".", "_"))
        )
        if not parts:
            raise DatasetError(f"{parts_dir}: holds no *.parquet part files")
        return parts
    raise DatasetError(f"{root}: not a dataset directory (missing transitions.parquet)")


def _matrix(col: pa.ChunkedArray | pa.Array, width: int, n: int) -> FloatArray:
    """A (fixed-size) list column as a float64 matrix, shape (n, width)."""
    if width == 0:
        return np.zeros((n, 0))
    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    flat = arr.flatten().to_numpy(zero_copy_only=False)
    return np.asarray(flat, dtype=np.float64).reshape(-1, width)


def write_d3rlpy_file_from_transitions(
    dataset_dir: str | Path, path: str | Path | None = None, batch_rows: int = 1 << 16
) -> Path:
    """Write ``dataset.h5`` from a dataset directory's transitions, in bounded memory.

    Reads the Parquet part(s) in batches of ``batch_rows`` transitions and appends them to
    resizable HDF5 datasets, so memory does not grow with the dataset. The file holds the same
    arrays as :func:`write_d3rlpy_file` writes (``batchrl-mtf build-dataset --from-transitions``).

    Args:
        dataset_dir: A directory with ``features.json`` and ``transitions.parquet`` or
            ``transitions/``.
        path: Where to write (default ``dataset_dir/dataset.h5``); written atomically.
        batch_rows: Transitions per batch.

    Returns:
        The path written.

    Raises:
        DatasetError: The directory is not a dataset.
    """
    root = Path(dataset_dir)
    spec = read_spec(root)
    parts = transition_parts(root)
    d, k = len(spec.features.names), len(spec.tasks)
    target = Path(path) if path is not None else root / "dataset.h5"
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    try:
        with h5py.File(tmp, "w") as f:
            f.attrs["format"] = DATASET_FORMAT
            f.attrs["action_space"] = "continuous"
            chunk = max(1, min(batch_rows, 1 << 14))
            out = {
                "observations": f.create_dataset(
                    "observations",
                    (0, d),
                    maxshape=(None, d),
                    dtype=np.float32,
                    chunks=(chunk, d) if d else True,
                ),
                "actions": f.create_dataset(
                    "actions", (0, k), maxshape=(None, k), dtype=np.float32, chunks=(chunk, k)
                ),
            }
            for name in ("rewards", "terminals", "timeouts"):
                out[name] = f.create_dataset(
                    name, (0,), maxshape=(None,), dtype=np.float32, chunks=(chunk,)
                )
            n = 0
            cols = ["obs", "action", "reward", "terminal", "timeout"]
            for part in parts:
                for batch in pq.ParquetFile(part).iter_batches(batch_size=batch_rows, columns=cols):
                    m = batch.num_rows
                    arrays = {
                        "observations": _matrix(batch.column("obs"), d, m),
                        "actions": _matrix(batch.column("action"), k, m),
                        "rewards": batch.column("reward").to_numpy(zero_copy_only=False),
                        "terminals": batch.column("terminal").to_numpy(zero_copy_only=False),
                        "timeouts": batch.column("timeout").to_numpy(zero_copy_only=False),
                    }
                    for name, values in arrays.items():
                        ds = out[name]
                        ds.resize(n + m, axis=0)
                        ds[n : n + m] = np.asarray(values).astype(np.float32)
                    n += m
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def load_dataset(path: str | Path) -> Transitions:
    """Load a dataset directory written by ``build-dataset`` (either engine).

    The transitions are read from ``transitions.parquet`` (local engine) or from the part files of
    ``transitions/`` (Spark engine), in canonical order either way.

    Raises:
        DatasetError: The directory or one of its files is missing or not a dataset.
    """
    root = Path(path)
    spec = read_spec(root)
    parts = transition_parts(root)
    tables = [pq.read_table(p) for p in parts]
    table = tables[0] if len(tables) == 1 else pa.concat_tables(tables)
    d = len(spec.features.names)
    k = len(spec.tasks)
    n = table.num_rows

    def ids(name: str) -> npt.NDArray[np.generic]:
        arr = table.column(name).to_numpy(zero_copy_only=False)
        return np.asarray(arr)

    return Transitions(
        spec=spec,
        user_id=ids("user_id"),
        session_id=ids("session_id"),
        request_id=ids("request_id"),
        step=table.column("step").to_numpy().astype(np.int64),
        ts_ms=table.column("ts").to_numpy().astype(np.int64),
        observations=_matrix(table.column("obs"), d, n),
        actions=_matrix(table.column("action"), k, n),
        rewards=table.column("reward").to_numpy(),
        stickiness=table.column("stickiness").to_numpy(),
        activeness=table.column("activeness").to_numpy(),
        terminals=table.column("terminal").to_numpy(zero_copy_only=False).astype(bool),
        timeouts=table.column("timeout").to_numpy(zero_copy_only=False).astype(bool),
        behavior_logp=table.column("behavior_logp")
        .to_numpy(zero_copy_only=False)
        .astype(np.float64),
        split=table.column("split").to_numpy(zero_copy_only=False).astype("<U5"),
        path=root,
    )
