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


def save_tiny_checkpoint(path: Path, name: str, seed: int = 0, data: str | None = None) -> Path:
    from gmae.train.checkpoint import model_kwargs, save_checkpoint
    from gmae.train.config import config_from_dict, config_to_dict

    model_cfg = {"name": name, **{k: v for k, v in TINY.items() if k != "img_size"}}
    if name == "gmae":
        model_cfg["num_gaussians"] = 16
    data_cfg = {"img_size": TINY["img_size"], **({"spec": data} if data else {})}
    cfg = config_from_dict({"model": model_cfg, "data": data_cfg})
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
    rows = [
        {"step": 5 * i, "loss": 0.2 - 0.01 * i, "lr": 1e-3, "val_loss": 0.25 - 0.01 * i,
         "health/pinned_size": 0.1 * i, "health/healthy": float(i > 2)}
        for i in range(1, 6)
    ]  # fmt: skip
    (root / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
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


def test_report_summary_box_and_training_curves(report):
    html = (report / "index.html").read_text()
    body = html.split("<body>", 1)[1]
    # The banner, then the summary box, before any section.
    assert body.index('class="banner') < body.index('class="summary"') < body.index("<h2>")
    box = re.search(r'<div class="summary">(.*?)</div></div>', body)[1]
    cells = dict(re.findall(r"<div><span>(.*?)</span><span>(.*?)</span>", box + "</div>"))
    numbers = json.loads((report / "report.json").read_text())
    assert cells["checkpoint"] == "gmae.pt (training (.pt))"
    assert "gmae_tiny" not in cells["training budget"] and "32 px" in cells["training budget"]
    assert cells["Gaussian health"].startswith(numbers["health"]["verdict"])
    assert cells["last training / validation loss"] == "0.15 / 0.2"  # the last metrics row
    ods = numbers["edges"]["gmae_combined"]["ods"]
    assert cells["edges ODS: GMAE combined / Canny"].startswith(f"{ods:.3f} / ")
    # The training curves of the metrics.jsonl next to the checkpoint are on the page.
    p = parse(report / "index.html")
    assert "Training" in p.headings and (report / "training_curves.png").is_file()
    assert any(decode_png(src).size[0] > 800 for src in p.srcs)  # three panels, full width


def test_report_commands_exist():
    """Every command the report prints parses with gmae's own parser (no invented options)."""
    import shlex

    from gmae.cli import build_parser
    from gmae.report.builders import report_commands

    parser = build_parser()
    lines = report_commands("model.pt", "deadleaves:size=64,texture=1")
    assert lines[:-1] == report_commands("model.pt")  # the occlusion command only when asked
    assert lines[-1].startswith("gmae zeroshot occlusion --ckpt model.pt --data deadleaves:")
    for line in lines:
        argv = shlex.split(line)
        assert argv[0] == "gmae"
        args = parser.parse_args(argv[1:])  # SystemExit (a test failure) on an unknown option
        assert callable(args.func), line


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
    assert -1 <= numbers["stats"]["spearman_luminance_vs_depth"]["pooled"] <= 1
    health = numbers["health"]
    assert health["verdict"] in ("healthy", "degraded", "degenerate")
    html = (report / "index.html").read_text()
    assert "Spearman(luminance, depth)" in html
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
    with pytest.raises(GmaeError, match="num_images") as info:  # the CLI: --num-images
        build_report(gmae, tmp_path, num_images=0)
    assert info.value.argument == "num_images"


def test_report_cli_missing_checkpoint(tmp_path, capsys):
    assert main(["report", "--ckpt", str(tmp_path / "none.pt"), "--out", str(tmp_path)]) == 2
    assert "none.pt not found" in capsys.readouterr().err


# --- the occlusion section of a dead-leaves checkpoint ----------------------------------------

DEADLEAVES = "deadleaves:size=32"


@pytest.fixture(scope="module")
def occlusion_report(tmp_path_factory):
    """``gmae report --quick`` of a random tiny GMAE whose stored config trained on dead leaves
    (4 scenes; seed 1, so that the seed-0 random baseline is a different model)."""
    root = tmp_path_factory.mktemp("occlusion_report")
    ckpt = save_tiny_checkpoint(root / "gmae.pt", "gmae", seed=1, data=DEADLEAVES)
    out = root / "out"
    argv = ["report", "--ckpt", str(ckpt), "--out", str(out), "--quick", "--num-images", "1",
            "--occlusion-images", "4", "--device", "cpu"]  # fmt: skip
    assert main(argv) == 0
    return ckpt, out


def _summary_cells(html: str) -> dict[str, str]:
    box = re.search(r'<div class="summary">(.*?)</div></div>', html)[1]
    return dict(re.findall(r"<div><span>(.*?)</span><span>(.*?)</span>", box + "</div>"))


def test_report_occlusion_section(occlusion_report):
    from gmae.data.deadleaves import occlusion_pairs
    from gmae.zeroshot.common import Photo, load_model
    from gmae.zeroshot.occlusion import load_scenes, model_maps, pair_accuracy

    ckpt, out = occlusion_report
    html = (out / "index.html").read_text()
    assert "Occlusion (dead leaves)" in parse(out / "index.html").headings
    occ = json.loads((out / "report.json").read_text())["occlusion"]
    assert occ["data"] == DEADLEAVES and occ["n_images"] == 4
    d, r, b = occ["depth_order"], occ["rank_correlation"], occ["boundaries"]
    for name in ("gmae", "random_gmae", "shuffled"):
        assert 0 <= d[name]["mean"] <= 1 and d[name]["n"] == 4 and d[name]["pairs"] > 0
        lo, hi = d[name]["ci"]
        assert lo <= d[name]["mean"] <= hi
        assert name in r and 0 <= b[name]["ods"] <= 1
    assert d["gmae"]["mean"] != d["random_gmae"]["mean"]  # a different (random) model
    for name in ("canny", "sobel"):
        assert 0 < b[name]["ods"] <= 1
    assert "per_image" not in d["gmae"]  # the per-scene lists stay in the command's JSON

    # The numbers are those of the checkpoint on the first 4 test scenes of its own spec.
    model = load_model(ckpt, "gmae", "cpu")
    scenes = load_scenes(DEADLEAVES, "test", 4)
    depth = model_maps(model, [Photo(str(i), s.image) for i, s in enumerate(scenes)], (4, 8)).depth
    acc = [pair_accuracy(m, *occlusion_pairs(s.leaf, 1))[0] for m, s in zip(depth, scenes)]
    assert d["gmae"]["mean"] == pytest.approx(np.mean(acc))

    # On the page: the table with the numbers, the plain sentence, the summary line, pictures.
    section = html.split("Occlusion (dead leaves)</h2>", 1)[1].split("<h2>", 1)[0]
    mean, ci = d["gmae"]["mean"], d["gmae"]["ci"]
    assert f"<td>GMAE</td><td>{mean:.4g}</td><td>[{ci[0]:.3f}, {ci[1]:.3f}]</td>" in section
    for label, name in (("Canny (edges only)", "canny"), ("Sobel (edges only)", "sobel")):
        assert f"<td>{label}</td>" in section and f"<td>{b[name]['ods']:.4g}</td>" in section
    assert "random GMAE" in section and "shuffled" in section
    sentence = re.search(r"<p>(GMAE puts the occluding side nearer.*?)</p>", section)[1]
    assert f"{d['gmae']['mean']:.3f}" in sentence and "0.5" in sentence and "0.75" in sentence
    cell = _summary_cells(html)["occlusion depth order: GMAE / random / shuffled"]
    assert cell.startswith(f"{d['gmae']['mean']:.3f} [{ci[0]:.3f}, {ci[1]:.3f}] / ")
    assert "4 scenes" in cell
    strips = [decode_png(src) for src in re.findall(r'<img src="([^"]+)"', section)]
    pngs = sorted(p.name for p in out.glob("occlusion_*.png"))
    assert len(strips) == 2 and pngs == ["occlusion_00.png", "occlusion_01.png"]
    # scene | true rank | GMAE depth | random depth | true boundaries | GMAE edges, 4x enlarged
    assert strips[0].size == (4 * (6 * 32 + 5 * 2), 4 * 32)
    assert f"--data {DEADLEAVES}" in html  # the command that computes the full scores


def test_report_without_deadleaves_has_no_occlusion_section(report):
    html = (report / "index.html").read_text()
    assert "Occlusion" not in html and "occlusion depth order" not in html
    assert "occlusion" not in json.loads((report / "report.json").read_text())
    assert not list(report.glob("occlusion_*.png"))


def test_report_occlusion_bad_options(tmp_path, capsys):
    ckpt = save_tiny_checkpoint(tmp_path / "gmae.pt", "gmae")
    base = ["report", "--ckpt", str(ckpt), "--out", str(tmp_path / "out"), "--device", "cpu"]
    assert main([*base, "--occlusion-data", "cifar10"]) == 2
    assert "--occlusion-data needs a dead-leaves spec" in capsys.readouterr().err
    assert main([*base, "--occlusion-data", "deadleaves:colour=1"]) == 2
    assert "bad deadleaves option 'colour=1'" in capsys.readouterr().err
    assert main([*base, "--occlusion-data", DEADLEAVES, "--occlusion-images", "1"]) == 2
    assert "--occlusion-images must be at least 2" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()  # failed before any work


def test_occlusion_verdict_states_what_the_number_means():
    from gmae.report.builders import occlusion_verdict

    def say(mean, lo, hi):
        return occlusion_verdict({"gmae": {"mean": mean, "ci": [lo, hi], "n": 24}})

    assert "reaches the goal of 0.75" in say(0.8, 0.77, 0.83)
    assert "better than chance (0.5), below the goal of 0.75" in say(0.6, 0.55, 0.65)
    assert "better than chance (0.5), and the CI reaches" in say(0.7, 0.6, 0.8)
    assert "not distinguishable from chance" in say(0.51, 0.48, 0.54)
    assert "worse than chance" in say(0.4, 0.35, 0.45)
    assert "0.800" in say(0.8, 0.77, 0.83) and "24 scenes" in say(0.8, 0.77, 0.83)
    assert "too few for a CI" in occlusion_verdict({"gmae": {"mean": 0.5, "n": 1}})


# --- the 3-D Gaussian viewer ------------------------------------------------------------------

# Runs in the page after load: blank check, a scripted drag (orbit), a wheel (zoom), the layer
# slider; the canvas pixels at the model's view are returned as a PNG data URL.
_VIEWER_PROBE = """<script>window.addEventListener('load', () => {
  const v = window.gmaeViewers[0], c = v.canvas, ctx = c.getContext('2d');
  const px = () => ctx.getImageData(0, 0, c.width, c.height).data;
  const bg = v.data.background;
  const differ = (p, q) => { let k = 0; for (let i = 0; i < p.length; i += 4) {
    let s = 0; for (let j = 0; j < 3; j++) s += Math.abs(p[i + j] - q(i, j)); if (s > 24) k++; }
    return k / (p.length / 4); };
  const painted = (p) => differ(p, (i, j) => bg[j]);
  const changed = (p, q) => differ(p, (i, j) => q[i + j]);
  const r = {modelView: c.toDataURL('image/png'), painted: painted(px()), drawn0: v.drawn};
  const before = px(), box = c.getBoundingClientRect();
  const at = (type, x) => c.dispatchEvent(new PointerEvent(type, {bubbles: true, pointerId: 1,
    clientX: box.left + x, clientY: box.top + 100}));
  at('pointerdown', 100); at('pointermove', 160); at('pointerup', 160);
  r.yaw = v.yaw; r.rotated = changed(before, px());
  const beforeZoom = px();
  c.dispatchEvent(new WheelEvent('wheel', {deltaY: -300, bubbles: true, cancelable: true}));
  r.zoom = v.zoom; r.zoomed = changed(beforeZoom, px());
  const s = v.root.querySelector('.gv-peel'); r.drawn = [];
  for (let k = 0; k <= Number(s.max); k++) { s.value = k; s.dispatchEvent(new Event('input'));
    r.drawn.push(Number(c.dataset.drawn)); }
  r.status = v.status.textContent;
  const d = document.createElement('div'); d.id = 'viewercheck';
  d.textContent = 'VIEWER ' + JSON.stringify(r); document.body.appendChild(d);
});</script>"""


def _viewer_page(tmp_path: Path, groups: int = 4):
    from gmae.report.viewer import viewer_html, viewer_scene
    from gmae.zeroshot.common import Photo

    torch.manual_seed(0)
    model = create_model("gmae", num_gaussians=32, **TINY).eval()
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:48, 0:64]
    photos = [
        Photo("ramp", np.stack([xx * 4, yy * 5, 255 - xx * 4], -1).astype(np.uint8)),
        Photo("noise", rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)),
    ]
    scene = viewer_scene(model, photos, groups=groups)
    rep = HtmlReport("viewer")
    rep.raw_html(viewer_html(scene))
    return model, photos, scene, rep.save(tmp_path / "viewer")


