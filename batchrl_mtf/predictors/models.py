"""The multi-task networks: soft sharing, Shared-Bottom, MMoE, PLE and ESMM.

Every model embeds the user id and the item id, concatenates the embeddings with the dense
numeric features into ``x`` (shape (n, d_in)), and maps ``x`` to one probability per task
(shape (n, K), columns in ``tasks`` order; regression tasks predict their scaled target in
[0, 1], see ``docs/predictors.md``).

- Soft parameter sharing: one bottom + tower per task; an L2 penalty
  ``lambda * sum_k ||theta_k - mean_j theta_j||^2`` over corresponding parameters pulls the task
  networks together (Duong et al. 2015). Embedding tables are shared (to keep it CPU-friendly).
- Shared-Bottom (hard parameter sharing, Caruana 1997): one bottom MLP, one tower per task.
- MMoE (Ma et al. KDD 2018): ``E`` expert MLPs; task ``k`` mixes them with its own softmax gate
  ``g_k(x)`` and feeds ``sum_e g_k,e(x) f_e(x)`` to its tower.
- PLE (Tang et al. RecSys 2020): stacked extraction layers of shared and task-specific experts;
  task ``k``'s gate mixes its own and the shared experts, a shared gate (below the top layer) mixes
  all experts for the next layer's shared experts (progressive layered extraction).
- ESMM (Ma et al. SIGIR 2018): a CTR tower and a CVR tower per post-click task on shared
  embeddings; the model outputs ``pCTCVR = pCTR * pCVR`` for post-click tasks, trained with the
  label ``click * task`` on every impression, so pCVR is never fitted on the click-only sample.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import torch
from torch import nn

from batchrl_mtf.predictors.config import PredictorConfig

__all__ = ["ESMM", "PLE", "MMoE", "MultiTaskNet", "SharedBottom", "SoftSharing", "build_model"]


def _mlp(d_in: int, dims: Sequence[int], dropout: float) -> tuple[nn.Sequential, int]:
    layers: list[nn.Module] = []
    d = d_in
    for h in dims:
        layers.append(nn.Linear(d, h))
        layers.append(nn.ReLU())
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        d = h
    return nn.Sequential(*layers), d


class _Tower(nn.Module):
    """Hidden layers then one logit: (n, d_in) -> (n,)."""

    def __init__(self, d_in: int, dims: Sequence[int], dropout: float) -> None:
        super().__init__()
        self.body, d = _mlp(d_in, dims, dropout)
        self.out = nn.Linear(d, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.body(x)).squeeze(-1)


class MultiTaskNet(nn.Module):
    """Base class: embeddings + dense input, and ``forward -> probabilities (n, K)``.

    Args:
        config: The predictor configuration.
        n_users: Rows of the user embedding table (row 0 = unknown user).
        n_items: Rows of the item embedding table (row 0 = unknown item).
        n_dense: Width of the dense numeric input.
    """

    def __init__(self, config: PredictorConfig, n_users: int, n_items: int, n_dense: int) -> None:
        super().__init__()
        self.tasks = tuple(config.tasks)
        self.user_emb = nn.Embedding(n_users, config.embedding_dim)
        self.item_emb = nn.Embedding(n_items, config.embedding_dim)
        nn.init.normal_(self.user_emb.weight, std=0.05)
        nn.init.normal_(self.item_emb.weight, std=0.05)
        self.d_in = 2 * config.embedding_dim + n_dense

    def inputs(
        self, user_idx: torch.Tensor, item_idx: torch.Tensor, dense: torch.Tensor
    ) -> torch.Tensor:
        """``x = [user_emb, item_emb, dense]``, shape (n, d_in)."""
        return torch.cat([self.user_emb(user_idx), self.item_emb(item_idx), dense], dim=-1)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Per-task logits, shape (n, K)."""
        raise NotImplementedError

    def forward(
        self, user_idx: torch.Tensor, item_idx: torch.Tensor, dense: torch.Tensor
    ) -> torch.Tensor:
        """Per-task probabilities, shape (n, K).

        Args:
            user_idx: int64, shape (n,).
            item_idx: int64, shape (n,).
            dense: float32, shape (n, n_dense).
        """
        return torch.sigmoid(self.logits(self.inputs(user_idx, item_idx, dense)))

    def penalty(self) -> torch.Tensor:
        """Extra regulariser added to the training loss (0 for most models)."""
        return torch.zeros(())


