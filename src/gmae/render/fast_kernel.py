"""The fast path's compositing loops as a small C kernel, compiled at first use.

Why C, and why this way (numbers in docs/renderer.md): at B=128, K=256, 64^2 with large
Gaussians (scale cap 2) a pixel sees ~50 Gaussians and the PyTorch loops spend ~30 ns per
pixel x Gaussian pair, almost all of it in memory traffic between a few dozen elementwise ops
per step. Here one tile's pixels stay in L1 while its Gaussians stream past: a few ns per pair,
vectorised over the tile's pixels (``#pragma omp simd``), and a tile stops as soon as all its
pixels are opaque.

It is plain C99 with no Python or torch headers: it builds in about a second with the system
C compiler and is loaded with ``ctypes`` (calls release the GIL, so the fast path's worker
threads run tiles in parallel). The shared library is cached under ``$GMAE_KERNEL_DIR`` or
``$XDG_CACHE_HOME/gmae-kernels`` (default ``~/.cache``), keyed by a hash of the source, the
flags and the compiler, and written atomically, so concurrent first uses are safe. Where no
compiler works, ``load()`` returns None and the fast path keeps its pure-PyTorch loops, which
have identical semantics (``GMAE_RENDER_KERNEL=torch`` forces them).

The kernel implements exactly the loops of ``gmae.render.fast`` (gsplat's rules): alpha =
min(max_alpha, o exp(-sigma)), skipped when alpha < alpha_threshold or sigma < 0, stop before
the Gaussian that takes T to <= transmittance_threshold; the backward walks back to front,
recovers T by division and returns per-row sums of dL/d(-sigma) times the pixel moments
[1, u, v, u^2, uv, v^2] and of dL/d(feature).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

MAX_TILE = 16  # pixels per tile edge the kernel's stack buffers hold

# exp() accurate to ~1-2 ulp (Cephes' expf / exp), written out so that the compiler can
# vectorise it across a tile's pixels; the libm call would keep the loop scalar. Arguments are
# clamped to the normal range: anything smaller is far below alpha_threshold anyway.
_PRELUDE = r"""
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define MAXP (%(max_tile)d * %(max_tile)d)

static inline float exp_f32(float x) {
    x = x < -87.0f ? -87.0f : x;
    x = x > 88.0f ? 88.0f : x;
    /* n = round(x / ln 2) by the 1.5 * 2^23 trick (floorf would stay a libm call) */
    float n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
    float r = x - n * 0.693359375f;
    r = r - n * -2.12194440e-4f;
    float p = 1.9875691500E-4f;
    p = p * r + 1.3981999507E-3f;
    p = p * r + 8.3334519073E-3f;
    p = p * r + 4.1665795894E-2f;
    p = p * r + 1.6666665459E-1f;
    p = p * r + 5.0000001201E-1f;
    p = p * r * r + r + 1.0f;
    union { int32_t i; float f; } scale = {((int32_t)n + 127) << 23};
    return p * scale.f;
}

static inline double exp_f64(double x) {
    x = x < -708.0 ? -708.0 : x;
    x = x > 709.0 ? 709.0 : x;
    double n = (x * 1.4426950408889634 + 6755399441055744.0) - 6755399441055744.0;
    x = x - n * 6.93145751953125E-1;
    x = x - n * 1.42860682030941723212E-6;
    double xx = x * x;
    double px = x * ((1.26177193074810590878E-4 * xx + 3.02994407707441961300E-2) * xx
                     + 9.99999999999999999910E-1);
    double qx = ((3.00198505138664455042E-6 * xx + 2.52448340349684104192E-3) * xx
                 + 2.27265548208155028766E-1) * xx + 2.00000000000000000009E0;
    double e = 1.0 + 2.0 * px / (qx - px);
    union { int64_t i; double f; } scale = {((int64_t)n + 1023) << 52};
    return e * scale.f;
}
"""

# One copy per dtype: REAL, SUFFIX and EXP are substituted. Layouts (all C-contiguous):
#   tile_id [NA] int64: (b * TY + ty) * TX + tx of each active tile
#   row_start [NA + 1] int64: the tile's rows, nearest Gaussian first
#   rows [R, 6 + F]: mean - tile centre (x, y), -a/2, -b, -c/2, opacity, features
#   acc [B, F, H, W], T [B, H, W], count [B, H, W] int32 (rows a pixel went through)
_TEMPLATE = r"""
static void pixel_offsets_SUFFIX(int64_t tile, REAL *u, REAL *v) {
    for (int64_t p = 0; p < tile * tile; p++) {
        u[p] = (REAL)(p %% tile) + (REAL)0.5 - (REAL)tile / 2;
        v[p] = (REAL)(p / tile) + (REAL)0.5 - (REAL)tile / 2;
    }
}

