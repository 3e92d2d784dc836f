"""GMAE Gaussians as 3D Gaussian Splatting PLY files (Kerbl et al.'s ``point_cloud.ply`` layout).

Binary little-endian, one ``vertex`` element, float32 properties in this order::

    x y z  nx ny nz (0)  f_dc_0 f_dc_1 f_dc_2  opacity  scale_0 scale_1 scale_2  rot_0..rot_3

with 3DGS's activations undone: ``f_dc = (rgb - 0.5) / C0`` (SH degree 0, C0 = 0.28209479177387814),
``opacity = logit(o)``, ``scale = log(s)``, ``rot`` = quaternion **wxyz** (as 3DGS stores it).
No ``f_rest_*``: viewers treat the file as SH degree 0.

Coordinates follow GMAE's camera frame, which is also COLMAP's / 3DGS's camera convention:
x right, y down, z forward (away from the camera). Two frames (recorded in a header comment,
``comment gmae_frame=<frame> distance=<d>``, which viewers ignore and ``read_ply`` undoes):

- ``pinhole`` (default, for viewers): GMAE's camera is a hybrid (orthographic centres,
  perspective footprints; docs/method.md section 3) that no standard viewer implements. This frame
  re-expresses the Gaussians for an ordinary pinhole camera at (0, 0, -d) looking down +z (no
  rotation, y down), d = 8, with focal length d W / 2 pixels, i.e. a field of view of
  2 atan(1 / d) = 14.25 degrees: x' = x (z + d) / d, y' = y (z + d) / d, z' = z, scales / d.
  Centres land exactly where GMAE draws them; footprints match to within ~2 % (only the small
  depth-shear term of the EWA Jacobian differs). Non-square photos: fx = d W / 2, fy = d H / 2.
- ``gmae``: the model's raw output (means in (-1, 1)^3), for GMAE's own renderer
  (``Camera(mode="gmae")``); in a pinhole viewer it looks like large overlapping blobs.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from gmae import io as gio
from gmae.errors import GmaeError
from gmae.models import Gaussians

SH_C0 = 0.28209479177387814
FRAMES = ("pinhole", "gmae")
DISTANCE = 8.0
PROPERTIES = (
    ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2", "opacity"]
    + [f"scale_{i}" for i in range(3)]
    + [f"rot_{i}" for i in range(4)]
)
_PLY_TYPES = {
    "float": "f4", "float32": "f4", "double": "f8", "float64": "f8",
    "char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1",
    "short": "i2", "int16": "i2", "ushort": "u2", "uint16": "u2",
    "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
}  # fmt: skip
_EPS = 1e-7  # opacity clamp before the logit: float32 sigmoid(logit(1 - 1e-7)) rounds to 1


def to_ply_arrays(means, scales, quats, colors, opacities, frame: str = "pinhole") -> np.ndarray:
    """One image's Gaussians (numpy or tensors: [K, 3], [K, 3], [K, 4] wxyz, [K, 3], [K]) as a
    structured array with the PLY properties."""
    if frame not in FRAMES:
        raise GmaeError(f"unknown PLY frame {frame!r}; choose from {', '.join(FRAMES)}")
    m, s, q, c, o = (
        np.asarray(t.detach().cpu() if hasattr(t, "detach") else t, np.float64)
        for t in (means, scales, quats, colors, opacities)
    )
    if c.ndim != 2 or c.shape[-1] != 3:
        raise GmaeError(f"PLY export needs RGB colours [K, 3], got shape {list(c.shape)}")
    if frame == "pinhole":
        m = m.copy()
        m[:, :2] *= (m[:, 2:3] + DISTANCE) / DISTANCE
        s = s / DISTANCE
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    o = np.clip(o, _EPS, 1.0 - _EPS)
    out = np.zeros(m.shape[0], dtype=[(p, "<f4") for p in PROPERTIES])
    for i, ax in enumerate("xyz"):
        out[ax] = m[:, i]
    for i in range(3):
        out[f"f_dc_{i}"] = (c[:, i] - 0.5) / SH_C0
        out[f"scale_{i}"] = np.log(np.clip(s[:, i], 1e-30, None))
    for i in range(4):
        out[f"rot_{i}"] = q[:, i]
    out["opacity"] = np.log(o) - np.log1p(-o)
    return out


def write_ply(
    path: str | os.PathLike,
    means,
    scales,
    quats,
    colors,
    opacities,
    frame: str = "pinhole",
    comments: tuple[str, ...] = (),
) -> Path:
    """Write one image's Gaussians as a binary little-endian 3DGS PLY (atomically)."""
    data = to_ply_arrays(means, scales, quats, colors, opacities, frame)
    header = ["ply", "format binary_little_endian 1.0"]
    header += [f"comment {c}" for c in comments]
    header += [f"comment gmae_frame={frame} distance={DISTANCE:g}"]
    header += [f"element vertex {len(data)}"] + [f"property float {p}" for p in PROPERTIES]
    header += ["end_header"]
    blob = ("\n".join(header) + "\n").encode("ascii") + data.tobytes()
    gio.write_bytes(path, blob)
    return Path(path)