class SoftSharing(MultiTaskNet):
    """One bottom + tower per task, tied by an L2 penalty between task networks."""

    def __init__(self, config: PredictorConfig, n_users: int, n_items: int, n_dense: int) -> None:
        super().__init__(config, n_users, n_items, n_dense)
        self.l2 = config.soft_sharing_l2
        nets = []
        for _ in self.tasks:
            bottom, d = _mlp(self.d_in, config.hidden_dims, config.dropout)
            nets.append(nn.Sequential(bottom, _Tower(d, config.tower_dims, config.dropout)))
        self.nets = nn.ModuleList(nets)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([net(x) for net in self.nets], dim=-1)

    def penalty(self) -> torch.Tensor:
        if self.l2 == 0 or len(self.nets) < 2:
            return torch.zeros(())
        total = torch.zeros(())
        for params in zip(*(net.parameters() for net in self.nets), strict=True):
            stacked = torch.stack(list(params))
            total = total + ((stacked - stacked.mean(dim=0, keepdim=True)) ** 2).sum()
        return self.l2 * total


class SharedBottom(MultiTaskNet):
    """Hard parameter sharing: one bottom MLP, one tower per task."""

    def __init__(self, config: PredictorConfig, n_users: int, n_items: int, n_dense: int) -> None:
        super().__init__(config, n_users, n_items, n_dense)
        self.bottom, d = _mlp(self.d_in, config.hidden_dims, config.dropout)
        self.towers = nn.ModuleList(
            _Tower(d, config.tower_dims, config.dropout) for _ in self.tasks
        )

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        h = self.bottom(x)
        return torch.stack([t(h) for t in self.towers], dim=-1)


def _mix(gate: nn.Module, gate_in: torch.Tensor, experts: Sequence[torch.Tensor]) -> torch.Tensor:
    """Softmax-gated sum of expert outputs: (n, d) from E tensors (n, d)."""
    weights = torch.softmax(gate(gate_in), dim=-1)  # (n, E)
    return torch.einsum("ne,ned->nd", weights, torch.stack(list(experts), dim=1))


class MMoE(MultiTaskNet):
    """Multi-gate mixture of experts (Ma et al. KDD 2018)."""

    def __init__(self, config: PredictorConfig, n_users: int, n_items: int, n_dense: int) -> None:
        super().__init__(config, n_users, n_items, n_dense)
        experts = [
            _mlp(self.d_in, config.hidden_dims, config.dropout) for _ in range(config.n_experts)
        ]
        d = experts[0][1]
        self.experts = nn.ModuleList(e for e, _ in experts)
        self.gates = nn.ModuleList(nn.Linear(self.d_in, config.n_experts) for _ in self.tasks)
        self.towers = nn.ModuleList(
            _Tower(d, config.tower_dims, config.dropout) for _ in self.tasks
        )

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        outs = [e(x) for e in self.experts]
        return torch.stack(
            [t(_mix(g, x, outs)) for g, t in zip(self.gates, self.towers, strict=True)], dim=-1
        )


