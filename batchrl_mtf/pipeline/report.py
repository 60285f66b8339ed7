"""The run report: ``report.md``, ``report.html`` (self-contained) and ``figures/*.png``.

Sections: verdict, data, training, offline evaluation (with true values when a simulator is
known), learned weights per task and per user segment, the exported table, timing, the resolved
configuration. ``headline.md`` holds the summary table and verdict the command line prints.

The report only reads what the stages wrote (JSON, CSV, npz, the weight table's file); it loads no
dataset and runs no policy: the evaluate and export stages write the weights it plots
(``weights.npz``, ``weights.json``).
"""

from __future__ import annotations

import csv
import json
import logging
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from batchrl_mtf.core.io import atomic_write_text, dumps_json
from batchrl_mtf.core.version import __version__
from batchrl_mtf.ope.paired import paired_difference
from batchrl_mtf.pipeline import figures
from batchrl_mtf.pipeline.document import Document
from batchrl_mtf.pipeline.glue import load_npz, stage_json_or_none
from batchrl_mtf.pipeline.selecting import selection_lines
from batchrl_mtf.serving import WeightTable

if TYPE_CHECKING:
    from batchrl_mtf.pipeline.context import Context

__all__ = ["verdict_lines", "write_report"]

logger = logging.getLogger("batchrl_mtf.pipeline")


def _num(x: Any, digits: int = 4) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    return f"{float(x):.{digits}g}"


def _ci(v: Any, lo: Any, hi: Any, digits: int = 4) -> str:
    if lo is None or hi is None:
        return _num(v, digits)
    return f"{_num(v, digits)} [{_num(lo, digits)}, {_num(hi, digits)}]"


def _signed(d: float, lo: float, hi: float) -> str:
    half = (hi - lo) / 2
    return f"{d:+.3g} ± {half:.2g} [{lo:+.3g}, {hi:+.3g}]"


def _metrics(path: Path) -> dict[str, list[float]]:
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    cols: dict[str, list[float]] = {}
    for row in rows:
        for k, v in row.items():
            try:
                cols.setdefault(k, []).append(float(v))
            except (TypeError, ValueError):
                cols.setdefault(k, []).append(math.nan)
    return cols


def verdict_lines(ctx: Context) -> list[str]:
    """The verdict: the learned policy against production, offline and (when known) true."""
    cfg = ctx.config
    learned = cfg.learned
    ope = stage_json_or_none(ctx.folder("evaluate") / "ope.json") or {}
    summary = stage_json_or_none(ctx.folder("evaluate") / "summary.json") or {}
    pol = next((p for p in ope.get("policies", []) if p["name"] == learned), None)
    lines = []
    vs = summary.get("vs_production", {}).get(learned, {})
    if pol is not None and vs.get("estimator"):
        est = vs["estimator"]
        d = vs["by_estimator"].get(est)
        if d is not None:
            diff, (lo, hi) = d["diff"], d["ci"]
            n = ope.get("n_sessions")
            tail = f"by estimator {est} (paired 95% interval over {n} {ope.get('split')} sessions)"
            if lo > 0:
                lines.append(f"**{learned} beats production** by {_signed(diff, lo, hi)} {tail}.")
            elif hi < 0:
                lines.append(
                    f"**{learned} does worse than production** by {_signed(diff, lo, hi)} {tail}."
                )
            else:
                lines.append(
                    f"**{learned} does not beat production**: {_signed(diff, lo, hi)} {tail}; "
                    "the interval includes 0."
                )
    truth = (
        stage_json_or_none(ctx.folder("truth") / "values.json") if cfg.truth is not None else None
    )
    if truth is not None:
        with np.load(ctx.folder("truth") / "rollouts.npz") as z:
            a, b = z.get(f"returns|{learned}"), z.get("returns|production")
            if a is not None and b is not None:
                d, lo, hi = paired_difference(a, b)
                word = "beats" if lo > 0 else ("does worse than" if hi < 0 else "does not beat")
                lines.append(
                    f"In the simulator ({truth['env']}, {truth['sessions']} fresh sessions, the "
                    f"same users for every policy) {learned} **{word} production**: true "
                    f"difference {_signed(d, lo, hi)} in mean session return."
                )
        fid = stage_json_or_none(ctx.folder("export") / "fidelity.json") or {}
        tt = fid.get("truth_table_vs_production")
        if tt is not None:
            lo, hi = tt["ci"]
            word = "beats" if lo > 0 else ("does worse than" if hi < 0 else "does not beat")
            lines.append(
                f"The exported table `{fid.get('table')}` {word} production in the simulator: "
                f"{_signed(tt['diff'], lo, hi)}."
            )
    if not lines:
        lines.append(f"No verdict: production or {learned} was not evaluated.")
    return lines + selection_lines(ctx)


