"""Pretraining configuration: nested dataclasses, YAML presets and ``--set key=value`` overrides.

A config is four sections. ``model`` is a free-form dict passed to ``gmae.models.create_model``
(its ``name`` picks "mae", "gmae" or "latent_mim"; the model checks its own keys). ``data``,
``optim`` and ``run`` are dataclasses: every key is typed, and an unknown key or a value of the
wrong type is a ``GmaeError`` naming the key. Presets are the YAML files in ``gmae/configs``
(``configs/`` at the repository root); ``--config`` takes a preset name or a path to a YAML file.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import math
import re
import types
import typing
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from gmae.errors import GmaeError

PRESET_DIR = Path(__file__).resolve().parent.parent / "configs"


@dataclass
class DataConfig:
    spec: str = "cifar10"  # gmae.data.build_dataset spec: cifar10 | imagenette-128 | imagefolder:/p
    split: str = "train"
    val_split: str = "test"  # the fixed batch of reconstruction pictures comes from here
    root: str | None = None  # data cache directory (default: GMAE_DATA_DIR or ~/.cache/gmae)
    img_size: int = 32  # also passed to the model
    scale: tuple[float, float] = (0.2, 1.0)  # RandomResizedCrop area range
    num_workers: int = 2  # DataLoader workers per process
    persistent_workers: bool = True  # keep workers between epochs (the epoch is in the indices)


@dataclass
class OptimConfig:
    epochs: int = 100
    batch_size: int = 256  # per process and micro-batch
    accum_iter: int = 1  # micro-batches per optimizer step
    effective_batch: int | None = None  # if set: accum_iter = this / (batch_size x world size)
    base_lr: float = 1.5e-4  # lr = base_lr x effective batch / 256
    min_lr: float = 0.0
    warmup_epochs: float = 10.0
    # Multiplier of the learning rate for every model parameter outside the encoder (decoder,
    # queries, head; Latent MIM's projector and decoder). 1: one rate, as MAE and the paper.
    decoder_lr_scale: float = 1.0
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.95)
    clip_grad: float | None = None  # max global grad norm (None: no clipping, norm still logged)
    # If set: the run and its learning-rate schedule span exactly this many optimizer steps
    # (epochs is then ignored; the last epoch may be partial).
    total_steps: int | None = None


@dataclass
class RunConfig:
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    amp: Literal["none", "bf16", "fp16"] = "none"  # autocast on CUDA; ignored on CPU
    tf32: bool = True  # TF32 matmuls / convolutions on CUDA, only with amp none (gmae.precision)
    log_every: int = 10  # optimizer steps between metrics lines
    ckpt_every: int = 10  # epochs between checkpoint-EPOCH.pt (last.pt after every epoch)
    ckpt_every_steps: int = 0  # also refresh last.pt every N steps mid-epoch (0: off)
    vis_every: int = 10  # epochs between reconstruction grids (and after the last epoch)
    vis_images: int = 8
    # Also reconstruction and depth-layer pictures every N optimizer steps (0: only at epochs);
    # pictures are always drawn at the end of a run, also one stopped by --max-steps or a signal.
    vis_every_steps: int = 1000
    # Validation loss and (GMAE) Gaussian health on a fixed validation batch with a fixed mask,
    # every `health_every` optimizer steps (0: at every log step; -1: never).
    health_every: int = 0
    health_images: int = 64
    max_nonfinite: int = 5  # consecutive non-finite losses before training stops
    online_probe: bool = False  # BatchNorm + Linear on detached features, for monitoring
    probe_classes: int | None = None  # default: the number of classes of the data set


@dataclass
class Config:
    model: dict[str, Any] = field(default_factory=lambda: {"name": "gmae"})
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)


SECTIONS = {"data": DataConfig, "optim": OptimConfig, "run": RunConfig}
# gmae.models.MODELS, spelled out so that reading a config does not import torch.
MODEL_NAMES = ("mae", "gmae", "latent_mim")
INT_LIMIT = 2**63 - 1  # any int key (larger ones overflow torch / numpy)
SEED_MAX = 2**31 - 1  # numpy seeds must fit 32 bits (seed + rank, seed + epoch)
# Sane bounds on the model sizes a config (or a checkpoint's stored config) may ask for: far
# above any ViT in use, far below what would exhaust memory while building the model.
MODEL_INT_BOUNDS = {
    "img_size": (1, 4096),
    "patch_size": (1, 1024),
    "in_chans": (1, 64),
    "embed_dim": (1, 16384),
    "depth": (0, 256),
    "num_heads": (1, 1024),
    "decoder_dim": (1, 16384),
    "decoder_depth": (0, 256),
    "decoder_num_heads": (1, 1024),
    "num_gaussians": (1, 65536),
    "refine_steps": (0, 16),
    "proj_hidden_dim": (1, 65536),
    "proj_depth": (0, 64),
}
MODEL_INT_DEFAULT_BOUNDS = (-(2**31), 2**31 - 1)  # other int model arguments
# Old model keys still read from configs and checkpoints: (model name, old key) -> new key.
RENAMED_MODEL_KEYS = {("gmae", "norm_pix"): "norm_pix_loss"}
# Model arguments that take Python objects (``decoder=DecoderConfig(...)``), not config values:
# configs spell them as flat keys (decoder_dim, decoder_depth, decoder_num_heads).
OBJECT_MODEL_ARGS = ("decoder",)
MAX_PATCHES = 65536  # (img_size / patch_size)^2


# --- loading --------------------------------------------------------------------------------

# YAML 1.1 (PyYAML) reads 1e-4 as a string; accept YAML 1.2 floats so `--set optim.base_lr=1e-4`
# and the same spelling in files mean numbers.
_FLOAT = re.compile(
    r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""",
    re.X,
)


