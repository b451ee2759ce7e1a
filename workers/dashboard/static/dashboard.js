// posguard dashboard: asks /api/state (and /api/position for the selected position)
// every refresh and redraws; no reload, no framework, nothing loaded from elsewhere.
// Prices and amounts arrive as exact decimal strings and are shown as they are; only
// the chart gets numbers (the API sends them as such, for the chart alone).
"use strict";

const posguard = {
  state: null,      // the last /api/state answer
  detail: null,     // the last /api/position answer of the selected position
  selected: null,   // the selected position id
  chart: null,
  series: {},
  follow: true,     // the chart shows all its data at each refresh, until the user
                    // scrolls or zooms it (a double-click follows again)
  refreshMs: 1000,
};
window.posguard = posguard;

const $ = (sel) => document.querySelector(sel);

function el(tag, text, cls) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (cls) node.className = cls;
  return node;
}

function cell(text, cls, field) {
  const td = el("td", text === null || text === undefined ? "—" : text, cls);
  if (field) td.dataset.field = field;
  return td;
}

function signClass(value) {
  if (value === null || value === undefined) return "";
  if (value.startsWith("-")) return "neg";
  return /^0(\.0*)?$/.test(value) ? "" : "pos";
}

function time(iso) {
  return iso ? iso.replace("T", " ").replace(/\.\d+/, "").replace(/(Z|\+00:00)$/, "") : "—";
}

function age(seconds) {
  if (seconds === null || seconds === undefined) return "—";
  const s = Math.max(0, seconds);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, "0")}s`;
  if (s < 86400) return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, "0")}m`;
  return `${Math.floor(s / 86400)}d${Math.floor((s % 86400) / 3600)}h`;
}

function isZero(value) {
  return value === null || value === undefined || /^-?0(\.0*)?$/.test(value);
}

function protection(p) {
  if (isZero(p.quantity)) return { text: "nothing held", cls: "muted" };
  if (!p.protected) return { text: "UNPROTECTED", cls: "unprotected" };
  if (p.stop !== null && p.stop_confirmed_age_s !== null) {
    return { text: `stop confirmed ${age(p.stop_confirmed_age_s)} ago`, cls: "protected" };
  }
  if (p.emergency_stop !== null) return { text: `emergency stop only (${p.emergency_stop})`, cls: "warning" };
  return { text: "protected", cls: "protected" };
}

function summarise(payload) {
  return Object.entries(payload || {})
    .filter(([, v]) => v !== null && v !== "" && !(Array.isArray(v) && v.length === 0))
    .map(([k, v]) => `${k}=${typeof v === "object" ? JSON.stringify(v) : v}`)
    .join("  ");
}

function fill(tbody, rows) {
  tbody.replaceChildren(...rows);
}

// --- the account --------------------------------------------------------------------

function renderOpen(state) {
  const rows = state.open.map((p) => {
    const tr = el("tr");
    tr.dataset.positionId = p.position_id;
    tr.dataset.symbol = p.symbol;
    if (p.position_id === posguard.selected) tr.classList.add("selected");
    const prot = protection(p);
    const distance = p.stop_distance_pct === null ? null : `${p.stop_distance_pct}%`;
    tr.append(
      cell(p.account, "", "account"),
      cell(p.symbol, "", "symbol"),
      cell(p.side, p.side, "side"),
      cell(p.warning ? `${p.state} ⚠` : p.state, p.warning ? "warning" : "", "state"),
      cell(p.quantity, "num", "quantity"),
      cell(p.entry, "num", "entry"),
      cell(p.mark, "num", "mark"),
      cell(p.stop, "num", "stop"),
      cell(distance, "num", "distance"),
      cell(p.unrealised_pnl, `num ${signClass(p.unrealised_pnl)}`, "unrealised"),
      cell(prot.text, prot.cls, "protection"),
      cell(p.realised_pnl, `num ${signClass(p.realised_pnl)}`, "realised"),
      cell(p.trailing, "", "trailing"),
      cell(p.short_id, "muted", "position"),
    );
    if (p.warning) tr.title = p.warning;
    tr.addEventListener("click", () => select(p.position_id));
    return tr;
  });
  fill($("#open-table tbody"), rows);
  $("#open-empty").hidden = rows.length > 0;
  $("#open-count").textContent = `(${rows.length})`;
}

