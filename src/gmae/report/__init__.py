"""HTML reports: ``HtmlReport`` (a tiny self-contained page builder) and ``build_report(model,
out_dir, ...)``, the zero-shot report of a GMAE that ``gmae report`` and ``gmae demo`` write.

Names are imported on first access, so ``gmae --help`` does not pay for torch.
"""

from __future__ import annotations

from gmae.lazy import lazy_exports

_LAZY = {
    "HtmlReport": "gmae.report.html",
    "ReportSettings": "gmae.report.builders",
    "build_report": "gmae.report.builders",
    "layers_page": "gmae.report.layers",
}

__all__ = sorted(_LAZY)

__getattr__, __dir__ = lazy_exports(__name__, _LAZY)
