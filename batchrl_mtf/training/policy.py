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

from batchrl_mtf.core.io import read_json
from batchrl_mtf.data.features import FeatureSpec
from batchrl_mtf.data.spec import DatasetSpec, check_feature_spec
from batchrl_mtf.errors import DatasetError, PolicyError
from batchrl_mtf.training.checkpoint import MODEL_CONFIG, MODEL_WEIGHTS, inside, load_algo

__all__ = [
    "LEGACY_POLICY_FORMAT",
    "POLICY_FORMAT",
    "TrainedPolicy",
    "deterministic_bcq",
    "legacy_message",
    "load_policy",
    "read_manifest",
]

POLICY_FORMAT = "batchrl-mtf/policy@2"
LEGACY_POLICY_FORMAT = "batchrl-mtf/policy@1"
"""The previous release's format: the model is a pickle (``model.d3``), so it is never loaded."""
FloatArray = npt.NDArray[np.float64]
ACT_SEED = 0
BCQ_LATENT_SEED = 0
"""Seed of BCQ's fixed latent draws for acting and serving (see :func:`deterministic_bcq`)."""


def deterministic_bcq(algo: Any) -> bool:
    """Make a BCQ policy's action a fixed function of the state, so that it can be served.

    d3rlpy's BCQ acts by drawing ``n_action_samples`` latent vectors ``z ~ N(0, I)`` clipped to
    ``[-0.5, 0.5]``, decoding each with the VAE into a candidate action, perturbing it, and taking
    the candidate with the highest Q (Fujimoto et al., 2019, Algorithm 1). The draws change on
    every call, so a traced TorchScript/ONNX graph is not the policy. Here the draws are drawn once
    (seed :data:`BCQ_LATENT_SEED`) and reused for every state and call: the same candidates-then-
    argmax rule with fixed candidates' latents. Training (the target actions) keeps fresh draws.

    Args:
        algo: A built d3rlpy algorithm; anything but BCQ is left alone.

    Returns:
        Whether ``algo`` was BCQ (and is now deterministic).
    """
    impl = getattr(algo, "impl", None)
    if impl is None or type(impl).__name__ != "BCQImpl":
        return False
    if getattr(impl, "_batchrl_fixed_latent", None) is not None:
        return True
    import torch

    n, k = int(impl._n_action_samples), int(impl._action_size)
    gen = torch.Generator().manual_seed(BCQ_LATENT_SEED)
    fixed = torch.randn(n, 2 * k, generator=gen).clamp(-0.5, 0.5).to(impl.device)
    original = impl._sample_repeated_action

    def sample(repeated_x: Any, target: bool = False) -> Any:
        if target:
            return original(repeated_x, True)
        # (batch, n, d) -> (batch * n, d); latent row b * n + j is fixed[j] (no size op: traceable)
        flat_x = repeated_x.reshape(-1, repeated_x.shape[-1])
        latent = (torch.zeros_like(repeated_x[..., :1]) + fixed).reshape(-1, 2 * k)
        action = impl._modules.policy(flat_x, impl._modules.vae_decoder(flat_x, latent))
        return action.squashed_mu.view(-1, n, k)

    impl._sample_repeated_action = sample
    impl._batchrl_fixed_latent = fixed
    impl._batchrl_sampled_candidates = original  # d3rlpy's own (fresh draws), for comparisons
    return True


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
        deterministic_bcq(algo)
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

    def renamed(self, name: str) -> TrainedPolicy:
        """The same networks shown as ``name`` (``bcq`` instead of its directory)."""
        return TrainedPolicy(self.algo, self.spec, name, self.manifest)

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
    doc = read_json(mpath, PolicyError)
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
