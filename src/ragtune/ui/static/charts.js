// Small SVG charts (line, grouped bars, histogram) drawn by hand: the UI must work offline, so no
// charting library from a CDN, and ~150 lines cover what the pages need.
const NS = "http://www.w3.org/2000/svg";
export const COLORS = ["#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860", "#da8bc3", "#8c8c8c",
  "#ccb974", "#64b5cd"];

function el(tag, attrs = {}, text) {
  const node = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

export function fmt(v) {
  if (v === null || v === undefined || Number.isNaN(v)) return "–";
  const a = Math.abs(v);
  if (a !== 0 && (a < 1e-3 || a >= 1e5)) return v.toExponential(2);
  if (Number.isInteger(v)) return String(v);
  return String(parseFloat(a >= 100 ? v.toFixed(1) : a >= 1 ? v.toFixed(3) : v.toFixed(4)));
}

function ticks(lo, hi, n = 5) {
  if (lo === hi) { lo -= 1; hi += 1; }
  const raw = (hi - lo) / n, mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map(m => m * mag).find(s => s >= raw);
  const out = [];
  for (let t = Math.ceil(lo / step) * step; t <= hi + step * 1e-9; t += step) out.push(+t.toFixed(12));
  return out;
}

function frame(container, title, height) {
  container.replaceChildren();
  const width = Math.max(container.clientWidth || 0, 320);
  const svg = el("svg", { width, height, viewBox: `0 0 ${width} ${height}`, class: "chart", role: "img" });
  if (title) svg.appendChild(el("text", { x: 8, y: 16, class: "chart-title" }, title));
  container.appendChild(svg);
  return { svg, width };
}

function axes(svg, box, xs, ys, xfmt = fmt) {
  for (const t of ys.ticks) {
    const y = ys.map(t);
    svg.appendChild(el("line", { x1: box.l, x2: box.r, y1: y, y2: y, class: "grid" }));
    svg.appendChild(el("text", { x: box.l - 4, y: y + 3, class: "tick", "text-anchor": "end" }, fmt(t)));
  }
  if (xs) for (const t of xs.ticks) {
    const x = xs.map(t);
    svg.appendChild(el("text", { x, y: box.b + 13, class: "tick", "text-anchor": "middle" }, xfmt(t)));
  }
  svg.appendChild(el("line", { x1: box.l, x2: box.r, y1: box.b, y2: box.b, class: "axis" }));
}

// series: [{name, points: [[x, y], ...]}]; each path carries data-series and data-n (its point count).
export function lineChart(container, { title, series, height = 220, xLabel = "step", integerX = true }) {
  const { svg, width } = frame(container, title, height);
  const pts = series.flatMap(s => s.points);
  if (!pts.length) { svg.appendChild(el("text", { x: 12, y: 50, class: "tick" }, "no points yet")); return svg; }
  const box = { l: 56, r: width - 180, t: 26, b: height - 22 };
  const [x0, x1] = [Math.min(...pts.map(p => p[0])), Math.max(...pts.map(p => p[0]))];
  let [y0, y1] = [Math.min(...pts.map(p => p[1])), Math.max(...pts.map(p => p[1]))];
  const pad = (y1 - y0) * 0.08 || Math.abs(y0) * 0.1 || 1;
  y0 -= pad; y1 += pad;
  // steps are whole numbers: no tick at step 1.5
  const xt = ticks(x0, x1 === x0 ? x0 + 1 : x1, 6).filter(t => !integerX || Number.isInteger(t)), yt = ticks(y0, y1, 5);
  const xs = { ticks: xt, map: x => box.l + (x - x0) / ((x1 - x0) || 1) * (box.r - box.l) };
  const ys = { ticks: yt.filter(t => t >= y0 && t <= y1), map: y => box.b - (y - y0) / (y1 - y0) * (box.b - box.t) };
  axes(svg, box, { ticks: xt.filter(t => t >= x0 && t <= (x1 === x0 ? x0 : x1)), map: xs.map }, ys);
  svg.appendChild(el("text", { x: (box.l + box.r) / 2, y: height - 2, class: "tick", "text-anchor": "middle" }, xLabel));
  series.forEach((s, i) => {
    const color = COLORS[i % COLORS.length];
    const d = s.points.map((p, k) => `${k ? "L" : "M"}${xs.map(p[0]).toFixed(1)},${ys.map(p[1]).toFixed(1)}`).join("");
    svg.appendChild(el("path", { d, fill: "none", stroke: color, "stroke-width": 1.6, "data-series": s.name,
      "data-n": s.points.length }));
    if (s.points.length <= 40) for (const p of s.points)
      svg.appendChild(el("circle", { cx: xs.map(p[0]), cy: ys.map(p[1]), r: 2.2, fill: color }));
    const last = s.points[s.points.length - 1];
    const ly = box.t + 4 + i * 16;
    svg.appendChild(el("rect", { x: box.r + 12, y: ly, width: 10, height: 3, fill: color }));
    svg.appendChild(el("text", { x: box.r + 26, y: ly + 5, class: "legend", "data-last": s.name },
      `${s.name} ${last ? fmt(last[1]) : ""}`));
  });
  return svg;
}

// categories: ["exact", ...]; series: [{name, values: [v per category]}]
export function barChart(container, { title, categories, series, height = 240, max, unit = "" }) {
  const { svg, width } = frame(container, title, height);
  const box = { l: 48, r: width - 160, t: 26, b: height - 34 };
  const all = series.flatMap(s => s.values).filter(v => v !== null && v !== undefined);
  const top = max ?? Math.max(1e-9, ...all) * 1.1;
  const ys = { ticks: ticks(0, top, 5).filter(t => t <= top), map: v => box.b - v / top * (box.b - box.t) };
  axes(svg, box, null, ys);
  const gw = (box.r - box.l) / Math.max(categories.length, 1), bw = gw * 0.8 / Math.max(series.length, 1);
  categories.forEach((c, ci) => {
    svg.appendChild(el("text", { x: box.l + gw * (ci + 0.5), y: box.b + 14, class: "tick", "text-anchor": "middle" },
      c.length > 22 ? c.slice(0, 21) + "…" : c));
    series.forEach((s, si) => {
      const v = s.values[ci];
      if (v === null || v === undefined) return;
      const x = box.l + gw * ci + gw * 0.1 + si * bw, y = ys.map(v);
      svg.appendChild(el("rect", { x, y, width: bw - 2, height: box.b - y, fill: COLORS[si % COLORS.length],
        "data-series": s.name, "data-category": c, "data-value": v }));
      svg.appendChild(el("text", { x: x + bw / 2 - 1, y: y - 3, class: "bar-label", "text-anchor": "middle" }, fmt(v) + unit));
    });
  });
  series.forEach((s, i) => {
    svg.appendChild(el("rect", { x: box.r + 12, y: box.t + i * 16, width: 10, height: 10, fill: COLORS[i % COLORS.length] }));
    svg.appendChild(el("text", { x: box.r + 26, y: box.t + 9 + i * 16, class: "legend" }, s.name));
  });
  return svg;
}

export function histogram(container, { title, values, cutoff, bins = 40, height = 220 }) {
  const { svg, width } = frame(container, title, height);
  if (!values.length) return svg;
  const box = { l: 48, r: width - 20, t: 26, b: height - 24 };
  const lo = 0, hi = Math.max(...values, cutoff || 0) * 1.02 || 1;
  const w = (hi - lo) / bins, counts = new Array(bins).fill(0);
  for (const v of values) counts[Math.min(bins - 1, Math.floor((v - lo) / w))]++;
  const top = Math.max(...counts) * 1.1;
  const ys = { ticks: ticks(0, top, 4).filter(t => t <= top && Number.isInteger(t)), map: c => box.b - c / top * (box.b - box.t) };
  const xs = { ticks: ticks(lo, hi, 6).filter(t => t <= hi), map: v => box.l + (v - lo) / (hi - lo) * (box.r - box.l) };
  axes(svg, box, xs, ys);
  counts.forEach((c, i) => {
    if (!c) return;
    const x = xs.map(lo + i * w), y = ys.map(c);
    svg.appendChild(el("rect", { x, y, width: Math.max(1, xs.map(lo + (i + 1) * w) - x - 1), height: box.b - y,
      class: (cutoff && lo + i * w >= cutoff) ? "bin over" : "bin", "data-count": c }));
  });
  if (cutoff) {
    const x = xs.map(cutoff);
    svg.appendChild(el("line", { x1: x, x2: x, y1: box.t, y2: box.b, class: "cutoff", "data-cutoff": cutoff }));
    svg.appendChild(el("text", { x: x + 4, y: box.t + 10, class: "cutoff-label" }, `cutoff_len ${cutoff}`));
  }
  return svg;
}
