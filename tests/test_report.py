"""gmae.report: the HTML builder, ``gmae report`` on a random tiny GMAE, and the page in headless
Chromium (skipped when no Chromium is installed: Debian ``apt-get install chromium``)."""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gmae.cli import main
from gmae.errors import GmaeError
from gmae.models import create_model
from gmae.report.html import HtmlReport

TINY = dict(
    img_size=32, patch_size=8, embed_dim=32, depth=1, num_heads=2,
    decoder_dim=32, decoder_depth=1, decoder_num_heads=2,
)  # fmt: skip


def save_tiny_checkpoint(path: Path, name: str, seed: int = 0) -> Path:
    from gmae.train.checkpoint import model_kwargs, save_checkpoint
    from gmae.train.config import config_from_dict, config_to_dict

    model_cfg = {"name": name, **{k: v for k, v in TINY.items() if k != "img_size"}}
    if name == "gmae":
        model_cfg["num_gaussians"] = 16
    cfg = config_from_dict({"model": model_cfg, "data": {"img_size": TINY["img_size"]}})
    torch.manual_seed(seed)
    model = create_model(**model_kwargs(cfg))
    save_checkpoint(path, {"format": 1, "config": config_to_dict(cfg), "model": model.state_dict()})
    return path


class _Images(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.srcs: list[str] = []
        self.headings: list[str] = []
        self._in_h2 = False

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.srcs.append(dict(attrs).get("src", ""))
        self._in_h2 = tag == "h2"

    def handle_data(self, data):
        if self._in_h2:
            self.headings.append(data)
            self._in_h2 = False


def parse(page: Path) -> _Images:
    p = _Images()
    p.feed(page.read_text())
    return p


def decode_png(src: str) -> Image.Image:
    prefix = "data:image/png;base64,"
    assert src.startswith(prefix), src[:40]
    im = Image.open(io.BytesIO(base64.b64decode(src[len(prefix) :])))
    assert im.format == "PNG"
    im.load()
    return im


def chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        if path := shutil.which(name):
            return path
    return None


def run_chromium(args: list[str], tmp: Path) -> subprocess.CompletedProcess:
    exe = chromium()
    if exe is None:
        if os.environ.get("GMAE_REQUIRE_CHROMIUM"):  # CI installs it: never skip there
            pytest.fail("GMAE_REQUIRE_CHROMIUM is set but no Chromium is installed")
        pytest.skip("Chromium is not installed (apt-get install chromium); CI installs it")
    base = [
        exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={tmp / 'chromium-profile'}",
    ]  # fmt: skip
    return subprocess.run(base + args, capture_output=True, text=True, timeout=120)


# --- HtmlReport -------------------------------------------------------------------------------


def test_html_report_embeds_and_writes_pngs(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rep = HtmlReport("t <1>")
    rep.heading("Section")
    rep.text("a & b")
    rep.image("gray", np.linspace(0, 1, 12).reshape(3, 4), "cap")
    rep.image("rgb.png", torch.rand(3, 5, 6))
    fig, ax = plt.subplots()
    ax.plot([0, 1])
    rep.figure("plot", fig)
    rep.table(["a", "b"], [["x", 0.123456], ["y", 2]])
    page = rep.save(tmp_path)
    html = page.read_text()
    assert "t &lt;1&gt;" in html and "a &amp; b" in html and "0.1235" in html
    srcs = parse(page).srcs
    assert len(srcs) == 3
    sizes = [decode_png(s).size for s in srcs]
    assert sizes[:2] == [(4, 3), (6, 5)]
    for name, src in zip(["gray.png", "rgb.png", "plot.png"], srcs):
        assert (tmp_path / name).read_bytes() == base64.b64decode(src.split(",", 1)[1])


# --- the report of a random tiny model --------------------------------------------------------


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """``gmae report --quick`` of a random tiny GMAE with an MAE baseline (one image each)."""
    root = tmp_path_factory.mktemp("report")
    gmae = save_tiny_checkpoint(root / "gmae.pt", "gmae")
    mae = save_tiny_checkpoint(root / "mae.pt", "mae")
    out = root / "out"
    argv = ["report", "--ckpt", str(gmae), "--mae-ckpt", str(mae), "--out", str(out),
            "--quick", "--num-images", "1", "--device", "cpu"]  # fmt: skip
    assert main(argv) == 0
    return out


def test_report_page_has_every_section(report):
    page = report / "index.html"
    p = parse(page)
    for h in ("Reconstructions", "Depth layers", "Edges", "Figure-ground", "Gaussian statistics"):
        assert any(h in x for x in p.headings), (h, p.headings)
    html = page.read_text()
    for method in ("gmae_combined", "canny", "gmae_depth_otsu", "centre_prior", "mae_recon_error"):
        assert f"<td>{method}</td>" in html
    assert 'src="http' not in html and "src='http" not in html  # self-contained


def test_report_images_are_valid_pngs(report):
    srcs = parse(report / "index.html").srcs
    assert len(srcs) >= 8
    for src in srcs:
        im = decode_png(src)
        assert im.size[0] > 0 and im.size[1] > 0
    pngs = sorted(report.glob("*.png"))
    assert len(pngs) == len(srcs)  # every picture also written next to the page


def test_report_numbers(report):
    numbers = json.loads((report / "report.json").read_text())
    assert set(numbers["edges"]) == {"gmae_L4", "gmae_L8", "gmae_combined", "canny", "sobel"}
    for r in numbers["edges"].values():
        assert 0 <= r["ods"] <= 1 and 0 <= r["ap"] <= 1
    fg = numbers["figure_ground"]
    assert fg["all_ground"]["iou_fg"] == 0.0 and fg["gmae_depth_otsu"]["n_images"] == 1
    assert "pooled" in numbers["stats"]["spearman_size_vs_depth"]["scale_gmean"]
    health = numbers["health"]
    assert health["verdict"] in ("healthy", "degraded", "degenerate")
    html = (report / "index.html").read_text()
    assert f'class="banner {health["verdict"]}"' in html  # the verdict is shown at the top


def test_report_in_headless_chromium(report, tmp_path):
    # 1. Every <img> loads (naturalWidth > 0) once the page is rendered.
    probe = report / "_probe.html"
    script = (
        "<script>window.addEventListener('load', () => { const imgs = [...document.images];"
        " const bad = imgs.filter(i => !(i.complete && i.naturalWidth > 0)).length;"
        " const d = document.createElement('div'); d.id = 'imgcheck';"
        " d.textContent = 'IMGCHECK ' + imgs.length + ' ' + bad; document.body.appendChild(d);"
        " });</script>"
    )
    probe.write_text((report / "index.html").read_text().replace("</body>", script + "</body>"))
    try:
        res = run_chromium(["--virtual-time-budget=10000", "--dump-dom", probe.as_uri()], tmp_path)
    finally:
        probe.unlink()
    assert res.returncode == 0, res.stderr[-2000:]
    found = re.search(r'<div id="imgcheck">IMGCHECK (\d+) (\d+)</div>', res.stdout)
    assert found, "the check script did not run: " + res.stdout[-500:]
    total, bad = int(found[1]), int(found[2])
    n_imgs = len(parse(report / "index.html").srcs)
    assert total == n_imgs and bad == 0, f"{bad} of {total} images failed to load"

    # 2. A screenshot is not blank: pictures and text, not a white page.
    shot = tmp_path / "shot.png"
    res = run_chromium(
        ["--window-size=1280,2400", "--hide-scrollbars", f"--screenshot={shot}",
         (report / "index.html").as_uri()], tmp_path,
    )  # fmt: skip
    assert res.returncode == 0 and shot.is_file(), res.stderr[-2000:]
    px = np.asarray(Image.open(shot).convert("RGB"), dtype=np.float32)
    assert px.shape[:2] == (2400, 1280)
    non_white = (px.min(axis=-1) < 200).mean()
    assert px.std() > 20 and non_white > 0.05, (px.std(), non_white)


def test_build_report_rejects_bad_input(tmp_path):
    from gmae.report.builders import build_report

    with pytest.raises(GmaeError, match="GMAE"):
        build_report(create_model("mae", **TINY), tmp_path)
    gmae = create_model("gmae", num_gaussians=8, **TINY)
    with pytest.raises(GmaeError, match="num-images"):
        build_report(gmae, tmp_path, num_images=0)


def test_report_cli_missing_checkpoint(tmp_path, capsys):
    assert main(["report", "--ckpt", str(tmp_path / "none.pt"), "--out", str(tmp_path)]) == 2
    assert "none.pt not found" in capsys.readouterr().err