/* Can alpha reach the threshold at a pixel centre of tile (tx, ty)? The exact minimum of
   sigma over the rectangle of pixel centres (0 inside, else the least of the four edge minima:
   a convex 1-D quadratic each, minimiser clamped) against limit = log(o / threshold) with a
   generous margin: culling only saves work, it never changes a pixel. */
static int reaches_SUFFIX(double mx, double my, double a, double b, double c, double inv_a,
                          double inv_c, double limit, int64_t tx, int64_t ty, int64_t tile) {
    const double x0 = (double)(tx * tile) + 0.5, y0 = (double)(ty * tile) + 0.5;
    const double x1 = x0 + (double)(tile - 1), y1 = y0 + (double)(tile - 1);
    /* quick accept: sigma at the rectangle's point nearest the mean bounds the minimum */
    const double qx = mx < x0 ? x0 : (mx > x1 ? x1 : mx), qy = my < y0 ? y0 : (my > y1 ? y1 : my);
    const double ex = mx - qx, ey = my - qy;
    if (0.5 * (a * ex * ex + c * ey * ey) + b * ex * ey <= limit) return 1;
    double best = INFINITY;
    for (int i = 0; i < 4; i++) {
        double px, py;
        if (i < 2) {  /* on x = X the minimiser is py = my + b (mx - X) / c */
            px = i ? x1 : x0;
            py = my + b * (mx - px) * inv_c;
            py = py < y0 ? y0 : (py > y1 ? y1 : py);
        } else {
            py = i == 3 ? y1 : y0;
            px = mx + b * (my - py) * inv_a;
            px = px < x0 ? x0 : (px > x1 ? x1 : px);
        }
        const double dx = mx - px, dy = my - py;
        const double sg = 0.5 * (a * dx * dx + c * dy * dy) + b * dx * dy;
        best = sg < best ? sg : best;
    }
    return !(best > limit);  /* NaN-safe: keep unless surely out of reach */
}

/* Tile lists. prm [B * K, 6 + F]: mean x, y, conic a, b, c, opacity, features; order [B, K]:
   each image's Gaussians nearest first; radii [B, K, 2] (0: culled). Pass 1 (rows == NULL)
   adds each tile's row count to cursor [B * TY * TX]; pass 2 writes the rows, cursor holding
   each tile's first free row. Walking Gaussians in depth order keeps every list sorted. */