def _ope_rows(ctx: Context) -> tuple[list[str], list[list[str]], dict[str, Any]]:
    """Header and rows of the OPE table (+ the values the figure needs)."""
    cfg = ctx.config
    ope = stage_json_or_none(ctx.folder("evaluate") / "ope.json")
    summary = stage_json_or_none(ctx.folder("evaluate") / "summary.json") or {}
    truth = (
        stage_json_or_none(ctx.folder("truth") / "values.json") if cfg.truth is not None else None
    )
    fid = stage_json_or_none(ctx.folder("export") / "fidelity.json") or {}
    ests = list(ope["estimators"])
    header = ["policy", *[f"{e} [95% CI]" for e in ests], "Δ vs production (offline)"]
    if truth is not None:
        header += ["true value [95% CI]", "true Δ vs production"]
    rows: list[list[str]] = []
    fig_est: dict[str, dict[str, tuple[float, Any, Any]]] = {}
    fig_truth: dict[str, tuple[float, float, float]] = {}
    names = [p["name"] for p in ope["policies"]]
    tp = fid.get("table")
    prod_returns = None
    if truth is not None:
        arrays = {
            k: v
            for stage in ("truth", "export")
            for k, v in load_npz(ctx.folder(stage) / "rollouts.npz").items()
            if k.startswith("returns|")
        }
        prod_returns = arrays.get("returns|production")

    def truth_cells(name: str, value: Any) -> list[str]:
        if truth is None:
            return []
        if value is None:
            return ["–", "–"]
        r = value["return"]
        fig_truth[name] = (r["mean"], r["ci95"][0], r["ci95"][1])
        cells = [_ci(r["mean"], *r["ci95"])]
        a = arrays.get(f"returns|{name}")
        if name == "production" or a is None or prod_returns is None:
            cells.append("–")
        else:
            d, lo, hi = paired_difference(a, prod_returns)
            cells.append(_signed(d, lo, hi))
        return cells

    vs = summary.get("vs_production", {})
    for p in ope["policies"]:
        name = p["name"]
        rec = (p.get("recommended") or {}).get("estimator")
        cells = [f"**{name}**" if name == cfg.learned else name]
        fig_est[name] = {}
        for e in ests:
            est = p["estimates"].get(e)
            if est is None:
                cells.append("–")
                continue
            ci = est.get("ci") or [None, None]
            if e == rec:  # the quoted interval: with the calibrated model error (docs/ope.md)
                ci = (p.get("recommended") or {}).get("ci") or ci
            fig_est[name][e] = (est["value"], ci[0], ci[1])
            mark = " ★" if e == rec else ""
            cells.append(_ci(est["value"], ci[0], ci[1]) + mark)
        common = vs.get(name, {}).get("estimator")
        d = vs.get(name, {}).get("by_estimator", {}).get(common) if common else None
        cells.append("–" if d is None else f"{_signed(d['diff'], *d['ci'])} ({common})")
        cells += truth_cells(name, (truth or {}).get("policies", {}).get(name))
        rows.append(cells)
    if tp and fid.get("ope_table") is not None:
        t = fid["ope_table"]
        e = t["estimator"]
        ci = t.get("quoted_ci") or t.get("ci") or [None, None]
        fig_est[tp] = {e: (t["value"], ci[0], ci[1])}
        cells = [tp] + [(_ci(t["value"], ci[0], ci[1]) if x == e else "–") for x in ests]
        d = fid.get("ope_table_vs_production")
        cells.append("–" if d is None else f"{_signed(d['diff'], *d['ci'])} ({e}, normal approx.)")
        cells += truth_cells(tp, fid.get("truth_table"))
        rows.append(cells)
        names.append(tp)
    elif tp and truth is not None and fid.get("truth_table") is not None:
        rows.append([tp] + ["–"] * (len(ests) + 1) + truth_cells(tp, fid["truth_table"]))
        names.append(tp)
    return (
        header,
        rows,
        {"names": names, "est": fig_est, "truth": fig_truth, "ests": ests, "gamma": ope["gamma"]},
    )


