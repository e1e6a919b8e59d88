// Line charts in hand-written SVG: one chart per measure, one series per edge and direction,
// every sample a point, and the moments quality warnings were raised and cleared marked.

import {h, s} from "./dom.js";

const WIDTH = 720;
const HEIGHT = 220;
const PAD = {left: 52, right: 16, top: 14, bottom: 28};
const COLOURS = ["#2f6fdb", "#d9480f", "#2b8a3e", "#9c36b5", "#e67700", "#0b7285", "#5c5f66", "#c2255c"];

function ticks(min, max, count) {
  if (max <= min) return [min];
  const raw = (max - min) / count;
  const magnitude = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * magnitude).find((m) => m >= raw);
  const out = [];
  for (let v = Math.ceil(min / step) * step; v <= max + 1e-9; v += step) out.push(+v.toFixed(10));
  return out;
}

function clock(ms) {
  const d = new Date(ms);
  const pad = (n) => String(n).padStart(2, "0");
  return `${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}:${pad(d.getUTCSeconds())}`;
}

/**
 * series: [{name, points: [{t: ms, v: number}]}]; markers: [{t: ms, kind: "raised"|"cleared",
 * name}]. Returns a <figure> holding the SVG and its legend.
 */
export function lineChart({id, title, unit, series, markers, domain}) {
  const all = series.flatMap((one) => one.points);
  const figure = h("figure", {class: "chart", "data-chart": id});
  figure.append(h("figcaption", null, title, unit ? ` (${unit})` : ""));
  if (!all.length) {
    figure.append(h("p", {class: "notice info"}, `No ${title.toLowerCase()} samples for this call.`));
    return figure;
  }
  const [t0, t1] = domain;
  const vmax = Math.max(...all.map((p) => p.v));
  const vmin = Math.min(0, ...all.map((p) => p.v));
  const top = vmax === vmin ? vmin + 1 : vmax + (vmax - vmin) * 0.08;
  const x = (t) => PAD.left + ((t - t0) / Math.max(1, t1 - t0)) * (WIDTH - PAD.left - PAD.right);
  const y = (v) => HEIGHT - PAD.bottom - ((v - vmin) / (top - vmin)) * (HEIGHT - PAD.top - PAD.bottom);

  const svg = s("svg", {
    viewBox: `0 0 ${WIDTH} ${HEIGHT}`, class: "plot", role: "img",
    "aria-label": `${title} over time`,
  });
  const grid = s("g", {class: "grid"});
  for (const v of ticks(vmin, top, 4)) {
    grid.append(s("line", {x1: PAD.left, x2: WIDTH - PAD.right, y1: y(v), y2: y(v)}));
    grid.append(s("text", {x: PAD.left - 6, y: y(v) + 4, "text-anchor": "end"}, String(v)));
  }
  for (const t of ticks(t0, t1, 6)) {
    grid.append(s("text", {x: x(t), y: HEIGHT - 8, "text-anchor": "middle"}, clock(t)));
  }
  svg.append(grid);

  // Warnings under the data: a band from each raise to its clear (or the end), and a line
  // at every raise and clear.
  const open = new Map();
  const bands = s("g", {class: "bands"});
  const lines = s("g", {class: "markers"});
  for (const m of [...markers].sort((a, b) => a.t - b.t)) {
    if (m.kind === "raised" && !open.has(m.name)) open.set(m.name, m.t);
    if (m.kind === "cleared" && open.has(m.name)) {
      bands.append(band(x(open.get(m.name)), x(m.t), m.name));
      open.delete(m.name);
    }
    const line = s("line", {
      x1: x(m.t), x2: x(m.t), y1: PAD.top, y2: HEIGHT - PAD.bottom,
      class: `marker ${m.kind}`, "data-warning": m.name, "data-kind": m.kind,
    });
    line.append(s("title", null, `${m.name} ${m.kind} at ${clock(m.t)}`));
    lines.append(line);
  }
  for (const [name, start] of open) bands.append(band(x(start), x(t1), name));
  svg.append(bands, lines);

  const legend = h("ul", {class: "legend"});
  series.forEach((one, index) => {
    if (!one.points.length) return;
    const colour = COLOURS[index % COLOURS.length];
    const path = one.points.map((p, i) => `${i ? "L" : "M"}${x(p.t).toFixed(1)},${y(p.v).toFixed(1)}`);
    const group = s("g", {class: "series", "data-series": one.name});
    group.append(s("path", {d: path.join(" "), stroke: colour, fill: "none", class: "line"}));
    for (const p of one.points) {
      const dot = s("circle", {cx: x(p.t).toFixed(1), cy: y(p.v).toFixed(1), r: 2.5, fill: colour, class: "pt"});
      dot.append(s("title", null, `${one.name} ${clock(p.t)}: ${p.v}${unit ? " " + unit : ""}`));
      group.append(dot);
    }
    svg.append(group);
    legend.append(h("li", null, s("svg", {viewBox: "0 0 10 10", class: "swatch"},
      s("rect", {width: 10, height: 10, fill: colour})), one.name));
  });
  if (markers.length) {
    legend.append(h("li", {class: "key-raised"}, "warning raised"));
    legend.append(h("li", {class: "key-cleared"}, "warning cleared"));
  }
  figure.append(svg, legend);
  return figure;
}

function band(x1, x2, name) {
  const rect = s("rect", {
    x: Math.min(x1, x2), y: PAD.top, width: Math.max(1, Math.abs(x2 - x1)),
    height: HEIGHT - PAD.top - PAD.bottom, class: "band", "data-warning": name,
  });
  rect.append(s("title", null, name));
  return rect;
}
