"use strict";
// The analytics page: GET /api/analytics for a date range and agent (kept in the URL), drawn as
// tiles, tables and inline SVG charts (no chart library, no build step). Uses app.js's helpers.

const SVG = "http://www.w3.org/2000/svg";
const PALETTE = ["#2f6fed", "#0f7b5f", "#b4571e", "#7a3fc4", "#b42318", "#5c6b7a", "#c29d0b", "#2a9bb0"];

function svg(tag, attrs, ...children) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
  for (const c of children) if (c !== null && c !== undefined) node.append(c);
  return node;
}

function swatch(color) {
  return svg("svg", { class: "swatch", viewBox: "0 0 10 10", width: 10, height: 10 }, svg("rect", { width: 10, height: 10, rx: 2, fill: color }));
}

// A bar chart of `bars` ({label, title, segments: [{key, value}]}), stacked by key, scaled to
// the largest bar; every rect names its bar and key in data attributes and a tooltip.
function barChart(bars, colorOf, format) {
  const width = 720;
  const height = 220;
  const pad = { left: 44, right: 8, top: 10, bottom: 28 };
  const max = Math.max(0, ...bars.map((b) => b.segments.reduce((a, s) => a + s.value, 0)));
  const plotW = width - pad.left - pad.right;
  const plotH = height - pad.top - pad.bottom;
  const step = bars.length ? plotW / bars.length : plotW;
  const barW = Math.max(1, step * 0.7);
  const root = svg("svg", { viewBox: `0 0 ${width} ${height}`, role: "img", preserveAspectRatio: "xMidYMid meet" });
  root.append(svg("line", { x1: pad.left, x2: width - pad.right, y1: pad.top + plotH, y2: pad.top + plotH, stroke: "#e3e6ec" }));
  root.append(svg("text", { x: pad.left - 6, y: pad.top + 8, "text-anchor": "end" }, format(max)));
  root.append(svg("text", { x: pad.left - 6, y: pad.top + plotH, "text-anchor": "end" }, format(0)));
  const labelEvery = Math.max(1, Math.ceil(bars.length / 12));
  bars.forEach((b, i) => {
    const x = pad.left + i * step + (step - barW) / 2;
    let y = pad.top + plotH;
    const group = svg("g", { class: "bar", "data-label": b.label, "data-total": b.segments.reduce((a, s) => a + s.value, 0) });
    for (const s of b.segments) {
      if (!s.value) continue;
      const h = max ? (s.value / max) * plotH : 0;
      y -= h;
      group.append(svg("rect", { x, y, width: barW, height: h, fill: colorOf(s.key), "data-key": s.key, "data-value": s.value },
        svg("title", {}, `${b.title || b.label}${s.key ? ` · ${s.key}` : ""}: ${format(s.value)}`)));
    }
    root.append(group);
    if (i % labelEvery === 0) root.append(svg("text", { x: x + barW / 2, y: height - 10, "text-anchor": "middle" }, b.label));
  });
  return root;
}

// Rows of label, count and a proportional bar.
function barTable(table, rows) {
  const max = Math.max(1, ...rows.map((r) => r.count));
  table.replaceChildren();
  if (!rows.length) { table.append(el("tr", {}, el("td", { class: "muted" }, "None."))); return; }
  for (const r of rows) {
    const bar = svg("svg", { viewBox: "0 0 100 10", preserveAspectRatio: "none" },
      svg("rect", { width: (r.count / max) * 100, height: 10, rx: 2, fill: "#2f6fed" }));
    table.append(el("tr", { "data-value": r.key === null ? "" : r.key }, el("td", {}, r.label), el("td", { class: "num" }, String(r.count)), el("td", { class: "bar" }, bar)));
  }
}

const fmtUsd = (v) => (v === null || v === undefined ? "—" : `$${v < 10 ? v.toFixed(4) : v.toFixed(2)}`);
const fmtPct = (v) => `${(v * 100).toFixed(1)}%`;
const fmtCount = (v) => String(Math.round(v));