void gmae_bin_SUFFIX(
    int64_t B, int64_t K, int64_t F, const REAL *prm, const int64_t *order, const int32_t *radii,
    int64_t tile, int64_t TY, int64_t TX, double alpha_thr, int64_t *cursor, REAL *rows,
    int64_t *row_gid)
{
    const int64_t S = 6 + F;
    for (int64_t b = 0; b < B; b++) {
        for (int64_t i = 0; i < K; i++) {
            const int64_t g = b * K + order[b * K + i];
            const int32_t rx = radii[2 * g], ry = radii[2 * g + 1];
            if (rx <= 0 && ry <= 0) continue;
            const REAL *q = prm + g * S;
            const double mx = q[0], my = q[1], a = q[2], b_ = q[3], c = q[4], o = q[5];
            const double inv_a = 1.0 / (a > 1e-30 ? a : 1e-30);
            const double inv_c = 1.0 / (c > 1e-30 ? c : 1e-30);
            const double limit = log((o > 1e-30 ? o : 1e-30) / alpha_thr) * 1.001 + 1e-3;
            /* gsplat's isect_tiles box */
            int64_t x0 = (int64_t)floor((mx - rx) / (double)tile);
            int64_t x1 = (int64_t)ceil((mx + rx) / (double)tile);
            int64_t y0 = (int64_t)floor((my - ry) / (double)tile);
            int64_t y1 = (int64_t)ceil((my + ry) / (double)tile);
            x0 = x0 < 0 ? 0 : (x0 > TX ? TX : x0);
            x1 = x1 < 0 ? 0 : (x1 > TX ? TX : x1);
            y0 = y0 < 0 ? 0 : (y0 > TY ? TY : y0);
            y1 = y1 < 0 ? 0 : (y1 > TY ? TY : y1);
            for (int64_t ty = y0; ty < y1; ty++) {
                for (int64_t tx = x0; tx < x1; tx++) {
                    if (!reaches_SUFFIX(mx, my, a, b_, c, inv_a, inv_c, limit, tx, ty, tile))
                        continue;
                    const int64_t t = (b * TY + ty) * TX + tx;
                    if (!rows) {
                        cursor[t]++;
                        continue;
                    }
                    const int64_t r = cursor[t]++;
                    REAL *out = rows + r * S;
                    const REAL half = (REAL)tile / 2;
                    out[0] = q[0] - ((REAL)(tx * tile) + half);
                    out[1] = q[1] - ((REAL)(ty * tile) + half);
                    out[2] = (REAL)-0.5 * q[2];
                    out[3] = -q[3];
                    out[4] = (REAL)-0.5 * q[4];
                    for (int64_t j = 5; j < S; j++) out[j] = q[j];
                    row_gid[r] = g;
                }
            }
        }
    }
}

/* Per-row sums (g_rows) -> gradients of mean x, y, conic a, b, c, opacity and features,
   accumulated per Gaussian into g_prm [B * K, 6 + F]. sum_p g (dx, dy, dx^2, dx dy, dy^2)
   with dx = dx_centre - u come from the moments [1, u, v, u^2, uv, v^2]. */
void gmae_row_grads_SUFFIX(int64_t R, int64_t F, const REAL *rows, const REAL *g_rows,
                           const int64_t *row_gid, REAL *g_prm)
{
    const int64_t S = 6 + F;
    for (int64_t r = 0; r < R; r++) {
        const REAL *q = rows + r * S, *m = g_rows + r * S;
        const REAL dx = q[0], dy = q[1], na = q[2], nb = q[3], nc = q[4], o = q[5];
        const REAL s0 = m[0], su = m[1], sv = m[2], suu = m[3], suv = m[4], svv = m[5];
        const REAL sx = dx * s0 - su, sy = dy * s0 - sv;
        const REAL sxx = dx * dx * s0 - 2 * dx * su + suu;
        const REAL sxy = dx * dy * s0 - dx * sv - dy * su + suv;
        const REAL syy = dy * dy * s0 - 2 * dy * sv + svv;
        REAL *out = g_prm + row_gid[r] * S;
        out[0] += 2 * na * sx + nb * sy;
        out[1] += nb * sx + 2 * nc * sy;
        out[2] += (REAL)-0.5 * sxx;
        out[3] -= sxy;
        out[4] += (REAL)-0.5 * syy;
        out[5] += s0 / o;
        for (int64_t c = 6; c < S; c++) out[c] += m[c];
    }
}