def _headline(ctx: Context, header: list[str], rows: list[list[str]], verdict: list[str]) -> str:
    """The short table printed at the end of a run (Markdown)."""
    keep = [i for i, h in enumerate(header) if h.startswith(("true value", "Δ", "true Δ"))]
    head = ["policy", "offline estimate ★ [95% CI]"] + [header[i] for i in keep]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        rec = "–"
        for i, cell in enumerate(r[1:], 1):
            if cell.endswith("★") or (
                rec == "–" and cell != "–" and header[i].endswith("[95% CI]")
            ):
                rec = f"{cell.rstrip(' ★')} ({header[i].split(' ')[0]})"
                if cell.endswith("★"):
                    break
        lines.append("| " + " | ".join([r[0], rec] + [r[i] for i in keep]) + " |")
    return "\n".join(lines) + "\n\n" + "\n".join(verdict) + "\n"


def _data_section(doc: Document, ctx: Context) -> None:
    rep = stage_json_or_none(ctx.folder("dataset") / "report.json")
    acc = rep["accounting"]
    doc.heading("Data")
    sim = ctx.records.get("simulate")
    if sim is not None:
        s = sim.summary
        doc.para(
            f"Logs simulated with `{s.get('env')}`: {s.get('sessions')} sessions under the "
            f"`{s.get('policy')}` logging policy (seed {s.get('seed')}), mean session return "
            f"{_num(s.get('mean_return'))}."
        )
    else:
        doc.para("Logs: " + ", ".join(f"`{p}`" for p in ctx.config.data.logs))
    rows = []
    for what in ("sessions", "requests", "rows"):
        a = acc[what]
        dropped = ", ".join(f"{k}: {v}" for k, v in a["dropped"].items()) or "none"
        rows.append([what, str(a["read"]), str(a["kept"]), dropped])
    doc.table(["", "read", "kept", "dropped (by reason)"], rows)
    ep = rep["episodes"]
    rw = rep["reward"]
    pr, ps = rw["per_request"], rw["session_return"]
    doc.table(
        ["reward part", "mean per request", "sd per request", "max per request"],
        [
            [k, _num(pr[k]["mean"]), _num(pr[k]["std"]), _num(pr[k]["max"])]
            for k in ("stickiness", "activeness", "reward")
        ],
    )
    spec = json.loads((ctx.folder("dataset") / "features.json").read_text(encoding="utf-8"))
    doc.bullets(
        [
            f"Session return: mean {_num(ps['mean'])}, sd {_num(ps['std'])}, max {_num(ps['max'])}; "
            f"session length mean {_num(ep['mean_length'])} requests (max {ep['max_length']}); "
            f"{ep['terminal']} sessions end with the user leaving, {ep['timeout']} cut by the log "
            "window.",
            f"Reward: {ctx.config.reward_source}: stickiness "
            + ", ".join(f"{k} × {v:g}" for k, v in ctx.config.reward.stickiness.items())
            + "; activeness "
            + ", ".join(f"{k} × {v:g}" for k, v in ctx.config.reward.activeness.items())
            + ".",
            f"Tasks ({len(spec['tasks'])}): {', '.join(spec['tasks'])}; weight bounds "
            f"[{_num(min(spec['action_low']))}, {_num(max(spec['action_high']))}]; "
            f"{len(spec['features']['names'])} state features; behavior_logp "
            f"{'logged' if spec['has_behavior_logp'] else 'not logged'}.",
            f"Problems found in the logs: {len(rep.get('problems', []))}.",
        ]
    )


def _training_section(doc: Document, ctx: Context, figdir: Path, tasks: list[str]) -> None:
    doc.heading("Training")
    metrics = {}
    rows = []
    for algo in ctx.config.train.algos:
        folder = ctx.folder(f"train:{algo}")
        m = _metrics(folder / "metrics.csv")
        metrics[algo] = m
        man = stage_json_or_none(folder / "policy.json") or {}
        last = {k: v[-1] for k, v in m.items() if v}
        rows.append(
            [
                algo,
                str(man.get("preset", "")),
                str(man.get("n_steps_done", "")),
                _num(man.get("training_seconds"), 3),
                _num(last.get("td_error")),
                _num(last.get("initial_state_value")),
                _num(last.get("true_return")),
            ]
        )
    doc.table(
        [
            "algorithm",
            "preset",
            "gradient steps",
            "train seconds",
            "final TD error",
            "final initial-state value",
            "final true return",
        ],
        rows,
    )
    path = figures.training_figure(metrics, tasks, figdir / "training.png")
    doc.figure(
        path,
        "Training curves per epoch (`metrics.csv`): losses on training batches, TD error and "
        "Q-value at the first request on the held-out test sessions (Q-learning algorithms only), "
        "the true return in the simulator when `[train] env` is set, and the mean weight the "
        "policy gives each task on test states.",
    )


