"""Fault injection and hostile input: what gmae guarantees when it is killed, runs out of disk,
or is handed files and values crafted to hurt (issue 19). docs/training.md and docs/data.md
state these guarantees; each is tested here.

- kill -9 in the middle of a checkpoint save, then ``--resume``: bit-exact, temp files gone;
- disk full (RLIMIT_FSIZE) while saving: one-line error, the previous ``last.pt`` intact;
- SIGTERM / SIGKILL of a command with a process pool: no process left behind;
- a crafted pickle through every ``--ckpt`` / ``--mae-ckpt`` / ``--resume`` path: nothing runs;
- checkpoint metadata asking for a huge model: refused before allocating (small memory);
- user files in ``--out`` and ``--data-dir``: never deleted or overwritten;
- bad values and output paths: one-line errors before any long work.

Tiny models (16 px, one block), a few seconds per test.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gmae.cli import main
from gmae.errors import GmaeError
from gmae.train.outputs import read_metrics

TINY = [
    "data.img_size=16", "data.num_workers=0", "data.scale=[0.5, 1.0]",
    "model.patch_size=4", "model.embed_dim=32", "model.depth=1", "model.num_heads=2",
    "model.decoder_dim=32", "model.decoder_depth=1", "model.decoder_num_heads=2",
    "optim.epochs=2", "optim.batch_size=4", "optim.warmup_epochs=1",
    "run.log_every=1", "run.vis_images=0", "run.ckpt_every=1",
]  # fmt: skip
PY = sys.executable


def pretrain_args(folder: Path, out: Path, *extra: str) -> list[str]:
    sets = ["--set", f"data.spec=imagefolder:{folder}", *TINY]
    return ["pretrain", "--config", "mae_tiny_cifar10", *sets, "--out", str(out), *extra]


def one_error(capsys, code: int) -> str:
    """The command failed with status 2 and exactly one line on stderr: ``gmae: error: ...``."""
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2, err
    assert len(err) == 1 and err[0].startswith("gmae: error: "), err
    return err[0]


def last_error_line(stderr: str) -> str:
    """The last line a subprocess printed (tqdm bars share stderr with the error)."""
    lines = [x for x in stderr.replace("\r", "\n").splitlines() if x.strip()]
    assert "Traceback" not in stderr, stderr
    return lines[-1]


def temp_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.name.endswith(".tmp") or p.name.startswith(".tmp")]


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def child_env() -> dict[str, str]:
    # The same intra-op threads as this process, so floating-point sums are the same.
    return dict(os.environ, OMP_NUM_THREADS=str(torch.get_num_threads()))


# --- kill -9 mid-save, then resume ----------------------------------------------------------

DIE_IN_SAVE = """
import os, signal, sys, torch
torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
real, calls = torch.save, [0]
def dying_save(obj, f, *args, **kwargs):
    calls[0] += 1
    if calls[0] == int(sys.argv[1]):  # half a checkpoint on disk, then kill -9
        real(obj, f, *args, **kwargs)
        f.flush(); f.truncate(f.tell() // 2); f.flush(); os.fsync(f.fileno())
        os.kill(os.getpid(), signal.SIGKILL)
    return real(obj, f, *args, **kwargs)
torch.save = dying_save
from gmae.cli import main
sys.exit(main(sys.argv[2:]))
"""


def test_kill9_during_checkpoint_save_then_resume_is_bit_exact(tmp_path, folder, capsys):
    full, run = tmp_path / "full", tmp_path / "run"
    assert main(pretrain_args(folder, full)) == 0  # uninterrupted: 2 epochs x 3 steps

    # Saves: last.pt and checkpoint-0001.pt after epoch 1, then last.pt after epoch 2: die there.
    r = subprocess.run(
        [PY, "-c", DIE_IN_SAVE, "3", *pretrain_args(folder, run)],
        env=child_env(), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert r.returncode == -signal.SIGKILL, r.stderr
    (stale,) = temp_files(run)  # the half-written checkpoint the kill left behind
    assert stale.name.startswith(".last.pt.") and stale.stat().st_size > 0
    assert torch.load(run / "last.pt", weights_only=True)["step"] == 3  # the old one, intact

    assert main(["pretrain", "--out", str(run), "--resume"]) == 0
    assert temp_files(run) == []
    keys = ("step", "epoch", "loss", "lr", "grad_norm", "skipped")
    curve = [{k: row[k] for k in keys} for row in read_metrics(run / "metrics.jsonl")]
    assert curve == [{k: row[k] for k in keys} for row in read_metrics(full / "metrics.jsonl")]
    a = torch.load(full / "last.pt", weights_only=True)
    b = torch.load(run / "last.pt", weights_only=True)
    assert a["step"] == b["step"] == 6
    assert all(torch.equal(v, b["model"][k]) for k, v in a["model"].items())


def test_stale_temp_cleanup_touches_only_dead_gmae_writers(tmp_path):
    from gmae import io as gio

    dead = subprocess.run([PY, "-c", "import os; print(os.getpid())"], capture_output=True)
    dead_pid = int(dead.stdout)
    ours = tmp_path / f".last.pt.gmae-{dead_pid}-abcd1234.tmp"
    live = tmp_path / f".last.pt.gmae-{os.getpid()}-efgh5678.tmp"  # a writer still running
    foreign = [tmp_path / ".tmpab12CD", tmp_path / ".last.pt.x.tmp", tmp_path / "notes.tmp"]
    for p in (ours, live, *foreign):
        p.write_bytes(b"x")
    gio.write_text(tmp_path / "last.pt", "new")
    assert not ours.exists() and live.exists() and all(p.exists() for p in foreign)
    assert (tmp_path / "last.pt").read_text() == "new"


# --- disk full ------------------------------------------------------------------------------


def _limit_file_size(limit: int):
    def preexec() -> None:
        import resource

        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return preexec


def test_disk_full_while_saving_a_checkpoint(tmp_path, folder, capsys):
    run = tmp_path / "run"
    assert main([*pretrain_args(folder, run), "--max-steps", "3"]) == 0  # epoch 1: last.pt
    before = (run / "last.pt").read_bytes()
    limit = len(before) // 2  # metrics and logs fit, a checkpoint does not

    r = subprocess.run(
        [PY, "-m", "gmae", "pretrain", "--out", str(run), "--resume"],
        env=child_env(), capture_output=True, text=True, timeout=300,
        preexec_fn=_limit_file_size(limit),
    )  # fmt: skip
    assert r.returncode == 2, r.stderr
    line = last_error_line(r.stderr)
    assert line.startswith(f"gmae: error: cannot save checkpoint {run / 'last.pt'}: ")
    assert "file too large" in line and "the previous last.pt is intact" in line
    assert (run / "last.pt").read_bytes() == before
    assert temp_files(run) == []
    assert main(["pretrain", "--out", str(run), "--resume"]) == 0  # nothing lost
    assert torch.load(run / "last.pt", weights_only=True)["step"] == 6


# --- process pools die with their parent ----------------------------------------------------


def _session(sid: int) -> list[int]:
    """Live (not zombie) processes of session ``sid``."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        fields = text[text.rindex(")") + 2 :].split()  # state ppid pgrp session ...
        if int(fields[3]) == sid and fields[0] != "Z":
            pids.append(int(stat.parent.name))
    return pids


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_killing_a_pooled_command_leaves_no_process(sig, tmp_path):
    from gmae.data import dataset_root

    gt = dataset_root("bsds500") / "groundTruth" / "val"
    pred = tmp_path / "pred"
    pred.mkdir()
    rng = np.random.default_rng(0)
    for mat in sorted(gt.glob("*.mat"))[:6]:  # random maps: slow to match, plenty of time
        Image.fromarray(rng.integers(0, 256, (321, 481), dtype=np.uint8)).save(
            pred / f"{mat.stem}.png"
        )
    cmd = [PY, "-m", "gmae", "eval", "boundaries", "--pred", str(pred), "--gt", str(gt),
           "--workers", "2", "--quiet", "--json", str(tmp_path / "b.json")]  # fmt: skip
    proc = subprocess.Popen(cmd, start_new_session=True, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while len(_session(proc.pid)) < 3 and proc.poll() is None:  # parent + 2 workers
            assert time.monotonic() < deadline, "the pool never started"
            time.sleep(0.1)
        assert proc.poll() is None, proc.stderr.read()
        time.sleep(1.0)  # the workers are computing
        os.kill(proc.pid, sig)
        proc.wait(timeout=30)
        deadline = time.monotonic() + 20
        while _session(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        left = _session(proc.pid)
    finally:
        for pid in _session(proc.pid):  # never leak processes from a failing test
            os.kill(pid, signal.SIGKILL)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert left == []
    assert not (tmp_path / "b.json").exists()


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
def test_sigterm_to_the_process_group_saves_last_pt(folder, tmp_path):
    """A scheduler's SIGTERM to the whole process group (SLURM, ``kill -- -PGID``) reaches the
    data-loader workers too: they ignore it, the main process saves last.pt and exits 3."""
    out = tmp_path / "run"
    # later keys override TINY's: a worker, and a run long enough to be stopped
    sets = [
        f"data.spec=imagefolder:{folder}",
        *TINY,
        "data.num_workers=1",
        "model.num_gaussians=8",
        "optim.epochs=500",
        "run.ckpt_every=1000",
        "run.health_every=-1",
    ]
    cmd = [PY, "-m", "gmae", "pretrain", "--config", "gmae_tiny_cifar10", "--out", str(out),
           "--set", *sets]  # fmt: skip
    proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        metrics = out / "metrics.jsonl"
        while not (metrics.exists() and metrics.read_text().count("\n") >= 3):
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "training never logged"
            time.sleep(0.1)
        assert len(_session(proc.pid)) >= 2  # the main process and its worker
        os.killpg(proc.pid, signal.SIGTERM)
        rc = proc.wait(timeout=60)
        err = proc.stderr.read().decode()
        deadline = time.monotonic() + 20
        while _session(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        left = _session(proc.pid)
    finally:
        for pid in _session(proc.pid):
            os.kill(pid, signal.SIGKILL)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert rc == 3, err[-2000:]
    assert (out / "last.pt").exists() and left == []
    assert "RuntimeError" not in err


# --- crafted pickles --------------------------------------------------------------------------


class _Evil:
    """Unpickling this runs a shell command (if the loader lets it)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _tiny_gmae_checkpoint(path: Path) -> Path:
    from gmae.models import create_model
    from gmae.train.checkpoint import model_kwargs
    from gmae.train.config import config_from_dict, config_to_dict

    model = {"name": "gmae", "patch_size": 4, "embed_dim": 32, "depth": 1, "num_heads": 2,
             "decoder_dim": 32, "decoder_depth": 1, "decoder_num_heads": 2,
             "num_gaussians": 8}  # fmt: skip
    cfg = config_from_dict({"model": model, "data": {"img_size": 16}})
    weights = create_model(**model_kwargs(cfg)).state_dict()
    torch.save({"config": config_to_dict(cfg), "model": weights}, path)
    return path


def test_crafted_pickle_through_every_checkpoint_path_runs_nothing(
    tmp_path, checkpoint_argvs, capsys
):
    marker = tmp_path / "pwned"
    evil_pickle = tmp_path / "evil.pt"
    torch.save({"config": {"model": {"name": "gmae"}}, "model": {"w": _Evil(marker)}}, evil_pickle)
    evil_release = tmp_path / "evil.pth"
    torch.save({"model": _Evil(marker)}, evil_release)
    good = _tiny_gmae_checkpoint(tmp_path / "good.pt")
    commands = set()
    runs = 0
    for evil in (evil_pickle, evil_release):
        for command, _, argv in checkpoint_argvs(evil, good):
            line = one_error(capsys, main(argv))
            assert f"cannot read checkpoint {evil}" in line, (argv, line)
            commands.add(command)
            runs += 1
    # eval 4, zeroshot 4, export 3, report, pretrain
    assert len(commands) >= 13, sorted(commands)
    assert not marker.exists()
    assert runs >= 2 * len(commands)


# --- untrusted metadata ---------------------------------------------------------------------

LOAD_ALL = """
import json, resource, sys
import torch
from gmae.errors import GmaeError
from gmae.export.checkpoints import load_any
import gmae.models
def peak():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
base, errors = peak(), []
for path in sys.argv[1:]:
    try:
        load_any(path)
        errors.append(None)
    except GmaeError as exc:
        errors.append(str(exc))
print(json.dumps({"base": base, "peak": peak(), "errors": errors}))
"""


def test_oversized_metadata_is_refused_before_allocating(tmp_path):
    from safetensors.torch import save_file

    from gmae.export.checkpoints import FORMAT, FORMAT_VERSION

    # Real, small tensors (a 1-block ViT of width 32) under configs that ask for much more.
    small = {"model": {"name": "mae", "patch_size": 4, "embed_dim": 32, "depth": 1,
                       "num_heads": 2, "decoder_dim": 32, "decoder_depth": 1,
                       "decoder_num_heads": 2}, "data": {"img_size": 16}}  # fmt: skip
    from gmae.models import create_model

    tensors = create_model(**small["model"] | {"img_size": 16}).state_dict()
    tensors = {k: v.contiguous() for k, v in tensors.items()}
    huge = [
        {"model": {"name": "mae", "encoder": "large", "depth": 1000}, "data": {"img_size": 224}},
        {"model": {"name": "mae", "encoder": "large", "depth": 200}, "data": {"img_size": 224}},
        {"model": {"name": "gmae", "encoder": "large", "num_gaussians": 10**9}},
        {"model": {"name": "gmae", "encoder": "large", "num_gaussians": 60000, "depth": 100,
                   "decoder_dim": 4096, "decoder_depth": 64}, "data": {"img_size": 1024}},
    ]  # fmt: skip
    paths = []
    for i, cfg in enumerate(huge):
        meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "config": json.dumps(cfg)}
        save_file(tensors, tmp_path / f"huge{i}.safetensors", metadata=meta)
        torch.save({"config": cfg, "model": tensors}, tmp_path / f"huge{i}.pt")
        paths += [tmp_path / f"huge{i}.safetensors", tmp_path / f"huge{i}.pt"]
    # An MAE-release file whose key names describe 200 blocks of width 1024 (tiny tensors).
    release = {"cls_token": torch.zeros(1, 1, 1024), "pos_embed": torch.zeros(1, 197, 1024),
               "patch_embed.proj.weight": torch.zeros(1024, 3, 16, 16),
               "norm.weight": torch.zeros(1024),
               "blocks.0.mlp.fc1.weight": torch.zeros(4096, 1024)}  # fmt: skip
    release |= {f"blocks.{i}.norm1.weight": torch.zeros(1) for i in range(200)}
    torch.save(release, tmp_path / "release.pth")
    paths.append(tmp_path / "release.pth")

    r = subprocess.run([PY, "-c", LOAD_ALL, *map(str, paths)], capture_output=True, text=True,
                       timeout=300, env=child_env())  # fmt: skip
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout.strip().splitlines()[-1])
    for path, err in zip(paths, result["errors"]):
        assert err is not None and "\n" not in err, (path, err)
        assert str(path) in err or "config key" in err, (path, err)
    assert result["peak"] - result["base"] < 200 * 2**20, result  # not GBs of weights


def test_non_finite_weights_are_refused(tmp_path, capsys):
    from gmae.export.checkpoints import load_any

    path = _tiny_gmae_checkpoint(tmp_path / "nan.pt")
    ckpt = torch.load(path, weights_only=True)
    next(v for v in ckpt["model"].values() if v.is_floating_point()).fill_(float("nan"))
    torch.save(ckpt, path)
    with pytest.raises(GmaeError, match="non-finite .*weights"):
        load_any(str(path))
    line = one_error(capsys, main(["export", "checkpoint", "--ckpt", str(path),
                                   "--out", str(tmp_path / "x.safetensors")]))  # fmt: skip
    assert "non-finite" in line and not (tmp_path / "x.safetensors").exists()


# --- user files -------------------------------------------------------------------------------


def test_user_files_in_out_are_never_replaced(tmp_path, folder, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "config.yaml").write_text("my notes\n")
    (out / "metrics.jsonl").write_text('{"mine": 1}\n')
    (out / "notes.txt").write_text("keep\n")
    before = snapshot(out)
    for extra in ([], ["--resume"]):  # --resume with no last.pt starts fresh: same check
        line = one_error(capsys, main([*pretrain_args(folder, out), *extra]))
        assert "is not a gmae run directory" in line and str(out / "config.yaml") in line
        assert snapshot(out) == before and sorted(os.listdir(out)) == sorted(before)
    # --force replaces what the run writes, and nothing else
    assert main([*pretrain_args(folder, out), "--force", "--max-steps", "1"]) == 0
    assert (out / "notes.txt").read_text() == "keep\n"
    assert (out / "last.pt").is_file() and "my notes" not in (out / "config.yaml").read_text()
    # a run directory made by gmae is reused without --force, other files untouched
    run = tmp_path / "run"
    assert main([*pretrain_args(folder, run), "--max-steps", "1"]) == 0
    (run / "notes.txt").write_text("keep\n")
    assert main(["pretrain", "--out", str(run), "--resume", "--max-steps", "2"]) == 0
    assert (run / "notes.txt").read_text() == "keep\n"


def test_user_files_in_data_dir_are_never_deleted(tmp_path, monkeypatch, folder, capsys):
    data = tmp_path / "data"
    (data / "bsds500").mkdir(parents=True)
    (data / "bsds500" / "mine.txt").write_text("keep\n")
    line = one_error(capsys, main(["data", "prepare", "bsds500", "--data-dir", str(data)]))
    assert str(data / "bsds500") in line and "not a complete gmae extraction" in line
    monkeypatch.setenv("GMAE_DATA_DIR", str(data))
    one_error(capsys, main(["data", "prepare", "bsds500"]))
    # through a config's data.root (which a checkpoint's stored config can also set)
    (data / "cifar10").mkdir()
    (data / "cifar10" / "mine.txt").write_text("keep\n")
    sets = [f"data.root={data}", "data.spec=cifar10"]
    line = one_error(capsys, main([*pretrain_args(folder, tmp_path / "r"), "--set", *sets]))
    assert str(data / "cifar10") in line
    assert (data / "bsds500" / "mine.txt").read_text() == "keep\n"
    assert (data / "cifar10" / "mine.txt").read_text() == "keep\n"


# --- bad values and output paths: one line, before any long work ------------------------------


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model.mask_ratio=abc", "'model.mask_ratio' expects float"),
        ("model.mask_ratio=.nan", "'model.mask_ratio' must be a finite number"),
        ("model.num_gaussians=1e9", "'model.num_gaussians' expects int"),
        ("model.num_gaussians=1000000000", "'model.num_gaussians' must be between"),
        ("model.depth=-1", "'model.depth' must be between"),
        ("model.bogus=1", "unknown config key 'model.bogus'"),
        ("optim.base_lr=.nan", "'optim.base_lr' must be a finite number"),
        ("optim.base_lr=.inf", "'optim.base_lr' must be a finite number"),
        ("optim.betas=[1.5,2]", "'optim.betas' must both be in [0, 1)"),
        ("run.seed=1e23", "'run.seed' expects int"),
        ("run.seed=100000000000000000000000", "'run.seed' is out of range"),
        ("run.seed=4294967296", "'run.seed' must be at most"),
        ("data.img_size=100000", "'data.img_size' must be at most"),
    ],
)
def test_bad_config_values_are_one_line_errors(override, message, tmp_path, capsys):
    argv = ["pretrain", "--config", "gmae_tiny_cifar10", "--set", override,
            "data.spec=imagefolder:/nonexistent", "--out", str(tmp_path / "r")]  # fmt: skip
    assert message in one_error(capsys, main(argv))
    assert not (tmp_path / "r").exists()


def test_argument_errors_name_arguments_in_the_library_and_flags_in_the_cli(tmp_path, capsys):
    import pickle

    from gmae.cli import error_message
    from gmae.errors import ArgumentError
    from gmae.evaluate.common import make_loader

    with pytest.raises(ArgumentError) as info:
        make_loader([], batch_size=0)
    exc = info.value
    assert isinstance(exc, GmaeError) and exc.argument == "batch_size"
    assert str(exc) == "batch_size must be at least 1, got 0"
    assert error_message(exc) == "--batch-size must be at least 1, got 0"
    # a message that places its argument itself, and names another one
    both = ArgumentError("config", "{ckpt} random needs {config} PRESET", mentions=("ckpt",))
    assert str(both) == "ckpt random needs config PRESET"
    # braces in an interpolated value (a path) are not argument names
    path = ArgumentError("out", "/data/{split}/x exists and is not a directory")
    assert error_message(path) == "--out /data/{split}/x exists and is not a directory"
    assert error_message(both) == "--ckpt random needs --config PRESET"
    assert error_message(ArgumentError("wds", "give at least one {wds} value")).endswith(
        "--wd value"
    )
    back = pickle.loads(pickle.dumps(both))  # worker processes send errors pickled
    assert (back.argument, back.mentions, str(back)) == ("config", ("ckpt",), str(both))
    # the CLI's one line
    line = one_error(capsys, main(["eval", "knn", "--ckpt", "random", "--data", "cifar10"]))
    assert "--ckpt random needs --config PRESET" in line


def test_empty_and_binary_yaml_are_refused(tmp_path, capsys):
    empty, binary = tmp_path / "empty.yaml", tmp_path / "binary.yaml"
    empty.write_text("# nothing here\n")
    binary.write_bytes(bytes(range(256)) * 4)
    for path, message in ((empty, "is empty"), (binary, "not a text")):
        line = one_error(capsys, main(["pretrain", "--config", str(path), "--out", "r"]))
        assert message in line and str(path) in line


def test_bad_output_paths_are_found_before_any_work(tmp_path, capsys):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    nowhere = "imagefolder:/nonexistent"  # would be the error if outputs were checked later
    cases = [
        (["pretrain", "--config", "gmae_tiny_cifar10", "--set", f"data.spec={nowhere}",
          "--out", str(a_file)], "exists and is not a directory"),
        (["pretrain", "--config", "gmae_tiny_cifar10", "--set", f"data.spec={nowhere}",
          "--out", str(a_file / "sub")], "is not a directory"),
        (["eval", "boundaries", "--pred", "/nonexistent", "--gt", "/nonexistent",
          "--json", str(tmp_path)], "is a directory"),
        (["eval", "knn", "--ckpt", "/nonexistent.pt", "--data", nowhere,
          "--json", str(a_file / "x.json")], "is not a directory"),
        (["export", "checkpoint", "--ckpt", "/nonexistent.pt", "--out", str(tmp_path)],
         "is a directory"),
    ]  # fmt: skip
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        cases.append((["eval", "boundaries", "--pred", "/nonexistent", "--gt", "/nonexistent",
                       "--json", str(locked / "x.json")], "permission denied"))  # fmt: skip
    for argv, message in cases:
        line = one_error(capsys, main(argv))
        assert message in line and "--" in line, (argv, line)


# --- silent wrong results --------------------------------------------------------------------


def test_16_bit_png_is_scaled_not_clipped(tmp_path):
    from gmae.data import load_image

    ramp = np.linspace(0, 65535, 64 * 64).reshape(64, 64).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "deep.png")
    assert Image.open(tmp_path / "deep.png").mode.startswith("I")
    rgb = np.asarray(load_image(tmp_path / "deep.png")).astype(int)
    expected = np.rint(ramp / 257.0).astype(int)
    assert np.abs(rgb[..., 0] - expected).max() <= 1
    assert rgb[..., 0].mean() == pytest.approx(127.5, abs=1)  # was ~255: clipped


def test_metrics_never_hold_bare_nan(tmp_path):
    from gmae.train.outputs import RunLog

    with RunLog(tmp_path, 0, 2, True) as log:
        log.metrics({"step": 1, "epoch": 0, "loss": float("nan"), "lr": 0.1,
                     "grad_norm": float("inf"), "images_per_s": 1.0, "skipped": 1})  # fmt: skip

    def refuse(name):
        raise ValueError(f"bare {name} in metrics.jsonl")

    (row,) = [json.loads(x, parse_constant=refuse) for x in (tmp_path / "metrics.jsonl").open()]
    assert row["loss"] is None and row["grad_norm"] is None and row["lr"] == 0.1


@pytest.mark.parametrize("backend", ["reference", "fast"])
@pytest.mark.parametrize(
    ("name", "index", "value"),
    [("colors", (0, 2, 1), float("nan")), ("opacities", (1, 3), float("nan")),
     ("means", (0, 1, 0), float("inf")), ("scales", (1, 0, 2), float("nan")),
     ("quats", (0, 4, 0), float("-inf"))],
)  # fmt: skip
def test_renderer_drops_a_gaussian_with_any_non_finite_parameter(backend, name, index, value):
    from gmae.render import Camera, render

    g = torch.Generator().manual_seed(0)
    B, K = 2, 6
    means = (torch.rand(B, K, 3, generator=g) - 0.5) * 1.5
    params = {
        "means": means, "scales": torch.rand(B, K, 3, generator=g) * 0.3 + 0.05,
        "quats": torch.randn(B, K, 4, generator=g), "colors": torch.rand(B, K, 3, generator=g),
        "opacities": torch.rand(B, K, generator=g) * 0.8 + 0.1,
    }  # fmt: skip
    camera = Camera(height=24, width=24)
    keep = torch.ones(B, K, dtype=torch.bool)
    keep[index[0], index[1]] = False
    expected = render(**params, camera=camera, keep=keep, backend=backend)
    bad = {k: v.clone().requires_grad_() for k, v in params.items()}
    with torch.no_grad():
        bad[name][index] = value
    out = render(**bad, camera=camera, backend=backend)
    for field in ("image", "alpha", "depth"):
        assert torch.isfinite(getattr(out, field)).all()
        torch.testing.assert_close(getattr(out, field), getattr(expected, field))
    assert torch.equal(out.radii, expected.radii) and out.radii[index[0], index[1]].eq(0).all()
    out.image.sum().backward()
    for k, v in bad.items():
        assert torch.isfinite(v.grad).all(), k
        assert v.grad[index[0], index[1]].eq(0).all(), k
