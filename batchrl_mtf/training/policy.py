"""Trained fusion policies: the policy directory's manifest and :func:`load_policy`.

A policy directory (``batchrl-mtf train ... --out POLICY_DIR``) holds:

- ``model.json`` + ``model.safetensors``: the d3rlpy model without pickle (its serialised config,
  scalers included, and the state dicts of its networks and optimizers; see
  :mod:`batchrl_mtf.training.checkpoint`); also the checkpoint ``--resume`` continues from;
- ``rng_state.json``: random-number-generator states and the gradient-step counter at the
  checkpoint;
- ``config.json``: the resolved :class:`~batchrl_mtf.training.config.TrainConfig`;
- ``features.json``: the dataset's spec (features, normalisation statistics, tasks, bounds);
- ``metrics.csv``: one row per epoch;
- ``policy.json``: the manifest (format ``batchrl-mtf/policy@2``);
- ``.batchrl-mtf.json``: the marker saying batchrl-mtf wrote the directory.

Nothing in a policy directory is unpickled: a directory of the previous release
(``batchrl-mtf/policy@1``, pickled ``model.d3``) is refused with a line saying how to re-create or
convert it (``batchrl-mtf upgrade DIR --trust-pickle``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from batchrl_mtf.data.dataset import DatasetSpec
from batchrl_mtf.data.features import FeatureSpec
from batchrl_mtf.errors import DatasetError, PolicyError
from batchrl_mtf.training.checkpoint import MODEL_CONFIG, MODEL_WEIGHTS, inside, load_algo

__all__ = [
    "LEGACY_POLICY_FORMAT",
    "POLICY_FORMAT",
    "TrainedPolicy",
    "check_feature_spec",
    "legacy_message",
    "load_policy",
    "read_manifest",
]

POLICY_FORMAT = "batchrl-mtf/policy@2"
LEGACY_POLICY_FORMAT = "batchrl-mtf/policy@1"
"""The previous release's format: the model is a pickle (``model.d3``), so it is never loaded."""
FloatArray = npt.NDArray[np.float64]
ACT_SEED = 0


def check_feature_spec(
    trained: DatasetSpec,
    other: DatasetSpec | FeatureSpec | Sequence[str],
    policy_name: str,
    source: str,
) -> None:
    """Raise :class:`PolicyError` unless ``other`` has the features (and tasks) of ``trained``.

    Args:
        trained: The spec the policy was trained on.
        other: The dataset spec, feature spec or feature names of the data the policy meets.
        policy_name: The policy, for the message.
        source: Where ``other`` came from (a dataset directory, ``"logs"``), for the message.
    """
    if isinstance(other, DatasetSpec):
        theirs = other.features.names
        if tuple(other.tasks) != tuple(trained.tasks):
            raise PolicyError(
                f"{policy_name}: task mismatch: the policy sets weights for tasks "
                f"{list(trained.tasks)}; {source} has tasks {list(other.tasks)}"
            )
    elif isinstance(other, FeatureSpec):
        theirs = other.names
    else:
        theirs = tuple(other)
    mine = trained.features.names
    if tuple(theirs) != tuple(mine):
        missing = [n for n in mine if n not in theirs]
        extra = [n for n in theirs if n not in mine]
        detail = (
            f" (missing {missing}, extra {extra})" if missing or extra else " (different order)"
        )
        raise PolicyError(
            f"{policy_name}: feature spec mismatch: the policy was trained on features "
            f"{list(mine)}; {source} has {list(theirs)}{detail}"
        )