function renderClosed(state) {
  fill($("#closed-table tbody"), state.closed.map((p) => {
    const tr = el("tr");
    tr.dataset.positionId = p.position_id;
    tr.dataset.symbol = p.symbol;
    if (p.position_id === posguard.selected) tr.classList.add("selected");
    tr.append(
      cell(time(p.closed_at), "", "closed_at"),
      cell(p.account, "", "account"),
      cell(p.symbol, "", "symbol"),
      cell(p.side, p.side, "side"),
      cell(p.status, "", "status"),
      cell(p.quantity, "num", "quantity"),
      cell(p.entry, "num", "entry"),
      cell(p.exit, "num", "exit"),
      cell(p.realised_pnl, `num ${signClass(p.realised_pnl)}`, "realised"),
      cell(p.fees, "num", "fees"),
      cell(p.funding, `num ${signClass(p.funding)}`, "funding"),
      cell(p.net_pnl, `num ${signClass(p.net_pnl)}`, "net"),
      cell(p.reason, "", "reason"),
      cell(p.short_id, "muted", "position"),
    );
    tr.addEventListener("click", () => select(p.position_id));
    return tr;
  }));
}

function renderAlerts(state) {
  fill($("#alerts-table tbody"), state.alerts.map((a) => {
    const tr = el("tr");
    tr.append(
      cell(time(a.created_at)),
      cell(a.resolution ? "resolved" : a.severity, `sev-${a.severity}`),
      cell(a.title),
      cell(a.body, "wrap"),
    );
    if (a.position_id) tr.addEventListener("click", () => select(a.position_id));
    return tr;
  }));
}

function renderFindings(state) {
  fill($("#findings-table tbody"), state.findings.map((f) => {
    const tr = el("tr");
    tr.append(
      cell(time(f.occurred_at)),
      cell(f.severity, `sev-${f.severity}`),
      cell(f.type),
      cell(f.account),
      cell(f.symbol),
      cell(summarise(f.detail), "wrap"),
    );
    return tr;
  }));
}

function renderWaves(state) {
  fill($("#waves-table tbody"), state.waves.map((w) => {
    const tr = el("tr");
    tr.append(
      cell(time(w.period_start)),
      cell(w.account),
      cell(w.status),
      cell(w.signals_received, "num"),
      cell(w.signals_selected, "num"),
      cell(w.positions_started, "num"),
      cell(w.duration_ms === null ? null : `${w.duration_ms} ms`, "num"),
    );
    return tr;
  }));
}

function renderBanners(state) {
  const bad = state.open.filter((p) => !isZero(p.quantity) && !p.protected);
  const banner = $("#unprotected");
  banner.hidden = bad.length === 0;
  banner.textContent = bad.length
    ? "UNPROTECTED: " + bad.map((p) => `${p.side} ${p.quantity} ${p.symbol} (${p.account}, ${p.state})`).join(", ")
    : "";
  const notes = [...state.errors];
  for (const p of state.open) if (p.warning) notes.push(`${p.symbol} ${p.side} (${p.account}): ${p.warning}`);
  const errors = $("#errors");
  errors.hidden = notes.length === 0;
  errors.textContent = notes.join(" · ");
}

function renderState(state) {
  posguard.state = state;
  posguard.refreshMs = state.refresh_ms || 1000;
  $("#accounts").textContent = `accounts: ${state.accounts.join(", ")}`;
  $("#updated").textContent = `updated ${time(state.generated_at)} UTC`;
  renderBanners(state);
  renderOpen(state);
  renderClosed(state);
  renderAlerts(state);
  renderFindings(state);
  renderWaves(state);
}

