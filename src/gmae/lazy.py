"""Lazy package exports: names resolve (and import their module) on first access.

Keeps ``gmae --help`` and ``gmae data prepare`` from importing torch. Usage in a package's
``__init__.py``::

    __getattr__, __dir__ = lazy_exports(__name__, {"render": "gmae.render.api", ...})
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(
    package: str, names: Mapping[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """Module-level ``__getattr__`` / ``__dir__`` serving ``names`` (name -> defining module)."""

    def __getattr__(name: str) -> Any:
        if name in names:
            value = getattr(importlib.import_module(names[name]), name)
            setattr(sys.modules[package], name, value)  # cache: later lookups skip this hook
            return value
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(names))

    return __getattr__, __dir__
