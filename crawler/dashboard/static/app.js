// The dashboard's main page: the watchlist (live), the budget, the sources, the collections.
"use strict";

const rows = new Map();          // symbol -> {data, tr, cells, spark, sparkState}
let sortKey = "symbol", sortDir = 1;
let status = {}, budget = {}, errors = [], collections = [], progress = null;
const tbody = document.getElementById("rows");

function rowState(data) {
  if (data.pending) return "pending";
  if (data.stale) return "stale";
  if (data.market_open === false) return "closed";
  return "fresh";
}

function makeRow(data) {
  const symbol = data.symbol;
  const spark = svgEl("svg", { class: "spark", width: 80, height: 18 });
  const link = el("a", { class: "sym", href: "/symbol?s=" + encodeURIComponent(symbol), text: symbol });
  const remove = el("button", { class: "link remove", type: "button", title: "remove " + symbol, text: "×" });
  remove.addEventListener("click", () => removeSymbol(symbol));
  const cells = {
    spark: el("td", { class: "spark-col" }, spark),
    symbol: el("td", {}, link),
    price: el("td", { class: "num price" }),
    change: el("td", { class: "num" }),
    change_pct: el("td", { class: "num" }),
    age: el("td", { class: "num age" }),
    state: el("td", {}),
    source: el("td", { class: "source" }),
    market: el("td", { class: "market" }),
    remove: el("td", {}, remove),
  };
  const tr = el("tr", { "data-symbol": symbol }, ...Object.values(cells));
  const entry = { data, tr, cells, svg: spark, spark: [], sparkState: "none", flashTimer: 0 };
  rows.set(symbol, entry);
  fillRow(entry);
  sparkObserver.observe(tr);
  return entry;
}

function fillRow(entry) {
  const d = entry.data;
  const c = entry.cells;
  c.price.textContent = d.price === null || d.price === undefined ? "–" : fmtPrice(d.price) + (d.currency ? " " + d.currency : "");
  const dir = num(d.change) > 0 ? "up" : num(d.change) < 0 ? "down" : "";
  c.change.textContent = fmtSigned(d.change, Math.abs(num(d.change) || 0) < 1 ? 4 : 2);
  c.change.className = "num " + dir;
  c.change_pct.textContent = fmtSigned(d.change_pct, 2, "%");
  c.change_pct.className = "num " + dir;
  const state = rowState(d);
  c.state.replaceChildren(el("span", { class: "state state-" + state, text: state }));
  c.source.textContent = d.source || "–";
  c.market.textContent = (d.market || "") + (d.market_open === true ? " open" : d.market_open === false ? " closed" : "");
  entry.tr.dataset.price = d.price === null || d.price === undefined ? "" : String(d.price);
  entry.tr.dataset.state = state;
  entry.tr.dataset.source = d.source || "";
  fillAge(entry, Date.now());
}

function fillAge(entry, now) {
  const t = entry.data.t;
  entry.cells.age.textContent = t ? fmtAge(now - t) : "–";
}

function sortValue(entry) {
  const d = entry.data;
  switch (sortKey) {
    case "price": case "change": case "change_pct": return num(d[sortKey]);
    case "age": return d.t ? -d.t : null;
    case "state": return rowState(d);
    case "source": return d.source || null;
    case "market": return (d.market || "") + (d.market_open ? "1" : "0");
    default: return d.symbol;
  }
}

function sortRows() {
  const entries = [...rows.values()];
  entries.sort((a, b) => {
    const x = sortValue(a), y = sortValue(b);
    if (x === y) return a.data.symbol < b.data.symbol ? -1 : 1;
    if (x === null) return 1;
    if (y === null) return -1;
    return (x < y ? -1 : 1) * sortDir;
  });
  const fragment = document.createDocumentFragment();
  for (const entry of entries) fragment.append(entry.tr);
  tbody.append(fragment);
  for (const th of document.querySelectorAll("th.sortable")) {
    th.classList.toggle("sorted-asc", th.dataset.key === sortKey && sortDir === 1);
    th.classList.toggle("sorted-desc", th.dataset.key === sortKey && sortDir === -1);
  }
}

