// Shared by the dashboard's pages: requests, DOM and SVG helpers, formats. No build step.
"use strict";

const CSRF = document.querySelector('meta[name="csrf"]').content;
const SVGNS = "http://www.w3.org/2000/svg";

async function getJSON(path) {
  const answer = await fetch(path, { credentials: "same-origin", cache: "no-store" });
  if (!answer.ok) throw new Error(path + ": HTTP " + answer.status);
  return answer.json();
}

async function postJSON(path, body) {
  const answer = await fetch(path, {
    method: "POST",
    credentials: "same-origin",
    headers: { "Content-Type": "application/json", "X-CSRF-Token": CSRF },
    body: JSON.stringify(body || {}),
  });
  let data = null;
  try { data = await answer.json(); } catch (e) { data = null; }
  if (!answer.ok) {
    throw new Error((data && data.error) || ("HTTP " + answer.status));
  }
  return data;
}

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "text") node.textContent = value;
    else if (name === "class") node.className = value;
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function svgEl(tag, attrs) {
  const node = document.createElementNS(SVGNS, tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (name === "text") node.textContent = value;
    else node.setAttribute(name, String(value));
  }
  return node;
}

function num(value) {
  if (value === null || value === undefined || value === "") return null;
  const parsed = Number(value);
  return Number.isFinite(parsed) ? parsed : null;
}

// One formatter per precision: toLocaleString with options builds a new one at every call,
// which costs a 1,000-row table a tenth of a second.
const PRICE_FORMATS = new Map();
function fmtPrice(value) {
  const n = num(value);
  if (n === null) return "–";
  const digits = Math.abs(n) >= 1000 ? 2 : Math.abs(n) >= 1 ? 4 : 6;
  let format = PRICE_FORMATS.get(digits);
  if (!format) {
    format = new Intl.NumberFormat("en-US", { maximumFractionDigits: digits, minimumFractionDigits: 2 });
    PRICE_FORMATS.set(digits, format);
  }
  return format.format(n);
}

function fmtSigned(value, digits, suffix) {
  const n = num(value);
  if (n === null) return "–";
  return (n > 0 ? "+" : "") + n.toFixed(digits) + (suffix || "");
}

function fmtUsd(value) {
  const n = num(value);
  if (n === null) return "–";
  return "$" + (Math.abs(n) < 0.1 && n !== 0 ? n.toFixed(4) : n.toFixed(2));
}

function fmtAge(ms) {
  if (ms === null || ms === undefined || !Number.isFinite(ms)) return "–";
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 60) return s + "s";
  if (s < 3600) return Math.floor(s / 60) + "m" + String(s % 60).padStart(2, "0") + "s";
  if (s < 86400) return Math.floor(s / 3600) + "h" + String(Math.floor(s % 3600 / 60)).padStart(2, "0") + "m";
  return Math.floor(s / 86400) + "d" + Math.floor(s % 86400 / 3600) + "h";
}

function fmtTime(iso) {
  if (!iso) return "–";
  const when = new Date(iso);
  if (Number.isNaN(when.getTime())) return String(iso);
  return when.toLocaleString([], { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", second: "2-digit" });
}

function drawSpark(svg, values) {
  svg.replaceChildren();
  const w = Number(svg.getAttribute("width")), h = Number(svg.getAttribute("height"));
  if (!values || values.length < 2) return;
  let lo = Infinity, hi = -Infinity;
  for (const v of values) { if (v < lo) lo = v; if (v > hi) hi = v; }
  const span = hi - lo || 1;
  const step = (w - 2) / (values.length - 1);
  const points = values.map((v, i) =>
    (1 + i * step).toFixed(1) + "," + (h - 1 - (v - lo) / span * (h - 2)).toFixed(1));
  svg.append(svgEl("polyline", { class: "spark-line", points: points.join(" ") }));
  svg.dataset.points = String(values.length);
}

function connectEvents(onBatch, onState) {
  let failed = false;
  const source = new EventSource("/api/events");
  source.onopen = () => { onState(true, failed); failed = false; };
  source.onerror = () => { failed = true; onState(false, false); };
  source.onmessage = (event) => {
    let batch;
    try { batch = JSON.parse(event.data); } catch (e) { return; }
    onBatch(batch);
  };
  return source;
}

function setConn(ok, text) {
  const pill = document.getElementById("conn");
  pill.textContent = text;
  pill.className = "pill " + (ok ? "ok" : "bad");
}
