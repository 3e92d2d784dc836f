"""HTML reports: ``HtmlReport`` (a tiny self-contained page builder) and ``build_report(model,
out_dir, ...)``, the zero-shot report of a GMAE that ``gmae report`` and ``gmae demo`` write.

Names are imported on first access, so ``gmae --help`` does not pay for torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "HtmlReport": "gmae.report.html",
    "ReportSettings": "gmae.report.builders",
    "build_report": "gmae.report.builders",
    "layers_page": "gmae.report.builders",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
