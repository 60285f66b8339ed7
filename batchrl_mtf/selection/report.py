"""What ``select`` writes: the public contract of its output directory (``docs/selection.md``).

``DIR/``

* ``table.json``: the chosen table (``weight-table@1``; production's weights as a key-less table
  when production is chosen);
* ``selection.json`` (``batchrl-mtf/selection@1``; extra keys may be added, none removed)::

    {"format": "batchrl-mtf/selection@1", "dataset": "...", "dataset_hash": "sha256:...",
     "split": "test", "n_sessions": 6000, "gamma": 1.0,
     "production": {"w_click": 1.0, ...},
     "candidates": [{"name": "production", "policy": null, "trust_step": null,
                     "table": "candidates/production.json",
                     "estimate": {"estimator": "dr", "value": 15.2, "lower": 14.9, "upper": 15.5},
                     "gain": null, "support": {...}, "skipped": null},
                    {"name": "td3bc-alpha2.5-s0-tr0.5", "policy": "td3bc-alpha2.5-s0",
                     "trust_step": 0.5, "table": "candidates/td3bc-alpha2.5-s0-tr0.5.json",
                     "estimate": {...},
                     "gain": {"estimator": "dr", "gain": 1.3, "lower": 0.4, "upper": 2.1},
                     "support": {...}, "skipped": null}, ...],
     "chosen": {"name": "td3bc-alpha2.5-s0-tr0.5", "estimator": "dr", "estimate": 16.5,
                "lower": 16.1, "upper": 16.9, "gain": {...}, "reason": "..."},
     "rule": "...", "config": {...}, "versions": {...}}

  ``estimate`` is the candidate's policy value with its (unpaired) 95% interval; ``gain`` its
  difference to production on the same sessions with the paired 95% interval, by the first
  estimator valid for both (the one the rule uses); ``chosen.lower``/``chosen.upper`` bound the
  chosen policy's value (with ``bound = "all-estimators"``, ``chosen.lower`` is the estimate's
  lower end less the gap between the recommended estimator's paired bound and the rule's
  bound). ``gain.by_estimator`` (added later, optional) holds the same paired gain by every
  estimator valid for both policies (``{"fqe": {"gain", "lower", "upper"}, ...}``).
  ``baseline`` (added 2026-12-04, optional) is ``{"name", "reason", "estimate"}``: what the rule
  measured the gains against, ``production``, or ``logged`` (the logging policy) when
  production's own weights leave the logged support; then every candidate (and ``chosen``) also
  has ``baseline_gain``, the same object as ``gain`` over the logging policy, which the rule
  used (``gain`` stays over production, an extrapolation there). Files without it were written
  with the production baseline.
  ``skipped`` names why a candidate was not evaluated (the time budget).
* ``selection.md``: the same, for people;
* ``timing.json``: wall-clock seconds per candidate (kept out of ``selection.json`` so that it
  is reproducible);
* ``candidates/``: every candidate's table and each trained policy's directory.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from batchrl_mtf.core.io import atomic_write_text, dumps_json, package_versions
from batchrl_mtf.data.transitions import Transitions
from batchrl_mtf.errors import ConfigError
from batchrl_mtf.selection.config import SelectConfig
from batchrl_mtf.selection.rule import value_lower

if TYPE_CHECKING:
    from batchrl_mtf.selection.workflow import SelectionResult

__all__ = ["RULE", "SELECTION_FORMAT", "check_out", "selection_doc", "write_selection"]

SELECTION_FORMAT = "batchrl-mtf/selection@1"

RULE = (
    "choose the candidate table with the highest lower bound of the paired 95% interval of its "
    "gain over the baseline on the held-out split (config.bound says whose bound: FQE's by "
    "default); production when no lower bound is above the margin (config.margin times the "
    "baseline's estimated value); the baseline is production, or the logging policy when "
    "production's weights leave the logged support (config.baseline)"
)


def check_out(out: Path) -> None:
    """Refuse ``out`` unless it is absent, empty, or a directory ``select`` wrote.

    Raises:
        ConfigError: ``out`` is a file, or a directory without a ``select`` ``selection.json``.
    """
    if not out.exists():
        return
    if not out.is_dir():
        raise ConfigError(f"--out {out}: exists and is not a directory; refusing to replace it")
    if not any(out.iterdir()):
        return
    marker = out / "selection.json"
    try:
        fmt = json.loads(marker.read_text(encoding="utf-8")).get("format")
    except (OSError, ValueError, AttributeError):
        fmt = None
    if fmt != SELECTION_FORMAT:
        raise ConfigError(
            f"--out {out}: exists and was not written by batchrl-mtf select (no {SELECTION_FORMAT} "
            "selection.json); refusing to replace it"
        )


def _table_path(name: str) -> str:
    return f"candidates/{name}.json"


def selection_doc(
    result: SelectionResult, config: SelectConfig, data: Transitions
) -> dict[str, Any]:
    """The ``selection.json`` document (module docstring)."""
    tasks = tuple(data.spec.tasks)
    cands = []
    for c in result.candidates:
        cands.append(
            {
                "name": c.name,
                "policy": c.policy,
                "trust_step": c.trust_step,
                "table": None if c.table is None else _table_path(c.name),
                "estimate": c.estimate,
                "gain": c.gain,
                "support": c.support,
                "skipped": c.skipped,
            }
        )
        if c.baseline_gain is not None:
            cands[-1]["baseline_gain"] = c.baseline_gain
    chosen = result.chosen
    est = chosen.estimate or {}
    gain_lower = (chosen.rule_gain or {}).get("lower", math.nan)
    lower = value_lower(est.get("lower"), gain_lower, result.choice.lower)
    test = data.select("test")
    chosen_doc: dict[str, Any] = {
        "name": chosen.name,
        "estimator": est.get("estimator"),
        "estimate": est.get("value"),
        "lower": lower,
        "upper": est.get("upper"),
        "gain": chosen.gain,
        "reason": result.choice.reason,
    }
    if chosen.baseline_gain is not None:
        chosen_doc["baseline_gain"] = chosen.baseline_gain
    return {
        "format": SELECTION_FORMAT,
        "dataset": str(data.path or ""),
        "dataset_hash": data.spec.dataset_hash,
        "split": "test",
        "n_sessions": int(test.n_sessions),
        "gamma": config.ope.gamma if config.ope.gamma is not None else data.spec.gamma,
        "production": {f"w_{t}": w for t, w in zip(tasks, result.production, strict=True)},
        "candidates": cands,
        "chosen": chosen_doc,
        "baseline": result.baseline,
        "rule": RULE,
        "config": config.to_dict(),
        "versions": package_versions(),
    }


def _f(x: object) -> str:
    if not isinstance(x, (int, float)) or not math.isfinite(x):
        return "-"
    return f"{x:.4g}"


def selection_markdown(doc: dict[str, Any]) -> str:
    """``selection.md``: the decision and the candidates' table."""
    ch = doc["chosen"]
    lines = [
        "# batchrl-mtf select",
        "",
        f"Dataset `{doc['dataset']}` ({doc['dataset_hash']}), judged on the held-out `test` split "
        f"({doc['n_sessions']} sessions, gamma {doc['gamma']}).",
        "",
        f"**Chosen: `{ch['name']}`**: estimated value {_f(ch['estimate'])} "
        f"(95% interval {_f(ch['lower'])} to {_f(ch['upper'])}, {ch['estimator']}).",
        "",
        f"Why: {ch['reason']}.",
        "",
        f"Rule: {doc['rule']}.",
        "",
    ]
    base = (doc.get("baseline") or {}).get("name", "production")
    if base != "production":
        be = doc["baseline"].get("estimate") or {}
        lines += [
            f"Baseline: {doc['baseline']['reason']}. The logging policy's value: "
            f"{_f(be.get('value'))} (95% interval {_f(be.get('lower'))} to "
            f"{_f(be.get('upper'))}, {be.get('estimator')}).",
            "",
        ]
    lines += [
        f"| candidate | value | lower | upper | gain over {base} | gain lower | gain upper "
        "| outside support |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for c in doc["candidates"]:
        if c["skipped"]:
            lines.append(f"| {c['name']} | skipped: {c['skipped']} | | | | | | |")
            continue
        e, s = c["estimate"] or {}, c["support"] or {}
        g = (c.get("baseline_gain") if base != "production" else c["gain"]) or {}
        share = s.get("outside_share")
        flag = " (flagged)" if s.get("flag") else ""
        lines.append(
            f"| {c['name']} | {_f(e.get('value'))} | {_f(e.get('lower'))} | {_f(e.get('upper'))} "
            f"| {_f(g.get('gain'))} | {_f(g.get('lower'))} | {_f(g.get('upper'))} "
            f"| {'-' if share is None else f'{share:.1%}'}{flag} |"
        )
    lines += [
        "",
        "Offline estimates are not A/B results: the lower bounds are the numbers to trust, and a "
        "candidate flagged for leaving the logged support is estimated by extrapolation.",
        "",
    ]
    return "\n".join(lines)


def write_selection(
    folder: Path, result: SelectionResult, config: SelectConfig, data: Transitions
) -> None:
    """Write ``table.json``, ``selection.json``, ``selection.md``, ``timing.json`` and every
    candidate's table into ``folder``."""
    (folder / "candidates").mkdir(parents=True, exist_ok=True)
    for c in result.candidates:
        if c.table is not None:
            c.table.save(folder / _table_path(c.name))
    result.chosen.table.save(folder / "table.json")  # type: ignore[union-attr]
    doc = selection_doc(result, config, data)
    atomic_write_text(folder / "selection.json", dumps_json(doc))
    atomic_write_text(folder / "selection.md", selection_markdown(doc))
    timing = {
        "seconds": result.seconds,
        "candidates": {c.name: c.seconds for c in result.candidates if c.skipped is None},
    }
    atomic_write_text(folder / "timing.json", dumps_json(timing))
