"""Training configuration: one frozen dataclass for the run, one per algorithm, and the registry.

:class:`TrainConfig` holds what every algorithm shares (steps, seed, batch size, networks,
device) and one hyper-parameter dataclass per algorithm (``bcq``, ``cql``, ...). Field names of
the algorithm dataclasses are the d3rlpy 2.8.1 config names, so the d3rlpy documentation applies
unchanged. :data:`ALGORITHMS` maps ``--algo`` names to :class:`AlgoSpec` entries, each with its
named presets (``default`` is the CPU default chosen by ``bench/train_speed.py`` and
``bench/train_quality.py``; BCQ also has ``paper``, the BatchRL-MTF settings, and TD3+BC ``d3rlpy``,
d3rlpy's own settings). Without ``algo`` the toolkit trains TD3+BC (see docs/training.md for the
measurements behind that choice).

A configuration is resolved from layers, later ones winning: the preset, a TOML file
(``--config``), then ``--set key=value`` overrides. Keys are top-level :class:`TrainConfig` fields
(``n_steps``), dotted algorithm fields (``bcq.actor_learning_rate``), or bare algorithm fields of
the chosen algorithm (``actor_learning_rate`` with ``algo = "bcq"``).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from batchrl_mtf.core.config import config_from_mapping, config_to_dict, merge_layer, require
from batchrl_mtf.data.box import DEFAULT_ACTION_BOX, parse_action_box
from batchrl_mtf.errors import ConfigError

__all__ = [
    "ALGORITHMS",
    "RUNTIME_FIELDS",
    "AWACParams",
    "AlgoSpec",
    "BCParams",
    "BCQParams",
    "CQLParams",
    "IQLParams",
    "TD3BCParams",
    "TrainConfig",
    "resolve_config",
]

_DEVICE = re.compile(r"^(cpu|cuda(:\d+)?|mps)$")


def _positive(value: float, where: str) -> None:
    require(value > 0, where, f"expected a number > 0, found {value}")


@dataclass(frozen=True)
class BCQParams:
    """BCQ (Fujimoto et al., 2019), the algorithm of BatchRL-MTF.

    Attributes:
        actor_learning_rate: Learning rate of the perturbation actor.
        critic_learning_rate: Learning rate of the Q-functions.
        imitator_learning_rate: Learning rate of the conditional VAE (behaviour model).
        tau: Target-network soft-update rate.
        n_critics: Number of Q-functions in the ensemble.
        update_actor_interval: Gradient steps between actor updates.
        lam: Weight of the minimum in the clipped double-Q target.
        n_action_samples: Candidate actions sampled from the VAE per state (train and act).
        action_flexibility: Perturbation bound Φ, as a fraction of the (scaled) action range.
        rl_start_step: Gradient steps that train only the VAE before the actor and critics start.
        beta: KL weight of the VAE loss.
    """

    actor_learning_rate: float = 1e-4
    critic_learning_rate: float = 2e-4
    imitator_learning_rate: float = 1e-3
    tau: float = 0.05
    n_critics: int = 2
    update_actor_interval: int = 1
    lam: float = 0.75
    n_action_samples: int = 10
    action_flexibility: float = 0.15
    rl_start_step: int = 0
    beta: float = 0.5

    def __post_init__(self) -> None:
        for name in ("actor_learning_rate", "critic_learning_rate", "imitator_learning_rate"):
            _positive(getattr(self, name), f"bcq.{name}")
        require(0 < self.tau <= 1, "bcq.tau", f"expected a number in (0, 1], found {self.tau}")
        require(self.n_critics >= 1, "bcq.n_critics", f"expected >= 1, found {self.n_critics}")
        require(
            self.n_action_samples >= 1,
            "bcq.n_action_samples",
            f"expected >= 1, found {self.n_action_samples}",
        )
        require(
            0 <= self.action_flexibility <= 1,
            "bcq.action_flexibility",
            f"expected a number in [0, 1], found {self.action_flexibility}",
        )


@dataclass(frozen=True)
class CQLParams:
    """CQL (Kumar et al., 2020), SAC-based, continuous actions.

    Attributes:
        actor_learning_rate: Learning rate of the policy.
        critic_learning_rate: Learning rate of the Q-functions.
        temp_learning_rate: Learning rate of the SAC temperature.
        alpha_learning_rate: Learning rate of the conservative weight (Lagrangian).
        tau: Target-network soft-update rate.
        n_critics: Number of Q-functions.
        initial_temperature: Initial SAC temperature.
        initial_alpha: Initial conservative weight.
        alpha_threshold: Lagrangian threshold; negative = fixed ``conservative_weight``.
        conservative_weight: Weight of the conservative loss.
        n_action_samples: Actions sampled for the log-sum-exp term.
        soft_q_backup: Use the soft (entropy) backup in the target.
        max_q_backup: Use the max over sampled actions in the target.
    """

    actor_learning_rate: float = 1e-4
    critic_learning_rate: float = 3e-4
    temp_learning_rate: float = 1e-4
    alpha_learning_rate: float = 1e-4
    tau: float = 0.005
    n_critics: int = 2
    initial_temperature: float = 1.0
    initial_alpha: float = 1.0
    alpha_threshold: float = 10.0
    conservative_weight: float = 5.0
    n_action_samples: int = 10
    soft_q_backup: bool = False
    max_q_backup: bool = False

    def __post_init__(self) -> None:
        _positive(self.actor_learning_rate, "cql.actor_learning_rate")
        _positive(self.critic_learning_rate, "cql.critic_learning_rate")
        require(self.n_critics >= 1, "cql.n_critics", f"expected >= 1, found {self.n_critics}")


@dataclass(frozen=True)
class IQLParams:
    """IQL (Kostrikov et al., 2021): expectile value learning plus advantage-weighted policy.

    Attributes:
        actor_learning_rate: Learning rate of the policy.
        critic_learning_rate: Learning rate of the Q- and value functions.
        tau: Target-network soft-update rate.
        n_critics: Number of Q-functions.
        expectile: Expectile of the value regression (0.5 = mean).
        weight_temp: Inverse temperature of the advantage weights.
        max_weight: Clip of the advantage weights.
    """

    actor_learning_rate: float = 3e-4
    critic_learning_rate: float = 3e-4
    tau: float = 0.005
    n_critics: int = 2
    expectile: float = 0.7
    weight_temp: float = 3.0
    max_weight: float = 100.0

    def __post_init__(self) -> None:
        _positive(self.actor_learning_rate, "iql.actor_learning_rate")
        require(
            0 < self.expectile < 1,
            "iql.expectile",
            f"expected a number in (0, 1), found {self.expectile}",
        )


@dataclass(frozen=True)
class TD3BCParams:
    """TD3+BC (Fujimoto & Gu, 2021).

    Attributes:
        actor_learning_rate: Learning rate of the policy.
        critic_learning_rate: Learning rate of the Q-functions.
        tau: Target-network soft-update rate.
        n_critics: Number of Q-functions.
        target_smoothing_sigma: Std of the target-policy smoothing noise (scaled actions).
        target_smoothing_clip: Clip of that noise.
        alpha: Weight of the Q term against the behaviour-cloning term (10 here, the CPU
            default measured by ``bench/train_quality.py``; d3rlpy's and the paper's 2.5 is the
            ``d3rlpy`` preset).
        update_actor_interval: Gradient steps between actor updates.
    """

    actor_learning_rate: float = 3e-4
    critic_learning_rate: float = 3e-4
    tau: float = 0.005
    n_critics: int = 2
    target_smoothing_sigma: float = 0.2
    target_smoothing_clip: float = 0.5
    alpha: float = 10.0
    update_actor_interval: int = 2

    def __post_init__(self) -> None:
        _positive(self.actor_learning_rate, "td3bc.actor_learning_rate")
        require(self.alpha >= 0, "td3bc.alpha", f"expected >= 0, found {self.alpha}")


@dataclass(frozen=True)
class AWACParams:
    """AWAC (Nair et al., 2020).

    Attributes:
        actor_learning_rate: Learning rate of the policy.
        critic_learning_rate: Learning rate of the Q-functions.
        tau: Target-network soft-update rate.
        lam: Temperature of the advantage weights.
        n_action_samples: Actions sampled to estimate the state value.
        n_critics: Number of Q-functions.
    """

    actor_learning_rate: float = 3e-4
    critic_learning_rate: float = 3e-4
    tau: float = 0.005
    lam: float = 1.0
    n_action_samples: int = 1
    n_critics: int = 2

    def __post_init__(self) -> None:
        _positive(self.lam, "awac.lam")


@dataclass(frozen=True)
class BCParams:
    """Behaviour cloning: regress the logged weights on the state (the no-RL bar).

    Attributes:
        learning_rate: Learning rate of the policy.
        policy_type: ``"deterministic"`` (MSE) or ``"stochastic"`` (Gaussian likelihood).
    """

    learning_rate: float = 1e-3
    policy_type: Literal["deterministic", "stochastic"] = "deterministic"

    def __post_init__(self) -> None:
        _positive(self.learning_rate, "bc.learning_rate")


ParamsType = BCQParams | CQLParams | IQLParams | TD3BCParams | AWACParams | BCParams


@dataclass(frozen=True)
class AlgoSpec:
    """One trainable algorithm.

    Attributes:
        name: The ``--algo`` name (also the config section name).
        d3rlpy_config: Name of the d3rlpy config class in ``d3rlpy.algos``.
        params: The hyper-parameter dataclass.
        has_q: Whether the algorithm learns a Q-function (TD error and value metrics apply).
        description: One line for ``--help`` and the docs.
        presets: Named configuration layers (``default`` is always present and empty: the
            params dataclass's field defaults are the algorithm's CPU default).
    """

    name: str
    d3rlpy_config: str
    params: type
    has_q: bool
    description: str
    presets: Mapping[str, Mapping[str, object]] = field(default_factory=lambda: {"default": {}})


BCQ_PAPER: Mapping[str, object] = {
    "batch_size": 256,
    "gamma": 0.95,
    "hidden_units": [],
    "bcq": {
        "action_flexibility": 0.15,
        "imitator_learning_rate": 1e-3,
        "actor_learning_rate": 1e-4,
        "critic_learning_rate": 2e-4,
        "tau": 0.05,
        "n_action_samples": 100,
    },
}

#: TD3+BC with d3rlpy's (and Fujimoto & Gu's) settings: alpha 2.5, d3rlpy's 256x256 networks.
TD3BC_D3RLPY: Mapping[str, object] = {
    "hidden_units": [],
    "td3bc": {"alpha": 2.5},
}

ALGORITHMS: dict[str, AlgoSpec] = {
    "bcq": AlgoSpec(
        "bcq",
        "BCQConfig",
        BCQParams,
        True,
        "Batch-Constrained Q-learning, the BatchRL-MTF algorithm (presets: default, paper)",
        {"default": {}, "paper": BCQ_PAPER},
    ),
    "cql": AlgoSpec("cql", "CQLConfig", CQLParams, True, "Conservative Q-learning (SAC-based)"),
    "iql": AlgoSpec("iql", "IQLConfig", IQLParams, True, "Implicit Q-learning"),
    "td3bc": AlgoSpec(
        "td3bc",
        "TD3PlusBCConfig",
        TD3BCParams,
        True,
        "TD3 plus behaviour cloning, the toolkit default (presets: default, d3rlpy)",
        {"default": {}, "d3rlpy": TD3BC_D3RLPY},
    ),
    "awac": AlgoSpec("awac", "AWACConfig", AWACParams, True, "Advantage-weighted actor-critic"),
    "bc": AlgoSpec("bc", "BCConfig", BCParams, False, "Behaviour cloning (no RL baseline)"),
}

AlgoName = Literal["bcq", "cql", "iql", "td3bc", "awac", "bc"]

#: Fields that may change on ``--resume`` (they do not change what is learned).
RUNTIME_FIELDS = frozenset(
    {"n_steps", "device", "eval_every", "eval_episodes", "env", "n_threads", "checkpoint_every"}
)


@dataclass(frozen=True)
class TrainConfig:
    """One training run.

    Attributes:
        algo: Algorithm name (a key of :data:`ALGORITHMS`); TD3+BC by default (measured best on
            the default world, docs/training.md).
        preset: Named preset of the algorithm applied under the file and ``--set`` layers.
        n_steps: Total gradient steps.
        n_steps_per_epoch: Gradient steps per epoch (one metrics row and checkpoint per epoch).
        seed: Seed of Python, NumPy and torch (same seed and device = same policy on CPU).
        batch_size: Transitions per gradient step.
        gamma: Discount factor; ``None`` = the dataset's.
        reward_scale: Rewards are multiplied by this before learning (keeps Q-values near 1).
        hidden_units: Hidden layer sizes of every network; empty = d3rlpy's per-network defaults.
        device: ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.
        split: Dataset split to train on (``train``; ``all`` also uses the test sessions).
        n_threads: torch CPU threads; 0 = torch's default.
        env: Simulator spec for the true return (``--env``); empty = no online evaluation.
        eval_every: Epochs between simulator evaluations (with ``env``); 0 = only at the end.
        eval_episodes: Simulated sessions per evaluation.
        checkpoint_every: Epochs between checkpoints written to the policy directory.
        action_box: The policy's action bounds, from the training split's logged weights
            (:mod:`batchrl_mtf.data.box`): ``"qLO-HI"`` = per-task quantiles (default
            ``"q0.01-0.99"``: a few extreme logged weights do not let the policy extrapolate to
            where the logs have almost no data), ``"minmax"`` = the raw logged min/max (the
            dataset's ``action_low``/``action_high``, the behaviour before issue 16).
        bcq: BCQ hyper-parameters.
        cql: CQL hyper-parameters.
        iql: IQL hyper-parameters.
        td3bc: TD3+BC hyper-parameters.
        awac: AWAC hyper-parameters.
        bc: Behaviour-cloning hyper-parameters.
    """

    algo: AlgoName = "td3bc"
    preset: str = "default"
    n_steps: int = 5_000
    n_steps_per_epoch: int = 1_000
    seed: int = 0
    batch_size: int = 256
    gamma: float | None = None
    reward_scale: float = 1.0
    hidden_units: tuple[int, ...] = (128, 128)
    device: str = "cpu"
    split: Literal["train", "all"] = "train"
    n_threads: int = 1
    env: str = ""
    eval_every: int = 1
    eval_episodes: int = 500
    checkpoint_every: int = 1
    action_box: str = DEFAULT_ACTION_BOX
    bcq: BCQParams = field(default_factory=BCQParams)
    cql: CQLParams = field(default_factory=CQLParams)
    iql: IQLParams = field(default_factory=IQLParams)
    td3bc: TD3BCParams = field(default_factory=TD3BCParams)
    awac: AWACParams = field(default_factory=AWACParams)
    bc: BCParams = field(default_factory=BCParams)

    def __post_init__(self) -> None:
        require(
            self.algo in ALGORITHMS,
            "algo",
            f"expected one of {', '.join(ALGORITHMS)}, found {self.algo!r}",
        )
        presets = ALGORITHMS[self.algo].presets
        require(
            self.preset in presets,
            "preset",
            f"algorithm {self.algo!r} has presets {', '.join(presets)}; found {self.preset!r}",
        )
        for name in ("n_steps", "n_steps_per_epoch", "batch_size", "eval_episodes"):
            require(
                getattr(self, name) >= 1,
                name,
                f"expected an integer >= 1, found {getattr(self, name)}",
            )
        for name in ("n_threads", "eval_every", "checkpoint_every"):
            require(
                getattr(self, name) >= 0,
                name,
                f"expected an integer >= 0, found {getattr(self, name)}",
            )
        if self.gamma is not None:
            require(
                0 <= self.gamma <= 1, "gamma", f"expected a number in [0, 1], found {self.gamma}"
            )
        require(
            self.reward_scale > 0,
            "reward_scale",
            f"expected a number > 0, found {self.reward_scale}",
        )
        require(
            all(h >= 1 for h in self.hidden_units),
            "hidden_units",
            f"expected positive layer sizes, found {list(self.hidden_units)}",
        )
        parse_action_box(self.action_box)
        require(
            bool(_DEVICE.match(self.device)),
            "device",
            f"expected cpu, cuda, cuda:N or mps, found {self.device!r}",
        )

    @property
    def spec(self) -> AlgoSpec:
        """The chosen algorithm's registry entry."""
        return ALGORITHMS[self.algo]

    @property
    def params(self) -> ParamsType:
        """The chosen algorithm's hyper-parameters."""
        return getattr(self, self.algo)

    def to_dict(self) -> dict[str, object]:
        """Plain mapping of the resolved config (only the chosen algorithm's section)."""
        doc = config_to_dict(self)
        for name in ALGORITHMS:
            if name != self.algo:
                doc.pop(name)
        return doc


_ALGO_SECTIONS = frozenset(ALGORITHMS)
_TOP_FIELDS = frozenset(f.name for f in dataclasses.fields(TrainConfig))


def _nest(layer: Mapping[str, object], algo: str, where: str) -> dict[str, object]:
    """Turn dotted and bare algorithm keys into nested sections; reject unknown keys."""
    algo_fields = {f.name for f in dataclasses.fields(ALGORITHMS[algo].params)}
    out: dict[str, object] = {}
    for key, value in layer.items():
        if "." in key:
            section, _, sub = key.partition(".")
            if section not in _ALGO_SECTIONS or "." in sub:
                raise ConfigError(
                    f"{where}: unknown key {key!r}; dotted keys are <algo>.<field> with algo one "
                    f"of {', '.join(sorted(_ALGO_SECTIONS))}"
                )
            merge_layer(out, {section: {sub: value}})
        elif key in _TOP_FIELDS:
            merge_layer(out, {key: value})
        elif key in algo_fields:
            merge_layer(out, {algo: {key: value}})
        else:
            raise ConfigError(
                f"{where}: unknown key {key!r}; expected one of {', '.join(sorted(_TOP_FIELDS))} "
                f"or a {algo} field ({', '.join(sorted(algo_fields))})"
            )
    return out


def resolve_config(
    layers: list[tuple[str, Mapping[str, object]]],
    base: Mapping[str, object] | None = None,
) -> TrainConfig:
    """Resolve a :class:`TrainConfig` from layers (preset first, then each layer in order).

    Args:
        layers: ``(where, mapping)`` pairs, e.g. ``("train.toml", {...})``,
            ``("--set", {"bcq.tau": 0.01})``; later layers win. ``where`` names the source in
            error messages.
        base: A starting mapping (a saved ``config.json`` when resuming).

    Raises:
        ConfigError: An unknown key (naming it), a wrong type, or an invalid value.
    """
    flat: dict[str, object] = {}
    for _where, layer in [("base", base or {}), *layers]:
        for key in ("algo", "preset"):
            if key in layer:
                flat[key] = layer[key]
    algo = str(flat.get("algo", TrainConfig.algo))
    if algo not in ALGORITHMS:
        raise ConfigError(f"algo: expected one of {', '.join(ALGORITHMS)}, found {algo!r}")
    preset_name = str(flat.get("preset", TrainConfig.preset))
    presets = ALGORITHMS[algo].presets
    if preset_name not in presets:
        raise ConfigError(
            f"preset: algorithm {algo!r} has presets {', '.join(presets)}; found {preset_name!r}"
        )
    merged: dict[str, object] = {}
    merge_layer(merged, _nest(base or {}, algo, "saved config"))
    if not base:  # a saved config already holds its preset's values and overrides
        merge_layer(merged, _nest(presets[preset_name], algo, f"preset {preset_name!r}"))
    for where, layer in layers:
        merge_layer(merged, _nest(layer, algo, where))
    merged["algo"] = algo
    merged["preset"] = preset_name
    return config_from_mapping(TrainConfig, merged, "train config")
