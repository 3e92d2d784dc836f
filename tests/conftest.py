"""Shared pytest fixtures (keep generic: any subpackage's tests may use them)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gmae.data.archives import shared_data_root


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The directory holding the offline data archives and SHA256SUMS."""
    root = shared_data_root()
    assert (root / "SHA256SUMS").is_file(), f"no archives at {root}: set GMAE_SHARED_DATA"
    return root


@pytest.fixture
def tmp_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty cache directory, used as GMAE_DATA_DIR for the test (archives extract there)."""
    path = tmp_path / "gmae-data"
    monkeypatch.setenv("GMAE_DATA_DIR", str(path))
    return path


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """A tiny imagefolder root (spec ``imagefolder:ROOT``): train/ (2 classes x 6) and val/
    (2 classes x 2) random 20 px images, for end-to-end pretraining tests."""
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for split, n in (("train", 6), ("val", 2)):
        for cls in ("cat", "dog"):
            (root / split / cls).mkdir(parents=True)
            for i in range(n):
                pixels = rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / split / cls / f"{i}.png")
    return root


@pytest.fixture
def checkpoint_argvs(folder: Path, tmp_path: Path):
    """Every gmae (sub)command that reads a checkpoint (``--ckpt``, ``--mae-ckpt``,
    ``--resume``), as ``argvs(ckpt, good) -> [(command, flag, argv)]``: ``argv`` runs
    ``command`` with ``flag`` set to ``ckpt``, ``--ckpt`` (when it is not the flag) set to
    ``good`` and every other required option set to a usable value (images from ``folder``)."""
    import argparse

    from gmae.cli import build_parser

    def walk(p, prefix, found):
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    walk(sub, (*prefix, name), found)
        if {o for a in p._actions for o in a.option_strings} & {"--ckpt", "--mae-ckpt", "--resume"}:
            found[prefix] = p
        return found

    photo = folder / "train" / "cat" / "0.png"
    values = {
        "--data": f"imagefolder:{folder}", "--image": str(photo), "--images": str(photo.parent),
        "--masks": str(photo.parent), "--json": str(tmp_path / "out.json"),
    }  # fmt: skip

    def argvs(ckpt: Path, good: Path) -> list[tuple[tuple[str, ...], str, list[str]]]:
        runs = []
        for command, parser in sorted(walk(build_parser(), (), {}).items()):
            actions = [a for a in parser._actions if a.required]
            groups = parser._mutually_exclusive_groups
            actions += [g._group_actions[0] for g in groups if g.required]
            opts = {o for a in parser._actions for o in a.option_strings}
            for flag in ("--ckpt", "--mae-ckpt", "--resume"):
                if flag not in opts:
                    continue
                argv = [*command]
                for a in actions:
                    if a.option_strings and a.option_strings[0] != flag:
                        name = a.option_strings[0]
                        default = str(good) if name == "--ckpt" else str(tmp_path / "o" / name[2:])
                        argv += [name, values.get(name, default)]
                if command == ("pretrain",):
                    argv += ["--out", str(tmp_path / "run")]
                runs.append((command, flag, [*argv, flag, str(ckpt)]))
        return runs

    return argvs