function applyFilter() {
  const text = document.getElementById("filter").value.trim().toLowerCase();
  const state = document.getElementById("state-filter").value;
  let shown = 0;
  for (const entry of rows.values()) {
    const d = entry.data;
    const hay = (d.symbol + " " + (d.source || "") + " " + (d.market || "") + " " + (d.asset_class || "")).toLowerCase();
    const visible = (!text || hay.includes(text)) && (!state || rowState(d) === state);
    entry.tr.hidden = !visible;
    if (visible) shown++;
  }
  document.getElementById("count").textContent =
    shown === rows.size ? rows.size + " symbols" : shown + " of " + rows.size + " symbols";
  document.getElementById("table").dataset.rows = String(rows.size);
}

function setAllRows(list) {
  const seen = new Set();
  for (const data of list) {
    seen.add(data.symbol);
    const entry = rows.get(data.symbol);
    if (entry) { entry.data = data; fillRow(entry); } else { makeRow(data); }
  }
  for (const [symbol, entry] of rows) {
    if (!seen.has(symbol)) { sparkObserver.unobserve(entry.tr); entry.tr.remove(); rows.delete(symbol); }
  }
  sortRows();
  applyFilter();
}

function updateRows(list) {
  for (const data of list) {
    const entry = rows.get(data.symbol);
    if (!entry) continue;
    const moved = data.t !== entry.data.t;
    entry.data = data;
    fillRow(entry);
    if (moved && entry.sparkState === "loaded") {
      const price = num(data.price);
      if (price !== null) {
        entry.spark.push(price);
        if (entry.spark.length > 40) entry.spark.shift();
        drawSpark(entry.svg, entry.spark);
      }
    }
    entry.tr.classList.add("flash");
    clearTimeout(entry.flashTimer);
    entry.flashTimer = setTimeout(() => entry.tr.classList.remove("flash"), 800);
  }
  const filtered = document.getElementById("state-filter").value;
  if (filtered) applyFilter();
}

// -- sparklines: read for the rows on screen only -------------------------------------------

const sparkQueue = new Set();
let sparkTimer = 0;
const sparkObserver = new IntersectionObserver((seen) => {
  for (const item of seen) {
    if (!item.isIntersecting) continue;
    const entry = rows.get(item.target.dataset.symbol);
    if (entry && entry.sparkState === "none") { entry.sparkState = "queued"; sparkQueue.add(entry.data.symbol); }
  }
  if (sparkQueue.size && !sparkTimer) sparkTimer = setTimeout(loadSparks, 50);
}, { rootMargin: "600px" });

async function loadSparks() {
  sparkTimer = 0;
  const wanted = [...sparkQueue].slice(0, 100);
  for (const symbol of wanted) sparkQueue.delete(symbol);
  document.body.dataset.sparksLoading = "1";
  try {
    const points = await getJSON("/api/sparks?symbols=" + wanted.map(encodeURIComponent).join(","));
    for (const symbol of wanted) {
      const entry = rows.get(symbol);
      if (!entry) continue;
      entry.spark = points[symbol] || [];
      entry.sparkState = "loaded";
      drawSpark(entry.svg, entry.spark);
    }
  } catch (e) {
    for (const symbol of wanted) { const entry = rows.get(symbol); if (entry) entry.sparkState = "none"; }
  }
  if (sparkQueue.size) sparkTimer = setTimeout(loadSparks, 50);
  else document.body.dataset.sparksLoading = "0";
}

// -- the cards ---------------------------------------------------------------------------------

function dl(pairs) {
  const list = el("dl", { class: "kv" });
  for (const [name, value, attrs] of pairs) {
    list.append(el("dt", { text: name }), el("dd", Object.assign({ text: value }, attrs || {})));
  }
  return list;
}

function gauge(fraction) {
  const svg = svgEl("svg", { viewBox: "0 0 300 10", width: "100%", height: 10, id: "budget-gauge", preserveAspectRatio: "none" });
  svg.append(svgEl("rect", { class: "gauge-bg", x: 0, y: 0, width: 300, height: 10, rx: 4 }));
  const f = Math.max(0, Math.min(1, fraction || 0));
  svg.append(svgEl("rect", { class: "gauge-fg" + (f > 0.9 ? " hot" : ""), x: 0, y: 0, width: (300 * f).toFixed(1), height: 10, rx: 4 }));
  return svg;
}

