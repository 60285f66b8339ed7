"""The evaluation report: the public JSON contract, the printed table and the optional plot.

JSON (``batchrl-mtf/ope-report@1``; other tools read it; extra keys may be added, none removed)::

    {"format": "batchrl-mtf/ope-report@1", "gamma": 1.0, "n_sessions": 3000, "n_requests": 41000,
     "split": "test", "dataset": "<dir>", "dataset_hash": "sha256:...",
     "estimators": ["fqe", "wpdis", ...], "bandwidth": 0.08,
     "policies": [{"name": "<the --policy argument as given>",
                   "estimates": {"fqe": {"value": 21.3, "ci": [20.1, 22.4]},
                                 "wpdis": {"value": 20.8, "ci": [18.9, 22.9], "ess": 412.5}},
                   "recommended": {"estimator": "wdr", "value": 21.0, "ci": [15.5, 26.5],
                                   "lower": 15.5, "reason": "...",
                                   "sampling_ci": [19.9, 22.2], "model_error": 0.13},
                   "diagnostics": {"fqe_final_loss": 0.12, "fqe_steps": 2650.0},
                   "support": {"box": "q0.01-0.99", "low": [...], "high": [...],
                               "outside_share": 0.01, "outside_by_task": {"w_click": 0.0},
                               "flag": false}}],
     "ranking": ["<name of the best policy>", ...],
     "recommend_rule": "...", "config": {...}, "versions": {...}}

``ci`` is the 95% percentile bootstrap interval over sessions (``null`` with ``--n-bootstrap 0``);
``ess`` (importance-weighted estimators only) is Kish's effective sample size of the sessions'
trajectory weights; ``fit_se`` (``fqe``, ``cfqe``, ``dr``, ``wdr`` with ``fqe_n_fits >= 2``) is the
standard error over the FQE fits, already folded into ``ci``; ``diagnostics`` holds the final TD
loss and the gradient steps (mean over fits; fewer than the budget after an early stop) of the
``fqe`` and ``cfqe`` fits. ``recommended.ci`` is the recommended estimator's interval widened by the
relative model error ``recommended.model_error`` (``batchrl_mtf.ope.evaluate.quoted_ci``; its own
interval is ``recommended.sampling_ci``; both added 2026-12-03), and ``recommended.lower`` its lower
end, the number to quote next to the value (added in issue 16). ``support`` (not for ``behavior``; issue 16)
is the share of the policy's actions on the evaluated states outside the logged per-task quantile
box (``batchrl_mtf.ope.support``) and ``flag`` whether that exceeds ``support_max_outside``.
Non-finite numbers are written as ``null``.
"""

from __future__ import annotations

import math
from pathlib import Path

from batchrl_mtf.core.config import config_to_dict
from batchrl_mtf.core.io import atomic_write_bytes, package_versions
from batchrl_mtf.ope.evaluate import OPEResult

__all__ = ["RECOMMEND_RULE", "REPORT_FORMAT", "format_table", "plot_report", "report_to_dict"]

REPORT_FORMAT = "batchrl-mtf/ope-report@1"

RECOMMEND_RULE = (
    "first estimator in recommend_order with a finite value; pure importance-sampling "
    "estimators (pdis, wpdis) only when ESS >= max(min_ess, min_ess_fraction * n_sessions); "
    "doubly robust ones (dr, wdr) only when their interval is at most dr_max_ci_ratio times as "
    "wide as fqe's; else the first finite estimate in that order"
)