def test_viewer_scene_puts_centres_where_the_model_draws_them(tmp_path):
    from gmae.render import project
    from gmae.zeroshot.common import model_input

    model, photos, scene, _ = _viewer_page(tmp_path)
    assert [im["name"] for im in scene["images"]] == ["ramp", "noise"]
    s = model.img_size
    with torch.no_grad():
        g = model.predict_gaussians(model_input(photos, s))
        proj = project(g.means, g.scales, g.quats, g.opacities, model.camera_at(s, s))
    for i, im in enumerate(scene["images"]):
        m = np.asarray(im["means"]).reshape(-1, 3)
        z = m[:, 2] + scene["distance"]  # the viewer's camera-space depth at the model's view
        uv = scene["focal"] * s * m[:, :2] / z[:, None] + s / 2
        np.testing.assert_allclose(uv, proj.means2d[i].numpy(), atol=2e-3)
        np.testing.assert_allclose(im["depth"], proj.depths[i].numpy(), rtol=1e-4)
        groups = np.asarray(im["group"])
        assert np.bincount(groups).tolist() == [8, 8, 8, 8]  # equal-count layers
        order = np.argsort(im["depth"], kind="stable")
        assert (np.diff(groups[order]) >= 0).all()  # layer 0 is the nearest
        cov = np.asarray(im["cov"]).reshape(-1, 6)
        assert (cov[:, [0, 3, 5]] > 0).all()


