"""Platform specs (``envs/*.toml``): what a simulated world is made of.

A spec is one TOML file with these tables (every key is documented in ``docs/simulator.md``;
unknown keys and values of the wrong type raise :class:`~batchrl_mtf.errors.ConfigError` naming
the file and the key):

- ``[world]``: tasks, catalogue size, latent item factors, candidates per request, slate size;
- ``[responses.<column>]``: the true response model of every feedback column, in log order;
- ``[[segments]]``: user segments (share, visible ``u_*`` hints, response offsets, satisfaction);
- ``[users]``: visible user features, hint noise, personal offsets, sessions per user;
- ``[session]``: hidden satisfaction dynamics, leave probability, request cap, timing;
- ``[fusion]``: formula, beta, weight bounds and the production weights;
- ``[predictor]``: the platform's frozen multi-task predictor;
- ``[exploration]``: defaults of the logging policies;
- ``[reward]``: the reward, in the foundation's reward TOML shape;
- ``[features]``: optional :class:`~batchrl_mtf.data.features.FeatureConfig` overrides;
- ``[learned]``: only for ``world.kind = "learned"``: the artefacts of a world model learned from
  logs (``batchrl-mtf make-env``, ``docs/learned_env.md``).
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from batchrl_mtf.core.config import config_from_mapping, require
from batchrl_mtf.core.fusion import Fusion
from batchrl_mtf.data.features import FeatureConfig
from batchrl_mtf.data.reward import RewardConfig, parse_reward
from batchrl_mtf.errors import ConfigError

__all__ = [
    "ENVS_DIR",
    "ExplorationSpec",
    "FusionSpec",
    "LearnedSpec",
    "PlatformSpec",
    "PredictorSpec",
    "ResponseSpec",
    "SegmentSpec",
    "SessionSpec",
    "UsersSpec",
    "WorldSpec",
    "default_spec_path",
    "load_spec",
    "parse_spec",
]

ENVS_DIR = Path(__file__).resolve().parents[2] / "envs"
"""The repository's ``envs/`` directory (the package is installed editable from the repo)."""

TOP_LEVEL = (
    "world",
    "responses",
    "segments",
    "users",
    "session",
    "fusion",
    "predictor",
    "exploration",
    "reward",
    "features",
    "learned",
)


PACKAGE_DATA_DIR = Path(__file__).resolve().parents[1] / "data"
"""Fallback for installs without the repository: ``batchrl_mtf/data/<name>.toml``."""


def default_spec_path(name: str = "short_video") -> Path:
    """Path of a shipped spec: ``envs/<name>.toml`` of the repository, else the package data copy."""
    repo = ENVS_DIR / f"{name}.toml"
    data = PACKAGE_DATA_DIR / f"{name}.toml"
    return data if not repo.is_file() and data.is_file() else repo


def _finite(x: float) -> bool:
    return math.isfinite(x)


@dataclass(frozen=True)
class WorldSpec:
    """The catalogue and the request shape.

    Attributes:
        kind: ``"simulated"`` (the hidden true model of ``[responses]``/``[[segments]]``) or
            ``"learned"`` (a world model learned from logs; see ``[learned]``).
        name: Display name of the world.
        seed: Seed of the catalogue and segment tables (the world itself, not the users).
        tasks: Predicted tasks, in action (``w_<task>``) order; each must be a binary or threshold
            response.
        n_items: Items in the catalogue.
        n_candidates: Candidates ranked per request.
        slate_size: Items shown per request (the top of the fused ranking).
        factors: Names of the latent item factors (standard normal per item).
        duration_median_s: Median item duration in seconds (log-normal).
        duration_sigma: Log-normal sigma of item durations.
        duration_max_s: Durations are capped at this many seconds.
    """

    kind: Literal["simulated", "learned"] = "simulated"
    name: str = "world"
    seed: int = 0
    tasks: tuple[str, ...] = ()
    n_items: int = 10000
    n_candidates: int = 200
    slate_size: int = 6
    factors: tuple[str, ...] = ("quality",)
    duration_median_s: float = 20.0
    duration_sigma: float = 0.5
    duration_max_s: float = 120.0

    def __post_init__(self) -> None:
        require(len(self.tasks) >= 1, "world.tasks", "expected at least one task")
        require(len(set(self.tasks)) == len(self.tasks), "world.tasks", "expected distinct names")
        require(self.n_items >= 1, "world.n_items", f"expected >= 1, found {self.n_items}")
        require(
            1 <= self.slate_size <= self.n_candidates <= self.n_items,
            "world",
            "expected 1 <= slate_size <= n_candidates <= n_items, found "
            f"{self.slate_size}, {self.n_candidates}, {self.n_items}",
        )
        require(len(self.factors) >= 1, "world.factors", "expected at least one factor")
        require(
            self.duration_median_s > 0 and self.duration_sigma >= 0 and self.duration_max_s > 0,
            "world.duration_*",
            "expected median > 0, sigma >= 0, max > 0",
        )