// --- one position ---------------------------------------------------------------------

function decimals(values) {
  let most = 2;
  for (const v of values) {
    if (typeof v !== "string") continue;
    const dot = v.indexOf(".");
    if (dot >= 0) most = Math.max(most, v.length - dot - 1);
  }
  return Math.min(most, 8);
}

function ensureChart() {
  if (posguard.chart || !window.LightweightCharts) return posguard.chart;
  const LC = window.LightweightCharts;
  const chart = LC.createChart($("#chart"), {
    autoSize: true,
    layout: { background: { type: "solid", color: "#181c22" }, textColor: "#d8dde3", attributionLogo: true },
    grid: { vertLines: { color: "#2a3038" }, horzLines: { color: "#2a3038" } },
    timeScale: { timeVisible: true, secondsVisible: true },
  });
  posguard.series = {
    mark: chart.addSeries(LC.LineSeries, { color: "#58a6ff", lineWidth: 2, title: "mark" }),
    stop: chart.addSeries(LC.LineSeries, {
      color: "#f85149", lineWidth: 2, lineType: LC.LineType.WithSteps, title: "stop",
    }),
    entry: chart.addSeries(LC.LineSeries, {
      color: "#c9d1d9", lineWidth: 1, lineStyle: LC.LineStyle.Dashed,
      lineType: LC.LineType.WithSteps, title: "entry",
    }),
  };
  const box = $("#chart");
  for (const kind of ["wheel", "mousedown", "touchstart"]) {
    box.addEventListener(kind, () => { posguard.follow = false; }, { passive: true });
  }
  box.addEventListener("dblclick", () => { posguard.follow = true; chart.timeScale().fitContent(); });
  posguard.chart = chart;
  return chart;
}

function points(list) {
  return list.map((p) => (p.value === null ? { time: p.time } : { time: p.time, value: p.value }));
}

function renderChart(detail) {
  if (!ensureChart()) return;
  const p = detail.open || detail.closed || {};
  const precision = decimals([
    ...detail.chart.stop_levels.map((l) => l.value), p.mark, p.entry, p.stop, p.exit,
  ]);
  const format = { type: "price", precision, minMove: Math.pow(10, -precision) };
  for (const name of ["mark", "stop", "entry"]) {
    posguard.series[name].applyOptions({ priceFormat: format });
    posguard.series[name].setData(points(detail.chart[name]));
  }
  // Fitted at each refresh: a level set before the visible range would otherwise
  // fall out of the price scale, which only fits what is in view.
  if (posguard.follow) posguard.chart.timeScale().fitContent();
}

function renderSummary(detail) {
  const box = $("#detail-summary");
  const pairs = [];
  const o = detail.open;
  const c = detail.closed;
  if (o) {
    const prot = protection(o);
    pairs.push(["state", o.state], ["entry", o.entry], ["mark", o.mark], ["stop", o.stop],
      ["to stop", o.stop_distance_pct === null ? null : `${o.stop_distance_pct}%`],
      ["unrealised", o.unrealised_pnl], ["realised", o.realised_pnl], ["fees", o.fees],
      ["protection", prot.text], ["trailing", o.trailing], ["take-profit", o.take_profit],
      ["opened", time(o.opened_at)]);
    if (o.mark_error) pairs.push(["mark", o.mark_error]);
    if (o.warning) pairs.push(["warning", o.warning]);
  } else if (c) {
    pairs.push(["status", c.status], ["reason", c.reason], ["entry", c.entry], ["exit", c.exit],
      ["realised", c.realised_pnl], ["fees", c.fees], ["funding", c.funding],
      ["net", c.net_pnl],
      ["opened", time(c.opened_at)], ["closed", time(c.closed_at)]);
  }
  box.replaceChildren(...pairs.map(([k, v]) => {
    const span = el("span");
    span.dataset.field = k;
    span.append(el("b", `${k} `), el("span", v === null || v === undefined ? "—" : v));
    return span;
  }));
}

