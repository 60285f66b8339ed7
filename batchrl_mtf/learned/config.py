"""How ``make-env`` learns a world from logs: :class:`LearnedEnvConfig`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from batchrl_mtf.core.config import require
from batchrl_mtf.core.fusion import Fusion

__all__ = ["LearnedEnvConfig"]


@dataclass(frozen=True)
class LearnedEnvConfig:
    """How ``make-env`` learns a world from logs.

    Attributes:
        n_candidates: Candidates drawn per request (at most the catalogue size).
        candidates: ``"uniform"`` over the catalogue or ``"exposure"`` (by logged exposure count).
        fusion: The platform's fusion (formula and offsets) that ranked the logged candidates;
            ``None``: the default :class:`~batchrl_mtf.core.fusion.Fusion` (``logsum``, beta 0.1),
            recorded and reported as assumed (``"source": "default"``).
        production: Production weights, one per task; empty = the per-task median logged weight.
        action_bounds: ``(lo, hi)`` of every weight; ``None`` = the logged range plus 10 %.
        model: Architecture of the fitted ranker and response model (``fit-predictor --model``).
        n_epochs: Training epochs of each fitted predictor.
        train_fraction: Share of rows (by ``ts``) each fitted predictor trains on: the ranker on
            the earliest, the response model on the latest (0.5: disjoint halves).
        ranker_targets: What a fitted ranker learns: ``"pred"`` distils the platform's own
            predictor from the logged ``pred_<task>`` columns (regression on
            ``log(pred + scale)``), ``"labels"`` fits the feedback labels, ``"auto"`` = ``"pred"``
            when every task has a logged ``pred_<task>`` column, else ``"labels"``.
        catalogue_size: Items the platform draws candidates from (``None``: only the logged
            items). Items never shown in the logs are taken as never winning a slate, so a
            request draws ``round(n_candidates * logged items / catalogue_size)`` candidates
            from the logged catalogue (at least the slate size).
        min_id_count: Ids seen fewer times map to the predictors' unknown id (less memorisation
            of rarely seen items).
        leave_l2: L2 penalty of the leave model's standardised coefficients; ``None``: chosen
            from ``leave_l2_grid`` by log-loss on a validation part of the training sessions.
        leave_l2_grid: Candidate penalties of the automatic choice.
        leave_interactions: Add products of the user-revealing inputs (``u_*``,
            ``hist_<fb>_rate``) with the session's and request's feedback and depth to the
            leave model (:func:`batchrl_mtf.learned.leave.segment_feedback_pairs`).
        leave_holdout: Share of sessions held out to report the leave model's calibration.
        leave_recency_decay: Decay of the leave model's ``recent_<fb>`` inputs, the session's
            exponentially decayed feedback sums up to this request
            (:func:`batchrl_mtf.learned.runtime.recent_feedback`); 0 = no recency inputs.
        leave_session_sums: Keep the state's running sums (``session_<fb>``, ``prev_<fb>``,
            ``session_elapsed_s``) among the leave model's inputs; ``False`` leaves them out
            (coefficient 0), so leaving reads the session's feedback only through the decayed
            ``recent_<fb>`` sums, depth and the request itself.
        leave_action_inputs: Give the leave model the request's fusion weights ``w_<task>`` and
            their decayed sums ``recent_w_<task>`` (with a recency decay), interacted with the
            user-revealing inputs. The logged weights are randomised by the logging policy's
            exploration, so their effect on leaving is not confounded by who the user is, unlike
            the realised feedback's.
        leave_classes: Latent user classes of the leave model (1: one logistic regression; more:
            a mixture fitted by EM, :func:`batchrl_mtf.learned.leave.fit_leave_mixture`).
        leave_em_iterations: EM iterations of a mixture leave model.
        replay_sessions: Logged sessions replayed by the replay check.
        seed: Seed of the predictors (ranker ``seed``, response model ``seed + 1``) and the check.
        n_threads: CPU threads of torch and numpy's BLAS while fitting and checking
            (:func:`batchrl_mtf.core.threads.limit_threads`); 0 = the libraries' defaults (one per
            core). One thread is the default: the predictors are small, and on a busy 2-core
            machine the defaults made ``make-env`` 1.5-4x slower with identical output.
        hist_n: ``hist_<fb>_rate`` window (as ``build-dataset --hist-n``).
        session_gap_s: Make sessions from gaps (as ``build-dataset --session-gap``).
        on_error: ``"fail"`` or ``"drop-session"`` (as ``build-dataset --on-error``).
    """

    n_candidates: int = 200
    candidates: Literal["uniform", "exposure"] = "uniform"
    fusion: Fusion | None = None
    production: tuple[float, ...] = ()
    action_bounds: tuple[float, float] | None = None
    model: str = "shared-bottom"
    n_epochs: int = 3
    train_fraction: float = 0.5
    ranker_targets: Literal["auto", "pred", "labels"] = "auto"
    catalogue_size: int | None = None
    min_id_count: int = 1
    leave_l2: float | None = None
    leave_l2_grid: tuple[float, ...] = (1.0, 10.0, 100.0, 1000.0)
    leave_interactions: bool = True
    leave_holdout: float = 0.2
    leave_recency_decay: float = 0.85
    leave_session_sums: bool = True
    leave_action_inputs: bool = True
    leave_classes: int = 1
    leave_em_iterations: int = 40
    replay_sessions: int = 2000
    seed: int = 0
    n_threads: int = 1
    hist_n: int = 500
    session_gap_s: float | None = None
    on_error: Literal["fail", "drop-session"] = "fail"

    def __post_init__(self) -> None:
        require(self.n_candidates >= 1, "n_candidates", f"expected >= 1, found {self.n_candidates}")
        require(
            self.candidates in ("uniform", "exposure"),
            "candidates",
            f"expected 'uniform' or 'exposure', found {self.candidates!r}",
        )
        require(
            self.fusion is None or isinstance(self.fusion, Fusion),
            "fusion",
            f"expected a Fusion, found {self.fusion!r}",
        )
        require(self.n_epochs >= 1, "n_epochs", f"expected >= 1, found {self.n_epochs}")
        require(
            0 < self.train_fraction < 1,
            "train_fraction",
            f"expected a share in (0, 1), found {self.train_fraction}",
        )
        require(
            self.ranker_targets in ("auto", "pred", "labels"),
            "ranker_targets",
            f"expected 'auto', 'pred' or 'labels', found {self.ranker_targets!r}",
        )
        require(
            self.catalogue_size is None or self.catalogue_size >= 1,
            "catalogue_size",
            f"expected >= 1, found {self.catalogue_size}",
        )
        require(self.min_id_count >= 1, "min_id_count", f"expected >= 1, found {self.min_id_count}")
        require(
            self.leave_l2 is None or self.leave_l2 >= 0,
            "leave_l2",
            f"expected >= 0 or None (automatic), found {self.leave_l2}",
        )
        require(
            len(self.leave_l2_grid) >= 1 and all(v >= 0 for v in self.leave_l2_grid),
            "leave_l2_grid",
            f"expected at least one penalty >= 0, found {list(self.leave_l2_grid)}",
        )
        require(
            0 < self.leave_holdout < 1,
            "leave_holdout",
            f"expected a share in (0, 1), found {self.leave_holdout}",
        )
        require(
            0 <= self.leave_recency_decay < 1,
            "leave_recency_decay",
            f"expected a decay in [0, 1), found {self.leave_recency_decay}",
        )
        require(
            self.leave_classes >= 1, "leave_classes", f"expected >= 1, found {self.leave_classes}"
        )
        require(
            self.leave_em_iterations >= 1,
            "leave_em_iterations",
            f"expected >= 1, found {self.leave_em_iterations}",
        )
        require(self.n_threads >= 0, "n_threads", f"expected >= 0, found {self.n_threads}")
        require(
            self.replay_sessions >= 1,
            "replay_sessions",
            f"expected >= 1, found {self.replay_sessions}",
        )
