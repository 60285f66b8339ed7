"""Atomic file output, content hashes and run metadata shared by every stage.

Nothing this package writes is ever half-written: files are written to a temporary sibling and
renamed into place; directories are assembled in a temporary sibling and swapped in.
"""

from __future__ import annotations

import contextlib
import errno
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
from batchrl_mtf.errors import OutputError

try:  # POSIX advisory locks; elsewhere the lock file alone (O_EXCL) guards the output
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "MARKER",
    "JSONValue",
    "atomic_dir",
    "atomic_write_bytes",
    "atomic_write_text",
    "check_output_dir",
    "describe_os_error",
    "dumps_json",
    "hash_bytes",
    "hash_files",
    "output_dir",
    "package_versions",
    "read_json",
    "read_marker",
    "write_marker",
]

logger = logging.getLogger(__name__)

JSONValue = None | bool | int | float | str | Sequence["JSONValue"] | Mapping[str, "JSONValue"]


def read_json(path: Path, error: type[Exception]) -> object:
    """The JSON document in ``path``; anything unreadable raises ``error`` naming the file.

    Args:
        path: A JSON file.
        error: The error class to raise (the caller's: ``DatasetError``, ``PolicyError``, ...).
    """
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise error(f"{path}: not valid JSON ({exc})") from None


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
def atomic_dir(path: str | os.PathLike[str], kind: str | None = None) -> Iterator[Path]:
    """Build a directory atomically.

    Yields a temporary directory next to ``path``; when the block succeeds the temporary directory
    replaces ``path`` (an existing ``path`` is removed only then). When the block raises, ``path`` is
    left exactly as it was and the temporary directory is removed.

    Args:
        path: The directory to build.
        kind: When given, the directory gets the marker file :data:`MARKER` saying that
            batchrl-mtf wrote it and what it is (``"dataset"``, ``"policy"``, ...); it is written
            first, so a temporary directory left by a killed run is recognisable as ours too.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700; give the usual permissions
        if kind is not None:
            (tmp / MARKER).write_text(_marker_text(kind), encoding="utf-8")
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


MARKER = ".batchrl-mtf.json"
"""Marker file of every directory batchrl-mtf writes (``{"format": ..., "kind": ...}``)."""

OUTPUT_FORMAT = "batchrl-mtf/output@1"


def _marker_text(kind: str) -> str:
    return dumps_json({"format": OUTPUT_FORMAT, "kind": kind})


def read_marker(path: str | os.PathLike[str]) -> str | None:
    """The kind of output directory ``path`` is (``"dataset"``, ``"policy"``, ...), or ``None``
    when batchrl-mtf did not write it (no readable marker file)."""
    try:
        doc = json.loads((Path(path) / MARKER).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(doc, dict) or doc.get("format") != OUTPUT_FORMAT:
        return None
    kind = doc.get("kind")
    return kind if isinstance(kind, str) else None


def describe_os_error(exc: OSError) -> str:
    """One line for an operating-system error (disk full, read-only, permission denied, ...)."""
    where = f"{exc.filename}: " if exc.filename else ""
    reason = exc.strerror or str(exc) or type(exc).__name__
    hint = {
        errno.ENOSPC: " (the disk is full; free space and run again)",
        errno.EDQUOT: " (disk quota exceeded; free space and run again)",
        errno.EROFS: " (read-only file system; choose another --out)",
        errno.EACCES: " (choose a directory you can write to)",
    }.get(exc.errno or 0, "")
    return f"{where}{reason}{hint}"


def _resolved(path: str | os.PathLike[str]) -> Path:
    return Path(os.path.abspath(os.fspath(path))).resolve()


def _check_output(
    target: Path, kind: str, inputs: Sequence[str | os.PathLike[str]], overwrite: bool, resume: bool
) -> None:
    label = f"--out {target}"
    if target.exists() and not target.is_dir():
        raise OutputError(
            f"{label}: is an existing file, not a {kind} directory; refusing to replace it"
        )
    for given in inputs:
        if "://" in os.fspath(given):
            continue
        inp = _resolved(given)
        if inp == target or target in inp.parents:
            raise OutputError(
                f"{label}: is or contains the input {given}; refusing to replace it "
                "(choose an output directory outside the inputs)"
            )
    if not target.is_dir():
        return
    try:
        empty = not any(target.iterdir())
    except OSError as exc:
        raise OutputError(f"{label}: cannot read it ({describe_os_error(exc)})") from None
    if empty:
        return
    found = read_marker(target)
    if found is None:
        raise OutputError(
            f"{label}: exists, is not empty and was not written by batchrl-mtf (no {MARKER}); "
            "refusing to replace it (choose a new or empty directory)"
        )
    if found != kind:
        raise OutputError(
            f"{label}: holds a batchrl-mtf {found}, not a {kind}; refusing to replace it"
        )
    if not (overwrite or resume):
        raise OutputError(
            f"{label}: already holds a batchrl-mtf {kind}; pass --overwrite to replace it"
        )


def check_output_dir(
    path: str | os.PathLike[str],
    kind: str,
    *,
    inputs: Sequence[str | os.PathLike[str]] = (),
    overwrite: bool = False,
    resume: bool = False,
) -> Path:
    """The checks of :func:`output_dir` without taking the lock (call it before long work).

    Returns:
        The absolute path of the output directory.

    Raises:
        OutputError: See :func:`output_dir`.
    """
    target = _resolved(path)
    if not target.name:
        raise OutputError(f"--out {path}: not a usable directory name")
    if target in _HELD:  # this process is writing it already
        return target
    _check_output(target, kind, inputs, overwrite, resume)
    _check_writable(target)
    return target


def write_marker(path: str | os.PathLike[str], kind: str) -> None:
    """Mark directory ``path`` as a batchrl-mtf output of ``kind`` (for folders not written by
    :func:`atomic_dir`, such as a pipeline's run folder)."""
    if read_marker(path) != kind:
        atomic_write_text(Path(path) / MARKER, _marker_text(kind))


_HELD: dict[Path, int] = {}
"""Output directories this process holds the lock of (re-entrant: the CLI and the library call)."""


def _check_writable(target: Path) -> None:
    parent = target.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".probe", dir=parent)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise OutputError(
            f"--out {target}: cannot write there ({describe_os_error(exc)})"
        ) from None


