"""Export a d3rlpy policy network as TorchScript or ONNX, input normalisation included.

The exported graph is d3rlpy's greedy policy: ``observation_scaler.transform`` (the dataset's
normalisation) -> ``predict_best_action`` -> ``action_scaler.reverse_transform``, so it takes raw
states of shape (n, d) float32 and returns fusion weights of shape (n, k) float32.

* TorchScript (``.pt``) traces the function d3rlpy's ``save_policy`` traces and is serialised
  in memory, then written by Python (a full disk is then an ``OSError``, not an abort in C++).
* ONNX (``.onnx``) traces the same function and exports it with torch's TorchScript-based
  exporter (``dynamo=False``, opset 17) and a dynamic batch axis. d3rlpy's ``save_policy`` cannot
  be used for ONNX with torch >= 2.9: its call defaults to the dynamo exporter (which needs
  ``onnxscript``) and fixes the batch size at 1.

Both files are written to a temporary sibling and renamed into place, then loaded back and
compared with ``algo.predict`` on a batch; an artefact that differs by more than ``atol`` is removed
and reported as an :class:`ExportError`.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import logging
import os
import tempfile
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from batchrl_mtf.errors import ExportError

__all__ = ["NETWORK_FORMATS", "PARITY_ATOL", "export_network", "load_network"]

logger = logging.getLogger(__name__)

NETWORK_FORMATS: dict[str, str] = {"torchscript": ".pt", "onnx": ".onnx"}
"""Network export formats and their file suffixes."""

PARITY_ATOL = 1e-5
"""Largest absolute difference allowed between the artefact's and the network's actions."""

ONNX_OPSET = 17

FloatArray = npt.NDArray[np.float32]


def export_network(
    algo: Any,
    path: str | os.PathLike[str],
    fmt: Literal["torchscript", "onnx"],
    observations: npt.ArrayLike | None = None,
    atol: float = PARITY_ATOL,
) -> float:
    """Write ``algo``'s greedy policy to ``path`` and check it against ``algo.predict``.

    Args:
        algo: A built d3rlpy Q-learning algorithm with continuous actions (BC, CQL, BCQ, ...).
        path: Destination; its suffix must be ``.pt`` for TorchScript or ``.onnx`` for ONNX.
        fmt: ``"torchscript"`` or ``"onnx"``.
        observations: Raw states of shape (n, d) for the parity check; ``None`` draws 64 standard
            normal states.
        atol: Largest absolute action difference accepted.

    Returns:
        The largest absolute difference found between the artefact's and ``algo.predict``'s
        actions on ``observations``.

    Raises:
        ExportError: Unknown format, wrong suffix, an algorithm that is not built or has tuple
            observations, or an artefact that does not reproduce the network.
    """
    target = Path(path)
    if fmt not in NETWORK_FORMATS:
        raise ExportError(f"--format: expected one of {sorted(NETWORK_FORMATS)}, found {fmt!r}")
    suffix = NETWORK_FORMATS[fmt]
    if target.suffix != suffix:
        raise ExportError(f"--out {target}: expected a {suffix} file for format {fmt}")
    impl = getattr(algo, "impl", None)
    if impl is None:
        raise ExportError("network export: the algorithm is not built (no network to export)")
    shape = tuple(impl.observation_shape)
    if not all(isinstance(v, int) for v in shape):
        raise ExportError(f"network export: expected a flat observation, found shape {shape}")
    obs = (
        np.random.default_rng(0).standard_normal((64, *shape))
        if observations is None
        else np.asarray(observations)
    ).astype(np.float32)
    if obs.shape[1:] != shape:
        raise ExportError(
            f"network export: expected parity states of shape (n, {shape[0]}), found {obs.shape}"
        )
    if fmt == "onnx" and importlib.util.find_spec("onnx") is None:
        raise ExportError(
            "--format onnx: the onnx package is not installed; install the extra with "
            "pip install 'batchrl-mtf[onnx]'"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=suffix, dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)  # mkstemp makes 0600; give the usual permissions
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer and exporter deprecation chatter
            if fmt == "torchscript":
                _save_torchscript(algo, tmp, shape)
            else:
                _save_onnx(algo, tmp, shape)
        got = load_network(tmp)(obs)
        want = np.asarray(algo.predict(obs), dtype=np.float32)
        if got.shape != want.shape:
            raise ExportError(
                f"{target}: exported network returns shape {got.shape}, the policy {want.shape}"
            )
        diff = float(np.abs(got - want).max()) if want.size else 0.0
        if not diff <= atol:
            raise ExportError(
                f"{target}: exported network differs from the policy by {diff:.3g} "
                f"(> {atol:g}) on {len(obs)} states; not written"
            )
        os.replace(tmp, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    logger.info(
        "wrote %s (%s); max |action difference| %.2g on %d states", target, fmt, diff, len(obs)
    )
    return diff


@contextlib.contextmanager
def _traced(algo: Any, shape: tuple[int, ...]) -> Iterator[tuple[Any, Any]]:
    """d3rlpy's greedy-policy function (as ``save_policy`` builds it), traced; with a dummy input.

    The networks stay frozen while the block runs.
    """
    import torch

    impl = algo.impl
    config = algo.config

    def policy(x: torch.Tensor) -> torch.Tensor:
        if config.observation_scaler is not None:
            x = config.observation_scaler.transform(x)
        action = impl.predict_best_action(x)
        if config.action_scaler is not None:
            action = config.action_scaler.reverse_transform(action)
        return action

    dummy = torch.rand(1, *shape, device=impl.device)
    impl.modules.freeze()
    try:
        yield torch.jit.trace(policy, dummy, check_trace=False), dummy
    finally:
        impl.modules.unfreeze()


def _save_torchscript(algo: Any, path: Path, shape: tuple[int, ...]) -> None:
    """Serialise the traced policy in memory, then write it with Python (a full disk is an
    ``OSError`` there, where torch's own file writer aborts the interpreter)."""
    import torch

    buf = io.BytesIO()
    with _traced(algo, shape) as (traced, _dummy):
        torch.jit.save(traced, buf)
    with open(path, "wb") as fh:
        fh.write(buf.getvalue())
        fh.flush()
        os.fsync(fh.fileno())


def _save_onnx(algo: Any, path: Path, shape: tuple[int, ...]) -> None:
    """Export the traced policy as ONNX with a dynamic batch axis."""
    import torch

    with _traced(algo, shape) as (traced, dummy):
        torch.onnx.export(
            traced,
            (dummy,),
            str(path),
            dynamo=False,
            export_params=True,
            opset_version=ONNX_OPSET,
            input_names=["input_0"],
            output_names=["output_0"],
            dynamic_axes={"input_0": {0: "batch"}, "output_0": {0: "batch"}},
        )


def load_network(path: str | os.PathLike[str]) -> Callable[[npt.ArrayLike], FloatArray]:
    """Load an exported network as a function ``states (n, d) -> weights (n, k)`` (float32).

    TorchScript files are loaded with ``torch.jit.load``, ONNX files with onnxruntime (CPU).

    Raises:
        ExportError: Unknown suffix or an unreadable file.
    """
    p = Path(path)
    try:
        if p.suffix == ".pt":
            import torch

            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                module = torch.jit.load(str(p), map_location="cpu")

            def run_torch(x: npt.ArrayLike) -> FloatArray:
                with torch.no_grad():
                    t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
                    return np.asarray(module(t).numpy(), dtype=np.float32)

            return run_torch
        if p.suffix == ".onnx":
            import onnxruntime

            session = onnxruntime.InferenceSession(str(p), providers=["CPUExecutionProvider"])
            name = session.get_inputs()[0].name

            def run_onnx(x: npt.ArrayLike) -> FloatArray:
                out = session.run(None, {name: np.ascontiguousarray(x, dtype=np.float32)})
                return np.asarray(out[0], dtype=np.float32)

            return run_onnx
    except ImportError as exc:
        raise ExportError(f"{p}: cannot load ({exc.name} is not installed)") from None
    except Exception as exc:  # torch and onnxruntime raise their own types for unreadable files
        raise ExportError(f"{p}: cannot load exported network ({exc})") from None
    raise ExportError(f"{p}: expected a .pt (TorchScript) or .onnx file")