@dataclass(frozen=True)
class ResponseSpec:
    """The true model of one feedback column.

    ``binary``: ``x = parent * Bernoulli(sigmoid(logit))``; ``watch``: a watch ratio
    ``r = sigmoid(logit + noise_scale * Logistic)`` and the column is ``parent * r * duration``
    (seconds); ``threshold``: ``x = 1[r_of >= ratio]`` of a ``watch`` response (its parent
    included). ``logit = base + segment offset + user offset + sum_f loadings[f] * factor_f``.

    Attributes:
        kind: ``"binary"``, ``"watch"`` or ``"threshold"``.
        given: Parent binary response (``""``: none).
        base: Intercept of the logit.
        loadings: Latent item factor -> coefficient in the logit.
        item_noise: Standard deviation of a per-item logit term (item idiosyncrasy).
        noise_scale: ``watch`` only: scale of the logistic noise of the ratio.
        of: ``threshold`` only: the ``watch`` response it thresholds.
        ratio: ``threshold`` only: the watch ratio at or above which it is 1.
    """

    kind: Literal["binary", "watch", "threshold"] = "binary"
    given: str = ""
    base: float = 0.0
    loadings: Mapping[str, float] = field(default_factory=dict)
    item_noise: float = 0.3
    noise_scale: float = 0.5
    of: str = ""
    ratio: float = 0.5

    def __post_init__(self) -> None:
        require(self.item_noise >= 0, "item_noise", f"expected >= 0, found {self.item_noise}")
        require(self.noise_scale > 0, "noise_scale", f"expected > 0, found {self.noise_scale}")
        require(0 < self.ratio < 1, "ratio", f"expected a number in (0, 1), found {self.ratio}")
        require(
            self.kind != "threshold" or bool(self.of),
            "of",
            "a threshold response needs 'of' (a watch response)",
        )


@dataclass(frozen=True)
class SegmentSpec:
    """A user segment: what its users show, want and do.

    Attributes:
        name: Segment name.
        share: Share of users (shares are normalised over segments).
        hints: ``u_*`` feature -> mean of that visible feature for the segment.
        offsets: Response -> offset added to its logit for this segment.
        sat_init: Mean satisfaction at the start of a session.
        sat_feedback: Feedback column -> satisfaction gained per unit (summed over items).
        sat_factors: Latent factor -> satisfaction gained per engaged item (root response = 1).
        leave_base: Intercept of the per-request leave logit.
    """

    name: str = ""
    share: float = 1.0
    hints: Mapping[str, float] = field(default_factory=dict)
    offsets: Mapping[str, float] = field(default_factory=dict)
    sat_init: float = 0.0
    sat_feedback: Mapping[str, float] = field(default_factory=dict)
    sat_factors: Mapping[str, float] = field(default_factory=dict)
    leave_base: float = -2.5

    def __post_init__(self) -> None:
        require(bool(self.name), "segments.name", "expected a non-empty name")
        require(self.share > 0, f"segments.{self.name}.share", f"expected > 0, found {self.share}")


@dataclass(frozen=True)
class UsersSpec:
    """Users and their visible features.

    Attributes:
        features: Visible ``u_*`` feature names, in log column order.
        hint_noise: Standard deviation of the noise on each visible hint (they are noisy hints).
        offset_sd: Standard deviation of each user's personal offset on every response logit.
        sessions_per_user: Sessions each simulated user has (a user returns after a gap).
    """

    features: tuple[str, ...] = ()
    hint_noise: float = 1.0
    offset_sd: float = 0.3
    sessions_per_user: int = 4

    def __post_init__(self) -> None:
        for f in self.features:
            require(f.startswith("u_"), "users.features", f"expected u_* names, found {f!r}")
        require(self.hint_noise >= 0, "users.hint_noise", f"expected >= 0, found {self.hint_noise}")
        require(self.offset_sd >= 0, "users.offset_sd", f"expected >= 0, found {self.offset_sd}")
        require(
            1 <= self.sessions_per_user < 1000,
            "users.sessions_per_user",
            f"expected 1..999, found {self.sessions_per_user}",
        )