class TrainedPolicy:
    """A d3rlpy policy trained by :func:`batchrl_mtf.training.train` (implements ``Policy``).

    Args:
        algo: The d3rlpy algorithm (with its observation and action scalers).
        spec: The spec of the dataset it was trained on.
        name: Display name (the policy directory).
        manifest: The ``policy.json`` document (empty for an in-memory policy).
    """

    def __init__(
        self, algo: Any, spec: DatasetSpec, name: str, manifest: dict[str, Any] | None = None
    ) -> None:
        self.algo = algo
        self.spec = spec
        self.manifest: dict[str, Any] = dict(manifest or {})
        self._name = name
        self._low = np.asarray(spec.action_low, dtype=np.float64)
        self._high = np.asarray(spec.action_high, dtype=np.float64)

    @property
    def name(self) -> str:
        """Display name."""
        return self._name

    @property
    def tasks(self) -> tuple[str, ...]:
        """Task names in action order."""
        return tuple(self.spec.tasks)

    @property
    def feature_names(self) -> tuple[str, ...]:
        """State feature names in observation order."""
        return tuple(self.spec.features.names)

    @property
    def action_low(self) -> FloatArray:
        """Lower weight bounds, shape (n_tasks,)."""
        return self._low.copy()

    @property
    def action_high(self) -> FloatArray:
        """Upper weight bounds, shape (n_tasks,)."""
        return self._high.copy()

    def check(self, other: DatasetSpec | FeatureSpec | Sequence[str], source: str) -> None:
        """Raise :class:`PolicyError` unless ``other`` matches the training features and tasks."""
        check_feature_spec(self.spec, other, self._name, source)

    def act(self, observations: FloatArray) -> FloatArray:
        """Fusion weights for a batch of raw states.

        Args:
            observations: Shape (n, n_features), raw (the policy normalises them itself).

        Returns:
            Shape (n, n_tasks), float64, within the dataset's action bounds.

        Raises:
            PolicyError: Wrong number of features or non-finite states.
        """
        obs = np.asarray(observations, dtype=np.float64)
        if obs.ndim == 1:
            obs = obs.reshape(1, -1)
        d = len(self.spec.features.names)
        if obs.ndim != 2 or obs.shape[1] != d:
            raise PolicyError(
                f"{self._name}: expected observations of shape (n, {d}) "
                f"(features {', '.join(self.spec.features.names)}), found {obs.shape}"
            )
        if obs.shape[0] == 0:
            return np.zeros((0, len(self.tasks)))
        if not np.isfinite(obs).all():
            raise PolicyError(f"{self._name}: observations contain NaN or infinite values")
        import torch

        out = np.empty((obs.shape[0], len(self.tasks)))
        chunk = 8192
        # BCQ draws candidate actions from its VAE when acting: a fixed, private generator state
        # makes every call with the same states return the same weights (and leaves the caller's
        # random state alone).
        devices = (
            [self.algo.impl.device] if "cuda" in str(getattr(self.algo.impl, "device", "")) else []
        )
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(ACT_SEED)
            for i in range(0, obs.shape[0], chunk):
                x = obs[i : i + chunk].astype(np.float32)
                out[i : i + chunk] = np.asarray(self.algo.predict(x), dtype=np.float64)
        return np.clip(out, self._low, self._high)


def legacy_message(root: Path) -> str:
    """The one line that refuses a policy directory of the previous release."""
    return (
        f"{root}: a policy directory of the previous release (pickled model.d3, which could run "
        "code when loaded); refused. Re-create it with `batchrl-mtf train DATASET --out DIR`, or, "
        f"only if you trust where it came from, convert it: `batchrl-mtf upgrade {root} "
        "--trust-pickle`"
    )


def read_manifest(path: str | Path, *, legacy_ok: bool = False) -> dict[str, Any]:
    """Read and check ``policy.json`` of a policy directory.

    Args:
        path: The policy directory.
        legacy_ok: Accept the previous release's format (only ``batchrl-mtf upgrade`` does).

    Raises:
        PolicyError: Missing directory or manifest, invalid JSON, another format, or a directory
            of the previous release.
    """
    root = Path(path)
    if not root.is_dir():
        raise PolicyError(f"{root}: no such policy directory")
    mpath = root / "policy.json"
    if not mpath.is_file():
        raise PolicyError(f"{root}: not a policy directory (missing policy.json)")
    try:
        doc = json.loads(mpath.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise PolicyError(f"{mpath}: not valid JSON ({exc})") from None
    if isinstance(doc, dict) and doc.get("format") == LEGACY_POLICY_FORMAT and not legacy_ok:
        raise PolicyError(legacy_message(root))
    allowed = (POLICY_FORMAT, LEGACY_POLICY_FORMAT) if legacy_ok else (POLICY_FORMAT,)
    if not isinstance(doc, dict) or doc.get("format") not in allowed:
        found = doc.get("format") if isinstance(doc, dict) else type(doc).__name__
        raise PolicyError(f"{mpath}: expected format {POLICY_FORMAT!r}, found {found!r}")
    return doc


def load_policy(
    path: str | Path,
    spec: DatasetSpec | FeatureSpec | Sequence[str] | None = None,
    device: str | None = None,
) -> TrainedPolicy:
    """Load a trained policy directory.

    Args:
        path: The policy directory.
        spec: When given, the spec (or feature names) of the data the policy will be applied to;
            a mismatch with the training features raises.
        device: Device to load the networks on; ``None`` = CPU.

    Raises:
        PolicyError: Not a policy directory, unreadable model, or a feature-spec mismatch.
    """
    root = Path(path)
    manifest = read_manifest(root)
    fpath = inside(root, manifest.get("features", "features.json"), "features")
    try:
        doc = json.loads(fpath.read_text(encoding="utf-8"))
        trained = DatasetSpec.from_dict(doc, str(fpath))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError, DatasetError) as exc:
        raise PolicyError(f"{fpath}: cannot read the policy's feature spec ({exc})") from None
    model = inside(root, manifest.get("model", MODEL_WEIGHTS), "model")
    model_config = inside(root, manifest.get("model_config", MODEL_CONFIG), "model_config")
    algo = load_algo(model_config, model, device or "cpu:0")
    policy = TrainedPolicy(algo, trained, name=str(path), manifest=manifest)
    if spec is not None:
        policy.check(spec, "the data it is applied to")
    return policy
