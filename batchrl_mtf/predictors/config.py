"""Configuration of the frozen multi-task predictor (one frozen dataclass, validated on creation)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from batchrl_mtf.core.config import require

__all__ = ["LOSS_WEIGHTINGS", "MODELS", "ModelName", "PredictorConfig"]

ModelName = Literal["soft-sharing", "shared-bottom", "mmoe", "ple", "esmm"]
MODELS: tuple[str, ...] = ("soft-sharing", "shared-bottom", "mmoe", "ple", "esmm")
LOSS_WEIGHTINGS: tuple[str, ...] = ("fixed", "uncertainty")

_TASK_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
_WHERE = "PredictorConfig"


@dataclass(frozen=True)
class PredictorConfig:
    """Everything that decides a trained predictor (model, features, optimisation, split).

    Attributes:
        model: Architecture: ``soft-sharing``, ``shared-bottom``, ``mmoe``, ``ple`` or ``esmm``.
        tasks: Feedback columns to predict; the model outputs ``pred_<task>`` for each.
        regression_tasks: Tasks among ``tasks`` trained as regression (``watch_time``-like, >= 0).
        context_features: Numeric log columns used as request context (e.g. ``("position",)``).
        embedding_dim: Size of the user-id and item-id embeddings.
        hidden_dims: Layer sizes of a bottom network / expert (the last is the expert output).
        tower_dims: Hidden layer sizes of each task tower (before its one-logit output layer).
        dropout: Dropout probability after every hidden layer (0 disables it).
        n_experts: MMoE: number of shared experts.
        n_shared_experts: PLE: shared experts per extraction layer.
        n_task_experts: PLE: task-specific experts per task and extraction layer.
        n_ple_layers: PLE: number of stacked extraction layers.
        soft_sharing_l2: Soft sharing: weight of the L2 penalty pulling task networks together.
        esmm_ctr_task: ESMM: the click-through task; empty means the first task of ``tasks``.
        loss_weighting: ``fixed`` (``task_weights``) or ``uncertainty`` (Kendall et al. 2018).
        task_weights: Fixed task-loss weights, one per task; empty means all 1.
        regression_cap_quantile: Regression targets are scaled by this quantile of the training
            targets (see ``docs/predictors.md``).
        min_id_count: Ids seen fewer times than this in training map to the unknown-id row.
        id_dropout: Training rows whose ids are replaced by the unknown id, so it learns a mean.
        n_epochs: Passes over the training part.
        batch_size: Rows per optimiser step.
        learning_rate: Adam learning rate.
        weight_decay: Adam weight decay.
        valid_fraction: Latest fraction of rows (by ``ts``) held out for evaluation.
        seed: Seed of parameter initialisation, shuffling and id dropout.
    """

    model: ModelName = "mmoe"
    tasks: tuple[str, ...] = ("click",)
    regression_tasks: tuple[str, ...] = ("watch_time",)
    context_features: tuple[str, ...] = ()
    embedding_dim: int = 16
    hidden_dims: tuple[int, ...] = (64,)
    tower_dims: tuple[int, ...] = (32,)
    dropout: float = 0.0
    n_experts: int = 4
    n_shared_experts: int = 2
    n_task_experts: int = 1
    n_ple_layers: int = 2
    soft_sharing_l2: float = 1e-3
    esmm_ctr_task: str = ""
    loss_weighting: Literal["fixed", "uncertainty"] = "fixed"
    task_weights: tuple[float, ...] = ()
    regression_cap_quantile: float = 0.99
    min_id_count: int = 1
    id_dropout: float = 0.02
    n_epochs: int = 3
    batch_size: int = 1024
    learning_rate: float = 3e-3
    weight_decay: float = 0.0
    valid_fraction: float = 0.2
    seed: int = 0

    def __post_init__(self) -> None:
        w = _WHERE
        require(
            self.model in MODELS,
            f"{w}.model",
            f"expected one of {', '.join(MODELS)}, found {self.model!r}",
        )
        require(len(self.tasks) > 0, f"{w}.tasks", "expected at least one task, found none")
        for task in self.tasks:
            require(
                bool(_TASK_NAME.match(task)),
                f"{w}.tasks",
                f"expected names of letters, digits and '_', found {task!r}",
            )
        require(
            len(set(self.tasks)) == len(self.tasks),
            f"{w}.tasks",
            f"expected distinct tasks, found {self.tasks}",
        )
        require(
            self.embedding_dim >= 1,
            f"{w}.embedding_dim",
            f"expected >= 1, found {self.embedding_dim}",
        )
        require(
            len(self.hidden_dims) >= 1 and all(d >= 1 for d in self.hidden_dims),
            f"{w}.hidden_dims",
            f"expected one or more sizes >= 1, found {self.hidden_dims}",
        )
        require(
            all(d >= 1 for d in self.tower_dims),
            f"{w}.tower_dims",
            f"expected sizes >= 1, found {self.tower_dims}",
        )
        require(
            0.0 <= self.dropout < 1.0,
            f"{w}.dropout",
            f"expected 0 <= dropout < 1, found {self.dropout}",
        )
        for name in (
            "n_experts",
            "n_shared_experts",
            "n_task_experts",
            "n_ple_layers",
            "n_epochs",
            "batch_size",
        ):
            value = getattr(self, name)
            require(value >= 1, f"{w}.{name}", f"expected an integer >= 1, found {value}")
        require(
            self.min_id_count >= 1, f"{w}.min_id_count", f"expected >= 1, found {self.min_id_count}"
        )
        require(
            self.soft_sharing_l2 >= 0.0,
            f"{w}.soft_sharing_l2",
            f"expected >= 0, found {self.soft_sharing_l2}",
        )
        require(
            self.esmm_ctr_task == "" or self.esmm_ctr_task in self.tasks,
            f"{w}.esmm_ctr_task",
            f"expected one of the tasks {', '.join(self.tasks)}, found {self.esmm_ctr_task!r}",
        )
        if self.model == "esmm":
            require(
                len(self.tasks) >= 2,
                f"{w}.tasks",
                f"ESMM needs a click task and at least one post-click task, found {self.tasks}",
            )
            require(
                self.ctr_task not in self.regression_tasks,
                f"{w}.esmm_ctr_task",
                f"the ESMM click task must be binary, found regression task {self.ctr_task!r}",
            )
        require(
            self.loss_weighting in LOSS_WEIGHTINGS,
            f"{w}.loss_weighting",
            f"expected one of {', '.join(LOSS_WEIGHTINGS)}, found {self.loss_weighting!r}",
        )
        require(
            len(self.task_weights) in (0, len(self.tasks)),
            f"{w}.task_weights",
            f"expected {len(self.tasks)} weights (one per task) or none, found {len(self.task_weights)}",
        )
        require(
            all(x >= 0.0 for x in self.task_weights),
            f"{w}.task_weights",
            f"expected weights >= 0, found {self.task_weights}",
        )
        require(
            0.5 <= self.regression_cap_quantile <= 1.0,
            f"{w}.regression_cap_quantile",
            f"expected 0.5 <= q <= 1, found {self.regression_cap_quantile}",
        )
        require(
            0.0 <= self.id_dropout < 1.0,
            f"{w}.id_dropout",
            f"expected 0 <= p < 1, found {self.id_dropout}",
        )
        require(
            self.learning_rate > 0.0,
            f"{w}.learning_rate",
            f"expected > 0, found {self.learning_rate}",
        )
        require(
            self.weight_decay >= 0.0,
            f"{w}.weight_decay",
            f"expected >= 0, found {self.weight_decay}",
        )
        require(
            0.0 < self.valid_fraction < 1.0,
            f"{w}.valid_fraction",
            f"expected 0 < fraction < 1, found {self.valid_fraction}",
        )

    @property
    def ctr_task(self) -> str:
        """The ESMM click-through task (``esmm_ctr_task`` or the first task)."""
        return self.esmm_ctr_task or self.tasks[0]

    def is_regression(self, task: str) -> bool:
        """Whether ``task`` is trained as regression."""
        return task in self.regression_tasks

    def weights(self) -> tuple[float, ...]:
        """The fixed task-loss weights, one per task."""
        return self.task_weights or tuple(1.0 for _ in self.tasks)