function paceChart(b) {
  // Bars: paid requests per hour. Lines: money spent so far, and the even pace to the budget.
  const hours = b.paid_by_hour || {};
  const keys = Object.keys(hours).sort();
  const w = 300, h = 90, left = 4, bottom = 14, top = 4;
  const svg = svgEl("svg", { viewBox: `0 0 ${w} ${h}`, width: "100%", id: "pace-chart" });
  if (!keys.length) return svg;
  const perHour = keys.map((k) => num(hours[k]) || 0);
  const maxBar = Math.max(1, ...perHour);
  const slot = (w - left * 2) / keys.length;
  const plotH = h - bottom - top;
  perHour.forEach((count, i) => {
    const barH = count / maxBar * plotH * 0.9;
    const bar = svgEl("rect", { class: "bar", x: (left + i * slot + 1).toFixed(1), y: (h - bottom - barH).toFixed(1), width: (slot - 2).toFixed(1), height: barH.toFixed(1) });
    bar.append(svgEl("title", { text: keys[i] + ":00 " + count + " paid requests" }));
    svg.append(bar);
  });
  const cost = num(b.requests_used) ? (num(b.spent_usd) || 0) / num(b.requests_used) : 0;
  const total = num(b.budget_usd) || 1;
  let cumulative = 0;
  const spent = [];
  const nowHour = new Date().getUTCHours();
  perHour.forEach((count, i) => {
    cumulative += count * cost;
    if (i <= nowHour || count) spent.push((left + (i + 1) * slot).toFixed(1) + "," + (h - bottom - Math.min(1, cumulative / total) * plotH).toFixed(1));
  });
  svg.append(svgEl("line", { class: "pace", x1: left, y1: h - bottom, x2: w - left, y2: top }));
  svg.append(svgEl("polyline", { class: "spent", points: (left + "," + (h - bottom) + " ") + spent.join(" ") }));
  svg.append(svgEl("line", { class: "axis", x1: left, y1: h - bottom, x2: w - left, y2: h - bottom }));
  for (const i of [0, 6, 12, 18]) svg.append(svgEl("text", { x: left + i * slot, y: h - 2, text: String(i).padStart(2, "0") + "h" }));
  svg.append(svgEl("text", { x: w - 70, y: 12, text: "max " + maxBar + "/h" }));
  return svg;
}

function reasonsTable(b) {
  // Spend by reason, when the daemon's budget report has it (paid_by_reason: requests per
  // reason); an older daemon's report has none, and the card says so.
  const key = "paid_by_reason" in b ? "paid_by_reason"
    : Object.keys(b).find((k) => /reason/i.test(k) && b[k] && typeof b[k] === "object");
  if (!key) return el("p", { class: "muted", id: "by-reason", text: "not reported by this daemon" });
  const value = b[key] || {};
  const cost = num(b.requests_used) ? (num(b.spent_usd) || 0) / num(b.requests_used) : null;
  const table = el("table", { id: "by-reason" });
  const entries = Array.isArray(value) ? value.map((item) => [item.reason || item.name || "?", item]) : Object.entries(value);
  entries.sort((x, y) => (num(y[1]) || 0) - (num(x[1]) || 0));
  for (const [reason, detail] of entries) {
    let text;
    if (detail && typeof detail === "object") {
      text = Object.entries(detail).filter(([k]) => k !== "reason" && k !== "name")
        .map(([k, v]) => (/usd|cost|spent/i.test(k) ? fmtUsd(v) : String(v)) + " " + k.replace(/_usd$/, "").replace(/_/g, " ")).join(", ");
    } else {
      const n = num(detail);
      text = n === null ? String(detail) : n + " requests" + (cost !== null ? " (" + fmtUsd(n * cost) + ")" : "");
    }
    table.append(el("tr", { "data-reason": reason, "data-requests": detail }, el("td", { text: reason }), el("td", { class: "num", text })));
  }
  if (!entries.length) table.append(el("tr", {}, el("td", { class: "muted", text: "no paid requests yet" })));
  return table;
}

