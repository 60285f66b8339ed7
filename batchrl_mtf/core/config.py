"""Helpers shared by every stage's frozen configuration dataclass.

Each stage has one frozen dataclass (``DatasetConfig``, ``FeatureConfig``, ``RewardConfig``, ...)
whose fields are typed, defaulted and documented, and which validates itself in
``__post_init__``. This module turns TOML/JSON mappings and ``--set key=value`` overrides into
those dataclasses, rejecting unknown keys and wrong types with a :class:`ConfigError` that names
the key, and turns them back into plain mappings for the run metadata.
"""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from batchrl_mtf.core.fusion import Fusion
from batchrl_mtf.errors import ConfigError

__all__ = [
    "config_from_mapping",
    "config_to_dict",
    "merge_layer",
    "parse_overrides",
    "read_toml",
    "require",
]

T = TypeVar("T")


def require(condition: bool, where: str, message: str) -> None:
    """Raise :class:`ConfigError` ``"<where>: <message>"`` unless ``condition`` holds."""
    if not condition:
        raise ConfigError(f"{where}: {message}")


def config_to_dict(config: object) -> dict[str, object]:
    """Return a dataclass config as a plain, JSON/TOML-ready mapping (tuples become lists)."""
    if not dataclasses.is_dataclass(config) or isinstance(config, type):
        raise TypeError(f"expected a dataclass instance, got {type(config).__name__}")
    out: dict[str, object] = {}
    for f in dataclasses.fields(config):
        out[f.name] = _plain(getattr(config, f.name))
    return out


def _plain(value: object) -> object:
    if isinstance(value, Fusion):
        return value.to_dict()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return config_to_dict(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def config_from_mapping(cls: type[T], mapping: Mapping[str, object], where: str) -> T:
    """Build the frozen dataclass ``cls`` from ``mapping``.

    Args:
        cls: A dataclass type.
        mapping: Field values; missing fields keep their defaults.
        where: Where the mapping came from (``"pipeline.toml [train]"``), used in error messages.

    Raises:
        ConfigError: On an unknown key, a value of the wrong type, or whatever the dataclass's own
            validation rejects.
    """
    if not isinstance(mapping, Mapping):
        raise ConfigError(f"{where}: expected a table of settings, found {type(mapping).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    mapping = _fold_flat_fusion(mapping, fields, where)
    unknown = sorted(set(mapping) - set(fields))
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) {', '.join(repr(k) for k in unknown)}; "
            f"expected one of {', '.join(sorted(fields))}"
        )
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for key, value in mapping.items():
        kwargs[key] = _coerce(value, hints[key], f"{where}: '{key}'")
    return cls(**kwargs)


_FLAT_FUSION = ("formula", "beta")


def _fold_flat_fusion(
    mapping: Mapping[str, object], fields: Mapping[str, object], where: str
) -> Mapping[str, object]:
    """Read the flat ``formula``/``beta`` keys of earlier versions as the ``fusion`` field."""
    if "fusion" not in fields or any(k in fields for k in _FLAT_FUSION):
        return mapping
    out = {k: v for k, v in mapping.items() if k not in _FLAT_FUSION}
    # "" and [] meant "not set" in the flat keys
    flat = {k: mapping[k] for k in _FLAT_FUSION if k in mapping and mapping[k] not in ("", [], ())}
    if not flat:
        return out
    if "fusion" in mapping:
        raise ConfigError(f"{where}: give either 'fusion' or {sorted(flat)}, not both")
    out["fusion"] = Fusion.from_dict(flat, where)
    return out


def _coerce(value: object, hint: object, where: str) -> object:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if hint is Any or hint is object:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{where}: invalid value {value!r}")
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(
                f"{where}: expected one of {', '.join(map(repr, args))}, found {value!r}"
            )
        return value
    if origin in (tuple, Sequence, list):
        if isinstance(value, str) or not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, found {value!r}")
        if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], where) for v in value)
        if origin is tuple and args:
            if len(args) != len(value):
                raise ConfigError(f"{where}: expected {len(args)} values, found {len(value)}")
            return tuple(_coerce(v, a, where) for a, v in zip(args, value, strict=True))
        inner = args[0] if args else object
        return tuple(_coerce(v, inner, where) for v in value)
    if origin in (dict, Mapping):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a table, found {value!r}")
        kt, vt = args if args else (str, object)
        return {_coerce(k, kt, where): _coerce(v, vt, where) for k, v in value.items()}
    if hint is Fusion:
        if isinstance(value, Fusion):
            return value
        return Fusion.from_dict(value, where)  # type: ignore[arg-type]
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        if isinstance(value, hint):
            return value
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a table, found {value!r}")
        return config_from_mapping(hint, value, where)
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true or false, found {value!r}")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected an integer, found {value!r}")
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{where}: expected a number, found {value!r}")
    if hint is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{where}: expected a string, found {value!r}")
    return value


def parse_overrides(pairs: Sequence[str], where: str = "--set") -> dict[str, object]:
    """Parse ``key=value`` strings (``--set lr=1e-4``) into a mapping.

    Values are read as TOML values when they parse as such (numbers, booleans, quoted strings,
    lists), otherwise kept as bare strings. Dotted keys (``bcq.actor_lr``) stay dotted.
    """
    import tomllib

    out: dict[str, object] = {}
    for pair in pairs:
        if "=" not in pair:
            raise ConfigError(f"{where}: expected key=value, found {pair!r}")
        key, raw = pair.split("=", 1)
        key = key.strip()
        if not key:
            raise ConfigError(f"{where}: empty key in {pair!r}")
        try:
            value: object = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw
        out[key] = value
    return out


def read_toml(path: str | Path, what: str) -> dict[str, Any]:
    """Read a TOML file; every way it can be unreadable is one :class:`ConfigError` line.

    Args:
        path: The file.
        what: What it is, for the message (``"reward file"``, ``"--config"``).

    Raises:
        ConfigError: Missing, a folder, unreadable, not UTF-8 (binary, UTF-16), not TOML, or
            nested too deeply to parse.
    """
    p = Path(path)
    try:
        return tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{p}: {what} not found") from None
    except IsADirectoryError:
        raise ConfigError(f"{p}: expected a {what} (.toml), found a folder") from None
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read the {what} ({exc.strerror})") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{p}: the {what} is not UTF-8 text (byte {exc.start}: {exc.reason}); TOML files are "
            "UTF-8"
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: not valid TOML ({exc})") from None
    except RecursionError:
        raise ConfigError(f"{p}: the {what} is nested too deeply to parse") from None


def merge_layer(base: dict[str, object], layer: Mapping[str, object]) -> None:
    """Merge the settings ``layer`` into ``base`` in place; nested tables merge key by key."""
    for key, value in layer.items():
        if isinstance(value, Mapping) and isinstance(base.get(key), dict):
            merge_layer(base[key], value)  # type: ignore[arg-type]
        elif isinstance(value, Mapping):
            base[key] = {}
            merge_layer(base[key], value)  # type: ignore[arg-type]
        else:
            base[key] = value