def _lock(target: Path) -> int:
    """Take the exclusive lock ``.<name>.lock`` next to ``target``; return its descriptor."""
    path = target.with_name(f".{target.name}.lock")
    for _ in range(10):
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666 & ~_umask())
        except OSError as exc:
            raise OutputError(
                f"--out {target}: cannot create the lock file ({describe_os_error(exc)})"
            ) from None
        if fcntl is None:  # pragma: no cover - Windows
            return fd
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise OutputError(
                f"--out {target}: another batchrl-mtf run is writing it (lock {path.name} is held); "
                "wait for it to finish"
            ) from None
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:  # not unlinked by a run that released it meanwhile
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            return fd
        os.close(fd)
    raise OutputError(f"--out {target}: cannot take the lock {path.name}")  # pragma: no cover


def _unlock(target: Path, fd: int) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(target.with_name(f".{target.name}.lock"))
    os.close(fd)


def _remove_stale(target: Path) -> None:
    """Remove temporary directories of ours left next to ``target`` by a killed run."""
    parent = target.parent
    for pattern in (f".{target.name}.*.tmp", f".{target.name}.old.*"):
        for p in parent.glob(pattern):
            if (
                p.is_dir()
                and not p.is_symlink()
                and (read_marker(p) is not None or not any(p.iterdir()))
            ):
                logger.info("removing %s (left by an interrupted run)", p)
                shutil.rmtree(p, ignore_errors=True)


@contextlib.contextmanager
def output_dir(
    path: str | os.PathLike[str],
    kind: str,
    *,
    inputs: Sequence[str | os.PathLike[str]] = (),
    overwrite: bool = False,
    resume: bool = False,
) -> Iterator[Path]:
    """Claim ``path`` as the output directory of one run; the one gate every ``--out`` goes
    through.

    Refuses (with :class:`~batchrl_mtf.errors.OutputError`, before any work): an existing file; a
    path equal to or containing any of ``inputs``; a non-empty directory without our marker
    (:data:`MARKER`) or holding another kind of output; one of ours unless ``overwrite`` (or
    ``resume``, which continues it); a place that cannot be written. While the block runs, the lock
    file ``.<name>.lock`` next to it keeps other runs out; temporary directories of ours left there
    by a killed run are removed. Write the directory itself with :func:`atomic_dir` (``kind``).

    Args:
        path: The output directory (``--out``).
        kind: What it will hold: ``"dataset"``, ``"policy"``, ``"predictor"``, ``"env"``,
            ``"pipeline"``.
        inputs: Files and directories the run reads (local paths; URIs are skipped).
        overwrite: Replace an existing output of the same kind.
        resume: The run continues the output in ``path`` (it must be ours).

    Yields:
        The absolute path of the output directory.
    """
    target = check_output_dir(path, kind, inputs=inputs, overwrite=overwrite, resume=resume)
    if target in _HELD:
        _HELD[target] += 1
        try:
            yield target
        finally:
            _HELD[target] -= 1
        return
    fd = _lock(target)
    _HELD[target] = 1
    try:
        _check_output(target, kind, inputs, overwrite, resume)  # again, now that we hold the lock
        _remove_stale(target)
        yield target
    finally:
        del _HELD[target]
        _unlock(target, fd)


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
