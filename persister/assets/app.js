"use strict";
// The Switchboard console: the calls list, one call's timeline, and calls in progress.
// Reads the JSON API (the session cookie authenticates it) and /api/live (Server-Sent Events).

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") node.className = v; else node.setAttribute(k, v);
  }
  for (const c of children) if (c !== null && c !== undefined) node.append(c);
  return node;
}
const who = { user: "Caller", assistant: "Agent", system: "System" };
const fmtTime = (t) => (t ? new Date(t).toLocaleString() : "—");
const fmtMs = (ms) => (ms === null || ms === undefined ? "—" : ms < 1000 ? `${ms} ms` : `${(ms / 1000).toFixed(1)} s`);
const fmtOffset = (ms) => { const s = Math.floor(ms / 1000); return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`; };
const fmtCost = (c) => (c === null || c === undefined ? "—" : `$${c.toFixed(4)}`);
const pretty = (v) => (typeof v === "string" ? v : JSON.stringify(v, null, 2));

async function api(path) {
  const r = await fetch(path, { credentials: "same-origin" });
  if (r.status === 401) { location.href = "/login"; throw new Error("signed out"); }
  const body = await r.json();
  if (!r.ok) throw new Error(body.error || `HTTP ${r.status}`);
  return body;
}

function line(role, text, offsetMs, interrupted, heardMs) {
  return el("li", { class: `line ${role}` },
    el("span", { class: "who" }, who[role] || role),
    offsetMs !== undefined ? el("span", { class: "when" }, fmtOffset(offsetMs)) : null,
    interrupted ? el("span", { class: "interrupted" }, `interrupted after ${fmtMs(heardMs)}`) : null,
    el("div", { class: "text" }, text));
}

// ---- calls list and live calls ----
let cursor = null;
async function loadList(reset) {
  const form = new FormData(document.getElementById("filters"));
  const q = new URLSearchParams();
  for (const key of ["agent", "outcome", "from"]) if (form.get(key)) q.set(key, form.get(key));
  for (const key of ["since", "until"]) if (form.get(key)) q.set(key, new Date(form.get(key)).toISOString());
  if (!reset && cursor) q.set("cursor", cursor);
  const err = document.getElementById("list-error");
  err.hidden = true;
  try {
    const page = await api(`/api/sessions?${q}`);
    const rows = document.getElementById("rows");
    if (reset) rows.replaceChildren();
    for (const s of page.sessions) {
      const link = el("a", { href: `/sessions/${encodeURIComponent(s.call_sid)}` }, fmtTime(s.started_at || s.ended_at));
      rows.append(el("tr", { "data-call-sid": s.call_sid },
        el("td", {}, link), el("td", {}, s.from || "—"), el("td", {}, s.direction || "—"), el("td", {}, s.agent_id || "—"),
        el("td", {}, s.outcome ? el("span", { class: "pill" }, s.outcome) : (s.rejected_reason ? `rejected: ${s.rejected_reason}` : "—")),
        el("td", {}, s.end_reason || (s.ended_at ? "ended" : "in progress")),
        el("td", { class: "num" }, fmtMs(s.duration_ms)), el("td", { class: "num" }, fmtCost(s.cost_usd))));
    }
    cursor = page.next_cursor;
    document.getElementById("more").hidden = !cursor;
  } catch (e) { err.textContent = e.message; err.hidden = false; }
}

function startLive(onEvent) {
  const dot = document.getElementById("live-dot");
  const source = new EventSource("/api/live");
  source.onopen = () => dot && dot.classList.add("on");
  source.onerror = () => dot && dot.classList.remove("on");
  source.onmessage = (m) => { try { onEvent(JSON.parse(m.data)); } catch (_) { /* not an event */ } };
}

function sessionsPage() {
  document.getElementById("filters").addEventListener("submit", (e) => { e.preventDefault(); loadList(true); });
  document.getElementById("more").addEventListener("click", () => loadList(false));
  loadList(true);
  const live = document.getElementById("live");
  const empty = document.getElementById("live-empty");
  const cards = new Map();
  const card = (ev) => {
    let c = cards.get(ev.call_sid);
    if (!c) {
      const title = el("div", {}, el("a", { href: `/sessions/${encodeURIComponent(ev.call_sid)}` }, ev.call_sid));
      c = el("div", { class: "live-call", "data-call-sid": ev.call_sid }, title);
      cards.set(ev.call_sid, c);
      live.prepend(c);
      empty.hidden = true;
    }
    return c;
  };
  startLive((ev) => {
    if (ev.kind === "started") card(ev).append(el("div", { class: "muted" }, `${ev.from || "unknown"} → ${ev.agent_id}`));
    else if (ev.kind === "transcript") { const c = card(ev); c.append(line(ev.role, ev.text, ev.offset_ms, ev.interrupted, ev.heard_ms)); c.scrollTop = c.scrollHeight; }
    else if (ev.kind === "tool") card(ev).append(el("div", { class: "muted" }, `tool ${ev.name} (${fmtMs(ev.latency_ms)})`));
    else if (ev.kind === "ended" || ev.kind === "rejected") {
      const c = cards.get(ev.call_sid);
      if (c) setTimeout(() => { c.remove(); cards.delete(ev.call_sid); empty.hidden = cards.size > 0; loadList(true); }, 5000);
    }
  });
}

// ---- one call ----
async function sessionPage() {
  const sid = decodeURIComponent(location.pathname.split("/").pop());
  document.getElementById("title").textContent = `Call ${sid}`;
  let s;
  try { s = await api(`/api/sessions/${encodeURIComponent(sid)}`); } catch (e) {
    const err = document.getElementById("detail-error"); err.textContent = e.message; err.hidden = false; return;
  }
  const u = s.usage || {};
  const facts = [["Caller", s.from], ["Dialed", s.to], ["Agent", s.agent_id], ["Direction", s.direction],
    ["Started", fmtTime(s.started_at)], ["Ended", fmtTime(s.ended_at)], ["Duration", fmtMs(s.duration_ms)],
    ["End reason", s.end_reason], ["Outcome", s.outcome ? `${s.outcome}${s.outcome_detail ? ` (${s.outcome_detail})` : ""}` : null],
    ["Twilio status", s.twilio_status], ["Model", s.model], ["Worker", s.worker_id],
    ["Tokens in / out", u.input_tokens === null || u.input_tokens === undefined ? null : `${u.input_tokens} / ${u.output_tokens}`],
    ["Audio in / out", u.input_audio_tokens === null || u.input_audio_tokens === undefined ? null : `${u.input_audio_tokens} / ${u.output_audio_tokens}`],
    ["Cached", u.cached_tokens], ["Cost", fmtCost(s.cost_usd)], ["Takeovers", s.takeovers]];
  const dl = document.getElementById("facts");
  for (const [k, v] of facts) dl.append(el("div", {}, el("dt", {}, k), el("dd", {}, v === null || v === undefined ? "—" : String(v))));

  // Transcript in speaking order; each tool call after the last line published before it.
  const timeline = document.getElementById("timeline");
  const tools = [...s.tools];
  const placeTools = (beforeSeq) => {
    while (tools.length && (beforeSeq === null || tools[0].seq < beforeSeq)) {
      const t = tools.shift();
      const failed = !!t.error;
      timeline.append(el("li", { class: `tool${failed ? " failed" : ""}` },
        el("strong", {}, `⚙ ${t.name}`), el("span", { class: "muted" }, ` ${fmtMs(t.latency_ms)}`),
        el("div", {}, "arguments"), el("pre", {}, pretty(t.arguments)),
        el("div", {}, failed ? "error" : "result"), el("pre", {}, failed ? `${t.error.code}: ${t.error.message}` : pretty(t.output))));
    }
  };
  // Ownership changes (takeovers, hand-overs) before the first line of the new owner: a worker
  // numbers its events epoch * 2^32 + n. Never transcript lines.
  const changes = (s.owners || []).filter((o) => o.epoch > 0);
  const placeOwners = (seq) => {
    while (changes.length && (seq === null || Math.floor(seq / 2 ** 32) >= changes[0].epoch)) {
      const o = changes.shift();
      const why = o.reason === "hand_over" ? "handed over" : "taken over";
      timeline.append(el("li", { class: "owner muted" },
        `⇄ ${why} by ${o.worker_id}${o.previous_worker_id ? ` from ${o.previous_worker_id}` : ""} (epoch ${o.epoch}, gap ${fmtMs(o.gap_ms)})`));
    }
  };
  for (const t of s.transcript) { placeOwners(t.seq); placeTools(t.seq); timeline.append(line(t.role, t.text, t.offset_ms, t.interrupted, t.heard_ms)); }
  placeTools(null);
  placeOwners(null);
  if (!s.transcript.length && !s.tools.length) timeline.append(el("li", { class: "muted" }, "Nothing was said."));

  renderCost(s.cost);

  const turns = document.getElementById("turns");
  s.turns.forEach((t, i) => turns.append(el("tr", {}, el("td", {}, String(i + 1)), el("td", {}, t.kind),
    el("td", { class: "num" }, fmtMs(t.latency_ms)), el("td", { class: "muted" }, t.response_id || "—"))));

  if (!s.ended_at) {
    startLive((ev) => {
      if (ev.call_sid !== sid) return;
      if (ev.kind === "transcript") timeline.append(line(ev.role, ev.text, ev.offset_ms, ev.interrupted, ev.heard_ms));
      if (ev.kind === "ended") location.reload();
    });
  }
}

// The cost breakdown: model and transcription lines (priced when the call ended) and the
// Twilio minutes; placeholder prices are flagged so nobody mistakes them for a bill.
function renderCost(cost) {
  if (!cost) return;
  document.getElementById("cost-section").hidden = false;
  const body = document.getElementById("cost");
  const b = cost.breakdown;
  const fmtQty = (q, unit) => (unit === "tokens" ? `${Math.round(q)} tokens` : `${q.toFixed(2)} ${unit}`);
  const fmtPrice = (l) => (l.unit === "tokens" ? `$${l.usd_per_unit} / 1M` : `$${l.usd_per_unit} / min`);
  if (b) {
    for (const l of b.lines) {
      if (!l.quantity) continue;
      body.append(el("tr", { class: l.source === "placeholder" ? "placeholder" : "" },
        el("td", {}, l.part === "model" ? b.model : b.transcription_model || "transcription"), el("td", {}, l.item),
        el("td", { class: "num" }, fmtQty(l.quantity, l.unit)), el("td", { class: "num" }, `${fmtPrice(l)}${l.source === "placeholder" ? " *" : ""}`),
        el("td", { class: "num" }, fmtCost(l.usd))));
    }
  }
  const t = cost.twilio;
  body.append(el("tr", {}, el("td", {}, "Twilio"), el("td", {}, t.estimated ? "minutes (call duration)" : "minutes (billed)"),
    el("td", { class: "num" }, `${t.minutes} min`),
    el("td", { class: "num" }, t.usd_per_minute === null ? "not set" : `$${t.usd_per_minute} / min`),
    el("td", { class: "num" }, fmtCost(t.usd))));
  body.append(el("tr", { class: "total" }, el("td", {}, "Total"), el("td", {}), el("td", {}), el("td", {}),
    el("td", { class: "num" }, fmtCost(cost.total_usd !== null ? cost.total_usd : b ? b.total_usd : null))));
  const notes = [];
  if (b && b.placeholder) notes.push("* placeholder price: set it in PRICES_FILE.");
  if (b && !b.priced) notes.push("A model without a price is left out of the total.");
  if (t.usd_per_minute === null) notes.push("Twilio minutes are not priced (twilio_per_minute in PRICES_FILE); the total is the model's.");
  document.getElementById("cost-note").textContent = notes.join(" ");
}


// ---- sign-in ----
function loginPage() {
  if (new URLSearchParams(location.search).has("error")) document.getElementById("error").hidden = false;
}

// The pages carry no inline script (the Content-Security-Policy allows none): each one loads
// this file and names itself in <body data-page>.
if (document.body.dataset.page === "login") loginPage();
if (document.body.dataset.page === "sessions") sessionsPage();
if (document.body.dataset.page === "session") sessionPage();