function tile(label, value, key) {
  return el("div", { class: "tile", "data-tile": key }, el("div", { class: "value" }, value), el("div", { class: "label" }, label));
}

// Every day of the range with its calls (days without calls are drawn empty).
function daysOf(overview) {
  const days = [...new Set([...overview.per_day.map((d) => d.day), ...overview.cost_per_day.map((d) => d.day)])].sort();
  if (!days.length) return days;
  const first = overview.since ? overview.since.slice(0, 10) : days[0];
  const last = overview.until ? new Date(Date.parse(overview.until) - 1).toISOString().slice(0, 10) : days[days.length - 1];
  const out = [];
  for (let t = Date.parse(`${first}T00:00:00Z`); t <= Date.parse(`${last}T00:00:00Z`) && out.length < 400; t += 86400000) out.push(new Date(t).toISOString().slice(0, 10));
  return out.length ? out : days;
}

function render(o) {
  const t = o.totals;
  const response = o.turn_latency_ms.find((l) => l.kind === "response");
  $("tiles").replaceChildren(
    tile("Calls", String(t.calls), "calls"), tile("Answered", String(t.answered), "answered"),
    tile("Rejected (no worker free)", String(t.rejected), "rejected"), tile("Busy (callee's line)", String(t.busy), "busy"),
    tile("Duration p50 / p90", `${fmtMs(o.duration_ms.p50)} / ${fmtMs(o.duration_ms.p90)}`, "duration"),
    tile("Response latency p50 / p90 / p99", response ? `${fmtMs(response.p50)} / ${fmtMs(response.p90)} / ${fmtMs(response.p99)}` : "—", "latency"),
    tile("Interruptions per call", o.interruptions.per_call === null ? "—" : o.interruptions.per_call.toFixed(2), "interruptions"),
    tile("Cost", fmtUsd(o.cost.total_usd), "cost"),
    tile("Cost per call-minute", fmtUsd(o.cost.per_call_minute_usd), "cost-per-minute"));

  // Calls per day, stacked by agent.
  const agents = [...new Set(o.per_day.map((d) => d.agent_id || "(no agent)"))].sort();
  const colorOf = (key) => PALETTE[Math.max(0, agents.indexOf(key)) % PALETTE.length];
  const days = daysOf(o);
  $("per-day").replaceChildren(barChart(days.map((day) => ({
    label: day.slice(5), title: day,
    segments: agents.map((a) => ({ key: a, value: o.per_day.filter((d) => d.day === day && (d.agent_id || "(no agent)") === a).reduce((n, d) => n + d.calls, 0) })),
  })), colorOf, fmtCount));
  $("per-day-legend").replaceChildren(...agents.map((a) => el("span", {}, swatch(colorOf(a)), a)));

  // Calls by hour of the day, stacked by direction.
  const directions = [...new Set(o.per_hour.map((h) => h.direction || "unknown"))].sort();
  const dirColor = (key) => PALETTE[(directions.indexOf(key) + 3) % PALETTE.length];
  $("per-hour").replaceChildren(barChart([...Array(24).keys()].map((hour) => ({
    label: String(hour).padStart(2, "0"), title: `${String(hour).padStart(2, "0")}:00 UTC`,
    segments: directions.map((d) => ({ key: d, value: o.per_hour.filter((h) => h.hour === hour && (h.direction || "unknown") === d).reduce((n, h) => n + h.calls, 0) })),
  })), dirColor, fmtCount));

  const byDirection = new Map();
  for (const d of o.per_day) byDirection.set(d.direction, (byDirection.get(d.direction) || 0) + d.calls);
  barTable($("directions"), [...byDirection].map(([k, n]) => ({ key: k, label: word("direction", k) || "Unknown (rejected or unanswered)", count: n })));
  barTable($("outcomes"), o.outcomes.map((c) => ({ key: c.value, label: c.value || "No outcome set", count: c.calls })));
  barTable($("end-reasons"), o.end_reasons.map((c) => ({ key: c.value, label: word("end_reason", c.value) || "Not ended yet", count: c.calls })));
  barTable($("rejected"), o.rejected_reasons.map((c) => ({ key: c.value, label: word("rejected_reason", c.value), count: c.calls })));

  const num = (label, text) => el("td", { class: "num", "data-label": label }, text);
  $("latency").replaceChildren(...o.turn_latency_ms.map((l) => el("tr", { "data-kind": l.kind }, el("td", { "data-label": "Turn" }, humanize(l.kind)),
    num("Turns", String(l.turns)), num("p50", fmtMs(l.p50)), num("p90", fmtMs(l.p90)), num("p99", fmtMs(l.p99)))));
  $("tools").replaceChildren(...(o.tools.length ? o.tools.map((x) => el("tr", { "data-tool": x.name }, el("td", { "data-label": "Tool" }, x.name),
    num("Calls", String(x.calls)), num("Errors", String(x.errors)), num("Error rate", fmtPct(x.error_rate)),
    num("p50", fmtMs(x.latency_p50_ms)))) : [el("tr", {}, el("td", { class: "muted" }, "No tool calls."))]));

  $("cost-per-day").replaceChildren(barChart(days.map((day) => {
    const d = o.cost_per_day.find((c) => c.day === day);
    return { label: day.slice(5), title: day, segments: [{ key: "model", value: d ? d.model_usd : 0 }, { key: "twilio", value: d && d.twilio_usd ? d.twilio_usd : 0 }] };
  }), (k) => (k === "model" ? PALETTE[0] : PALETTE[2]), fmtUsd));
  $("cost-note").textContent = `Model ${fmtUsd(o.cost.model_usd)} · Twilio ${o.cost.twilio_minutes} min${o.cost.twilio_usd === null ? " (not priced: set twilio_per_minute in PRICES_FILE)" : ` ${fmtUsd(o.cost.twilio_usd)}`} · ${o.cost.call_minutes.toFixed(1)} call-minutes.`;
}