def report_to_dict(
    result: OPEResult, split: str | None = None, dataset: str = "", dataset_hash: str = ""
) -> dict[str, object]:
    """The report's JSON document (see the module docstring)."""
    policies = []
    for p in result.policies:
        doc: dict[str, object] = {
            "name": p.name,
            "estimates": {name: est.to_dict() for name, est in p.estimates.items()},
            "recommended": None if p.recommended is None else p.recommended.to_dict(),
        }
        if p.fqe_loss:
            doc["diagnostics"] = {
                **{f"{k}_final_loss": v for k, v in p.fqe_loss.items()},
                **{f"{k}_steps": v for k, v in p.fqe_steps.items()},
            }
        if p.support is not None:
            doc["support"] = p.support
        policies.append(doc)
    return {
        "format": REPORT_FORMAT,
        "gamma": float(result.gamma),
        "n_sessions": int(result.n_sessions),
        "n_requests": int(result.n_requests),
        "split": split or "all",
        "dataset": dataset,
        "dataset_hash": dataset_hash,
        "estimators": list(result.estimators),
        "bandwidth": result.bandwidth,
        "policies": policies,
        "ranking": list(result.ranking),
        "recommend_rule": RECOMMEND_RULE,
        "config": config_to_dict(result.config),
        "versions": package_versions(),
    }


def _fmt(x: float | None) -> str:
    if x is None or not math.isfinite(x):
        return "-"
    return f"{x:.4g}"


def format_table(result: OPEResult) -> str:
    """A plain-text table: one line per policy and estimator, recommended ones marked ``*``."""
    lines = [
        f"gamma={result.gamma:g}  sessions={result.n_sessions}  requests={result.n_requests}",
        f"{'policy':<36} {'estimator':<6} {'value':>10} {'ci_low':>10} {'ci_high':>10} {'ess':>8}",
    ]
    for p in result.policies:
        rec = p.recommended.estimator if p.recommended is not None else ""
        for name, est in p.estimates.items():
            lo, hi = est.ci if est.ci is not None else (None, None)
            mark = "*" if name == rec else " "
            label = p.name if len(p.name) <= 36 else "..." + p.name[-33:]
            lines.append(
                f"{label:<36} {name:<5}{mark} {_fmt(est.value):>10} {_fmt(lo):>10} "
                f"{_fmt(hi):>10} {_fmt(est.ess):>8}"
            )
    for p in result.policies:
        rec_ = p.recommended
        if rec_ is not None:
            lines.append(
                f"{p.name}: recommended {rec_.estimator} {_fmt(rec_.value)}, "
                f"lower bound {_fmt(rec_.lower)}"
            )
        if p.support is not None and p.support.get("flag"):
            share = float(p.support["outside_share"])  # type: ignore[arg-type]
            lines.append(
                f"WARNING {p.name}: {share:.0%} of its actions leave the logged support "
                f"(box {p.support['box']}); its estimates extrapolate"
            )
    lines.append("ranking: " + " > ".join(result.ranking))
    lines.append("* recommended estimate (" + RECOMMEND_RULE + ")")
    return "\n".join(lines)


def plot_report(result: OPEResult, path: str | Path) -> Path:
    """Save a PNG of every estimate with its interval, grouped by policy (matplotlib, Agg)."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [p.name for p in result.policies]
    n_est = len(result.estimators)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.2 * len(names) * max(1, n_est) / 2), 4.5))
    width = 0.8 / max(1, n_est)
    for j, est_name in enumerate(result.estimators):
        xs, ys, lo, hi = [], [], [], []
        for i, p in enumerate(result.policies):
            est = p.estimates.get(est_name)
            if est is None or not math.isfinite(est.value):
                continue
            xs.append(i - 0.4 + width * (j + 0.5))
            ys.append(est.value)
            c = est.ci if est.ci is not None else (est.value, est.value)
            lo.append(max(0.0, est.value - c[0]))
            hi.append(max(0.0, c[1] - est.value))
        ax.errorbar(xs, ys, yerr=[lo, hi], fmt="o", capsize=3, label=est_name)
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels([n if len(n) <= 24 else "..." + n[-21:] for n in names], rotation=30,
                       ha="right", fontsize=8)  # fmt: skip
    ax.set_ylabel(f"estimated value (gamma={result.gamma:g})")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)