void gmae_forward_SUFFIX(
    int64_t t0, int64_t t1, const int64_t *tile_id, const int64_t *row_start,
    const REAL *rows, int64_t F, int64_t tile, int64_t TY, int64_t TX, int64_t H, int64_t W,
    double max_alpha_d, double alpha_thr_d, double trans_thr_d,
    REAL *acc, REAL *T_out, int32_t *count_out)
{
    const REAL max_alpha = (REAL)max_alpha_d, thr = (REAL)alpha_thr_d;
    const REAL trans_thr = (REAL)trans_thr_d;
    const int64_t P = tile * tile, S = 6 + F, HW = H * W;
    REAL u[MAXP], v[MAXP], T[MAXP], alive[MAXP], cnt[MAXP], w[MAXP];
    REAL *accp = (REAL *)malloc(sizeof(REAL) * (size_t)(F * P));
    if (!accp) return;
    pixel_offsets_SUFFIX(tile, u, v);
    for (int64_t t = t0; t < t1; t++) {
        const int64_t id = tile_id[t], b = id / (TY * TX), ty = (id / TX) %% TY, tx = id %% TX;
        const int64_t x0 = tx * tile, y0 = ty * tile;
        for (int64_t p = 0; p < P; p++) {
            const int64_t x = x0 + p %% tile, y = y0 + p / tile;
            T[p] = 1;
            cnt[p] = 0;
            alive[p] = (x < W && y < H) ? 1 : 0;  /* border padding: never composited */
        }
        memset(accp, 0, sizeof(REAL) * (size_t)(F * P));
        for (int64_t r = row_start[t]; r < row_start[t + 1]; r++) {
            const REAL *q = rows + r * S;
            const REAL cdx = q[0], cdy = q[1], na = q[2], nb = q[3], nc = q[4], o = q[5];
            REAL n_alive = 0;
#pragma omp simd reduction(+:n_alive)
            for (int64_t p = 0; p < P; p++) {
                const REAL dx = cdx - u[p], dy = cdy - v[p];
                const REAL e = (na * dx + nb * dy) * dx + nc * dy * dy;  /* -sigma */
                REAL a = o * EXP(e);
                a = a < max_alpha ? a : max_alpha;
                a = ((a >= thr) & (e <= 0)) ? a : 0;  /* gsplat's skips */
                const REAL wp = a * T[p], nT = T[p] - wp;
                const REAL go = ((alive[p] > 0) & (nT > trans_thr)) ? 1 : 0;  /* stop before */
                T[p] = go > 0 ? nT : T[p];
                w[p] = go * wp;
                cnt[p] += go;
                alive[p] = go;
                n_alive += go;
            }
            for (int64_t c = 0; c < F; c++) {
                const REAL f = q[6 + c];
                REAL *ac = accp + c * P;
#pragma omp simd
                for (int64_t p = 0; p < P; p++) ac[p] += f * w[p];
            }
            if (n_alive == 0) break;  /* every pixel of the tile has stopped */
        }
        for (int64_t p = 0; p < P; p++) {
            const int64_t x = x0 + p %% tile, y = y0 + p / tile;
            if (x >= W || y >= H) continue;
            const int64_t pix = b * HW + y * W + x;
            T_out[pix] = T[p];
            count_out[pix] = (int32_t)cnt[p];
            for (int64_t c = 0; c < F; c++) acc[(b * F + c) * HW + y * W + x] = accp[c * P + p];
        }
    }
    free(accp);
}

/* g_rows [R, 6 + F] (zero on entry): per row, sum over the tile's pixels of
   g_e * [1, u, v, u^2, uv, v^2] (g_e = dL/d(-sigma)) and of dL/dacc * w per feature. */