@dataclass(frozen=True)
class SessionSpec:
    """Session dynamics: hidden satisfaction, leaving, the request cap and timing.

    Satisfaction after request t: ``s <- sat_decay * s + gain_t - sat_cost``, with ``gain_t``
    from the segment's ``sat_feedback``/``sat_factors`` plus ``sat_reward * r_t`` (``r_t`` the
    request's reward). The user leaves after request t with probability
    ``sigmoid(leave_base + leave_depth * t - leave_sat * s)``, and always when
    ``s < leave_below``. (``sat_decay = 0.95``, ``sat_reward = 0.05``, ``leave_below = 0.1`` and
    ``max_requests = 97`` is the xMTF KuaiRand protocol, ``s <- 0.95 s + 0.05 r``.)

    Attributes:
        max_requests: Cap on requests per session (truncation).
        sat_init_sd: Standard deviation of the starting satisfaction around the segment's mean.
        sat_decay: Persistence of satisfaction from one request to the next.
        sat_cost: Satisfaction lost per request (fatigue).
        leave_sat: Weight of satisfaction in the leave logit.
        leave_depth: Growth of the leave logit per request (fatigue).
        overhead_s: Seconds per shown item on top of its watch time (scrolling).
        gap_h: Hours between a user's consecutive session days.
        start_ms: Epoch milliseconds of the first day.
        sat_reward: Satisfaction gained per unit of the request's reward (default 0: none).
        leave_below: The user leaves as soon as satisfaction is below this (default ``-inf``:
            never; only the leave probability decides).
    """

    max_requests: int = 30
    sat_init_sd: float = 0.5
    sat_decay: float = 0.85
    sat_cost: float = 0.0
    leave_sat: float = 1.0
    leave_depth: float = 0.05
    overhead_s: float = 1.5
    gap_h: float = 24.0
    start_ms: int = 1_700_000_000_000
    sat_reward: float = 0.0
    leave_below: float = -math.inf

    def __post_init__(self) -> None:
        require(_finite(self.sat_reward), "session.sat_reward", "expected a finite number")
        require(
            not math.isnan(self.leave_below) and self.leave_below < math.inf,
            "session.leave_below",
            f"expected a number or -inf, found {self.leave_below}",
        )
        require(
            1 <= self.max_requests < 1000,
            "session.max_requests",
            f"expected 1..999, found {self.max_requests}",
        )
        require(0 <= self.sat_decay <= 1, "session.sat_decay", "expected a number in [0, 1]")
        require(self.sat_init_sd >= 0, "session.sat_init_sd", "expected >= 0")
        require(self.overhead_s > 0, "session.overhead_s", "expected > 0")
        require(self.gap_h >= 12, "session.gap_h", f"expected >= 12 hours, found {self.gap_h}")


@dataclass(frozen=True)
class FusionSpec:
    """How the platform fuses predictions into one ranking score.

    Attributes:
        formula: ``"logsum"`` (sum_k w_k log(p_k + beta_k)) or ``"sum"`` (sum_k w_k p_k).
        beta: One offset per task (``logsum``).
        low: Lower bound of every weight (the action space).
        high: Upper bound of every weight.
        production: The production weights, one per task.

    ``formula`` and ``beta`` are the platform's :class:`~batchrl_mtf.core.fusion.Fusion`
    (:meth:`to_fusion`); ``low``, ``high`` and ``production`` are the platform's action space.
    """

    formula: Literal["logsum", "sum"] = "logsum"
    beta: tuple[float, ...] = ()
    low: float = 0.0
    high: float = 2.0
    production: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        require(
            _finite(self.low) and _finite(self.high) and self.low < self.high,
            "fusion.low/high",
            f"expected finite low < high, found {self.low}, {self.high}",
        )
        if self.beta:
            Fusion("logsum", self.beta)  # offsets valid as a Fusion's (finite, > 0)
        require(
            all(self.low <= w <= self.high for w in self.production),
            "fusion.production",
            f"expected weights within [{self.low}, {self.high}], found {list(self.production)}",
        )

    def to_fusion(self) -> Fusion:
        """The platform's fusion (formula and one offset per task for ``logsum``)."""
        if self.formula == "logsum" and not self.beta:
            raise ConfigError("fusion.beta: expected one offset per task for formula 'logsum'")
        return Fusion(self.formula, tuple(self.beta) if self.formula == "logsum" else None)


