"""The executor side of the Spark engine (:mod:`batchrl_mtf.data.spark`): a ``mapInArrow``
task turns a partition of complete users into transitions and one JSON summary per chunk, with the
local engine's :func:`~batchrl_mtf.data.parts.process_part`.

Workers import this module (and so the package) once per Python worker; it must stay light: no
torch, no d3rlpy (``tests/test_package.py`` checks it).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from batchrl_mtf.data.config import DatasetConfig
from batchrl_mtf.data.formats import transitions_table
from batchrl_mtf.data.parts import process_part
from batchrl_mtf.data.reward import RewardConfig
from batchrl_mtf.data.spark_io import norm_uri
from batchrl_mtf.logs.schema import FILE_COLUMN, LogColumns, LogFrame, normalise_ts

__all__ = [
    "HELPER_COLUMNS",
    "OUT_HELPER_COLUMNS",
    "PartTask",
    "chunk_frame",
    "map_partition",
    "run_chunk",
    "spark_table",
]

HELPER_COLUMNS = ("_grp", "_file_uri")
"""Columns the job adds to the log rows (not log columns)."""
OUT_HELPER_COLUMNS = ("_sess_start", "_stats", "_part", "_seq")
"""Columns of the tasks' output that are not transitions' columns."""


@dataclass(frozen=True)
class PartTask:
    """Everything an executor needs (pickled once with the job)."""

    columns: LogColumns
    reward: RewardConfig
    config: DatasetConfig
    files: tuple[str, ...]
    file_index: dict[str, int]
    id_dtypes: dict[str, str]
    chunk_rows: int
    out_schema: pa.Schema
    sorted_groups: bool
    """Partitions arrive sorted by group (cut into chunks of ``chunk_rows``); else one chunk each."""
    file_column: bool
    """Rows carry ``_file_uri``; else every row is from ``files[0]``."""


def chunk_frame(task: PartTask, table: pa.Table) -> pd.DataFrame:
    """A chunk as the frame :func:`batchrl_mtf.logs.schema.read_logs` would give for its rows."""
    if task.file_column:
        enc = table.column("_file_uri").combine_chunks().dictionary_encode()
        lookup = np.array(
            [task.file_index[norm_uri(u)] for u in enc.dictionary.to_pylist()], dtype=np.int16
        )
        file_idx = lookup[enc.indices.to_numpy(zero_copy_only=False)]
    else:
        file_idx = np.zeros(table.num_rows, dtype=np.int16)
    helper = [c for c in HELPER_COLUMNS if c in table.column_names]
    frame = table.drop_columns(helper).to_pandas(split_blocks=True)
    if "ts" in frame.columns:
        source = task.files[int(file_idx[0])] if len(file_idx) else "logs"
        frame["ts"] = normalise_ts(frame["ts"], source)
    for col, dtype in task.id_dtypes.items():
        frame[col] = frame[col].astype(dtype)
    frame[FILE_COLUMN] = file_idx
    return frame


def spark_table(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """Fixed-size lists as lists, and the id columns in the job's types."""
    cols = []
    for field in schema:
        if field.name in OUT_HELPER_COLUMNS:
            continue
        col = table.column(field.name)
        cols.append(col.cast(field.type))
    return pa.Table.from_arrays(
        cols, names=[f.name for f in schema if f.name not in OUT_HELPER_COLUMNS]
    )


def run_chunk(
    task: PartTask, table: pa.Table, part: int, seq: int, stats: Any
) -> Iterator[pa.RecordBatch]:
    """Transitions of one chunk; its summary as a row, or added to the accumulator ``stats``."""
    logs = LogFrame(chunk_frame(task, table), task.files)
    res = process_part(logs, task.columns, task.reward, task.config)
    schema = task.out_schema
    if res.transitions is not None:
        t = res.transitions
        out = spark_table(transitions_table(t), schema)
        starts = t.episode_starts()
        sess_start = np.repeat(t.ts_ms[starts], np.diff(np.append(starts, len(t.step))))
        n = out.num_rows
        out = (
            out.append_column("_sess_start", pa.array(sess_start, pa.int64()))
            .append_column("_stats", pa.nulls(n, pa.string()))
            .append_column("_part", pa.array(np.full(n, part), pa.int64()))
            .append_column("_seq", pa.array(np.full(n, seq), pa.int64()))
        )
        yield from out.cast(schema).to_batches(max_chunksize=1 << 16)
    doc = json.dumps(res.summary.to_json())
    if stats is not None:
        stats.add([(part, seq, doc)])
        return
    row = {f.name: pa.nulls(1, f.type) for f in schema}
    row["_stats"] = pa.array([doc], pa.string())
    row["_part"] = pa.array([part], pa.int64())
    row["_seq"] = pa.array([seq], pa.int64())
    yield from pa.table(row, schema=schema).to_batches()


def map_partition(
    task: PartTask, batches: Iterator[pa.RecordBatch], stats: Any = None
) -> Iterator[pa.RecordBatch]:
    """Run a partition: one chunk, or (sorted by group) chunks of complete groups."""
    from pyspark import TaskContext

    ctx = TaskContext.get()
    part = ctx.partitionId() if ctx is not None else 0
    seq = 0
    buf: list[pa.RecordBatch] = []
    n_buf = 0
    chunk_rows = task.chunk_rows if task.sorted_groups else math.inf
    threshold = chunk_rows
    for batch in batches:
        if batch.num_rows == 0:
            continue
        buf.append(batch)
        n_buf += batch.num_rows
        if n_buf < threshold:
            continue
        table = pa.Table.from_batches(buf)
        grp = table.column("_grp").to_numpy()
        changes = np.flatnonzero(grp[1:] != grp[:-1])
        if len(changes) == 0:
            threshold = 2 * n_buf  # one group so far: read on until it ends (look again later)
            continue
        cut = int(changes[-1]) + 1  # the last group may continue in the next batch
        yield from run_chunk(task, table.slice(0, cut), part, seq, stats)
        seq += 1
        rest = table.slice(cut)
        buf = rest.to_batches()
        n_buf = rest.num_rows
        threshold = chunk_rows
    if n_buf:
        yield from run_chunk(task, pa.Table.from_batches(buf), part, seq, stats)
