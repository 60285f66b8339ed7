"""Reference serving code: apply a fusion weight table and rank candidates.

A ranking service rarely runs a policy network; it applies a table (format
``batchrl-mtf/weight-table@1``, see ``docs/weight-table.md``): "for requests whose state falls in
this bucket, use these fusion weights". This module is that table and the fusion that uses it:

* :class:`WeightTable` loads, validates and saves tables (JSON and the CSV twin) and looks
  weights up for a batch of states (:meth:`WeightTable.lookup`), or samples them around the
  bucket's weights when the table carries an exploration block (:meth:`WeightTable.sample`), with
  the exact log-density to log as ``behavior_logp``.
* :func:`fuse` turns per-candidate predictions and weights into scores; :func:`rank` orders the
  candidates.

It depends on numpy, the standard library, :mod:`batchrl_mtf.errors` and the fusion value object
:class:`~batchrl_mtf.core.fusion.Fusion` (numpy only) only, so it can be copied into a serving
code base as it is. The simulator and ``rollout --policy TABLE.json`` apply tables
through this same code. Java and C++ ports live in ``serving/`` at the repository root; they pass
the conformance suite that :mod:`batchrl_mtf.serving.conformance` writes (``docs/serving.md``).
"""

from batchrl_mtf.serving.fusion import FORMULAS, fuse, rank
from batchrl_mtf.serving.table import (
    FORMAT,
    MAX_CELLS,
    Exploration,
    Fusion,
    TableKey,
    TableRow,
    WeightTable,
)

__all__ = [
    "FORMAT",
    "FORMULAS",
    "MAX_CELLS",
    "Exploration",
    "Fusion",
    "TableKey",
    "TableRow",
    "WeightTable",
    "fuse",
    "rank",
]