class _ExtractionLayer(nn.Module):
    """One PLE extraction layer (a CGC block, plus a shared gate below the top layer)."""

    def __init__(self, config: PredictorConfig, d_in: int, n_tasks: int, top: bool) -> None:
        super().__init__()
        self.n_tasks = n_tasks
        self.top = top
        ns, nt = config.n_shared_experts, config.n_task_experts
        shared = [_mlp(d_in, config.hidden_dims, config.dropout) for _ in range(ns)]
        self.d_out = shared[0][1]
        self.shared = nn.ModuleList(e for e, _ in shared)
        self.task_experts = nn.ModuleList(
            nn.ModuleList(_mlp(d_in, config.hidden_dims, config.dropout)[0] for _ in range(nt))
            for _ in range(n_tasks)
        )
        self.task_gates = nn.ModuleList(nn.Linear(d_in, nt + ns) for _ in range(n_tasks))
        self.shared_gate = None if top else nn.Linear(d_in, n_tasks * nt + ns)

    def forward(
        self, task_in: Sequence[torch.Tensor], shared_in: torch.Tensor
    ) -> tuple[list[torch.Tensor], torch.Tensor]:
        shared_out = [e(shared_in) for e in self.shared]
        task_outs: list[list[torch.Tensor]] = [
            [e(task_in[k]) for e in cast(nn.ModuleList, self.task_experts[k])]
            for k in range(self.n_tasks)
        ]
        mixed = [
            _mix(self.task_gates[k], task_in[k], task_outs[k] + shared_out)
            for k in range(self.n_tasks)
        ]
        if self.shared_gate is None:
            return mixed, shared_in
        everything = [o for outs in task_outs for o in outs] + shared_out
        return mixed, _mix(self.shared_gate, shared_in, everything)


class PLE(MultiTaskNet):
    """Progressive layered extraction (Tang et al. RecSys 2020)."""

    def __init__(self, config: PredictorConfig, n_users: int, n_items: int, n_dense: int) -> None:
        super().__init__(config, n_users, n_items, n_dense)
        layers = []
        d = self.d_in
        for layer in range(config.n_ple_layers):
            block = _ExtractionLayer(
                config, d, len(self.tasks), top=layer == config.n_ple_layers - 1
            )
            layers.append(block)
            d = block.d_out
        self.layers = nn.ModuleList(layers)
        self.towers = nn.ModuleList(
            _Tower(d, config.tower_dims, config.dropout) for _ in self.tasks
        )

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        task_in: list[torch.Tensor] = [x for _ in self.tasks]
        shared_in = x
        for layer in self.layers:
            task_in, shared_in = layer(task_in, shared_in)
        return torch.stack([t(h) for t, h in zip(self.towers, task_in, strict=True)], dim=-1)


class ESMM(MultiTaskNet):
    """Entire-space multi-task model (Ma et al. SIGIR 2018).

    Output column of the click task is pCTR; that of each binary post-click task is
    ``pCTCVR = pCTR * pCVR``; regression tasks get a plain tower on the shared embeddings.
    """

    def __init__(self, config: PredictorConfig, n_users: int, n_items: int, n_dense: int) -> None:
        super().__init__(config, n_users, n_items, n_dense)
        self.ctr_index = self.tasks.index(config.ctr_task)
        self.funnel = tuple(
            k != self.ctr_index and not config.is_regression(t) for k, t in enumerate(self.tasks)
        )

        def net() -> nn.Sequential:
            bottom, d = _mlp(self.d_in, config.hidden_dims, config.dropout)
            return nn.Sequential(bottom, _Tower(d, config.tower_dims, config.dropout))

        self.nets = nn.ModuleList(net() for _ in self.tasks)  # net k: CTR, CVR_k, or a plain tower

    def parts(
        self, user_idx: torch.Tensor, item_idx: torch.Tensor, dense: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(pCTR (n,), tower probabilities (n, K))``; column k is pCVR_k for post-click tasks."""
        x = self.inputs(user_idx, item_idx, dense)
        probs = torch.sigmoid(torch.stack([net(x) for net in self.nets], dim=-1))
        return probs[:, self.ctr_index], probs

    def forward(
        self, user_idx: torch.Tensor, item_idx: torch.Tensor, dense: torch.Tensor
    ) -> torch.Tensor:
        pctr, probs = self.parts(user_idx, item_idx, dense)
        mask = torch.tensor(self.funnel, dtype=torch.bool)
        return torch.where(mask, pctr[:, None] * probs, probs)


_MODELS: dict[str, type[MultiTaskNet]] = {
    "soft-sharing": SoftSharing,
    "shared-bottom": SharedBottom,
    "mmoe": MMoE,
    "ple": PLE,
    "esmm": ESMM,
}


def build_model(config: PredictorConfig, n_users: int, n_items: int, n_dense: int) -> MultiTaskNet:
    """Build the untrained network named by ``config.model`` (seed torch before calling)."""
    return _MODELS[config.model](config, n_users, n_items, n_dense)
