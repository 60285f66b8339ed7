"""The report's figures (matplotlib, Agg backend), each saved as a PNG.

Every function takes plain data (no pipeline objects) and a path, and returns the path written or
``None`` when there is nothing to draw.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from batchrl_mtf.core.io import atomic_write_bytes

__all__ = [
    "ope_figure",
    "segment_returns_figure",
    "segment_weights_figure",
    "table_figure",
    "training_figure",
    "weights_figure",
]

DPI = 110
PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"]
TRUTH_COLOR = "black"


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": 9, "axes.titlesize": 10, "axes.labelsize": 9})
    return plt


def _save(fig: Any, path: Path) -> Path:
    plt = _plt()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return path


def _grid(n: int, ncols: int) -> tuple[int, int]:
    ncols = max(1, min(ncols, n))
    return math.ceil(n / ncols), ncols


LOSS_LABELS = {
    "actor_loss": "actor loss",
    "critic_loss": "critic loss",
    "vae_loss": "VAE (behaviour model) loss",
    "imitator_loss": "imitator loss",
    "loss": "loss",
    "temp_loss": "temperature loss",
    "alpha_loss": "alpha loss",
    "value_loss": "value loss",
}


def training_figure(
    metrics: Mapping[str, Mapping[str, Sequence[float]]], tasks: Sequence[str], path: Path
) -> Path | None:
    """Training curves: each algorithm's losses, TD error, initial-state value, true return and
    the mean weight per task, against gradient steps.

    Args:
        metrics: Per algorithm, ``metrics.csv`` columns (``step``, losses, ...).
        tasks: Task names (for the ``action_mean_<task>`` columns).
        path: PNG to write.
    """
    panels: list[tuple[str, str, list[tuple[str, np.ndarray, np.ndarray, Any]]]] = []
    algos = list(metrics)
    colors = {a: PALETTE[i % len(PALETTE)] for i, a in enumerate(algos)}
    for algo in algos:
        cols = metrics[algo]
        step = np.asarray(cols.get("step", []), dtype=float)
        if step.size == 0:
            continue
        for key, label in LOSS_LABELS.items():
            if key in cols:
                panels.append(
                    (
                        f"{algo}: {label}",
                        "loss (train batches)",
                        [(algo, step, np.asarray(cols[key], float), colors[algo])],
                    )
                )
    shared = [
        ("td_error", "TD error on test sessions", "mean squared TD error"),
        (
            "initial_state_value",
            "Q at the first request (test sessions)",
            "discounted value (reward units)",
        ),
    ]
    for key, title, ylabel in shared:
        lines = [
            (
                a,
                np.asarray(metrics[a]["step"], float),
                np.asarray(metrics[a][key], float),
                colors[a],
            )
            for a in algos
            if key in metrics[a] and "step" in metrics[a]
        ]
        if lines:
            panels.append((title, ylabel, lines))
    true_lines = [
        (
            a,
            np.asarray(metrics[a]["step"], float),
            np.asarray(metrics[a]["true_return"], float),
            colors[a],
        )
        for a in algos
        if "true_return" in metrics[a]
    ]
    if true_lines:
        panels.append(("True return in the simulator", "mean session return", true_lines))
    if not panels and not algos:
        return None
    n_extra = len(algos)
    rows, ncols = _grid(len(panels) + n_extra, 3)
    plt = _plt()
    from matplotlib.ticker import MaxNLocator

    fig, axes = plt.subplots(rows, ncols, figsize=(4.4 * ncols, 2.9 * rows), squeeze=False)
    flat = list(axes.ravel())
    for ax, (title, ylabel, lines) in zip(flat, panels, strict=False):
        for label, x, y, color in lines:
            ax.plot(x, y, marker="o", ms=3, color=color, label=label)
            if title.startswith("True return"):
                lo = metrics[label].get("true_return_low")
                hi = metrics[label].get("true_return_high")
                if lo is not None and hi is not None:
                    ax.fill_between(
                        x,
                        np.asarray(lo, float),
                        np.asarray(hi, float),
                        color=color,
                        alpha=0.15,
                        linewidth=0,
                    )
        ax.set_title(title)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, nbins=6))
        ax.set_xlabel("gradient step")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        if len(lines) > 1 or title.startswith(("TD", "Q at", "True")):
            ax.legend(fontsize=8)
    task_colors = {t: PALETTE[i % len(PALETTE)] for i, t in enumerate(tasks)}
    for ax, algo in zip(flat[len(panels) :], algos, strict=False):
        cols = metrics[algo]
        x = np.asarray(cols.get("step", []), float)
        for t in tasks:
            if f"action_mean_{t}" in cols:
                ax.plot(
                    x,
                    np.asarray(cols[f"action_mean_{t}"], float),
                    marker="o",
                    ms=3,
                    color=task_colors[t],
                    label=f"w_{t}",
                )
        ax.set_title(f"{algo}: mean weight per task (test states)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, nbins=6))
        ax.set_xlabel("gradient step")
        ax.set_ylabel("fusion weight")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    for ax in flat[len(panels) + n_extra :]:
        ax.set_visible(False)
    fig.tight_layout()
    return _save(fig, path)


def ope_figure(
    policies: Sequence[str],
    estimates: Mapping[str, Mapping[str, tuple[float, float | None, float | None]]],
    estimators: Sequence[str],
    truth: Mapping[str, tuple[float, float, float]],
    ylabel: str,
    path: Path,
) -> Path:
    """Offline estimates with 95% intervals per policy and estimator; true values as diamonds.

    Args:
        policies: Policy names in display order.
        estimates: ``estimates[policy][estimator] = (value, low, high)``.
        estimators: Estimator names in display order.
        truth: ``truth[policy] = (mean, low, high)`` from the simulator (may be empty).
        ylabel: The y-axis label (the value's unit).
        path: PNG to write.
    """
    plt = _plt()
    series = list(estimators) + (["true value"] if truth else [])
    fig, ax = plt.subplots(figsize=(max(6.5, 1.25 * len(policies) + 2), 4.2))
    width = 0.8 / max(1, len(series))
    for j, name in enumerate(series):
        xs, ys, lo, hi = [], [], [], []
        for i, p in enumerate(policies):
            v = truth.get(p) if name == "true value" else estimates.get(p, {}).get(name)
            if v is None or v[0] is None or not math.isfinite(v[0]):
                continue
            xs.append(i - 0.4 + width * (j + 0.5))
            ys.append(v[0])
            lo.append(max(0.0, v[0] - v[1]) if v[1] is not None else 0.0)
            hi.append(max(0.0, v[2] - v[0]) if v[2] is not None else 0.0)
        if not xs:
            continue
        style: dict[str, Any] = (
            {"fmt": "D", "color": TRUTH_COLOR, "ms": 7}
            if name == "true value"
            else {"fmt": "o", "color": PALETTE[j % len(PALETTE)], "ms": 5}
        )
        ax.errorbar(xs, ys, yerr=[lo, hi], capsize=3, label=name, **style)
    ax.set_xticks(range(len(policies)))
    ax.set_xticklabels(policies, rotation=20, ha="right")
    ax.set_ylabel(ylabel)
    ax.set_title(
        "Offline estimates (95% bootstrap intervals)"
        + (" and true values (95% intervals)" if truth else "")
    )
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), title="estimator")
    fig.tight_layout()
    return _save(fig, path)


def weights_figure(
    samples: Mapping[str, np.ndarray],
    tasks: Sequence[str],
    low: Sequence[float],
    high: Sequence[float],
    references: Mapping[str, Sequence[float]],
    path: Path,
    caption_states: str,
) -> Path | None:
    """Distribution of each policy's weights per task (violins), with constant policies as lines.

    Args:
        samples: Policy name → weights on the evaluation states, shape (n, n_tasks).
        tasks: Task names.
        low: Lower bound per task.
        high: Upper bound per task.
        references: Constant policies (``production``, ``best-constant``) → weights per task.
        path: PNG to write.
        caption_states: Which states the weights were computed on (panel subtitle).
    """
    if not samples:
        return None
    plt = _plt()
    rows, ncols = _grid(len(tasks), 3)
    fig, axes = plt.subplots(rows, ncols, figsize=(4.0 * ncols, 2.8 * rows), squeeze=False)
    names = list(samples)
    ref_styles = ["--", ":", "-."]
    for k, (ax, task) in enumerate(zip(axes.ravel(), tasks, strict=False)):
        data = [np.asarray(samples[n])[:, k] for n in names]
        parts = ax.violinplot(data, positions=range(len(names)), showmedians=True, widths=0.8)
        for i, body in enumerate(parts["bodies"]):
            body.set_facecolor(PALETTE[i % len(PALETTE)])
            body.set_alpha(0.45)
        for key in ("cmedians", "cmins", "cmaxes", "cbars"):
            if key in parts:
                parts[key].set_color("0.3")
                parts[key].set_linewidth(1.0)
        for r, (label, w) in enumerate(references.items()):
            ax.axhline(w[k], color="0.25", ls=ref_styles[r % len(ref_styles)], lw=1.2, label=label)
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(names)
        ax.set_ylim(low[k] - 0.02 * (high[k] - low[k]), high[k] + 0.02 * (high[k] - low[k]))
        ax.set_title(f"w_{task}")
        ax.set_ylabel("fusion weight")
        ax.grid(axis="y", alpha=0.3)
        if k == 0 and references:
            ax.legend(fontsize=7, loc="upper right")
    for ax in list(axes.ravel())[len(tasks) :]:
        ax.set_visible(False)
    fig.suptitle(f"Weights per task ({caption_states})", y=1.0)
    fig.tight_layout()
    return _save(fig, path)


def segment_weights_figure(
    means: Mapping[str, Mapping[str, Sequence[float]]],
    tasks: Sequence[str],
    references: Mapping[str, Sequence[float]],
    segment_label: str,
    path: Path,
) -> Path | None:
    """Mean weight per task for each user segment, one panel per policy (grouped bars).

    Args:
        means: ``means[policy][segment] = weights per task``.
        tasks: Task names.
        references: Constant policies → weights per task (drawn as markers).
        segment_label: What a segment is (legend title), e.g. "hidden segment".
        path: PNG to write.
    """
    policies = [p for p in means if means[p]]
    if not policies:
        return None
    plt = _plt()
    rows, ncols = _grid(len(policies), 3)
    fig, axes = plt.subplots(rows, ncols, figsize=(4.6 * ncols, 3.2 * rows), squeeze=False)
    for ax, pol in zip(axes.ravel(), policies, strict=False):
        segs = list(means[pol])
        width = 0.8 / max(1, len(segs))
        x = np.arange(len(tasks))
        for j, seg in enumerate(segs):
            ax.bar(
                x - 0.4 + width * (j + 0.5),
                means[pol][seg],
                width,
                label=seg,
                color=PALETTE[j % len(PALETTE)],
            )
        for r, (label, w) in enumerate(references.items()):
            ax.scatter(
                x,
                w,
                marker="_" if r == 0 else "x",
                s=160 if r == 0 else 30,
                color="black",
                zorder=3,
                label=label,
            )
        ax.set_xticks(x)
        ax.set_xticklabels([f"w_{t}" for t in tasks], rotation=30, ha="right")
        ax.set_ylabel("mean fusion weight")
        ax.set_title(pol)
        ax.grid(axis="y", alpha=0.3)
    for ax in list(axes.ravel())[len(policies) :]:
        ax.set_visible(False)
    handles, labels = axes.ravel()[0].get_legend_handles_labels()
    fig.legend(
        handles,
        labels,
        title=f"bars: {segment_label}\nmarks: baselines",
        loc="upper left",
        bbox_to_anchor=(1.0, 0.95),
        fontsize=8,
    )
    fig.tight_layout()
    return _save(fig, path)


def segment_returns_figure(
    returns: Mapping[str, Mapping[str, tuple[float, float, float]]], path: Path
) -> Path | None:
    """True mean session return per hidden segment, grouped by segment, one bar per policy.

    Args:
        returns: ``returns[policy][segment] = (mean, low, high)``.
        path: PNG to write.
    """
    policies = list(returns)
    if not policies:
        return None
    segs: list[str] = []
    for p in policies:
        segs += [s for s in returns[p] if s not in segs]
    plt = _plt()
    fig, ax = plt.subplots(figsize=(max(6.5, 1.6 * len(segs) + 3), 3.8))
    width = 0.8 / len(policies)
    x = np.arange(len(segs))
    for j, p in enumerate(policies):
        vals = [returns[p].get(s, (math.nan, math.nan, math.nan)) for s in segs]
        m = np.array([v[0] for v in vals])
        err = np.array([[v[0] - v[1] for v in vals], [v[2] - v[0] for v in vals]])
        ax.bar(
            x - 0.4 + width * (j + 0.5),
            m,
            width,
            yerr=err,
            capsize=2,
            label=p,
            color=PALETTE[j % len(PALETTE)],
        )
    ax.set_xticks(x)
    ax.set_xticklabels(segs)
    ax.set_xlabel("hidden user segment (known to the simulator only)")
    ax.set_ylabel("true mean session return")
    ax.set_title("True value per user segment (95% intervals)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), title="policy")
    fig.tight_layout()
    return _save(fig, path)


def table_figure(
    key_names: Sequence[str],
    edges: Sequence[Sequence[float]],
    grid: np.ndarray,
    tasks: Sequence[str],
    default: Sequence[float],
    path: Path,
) -> Path | None:
    """The exported table as one heatmap per task over its (at most two) keys.

    Args:
        key_names: The table's keys (1 or 2 are drawn).
        edges: Edges per key.
        grid: Weights per cell, shape (cells of key 1, cells of key 2, n_tasks) (NaN = default).
        tasks: Task names.
        default: Default weights (cells without a row show them, hatched).
        path: PNG to write.
    """
    if len(key_names) not in (1, 2):
        return None
    plt = _plt()
    rows, ncols = _grid(len(tasks), 3)
    fig, axes = plt.subplots(rows, ncols, figsize=(4.0 * ncols, 3.2 * rows), squeeze=False)

    def labels(e: Sequence[float]) -> list[str]:
        b = [f"{x:.3g}" for x in e]
        if not b:
            return ["all"]
        return [f"< {b[0]}"] + [f"[{b[i]}, {b[i + 1]})" for i in range(len(b) - 1)] + [f"≥ {b[-1]}"]

    g = grid if grid.ndim == 3 else grid[:, None, :]
    for k, (ax, task) in enumerate(zip(axes.ravel(), tasks, strict=False)):
        z = g[:, :, k]
        filled = np.where(np.isnan(z), default[k], z)
        im = ax.imshow(filled.T, origin="lower", aspect="auto", cmap="viridis")
        lo, hi = float(np.nanmin(filled)), float(np.nanmax(filled))
        for i in range(z.shape[0]):
            for j in range(z.shape[1]):
                txt = f"{filled[i, j]:.2f}" + ("*" if np.isnan(z[i, j]) else "")
                light = hi > lo and (filled[i, j] - lo) / (hi - lo) > 0.6  # viridis is light on top
                ax.text(
                    i,
                    j,
                    txt,
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="black" if light else "white",
                )
        ax.set_xticks(range(z.shape[0]))
        ax.set_xticklabels(labels(edges[0]), rotation=30, ha="right", fontsize=7)
        ax.set_xlabel(key_names[0])
        if len(key_names) == 2:
            ax.set_yticks(range(z.shape[1]))
            ax.set_yticklabels(labels(edges[1]), fontsize=7)
            ax.set_ylabel(key_names[1])
        else:
            ax.set_yticks([])
        ax.set_title(f"w_{task}")
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    for ax in list(axes.ravel())[len(tasks) :]:
        ax.set_visible(False)
    fig.suptitle(
        "Exported weight table: weight per bucket (colour scale per panel; "
        "* = no row, the default applies)",
        y=1.0,
    )
    fig.tight_layout()
    return _save(fig, path)