void gmae_backward_SUFFIX(
    int64_t t0, int64_t t1, const int64_t *tile_id, const int64_t *row_start,
    const REAL *rows, int64_t F, int64_t tile, int64_t TY, int64_t TX, int64_t H, int64_t W,
    double max_alpha_d, double alpha_thr_d,
    const REAL *T_final, const int32_t *count, const REAL *g_acc, const REAL *R0,
    REAL *g_rows)
{
    const REAL max_alpha = (REAL)max_alpha_d, thr = (REAL)alpha_thr_d;
    const int64_t P = tile * tile, S = 6 + F, HW = H * W;
    REAL u[MAXP], v[MAXP], uu[MAXP], uv[MAXP], vv[MAXP];
    REAL T[MAXP], R[MAXP], cnt[MAXP], w[MAXP], gfd[MAXP];
    REAL *gF = (REAL *)malloc(sizeof(REAL) * (size_t)(F * P));
    if (!gF) return;
    pixel_offsets_SUFFIX(tile, u, v);
    for (int64_t p = 0; p < P; p++) {
        uu[p] = u[p] * u[p];
        uv[p] = u[p] * v[p];
        vv[p] = v[p] * v[p];
    }
    for (int64_t t = t0; t < t1; t++) {
        const int64_t id = tile_id[t], b = id / (TY * TX), ty = (id / TX) %% TY, tx = id %% TX;
        const int64_t x0 = tx * tile, y0 = ty * tile, start = row_start[t];
        int64_t most = 0;
        for (int64_t p = 0; p < P; p++) {
            const int64_t x = x0 + p %% tile, y = y0 + p / tile;
            const int inside = x < W && y < H;
            const int64_t pix = b * HW + y * W + x;
            T[p] = inside ? T_final[pix] : 1;
            R[p] = inside ? R0[pix] : 0;  /* dL/d(everything behind), times T */
            const int32_t n = inside ? count[pix] : 0;
            cnt[p] = (REAL)n;
            most = n > most ? n : most;
            for (int64_t c = 0; c < F; c++)
                gF[c * P + p] = inside ? g_acc[(b * F + c) * HW + y * W + x] : 0;
        }
        for (int64_t j = most - 1; j >= 0; j--) {
            const int64_t r = start + j;
            const REAL *q = rows + r * S;
            const REAL cdx = q[0], cdy = q[1], na = q[2], nb = q[3], nc = q[4], o = q[5];
            const REAL jr = (REAL)j;
#pragma omp simd
            for (int64_t p = 0; p < P; p++) gfd[p] = 0;
            for (int64_t c = 0; c < F; c++) {
                const REAL f = q[6 + c];
                const REAL *g = gF + c * P;
#pragma omp simd
                for (int64_t p = 0; p < P; p++) gfd[p] += g[p] * f;
            }
            REAL m0 = 0, m1 = 0, m2 = 0, m3 = 0, m4 = 0, m5 = 0;
#pragma omp simd reduction(+:m0, m1, m2, m3, m4, m5)
            for (int64_t p = 0; p < P; p++) {
                const REAL dx = cdx - u[p], dy = cdy - v[p];
                const REAL e = (na * dx + nb * dy) * dx + nc * dy * dy;
                const REAL raw = o * EXP(e);
                REAL a = raw < max_alpha ? raw : max_alpha;
                a = ((a >= thr) & (e <= 0) & (cnt[p] > jr)) ? a : 0;
                const REAL inv = 1 / (1 - a);  /* one division, two uses */
                const REAL Tb = T[p] * inv;  /* T in front of this Gaussian */
                T[p] = Tb;
                const REAL wp = a * Tb;
                const REAL g_a = gfd[p] * Tb - R[p] * inv;
                R[p] += gfd[p] * wp;
                w[p] = wp;
                const REAL ge = raw < max_alpha ? g_a * a : 0;  /* clamped: no gradient */
                m0 += ge;
                m1 += ge * u[p];
                m2 += ge * v[p];
                m3 += ge * uu[p];
                m4 += ge * uv[p];
                m5 += ge * vv[p];
            }
            REAL *out = g_rows + r * S;
            out[0] = m0; out[1] = m1; out[2] = m2; out[3] = m3; out[4] = m4; out[5] = m5;
            for (int64_t c = 0; c < F; c++) {
                const REAL *g = gF + c * P;
                REAL s = 0;
#pragma omp simd reduction(+:s)
                for (int64_t p = 0; p < P; p++) s += g[p] * w[p];
                out[6 + c] = s;
            }
        }
    }
    free(gF);
}
"""

# Tried in order; the first that compiles wins. -march=native: the cache key includes the CPU.
# No -ffast-math: the kernel must keep IEEE comparisons and the order of operations it states.
_FLAG_SETS = (
    ("-O3", "-march=native", "-fopenmp-simd", "-fno-math-errno", "-fno-trapping-math"),
    ("-O3", "-fopenmp-simd", "-fno-math-errno", "-fno-trapping-math"),
    ("-O2",),
)

_lock = threading.Lock()
_lib: ctypes.CDLL | None = None
_tried = False
_error: str | None = None


def source() -> str:
    parts = [_PRELUDE % {"max_tile": MAX_TILE}]
    for real, suffix, exp in (("float", "f32", "exp_f32"), ("double", "f64", "exp_f64")):
        body = _TEMPLATE.replace("SUFFIX", suffix).replace("REAL", real).replace("EXP", exp)
        parts.append(body % {})
    return "\n".join(parts)


def _cache_dir() -> Path:
    """``$GMAE_KERNEL_DIR``, else ``$XDG_CACHE_HOME/gmae-kernels`` (default ``~/.cache``): not
    inside ``~/.cache/gmae``, which is the data sets' directory."""
    if os.environ.get("GMAE_KERNEL_DIR"):
        return Path(os.environ["GMAE_KERNEL_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "gmae-kernels"


def _cpu_id() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            lines = [x for x in f if x.startswith(("model name", "flags"))]
        return "".join(sorted(set(lines)))
    except OSError:
        return platform.processor()


def _compiler() -> str | None:
    for cc in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if cc and shutil.which(cc):
            return cc
    return None


def _build(cc: str, src: str) -> Path:
    """Compile ``src`` (first flag set that works) into the cache; return the library path."""
    version = subprocess.run([cc, "--version"], capture_output=True, text=True).stdout
    errors = []
    for flags in _FLAG_SETS:
        key = hashlib.sha256("\0".join([src, cc, version, *flags, _cpu_id()]).encode())
        out = _cache_dir() / f"gmae_render_{key.hexdigest()[:16]}.so"
        if out.exists():
            return out
        out.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
            c_file, so_file = Path(tmp) / "kernel.c", Path(tmp) / "kernel.so"
            c_file.write_text(src)
            cmd = [cc, *flags, "-std=gnu99", "-shared", "-fPIC", str(c_file), "-o", str(so_file)]
            cmd.append("-lm")
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
            if proc.returncode == 0:
                os.replace(so_file, out)  # atomic: concurrent first uses never see half a file
                return out
            errors.append(f"{' '.join(flags)}: {proc.stderr.strip()[-300:]}")
    raise OSError("; ".join(errors))


def _declare(lib: ctypes.CDLL) -> None:
    i64, dbl, ptr = ctypes.c_int64, ctypes.c_double, ctypes.c_void_p
    for suffix in ("f32", "f64"):
        fwd = getattr(lib, f"gmae_forward_{suffix}")
        fwd.argtypes = [i64, i64, ptr, ptr, ptr] + [i64] * 6 + [dbl] * 3 + [ptr] * 3
        fwd.restype = None
        bwd = getattr(lib, f"gmae_backward_{suffix}")
        bwd.argtypes = [i64, i64, ptr, ptr, ptr] + [i64] * 6 + [dbl] * 2 + [ptr] * 5
        bwd.restype = None
        binning = getattr(lib, f"gmae_bin_{suffix}")
        binning.argtypes = [i64, i64, i64, ptr, ptr, ptr, i64, i64, i64, dbl, ptr, ptr, ptr]
        binning.restype = None
        grads = getattr(lib, f"gmae_row_grads_{suffix}")
        grads.argtypes = [i64, i64, ptr, ptr, ptr, ptr]
        grads.restype = None


def load() -> ctypes.CDLL | None:
    """The compiled kernel, built on first call; None where it cannot be built (or when
    ``GMAE_RENDER_KERNEL=torch``). The reason is kept in ``error()``."""
    global _lib, _tried, _error
    if os.environ.get("GMAE_RENDER_KERNEL", "").lower() == "torch":
        return None
    with _lock:
        if not _tried:
            _tried = True
            cc = _compiler()
            if cc is None:
                _error = "no C compiler found (cc, gcc, clang or $CC)"
            else:
                try:
                    lib = ctypes.CDLL(str(_build(cc, source())))
                    _declare(lib)
                    _lib = lib
                except (OSError, subprocess.SubprocessError, AttributeError) as exc:
                    _error = f"building the render kernel failed: {exc}"
        return _lib


def error() -> str | None:
    """Why ``load()`` returned None (None when it has not, or has not been called)."""
    return _error
