"""RenderSettings: one frozen value through every render layer, the loose keywords it replaced
(deprecated, bit-identical), and its validation."""

from __future__ import annotations

import dataclasses
import warnings

import pytest
import torch

from gmae.errors import GmaeError
from gmae.render import Camera, RenderSettings, project, render, resolve_backend
from gmae.render import api as render_api
from gmae.render.settings import LOOSE_KEYWORDS
from gmae.render.testing import random_gaussians

F64 = torch.float64
PROJECT_KEYWORDS = ("eps2d", "near", "far", "mode", "alpha_threshold")

# Every knob away from its default, still inside the valid ranges; near_plane 7.5 culls the
# Gaussians with z < -0.5 (camera depth z + 8).
NON_DEFAULT = dict(
    eps2d=0.5,
    near=7.5,
    far=8.7,
    mode="antialiased",
    max_alpha=0.99,
    alpha_threshold=0.01,
    transmittance_threshold=1e-3,
)


def as_settings(loose: dict) -> RenderSettings:
    return RenderSettings(**{LOOSE_KEYWORDS[name]: value for name, value in loose.items()})


def assert_outputs_equal(a, b) -> None:
    for name in ("image", "alpha", "depth", "means2d", "depths", "radii", "conics", "opacities"):
        x, y = getattr(a, name), getattr(b, name)
        assert (x is None) == (y is None), name
        if x is not None:
            assert torch.equal(x, y), name


def quiet(fn, *args, **kwargs):
    """Call ``fn`` and fail on any warning (the settings= path must not warn)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return fn(*args, **kwargs)


@pytest.mark.parametrize("backend", ["reference", "fast"])
@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_settings_equal_loose_keywords_bit_exactly(backend, dtype):
    g = random_gaussians(2, 24, seed=5, dtype=dtype)
    keep = torch.rand(2, 24, generator=torch.Generator().manual_seed(1)) > 0.3
    cam = Camera(height=18, width=22)
    with pytest.warns(DeprecationWarning):
        old = render(**g, camera=cam, keep=keep, backend=backend, **NON_DEFAULT)
    new = quiet(
        render, **g, camera=cam, keep=keep, backend=backend, settings=as_settings(NON_DEFAULT)
    )
    assert_outputs_equal(old, new)
    # The knobs reached the renderer: the defaults give another picture.
    default = render(**g, camera=cam, keep=keep, backend=backend)
    assert not torch.equal(default.image, new.image)
    assert (new.radii.amax(-1) == 0).sum() > (default.radii.amax(-1) == 0).sum()  # near culls


def test_defaults_equal_no_settings():
    g = random_gaussians(2, 16, seed=2, dtype=F64)
    cam = Camera(height=12, width=12)
    for backend in ("reference", "fast"):
        plain = quiet(render, **g, camera=cam, backend=backend)
        given = quiet(render, **g, camera=cam, backend=backend, settings=RenderSettings())
        assert_outputs_equal(plain, given)


def test_project_settings_equal_loose_keywords():
    g = random_gaussians(2, 20, seed=3, dtype=F64)
    args = (g["means"], g["scales"], g["quats"], g["opacities"], Camera(height=16, width=20))
    loose = {k: NON_DEFAULT[k] for k in PROJECT_KEYWORDS}
    with pytest.warns(DeprecationWarning, match="near= -> near_plane"):
        old = project(*args, **loose)
    new = quiet(project, *args, settings=as_settings(loose))
    for name in ("means2d", "conics", "opacities", "depths", "radii"):
        assert torch.equal(getattr(old, name), getattr(new, name)), name


@pytest.mark.parametrize("name", list(LOOSE_KEYWORDS))
def test_each_loose_keyword_warns_and_maps_onto_settings(name):
    g = random_gaussians(1, 12, seed=4, dtype=F64)
    cam = Camera(height=10, width=10)
    value = NON_DEFAULT[name]
    with pytest.warns(DeprecationWarning, match=f"{name}= -> {LOOSE_KEYWORDS[name]}") as record:
        old = render(**g, camera=cam, backend="reference", **{name: value})
    assert len(record) == 1 and record[0].filename == __file__  # points at the caller
    settings = RenderSettings(**{LOOSE_KEYWORDS[name]: value})
    assert_outputs_equal(old, render(**g, camera=cam, backend="reference", settings=settings))


def test_loose_keywords_override_given_settings():
    g = random_gaussians(1, 12, seed=6, dtype=F64)
    cam = Camera(height=10, width=10)
    base = RenderSettings(eps2d=0.5, rasterize_mode="antialiased")
    with pytest.warns(DeprecationWarning):
        mixed = render(**g, camera=cam, backend="reference", settings=base, eps2d=0.1)
    both = dataclasses.replace(base, eps2d=0.1)
    assert_outputs_equal(mixed, render(**g, camera=cam, backend="reference", settings=both))


def test_render_settings_are_frozen_with_gsplat_names_and_defaults():
    s = RenderSettings()
    assert (s.eps2d, s.near_plane, s.far_plane, s.rasterize_mode) == (0.3, 0.01, 1e10, "classic")
    assert (s.max_alpha, s.alpha_threshold, s.transmittance_threshold) == (0.999, 1 / 255, 1e-4)
    assert s == RenderSettings() and hash(s) == hash(RenderSettings())
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.eps2d = 0.0  # type: ignore[misc]
    # the old module-level names are the same objects
    assert render_api.RENDER_MODES == ("classic", "antialiased")
    assert render_api.GSPLAT_ALPHA_THRESHOLD == s.alpha_threshold


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(rasterize_mode="fancy"), "unknown render mode"),
        (dict(max_alpha=1.5), "max_alpha"),
        (dict(max_alpha=0.5, alpha_threshold=0.6), "alpha_threshold"),
        (dict(transmittance_threshold=1.0), "transmittance_threshold"),
    ],
)
def test_render_settings_errors_are_one_line(kwargs, match):
    with pytest.raises(GmaeError, match=match) as info:
        RenderSettings(**kwargs)
    assert "\n" not in str(info.value)


def test_settings_must_be_render_settings():
    g = random_gaussians(1, 4, seed=0)
    with pytest.raises(GmaeError, match="settings must be a gmae.render.RenderSettings"):
        render(**g, camera=Camera(height=8, width=8), settings={"eps2d": 0.3})


def test_resolve_backend_takes_settings():
    assert quiet(resolve_backend, "auto", "cpu", settings=RenderSettings()) == "fast"
    assert resolve_backend("reference", "cpu", settings=RenderSettings(near_plane=0.0)) == (
        "reference"
    )
    problem = render_api._gsplat_problem(
        torch.device("cuda"), torch.float32, RenderSettings(alpha_threshold=0.01)
    )
    assert problem == "gsplat hard-codes alpha_threshold = 1/255"
    near = render_api._gsplat_problem(
        torch.device("cuda"), torch.float32, RenderSettings(near_plane=0.0)
    )
    assert near == "gsplat sorts depths by their float bits, so near must be > 0"


def test_random_gaussians_scale_cap_and_its_old_name():
    new = quiet(random_gaussians, 2, 8, seed=3, scale_cap=2.0)
    with pytest.warns(DeprecationWarning, match="scale_cap"):
        old = random_gaussians(2, 8, seed=3, scale_max=2.0)
    for name in new:
        assert torch.equal(new[name], old[name]), name
    assert new["scales"].max() > 1.0  # the cap was applied