@dataclass(frozen=True)
class PredictorSpec:
    """The platform's frozen multi-task predictor.

    Attributes:
        kind: ``"noisy-truth"``: ``pred = sigmoid(logit(p_true) + noise * N(0, 1))`` per
            candidate and task; ``"artefact"``: a trained predictor directory
            (:func:`batchrl_mtf.predictors.load_predictor`).
        noise: Logit noise of ``noisy-truth``, one per task or a single value.
        path: Artefact directory (``artefact``), relative to the spec file.
    """

    kind: Literal["noisy-truth", "artefact"] = "noisy-truth"
    noise: tuple[float, ...] = (0.3,)
    path: str = ""

    def __post_init__(self) -> None:
        require(all(x >= 0 for x in self.noise), "predictor.noise", "expected numbers >= 0")
        require(
            self.kind != "artefact" or bool(self.path),
            "predictor.path",
            "kind = 'artefact' needs path = '<predictor directory>'",
        )


@dataclass(frozen=True)
class LearnedSpec:
    """A world model learned from logs (``world.kind = "learned"``; ``docs/learned_env.md``).

    Paths are relative to the spec file. The ranker is ``[predictor] path``.

    Attributes:
        catalogue: Parquet of the items seen in the logs (``item_id``, ``duration``, ``exposures``).
        response_model: Predictor directory of the user response model (every feedback column).
        responses: JSON of how feedback is drawn from the response model.
        leave_model: JSON of the leave model (logistic regression, no pickle).
        start_states: Parquet of the start states (the logs' first requests of sessions).
        candidates: ``"uniform"`` over the catalogue or ``"exposure"`` (by logged exposure count).
    """

    catalogue: str = ""
    response_model: str = ""
    responses: str = ""
    leave_model: str = ""
    start_states: str = ""
    candidates: Literal["uniform", "exposure"] = "uniform"

    def paths(self) -> dict[str, str]:
        """Artefact key -> path."""
        return {
            "catalogue": self.catalogue,
            "response_model": self.response_model,
            "responses": self.responses,
            "leave_model": self.leave_model,
            "start_states": self.start_states,
        }


@dataclass(frozen=True)
class ExplorationSpec:
    """Defaults of the logging policies (``simulate --policy``).

    Attributes:
        action_noise_sigma: Standard deviation of ``action-noise`` around production.
        random_sigma: Standard deviation of ``random`` around the centre of the bounds.
        tail_share: Share of ``action-noise`` draws (also the production half of ``mixed``) taken
            with ``tail_sigma`` instead: heavy-tailed logged weights, a few extreme actions
            (default 0: none).
        tail_sigma: Standard deviation of those tail draws.
    """

    action_noise_sigma: float = 0.2
    random_sigma: float = 0.6
    tail_share: float = 0.0
    tail_sigma: float = 1.0

    def __post_init__(self) -> None:
        require(self.action_noise_sigma > 0, "exploration.action_noise_sigma", "expected > 0")
        require(self.random_sigma > 0, "exploration.random_sigma", "expected > 0")
        require(0 <= self.tail_share < 1, "exploration.tail_share", "expected a number in [0, 1)")
        require(self.tail_sigma > 0, "exploration.tail_sigma", "expected > 0")


