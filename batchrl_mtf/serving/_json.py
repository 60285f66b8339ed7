"""Strict, bounded JSON for files from elsewhere, and atomic writes (standard library only).

Weight tables travel between teams and languages, so the reader accepts exactly what strict JSON
readers in Java and C++ accept, within fixed bounds, and turns every problem into one
:class:`~batchrl_mtf.errors.ExportError` line:

* UTF-8 text (a UTF-8 byte-order mark is skipped), at most :data:`MAX_BYTES` bytes;
* no ``NaN``/``Infinity`` tokens anywhere, and no number that overflows a double;
* no number token longer than :data:`MAX_NUMBER_CHARS` characters;
* nesting at most :data:`MAX_DEPTH` containers deep (the top-level value is depth 1);
* no object with the same key twice.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from batchrl_mtf.errors import ExportError

__all__ = [
    "MAX_BYTES",
    "MAX_DEPTH",
    "MAX_NUMBER_CHARS",
    "check_plain_json",
    "dumps_stable",
    "loads_strict",
    "read_strict",
]

MAX_BYTES = 256 << 20
"""Largest JSON text accepted (256 MiB: about a million rows of an 8-task table)."""

MAX_DEPTH = 64
"""Deepest nesting of arrays/objects accepted; the top-level value is depth 1."""

MAX_NUMBER_CHARS = 100
"""Longest number token accepted (a double needs at most 24 characters)."""


class _InvalidJSONError(Exception):
    """Raised inside the parser hooks; turned into an ExportError with the file name."""


def _reject_constant(token: str) -> float:
    raise _InvalidJSONError(f"{token} is not JSON (strict JSON has no NaN or Infinity)")


def _parse_int(token: str) -> int:
    if len(token) > MAX_NUMBER_CHARS:
        raise _InvalidJSONError(f"a number of {len(token)} characters (at most {MAX_NUMBER_CHARS})")
    return int(token)


def _parse_float(token: str) -> float:
    if len(token) > MAX_NUMBER_CHARS:
        raise _InvalidJSONError(f"a number of {len(token)} characters (at most {MAX_NUMBER_CHARS})")
    value = float(token)
    if not math.isfinite(value):
        raise _InvalidJSONError(f"number {token[:30]} overflows a double")
    return value


def _unique_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set[str] = set()
        for k, _ in pairs:
            if k in seen:
                raise _InvalidJSONError(f"duplicate key {k[:40]!r} in an object")
            seen.add(k)
    return out


def loads_strict(data: bytes | str, source: str) -> object:
    """Parse strict, bounded JSON.

    Args:
        data: The file's bytes (must be UTF-8) or already-decoded text.
        source: Name for messages (a path, ``"<stdin>"``, ``"line 3"``).

    Returns:
        The parsed value (dicts, lists, str, int, float, bool, None).

    Raises:
        ExportError: ``"<source>: not valid JSON (...)"`` or ``"<source>: not UTF-8 text ..."``.
    """
    size = len(data)
    if size > MAX_BYTES:
        raise ExportError(f"{source}: expected at most {MAX_BYTES} bytes of JSON, found {size}")
    if isinstance(data, bytes):
        if data.startswith(b"\xef\xbb\xbf"):
            data = data[3:]
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ExportError(
                f"{source}: not UTF-8 text (invalid byte at offset {exc.start}; JSON files are "
                "UTF-8, re-save it as UTF-8)"
            ) from None
    else:
        text = data
    try:
        doc = json.loads(
            text,
            parse_constant=_reject_constant,
            parse_int=_parse_int,
            parse_float=_parse_float,
            object_pairs_hook=_unique_keys,
        )
    except _InvalidJSONError as exc:
        raise ExportError(f"{source}: not valid JSON ({exc})") from None
    except json.JSONDecodeError as exc:
        raise ExportError(
            f"{source}: not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"
        ) from None
    except RecursionError:
        raise ExportError(
            f"{source}: not valid JSON (nesting deeper than {MAX_DEPTH} levels)"
        ) from None
    except (ValueError, OverflowError) as exc:  # e.g. int digit limits
        raise ExportError(f"{source}: not valid JSON ({str(exc)[:80]})") from None
    return doc


def read_strict(path: str | os.PathLike[str]) -> object:
    """Read a JSON file with :func:`loads_strict` (size checked before reading it all).

    Raises:
        ExportError: ``"<path>: ..."``: unreadable, too large, not UTF-8, not valid JSON.
    """
    p = Path(path)
    try:
        size = p.stat().st_size
        if size > MAX_BYTES:
            raise ExportError(f"{path}: expected at most {MAX_BYTES} bytes of JSON, found {size}")
        data = p.read_bytes()
    except IsADirectoryError:
        raise ExportError(f"{path}: cannot read weight table (is a directory)") from None
    except OSError as exc:
        raise ExportError(f"{path}: cannot read weight table ({exc.strerror})") from None
    return loads_strict(data, str(path))


def check_plain_json(value: object, where: str, depth: int) -> None:
    """Check that ``value`` is plain, finite JSON at most :data:`MAX_DEPTH` deep.

    Args:
        value: A free-form value (a table's ``meta``), found at nesting ``depth`` (>= 1).
        where: Field name for messages.
        depth: Nesting depth of ``value`` itself.

    Raises:
        ExportError: ``"<where>.<path>: ..."`` for a non-finite number, a non-JSON type, a
            non-string key, or nesting deeper than :data:`MAX_DEPTH`.
    """
    todo: list[tuple[object, str, int]] = [(value, where, depth)]
    while todo:
        node, path, d = todo.pop()
        if isinstance(node, (dict, list)) and d > MAX_DEPTH:
            raise ExportError(f"{path}: expected nesting at most {MAX_DEPTH} levels deep")
        if isinstance(node, dict):
            for k, v in node.items():
                if not isinstance(k, str):
                    raise ExportError(f"{path}: expected string keys, found {type(k).__name__}")
                todo.append((v, f"{path}.{k}", d + 1))
        elif isinstance(node, list):
            todo.extend((v, f"{path}[{i}]", d + 1) for i, v in enumerate(node))
        elif isinstance(node, float):
            if not math.isfinite(node):
                raise ExportError(
                    f"{path}: expected a finite number (strict JSON has no NaN or Infinity), "
                    f"found {node!r}"
                )
        elif node is not None and not isinstance(node, (str, int, bool)):
            raise ExportError(f"{path}: expected a JSON value, found {type(node).__name__}")


def dumps_stable(doc: object) -> str:
    """Stable JSON text: sorted keys, 2-space indent, final newline; non-finite floats refused."""
    return json.dumps(doc, indent=2, sort_keys=True, allow_nan=False) + "\n"