def _yaml_load(text: str) -> Any:
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT, list("-+0123456789."))
    return yaml.load(text, Loader=Loader)  # noqa: S506 (a SafeLoader subclass)


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def resolve_config_path(name_or_path: str | Path) -> Path:
    """A preset name (``gmae_tiny_cifar10``) or a path to a YAML file."""
    path = Path(name_or_path).expanduser()
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise GmaeError(f"config file {path} not found")
        return path
    preset = PRESET_DIR / f"{name_or_path}.yaml"
    if not preset.is_file():
        raise GmaeError(
            f"unknown config {str(name_or_path)!r}: not a file and not a preset "
            f"({', '.join(preset_names())})"
        )
    return preset


def load_config(name_or_path: str | Path, overrides: typing.Sequence[str] = ()) -> Config:
    """Load a preset or YAML file, apply ``key.sub=value`` overrides, validate."""
    import yaml

    path = resolve_config_path(name_or_path)
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise GmaeError(f"config file {path} is not a text (UTF-8) YAML file") from exc
    except OSError as exc:
        raise GmaeError(f"cannot read config file {path}: {exc.strerror}") from exc
    if "\x00" in text:
        raise GmaeError(f"config file {path} is not a text YAML file (it contains NUL bytes)")
    try:
        raw = _yaml_load(text)
    except yaml.YAMLError as exc:
        first = " ".join(str(exc).split())
        raise GmaeError(f"{path} is not valid YAML: {first}") from exc
    if raw is None or raw == {}:
        raise GmaeError(
            f"config file {path} is empty: give at least the model section (or use a preset: "
            f"{', '.join(preset_names())})"
        )
    if not isinstance(raw, dict):
        raise GmaeError(f"{path}: expected a mapping of sections (model, data, optim, run)")
    apply_overrides(raw, overrides)
    model = raw.get("model")
    if isinstance(model, dict):
        for (name, old), new in RENAMED_MODEL_KEYS.items():
            if model.get("name") == name and old in model:
                warnings.warn(
                    f"{path}: config key 'model.{old}' is deprecated, use 'model.{new}'",
                    FutureWarning,
                    stacklevel=2,
                )
    return config_from_dict(raw)