def test_viewer_in_headless_chromium(tmp_path):
    model, photos, scene, page = _viewer_page(tmp_path)
    html = page.read_text()
    assert "<script src" not in html and "http" not in html.split("<body>", 1)[1]  # no network
    probe = page.with_name("_probe.html")
    probe.write_text(html.replace("</body>", _VIEWER_PROBE + "</body>"))
    res = run_chromium(["--virtual-time-budget=10000", "--dump-dom", probe.as_uri()], tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    found = re.search(r'<div id="viewercheck">VIEWER (.*?)</div>', res.stdout)
    assert found, "the viewer probe did not run: " + res.stdout[-1000:]
    r = json.loads(found[1].replace("&amp;", "&"))
    n = len(scene["images"][0]["opacity"])

    # Not blank: splats cover much of the canvas.
    assert r["painted"] > 0.2, r["painted"]
    # A scripted drag orbits (60 px = 0.6 rad of yaw) and changes the picture; the wheel zooms.
    assert abs(r["yaw"] - 0.6) < 1e-6 and r["rotated"] > 0.05, (r["yaw"], r["rotated"])
    assert r["zoom"] > 1 and r["zoomed"] > 0.05, (r["zoom"], r["zoomed"])
    # The slider peels the nearest layers: fewer splats at each step, n / groups fewer.
    assert r["drawn"][0] == r["drawn0"] <= n
    assert r["drawn"] == sorted(r["drawn"], reverse=True) and len(set(r["drawn"])) == 4
    assert r["drawn"][-1] <= n // 4 and "8 of 32 splats drawn (layer 4 of 4" in r["status"]

    # At the model's view the canvas is the model's render (same Gaussians, same camera).
    shot = decode_png(r["modelView"]).convert("RGB").resize((model.img_size,) * 2, Image.BOX)
    from gmae.zeroshot.common import model_input

    with torch.no_grad():
        g = model.predict_gaussians(model_input(photos[:1], model.img_size))
        ref = model.render_gaussians(g, model.img_size, model.img_size).image[0]
    ref = ref.permute(1, 2, 0).numpy() * 255
    got = np.asarray(shot, dtype=np.float64)
    corr = np.corrcoef(got.ravel(), ref.ravel())[0, 1]
    assert corr > 0.98 and np.abs(got - ref).mean() < 5, (corr, np.abs(got - ref).mean())
