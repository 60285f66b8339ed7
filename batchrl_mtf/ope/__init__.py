"""Offline policy evaluation on session logs (``batchrl-mtf evaluate``).

Estimators (one class each, shared base :class:`Estimator`, registry :data:`ESTIMATORS`):

* ``fqe``: Fitted Q Evaluation (Le et al. 2019) with d3rlpy's FQE;
* ``cfqe``: the BatchRL-MTF Conservative-OPEstimator (FQE + CQL-style penalty, Zhang et al. 2022);
* ``pdis``/``wpdis``: per-decision importance sampling and its self-normalised form
  (Precup et al. 2000) with kernel ratios for deterministic continuous policies;
* ``dr``/``wdr``: doubly robust (Jiang & Li 2016) and weighted doubly robust (Thomas &
  Brunskill 2016) with the FQE model.

Every estimate carries a 95% bootstrap interval over sessions and, for importance-weighted
estimators, an effective sample size. The logging policy itself is evaluated through the
:class:`batchrl_mtf.policy.LoggingPolicy` marker (the on-policy average). See ``docs/ope.md``.
"""

from batchrl_mtf.ope.base import (
    Estimate,
    Estimator,
    PolicyData,
    Term,
    prepare,
)
from batchrl_mtf.ope.best_constant import (
    BestConstant,
    best_constant,
    best_constant_table,
    constant_candidates,
)
from batchrl_mtf.ope.config import ESTIMATOR_NAMES, OPEConfig
from batchrl_mtf.ope.dr import DR, WDR
from batchrl_mtf.ope.evaluate import (
    ESTIMATORS,
    OPEResult,
    PolicyResult,
    Recommended,
    estimate_policy_value,
    evaluate_policies,
    make_estimator,
    quoted_ci,
    recommend,
)
from batchrl_mtf.ope.fqe import CFQE, FQE, fit_q
from batchrl_mtf.ope.importance import PDIS, WPDIS
from batchrl_mtf.ope.kernel import scott_bandwidth
from batchrl_mtf.ope.report import format_table, plot_report, report_to_dict

__all__ = [
    "CFQE",
    "DR",
    "ESTIMATORS",
    "ESTIMATOR_NAMES",
    "FQE",
    "PDIS",
    "WDR",
    "WPDIS",
    "BestConstant",
    "Estimate",
    "Estimator",
    "OPEConfig",
    "OPEResult",
    "PolicyData",
    "PolicyResult",
    "Recommended",
    "Term",
    "best_constant",
    "best_constant_table",
    "constant_candidates",
    "estimate_policy_value",
    "evaluate_policies",
    "fit_q",
    "format_table",
    "make_estimator",
    "plot_report",
    "prepare",
    "quoted_ci",
    "recommend",
    "report_to_dict",
    "scott_bandwidth",
]