@dataclass(frozen=True)
class PlatformSpec:
    """A whole simulated platform (one ``envs/*.toml``).

    Attributes:
        world: Catalogue and request shape.
        responses: Feedback column -> true response model, in log column order.
        segments: User segments.
        users: Users and their visible features.
        session: Session dynamics.
        fusion: Fusion formula, bounds and production weights.
        predictor: The frozen predictor.
        exploration: Logging-policy defaults.
        reward: The request reward.
        features: The state features (must match the ``build-dataset`` options used on logs).
        source: The file it was read from.
        learned: The learned world's artefacts (``world.kind = "learned"`` only).
    """

    world: WorldSpec
    responses: Mapping[str, ResponseSpec]
    segments: tuple[SegmentSpec, ...]
    users: UsersSpec
    session: SessionSpec
    fusion: FusionSpec
    predictor: PredictorSpec
    exploration: ExplorationSpec
    reward: RewardConfig
    features: FeatureConfig
    source: str = "<spec>"
    learned: LearnedSpec | None = None

    @property
    def tasks(self) -> tuple[str, ...]:
        """Task names in action order."""
        return self.world.tasks

    @property
    def feedback(self) -> tuple[str, ...]:
        """Feedback columns in log order (the responses)."""
        return tuple(self.responses)

    @property
    def root(self) -> str:
        """The first response (engagement); ``sat_factors`` apply to items where it is 1."""
        return next(iter(self.responses))

    def check(self) -> None:
        """Cross-table checks; raise :class:`ConfigError` naming the file and key."""
        src = self.source
        names = list(self.responses)
        factors = set(self.world.factors)
        for name, r in self.responses.items():
            where = f"{src}: responses.{name}"
            if r.given and (r.given not in names or names.index(r.given) >= names.index(name)):
                raise ConfigError(f"{where}.given: expected an earlier response, found {r.given!r}")
            if r.given and self.responses[r.given].kind != "binary":
                raise ConfigError(f"{where}.given: expected a binary response, found {r.given!r}")
            if r.kind == "threshold":
                if r.of not in names or self.responses[r.of].kind != "watch":
                    raise ConfigError(f"{where}.of: expected a watch response, found {r.of!r}")
                if names.index(r.of) >= names.index(name):
                    raise ConfigError(f"{where}.of: {r.of!r} must come before {name!r}")
            bad = sorted(set(r.loadings) - factors)
            if bad:
                raise ConfigError(
                    f"{where}.loadings: unknown factor(s) {bad}; world.factors are "
                    f"{sorted(factors)}"
                )
        if self.responses[self.root].kind != "binary" or self.responses[self.root].given:
            raise ConfigError(
                f"{src}: responses: the first response ({self.root!r}) must be binary without 'given'"
            )
        for t in self.tasks:
            if t not in self.responses or self.responses[t].kind == "watch":
                raise ConfigError(
                    f"{src}: world.tasks: task {t!r} must be a binary or threshold response; "
                    f"responses are {names}"
                )
        k = len(self.tasks)
        if len(self.fusion.production) != k:
            raise ConfigError(
                f"{src}: fusion.production: expected {k} weights (tasks {list(self.tasks)}), "
                f"found {len(self.fusion.production)}"
            )
        if self.fusion.formula == "logsum" and len(self.fusion.beta) != k:
            raise ConfigError(
                f"{src}: fusion.beta: expected {k} values for formula 'logsum', "
                f"found {len(self.fusion.beta)}"
            )
        if self.predictor.kind == "noisy-truth" and len(self.predictor.noise) not in (1, k):
            raise ConfigError(f"{src}: predictor.noise: expected 1 or {k} values")
        if not self.segments:
            raise ConfigError(f"{src}: segments: expected at least one [[segments]] table")
        ufs = set(self.users.features)
        for s in self.segments:
            where = f"{src}: segments.{s.name}"
            for key, table, allowed in (
                ("hints", s.hints, ufs),
                ("offsets", s.offsets, set(names)),
                ("sat_feedback", s.sat_feedback, set(names)),
                ("sat_factors", s.sat_factors, factors),
            ):
                bad = sorted(set(table) - allowed)
                if bad:
                    raise ConfigError(
                        f"{where}.{key}: unknown name(s) {bad}; expected one of {sorted(allowed)}"
                    )
        seg_names = [s.name for s in self.segments]
        if len(set(seg_names)) != len(seg_names):
            raise ConfigError(f"{src}: segments: expected distinct names, found {seg_names}")
        try:
            self.reward.check_columns(names, f"{src} [responses]")
        except ConfigError as exc:
            raise ConfigError(f"{src}: reward: {exc}") from None
        unknown_fb = [c for c in self.features.feedback if c not in names]
        if unknown_fb:
            raise ConfigError(f"{src}: features.feedback: unknown column(s) {unknown_fb}")
        if self.world.kind == "learned":
            if self.learned is None:
                raise ConfigError(f"{src}: world.kind = 'learned' needs a [learned] table")
            empty = [k for k, v in self.learned.paths().items() if not v]
            if empty:
                raise ConfigError(f"{src}: learned: missing path(s) for {empty}")
            if self.predictor.kind != "artefact":
                raise ConfigError(
                    f"{src}: predictor.kind: a learned world ranks with an artefact predictor; "
                    f"found {self.predictor.kind!r}"
                )
        elif self.learned is not None:
            raise ConfigError(f"{src}: [learned] is only allowed with world.kind = 'learned'")


def _table(doc: Mapping[str, object], key: str, src: str) -> Mapping[str, object]:
    value = doc.get(key, {})
    if not isinstance(value, Mapping):
        raise ConfigError(f"{src}: [{key}]: expected a table, found {value!r}")
    return value


