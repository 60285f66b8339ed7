"""Atomic file output, content hashes and run metadata shared by every stage.

Nothing this package writes is ever half-written: files are written to a temporary sibling and
renamed into place; directories are assembled in a temporary sibling and swapped in.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import platform
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from batchrl_mtf.core.version import __version__

__all__ = [
    "JSONValue",
    "atomic_dir",
    "atomic_write_bytes",
    "atomic_write_text",
    "dumps_json",
    "hash_bytes",
    "hash_files",
    "package_versions",
]

logger = logging.getLogger(__name__)

JSONValue = None | bool | int | float | str | Sequence["JSONValue"] | Mapping[str, "JSONValue"]


def dumps_json(obj: object) -> str:
    """Serialise ``obj`` as stable, human-readable JSON (sorted keys, 2-space indent, final newline).

    Non-finite floats are written as ``null`` so that every consumer (Java, C++, browsers) can parse
    the result.
    """
    return json.dumps(_finite(obj), indent=2, sort_keys=True, allow_nan=False) + "\n"


def _finite(obj: object) -> object:
    if isinstance(obj, float):
        return obj if obj == obj and obj not in (float("inf"), float("-inf")) else None
    if isinstance(obj, Mapping):
        return {str(k): _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    if hasattr(obj, "item") and callable(obj.item):  # numpy scalars
        return _finite(obj.item())
    return obj


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temporary file in the same directory, then rename)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual permissions
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Build a directory atomically.

    Yields a temporary directory next to ``path``; when the block succeeds the temporary directory
    replaces ``path`` (an existing ``path`` is removed only then). When the block raises, ``path`` is
    left exactly as it was and the temporary directory is removed.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700; give the usual permissions
    try:
        yield tmp
        if target.exists():
            old = target.with_name(f".{target.name}.old.{os.getpid()}")
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def hash_bytes(data: bytes) -> str:
    """Return ``"sha256:<hex>"`` of ``data``."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def hash_files(paths: Sequence[str | os.PathLike[str]]) -> str:
    """Return ``"sha256:<hex>"`` over the contents of ``paths`` (files; directories recursively).

    The hash covers the bytes and the relative order of the files, not their names or timestamps,
    so a copy of the same logs elsewhere has the same hash.
    """
    h = hashlib.sha256()
    for p in paths:
        root = Path(p)
        files = sorted(f for f in root.rglob("*") if f.is_file()) if root.is_dir() else [root]
        for f in files:
            with open(f, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    h.update(chunk)
            h.update(b"\x00")
    return "sha256:" + h.hexdigest()


def package_versions() -> dict[str, str]:
    """Versions of Python and of the packages that decide results, for run metadata."""
    from importlib import metadata

    out = {"python": platform.python_version(), "batchrl-mtf": __version__}
    for name in ("numpy", "pandas", "pyarrow", "torch", "d3rlpy", "gymnasium"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out