async function analyticsPage() {
  // The scope lives in the URL (the form is a plain GET of this page).
  const params = new URLSearchParams(location.search);
  const scope = { since: params.get("since") || "", until: params.get("until") || "", agent: params.get("agent") || "" };
  if (!scope.since && !scope.until) {
    // The last 30 days by default.
    const today = new Date();
    scope.until = today.toISOString().slice(0, 10);
    scope.since = new Date(today.getTime() - 29 * 86400000).toISOString().slice(0, 10);
  }
  $("since").value = scope.since;
  $("until").value = scope.until;
  pickList($("agent"), [], scope.agent);
  api("/api/facets").then((f) => pickList($("agent"), f.agents, scope.agent), () => {});
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(scope)) if (v) q.set(k, v);
  // The export takes the list's filters: the same range (whole UTC days) and agent.
  const exportQ = new URLSearchParams();
  if (scope.agent) exportQ.set("agent", scope.agent);
  if (/^\d{4}-\d{2}-\d{2}$/.test(scope.since)) exportQ.set("since", `${scope.since}T00:00:00Z`);
  if (/^\d{4}-\d{2}-\d{2}$/.test(scope.until)) exportQ.set("until", new Date(Date.parse(`${scope.until}T00:00:00Z`) + 86400000).toISOString());
  $("export").href = `/api/sessions.csv?${exportQ}`;
  const err = $("analytics-error");
  try {
    const o = await api(`/api/analytics?${q}`);
    err.hidden = true;
    render(o);
    $("overview").hidden = false;
  } catch (e) {
    $("overview").hidden = true;
    err.textContent = e.message;
    err.hidden = false;
  }
}

if (document.body.dataset.page === "analytics") analyticsPage();
