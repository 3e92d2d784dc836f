"""Screenshots of the report's 3-D Gaussian viewer, for docs/zeroshot.md.

    python scripts/viewer_screenshots.py \\
        --ckpt checkpoints/gmae_tiny_imagenette64_e40.safetensors --out docs/images

Builds the viewer (gmae.report.viewer) for the first BSDS500 val photo and the first Weizmann
horse, then lets headless Chromium photograph it in a few states set by script, as a person
would with the mouse: the model's own view, orbited, coloured by depth, and peeled. Writes
OUT/viewer_<state>.png. Needs Chromium (``apt-get install chromium``).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

# name -> JavaScript run on the page's first viewer after it loaded
STATES = {
    "model_view": "",
    "orbit": "v.rotate(0.9, 0.35);",
    "depth_orbit": "set('.gv-colour', 'depth'); set('.gv-size', 35); set('.gv-stretch', 4);"
    "v.rotate(1.1, 0.35);",
    "peeled": "set('.gv-peel', 4); v.rotate(0.5, 0.2);",
    "horse_depth": "set('.gv-image', 1); set('.gv-colour', 'depth'); set('.gv-size', 35);"
    "set('.gv-stretch', 4); v.rotate(-1.1, 0.3);",
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ckpt", required=True, type=Path, help="GMAE checkpoint")
    p.add_argument("--out", required=True, type=Path, help="folder for viewer_<state>.png")
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)

    from gmae.data import bsds500_pairs, weizmann_horses
    from gmae.loading import load_mae_or_gmae as load_model
    from gmae.photos import load_photo
    from gmae.report.html import HtmlReport
    from gmae.report.viewer import viewer_html, viewer_scene

    exe = next((shutil.which(n) for n in ("chromium", "chromium-browser") if shutil.which(n)), None)
    if exe is None:
        print("viewer_screenshots: Chromium is not installed", file=sys.stderr)
        return 2
    model = load_model(args.ckpt, "gmae", args.device)
    photos = [load_photo(bsds500_pairs("val")[0][0]), load_photo(weizmann_horses()[0][0])]
    rep = HtmlReport(f"{args.ckpt.name}")
    rep.raw_html(viewer_html(viewer_scene(model, photos, groups=8)))
    page = rep.render()
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        for name, js in STATES.items():
            script = (
                "<script>const v = window.gmaeViewers[0];"
                "const set = (sel, x) => { const e = v.root.querySelector(sel); e.value = x;"
                " e.dispatchEvent(new Event(e.tagName === 'SELECT' ? 'change' : 'input')); };"
                f"{js}</script>"
            )
            html = Path(tmp) / f"{name}.html"
            html.write_text(page.replace("</body>", script + "</body>"))
            shot = args.out / f"viewer_{name}.png"
            cmd = [
                exe, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                f"--user-data-dir={Path(tmp) / 'profile'}", "--window-size=1000,680",
                f"--screenshot={shot}", html.as_uri(),
            ]  # fmt: skip
            subprocess.run(cmd, check=True, capture_output=True, timeout=120)
            print(f"wrote {shot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