def _noise_tuple(table: Mapping[str, object]) -> dict[str, object]:
    out = dict(table)
    if (
        "noise" in out
        and isinstance(out["noise"], (int, float))
        and not isinstance(out["noise"], bool)
    ):
        out["noise"] = [out["noise"]]
    return out


def parse_spec(doc: Mapping[str, object], source: str = "<spec>") -> PlatformSpec:
    """Build a :class:`PlatformSpec` from a parsed TOML document.

    Raises:
        ConfigError: Unknown keys (at any level), wrong types, or inconsistent tables.
    """
    unknown = sorted(set(doc) - set(TOP_LEVEL))
    if unknown:
        raise ConfigError(
            f"{source}: unknown top-level key(s) {unknown}; expected {', '.join(TOP_LEVEL)}"
        )
    for key in ("world", "responses", "segments", "fusion", "reward"):
        if key not in doc:
            raise ConfigError(f"{source}: missing the [{key}] table")
    world = config_from_mapping(WorldSpec, _table(doc, "world", source), f"{source}: world")
    raw_resp = _table(doc, "responses", source)
    responses: dict[str, ResponseSpec] = {}
    for name, table in raw_resp.items():
        if not isinstance(table, Mapping):
            raise ConfigError(f"{source}: responses.{name}: expected a table, found {table!r}")
        responses[str(name)] = config_from_mapping(
            ResponseSpec, table, f"{source}: responses.{name}"
        )
    if not responses:
        raise ConfigError(f"{source}: [responses]: expected at least one response")
    raw_segments = doc["segments"]
    if not isinstance(raw_segments, list):
        raise ConfigError(f"{source}: segments: expected [[segments]] tables")
    segments = tuple(
        config_from_mapping(SegmentSpec, s, f"{source}: segments[{i}]")
        for i, s in enumerate(raw_segments)
    )
    reward_table = doc["reward"]
    if not isinstance(reward_table, Mapping):
        raise ConfigError(f"{source}: [reward]: expected a table")
    spec = PlatformSpec(
        world=world,
        responses=responses,
        segments=segments,
        users=config_from_mapping(UsersSpec, _table(doc, "users", source), f"{source}: users"),
        session=config_from_mapping(
            SessionSpec, _table(doc, "session", source), f"{source}: session"
        ),
        fusion=config_from_mapping(FusionSpec, _table(doc, "fusion", source), f"{source}: fusion"),
        predictor=config_from_mapping(
            PredictorSpec,
            _noise_tuple(_table(doc, "predictor", source)),
            f"{source}: predictor",
        ),
        exploration=config_from_mapping(
            ExplorationSpec, _table(doc, "exploration", source), f"{source}: exploration"
        ),
        reward=parse_reward({"reward": reward_table}, f"{source} [reward]"),
        features=config_from_mapping(
            FeatureConfig, _table(doc, "features", source), f"{source}: features"
        ),
        source=source,
        learned=(
            config_from_mapping(LearnedSpec, _table(doc, "learned", source), f"{source}: learned")
            if "learned" in doc
            else None
        ),
    )
    spec.check()
    return spec


def load_spec(path: str | Path | None = None) -> PlatformSpec:
    """Read a platform spec; ``None`` is ``envs/short_video.toml``.

    A bare name without ``.toml`` (``"ecommerce"``) means a shipped spec in ``envs/``.

    Raises:
        ConfigError: The file is missing, not TOML, or not a valid spec.
    """
    if path is None:
        p = default_spec_path()
    else:
        p = Path(path)
        if not p.suffix and not p.exists():
            p = default_spec_path(str(path))
    try:
        doc = tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{p}: platform spec not found") from None
    except (OSError, UnicodeDecodeError, RecursionError) as exc:
        raise ConfigError(f"{p}: not a readable UTF-8 TOML file ({type(exc).__name__})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: not valid TOML ({exc})") from None
    spec = parse_spec(doc, str(p))
    from dataclasses import replace

    if spec.predictor.kind == "artefact" and not Path(spec.predictor.path).is_absolute():
        spec = replace(
            spec,
            predictor=replace(spec.predictor, path=str((p.parent / spec.predictor.path).resolve())),
        )
    if spec.learned is not None:
        resolved = {
            k: v if Path(v).is_absolute() else str((p.parent / v).resolve())
            for k, v in spec.learned.paths().items()
        }
        spec = replace(
            spec,
            learned=LearnedSpec(**resolved, candidates=spec.learned.candidates),
        )
    return spec
