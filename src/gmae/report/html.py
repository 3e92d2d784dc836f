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

import numpy as np

from gmae import io as gio

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; margin-top: 1.6em; border-bottom: 1px solid #ddd; }
figure { display: inline-block; margin: 0.4em; vertical-align: top; text-align: center; }
figure img { max-width: 100%; image-rendering: pixelated; border: 1px solid #ccc; }
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
.gv-controls { flex: 1 1 280px; display: flex; flex-direction: column; gap: 0.6em; }
.gv-status { font-weight: 600; margin: 0; } .gv-help { color: #555; font-size: 0.9em; }
"""


def to_png_bytes(image) -> bytes:
    """PNG bytes of a PIL image, an HxW / HxWxC uint8 or float [0, 1] array, or a CHW tensor."""
    from PIL import Image

    if isinstance(image, Image.Image):
        pil = image
    else:
        arr = image.detach().cpu().numpy() if hasattr(image, "detach") else np.asarray(image)
        if arr.ndim == 3 and arr.shape[0] in (1, 3) and arr.shape[-1] not in (1, 3):
            arr = arr.transpose(1, 2, 0)  # CHW -> HWC
        if arr.dtype != np.uint8:
            arr = (np.clip(arr, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
        if arr.ndim == 3 and arr.shape[-1] == 1:
            arr = arr[..., 0]
        pil = Image.fromarray(arr)
    buf = io.BytesIO()
    pil.save(buf, format="PNG")
    return buf.getvalue()


class HtmlReport:
    """Collects sections, figures and tables; ``save`` writes the page and its PNGs atomically."""

    def __init__(self, title: str):
        self.title = title
        self._parts: list[str] = []
        self._files: dict[str, bytes] = {}

    def banner(self, text: str, kind: str) -> None:
        """A coloured box: ``kind`` is degenerate (loud red), degraded (amber) or healthy."""
        self._parts.append(f'<div class="banner {html.escape(kind)}">{html.escape(text)}</div>')

    def heading(self, text: str, level: int = 2) -> None:
        self._parts.append(f"<h{level}>{html.escape(text)}</h{level}>")

    def text(self, text: str) -> None:
        self._parts.append(f"<p>{html.escape(text)}</p>")

    def raw_html(self, fragment: str) -> None:
        """Add a trusted HTML fragment as it is (built by gmae, e.g. the 3-D viewer)."""
        self._parts.append(fragment)

    def code(self, text: str) -> None:
        self._parts.append(f"<pre>{html.escape(text)}</pre>")

    def image(self, name: str, image, caption: str = "", width: int | None = None) -> None:
        """Add a picture; ``name`` is the PNG's file name next to the page."""
        if not name.endswith(".png"):
            name += ".png"
        data = image if isinstance(image, bytes) else to_png_bytes(image)
        self._files[name] = data
        b64 = base64.b64encode(data).decode("ascii")
        style = f' style="width:{width}px"' if width else ""
        self._parts.append(
            f'<figure><img src="data:image/png;base64,{b64}" alt="{html.escape(name)}"{style}>'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>"
        )

    def figure(self, name: str, fig, caption: str = "", width: int | None = None) -> None:
        """Add a matplotlib figure (closed afterwards)."""
        import matplotlib.pyplot as plt

        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
        plt.close(fig)
        self.image(name, buf.getvalue(), caption, width)

    def table(self, headers: Sequence[str], rows: Sequence[Sequence], caption: str = "") -> None:
        def cell(v) -> str:
            return f"{v:.4g}" if isinstance(v, float) else html.escape(str(v))

        head = "".join(f"<th>{html.escape(str(h))}</th>" for h in headers)
        body = "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in r) + "</tr>" for r in rows)
        cap = f"<caption>{html.escape(caption)}</caption>" if caption else ""
        self._parts.append(f"<table>{cap}<tr>{head}</tr>{body}</table>")

    def render(self) -> str:
        return (
            "<!DOCTYPE html>\n<html><head><meta charset='utf-8'>"
            f"<title>{html.escape(self.title)}</title><style>{_STYLE}</style></head><body>"
            f"<h1>{html.escape(self.title)}</h1>\n" + "\n".join(self._parts) + "\n</body></html>\n"
        )

    def save(self, out_dir: str | os.PathLike, page: str = "index.html") -> Path:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        for name, data in self._files.items():
            gio.write_bytes(out_dir / name, data)
        path = out_dir / page
        gio.write_text(path, self.render())
        return path