function renderTimeline(detail) {
  fill($("#timeline tbody"), detail.events.map((e) => {
    const tr = el("tr");
    tr.dataset.type = e.type;
    tr.append(
      cell(time(e.occurred_at)),
      cell(e.severity, `sev-${e.severity}`),
      cell(e.type, "", "type"),
      cell([summarise(e.payload), e.error_message].filter(Boolean).join("  "), "wrap"),
    );
    return tr;
  }));
}

function renderDetail(detail) {
  posguard.detail = detail;
  const p = detail.open || detail.closed;
  $("#detail").hidden = false;
  $("#detail-title").textContent = p
    ? `${p.side} ${p.quantity} ${p.symbol} · ${p.account} · ${p.short_id}`
    : detail.position_id;
  $("#detail-ui").href = detail.ui_url;
  $("#mark-note").textContent = detail.mark_note;
  $("#actions").hidden = !(posguard.state && posguard.state.actions && detail.open);
  renderSummary(detail);
  renderChart(detail);
  renderTimeline(detail);
}

function select(positionId) {
  if (positionId === posguard.selected) return;
  posguard.selected = positionId;
  posguard.detail = null;
  posguard.follow = true;
  history.replaceState(null, "", `#position=${encodeURIComponent(positionId)}`);
  if (posguard.state) renderState(posguard.state);
  refreshDetail();
}

// --- actions (shown only when the dashboard allows them) ---------------------------------

async function act(path, body) {
  const token = $("#token").value.trim();
  sessionStorage.setItem("posguard-token", token);
  $("#action-result").textContent = "sending…";
  try {
    const resp = await fetch(path, {
      method: "POST",
      headers: { "Content-Type": "application/json", "Authorization": `Bearer ${token}` },
      body: JSON.stringify(body),
    });
    const answer = await resp.json();
    $("#action-result").textContent = resp.ok ? `done: ${summarise(answer)}` : `refused: ${answer.error}`;
  } catch (err) {
    $("#action-result").textContent = `failed: ${err}`;
  }
}

function setUpActions() {
  $("#token").value = sessionStorage.getItem("posguard-token") || "";
  $("#close-button").addEventListener("click", () => {
    const p = posguard.detail && posguard.detail.open;
    if (p && confirm(`Close ${p.side} ${p.quantity} ${p.symbol} (${p.account}) at market?`)) {
      act("/api/actions/close", { position_id: p.position_id });
    }
  });
  $("#trail-button").addEventListener("click", () => {
    const p = posguard.detail && posguard.detail.open;
    if (p) act("/api/actions/trail", { position_id: p.position_id, callback_pct: $("#trail-pct").value.trim() });
  });
}

// --- the refresh loop -------------------------------------------------------------------------

async function getJson(path) {
  const resp = await fetch(path, { cache: "no-store" });
  if (!resp.ok) throw new Error(`${path}: HTTP ${resp.status}`);
  return resp.json();
}

async function refreshDetail() {
  const id = posguard.selected;
  if (!id) return;
  try {
    const detail = await getJson(`/api/position?id=${encodeURIComponent(id)}`);
    if (id === posguard.selected) renderDetail(detail);
  } catch (err) {
    console.warn(err);
  }
}

async function refresh() {
  try {
    renderState(await getJson("/api/state"));
    $("#live").classList.remove("stale");
    await refreshDetail();
  } catch (err) {
    $("#live").classList.add("stale");
    $("#updated").textContent = `not updated: ${err.message}`;
  }
  setTimeout(refresh, posguard.refreshMs);
}

function start() {
  const hash = new URLSearchParams(location.hash.slice(1));
  if (hash.get("position")) posguard.selected = hash.get("position");
  setUpActions();
  refresh();
}

document.addEventListener("DOMContentLoaded", start);
