// Plots on a canvas, no library: line plots (patterns, pressure) and the scan's heatmap (viridis).
"use strict";

const PENS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e"];
const MARGIN = { left: 60, right: 12, top: 12, bottom: 40 };
// viridis at 9 stops (matplotlib's), interpolated to 256 entries
const VIRIDIS_STOPS = [[68, 1, 84], [71, 44, 122], [59, 81, 139], [44, 113, 142], [33, 144, 141],
  [39, 173, 129], [92, 200, 99], [170, 220, 50], [253, 231, 37]];
const VIRIDIS = (() => {
  const lut = [];
  for (let i = 0; i < 256; i++) {
    const x = i / 255 * (VIRIDIS_STOPS.length - 1), k = Math.min(Math.floor(x), VIRIDIS_STOPS.length - 2), f = x - k;
    lut.push(VIRIDIS_STOPS[k].map((c, j) => Math.round(c + f * (VIRIDIS_STOPS[k + 1][j] - c))));
  }
  return lut;
})();

function niceTicks(lo, hi, count) {
  if (!(hi > lo)) return [lo];
  const step0 = (hi - lo) / count, mag = Math.pow(10, Math.floor(Math.log10(step0)));
  const step = [1, 2, 5, 10].map(m => m * mag).find(s => s >= step0);
  const ticks = [];
  for (let t = Math.ceil(lo / step) * step; t <= hi + step * 1e-9; t += step) ticks.push(+t.toPrecision(6));
  return ticks;
}

function frame(ctx, w, h, xr, yr, xlabel, ylabel) {
  ctx.fillStyle = "white"; ctx.fillRect(0, 0, w, h);
  ctx.strokeStyle = "#000"; ctx.fillStyle = "#000"; ctx.font = "11px sans-serif";
  const pw = w - MARGIN.left - MARGIN.right, ph = h - MARGIN.top - MARGIN.bottom;
  ctx.strokeRect(MARGIN.left, MARGIN.top, pw, ph);
  const sx = x => MARGIN.left + (x - xr[0]) / ((xr[1] - xr[0]) || 1) * pw;
  const sy = y => MARGIN.top + ph - (y - yr[0]) / ((yr[1] - yr[0]) || 1) * ph;
  ctx.textAlign = "center";
  for (const t of niceTicks(xr[0], xr[1], 6)) { ctx.fillText(String(t), sx(t), h - MARGIN.bottom + 14); }
  ctx.fillText(xlabel, MARGIN.left + pw / 2, h - 6);
  ctx.textAlign = "right";
  for (const t of niceTicks(Math.min(yr[0], yr[1]), Math.max(yr[0], yr[1]), 5)) {
    ctx.fillText(String(t), MARGIN.left - 4, sy(t) + 4);
  }
  ctx.save(); ctx.translate(12, MARGIN.top + ph / 2); ctx.rotate(-Math.PI / 2); ctx.textAlign = "center";
  ctx.fillText(ylabel, 0, 0); ctx.restore();
  return { sx, sy, pw, ph };
}

// series: [{name, x: [...], y: [...]}]
function linePlot(canvas, series, xlabel, ylabel, emptyText) {
  const ctx = canvas.getContext("2d"), w = canvas.width, h = canvas.height;
  const pts = series.filter(s => s.x.length && s.x.length === s.y.length);
  const finite = v => v !== null && Number.isFinite(v);
  const xs = pts.flatMap(s => s.x.filter(finite)), ys = pts.flatMap(s => s.y.filter(finite));
  if (!xs.length) {
    ctx.fillStyle = "white"; ctx.fillRect(0, 0, w, h); ctx.fillStyle = "#666"; ctx.font = "13px sans-serif";
    ctx.textAlign = "center"; ctx.fillText(emptyText, w / 2, h / 2); return;
  }
  const xr = [Math.min(...xs), Math.max(...xs)], yr = [Math.min(...ys), Math.max(...ys)];
  const { sx, sy } = frame(ctx, w, h, xr, yr, xlabel, ylabel);
  pts.forEach((s, i) => {
    ctx.strokeStyle = PENS[i % PENS.length]; ctx.lineWidth = 1.3; ctx.beginPath();
    let started = false;
    s.x.forEach((x, k) => {
      const y = s.y[k];
      if (!finite(x) || !finite(y)) { started = false; return; }
      if (started) ctx.lineTo(sx(x), sy(y)); else { ctx.moveTo(sx(x), sy(y)); started = true; }
    });
    ctx.stroke();
    ctx.fillStyle = PENS[i % PENS.length]; ctx.textAlign = "right";
    ctx.fillText(s.name, w - MARGIN.right - 6, MARGIN.top + 14 * (i + 1));
  });
}

// picture: {width, height, pixels (base64 bytes), axis: [x0, x1], first_frame, last_frame, axis_label}
function heatmapPlot(canvas, picture) {
  const ctx = canvas.getContext("2d"), w = canvas.width, h = canvas.height;
  if (!picture || !picture.frames) {
    linePlot(canvas, [], "", "", "no scan yet"); return;
  }
  const yr = [picture.last_frame + 0.5, picture.first_frame - 0.5];  // frames downwards
  const { pw, ph } = frame(ctx, w, h, picture.axis, yr, picture.axis_label, "frame number");
  const bytes = Uint8Array.from(atob(picture.pixels), c => c.charCodeAt(0));
  const image = ctx.createImageData(picture.width, picture.height);
  for (let i = 0; i < bytes.length; i++) {
    const [r, g, b] = VIRIDIS[bytes[i]];
    image.data[4 * i] = r; image.data[4 * i + 1] = g; image.data[4 * i + 2] = b; image.data[4 * i + 3] = 255;
  }
  const scratch = document.createElement("canvas");
  scratch.width = picture.width; scratch.height = picture.height;
  scratch.getContext("2d").putImageData(image, 0, 0);
  ctx.imageSmoothingEnabled = false;
  ctx.drawImage(scratch, MARGIN.left + 1, MARGIN.top + 1, pw - 2, ph - 2);
}