def apply_overrides(raw: dict, overrides: typing.Sequence[str]) -> dict:
    """Apply ``a.b=value`` strings (values parsed as YAML) to a nested dict, in place."""
    import yaml

    for item in overrides:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise GmaeError(f"--set expects key.sub=value, got {item!r}")
        try:
            value = _yaml_load(text) if text.strip() else None
        except yaml.YAMLError as exc:
            raise GmaeError(f"--set {key}: cannot parse value {text!r}: {exc}") from exc
        parts = key.split(".")
        node = raw
        for i, part in enumerate(parts[:-1]):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise GmaeError(f"--set {key}: {'.'.join(parts[: i + 1])} is not a section")
            node = child
        node[parts[-1]] = value
    return raw


def config_from_dict(raw: dict) -> Config:
    """Build and validate a Config from nested plain containers (YAML or a checkpoint)."""
    unknown = [k for k in raw if k not in ("model", *SECTIONS)]
    if unknown:
        raise GmaeError(_unknown_key(unknown[0], ["model", *SECTIONS]))
    model = raw.get("model") or {"name": "gmae"}
    if not isinstance(model, dict):
        raise GmaeError(f"config key 'model' must be a mapping, got {type(model).__name__}")
    model = dict(model)
    if model.get("name") not in MODEL_NAMES:
        raise GmaeError(
            f"config key 'model.name' must be one of {', '.join(MODEL_NAMES)}, got "
            f"{model.get('name')!r}"
        )
    model = _renamed_keys(model)
    sections = {}
    for name, cls in SECTIONS.items():
        values = raw.get(name) or {}
        if not isinstance(values, dict):
            raise GmaeError(f"config key {name!r} must be a mapping, got {type(values).__name__}")
        sections[name] = _build_section(name, cls, values)
    cfg = Config(model=model, **sections)
    validate(cfg)
    return cfg


def _renamed_keys(model: dict[str, Any]) -> dict[str, Any]:
    """The model section with old key names (``RENAMED_MODEL_KEYS``) given their new names, so
    that configs and checkpoints of old runs load."""
    for (name, old), new in RENAMED_MODEL_KEYS.items():
        if model.get("name") != name or old not in model:
            continue
        value = model.pop(old)
        if new in model and model[new] != value:
            raise GmaeError(
                f"config keys 'model.{old}' (its old name) and 'model.{new}' disagree: give one"
            )
        model[new] = value
    return model


def _build_section(section: str, cls: type, values: dict) -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in values.items():
        if key not in names:
            raise GmaeError(_unknown_key(f"{section}.{key}", [f"{section}.{n}" for n in names]))
        kwargs[key] = _coerce(value, hints[key], f"{section}.{key}")
    return cls(**kwargs)


