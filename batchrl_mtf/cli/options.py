"""Command-line options whose defaults are read from the config dataclasses.

A default lives in one place: the field of the frozen config dataclass that the command fills
(``DatasetConfig.gamma``, ``OPEConfig.n_bootstrap``, ...). :func:`config_option` declares a click
option whose default (and the ``[default: ...]`` shown in ``--help``) is that field's default, and
remembers which field it is, so ``tests/cli/test_options.py`` can check every option of every
command against its field.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, TypeVar

import click

__all__ = ["ConfigOption", "config_default", "config_option"]

F = TypeVar("F", bound=Callable[..., Any])


def config_default(config: type, field: str) -> Any:
    """The default of ``config``'s dataclass field ``field``.

    Raises:
        KeyError: ``config`` has no such field, or the field has no default.
    """
    for f in dataclasses.fields(config):
        if f.name == field:
            if f.default is not dataclasses.MISSING:
                return f.default
            if f.default_factory is not dataclasses.MISSING:
                return f.default_factory()
            raise KeyError(f"{config.__name__}.{field} has no default")
    raise KeyError(f"{config.__name__} has no field {field!r}")


class ConfigOption(click.Option):
    """A click option whose default is a config dataclass field's default.

    Args:
        param_decls: The option's names, as for :class:`click.Option`.
        config: The config dataclass.
        field: The field of ``config`` that this option sets.
        convert: Turns the field's default into the option's value space (e.g. a tuple into the
            comma-separated text the option parses); identity by default.
        **kwargs: Passed to :class:`click.Option` (``default`` is not allowed).
    """

    def __init__(
        self,
        param_decls: Any,
        *,
        config: type,
        field: str,
        convert: Callable[[Any], Any] | None = None,
        **kwargs: Any,
    ) -> None:
        if "default" in kwargs:
            raise TypeError(f"{param_decls}: the default comes from {config.__name__}.{field}")
        value = config_default(config, field)
        kwargs.setdefault("show_default", value is not None)
        super().__init__(param_decls, default=convert(value) if convert else value, **kwargs)
        self.config_class = config
        self.config_field = field
        self.convert = convert


def config_option(
    *param_decls: str,
    config: type,
    field: str,
    convert: Callable[[Any], Any] | None = None,
    **kwargs: Any,
) -> Callable[[F], F]:
    """``@click.option`` with the default of ``config.field`` (see :class:`ConfigOption`)."""
    return click.option(
        *param_decls, cls=ConfigOption, config=config, field=field, convert=convert, **kwargs
    )
