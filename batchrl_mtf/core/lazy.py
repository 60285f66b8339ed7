"""Names of a package imported on first use (PEP 562), so that importing it stays light.

``import batchrl_mtf`` (every CLI start and Spark worker) and ``import batchrl_mtf.predictors``
must not import torch; their torch-backed names load when first read::

    __getattr__, __dir__ = lazy_names(__name__, {"pkg.mod": ("name",)}, globals())
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, MutableMapping, Sequence
from typing import Any

__all__ = ["lazy_names"]


def lazy_names(
    package: str, owners: Mapping[str, Sequence[str]], namespace: MutableMapping[str, Any]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The module ``__getattr__`` and ``__dir__`` of ``package`` for lazily imported names.

    Args:
        package: The package's name (for the error of an unknown attribute).
        owners: Module name -> the names it provides.
        namespace: The package's ``globals()``: a name is stored there once loaded, so later
            look-ups are plain attribute reads; its ``__all__`` is listed by ``__dir__``.
    """
    owner = {name: module for module, names in owners.items() for name in names}

    def getattr_(name: str) -> Any:
        module = owner.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        namespace[name] = value
        return value

    def dir_() -> list[str]:
        return sorted(set(namespace) | set(namespace.get("__all__", ())))

    return getattr_, dir_
