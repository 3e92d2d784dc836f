"""One-line loading and saving in the Hugging Face Hub directory layout.

    model = gmae.from_pretrained("checkpoints/gmae_tiny_imagenette64_e40.safetensors")
    model = gmae.from_pretrained("path/to/dir")          # config.json + model.safetensors
    model = gmae.from_pretrained("user/gmae-tiny")       # a Hub repository (needs a network)
    model.save_pretrained("path/to/dir")                 # GMAE, MAE and Latent MIM

A saved directory holds ``config.json`` (``library_name``, ``model_type``, ``format``,
``format_version``, ``gmae_version`` and ``config``: the resolved training config, from which the
model is rebuilt) and ``model.safetensors`` (fp32 weights; a compact checkpoint, so it also loads
on its own). Both are written atomically; other files in the directory are left alone.

The layout is written by hand rather than through ``huggingface_hub.PyTorchModelHubMixin``: the
mixin stores constructor arguments only, while evaluation needs the whole training config (data
settings, normalisation, recipe), and a mixin base on the models would change their class
hierarchy for DDP and ``torch.compile``. ``huggingface_hub`` is used for downloads only.

Reading the layout (and every other format) is ``gmae.loading``; ``load_dir``,
``is_pretrained_dir`` and ``apply_overrides`` are re-exported from there.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from gmae.errors import GmaeError
from gmae.loading.formats import CONFIG_NAME, WEIGHTS_NAME, is_pretrained_dir
from gmae.loading.formats import PRETRAINED_FORMAT as FORMAT
from gmae.loading.formats import PRETRAINED_FORMAT_VERSION as FORMAT_VERSION

# owner/name[@revision], as the Hub spells repository ids.
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+(@[\w./-]+)?$")


def model_config(model: Any) -> Any:
    """The training ``Config`` a model was built from: the one recorded by ``create_model``
    (``model.gmae_config``), else an error naming the fix."""
    from gmae.train.config import config_from_dict

    raw = getattr(model, "gmae_config", None)
    if raw is None:
        raise GmaeError(
            f"{type(model).__name__} was not built by gmae.models.create_model and carries no "
            "config: pass config= (a gmae.train.config.Config) to save_pretrained"
        )
    return config_from_dict(raw)


def save_pretrained(model: Any, save_directory: str | os.PathLike, config: Any = None) -> Path:
    """Write ``model`` as ``config.json`` + ``model.safetensors`` into ``save_directory``."""
    from gmae import __version__
    from gmae import io as gio
    from gmae.export.checkpoints import save_compact
    from gmae.train.config import config_to_dict

    directory = Path(save_directory)
    if directory.exists() and not directory.is_dir():
        raise GmaeError(f"{directory} exists and is not a directory")
    cfg = config if config is not None else model_config(model)
    raw = config_to_dict(cfg)
    directory.mkdir(parents=True, exist_ok=True)
    save_compact(model, cfg, directory / WEIGHTS_NAME, source="save_pretrained")
    gio.write_json(
        directory / CONFIG_NAME,
        {
            "library_name": "gmae",
            "model_type": raw["model"]["name"],
            "architectures": [type(model).__name__],
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "gmae_version": __version__,
            "config": raw,
        },
    )
    return directory


def __getattr__(name: str) -> Any:
    """Readers that moved to ``gmae.loading``, imported on first use (they need torch, and
    ``import gmae`` imports this module)."""
    if name == "load_dir":
        from gmae.loading.loaders import load_dir

        return load_dir
    if name == "apply_overrides":
        from gmae.loading.checks import config_with_overrides

        return config_with_overrides
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _download(repo_id: str, cache_dir: Any, local_files_only: bool) -> Path:
    """A Hub repository's config.json and model.safetensors -> their local snapshot directory."""
    try:
        from huggingface_hub import hf_hub_download
    except ImportError as exc:
        raise GmaeError("loading from the Hub needs huggingface_hub") from exc
    repo, _, revision = repo_id.partition("@")
    paths = []
    for name in (CONFIG_NAME, WEIGHTS_NAME):
        try:
            paths.append(
                hf_hub_download(
                    repo,
                    name,
                    revision=revision or None,
                    cache_dir=cache_dir,
                    local_files_only=local_files_only,
                )  # fmt: skip
            )
        except Exception as exc:  # network, missing repo or file, gated repo: many types
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise GmaeError(f"cannot download {name} of {repo_id} from the Hub: {first}") from exc
    return Path(paths[0]).parent


def load_pretrained_model(
    name_or_path: str | os.PathLike,
    *,
    cache_dir: str | os.PathLike | None = None,
    local_files_only: bool = False,
    **overrides: Any,
) -> Any:
    """``name_or_path`` -> :class:`gmae.loading.LoadedModel` (see :func:`from_pretrained`)."""
    from gmae.loading.loaders import load_any, load_dir, with_overrides

    path = Path(name_or_path).expanduser()
    if path.is_dir():
        if is_pretrained_dir(path):
            return load_dir(path, **overrides)
        if overrides:
            raise GmaeError(f"{path}: overrides only apply to gmae checkpoints")
        return load_any(str(path))
    if path.is_file():
        if overrides.keys() <= {"img_size"}:  # load_any builds at img_size itself
            return load_any(str(path), img_size=overrides.get("img_size"))
        loaded = load_any(str(path))
        if loaded.config is None:
            raise GmaeError(f"{path}: overrides only apply to gmae checkpoints")
        return with_overrides(loaded, overrides)
    name = str(name_or_path)
    if path.suffix in {".safetensors", ".pt", ".pth", ".bin"}:
        raise GmaeError(f"checkpoint {path} not found")
    if _HUB_ID.match(name) and not name.startswith((".", "/", "~")):
        try:
            snapshot = _download(name, cache_dir, local_files_only)
        except GmaeError as exc:  # most often a mistyped local path that looks like owner/name
            raise GmaeError(f"no such local file or directory {name}; as a Hub id: {exc}") from exc
        return load_dir(snapshot, **overrides)
    raise GmaeError(f"{name} is neither a file, a directory nor a Hub id (owner/name)")


def from_pretrained(name_or_path: str | os.PathLike, **kwargs: Any) -> Any:
    """The model, in eval mode, from anything gmae can read, in one line.

    ``name_or_path``: a ``save_pretrained`` directory, a compact ``.safetensors`` or training
    ``.pt`` checkpoint, a timm or Hugging Face ViT export (file or directory; encoder only), an
    MAE release ``.pth``, or a Hub id ``owner/name[@revision]`` (downloaded with
    ``huggingface_hub``; ``cache_dir=``, ``local_files_only=``). Other keyword arguments override
    model arguments that keep the weights' shapes (``img_size``, ``mask_ratio``, ...).
    """
    return load_pretrained_model(name_or_path, **kwargs).model


# The old name, kept for callers; gmae.train.load_pretrained is the training-checkpoint loader.
load_pretrained = load_pretrained_model
