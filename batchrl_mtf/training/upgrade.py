"""Convert a policy directory of the previous release (pickled ``model.d3``) to the current one.

The previous release kept the d3rlpy model as a pickle (``model.d3``, d3rlpy's ``save``) and the
random states as ``rng_state.pt`` (``torch.save``); loading either runs whatever code the file
names. :func:`upgrade_policy` is the one place that still unpickles them, and only when the caller
says it trusts the directory (``batchrl-mtf upgrade DIR --trust-pickle``): it loads them once and
rewrites the directory as ``batchrl-mtf/policy@2`` (safetensors + JSON), after which it never needs
pickle again.
"""

from __future__ import annotations

import logging
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from batchrl_mtf.core.d3rlpy import load_d3rlpy
from batchrl_mtf.core.io import atomic_dir, dumps_json
from batchrl_mtf.errors import PolicyError
from batchrl_mtf.training.checkpoint import (
    MODEL_CONFIG,
    MODEL_WEIGHTS,
    RNG_STATE,
    inside,
    rng_state_json,
    save_algo,
)
from batchrl_mtf.training.policy import LEGACY_POLICY_FORMAT, POLICY_FORMAT, read_manifest

__all__ = ["upgrade_policy"]

logger = logging.getLogger(__name__)

_LEGACY_FILES = ("model.d3", "rng_state.pt")


def _legacy_rng_json(path: Path, grad_step: int) -> str:
    """``rng_state.pt`` of the previous release as :data:`RNG_STATE` JSON (unpickles it)."""
    import torch

    saved = (random.getstate(), np.random.get_state(), torch.get_rng_state())
    try:
        state = torch.load(path, weights_only=False)  # trusted by the caller (--trust-pickle)
        rng = state["rng"]
        random.setstate(rng["python"])
        np.random.set_state(rng["numpy"])
        torch.set_rng_state(rng["torch"])
        return rng_state_json(int(state.get("grad_step", grad_step)))
    except Exception as exc:  # a corrupt pickle raises anything
        raise PolicyError(
            f"{path}: cannot read the previous release's random states ({exc})"
        ) from None
    finally:
        random.setstate(saved[0])
        np.random.set_state(saved[1])
        torch.set_rng_state(saved[2])


def upgrade_policy(path: str | Path, *, trust_pickle: bool) -> bool:
    """Rewrite the policy directory ``path`` in the current format (no pickle).

    Args:
        path: A policy directory of the previous release (``batchrl-mtf/policy@1``).
        trust_pickle: The caller trusts the directory: its pickles are loaded (they can run code).

    Returns:
        ``True`` when the directory was converted, ``False`` when it was already current.

    Raises:
        PolicyError: Not a policy directory, ``trust_pickle`` not given, or unreadable files.
    """
    root = Path(path)
    manifest = read_manifest(root, legacy_ok=True)
    if manifest["format"] == POLICY_FORMAT:
        return False
    if not trust_pickle:
        raise PolicyError(
            f"{root}: converting a {LEGACY_POLICY_FORMAT} directory loads its pickles, which can "
            "run code; pass --trust-pickle only if you trust where the directory came from"
        )
    model = inside(root, manifest.get("model", "model.d3"), "model")
    if not model.is_file():
        raise PolicyError(f"{root}: model file {model.name} is missing")
    d3rlpy = load_d3rlpy()
    try:
        algo: Any = d3rlpy.load_learnable(str(model), device="cpu:0")  # trusted (--trust-pickle)
    except Exception as exc:  # a corrupt pickle raises anything
        raise PolicyError(f"{model}: cannot load the previous release's model ({exc})") from None
    done = int(manifest.get("n_steps_done", 0))
    rng_path = root / "rng_state.pt"
    rng_text = _legacy_rng_json(rng_path, done) if rng_path.is_file() else rng_state_json(done)
    new = dict(manifest)
    new.update(
        {
            "format": POLICY_FORMAT,
            "model": MODEL_WEIGHTS,
            "model_config": MODEL_CONFIG,
            "checkpoint": MODEL_WEIGHTS,
            "rng_state": RNG_STATE,
            "upgraded_from": LEGACY_POLICY_FORMAT,
        }
    )
    files = [f for f in manifest.get("files", []) if f not in _LEGACY_FILES]
    new["files"] = sorted({*files, MODEL_CONFIG, MODEL_WEIGHTS, RNG_STATE})
    with atomic_dir(root, kind="policy") as tmp:
        for item in sorted(root.iterdir()):
            if item.name in (*_LEGACY_FILES, "policy.json") or item.is_symlink():
                continue
            if item.is_dir():
                shutil.copytree(item, tmp / item.name, symlinks=False)
            elif item.is_file():
                shutil.copy2(item, tmp / item.name)
        save_algo(algo, tmp)
        (tmp / RNG_STATE).write_text(rng_text, encoding="utf-8")
        (tmp / "policy.json").write_text(dumps_json(new), encoding="utf-8")
    logger.info("converted %s to %s", root, POLICY_FORMAT)
    return True
