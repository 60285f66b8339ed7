"""Train a fusion policy on an MDP dataset with a d3rlpy algorithm (``batchrl-mtf train``).

The loop is d3rlpy's own (``algo.update`` on sampled transition batches, as ``algo.fit`` does)
run by us, so that no d3rlpy log directory appears in the user's working directory, epochs may be
shorter than ``n_steps_per_epoch`` at the end, and an interrupted run still leaves a usable,
resumable policy directory. Observations are standardised with the dataset's statistics and
actions min-max scaled to the action box (``TrainConfig.action_box``: by default the training
split's 1%-99% logged quantiles per task), both inside the d3rlpy model, so the saved model maps
raw states to weights within that box.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from tqdm.auto import tqdm

from batchrl_mtf.core.d3rlpy import load_d3rlpy
from batchrl_mtf.core.io import atomic_dir, dumps_json, output_dir, package_versions, read_json
from batchrl_mtf.data.box import action_box, parse_action_box
from batchrl_mtf.data.formats import load_dataset
from batchrl_mtf.data.spec import DatasetSpec
from batchrl_mtf.data.transitions import Transitions
from batchrl_mtf.errors import ConfigError, DatasetError, PolicyError
from batchrl_mtf.training.checkpoint import (
    MODEL_CONFIG,
    MODEL_WEIGHTS,
    RNG_STATE,
    inside,
    load_algo,
    load_rng_state,
    rng_state_json,
    save_algo,
    set_rng_state,
)
from batchrl_mtf.training.config import RUNTIME_FIELDS, TrainConfig, resolve_config
from batchrl_mtf.training.envs import make_env_evaluator
from batchrl_mtf.training.policy import POLICY_FORMAT, TrainedPolicy, read_manifest

__all__ = ["EnvEvaluator", "TrainResult", "build_algo", "config_for_resume", "train"]

logger = logging.getLogger(__name__)

#: Called with the current policy; returns (mean, low, high) of the true return (95% interval).
EnvEvaluator = Callable[[TrainedPolicy], tuple[float, float, float]]

MAX_EVAL_EPISODES = 2_000
ACTION_STATS_STATES = 4_096


@dataclass(frozen=True)
class TrainResult:
    """What :func:`train` did.

    Attributes:
        path: The policy directory.
        config: The resolved config (``gamma`` filled in from the dataset).
        n_steps_done: Gradient steps in the saved model (all runs of a resumed training).
        seconds: Wall-clock seconds of gradient steps and evaluation in this call.
        metrics: One mapping per epoch (all runs), as in ``metrics.csv``.
    """

    path: Path
    config: TrainConfig
    n_steps_done: int
    seconds: float
    metrics: tuple[dict[str, float], ...]


def _check_device(device: str) -> None:
    import torch

    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device: {device!r} requested but torch sees no CUDA device")
    if device.startswith("cuda") and ":" in device:
        index = int(device.split(":")[1])
        if index >= torch.cuda.device_count():
            raise ConfigError(
                f"device: {device!r} requested but torch sees {torch.cuda.device_count()} device(s)"
            )


def build_algo(
    config: TrainConfig,
    spec: DatasetSpec,
    bounds: tuple[npt.ArrayLike, npt.ArrayLike] | None = None,
) -> Any:
    """The d3rlpy algorithm for ``config``, with scalers from ``spec`` (not yet built).

    Args:
        config: The run's settings.
        spec: The dataset's spec (feature statistics, action bounds).
        bounds: Action bounds ``(low, high)``, each shape (n_tasks,) (the ``action_box`` of the
            training split, :func:`batchrl_mtf.data.box.action_box`); ``None`` = the dataset's
            ``action_low``/``action_high``.
    """
    d3rlpy = load_d3rlpy()

    low, high = (spec.action_low, spec.action_high) if bounds is None else bounds

    cfg_cls = getattr(d3rlpy.algos, config.spec.d3rlpy_config)
    kwargs: dict[str, Any] = dataclasses.asdict(config.params)
    kwargs["batch_size"] = config.batch_size
    kwargs["gamma"] = with_dataset_gamma(config, spec).gamma
    kwargs["observation_scaler"] = d3rlpy.preprocessing.StandardObservationScaler(
        mean=np.asarray(spec.features.mean, dtype=np.float32),
        std=np.asarray(spec.features.std, dtype=np.float32),
    )
    kwargs["action_scaler"] = d3rlpy.preprocessing.MinMaxActionScaler(
        minimum=np.asarray(low, dtype=np.float32),
        maximum=np.asarray(high, dtype=np.float32),
    )
    if config.reward_scale != 1.0:
        kwargs["reward_scaler"] = d3rlpy.preprocessing.MultiplyRewardScaler(config.reward_scale)
    if config.hidden_units:
        factory = d3rlpy.models.VectorEncoderFactory(hidden_units=list(config.hidden_units))
        for f in dataclasses.fields(cfg_cls):
            if f.name.endswith("encoder_factory"):
                kwargs[f.name] = factory
    return cfg_cls(**kwargs).create(device=config.device)


def _seed_all(seed: int) -> None:
    d3rlpy = load_d3rlpy()

    d3rlpy.seed(seed)


def check_finite_data(data: Transitions) -> None:
    """Raise :class:`DatasetError` unless states, actions and rewards are finite in float32.

    d3rlpy trains in float32: a value beyond about 3.4e38 becomes infinite there and the policy
    all NaN.
    """
    where = data.path or "dataset"
    spec = data.spec
    for name, values in (
        ("features.json mean", spec.features.mean),
        ("features.json std", spec.features.std),
    ):
        arr = np.asarray(values, dtype=np.float64)
        if not np.isfinite(arr.astype(np.float32)).all():
            raise DatasetError(
                f"{where}: {name} is not finite in float32 ({arr.tolist()!r:.120}); rebuild the "
                "dataset from logs that pass `batchrl-mtf validate`"
            )
    for name, column in (
        ("observations", data.observations),
        ("actions", data.actions),
        ("rewards", data.rewards),
    ):
        with np.errstate(over="ignore", invalid="ignore"):
            bad = ~np.isfinite(np.asarray(column, dtype=np.float64).astype(np.float32))
        if bad.any():
            rows = np.flatnonzero(bad.reshape(len(bad), -1).any(axis=1))
            sessions = sorted({str(s) for s in np.asarray(data.session_id)[rows[:3]]})
            raise DatasetError(
                f"{where}: {len(rows)} transition(s) have {name} that are not finite in float32 "
                f"(sessions {', '.join(sessions)}, ...); training refused (rebuild the dataset "
                "from logs that pass `batchrl-mtf validate`)"
            )


def _check_finite_model(algo: Any, step: int) -> None:
    import torch

    for name, module in algo.impl.modules.create_checkpointer(algo.impl.device).modules.items():
        if not isinstance(module, torch.nn.Module):
            continue
        for pname, value in module.state_dict().items():
            if value.is_floating_point() and not bool(torch.isfinite(value).all()):
                raise PolicyError(
                    f"training diverged at step {step}: {name}.{pname} is not finite; the policy "
                    "was not saved (lower the learning rate or reward_scale, or check the rewards)"
                )


def _metrics_csv(rows: Sequence[dict[str, float]]) -> str:
    keys: list[str] = []
    for row in rows:
        keys.extend(k for k in row if k not in keys)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=keys, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: row.get(k, "") for k in keys})
    return buf.getvalue()


def _read_metrics(path: Path) -> list[dict[str, float]]:
    if not path.is_file():
        return []
    with open(path, newline="", encoding="utf-8") as fh:
        return [{k: float(v) for k, v in row.items() if v != ""} for row in csv.DictReader(fh)]


def _write_tensorboard(root: Path, rows: Sequence[dict[str, float]]) -> None:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard not installed: CSV only
        return
    writer = SummaryWriter(log_dir=str(root / "tensorboard"))
    for row in rows:
        step = int(row.get("step", 0))
        for key, value in row.items():
            if key not in ("step", "epoch"):
                writer.add_scalar(key, value, step)
    writer.close()


@dataclass
class _Run:
    """Mutable state of one training call (internal)."""

    config: TrainConfig
    spec: DatasetSpec
    algo: Any
    out: Path
    metrics: list[dict[str, float]]
    done: int
    seconds_before: float
    bounds: tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]] | None = None

    def policy(self) -> TrainedPolicy:
        return TrainedPolicy(self.algo, self.spec, name=str(self.out))

    def save(self, seconds: float, complete: bool) -> None:
        _check_finite_model(self.algo, self.done)
        manifest = {
            "format": POLICY_FORMAT,
            "algo": self.config.algo,
            "preset": self.config.preset,
            "tasks": list(self.spec.tasks),
            "feature_names": list(self.spec.features.names),
            "action_low": list(self.spec.action_low),
            "action_high": list(self.spec.action_high),
            "action_box": None
            if self.bounds is None
            else {
                "rule": self.config.action_box,
                "low": [float(x) for x in self.bounds[0]],
                "high": [float(x) for x in self.bounds[1]],
            },
            "gamma": self.config.gamma,
            "dataset_hash": self.spec.dataset_hash,
            "data_hash": self.spec.data_hash,
            "versions": package_versions(),
            "n_steps": self.config.n_steps,
            "n_steps_done": self.done,
            "complete": complete,
            "training_seconds": round(self.seconds_before + seconds, 3),
            "model": MODEL_WEIGHTS,
            "model_config": MODEL_CONFIG,
            "checkpoint": MODEL_WEIGHTS,
            "rng_state": RNG_STATE,
            "files": [
                "config.json",
                "features.json",
                "metrics.csv",
                MODEL_CONFIG,
                MODEL_WEIGHTS,
                RNG_STATE,
            ],
        }
        with atomic_dir(self.out, kind="policy") as tmp:
            save_algo(self.algo, tmp)
            (tmp / RNG_STATE).write_text(rng_state_json(self.done), encoding="utf-8")
            (tmp / "config.json").write_text(dumps_json(self.config.to_dict()), encoding="utf-8")
            (tmp / "features.json").write_text(dumps_json(self.spec.to_dict()), encoding="utf-8")
            (tmp / "metrics.csv").write_text(_metrics_csv(self.metrics), encoding="utf-8")
            (tmp / "policy.json").write_text(dumps_json(manifest), encoding="utf-8")
            _write_tensorboard(tmp, self.metrics)


def with_dataset_gamma(config: TrainConfig, spec: DatasetSpec) -> TrainConfig:
    """``config`` with ``gamma`` resolved as :func:`train` saves it (``None``: the dataset's)."""
    return config if config.gamma is not None else dataclasses.replace(config, gamma=spec.gamma)


def _other_dataset(manifest: dict[str, Any], spec: DatasetSpec) -> str | None:
    """The dataset hash a saved policy was trained on when it is not ``spec``'s, else ``None``."""
    saved = manifest.get("dataset_hash")
    return None if saved == spec.dataset_hash else str(saved)


def _settings_differ(
    saved_doc: dict[str, Any], config: TrainConfig, ignore: frozenset[str] = frozenset()
) -> list[str]:
    """The settings (outside ``ignore``) in which a saved ``config.json`` and ``config`` differ;
    read through :func:`resolve_config`, so that settings added since the save compare at their
    defaults."""
    old, now = resolve_config([], base=saved_doc).to_dict(), config.to_dict()
    return sorted(k for k in set(old) | set(now) if k not in ignore and old.get(k) != now.get(k))


def _resume_state(out: Path, config: TrainConfig, spec: DatasetSpec) -> tuple[Any, int, float]:
    """Load the checkpoint of ``out``; check it fits ``config`` and the dataset."""
    manifest = read_manifest(out)
    other = _other_dataset(manifest, spec)
    if other is not None:
        raise DatasetError(
            f"--resume {out}: the policy was trained on dataset {other}; "
            f"the dataset given is {spec.dataset_hash}"
        )
    differ = _settings_differ(_saved_config(out), config, RUNTIME_FIELDS)
    if differ:
        raise ConfigError(
            f"--resume {out}: settings {', '.join(differ)} differ from the saved config.json "
            f"(only {', '.join(sorted(RUNTIME_FIELDS))} may change on resume)"
        )
    done = int(manifest.get("n_steps_done", 0))
    rng_path = inside(out, manifest.get("rng_state", RNG_STATE), "rng_state")
    state = load_rng_state(rng_path)  # before the model: a bad file fails fast
    algo = load_algo(
        inside(out, manifest.get("model_config", MODEL_CONFIG), "model_config"),
        inside(out, manifest.get("checkpoint", MODEL_WEIGHTS), "checkpoint"),
        config.device,
    )
    set_rng_state(state, rng_path)
    algo.set_grad_step(state["grad_step"])
    return algo, done, float(manifest.get("training_seconds", 0.0))


def _epoch_metrics(
    run: _Run,
    losses: dict[str, list[float]],
    eval_obs: np.ndarray,
    test_episodes: Sequence[Any] | None,
    buffer: Any,
    env_eval: EnvEvaluator | None,
    epoch: int,
    elapsed: float,
) -> dict[str, float]:
    d3rlpy = load_d3rlpy()

    row: dict[str, float] = {"epoch": float(epoch), "step": float(run.done)}
    row["train_seconds"] = round(run.seconds_before + elapsed, 3)
    for name, values in sorted(losses.items()):
        row[name] = float(np.mean(values))
    if run.config.spec.has_q and test_episodes:
        row["td_error"] = float(
            d3rlpy.metrics.TDErrorEvaluator(episodes=test_episodes)(run.algo, buffer)
        )
        row["initial_state_value"] = float(
            d3rlpy.metrics.InitialStateValueEstimationEvaluator(episodes=test_episodes)(
                run.algo, buffer
            )
        )
    policy = run.policy()
    acts = policy.act(eval_obs)
    for i, task in enumerate(run.spec.tasks):
        row[f"action_mean_{task}"] = float(acts[:, i].mean())
        row[f"action_std_{task}"] = float(acts[:, i].std())
    if env_eval is not None:
        mean, low, high = env_eval(policy)
        row["true_return"] = mean
        row["true_return_low"] = low
        row["true_return_high"] = high
    return row


def _check_resume(out: Path) -> None:
    if not (out / "policy.json").is_file():
        raise PolicyError(f"--resume {out}: no policy.json there; nothing to resume")
    read_manifest(out)  # refuses a directory of the previous release with its one line


def train(
    dataset: Transitions | str | Path,
    out: str | Path,
    config: TrainConfig | None = None,
    *,
    resume: bool = False,
    overwrite: bool = False,
    show_progress: bool = False,
    env_evaluator: EnvEvaluator | None = None,
) -> TrainResult:
    """Train a policy and write its directory (atomically, at every checkpoint and at the end).

    Args:
        dataset: A loaded dataset or a dataset directory.
        out: The policy directory to write.
        config: The run's settings; defaults to ``TrainConfig()`` (BCQ, CPU defaults).
        resume: Continue from the checkpoint in ``out`` up to ``config.n_steps`` total steps.
        overwrite: Replace a policy directory already in ``out`` (otherwise refused).
        show_progress: Show a progress bar (tqdm, on stderr).
        env_evaluator: Called with the policy every ``config.eval_every`` epochs and at the end
            to measure the true return; ``None`` = build one from ``config.env`` when set.

    Returns:
        What was done; the directory holds the model, config, spec, metrics and manifest.

    Raises:
        DatasetError: Unusable dataset, or ``resume`` with a different dataset.
        ConfigError: Invalid settings, or ``resume`` with changed learning settings.
        PolicyError: A non-finite policy (not saved), or ``resume`` of a directory that cannot
            be resumed.
        OutputError: ``out`` cannot be written safely (see :func:`~batchrl_mtf.core.io.output_dir`).
    """

    load_d3rlpy()  # quiet import before torch work

    config = config or TrainConfig()
    data = dataset if isinstance(dataset, Transitions) else load_dataset(dataset)
    spec = data.spec
    if len(spec.features.mean) != len(spec.features.names):
        raise DatasetError(
            f"{data.path or 'dataset'}: features.json lacks normalisation statistics"
        )
    config = with_dataset_gamma(config, spec)
    _check_device(config.device)
    check_finite_data(data)
    out_path = Path(out)
    if resume:
        _check_resume(out_path)
    inputs = [data.path] if data.path else []
    with output_dir(out_path, "policy", inputs=inputs, overwrite=overwrite, resume=resume):
        return _train(data, out_path, config, resume, show_progress, env_evaluator)


def _train(
    data: Transitions,
    out_path: Path,
    config: TrainConfig,
    resume: bool,
    show_progress: bool,
    env_evaluator: EnvEvaluator | None,
) -> TrainResult:
    import torch

    spec = data.spec
    if config.n_threads:
        torch.set_num_threads(config.n_threads)
    if env_evaluator is None and config.env:
        env_evaluator = make_env_evaluator(
            config.env, spec, n_episodes=config.eval_episodes, seed=config.seed
        )

    train_data = data.select(config.split if config.split != "all" else None)
    buffer = train_data.to_d3rlpy()
    has_test = bool((data.split == "test").any())
    test = data.select("test") if has_test else train_data
    test_episodes = list(test.to_d3rlpy().episodes)[:MAX_EVAL_EPISODES]  # type: ignore[attr-defined]
    eval_obs = test.observations[:ACTION_STATS_STATES]

    if parse_action_box(config.action_box) is None:  # minmax: the dataset's own bounds
        bounds = (
            np.asarray(spec.action_low, dtype=np.float64),
            np.asarray(spec.action_high, dtype=np.float64),
        )
    else:
        bounds = action_box(train_data.actions, config.action_box)
    if resume:
        algo, done, seconds_before = _resume_state(out_path, config, spec)
        metrics = _read_metrics(out_path / "metrics.csv")
    else:
        _seed_all(config.seed)
        algo = build_algo(config, spec, bounds)
        algo.build_with_dataset(buffer)
        done, seconds_before, metrics = 0, 0.0, []
    run = _Run(config, spec, algo, out_path, metrics, done, seconds_before, bounds)
    if done >= config.n_steps:
        logger.info("%s already has %d of %d steps; nothing to do", out_path, done, config.n_steps)
        return TrainResult(out_path, config, done, 0.0, tuple(metrics))

    logger.info(
        "training %s on %d transitions (%d sessions), %d features -> %d weights, %d steps on %s",
        config.algo,
        len(train_data),
        train_data.n_sessions,
        len(spec.features.names),
        len(spec.tasks),
        config.n_steps - done,
        config.device,
    )
    start = time.perf_counter()
    epoch = len(metrics)
    bar = tqdm(
        total=config.n_steps, initial=done, disable=not show_progress, unit="step", desc=config.algo
    )
    try:
        while run.done < config.n_steps:
            epoch += 1
            n = min(config.n_steps_per_epoch, config.n_steps - run.done)
            losses: dict[str, list[float]] = defaultdict(list)
            for i in range(n):
                batch = buffer.sample_transition_batch(config.batch_size)  # type: ignore[attr-defined]
                for key, value in algo.update(batch).items():
                    losses[key].append(float(value))
                run.done += 1
                if i % 50 == 49 or i == n - 1:
                    bar.update(run.done - bar.n)
                    bar.set_postfix({k: f"{np.mean(v[-50:]):.4g}" for k, v in losses.items()})
            last = run.done >= config.n_steps
            env_now = env_evaluator is not None and (
                last or (config.eval_every > 0 and epoch % config.eval_every == 0)
            )
            row = _epoch_metrics(
                run,
                losses,
                eval_obs,
                test_episodes,
                buffer,
                env_evaluator if env_now else None,
                epoch,
                time.perf_counter() - start,
            )
            run.metrics.append(row)
            logger.info(
                "epoch %d step %d: %s",
                epoch,
                run.done,
                ", ".join(f"{k}={v:.4g}" for k, v in row.items() if k not in ("epoch", "step")),
            )
            if last or (config.checkpoint_every and epoch % config.checkpoint_every == 0):
                run.save(time.perf_counter() - start, complete=last)
    except KeyboardInterrupt:
        bar.close()
        run.save(time.perf_counter() - start, complete=False)
        logger.warning(
            "interrupted at step %d; %s holds that checkpoint (continue with --resume)",
            run.done,
            out_path,
        )
        raise
    bar.close()
    seconds = time.perf_counter() - start
    return TrainResult(out_path, config, run.done, seconds, tuple(run.metrics))


def reuse_mismatch(out: str | Path, config: TrainConfig, spec: DatasetSpec) -> str | None:
    """Why the policy directory ``out`` is not what ``train(dataset, out, config)`` would write
    now, or ``None`` when it is.

    It is when its training is complete, on the same dataset (``dataset_hash``), with the same
    resolved settings (every field of ``config``, including ``n_steps`` and ``n_threads``) and by
    the same versions of the packages that decide results (:func:`package_versions`). Training
    is deterministic given those (the same bytes), so such a directory can stand in for a new
    training (``select --reuse``).
    """
    path = Path(out)
    try:
        manifest = read_manifest(path)
        saved_doc = read_json(path / "config.json", PolicyError)
        if not isinstance(saved_doc, dict):
            return "its config.json is not a JSON object"
        differ = _settings_differ(saved_doc, with_dataset_gamma(config, spec))
    except (PolicyError, ConfigError) as exc:
        return str(exc)
    if not manifest.get("complete") or manifest.get("n_steps_done") != config.n_steps:
        return f"its training is not complete at {config.n_steps} steps"
    other = _other_dataset(manifest, spec)
    if other is not None:
        return f"it was trained on dataset {other}, not {spec.dataset_hash}"
    if differ:
        return f"its settings {', '.join(differ)} differ"
    versions, saved_versions = package_versions(), manifest.get("versions") or {}
    stale = sorted(k for k, v in versions.items() if saved_versions.get(k) != v)
    if stale:
        return f"it was trained with other versions of {', '.join(stale)}"
    return None


def config_for_resume(out: str | Path, layers: list[tuple[str, Any]]) -> TrainConfig:
    """The saved config of policy directory ``out`` with ``layers`` of overrides on top."""
    return resolve_config(layers, base=_saved_config(Path(out)))


def _saved_config(out: Path) -> dict[str, Any]:
    """The ``config.json`` of policy directory ``out``, checked to be a JSON object."""
    path = out / "config.json"
    if not path.is_file():
        raise PolicyError(f"--resume {out}: no config.json there; nothing to resume")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise PolicyError(f"--resume {path}: not valid JSON ({exc}); cannot resume") from None
    if not isinstance(doc, dict):
        raise PolicyError(f"--resume {path}: expected a JSON object; cannot resume")
    return doc
