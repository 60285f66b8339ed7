"""The selection rule: the highest lower confidence bound of the gain over production.

Each candidate ``c`` has a paired estimate of its gain over production on the held-out sessions,
``g_c = V(c) - V(production)`` with a paired bootstrap interval ``[l_c, u_c]``
(:func:`batchrl_mtf.ope.paired.paired_vs`, the estimator both may quote). The rule:

1. candidates without a finite lower bound ``l_c`` are not eligible, nor (by default) those the
   support diagnostic flags (their actions leave the logged support, so their estimates are
   extrapolations: :mod:`batchrl_mtf.ope.support`);
2. the chosen candidate maximises ``l_c`` (ties: larger ``g_c``, then the earlier candidate);
3. when no ``l_c`` is above zero, nothing is reliably better than production: production is
   chosen (``reason`` says so). Trust-region steps are candidates of their own, so when the
   unconstrained table's bound is not above zero but a smaller step's is, that step wins.

Choosing by the lower bound rather than the estimate discounts candidates whose estimate is
high only because it is uncertain (a policy far from the logs has a wide interval), the
selection analogue of the pessimism behind conservative offline RL.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["PRODUCTION", "Choice", "Gain", "choose"]

PRODUCTION = "production"
"""The name of the production candidate."""


@dataclass(frozen=True)
class Gain:
    """A candidate's paired gain over production.

    Attributes:
        name: The candidate.
        gain: Estimated gain ``V(candidate) - V(production)``.
        lower: Lower end of its paired interval (NaN when there is none).
        upper: Upper end.
        supported: Whether its actions stay in the logged support (not flagged).
    """

    name: str
    gain: float
    lower: float
    upper: float
    supported: bool = True


@dataclass(frozen=True)
class Choice:
    """The outcome of :func:`choose`.

    Attributes:
        name: The chosen candidate, or :data:`PRODUCTION`.
        reason: Why, in words.
    """

    name: str
    reason: str


def choose(gains: Sequence[Gain], require_support: bool = True) -> Choice:
    """Apply the rule of the module docstring to the candidates' gains.

    Args:
        gains: One per candidate (production excluded).
        require_support: Leave out candidates whose actions leave the logged support.
    """
    ok = [g for g in gains if math.isfinite(g.lower) and math.isfinite(g.gain)]
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
        if (g.lower, g.gain) > (best.lower, best.gain):
            best = g
    if best.lower <= 0.0:
        return Choice(
            PRODUCTION,
            f"no candidate's lower bound of its gain over production is above zero (best "
            f"{best.name}: gain {best.gain:.4g}, lower bound {best.lower:.4g}); keep production",
        )
    return Choice(
        best.name,
        f"highest lower bound of the gain over production ({best.lower:.4g} > 0; gain "
        f"{best.gain:.4g}, interval [{best.lower:.4g}, {best.upper:.4g}]) among {len(ok)} "
        "candidates",
    )