def _unknown_key(key: str, valid: list[str]) -> str:
    close = difflib.get_close_matches(key, valid, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else f" (valid: {', '.join(valid)})"
    return f"unknown config key {key!r}{hint}"


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against a field type; ints are accepted for floats, lists for tuples."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _coerce(value, inner, key)
    if origin is Literal:
        if value not in args:
            raise GmaeError(f"config key {key!r} must be one of {', '.join(map(str, args))}")
        return value
    if origin is tuple:
        if not isinstance(value, list | tuple) or len(value) != len(args):
            raise GmaeError(f"config key {key!r} expects a list of {len(args)} numbers")
        return tuple(_coerce(v, a, key) for v, a in zip(value, args))
    ok = {
        bool: isinstance(value, bool),
        int: isinstance(value, int) and not isinstance(value, bool),
        float: isinstance(value, int | float) and not isinstance(value, bool),
        str: isinstance(value, str),
    }[tp]
    if not ok:
        raise GmaeError(
            f"config key {key!r} expects {tp.__name__}, got {value!r} ({type(value).__name__})"
        )
    if tp is float:
        if not math.isfinite(float(value)):
            raise GmaeError(f"config key {key!r} must be a finite number, got {value!r}")
        return float(value)
    if tp is int and not -INT_LIMIT <= value <= INT_LIMIT:
        raise GmaeError(f"config key {key!r} is out of range, got {value!r}")
    return value


def validate(cfg: Config) -> None:
    """Range checks the types cannot express."""
    positive = {
        "data.img_size": cfg.data.img_size,
        "optim.epochs": cfg.optim.epochs,
        "optim.batch_size": cfg.optim.batch_size,
        "optim.accum_iter": cfg.optim.accum_iter,
        "run.log_every": cfg.run.log_every,
        "run.ckpt_every": cfg.run.ckpt_every,
        "run.vis_every": cfg.run.vis_every,
        "run.max_nonfinite": cfg.run.max_nonfinite,
    }
    for key, value in positive.items():
        if value <= 0:
            raise GmaeError(f"config key {key!r} must be positive, got {value}")
    nonneg = {
        "data.num_workers": cfg.data.num_workers,
        "optim.base_lr": cfg.optim.base_lr,
        "optim.min_lr": cfg.optim.min_lr,
        "optim.weight_decay": cfg.optim.weight_decay,
        "run.ckpt_every_steps": cfg.run.ckpt_every_steps,
        "run.vis_every_steps": cfg.run.vis_every_steps,
        "run.vis_images": cfg.run.vis_images,
        "run.health_images": cfg.run.health_images,
        "run.seed": cfg.run.seed,
    }
    for key, value in nonneg.items():
        if value < 0:
            raise GmaeError(f"config key {key!r} must be >= 0, got {value}")
    if cfg.run.health_every < -1:
        raise GmaeError("config key 'run.health_every' must be >= -1 (0: every log step, -1: off)")
    if not 0 <= cfg.optim.warmup_epochs <= cfg.optim.epochs:
        raise GmaeError("config key 'optim.warmup_epochs' must be between 0 and optim.epochs")
    if cfg.optim.decoder_lr_scale <= 0:
        raise GmaeError("config key 'optim.decoder_lr_scale' must be positive")
    if cfg.optim.effective_batch is not None and cfg.optim.effective_batch <= 0:
        raise GmaeError("config key 'optim.effective_batch' must be positive")
    if cfg.optim.total_steps is not None and cfg.optim.total_steps <= 0:
        raise GmaeError("config key 'optim.total_steps' must be positive (or null: epochs)")
    if cfg.optim.clip_grad is not None and cfg.optim.clip_grad <= 0:
        raise GmaeError("config key 'optim.clip_grad' must be positive (or null for no clipping)")
    if cfg.run.seed > SEED_MAX:
        raise GmaeError(f"config key 'run.seed' must be at most {SEED_MAX}, got {cfg.run.seed}")
    if cfg.data.img_size > MODEL_INT_BOUNDS["img_size"][1]:
        raise GmaeError(
            f"config key 'data.img_size' must be at most {MODEL_INT_BOUNDS['img_size'][1]}, "
            f"got {cfg.data.img_size}"
        )
    if not all(0 <= b < 1 for b in cfg.optim.betas):
        raise GmaeError(
            f"config key 'optim.betas' must both be in [0, 1), got {list(cfg.optim.betas)}"
        )
    lo, hi = cfg.data.scale
    if not 0 < lo <= hi <= 1:
        raise GmaeError(f"config key 'data.scale' must satisfy 0 < min <= max <= 1, got {lo, hi}")
    if "img_size" in cfg.model and cfg.model["img_size"] != cfg.data.img_size:
        raise GmaeError("config key 'model.img_size' differs from data.img_size: set data.img_size")


# --- the model section -------------------------------------------------------------------


def check_model(model: dict[str, Any], img_size: int) -> None:
    """Check the ``model`` section against the model's constructor before anything is built.

    Keys must be arguments of the model's ``__init__`` (or ``encoder``, a preset name; not the
    config objects of ``OBJECT_MODEL_ARGS`` nor old names of ``RENAMED_MODEL_KEYS``); values
    must have the annotated type (ints for ints, finite numbers for floats, strings, bools,
    lists of numbers); sizes must be within ``MODEL_INT_BOUNDS``. The constructor's signature
    is read at run time, so new model arguments are checked without being listed here. Imports
    the models (torch) on first use.
    """
    from gmae.models import MODELS

    name = model.get("name")
    if name not in MODELS:
        raise GmaeError(f"config key 'model.name' must be one of {', '.join(MODELS)}, got {name!r}")
    cls = MODELS[name]
    params = {
        key: p
        for key, p in inspect.signature(cls).parameters.items()
        if key not in OBJECT_MODEL_ARGS and (name, key) not in RENAMED_MODEL_KEYS
    }
    try:
        hints = typing.get_type_hints(cls.__init__)
    except Exception:  # an annotation that does not resolve: check names only
        hints = {}
    for key, value in model.items():
        if key == "name":
            continue
        where = f"model.{key}"
        if key == "encoder":
            if not isinstance(value, str):
                raise GmaeError(f"config key {where!r} expects a preset name (str), got {value!r}")
            continue
        if key not in params:
            raise GmaeError(_unknown_key(where, [f"model.{p}" for p in params if p != "self"]))
        if key in hints and not _matches(value, hints[key]):
            raise GmaeError(
                f"config key {where!r} expects {_type_name(hints[key])}, got {value!r} "
                f"({type(value).__name__})"
            )
        _check_numbers(value, where)
        if isinstance(value, int) and not isinstance(value, bool):
            lo, hi = MODEL_INT_BOUNDS.get(key, MODEL_INT_DEFAULT_BOUNDS)
            if not lo <= value <= hi:
                raise GmaeError(f"config key {where!r} must be between {lo} and {hi}, got {value}")
    lo, hi = MODEL_INT_BOUNDS["img_size"]
    if not isinstance(img_size, int) or not lo <= img_size <= hi:
        raise GmaeError(f"config key 'data.img_size' must be between {lo} and {hi}, got {img_size}")
    patch = model.get("patch_size", params["patch_size"].default if "patch_size" in params else 16)
    if isinstance(patch, int) and patch > 0 and (img_size // patch) ** 2 > MAX_PATCHES:
        raise GmaeError(
            f"data.img_size {img_size} / model.patch_size {patch} gives more than {MAX_PATCHES} "
            "patches"
        )


def _check_numbers(value: Any, where: str) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise GmaeError(f"config key {where!r} must be a finite number, got {value!r}")
    if isinstance(value, list | tuple):
        for v in value:
            _check_numbers(v, where)


def _matches(value: Any, tp: Any) -> bool:
    """Whether ``value`` (from YAML or JSON) fits the annotation ``tp``; unknown types pass."""
    import collections.abc

    if tp is Any or tp is inspect.Parameter.empty:
        return True
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, a) for a in args)
    if tp is type(None):
        return value is None
    if origin is Literal:
        return value in args
    if origin in (list, tuple, collections.abc.Sequence):
        if not isinstance(value, list | tuple):
            return False
        if origin is tuple and args and args[-1] is not Ellipsis:
            return len(value) == len(args) and all(_matches(v, a) for v, a in zip(value, args))
        inner = args[0] if args else Any
        return all(_matches(v, inner) for v in value)
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if tp is str:
        return isinstance(value, str)
    return True


def _type_name(tp: Any) -> str:
    name = getattr(tp, "__name__", None)
    if name and not typing.get_args(tp):
        return name
    return str(tp).replace("typing.", "").replace("collections.abc.", "")


# --- saving ---------------------------------------------------------------------------------


def config_to_dict(cfg: Config) -> dict:
    """Plain nested dicts/lists (YAML- and ``weights_only``-checkpoint-friendly)."""

    def plain(x):
        if isinstance(x, dict):
            return {k: plain(v) for k, v in x.items()}
        if isinstance(x, list | tuple):
            return [plain(v) for v in x]
        return x

    return plain(dataclasses.asdict(cfg))


def config_to_yaml(cfg: Config) -> str:
    import yaml

    return yaml.safe_dump(config_to_dict(cfg), sort_keys=False)


def save_config(cfg: Config, path: str | Path) -> None:
    from gmae import io as gio

    gio.write_text(path, config_to_yaml(cfg))