def _weights_section(
    doc: Document, ctx: Context, figdir: Path, spec: dict[str, Any], refs: dict[str, list[float]]
) -> None:
    """Weights per task and per segment, from the evaluate and export stages' ``weights.npz``."""
    cfg = ctx.config
    tasks = list(spec["tasks"])
    evaluated = load_npz(ctx.folder("evaluate") / "weights.npz")
    exported = load_npz(ctx.folder("export") / "weights.npz")
    prefix = "actions|"
    samples = {a: evaluated[prefix + a] for a in cfg.train.algos}
    samples.update({k[len(prefix) :]: v for k, v in exported.items() if k.startswith(prefix)})
    n_states = len(evaluated["index"])
    fid = stage_json_or_none(ctx.folder("export") / "fidelity.json") or {}
    doc.heading("Learned weights")
    path = figures.weights_figure(
        samples,
        tasks,
        spec["action_low"],
        spec["action_high"],
        refs,
        figdir / "weights_by_task.png",
        f"{n_states} test states",
    )
    doc.figure(
        path,
        f"Distribution of each policy's fusion weights per task over {n_states} test states "
        "(violins with medians); lines: the constant baselines.",
    )
    truth = (
        stage_json_or_none(ctx.folder("truth") / "values.json") if cfg.truth is not None else None
    )
    label, caption, means = _segment_means(ctx, samples, tasks, truth, fid, exported)
    path = figures.segment_weights_figure(
        means, tasks, refs, label, figdir / "weights_by_segment.png"
    )
    doc.figure(path, caption)
    rows = [[p, s, *[_num(x, 3) for x in w]] for p, segs in means.items() for s, w in segs.items()]
    doc.table(["policy", label, *[f"w_{t}" for t in tasks]], rows)
    if truth is not None:
        _truth_by_segment(doc, ctx, figdir, truth, fid)


def _segment_means(
    ctx: Context,
    samples: dict[str, np.ndarray],
    tasks: list[str],
    truth: dict[str, Any] | None,
    fid: dict[str, Any],
    exported: dict[str, np.ndarray],
) -> tuple[str, str, dict[str, dict[str, list[float]]]]:
    """Mean weight per task per hidden segment (from the rollouts) or, without a simulator, per
    tertile bucket of the export stage's chosen user feature: ``(label, caption, means)``."""
    means: dict[str, dict[str, list[float]]] = {}
    if truth is not None:
        caption = (
            "Mean fusion weight per task by **hidden user segment**, from the simulator rollouts "
            f"of `[truth]` ({truth['sessions']} sessions): the simulator knows each user's "
            "segment; the dataset does not."
        )
        pols = [*ctx.config.train.algos]
        sources = dict(truth["policies"])
        if fid.get("truth_table"):
            pols.append(fid["table"])
            sources[fid["table"]] = fid["truth_table"]
        for p in pols:
            wbs = sources.get(p, {}).get("weights_by_segment", {})
            means[p] = {s: [wbs[s][f"w_{t}"] for t in tasks] for s in truth["segments"] if s in wbs}
        return "hidden segment", caption, means
    buckets = stage_json_or_none(ctx.folder("export") / "weights.json") or {}
    feat, names = buckets["feature"], buckets["buckets"]
    caption = (
        f"Mean fusion weight per task by **tertile of `{feat}`** on test states (the dataset "
        "has no user segments; this is the user feature the learned policy's weights depend "
        "on most, by R² of a 3-bucket split)."
    )
    cell = exported["cell"]
    for p, w in samples.items():
        means[p] = {
            names[c]: list(w[cell == c].mean(axis=0))
            for c in range(len(names))
            if (cell == c).any()
        }
    return f"{feat} bucket", caption, means