def read_ply_arrays(path: str | os.PathLike) -> tuple[np.ndarray, dict[str, str]]:
    """The vertex element of a binary little-endian PLY and the ``key=value`` header comments."""
    path = Path(path)
    if not path.is_file():
        raise GmaeError(f"PLY file {path} not found")
    raw = path.read_bytes()
    end = raw.find(b"end_header\n")
    if not raw.startswith(b"ply") or end < 0:
        raise GmaeError(f"{path} is not a PLY file")
    lines = raw[:end].decode("ascii", "replace").splitlines()
    fmt, count, props, meta, element = None, None, [], {}, None
    for line in lines[1:]:
        parts = line.split()
        if not parts:
            continue
        if parts[0] == "format":
            fmt = parts[1]
        elif parts[0] == "comment":
            meta.update(kv.split("=", 1) for kv in parts[1:] if "=" in kv)
        elif parts[0] == "element":
            element = parts[1]
            if element == "vertex":
                count = int(parts[2])
        elif parts[0] == "property" and element == "vertex":
            if parts[1] == "list" or parts[1] not in _PLY_TYPES:
                raise GmaeError(f"{path}: unsupported vertex property {' '.join(parts[1:])}")
            props.append((parts[2], "<" + _PLY_TYPES[parts[1]]))
    if fmt != "binary_little_endian":
        raise GmaeError(f"{path}: only binary_little_endian PLY files are supported, got {fmt}")
    if count is None:
        raise GmaeError(f"{path}: no vertex element")
    dtype = np.dtype(props)
    body = raw[end + len(b"end_header\n") :]
    if len(body) < count * dtype.itemsize:
        raise GmaeError(f"{path} is truncated: {count} vertices need {count * dtype.itemsize} B")
    return np.frombuffer(body, dtype=dtype, count=count), meta


def read_ply(path: str | os.PathLike):
    """A 3DGS PLY back as ``gmae.models.Gaussians`` (batch of one, float32), in GMAE's frame
    when the file says it was written in the ``pinhole`` frame."""
    data, meta = read_ply_arrays(path)
    missing = [p for p in PROPERTIES if p not in (data.dtype.names or ()) and p[0] != "n"]
    if missing:
        raise GmaeError(f"{path} is not a 3DGS PLY: no property {missing[0]}")
    col = {n: data[n].astype(np.float64) for n in data.dtype.names}
    means = np.stack([col["x"], col["y"], col["z"]], -1)
    scales = np.exp(np.stack([col[f"scale_{i}"] for i in range(3)], -1))
    quats = np.stack([col[f"rot_{i}"] for i in range(4)], -1)
    quats /= np.linalg.norm(quats, axis=-1, keepdims=True)
    colors = np.stack([col[f"f_dc_{i}"] for i in range(3)], -1) * SH_C0 + 0.5
    opac = 1.0 / (1.0 + np.exp(-col["opacity"]))
    if meta.get("gmae_frame") == "pinhole":
        d = float(meta.get("distance", DISTANCE))
        means[:, :2] *= d / (means[:, 2:3] + d)
        scales = scales * d

    def t(a):
        return torch.from_numpy(np.ascontiguousarray(a, np.float32))[None]

    return Gaussians(t(means), t(scales), t(quats), t(colors), t(opac))


def viewer_camera(width: int, height: int, img_name: str, distance: float = DISTANCE) -> dict:
    """The camera that shows a ``pinhole``-frame PLY as GMAE draws the image, as one entry of
    the INRIA 3DGS ``cameras.json`` (gaussian-splatting's ``camera_to_JSON``): ``position`` is
    the camera centre in world coordinates, ``rotation`` the camera-to-world rotation (rows),
    ``fx`` / ``fy`` in pixels at ``width`` x ``height``; camera axes x right, y down, z forward
    (COLMAP's); the format has no principal point: the image centre, as GMAE's."""
    return {
        "id": 0,
        "img_name": img_name,
        "width": int(width),
        "height": int(height),
        "position": [0.0, 0.0, -float(distance)],
        "rotation": [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]],
        "fx": distance * width / 2,
        "fy": distance * height / 2,
    }
