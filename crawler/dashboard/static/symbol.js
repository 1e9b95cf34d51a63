// One symbol: its price chart from the history (a range picker) and the CSV download.
"use strict";

const symbol = new URLSearchParams(location.search).get("s") || "";
const RANGES = ["1h", "1d", "1w", "1m", "1y", "all"];
let range = "1d";
let points = [];

document.title = "crawler: " + symbol;
document.getElementById("title").textContent = symbol;

function renderRanges() {
  const box = document.getElementById("ranges");
  box.replaceChildren();
  for (const name of RANGES) {
    const button = el("button", { type: "button", class: name === range ? "on" : "", "data-range": name, text: name });
    button.addEventListener("click", () => { range = name; load(); });
    box.append(button);
  }
  document.getElementById("csv").href = "/api/history.csv?symbol=" + encodeURIComponent(symbol) + "&range=" + range;
}

function niceTime(ms, spanMs) {
  const d = new Date(ms);
  if (spanMs < 600000) return d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
  if (spanMs < 2 * 86400000) return d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  return d.toLocaleDateString([], { month: "short", day: "numeric" });
}

function drawChart() {
  const box = document.getElementById("chart");
  const w = 900, h = 320, left = 70, right = 12, top = 12, bottom = 26;
  const svg = svgEl("svg", { viewBox: `0 0 ${w} ${h}`, id: "price-chart" });
  svg.dataset.points = String(points.length);
  box.replaceChildren(svg);
  if (points.length === 0) {
    svg.append(svgEl("text", { x: w / 2 - 80, y: h / 2, text: "no history in this range" }));
    return;
  }
  let lo = Infinity, hi = -Infinity;
  for (const [, p] of points) { if (p < lo) lo = p; if (p > hi) hi = p; }
  if (lo === hi) { lo -= Math.abs(lo) * 0.01 || 1; hi += Math.abs(hi) * 0.01 || 1; }
  const t0 = points[0][0], t1 = points[points.length - 1][0];
  const span = Math.max(1, t1 - t0);
  const x = (t) => left + (t - t0) / span * (w - left - right);
  const y = (p) => top + (hi - p) / (hi - lo) * (h - top - bottom);
  for (let i = 0; i <= 4; i++) {
    const p = lo + (hi - lo) * i / 4;
    svg.append(svgEl("line", { class: "axis", x1: left, x2: w - right, y1: y(p), y2: y(p) }));
    svg.append(svgEl("text", { x: 4, y: y(p) + 3, text: fmtPrice(p) }));
  }
  for (let i = 0; i <= 4; i++) {
    const t = t0 + span * i / 4;
    svg.append(svgEl("text", { x: Math.min(x(t) - 16, w - 60), y: h - 6, text: niceTime(t, span) }));
  }
  const path = points.length === 1
    ? [[x(t0), y(points[0][1])], [x(t0) + 2, y(points[0][1])]]
    : points.map(([t, p]) => [x(t), y(p)]);
  svg.append(svgEl("polyline", { class: "price-line", points: path.map(([a, b]) => a.toFixed(1) + "," + b.toFixed(1)).join(" ") }));
  const [lt, lp] = points[points.length - 1];
  svg.append(svgEl("circle", { cx: x(lt), cy: y(lp), r: 3, class: "now" }));
}

async function load() {
  renderRanges();
  const info = document.getElementById("chart-info");
  info.textContent = "loading…";
  try {
    const answer = await getJSON("/api/history?symbol=" + encodeURIComponent(symbol) + "&range=" + range);
    points = answer.points || [];
    info.textContent = (answer.rows ?? points.length) + " quotes" + (answer.rows && answer.rows > points.length ? " (drawn as " + points.length + " points)" : "");
  } catch (e) {
    points = [];
    info.textContent = e.message;
  }
  drawChart();
  document.body.dataset.ready = "1";
}

function showLatest(row) {
  if (!row) return;
  const line = document.getElementById("latest");
  const dir = num(row.change) > 0 ? "up" : num(row.change) < 0 ? "down" : "";
  line.replaceChildren(
    el("span", { id: "latest-price", "data-price": row.price, text: fmtPrice(row.price) + " " + (row.currency || "") }), " ",
    el("span", { class: dir, text: fmtSigned(row.change_pct, 2, "%") }), " ",
    el("span", { class: "muted", text: (row.source || "") + " · " + (row.t ? new Date(row.t).toLocaleString() : "") }));
}

getJSON("/api/snapshot?symbol=" + encodeURIComponent(symbol)).then((snap) => {
  showLatest((snap.rows || []).find((r) => r.symbol === symbol));
}).catch(() => {});

connectEvents((batch) => {
  for (const row of batch.rows || batch.all_rows || []) {
    if (row.symbol !== symbol) continue;
    showLatest(row);
    const p = num(row.price);
    if (p !== null && row.t && (!points.length || row.t > points[points.length - 1][0])) {
      points.push([row.t, p]);
      drawChart();
    }
  }
}, (ok) => setConn(ok, ok ? "live" : "reconnecting…"));

load();
