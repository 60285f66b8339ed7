"""Strict, bounded JSON for files from elsewhere, and atomic writes (standard library only).

Weight tables travel between teams and languages, so the reader accepts exactly what strict JSON
readers in Java and C++ accept, within fixed bounds, and turns every problem into one
:class:`~batchrl_mtf.errors.ExportError` line:

* UTF-8 text (a UTF-8 byte-order mark is skipped), at most :data:`MAX_BYTES` bytes;
* no ``NaN``/``Infinity`` tokens anywhere, and no number that overflows a double;
* no number token longer than :data:`MAX_NUMBER_CHARS` characters;
* nesting at most :data:`MAX_DEPTH` containers deep (the top-level value is depth 1);
* no object with the same key twice.

Speed: the standard parser runs without per-number hooks whenever a byte scan of the raw text
(``bytes.translate`` and substring searches, at memory speed) proves that no hook could fire: no
run of ``MAX_NUMBER_CHARS // 3`` digits (which every longer number has) and no positive exponent
of three or more digits (the only way a number of at most 100 characters overflows a double). Otherwise, or when
the scans see such text inside a string, the text is parsed again with the checking hooks, so the
result and every message are the same either way. The cyclic garbage collector is paused while a
document is parsed and built (:func:`gc_paused`): it would otherwise re-scan the growing document
hundreds of times.
"""

from __future__ import annotations

import contextlib
import gc
import json
import math
import os
from collections.abc import Iterator
from pathlib import Path

from batchrl_mtf.errors import ExportError

__all__ = [
    "MAX_BYTES",
    "MAX_DEPTH",
    "MAX_NUMBER_CHARS",
    "check_plain_json",
    "count_members",
    "dumps_stable",
    "gc_paused",
    "loads_counted",
    "loads_strict",
    "read_limited",
    "read_strict",
]

MAX_BYTES = 256 << 20
"""Largest JSON text accepted (256 MiB: about a million rows of an 8-task table)."""

MAX_DEPTH = 64
"""Deepest nesting of arrays/objects accepted; the top-level value is depth 1."""

MAX_NUMBER_CHARS = 100
"""Longest number token accepted (a double needs at most 24 characters)."""


