"""The d3rlpy model of a policy directory without pickle: safetensors weights plus JSON.

d3rlpy's own ``algo.save``/``load_learnable`` pickle the whole algorithm, and its ``save_model``
is ``torch.save`` of the state dicts, so loading either can run code from the file. Here the model
is three parts, none of which can:

- ``model.json``: d3rlpy's serialised algorithm config (``LearnableConfigWithShape``: observation
  shape, action size, algorithm settings, scalers) and the layout of every module's and optimizer's
  state dict, tensors replaced by ``{"tensor": key}``;
- ``model.safetensors``: those tensors;
- ``rng_state.json``: Python, NumPy and torch random states and the gradient-step counter.

Loading rebuilds the algorithm from the config (``LearnableConfigWithShape.deserialize`` ->
``create`` -> ``create_impl``) and loads the state dicts into its modules and optimizers, which is
what ``load_learnable`` does after unpickling.
"""

from __future__ import annotations

import json
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from safetensors import SafetensorError

from batchrl_mtf.core.d3rlpy import load_d3rlpy
from batchrl_mtf.core.io import dumps_json
from batchrl_mtf.errors import PolicyError

__all__ = [
    "MODEL_CONFIG",
    "MODEL_WEIGHTS",
    "RNG_STATE",
    "inside",
    "load_algo",
    "load_rng_state",
    "rng_state_json",
    "save_algo",
    "set_rng_state",
]

MODEL_CONFIG = "model.json"
MODEL_WEIGHTS = "model.safetensors"
RNG_STATE = "rng_state.json"
MODEL_FORMAT = "batchrl-mtf/d3rlpy-model@1"
RNG_FORMAT = "batchrl-mtf/rng-state@1"


def inside(root: Path, name: object, what: str) -> Path:
    """``root / name``, refusing a name that leaves ``root`` (absolute, ``..``, a symlink out).

    Raises:
        PolicyError: ``name`` is not a plain relative file name inside ``root``.
    """
    if not isinstance(name, str) or not name or "\x00" in name:
        raise PolicyError(f"{root}: manifest entry {what} must be a file name, found {name!r}")
    base = root.resolve()
    path = (root / name).resolve()
    if Path(name).is_absolute() or base not in path.parents:
        raise PolicyError(
            f"{root}: manifest entry {what} = {name!r} points outside the policy directory; refused"
        )
    return path