function renderBudget() {
  const b = budget;
  const body = document.getElementById("budget-body");
  document.getElementById("budget-day").textContent = b.day ? b.day + " (" + (b.timezone || "UTC") + ")" : "";
  if (!b.day) { body.replaceChildren(el("p", { class: "muted", text: "no budget report yet" })); return; }
  const spent = num(b.spent_usd) || 0, total = num(b.budget_usd) || 0;
  const runOut = b.lasts_the_day ? "lasts the day" : b.runs_out_at ? "runs out at " + fmtTime(b.runs_out_at) : "–";
  const targets = el("table", { id: "targets" });
  const names = { cache_hit_rate_pct: "cache hit rate", yfinance_success_pct: "yfinance success", bright_data_share_pct: "Bright Data share" };
  for (const [key, t] of Object.entries(b.targets || {})) {
    const mark = t.met === true ? "✓" : t.met === false ? "✗" : "–";
    targets.append(el("tr", { "data-target": key },
      el("td", { text: names[key] || key }),
      el("td", { class: "num", text: t.value === null || t.value === undefined ? "–" : Number(t.value).toFixed(1) + "%" }),
      el("td", { text: t.target }),
      el("td", { class: t.met === true ? "met-yes" : t.met === false ? "met-no" : "muted", text: mark })));
  }
  const top = (b.top_symbols || []).slice(0, 5).map((s) => s.symbol + " " + s.requests).join(", ");
  body.replaceChildren(
    el("p", { class: "latest" },
      el("span", { id: "budget-spent", "data-spent": b.spent_usd, text: fmtUsd(spent) }),
      el("span", { class: "muted", text: " of " + fmtUsd(total) + " spent · " }),
      el("span", { id: "budget-left", "data-left": b.remaining_usd, text: fmtUsd(b.remaining_usd) + " left" })),
    gauge(total ? spent / total : 0),
    dl([
      ["requests", (b.requests_used ?? "–") + " of " + (b.requests_allowed ?? "–") + " paid", { id: "budget-requests" }],
      ["per collection", b.allowance_per_collection ?? "–"],
      ["run-out", runOut, { id: "budget-runout" }],
      ["paused until", b.paused_until ? fmtTime(b.paused_until) : "–"],
      ["pacing", b.pacing || "–"],
      ["top paid", top || "–"],
    ]),
    el("h3", { text: "paid requests per hour · spend against the even pace" }),
    paceChart(b),
    el("h3", { text: "spend by reason" }),
    reasonsTable(b),
    el("h3", { text: "the seed's targets" }),
    targets,
  );
}

function renderSources() {
  const s = status;
  const body = document.getElementById("sources-body");
  if (!s.daemon) { body.replaceChildren(el("p", { class: "muted", text: "no status yet" })); return; }
  const breakers = el("table", { id: "breakers" },
    el("tr", {}, el("th", { text: "source" }), el("th", { text: "breaker" }), el("th", { class: "num", text: "calls" }),
      el("th", { class: "num", text: "failures" }), el("th", { class: "num", text: "retry in" })));
  for (const [name, br] of Object.entries(s.breakers || {})) {
    breakers.append(el("tr", { "data-breaker": name },
      el("td", { text: name }),
      el("td", { class: "br-" + br.state, text: br.state }),
      el("td", { class: "num", text: br.total_calls ?? "–" }),
      el("td", { class: "num", text: (br.consecutive_failures ?? 0) + " in a row" }),
      el("td", { class: "num", text: br.state === "closed" ? "–" : Math.round(br.recovery_in_seconds || 0) + "s" })));
  }
  const hasKey = s.bright_data_key_set;
  const yahoo = s.yahoo || {};
  const throttle = yahoo.throttle || {};
  const stream = s.stream || {};
  const store = s.store || {};
  const nodes = el("table", { id: "nodes" });
  for (const node of store.nodes || []) {
    const last = node.last_collection || {};
    nodes.append(el("tr", {},
      el("td", { text: node.node + (node.node === store.node ? " (this)" : "") }),
      el("td", { text: node.host + " pid " + node.pid }),
      el("td", { text: last.started_at ? "collected " + fmtTime(last.started_at) + ", " + (last.quotes ?? 0) + " quotes" : "no collection yet" }),
      el("td", { class: "muted", text: node.beat_at ? "seen " + fmtAge(Date.now() - node.beat_at * 1000) + " ago" : "" })));
  }
  const recent = [];
  for (const [name, src] of Object.entries(s.sources || {})) if (src.last_error) recent.push({ what: name, detail: src.last_error });
  if (yahoo.last_error) recent.push({ what: "yahoo", detail: yahoo.last_error });
  if (stream.last_error) recent.push({ what: "stream", detail: stream.last_error });
  const list = el("ul", { class: "errors", id: "errors" });
  for (const item of [...errors, ...recent].slice(0, 30)) {
    list.append(el("li", {}, el("span", { class: "muted", text: item.at ? fmtTime(item.at) + " " : "" }),
      el("b", { text: item.what }), " " + (typeof item.detail === "string" ? item.detail : JSON.stringify(item.detail))));
  }
  if (!list.children.length) list.append(el("li", { class: "muted", text: "none" }));
  body.replaceChildren(
    breakers,
    el("h3", { text: "Bright Data" }),
    el("p", { id: "bright-data", text: hasKey ? "key set; " + (((s.sources || {}).bright_data || {}).total_requests ?? 0) + " requests since the daemon started" : hasKey === false ? "no key: yfinance serves quotes (free)" : "–" }),
    el("h3", { text: "Yahoo" }),
    dl([
      ["throttle", (throttle.max_requests_per_second ?? "–") + " req/s" + (throttle.throttled ? " · throttled" : ""), { id: "yahoo-throttle" }],
      ["429 pauses", (throttle.rate_limited_total ?? 0) + (throttle.last_rate_limited_at ? ", last " + fmtTime(throttle.last_rate_limited_at) + " (" + (throttle.last_pause_s ?? 0) + " s)" : ""), { id: "yahoo-429" }],
      ["paused for", (throttle.paused_for_s ?? 0) + " s"],
    ]),
    el("h3", { text: "price stream" }),
    dl([
      ["state", stream.state || "off", { id: "stream-state" }],
      ["subscribed", stream.subscribed ?? "–"],
      ["ticks", (stream.ticks ?? "–") + (stream.last_tick_at ? ", last " + fmtTime(stream.last_tick_at) : "")],
      ["reconnects", stream.disconnects ?? "–"],
    ]),
    el("h3", { text: "store: " + (store.backend || "?") + ((store.nodes || []).length > 1 ? " cluster, " + store.nodes.length + " nodes" : "") }),
    nodes,
    el("h3", { text: "recent errors" }),
    list,
  );
}

