"""gmae.data.deadleaves: the generator's determinism and ground truth, the spec, training on it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from gmae.cli import main
from gmae.data import build_dataset, dataset_splits
from gmae.data import deadleaves as dl
from gmae.errors import GmaeError

SMALL = dl.DeadLeavesParams(size=24, n=10, eval_n=4)


def test_scenes_are_a_pure_function_of_seed_split_and_index():
    a = dl.render_scene(SMALL, "train", 3)
    dl.render_scene(SMALL, "train", 7)  # order of calls does not matter
    b = dl.render_scene(SMALL, "train", 3)
    for name in ("image", "leaf", "rank", "colors", "shapes"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name
    others = [
        dl.render_scene(SMALL, "train", 4),
        dl.render_scene(SMALL, "val", 3),
        dl.render_scene(SMALL, "test", 3),
        dl.render_scene(dl.DeadLeavesParams(size=24, seed=1), "train", 3),
    ]
    assert all(not np.array_equal(a.image, o.image) for o in others)
    # the dataset's item i is scene i, also in a fresh object (as in a DataLoader worker)
    ds = build_dataset("deadleaves:size=24,n=10", "train")
    assert np.array_equal(np.asarray(ds[3][0]), a.image) and ds[3][1] == 0


def test_ground_truth_matches_the_drawing():
    for index in range(3):
        scene = dl.render_scene(SMALL, "test", index)
        leaf = scene.leaf
        assert scene.image.shape == (24, 24, 3) and scene.image.dtype == np.uint8
        # without texture the image is exactly the visible leaves' colours
        assert np.array_equal(scene.colors[leaf], scene.image)
        # every pixel shows the nearest leaf covering it: dense test of every (leaf, pixel)
        rng = dl.scene_rng(SMALL, "test", index)
        leaves, drawn = [], 0
        while drawn < len(scene.colors):
            leaves.append(dl._draw_leaves(rng, dl._CHUNK, SMALL))
            drawn += dl._CHUNK
        leaves = {k: np.concatenate([c[k] for c in leaves]) for k in leaves[0]}
        yy, xx = np.divmod(np.arange(24 * 24), 24)
        m = np.repeat(np.arange(len(scene.colors)), 24 * 24)
        p = np.tile(np.arange(24 * 24), len(scene.colors))
        inside = dl._inside(leaves, m, xx[p] + 0.5, yy[p] + 0.5).reshape(-1, 24 * 24)
        assert np.array_equal(inside.argmax(0), leaf.ravel())
        assert inside.any(0).all()
        # rank: the dense order of the visible leaves, nearest first
        visible = np.unique(leaf)
        assert np.array_equal(visible[scene.rank], leaf)


def test_shapes_are_drawn_where_they_should_be():
    def one(shape, aspect=1.0, theta=0.0, angles=None):
        angles = (
            np.linspace(0, 2 * np.pi, dl.MAX_VERTICES, endpoint=False) if angles is None else angles
        )
        vx, vy = np.cos(angles), np.sin(angles)
        return {
            "cx": np.array([10.0]), "cy": np.array([10.0]), "r": np.array([4.0]),
            "shape": np.array([shape]), "cos_r": np.array([np.cos(theta) / 4]),
            "sin_r": np.array([np.sin(theta) / 4]), "inv_aspect": np.array([1 / aspect]),
            "vx": vx[None], "vy": vy[None],
            "ex": (np.roll(vx, -1) - vx)[None], "ey": (np.roll(vy, -1) - vy)[None],
        }  # fmt: skip

    x = np.array([10.0, 13.9, 14.1, 12.9, 13.3, 10.0, 10.0])
    y = np.array([10.0, 10.0, 10.0, 12.9, 13.3, 12.5, 13.0])
    m = np.zeros(len(x), int)
    disc = dl._inside(one(0), m, x, y)
    assert disc.tolist() == [True, True, False, False, False, True, True]
    ellipse = dl._inside(one(1, aspect=0.5), m, x, y)  # semi-axes 4 (x) and 2 (y)
    assert ellipse.tolist() == [True, True, False, False, False, False, False]
    square = dl._inside(one(2), m, x, y)  # half side 0.8 r = 3.2
    assert square.tolist() == [True, False, False, True, False, True, True]
    octagon = dl._inside(one(3), m, x, y)  # regular, vertices on the circle of radius 4
    assert octagon.tolist() == [True, True, False, False, False, True, True]


def test_texture_changes_pixels_not_ground_truth():
    flat = dl.render_scene(SMALL, "val", 1)
    tex = dl.render_scene(dl.DeadLeavesParams(size=24, texture=True), "val", 1)
    assert np.array_equal(flat.leaf, tex.leaf) and np.array_equal(flat.colors, tex.colors)
    assert np.mean(flat.image != tex.image) > 0.3


def test_boundaries_figure_and_pairs_from_a_leaf_map():
    leaf = np.array(
        [
            [5, 5, 2, 2],
            [5, 5, 2, 2],
            [5, 0, 0, 2],
            [5, 5, 5, 5],
        ]
    )
    assert dl.occlusion_boundaries(leaf).astype(int).tolist() == [
        [0, 0, 1, 0],
        [0, 0, 1, 0],
        [0, 1, 1, 1],
        [0, 0, 0, 0],
    ]
    # leaf 0 touches only farther leaves (figure); 2 touches 0 (occluded), 5 touches both
    assert dl.occluded_leaves(leaf).tolist() == [2, 5]
    assert np.array_equal(dl.figure_mask(leaf), leaf == 0)
    near, far = dl.occlusion_pairs(leaf, gap=1)
    pairs = {(int(a), int(b)) for a, b in zip(near, far)}
    assert (9, 5) in pairs and (9, 13) in pairs and (2, 1) in pairs and (9, 8) in pairs
    assert all(leaf.flat[a] < leaf.flat[b] for a, b in pairs)
    assert len(pairs) == len(near)  # each adjacent pair once
    assert len(pairs) == int((leaf[:, 1:] != leaf[:, :-1]).sum() + (leaf[1:] != leaf[:-1]).sum())
    near2, far2 = dl.occlusion_pairs(leaf, gap=2)
    for a, b in zip(near2, far2):  # two apart, one boundary crossed
        (ya, xa), (yb, xb) = divmod(int(a), 4), divmod(int(b), 4)
        assert abs(ya - yb) + abs(xa - xb) == 2 and leaf.flat[a] < leaf.flat[b]
        mid = leaf[(ya + yb) // 2, (xa + xb) // 2]
        assert mid in (leaf.flat[a], leaf.flat[b])
    pairs2 = set(zip(near2.tolist(), far2.tolist()))
    assert (2, 0) in pairs2 and (9, 11) in pairs2
    assert (6, 14) not in pairs2 and (14, 6) not in pairs2  # leaves 2 | 0 | 5: two boundaries
    with pytest.raises(GmaeError, match="pair gap"):
        dl.occlusion_pairs(leaf, gap=0)


def test_spec_parses_and_builds_splits():
    p = dl.parse_spec(" deadleaves:size=32, texture=1,seed=7,alpha=2.5 ")
    assert (p.size, p.texture, p.seed, p.alpha) == (32, True, 7, 2.5)
    assert dl.parse_spec(p.spec()) == p and dl.parse_spec("deadleaves") == dl.DeadLeavesParams()
    assert p.spec() == "deadleaves:size=32,texture=1,seed=7,alpha=2.5"
    assert dataset_splits("deadleaves:size=32") == ["train", "val", "test"]
    train = build_dataset("deadleaves:size=20,n=30,eval_n=6", "train")
    val = build_dataset("deadleaves:size=20,n=30,eval_n=6", "val")
    assert (len(train), len(val), train.classes, len(train.targets)) == (30, 6, ["deadleaves"], 30)
    image, label = val[5]
    assert isinstance(image, Image.Image) and image.size == (20, 20) and label == 0
    with pytest.raises(IndexError):
        val.scene(6)
    for bad, message in [
        ("deadleaves:colour=1", "bad deadleaves option 'colour=1'.*valid keys: size"),
        ("deadleaves:size", "bad deadleaves option 'size'"),
        ("deadleaves:size=big", "size='big'.*not a valid int"),
        ("deadleaves:texture=2", "texture='2'.*not a valid bool"),
        ("deadleaves:size=2", "size must be >= 4"),
        ("deadleaves:rmin=0.6", "need 0 < rmin <= rmax"),
    ]:
        with pytest.raises(GmaeError, match=message):
            build_dataset(bad)
    with pytest.raises(GmaeError, match="unknown split 'dev' for deadleaves"):
        build_dataset("deadleaves", "dev")
    with pytest.raises(GmaeError, match=r"valid: .*deadleaves\[:k=v"):
        build_dataset("deadleafs")


def test_data_info_counts_the_splits(capsys):
    assert main(["data", "info", "deadleaves:n=12,eval_n=3"]) == 0
    out = capsys.readouterr().out
    assert "deadleaves:n=12,eval_n=3/train" in out
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines() if line.strip()}
    assert rows["deadleaves"] == rows["total"] == ["12", "3", "3"]


TINY = [
    "data.spec=deadleaves:size=16,n=20,eval_n=4", "data.img_size=16", "data.num_workers=1",
    "model.patch_size=4", "model.embed_dim=32", "model.depth=1", "model.num_heads=2",
    "model.decoder_dim=32", "model.decoder_depth=1", "model.decoder_num_heads=2",
    "model.num_gaussians=16", "optim.batch_size=4", "optim.warmup_epochs=0.4",
    "run.log_every=1", "run.vis_images=4", "run.health_images=4", "run.ckpt_every_steps=0",
]  # fmt: skip


def test_pretrain_on_the_stream_and_resume_exactly(tmp_path):
    """5 steps (20 scenes / batch 4) of the real preset shrunk; stopping after 2 and resuming
    gives bit-identical weights: scene i of the stream is a function of (seed, i)."""
    args = ["pretrain", "--config", "gmae_tiny_deadleaves64", "--set", *TINY]
    full, part = tmp_path / "full", tmp_path / "part"
    assert main([*args, "--out", str(full)]) == 0
    assert main([*args, "--out", str(part), "--max-steps", "2"]) == 0
    assert torch.load(part / "last.pt", weights_only=True)["step"] == 2
    assert main(["pretrain", "--out", str(part), "--resume"]) == 0
    a = torch.load(full / "last.pt", weights_only=True)
    b = torch.load(part / "last.pt", weights_only=True)
    assert a["step"] == b["step"] == 5
    assert all(torch.equal(v, b["model"][k]) for k, v in a["model"].items())