_SCAN_MASK = bytes(
    0x30 if i in b"0123456789" else 0x65 if i in b"eE" else i if i == 0x2B else 0x20
    for i in range(256)
)
"""Digits -> ``0``, ``e``/``E`` -> ``e``, ``+`` kept, every other byte -> space."""
_LONG_DIGITS = b"0" * (MAX_NUMBER_CHARS // 3)
"""A number token longer than MAX_NUMBER_CHARS has at most 4 other characters (sign, point,
exponent mark and sign) around at most 3 digit groups, so one group has this many digits."""


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while a large document is parsed and built.

    Parsing creates millions of containers, none of them garbage; each collection would walk all
    of them again. Reference counting still frees temporaries. The collector is re-enabled only if
    it was enabled on entry (the setting is process-wide).
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _hooks_needed(raw: bytes) -> bool:
    """Whether a number hook could fire on ``raw``: a run of ``MAX_NUMBER_CHARS // 3`` digits
    (every longer number token has one), or an exponent ``e``/``e+`` with three or more digits
    (a shorter number is below 1e200). A false positive (such text inside a string, or a long
    but allowed number) only costs the slower checking parse."""
    scan = raw.translate(_SCAN_MASK)
    # rfind compares a needle's first byte first: "e" is rare here, "0" (the last byte) is not
    return any(scan.rfind(needle) >= 0 for needle in (_LONG_DIGITS, b"e000", b"e+000"))


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
    text, raw = _decode(data, source)
    with gc_paused():
        return _parse(text, source, numbers=_hooks_needed(raw), keys=True)


def loads_counted(data: bytes | str, source: str) -> tuple[object, int | None]:
    """:func:`loads_strict` without the per-object duplicate-key hook, for large documents.

    Every other check is made. A repeated key would be merged silently, so the caller proves
    there is none: in JSON text every ``:`` outside a string ends a key, so the document has no
    repeated key exactly when ``colons`` equals the number of object members plus the number of
    ``:`` inside all strings (keys and values; :func:`count_members` counts both). If the proof
    fails, parse again with :func:`loads_strict`, which names the repeated key.

    Returns:
        ``(value, colons)``: ``colons`` is the number of ``:`` in the text, or ``None`` when the
        value was parsed with every check (the text escapes a colon as ``\\u003a``, so counting
        cannot prove anything, or needs the number hooks).

    Raises:
        ExportError: As :func:`loads_strict`, except for a repeated key.
    """
    text, raw = _decode(data, source)
    with gc_paused():
        numbers = _hooks_needed(raw)
        if numbers or _escaped_colon(raw):
            return _parse(text, source, numbers=numbers, keys=True), None
        return _parse(text, source, numbers=False, keys=False), raw.count(b":")


def _escaped_colon(raw: bytes) -> bool:
    """Whether the text may write a colon as an escape (``\\u003a``): then counting is no proof."""
    return raw.rfind(b"\\u") >= 0 and (raw.rfind(b"\\u003a") >= 0 or raw.rfind(b"\\u003A") >= 0)


def count_members(value: object) -> tuple[int, int]:
    """``(object members, colons in strings)`` of a parsed JSON value, keys and values included
    (iterative; see :func:`loads_counted`)."""
    members = colons = 0
    todo = [value]
    while todo:
        node = todo.pop()
        if isinstance(node, dict):
            members += len(node)
            colons += sum(k.count(":") for k in node)
            todo.extend(node.values())
        elif isinstance(node, list):
            todo.extend(node)
        elif isinstance(node, str):
            colons += node.count(":")
    return members, colons


def _decode(data: bytes | str, source: str) -> tuple[str, bytes]:
    """The text and its UTF-8 bytes (size checked, byte-order mark skipped)."""
    size = len(data)
    if size > MAX_BYTES:
        raise ExportError(f"{source}: expected at most {MAX_BYTES} bytes of JSON, found {size}")
    if isinstance(data, str):
        return data, data.encode("utf-8", "surrogatepass")
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        return data.decode("utf-8"), data
    except UnicodeDecodeError as exc:
        raise ExportError(
            f"{source}: not UTF-8 text (invalid byte at offset {exc.start}; JSON files are "
            "UTF-8, re-save it as UTF-8)"
        ) from None


def _parse(text: str, source: str, numbers: bool, keys: bool) -> object:
    """``json.loads`` with the hooks asked for; ``NaN``/``Infinity`` are always refused."""
    hooks: dict[str, object] = {"parse_constant": _reject_constant}
    if numbers:
        hooks.update(parse_int=_parse_int, parse_float=_parse_float)
    if keys:
        hooks["object_pairs_hook"] = _unique_keys
    try:
        return json.loads(text, **hooks)  # type: ignore[arg-type]
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


def read_limited(path: str | os.PathLike[str]) -> bytes:
    """A JSON file's bytes (size checked before reading it all).

    Raises:
        ExportError: ``"<path>: ..."``: unreadable or too large.
    """
    p = Path(path)
    try:
        size = p.stat().st_size
        if size > MAX_BYTES:
            raise ExportError(f"{path}: expected at most {MAX_BYTES} bytes of JSON, found {size}")
        return p.read_bytes()
    except IsADirectoryError:
        raise ExportError(f"{path}: cannot read weight table (is a directory)") from None
    except OSError as exc:
        raise ExportError(f"{path}: cannot read weight table ({exc.strerror})") from None


def read_strict(path: str | os.PathLike[str]) -> object:
    """Read a JSON file with :func:`loads_strict` (size checked before reading it all).

    Raises:
        ExportError: ``"<path>: ..."``: unreadable, too large, not UTF-8, not valid JSON.
    """
    return loads_strict(read_limited(path), str(path))


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
