"""Export a trained policy for serving: a weight table, or the network itself.

* :mod:`batchrl_mtf.export.builder` tabulates a policy's actions over a dataset's states into a
  :class:`~batchrl_mtf.serving.WeightTable` (``docs/weight-table.md``).
* :mod:`batchrl_mtf.export.workflow` is the export workflow, :func:`export_table`: tabulate, then
  measure the table's action gap and its offline and true values against the policy
  (:class:`ExportResult`); ``batchrl-mtf export`` and the pipeline both call it.
* :mod:`batchrl_mtf.export.network` writes the d3rlpy network as TorchScript or ONNX, with its input
  normalisation, and checks the artefact reproduces the network's actions.

Nothing here imports torch or d3rlpy at module import time.
"""

from __future__ import annotations

from batchrl_mtf.export.builder import (
    SHRINKAGE_RULE,
    ExportConfig,
    ValueComparison,
    build_weight_table,
    fidelity_report,
    logged_centre,
    quantile_edges,
    select_keys,
    tabulate_policy,
    tabulation_gap,
)
from batchrl_mtf.export.network import NETWORK_FORMATS, export_network, load_network
from batchrl_mtf.export.workflow import ExportResult, export_table, offline_config

__all__ = [
    "NETWORK_FORMATS",
    "SHRINKAGE_RULE",
    "ExportConfig",
    "ExportResult",
    "ValueComparison",
    "build_weight_table",
    "export_network",
    "export_table",
    "fidelity_report",
    "load_network",
    "logged_centre",
    "offline_config",
    "quantile_edges",
    "select_keys",
    "tabulate_policy",
    "tabulation_gap",
]
