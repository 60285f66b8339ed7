"""The selection rule: the highest lower confidence bound of the gain over production.

Each candidate ``c`` has a paired estimate of its gain over production on the held-out sessions,
``g_c = V(c) - V(production)`` with a paired bootstrap interval ``[l_c, u_c]``
(:func:`batchrl_mtf.ope.paired.paired_vs`, the estimator both may quote). The rule:

1. candidates without a finite lower bound ``l_c`` are not eligible, nor (by default) those the
   support diagnostic flags (their actions leave the logged support, so their estimates are
   extrapolations: :mod:`batchrl_mtf.ope.support`);
2. with ``bound="fqe"`` (``SelectConfig``'s default since 2026-12-04) a candidate's bound is
   FQE's paired lower bound, the same estimator for every candidate (FQE runs on every log);
   with ``"recommended"`` it is the bound of the first estimator of the recommended order valid
   for both policies, which may be DR for one candidate and FQE for another (FQE's interval,
   narrower, then wins the comparison though it holds no more model error); with
   ``"all-estimators"`` it is the lowest of its paired lower bounds by every estimator valid for
   both policies (FQE, DR, WDR: ``Gain.by_estimator``), so that the disagreement between the
   model-based and the importance-weighted estimators counts against it;
3. the chosen candidate maximises ``l_c`` (ties: larger ``g_c``, then the earlier candidate);
4. when no ``l_c`` is above ``min_gain`` (default 0), nothing is reliably better than production:
   production is chosen (``reason`` says so). Trust-region steps are candidates of their own, so
   when the unconstrained table's bound is not above it but a smaller step's is, that step wins.

The baseline is production unless production itself leaves the logged support (its constant
weights fall outside the logged quantile box, e.g. logs of a uniform exploration that never
served production's weights): then its estimate is an extrapolation as well, the gains over it
mean nothing, and the gains are measured against the logging policy instead, whose value the held-out
sessions measure without a model (:data:`LOGGED`; ``SelectConfig.baseline``). Production stays
the fallback either way.

Choosing by the lower bound rather than the estimate discounts candidates whose estimate is
high only because it is uncertain (a policy far from the logs has a wide interval), the
selection analogue of the pessimism behind conservative offline RL.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from batchrl_mtf.errors import ConfigError

__all__ = [
    "BASELINES",
    "BOUNDS",
    "LOGGED",
    "PRODUCTION",
    "Choice",
    "Gain",
    "choose",
    "gain_from_doc",
    "margin_gain",
    "ranked_gain",
    "rule_lower",
    "value_lower",
]

PRODUCTION = "production"
"""The name of the production candidate."""

LOGGED = "logged"
"""The name of the logging policy when it is the baseline of the gains."""

BOUNDS = ("fqe", "recommended", "all-estimators")
"""The lower bounds :func:`choose` can rank by (module docstring, step 2)."""

BASELINES = ("auto", "production")
"""What the gains are measured against (``SelectConfig.baseline``): ``production`` always, or
with ``auto`` the logging policy when production's own actions leave the logged support."""

_BASELINE_WORDS = {PRODUCTION: "production", LOGGED: "the logging policy"}


@dataclass(frozen=True)
class Gain:
    """A candidate's paired gain over production.

    Attributes:
        name: The candidate.
        gain: Estimated gain ``V(candidate) - V(production)``.
        lower: Lower end of its paired interval (NaN when there is none).
        upper: Upper end.
        supported: Whether its actions stay in the logged support (not flagged).
        by_estimator: ``{estimator: (gain, lower, upper)}`` by every estimator valid for both
            policies (empty: only the recommended one is known).
    """

    name: str
    gain: float
    lower: float
    upper: float
    supported: bool = True
    by_estimator: Mapping[str, tuple[float, float, float]] = field(default_factory=dict)


def gain_from_doc(
    name: str, gain: Mapping[str, Any], support: Mapping[str, Any] | None = None
) -> Gain:
    """A :class:`Gain` from a candidate's ``gain`` and ``support`` objects as ``selection.json``
    writes them (``by_estimator`` optional: files written before it load)."""
    return Gain(
        name,
        float(gain["gain"]),
        float(gain["lower"]),
        float(gain["upper"]),
        supported=not (support or {}).get("flag", False),
        by_estimator={
            e: (float(d["gain"]), float(d["lower"]), float(d["upper"]))
            for e, d in (gain.get("by_estimator") or {}).items()
        },
    )


def margin_gain(margin: float, production_value: float | None) -> float:
    """The ``min_gain`` of :func:`choose` for ``SelectConfig.margin``: ``margin`` times
    production's estimated value (0 when production has no estimate)."""
    return margin * abs(production_value) if production_value is not None else 0.0