function renderCollections() {
  const box = document.getElementById("progress");
  if (progress && progress.total) {
    const f = Math.min(1, (progress.done || 0) / progress.total);
    const bar = svgEl("svg", { viewBox: "0 0 300 8", width: "100%", height: 8, preserveAspectRatio: "none" });
    bar.append(svgEl("rect", { class: "gauge-bg", x: 0, y: 0, width: 300, height: 8, rx: 4 }));
    bar.append(svgEl("rect", { class: "gauge-fg", x: 0, y: 0, width: (300 * f).toFixed(1), height: 8, rx: 4 }));
    box.replaceChildren(el("span", { id: "progress-text", text: "collecting: " + (progress.done || 0) + " of " + progress.total + (progress.symbol ? " (" + progress.symbol + ")" : "") }), bar);
    box.hidden = false;
  } else if (progress) {
    box.replaceChildren(el("span", { id: "progress-text", text: "collecting…" }));
    box.hidden = false;
  } else {
    box.hidden = true;
  }
  const table = el("table", { id: "collections-table" },
    el("tr", {}, ...["started", "took", "symbols", "quotes", "stale", "errors", "sources"].map((t) => el("th", { text: t }))));
  for (const c of collections.slice(0, 10)) {
    table.append(el("tr", {},
      el("td", { text: c.started_at ? new Date(c.started_at).toLocaleTimeString() : "–" }),
      el("td", { class: "num", text: c.duration_s === null || c.duration_s === undefined ? "–" : Number(c.duration_s).toFixed(1) + "s" }),
      el("td", { class: "num", text: c.symbols ?? "–" }),
      el("td", { class: "num", text: c.quotes ?? "–" }),
      el("td", { class: "num", text: c.stale ?? "–" }),
      el("td", { class: "num" + (c.errors ? " down" : ""), text: c.errors ?? "–" }),
      el("td", { text: Object.entries(c.sources || {}).map(([k, v]) => k + " " + v).join(", ") || "–" })));
  }
  const metrics = (status.scheduler || {}).collection_metrics || {};
  const jobs = ((status.scheduler || {}).scheduled_jobs || []).find((j) => j.id === "collection");
  document.getElementById("collections-body").replaceChildren(
    dl([
      ["total", (metrics.total_collections ?? "–") + " (" + (metrics.success_rate_pct ?? "–") + "% ok)"],
      ["next", jobs && jobs.next_run ? fmtTime(jobs.next_run) : "not scheduled"],
    ]),
    collections.length ? table : el("p", { class: "muted", text: "no collection yet" }));
}

