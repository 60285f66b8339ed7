"""Off-policy selection (``batchrl-mtf select``): train a small portfolio, export each
candidate's weight table, estimate every table and production with paired intervals on the
held-out split, and choose the table with the highest lower confidence bound of its gain over
production, or production itself when nothing is reliably better (``docs/selection.md``).

Public API::

    from batchrl_mtf.selection import SelectConfig, select_policy
    from batchrl_mtf.serving import Fusion

    result = select_policy("runs/ds", "runs/select", SelectConfig(), fusion=Fusion("logsum", (0.1,) * 5))
    print(result.choice.name, result.choice.reason)
"""

from __future__ import annotations

from batchrl_mtf.selection.config import (
    CONSERVATIVENESS_FIELD,
    DEFAULT_SELECT_OPE,
    CandidateSpec,
    SelectConfig,
    portfolio,
    resolve_select_config,
)
from batchrl_mtf.selection.report import RULE, SELECTION_FORMAT, check_out, selection_doc
from batchrl_mtf.selection.rule import PRODUCTION, Choice, Gain, choose
from batchrl_mtf.selection.workflow import (
    Candidate,
    SelectionResult,
    export_candidate,
    select_among,
    select_policy,
)

__all__ = [
    "CONSERVATIVENESS_FIELD",
    "DEFAULT_SELECT_OPE",
    "PRODUCTION",
    "RULE",
    "SELECTION_FORMAT",
    "Candidate",
    "CandidateSpec",
    "Choice",
    "Gain",
    "SelectConfig",
    "SelectionResult",
    "check_out",
    "choose",
    "export_candidate",
    "portfolio",
    "resolve_select_config",
    "select_among",
    "select_policy",
    "selection_doc",
]