def value_lower(lower: float | None, gain_lower: float, rule_bound: float) -> float | None:
    """The chosen policy's value lower bound with the rule's model-error margin carried onto it:
    ``lower`` less how far the rule's bound (:attr:`Choice.lower`) is below the recommended
    estimator's paired ``gain_lower`` (unchanged when either is not finite, e.g. production)."""
    shift = gain_lower - rule_bound
    if lower is None or not math.isfinite(shift):
        return lower
    return lower - max(0.0, shift)


def ranked_gain(gain: Mapping[str, Any] | None, bound: str) -> dict[str, Any] | None:
    """The gain a ``selection.json`` ``gain`` object was ranked by under ``bound``: FQE's entry
    of ``gain.by_estimator`` (with ``"estimator": "fqe"``) for ``bound = "fqe"``, else ``gain``
    itself (``None`` passes through)."""
    if gain is None:
        return None
    fqe = (gain.get("by_estimator") or {}).get("fqe")
    if bound == "fqe" and fqe is not None:
        return {**fqe, "estimator": "fqe"}
    return dict(gain)


def rule_lower(g: Gain, bound: str = "recommended") -> float:
    """The lower bound :func:`choose` ranks ``g`` by (module docstring, step 2); NaN when an
    estimator's bound is not finite or (``fqe``) not there."""
    if bound == "recommended":
        return g.lower
    if bound == "fqe":
        fqe = g.by_estimator.get("fqe")
        return fqe[1] if fqe is not None else math.nan
    lows = [g.lower, *(lo for _, lo, _ in g.by_estimator.values())]
    return min(lows) if all(math.isfinite(x) for x in lows) else math.nan


@dataclass(frozen=True)
class Choice:
    """The outcome of :func:`choose`.

    Attributes:
        name: The chosen candidate, or :data:`PRODUCTION`.
        reason: Why, in words.
        lower: The chosen candidate's rule bound (:func:`rule_lower`; NaN for production).
    """

    name: str
    reason: str
    lower: float = math.nan


def choose(
    gains: Sequence[Gain],
    require_support: bool = True,
    bound: str = "recommended",
    min_gain: float = 0.0,
    baseline: str = PRODUCTION,
) -> Choice:
    """Apply the rule of the module docstring to the candidates' gains.

    Args:
        gains: One per candidate (production excluded), over ``baseline``.
        require_support: Leave out candidates whose actions leave the logged support.
        bound: Which lower bound ranks them, one of :data:`BOUNDS`.
        min_gain: A candidate is chosen only when its bound is above this (>= 0).
        baseline: What the gains are over: :data:`PRODUCTION` or :data:`LOGGED` (the reason's
            words; production is the fallback either way).

    Raises:
        ConfigError: An unknown ``bound`` or ``baseline``, or a negative ``min_gain``.
    """
    if bound not in BOUNDS:
        raise ConfigError(f"bound: expected one of {', '.join(BOUNDS)}, found {bound!r}")
    if baseline not in _BASELINE_WORDS:
        raise ConfigError(
            f"baseline: expected one of {', '.join(_BASELINE_WORDS)}, found {baseline!r}"
        )
    over = _BASELINE_WORDS[baseline]
    if not min_gain >= 0.0:
        raise ConfigError(f"min_gain: expected >= 0, found {min_gain}")
    lows = {g.name: rule_lower(g, bound) for g in gains}
    ok = [g for g in gains if math.isfinite(lows[g.name]) and math.isfinite(g.gain)]
    if not ok:
        return Choice(PRODUCTION, "no candidate has a finite paired lower bound; keep production")
    if require_support:
        unsupported = [g.name for g in ok if not g.supported]
        ok = [g for g in ok if g.supported]
        if not ok:
            return Choice(
                PRODUCTION,
                f"every candidate leaves the logged support ({', '.join(unsupported)}); "
                "keep production",
            )
    best = ok[0]
    for g in ok[1:]:
        if (lows[g.name], g.gain) > (lows[best.name], best.gain):
            best = g
    low = lows[best.name]
    what = {
        "recommended": "lower bound",
        "fqe": "FQE lower bound",
        "all-estimators": "lowest lower bound over the estimators",
    }[bound]
    if low <= min_gain:
        return Choice(
            PRODUCTION,
            f"no candidate's {what} of its gain over {over} is above {min_gain:.4g} (best "
            f"{best.name}: gain {best.gain:.4g}, bound {low:.4g}); keep production",
        )
    gain, lo, hi = (best.gain, best.lower, best.upper)
    if bound == "fqe":  # quote the interval the rule ranked by
        gain, lo, hi = best.by_estimator["fqe"]
    return Choice(
        best.name,
        f"highest {what} of the gain over {over} ({low:.4g} > {min_gain:.4g}; gain "
        f"{gain:.4g}, interval [{lo:.4g}, {hi:.4g}]) among {len(ok)} candidates",
        low,
    )