def _encode(obj: Any, tensors: dict[str, Any], key: str) -> Any:
    """A JSON tree of a state dict; tensors go to ``tensors`` (exact round trip of key types)."""
    import torch

    if isinstance(obj, torch.Tensor):
        tensors[key] = obj.detach().to("cpu").contiguous().clone()
        return {"tensor": key}
    if isinstance(obj, Mapping):
        items = []
        for k, v in obj.items():
            if not isinstance(k, (str, int)):
                raise PolicyError(f"cannot save a state-dict key of type {type(k).__name__}")
            items.append([k, _encode(v, tensors, f"{key}.{k}")])
        return {"dict": items}
    if isinstance(obj, tuple):
        return {"tuple": [_encode(v, tensors, f"{key}.{i}") for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [_encode(v, tensors, f"{key}.{i}") for i, v in enumerate(obj)]
    if obj is None or isinstance(obj, (bool, int, str)):
        return obj
    if isinstance(obj, float):
        return {"float": repr(obj)}  # exact, and inf/nan survive strict JSON
    raise PolicyError(f"cannot save a state-dict value of type {type(obj).__name__}")


def _decode(doc: Any, tensors: Mapping[str, Any], where: str) -> Any:
    if isinstance(doc, list):
        return [_decode(v, tensors, where) for v in doc]
    if isinstance(doc, dict):
        if set(doc) == {"tensor"}:
            if doc["tensor"] not in tensors:
                raise PolicyError(f"{where}: tensor {doc['tensor']!r} is missing")
            return tensors[doc["tensor"]]
        if set(doc) == {"dict"} and isinstance(doc["dict"], list):
            out = {}
            for pair in doc["dict"]:
                if not (
                    isinstance(pair, list) and len(pair) == 2 and isinstance(pair[0], (str, int))
                ):
                    raise PolicyError(f"{where}: malformed state-dict entry {pair!r:.60}")
                out[pair[0]] = _decode(pair[1], tensors, where)
            return out
        if set(doc) == {"tuple"} and isinstance(doc["tuple"], list):
            return tuple(_decode(v, tensors, where) for v in doc["tuple"])
        if set(doc) == {"float"} and isinstance(doc["float"], str):
            try:
                return float(doc["float"])
            except ValueError:
                raise PolicyError(f"{where}: bad float {doc['float']!r:.40}") from None
        raise PolicyError(f"{where}: malformed state-dict node {json.dumps(doc)[:60]}")
    if doc is None or isinstance(doc, (bool, int, str)):
        return doc
    raise PolicyError(f"{where}: malformed state-dict value {doc!r:.60}")


def _check_finite(state: Any, where: str) -> None:
    import torch

    if isinstance(state, torch.Tensor):
        if state.is_floating_point() and not bool(torch.isfinite(state).all()):
            raise PolicyError(f"{where}: weights are not finite (NaN or inf); refused")
    elif isinstance(state, dict):
        for v in state.values():
            _check_finite(v, where)
    elif isinstance(state, (list, tuple)):
        for v in state:
            _check_finite(v, where)


def _checkpoint_modules(algo: Any) -> dict[str, Any]:
    impl = algo.impl
    if impl is None:
        raise PolicyError("the d3rlpy algorithm is not built; nothing to save")
    return dict(impl.modules.create_checkpointer(impl.device).modules)


def save_algo(algo: Any, folder: Path) -> None:
    """Write ``algo`` (built) as :data:`MODEL_CONFIG` + :data:`MODEL_WEIGHTS` into ``folder``."""
    import torch

    d3rlpy = load_d3rlpy()
    impl = algo.impl
    shaped = d3rlpy.base.LearnableConfigWithShape(
        observation_shape=impl.observation_shape, action_size=impl.action_size, config=algo.config
    )
    tensors: dict[str, torch.Tensor] = {}
    states = {}
    for name, module in sorted(_checkpoint_modules(algo).items()):
        states[name] = _encode(module.state_dict(), tensors, name)
    doc = {
        "format": MODEL_FORMAT,
        "d3rlpy_version": d3rlpy.__version__,
        "config": json.loads(shaped.serialize()),
        "state": states,
    }
    from safetensors.torch import save as st_save  # torch: loaded on first use

    # no safetensors metadata: its key order is not stable and the bytes should be
    (folder / MODEL_WEIGHTS).write_bytes(st_save(tensors))
    (folder / MODEL_CONFIG).write_text(dumps_json(doc), encoding="utf-8")


def load_algo(config_path: Path, weights_path: Path, device: str) -> Any:
    """Rebuild the d3rlpy algorithm from :data:`MODEL_CONFIG` and load :data:`MODEL_WEIGHTS`.

    Raises:
        PolicyError: A missing, corrupt or inconsistent file (nothing in them is executed).
    """

    d3rlpy = load_d3rlpy()
    for p in (config_path, weights_path):
        if not p.is_file():
            raise PolicyError(f"{p}: missing model file")
    try:
        doc = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise PolicyError(f"{config_path}: not valid JSON ({exc})") from None
    if not isinstance(doc, dict) or doc.get("format") != MODEL_FORMAT:
        found = doc.get("format") if isinstance(doc, dict) else type(doc).__name__
        raise PolicyError(f"{config_path}: expected format {MODEL_FORMAT!r}, found {found!r}")
    try:
        shaped = d3rlpy.base.LearnableConfigWithShape.deserialize(json.dumps(doc["config"]))
        algo = shaped.create(device)
    except Exception as exc:  # dataclasses-json and d3rlpy raise many types on a bad config
        raise PolicyError(f"{config_path}: not a usable d3rlpy algorithm config ({exc})") from None
    try:
        from safetensors.torch import load as st_load  # torch: loaded on first use

        tensors = st_load(weights_path.read_bytes())
    except (SafetensorError, OSError, ValueError) as exc:
        raise PolicyError(f"{weights_path}: not a readable safetensors file ({exc})") from None
    states = doc.get("state")
    modules = _checkpoint_modules(algo)
    if not isinstance(states, dict) or set(states) != set(modules):
        found = sorted(states) if isinstance(states, dict) else type(states).__name__
        raise PolicyError(
            f"{config_path}: state of modules {found}; the algorithm has {sorted(modules)}"
        )
    for name, module in modules.items():
        state = _decode(states[name], tensors, f"{config_path} [{name}]")
        _check_finite(state, f"{weights_path} [{name}]")
        try:
            module.load_state_dict(state)
        except Exception as exc:  # torch raises RuntimeError/KeyError/ValueError on a mismatch
            raise PolicyError(
                f"{weights_path}: weights of {name} do not fit the configured model ({exc})"
            ) from None
    return algo


def rng_state_json(grad_step: int) -> str:
    """The current Python, NumPy and torch random states and ``grad_step`` as JSON."""
    import torch

    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return dumps_json(
        {
            "format": RNG_FORMAT,
            "grad_step": int(grad_step),
            "python": {"version": version, "state": list(internal), "gauss_next": gauss},
            "numpy": {
                "bit_generator": name,
                "keys": [int(k) for k in keys],
                "pos": int(pos),
                "has_gauss": int(has_gauss),
                "cached_gaussian": {"float": repr(float(cached))},
            },
            "torch": [int(b) for b in torch.get_rng_state().tolist()],
        }
    )


def load_rng_state(path: Path) -> dict[str, Any]:
    """Read and check :data:`RNG_STATE` (see :func:`set_rng_state`).

    Raises:
        PolicyError: Missing or corrupt file.
    """
    hint = "(re-create the policy with train, or train again without --resume)"
    if not path.is_file():
        raise PolicyError(f"{path}: random-state file is missing; cannot resume {hint}")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        py, npy, tch = doc["python"], doc["numpy"], doc["torch"]
        state: dict[str, Any] = {
            "grad_step": int(doc["grad_step"]),
            "python": (int(py["version"]), tuple(int(v) for v in py["state"]), py["gauss_next"]),
            "numpy": (
                str(npy["bit_generator"]),
                np.asarray([int(k) for k in npy["keys"]], dtype=np.uint32),
                int(npy["pos"]),
                int(npy["has_gauss"]),
                float(npy["cached_gaussian"]["float"]),
            ),
            "torch": np.asarray([int(b) for b in tch], dtype=np.uint8),
        }
        if doc.get("format") != RNG_FORMAT or len(state["numpy"][1]) != 624:
            raise ValueError("unexpected format or size")
        if state["python"][2] is not None:
            state["python"] = (*state["python"][:2], float(state["python"][2]))
    except (
        OSError,
        UnicodeDecodeError,
        json.JSONDecodeError,
        KeyError,
        TypeError,
        ValueError,
        OverflowError,
    ) as exc:
        raise PolicyError(
            f"{path}: corrupt random-state file ({exc}); cannot resume {hint}"
        ) from None
    return state


def set_rng_state(state: Mapping[str, Any], path: Path) -> None:
    """Restore the random states read by :func:`load_rng_state`."""
    import torch

    try:
        random.setstate(state["python"])
        np.random.set_state(state["numpy"])
        torch.set_rng_state(torch.from_numpy(state["torch"].copy()))
    except (TypeError, ValueError, RuntimeError) as exc:
        raise PolicyError(f"{path}: corrupt random-state file ({exc}); cannot resume") from None
