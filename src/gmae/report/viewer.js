// The report's 3-D Gaussian viewer: a GMAE's predicted Gaussians as splats on a 2-D canvas.
// Plain JavaScript, no libraries and no network, so the page works from disk or mailed.
//
// Each Gaussian is projected with the EWA splatting approximation (as the renderer does):
// camera-space covariance R S R^T, then the Jacobian of the pinhole projection, plus the
// renderer's 0.3 px^2 low-pass. Splats are drawn far to near with "over" compositing, each
// as an ellipse filled with a radial gradient that follows exp(-r^2 / 2) out to 3 sigma.
// At yaw = pitch = 0 and zoom 1 the camera is the model's own, so the picture is the model's
// render of the image. Data: a <script type="application/json" class="gv-data"> block
// (gmae.report.viewer.viewer_scene).
(function () {
  "use strict";
  // exp(-r^2 / 2) at r = 0, 0.5, ..., 3 sigma (the last stop fades to 0).
  const FALLOFF = [1, 0.8825, 0.6065, 0.3247, 0.1353, 0.0439, 0];

  function Viewer(root) {
    this.root = root;
    this.data = JSON.parse(root.querySelector(".gv-data").textContent);
    this.canvas = root.querySelector("canvas");
    this.ctx = this.canvas.getContext("2d");
    this.status = root.querySelector(".gv-status");
    this.imageSelect = root.querySelector(".gv-image");
    this.colourSelect = root.querySelector(".gv-colour");
    this.peelSlider = root.querySelector(".gv-peel");
    this.onlyBox = root.querySelector(".gv-only");
    this.sizeSlider = root.querySelector(".gv-size");
    this.stretchSlider = root.querySelector(".gv-stretch");
    this.image = 0;
    this.drawn = 0;
    this.resetView();
    this.bind();
    this.draw();
  }

  Viewer.prototype.resetView = function () {
    this.yaw = 0;
    this.pitch = 0;
    this.zoom = 1;
  };

  // Orbit by (dyaw, dpitch) radians; pitch stays short of the poles.
  Viewer.prototype.rotate = function (dyaw, dpitch) {
    this.yaw += dyaw;
    this.pitch = Math.max(-1.5, Math.min(1.5, this.pitch + dpitch));
    this.draw();
  };

  Viewer.prototype.zoomBy = function (factor) {
    this.zoom = Math.max(0.4, Math.min(8, this.zoom * factor));
    this.draw();
  };

  Viewer.prototype.bind = function () {
    const self = this;
    const c = this.canvas;
    let drag = null;
    c.addEventListener("pointerdown", function (e) {
      drag = { x: e.clientX, y: e.clientY };
      try {
        c.setPointerCapture(e.pointerId);
      } catch (err) {
        // synthetic events have no active pointer to capture
      }
    });
    c.addEventListener("pointermove", function (e) {
      if (!drag) return;
      const dx = e.clientX - drag.x;
      const dy = e.clientY - drag.y;
      drag = { x: e.clientX, y: e.clientY };
      self.rotate(dx * 0.01, -dy * 0.01);
    });
    const end = function () {
      drag = null;
    };
    c.addEventListener("pointerup", end);
    c.addEventListener("pointercancel", end);
    c.addEventListener(
      "wheel",
      function (e) {
        e.preventDefault();
        self.zoomBy(Math.exp(-e.deltaY * 0.001));
      },
      { passive: false }
    );
    c.addEventListener("dblclick", function () {
      self.resetView();
      self.draw();
    });
    this.imageSelect.addEventListener("change", function () {
      self.image = Number(self.imageSelect.value);
      self.draw();
    });
    this.colourSelect.addEventListener("change", function () {
      self.draw();
    });
    this.peelSlider.addEventListener("input", function () {
      self.draw();
    });
    this.onlyBox.addEventListener("change", function () {
      self.draw();
    });
    [this.sizeSlider, this.stretchSlider].forEach(function (el) {
      el.addEventListener("input", function () {
        self.draw();
      });
    });
    this.root.querySelector(".gv-reset").addEventListener("click", function () {
      self.resetView();
      self.draw();
    });
  };

  function colourAt(table, t) {
    const x = Math.max(0, Math.min(1, t)) * (table.length - 1);
    const i = Math.min(table.length - 2, Math.floor(x));
    const f = x - i;
    const a = table[i];
    const b = table[i + 1];
    return [0, 1, 2].map(function (k) {
      return Math.round(a[k] + f * (b[k] - a[k]));
    });
  }

  Viewer.prototype.draw = function () {
    const d = this.data;
    const img = d.images[this.image];
    const n = img.opacity.length;
    const W = this.canvas.width;
    const H = this.canvas.height;
    const f = d.focal * W;
    const lowpass = 0.3 * (W / d.img_size) * (W / d.img_size);
    // World to camera: R = Rx(pitch) Ry(yaw) about the Gaussians' mean depth on the axis,
    // then the camera sits D in front of it (at yaw = pitch = 0, zoom 1: the model's camera).
    const cy = Math.cos(this.yaw);
    const sy = Math.sin(this.yaw);
    const cp = Math.cos(this.pitch);
    const sp = Math.sin(this.pitch);
    const R = [cy, 0, sy, sp * sy, cp, -sp * cy, -cp * sy, sp, cp * cy];
    const peel = Number(this.peelSlider.value);
    const only = this.onlyBox.checked;
    const byDepth = this.colourSelect.value === "depth";
    // Splat size shrinks every footprint (centres stand out); depth stretch spreads the
    // centres along z about their mean, to see thin layers from the side. Both 1: as predicted.
    const size2 = Math.pow(Number(this.sizeSlider.value) / 100, 2);
    const stretch = Number(this.stretchSlider.value);
    let dmin = Infinity;
    let dmax = -Infinity;
    let zmean = 0;
    for (let i = 0; i < n; i++) {
      dmin = Math.min(dmin, img.depth[i]);
      dmax = Math.max(dmax, img.depth[i]);
      zmean += img.means[3 * i + 2] / n;
    }
    const D = (d.distance + zmean) / this.zoom;
    const splats = [];
    for (let i = 0; i < n; i++) {
      const g = img.group[i];
      if (only ? g !== peel : g < peel) continue;
      const o = img.opacity[i];
      if (o < 1 / 255) continue;
      const mx = img.means[3 * i];
      const my = img.means[3 * i + 1];
      const mz = (img.means[3 * i + 2] - zmean) * stretch; // relative to the orbit centre
      const x = R[0] * mx + R[1] * my + R[2] * mz;
      const y = R[3] * mx + R[4] * my + R[5] * mz;
      const z = R[6] * mx + R[7] * my + R[8] * mz + D;
      if (z < 0.05) continue; // behind or at the camera
      // Camera-space covariance R S R^T (S symmetric: xx xy xz yy yz zz).
      const s = img.cov.slice(6 * i, 6 * i + 6);
      const S = [s[0], s[1], s[2], s[1], s[3], s[4], s[2], s[4], s[5]].map(function (e) {
        return e * size2;
      });
      const RS = new Array(9);
      for (let r = 0; r < 3; r++) {
        for (let k = 0; k < 3; k++) {
          RS[3 * r + k] = R[3 * r] * S[k] + R[3 * r + 1] * S[3 + k] + R[3 * r + 2] * S[6 + k];
        }
      }
      const C = new Array(9);
      for (let r = 0; r < 3; r++) {
        for (let k = 0; k < 3; k++) {
          C[3 * r + k] = RS[3 * r] * R[3 * k] + RS[3 * r + 1] * R[3 * k + 1] + RS[3 * r + 2] * R[3 * k + 2];
        }
      }
      // Jacobian rows of (f x / z, f y / z): J0 = (f/z, 0, -f x/z^2), J1 = (0, f/z, -f y/z^2).
      const j0 = [f / z, 0, (-f * x) / (z * z)];
      const j1 = [0, f / z, (-f * y) / (z * z)];
      const quad = function (a, b) {
        let sum = 0;
        for (let r = 0; r < 3; r++) {
          for (let k = 0; k < 3; k++) sum += a[r] * C[3 * r + k] * b[k];
        }
        return sum;
      };
      const a = quad(j0, j0) + lowpass;
      const b = quad(j0, j1);
      const c = quad(j1, j1) + lowpass;
      const u = (f * x) / z + W / 2;
      const v = (f * y) / z + H / 2;
      const reach = 3 * Math.sqrt(Math.max(a, c));
      if (u + reach < 0 || u - reach > W || v + reach < 0 || v - reach > H) continue;
      let rgb;
      if (byDepth) {
        const t = dmax > dmin ? (img.depth[i] - dmin) / (dmax - dmin) : 0;
        rgb = colourAt(d.colormap, 1 - t); // near = the map's top (yellow for viridis)
      } else {
        rgb = img.rgb.slice(3 * i, 3 * i + 3);
      }
      splats.push({ z: z, u: u, v: v, a: a, b: b, c: c, o: o, rgb: rgb });
    }
    splats.sort(function (p, q) {
      return q.z - p.z; // far first: "over" compositing front-most last
    });
    const ctx = this.ctx;
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.fillStyle = "rgb(" + d.background.join(",") + ")";
    ctx.fillRect(0, 0, W, H);
    for (const p of splats) {
      // L L^T = the 2-D covariance (Cholesky): L maps the unit circle to the 1-sigma ellipse.
      const l00 = Math.sqrt(p.a);
      const l10 = p.b / l00;
      const l11 = Math.sqrt(Math.max(p.c - l10 * l10, 1e-9));
      ctx.setTransform(3 * l00, 3 * l10, 0, 3 * l11, p.u, p.v);
      const grad = ctx.createRadialGradient(0, 0, 0, 0, 0, 1);
      const col = p.rgb.join(",");
      for (let k = 0; k < FALLOFF.length; k++) {
        grad.addColorStop(k / (FALLOFF.length - 1), "rgba(" + col + "," + p.o * FALLOFF[k] + ")");
      }
      ctx.fillStyle = grad;
      ctx.beginPath();
      ctx.arc(0, 0, 1, 0, 2 * Math.PI);
      ctx.fill();
    }
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    this.drawn = splats.length;
    this.canvas.dataset.drawn = String(splats.length);
    const groups = d.groups;
    let shown = "layers " + (peel + 1) + "-" + groups;
    if (only || peel + 1 === groups) shown = "layer " + (peel + 1) + (only ? " alone" : "");
    this.status.textContent =
      splats.length + " of " + n + " splats drawn (" + shown + " of " + groups + ", nearest = 1)";
  };

  window.gmaeViewers = window.gmaeViewers || [];
  document.querySelectorAll(".gviewer").forEach(function (root) {
    window.gmaeViewers.push(new Viewer(root));
  });
})();