function renderHeader() {
  const d = status.daemon || {};
  document.getElementById("daemon").textContent = d.pid ? "daemon pid " + d.pid + " · up " + fmtAge((d.uptime_s || 0) * 1000) + " · v" + d.version : "";
}

function showBanner(text) {
  const banner = document.getElementById("banner");
  banner.textContent = text || "";
  banner.hidden = !text;
}

function applyBatch(batch) {
  if (batch.all_rows) setAllRows(batch.all_rows);
  if (batch.rows) updateRows(batch.rows);
  if (batch.status) { status = batch.status; renderSources(); renderCollections(); renderHeader(); }
  if (batch.budget) { budget = batch.budget; renderBudget(); }
  if (batch.budget_tick && budget.day) {
    Object.assign(budget, batch.budget_tick);
    const spent = document.getElementById("budget-spent");
    if (spent) { spent.textContent = fmtUsd(budget.spent_usd); spent.dataset.spent = budget.spent_usd; }
  }
  if ("errors" in batch) { errors = batch.errors; renderSources(); }
  if ("collections" in batch) { collections = batch.collections; renderCollections(); }
  if ("progress" in batch) { progress = batch.progress; renderCollections(); }
  if ("daemon_up" in batch) showBanner(batch.daemon_up ? "" : "the daemon is not answering: start it with `crawler start`");
}

async function loadSnapshot() {
  const snap = await getJSON("/api/snapshot");
  status = snap.status || {}; budget = snap.budget || {}; errors = snap.errors || [];
  collections = snap.collections || []; progress = snap.progress;
  setAllRows(snap.rows || []);
  renderBudget(); renderSources(); renderCollections(); renderHeader();
  showBanner(snap.daemon_up ? "" : "the daemon is not answering: start it with `crawler start`");
  if (!document.body.dataset.ready) {
    // Since the navigation began: the table built, then painted (the benchmark reads both).
    document.body.dataset.readyMs = String(Math.round(performance.now()));
    requestAnimationFrame(() => setTimeout(() => {
      document.body.dataset.paintedMs = String(Math.round(performance.now()));
    }, 0));
  }
  document.body.dataset.ready = "1";
}

// -- actions -----------------------------------------------------------------------------------

function say(text, bad) {
  const msg = document.getElementById("action-msg");
  msg.textContent = text;
  msg.className = bad ? "down" : "muted";
}

async function removeSymbol(symbol) {
  try { await postJSON("/api/symbols/remove", { symbol }); say("removed " + symbol); }
  catch (e) { say(symbol + ": " + e.message, true); }
}

document.getElementById("add-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const input = document.getElementById("add-symbol");
  const symbol = input.value.trim();
  if (!symbol) return;
  try {
    const answer = await postJSON("/api/symbols", { symbol });
    say((answer && answer.added === false ? "already tracked: " : "added ") + ((answer && answer.symbol) || symbol));
    input.value = "";
  } catch (e) { say(e.message, true); }
});

document.getElementById("collect").addEventListener("click", async () => {
  try { await postJSON("/api/collect", {}); say("collection started"); }
  catch (e) { say(e.message, true); }
});

for (const th of document.querySelectorAll("th.sortable")) {
  th.addEventListener("click", () => {
    if (sortKey === th.dataset.key) sortDir = -sortDir; else { sortKey = th.dataset.key; sortDir = 1; }
    sortRows();
  });
}
document.getElementById("filter").addEventListener("input", applyFilter);
document.getElementById("state-filter").addEventListener("change", applyFilter);

setInterval(() => {
  const now = Date.now();
  for (const entry of rows.values()) if (!entry.tr.hidden) fillAge(entry, now);
}, 1000);

loadSnapshot().catch((e) => showBanner("cannot load the dashboard: " + e.message));
connectEvents(applyBatch, (ok, reconnected) => {
  setConn(ok, ok ? "live" : "reconnecting…");
  if (ok && reconnected) loadSnapshot().catch(() => {});
});