def _truth_by_segment(
    doc: Document, ctx: Context, figdir: Path, truth: dict[str, Any], fid: dict[str, Any]
) -> None:
    """The figure of each policy's true return per hidden segment."""
    ret: dict[str, dict[str, tuple[float, float, float]]] = {}
    sources = dict(truth["policies"])
    if fid.get("truth_table"):
        sources[fid["table"]] = fid["truth_table"]
    order = [p for p in _ope_order(ctx) if p in sources]
    for p in order + [p for p in sources if p not in order]:
        by = sources[p].get("by_segment", {})
        ret[p] = {
            s: (by[s]["return"]["mean"], *by[s]["return"]["ci95"])
            for s in truth["segments"]
            if s in by
        }
    path = figures.segment_returns_figure(ret, figdir / "truth_by_segment.png")
    doc.figure(path, "True mean session return per hidden user segment (simulator).")


def _ope_order(ctx: Context) -> list[str]:
    ope = stage_json_or_none(ctx.folder("evaluate") / "ope.json") or {}
    fid = stage_json_or_none(ctx.folder("export") / "fidelity.json") or {}
    return [p["name"] for p in ope.get("policies", [])] + ([fid["table"]] if "table" in fid else [])


def _export_section(doc: Document, ctx: Context, figdir: Path) -> None:

    folder = ctx.folder("export")
    table = WeightTable.load(folder / "weight_table.json")
    fid = stage_json_or_none(folder / "fidelity.json") or {}
    f = fid.get("fidelity", {})
    doc.heading("Exported weight table")
    export_meta = table.meta.get("export", {}) if isinstance(table.meta, dict) else {}
    r2 = (export_meta.get("keys_auto") or {}).get("r2", {})
    keys = ", ".join(
        f"`{k.name}` (edges {', '.join(_num(e, 3) for e in k.edges)}"
        + (f"; R² {r2[k.name]:.3f}" if k.name in r2 else "")
        + ")"
        for k in table.keys
    )
    gap = f.get("action_gap", {})
    items = [
        f"Policy `{fid.get('policy')}` tabulated on {keys or 'no key'}: {len(table.rows)} rows; "
        f"default (no row) = " + ", ".join(f"{x:.3g}" for x in table.default) + ".",
        f"Files: `{folder / 'weight_table.json'}` (format `batchrl-mtf/weight-table@1`) and its "
        f"CSV twin `{folder / 'weight_table.csv'}`.",
        f"Action gap (table vs network on every dataset state): mean |Δw| / range = "
        f"{_num(gap.get('mean_abs_scaled'), 3)}.",
    ]
    for label, cmp in (("Offline", f.get("ope")), ("True", f.get("true"))):
        if cmp:
            items.append(
                f"{label} value ({cmp['source']}): network {_num(cmp['network'])}, table "
                f"{_num(cmp['table'])}, value lost {_num(cmp['value_lost'], 3)}."
            )
    doc.bullets(items)
    tasks = list(table.tasks)
    header = [*[f"{k.name}" for k in table.keys], *[f"w_{t}" for t in tasks], "support"]
    rows = []
    for row in table.rows:
        bounds = [_interval(lo, hi) for lo, hi in row.bounds]
        rows.append(bounds + [f"{w:.3f}" for w in row.weights] + [str(row.support)])
    doc.table(header, rows)
    if 1 <= len(table.keys) <= 2:
        shape = [len(k.edges) + 1 for k in table.keys]
        grid = np.full((*shape, len(tasks)), np.nan)
        for row in table.rows:
            idx = tuple(
                0 if lo is None else list(k.edges).index(lo) + 1
                for k, (lo, _hi) in zip(table.keys, row.bounds, strict=True)
            )
            grid[idx] = row.weights
        path = figures.table_figure(
            [k.name for k in table.keys],
            [k.edges for k in table.keys],
            grid,
            tasks,
            table.default,
            figdir / "table.png",
        )
        doc.figure(path, "The exported table: weight per task in each bucket of the keys.")


def _interval(lo: float | None, hi: float | None) -> str:
    a = "(−∞" if lo is None else f"[{lo:.3g}"
    b = "+∞" if hi is None else f"{hi:.3g}"
    return f"{a}, {b})"


