"""A tiny builder for self-contained HTML reports.

Pictures are written as PNG files next to the page *and* embedded as base64, so the page opens
anywhere (mailed, copied) while the PNGs stay usable on their own.
"""

from __future__ import annotations

import base64
import html
import io
import os
from collections.abc import Sequence
from pathlib import Path

from gmae import io as gio
from gmae.images import (  # lived here; gmae.report.html.to_png_bytes still works
    headless_pyplot,
    to_png_bytes,
)

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em auto; padding: 0 1.5em;
  max-width: 1800px; color: #222; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; margin-top: 1.6em; border-bottom: 1px solid #ddd; }
figure { display: inline-block; margin: 0.4em; vertical-align: top; text-align: center; }
figure img { max-width: 100%; image-rendering: pixelated; border: 1px solid #ccc; }
figure.full { display: block; margin: 0.4em 0; } figure.full img { width: 100%; }
.cols { display: grid; grid-template-columns: repeat(auto-fit, minmax(560px, 1fr)); gap: 0.5em; }
.cols figure { display: block; margin: 0; } .cols figure img { width: 100%; }
.summary { display: grid; grid-template-columns: repeat(auto-fit, minmax(380px, 1fr));
  gap: 0.3em 2em; background: #f7f9fc; border: 1px solid #cfd8e3; border-radius: 4px;
  padding: 0.8em 1.2em; margin: 1em 0; }
.summary div { display: flex; justify-content: space-between; gap: 1em;
  border-bottom: 1px dotted #cfd8e3; padding: 0.15em 0; }
.summary span:first-child { color: #555; flex: 0 0 auto; max-width: 45%; }
.summary span:last-child { font-weight: 600; text-align: right; overflow-wrap: anywhere; }
figcaption { font-size: 0.85em; color: #555; }
table { border-collapse: collapse; margin: 0.8em 0; }
td, th { border: 1px solid #ccc; padding: 0.25em 0.7em; text-align: right; }
th { background: #f4f4f4; } td:first-child, th:first-child { text-align: left; }
code, pre { background: #f6f6f6; padding: 0.1em 0.3em; }
.banner { padding: 0.8em 1em; margin: 1em 0; border-radius: 4px; font-weight: 600; }
.banner.degenerate { background: #b00020; color: #fff; font-size: 1.15em; }
.banner.degraded { background: #fff3cd; color: #664d03; border: 1px solid #e0c060; }
.banner.healthy { background: #e8f5e9; color: #1b5e20; border: 1px solid #a5d6a7; }
.gviewer { display: flex; flex-wrap: wrap; gap: 1em; align-items: flex-start; }
.gviewer canvas { border: 1px solid #ccc; max-width: 100%; cursor: grab; touch-action: none; }
.gv-controls { flex: 1 1 280px; display: flex; flex-direction: column; gap: 0.6em;
  align-items: flex-start; }
.gv-status { font-weight: 600; margin: 0; } .gv-help { color: #555; font-size: 0.9em; }
"""


def _fmt(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


class HtmlReport:
    """Collects sections, figures and tables; ``save`` writes the page and its PNGs atomically."""

    def __init__(self, title: str):
        self.title = title
        self._parts: list[str] = []
        self._top: list[str] = []  # banner and summary: above every section
        self._files: dict[str, bytes] = {}

    def banner(self, text: str, kind: str) -> None:
        """A coloured box at the top: ``kind`` is degenerate (loud red), degraded (amber) or
        healthy."""
        self._top.append(f'<div class="banner {html.escape(kind)}">{html.escape(text)}</div>')

    def summary(self, rows: Sequence[tuple[str, object]]) -> None:
        """A box of (label, value) pairs at the top, after the banner (may be added last)."""
        cells = "".join(
            f"<div><span>{html.escape(str(k))}</span><span>{html.escape(_fmt(v))}</span></div>"
            for k, v in rows
        )
        self._top.append(f'<div class="summary">{cells}</div>')

    def open_columns(self) -> None:
        """Put what follows (until ``close_columns``) side by side, as many as fit the width."""
        self._parts.append('<div class="cols">')

    def close_columns(self) -> None:
        self._parts.append("</div>")

    def heading(self, text: str, level: int = 2) -> None:
        self._parts.append(f"<h{level}>{html.escape(text)}</h{level}>")

    def text(self, text: str) -> None:
        self._parts.append(f"<p>{html.escape(text)}</p>")

    def raw_html(self, fragment: str) -> None:
        """Add a trusted HTML fragment as it is (built by gmae, e.g. the 3-D viewer)."""
        self._parts.append(fragment)

    def code(self, text: str) -> None:
        self._parts.append(f"<pre>{html.escape(text)}</pre>")

    def image(
        self, name: str, image, caption: str = "", width: int | None = None, full: bool = False
    ) -> None:
        """Add a picture; ``name`` is the PNG's file name next to the page. ``full``: as wide
        as the page (small pictures scaled up, pixels kept sharp)."""
        if not name.endswith(".png"):
            name += ".png"
        data = image if isinstance(image, bytes) else to_png_bytes(image)
        self._files[name] = data
        b64 = base64.b64encode(data).decode("ascii")
        style = f' style="width:{width}px"' if width else ""
        cls = ' class="full"' if full else ""
        self._parts.append(
            f'<figure{cls}><img src="data:image/png;base64,{b64}" alt="{html.escape(name)}"{style}>'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>"
        )

    def figure(
        self, name: str, fig, caption: str = "", width: int | None = None, full: bool = False
    ) -> None:
        """Add a matplotlib figure (closed afterwards)."""
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
        headless_pyplot().close(fig)
        self.image(name, buf.getvalue(), caption, width, full)

    def table(self, headers: Sequence[str], rows: Sequence[Sequence], caption: str = "") -> None:
        head = "".join(f"<th>{html.escape(str(h))}</th>" for h in headers)
        body = "".join(
            "<tr>" + "".join(f"<td>{html.escape(_fmt(v))}</td>" for v in r) + "</tr>" for r in rows
        )
        cap = f"<caption>{html.escape(caption)}</caption>" if caption else ""
        self._parts.append(f"<table>{cap}<tr>{head}</tr>{body}</table>")

    def render(self) -> str:
        return (
            "<!DOCTYPE html>\n<html><head><meta charset='utf-8'>"
            f"<title>{html.escape(self.title)}</title><style>{_STYLE}</style></head><body>"
            f"<h1>{html.escape(self.title)}</h1>\n"
            + "\n".join(self._top + self._parts)
            + "\n</body></html>\n"
        )

    def save(self, out_dir: str | os.PathLike, page: str = "index.html") -> Path:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        for name, data in self._files.items():
            gio.write_bytes(out_dir / name, data)
        path = out_dir / page
        gio.write_text(path, self.render())
        return path
