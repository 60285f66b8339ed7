"""Export a trained policy for serving: a weight table, or the network itself.

* :mod:`batchrl_mtf.export.builder` tabulates a policy's actions over a dataset's states into a
  :class:`~batchrl_mtf.serving.WeightTable` (``docs/weight-table.md``).
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

__all__ = [
    "NETWORK_FORMATS",
    "SHRINKAGE_RULE",
    "ExportConfig",
    "ValueComparison",
    "build_weight_table",
    "export_network",
    "fidelity_report",
    "load_network",
    "logged_centre",
    "quantile_edges",
    "select_keys",
    "tabulate_policy",
    "tabulation_gap",
]