def _offline_section(
    doc: Document,
    ctx: Context,
    figdir: Path,
    summary: dict[str, Any],
    header: list[str],
    rows: list[list[str]],
    fig: dict[str, Any],
) -> None:
    """The OPE table and figure, with what production and the best constant are."""
    doc.heading("Offline evaluation")
    ope = stage_json_or_none(ctx.folder("evaluate") / "ope.json")
    gamma = float(ope["gamma"])
    unit = "mean session return" if gamma == 1.0 else f"discounted session return (γ = {gamma:g})"
    prod_src = summary.get("production", {}).get("source", "")
    bc = summary.get("best_constant")
    doc.para(
        f"Estimated on {ope['n_sessions']} `{ope['split']}` sessions ({ope['n_requests']} "
        f"requests); unit: {unit}. ★ = the recommended estimate (first of "
        f"{', '.join(ope['config']['recommend_order'])} that is finite and, for pure importance "
        "sampling (pdis, wpdis), has enough effective sample size). Δ = difference to production on the same "
        "sessions by the first estimator in that order that is valid for both policies, with a "
        "paired 95% bootstrap interval. `production` = "
        f"{', '.join(f'{w:.3g}' for w in summary.get('production', {}).get('weights', []))} "
        f"({prod_src})"
        + (
            f"; `best-constant` = {', '.join(f'{w:.3g}' for w in bc['weights'])} (best of "
            f"{bc['candidates']} logged-action candidates by {bc['estimator']} on the "
            f"`{bc['split']}` sessions)"
            if bc
            else ""
        )
        + "."
    )
    doc.table(header, rows)
    path = figures.ope_figure(
        fig["names"], fig["est"], fig["ests"], fig["truth"], unit, figdir / "ope.png"
    )
    doc.figure(
        path,
        "Each policy's offline estimates (coloured, 95% bootstrap intervals over sessions)"
        + (
            " and its true value in the simulator (black diamonds, 95% interval)"
            if fig["truth"]
            else ""
        )
        + ".",
    )


def write_report(ctx: Context, folder: Path) -> None:
    """Write ``report.md``, ``report.html``, ``headline.md`` and ``figures/`` into ``folder``."""
    cfg = ctx.config
    figdir = folder / "figures"
    figdir.mkdir(parents=True, exist_ok=True)
    spec = stage_json_or_none(ctx.folder("dataset") / "features.json")
    tasks = list(spec["tasks"])
    summary = stage_json_or_none(ctx.folder("evaluate") / "summary.json") or {}
    refs = {"production": summary["production"]["weights"]} if "production" in summary else {}
    if "best_constant" in summary:
        refs["best-constant"] = summary["best_constant"]["weights"]

    doc = Document(f"batchrl-mtf run: {Path(cfg.source).name if cfg.source else 'pipeline'}")
    verdict = verdict_lines(ctx)
    doc.heading("Verdict")
    for line in verdict:
        doc.para(line, "verdict")
    header, rows, fig = _ope_rows(ctx)
    total = sum(r.seconds for r in ctx.records.values())
    doc.para(
        f"Run by `{ctx.label or 'batchrl-mtf run'}` with batchrl-mtf {__version__}; stages took "
        f"{total:.0f} s in all when they ran (see *Timing*). Folder: `{ctx.out}`."
    )
    _data_section(doc, ctx)
    _training_section(doc, ctx, figdir, tasks)

    _offline_section(doc, ctx, figdir, summary, header, rows, fig)
    _weights_section(doc, ctx, figdir, spec, refs)
    _export_section(doc, ctx, figdir)

    doc.heading("Timing")
    rows_t = [
        [r.name, "ran" if r.status == "ran" else "skipped (unchanged)", f"{r.seconds:.1f}"]
        for r in ctx.records.values()
    ]
    doc.table(["stage", "this run", "seconds (when it ran)"], rows_t)
    doc.heading("Resolved configuration")
    doc.code(dumps_json(cfg.to_dict()), "json")
    doc.heading("Files")
    doc.bullets(
        [
            f"`{ctx.folder('dataset')}`: the MDP dataset (`batchrl-mtf train` takes it)",
            *[f"`{ctx.folder(f'train:{a}')}`: the {a} policy" for a in cfg.train.algos],
            f"`{ctx.folder('evaluate') / 'ope.json'}`: the OPE report (`batchrl-mtf/ope-report@1`)",
            f"`{ctx.folder('export') / 'weight_table.json'}`: the weight table",
            *(
                [f"`{ctx.folder('select')}`: the selection (`selection.json`, `table.json`)"]
                if cfg.select is not None
                else []
            ),
            "each stage folder's `stage.json`: its input hash, output hash and timing",
        ]
    )

    atomic_write_text(folder / "report.md", doc.markdown(folder))
    atomic_write_text(folder / "report.html", doc.html())
    atomic_write_text(folder / "headline.md", _headline(ctx, header, rows, verdict))
    logger.info("report: %s", folder / "report.html")
