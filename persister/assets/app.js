"use strict";
// The Switchboard console: the calls list, one call's timeline, calls in progress, and the
// webhook delivery log.
// Reads the JSON API (the session cookie authenticates it) and /api/live (Server-Sent Events).

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") node.className = v; else node.setAttribute(k, v);
  }
  for (const c of children) if (c !== null && c !== undefined) node.append(c);
  return node;
}
const $ = (id) => document.getElementById(id);
const who = { user: "Caller", assistant: "Agent", system: "System" };
const fmtTime = (t) => (t ? new Date(t).toLocaleString() : "—");
const fmtMs = (ms) => (ms === null || ms === undefined ? "—" : ms < 1000 ? `${Math.round(ms)} ms` : `${(ms / 1000).toFixed(1)} s`);
const fmtOffset = (ms) => { const s = Math.max(0, Math.floor(ms / 1000)); return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`; };
const fmtElapsed = (ms) => { const s = Math.max(0, Math.floor(ms / 1000)); const h = Math.floor(s / 3600); return h ? `${h}:${String(Math.floor((s % 3600) / 60)).padStart(2, "0")}:${String(s % 60).padStart(2, "0")}` : fmtOffset(ms); };
const fmtCost = (c) => (c === null || c === undefined ? "—" : `$${c.toFixed(4)}`);
const pretty = (v) => (typeof v === "string" ? v : JSON.stringify(v, null, 2));
// A contract code in words (LABELS comes from /assets/labels.js); an unknown one with its
// underscores as spaces.
const humanize = (code) => { const t = String(code).replace(/_/g, " "); return t.charAt(0).toUpperCase() + t.slice(1); };
function word(list, code) {
  if (code === null || code === undefined || code === "") return null;
  const table = typeof LABELS === "undefined" ? null : LABELS[list];
  return (table && table[code]) || humanize(code);
}

// A JSON API call; every failure becomes an Error whose message a person can act on.
async function api(path) {
  let r;
  try { r = await fetch(path, { credentials: "same-origin" }); } catch (_) {
    throw new Error("Cannot reach the Switchboard server. Check your connection; if it persists, the persister may be down.");
  }
  if (r.status === 401) { location.href = "/login"; throw new Error("signed out"); }
  let body = null;
  try { body = await r.json(); } catch (_) { /* a proxy's error page */ }
  if (!r.ok) {
    const said = body && body.error;
    const e = new Error(r.status === 503 || r.status === 502 || r.status === 504
      ? `The call record is unavailable right now (${said || `HTTP ${r.status}`}). Try again in a moment.`
      : said || `The server answered HTTP ${r.status}.`);
    e.status = r.status;
    throw e;
  }
  return body;
}

function line(role, text, offsetMs, interrupted, heardMs) {
  return el("li", { class: `line ${role}` },
    el("span", { class: "who" }, who[role] || role),
    offsetMs !== undefined ? el("span", { class: "when" }, fmtOffset(offsetMs)) : null,
    interrupted ? el("span", { class: "interrupted", "data-at": String((offsetMs || 0) + (heardMs || 0)) }, `interrupted after ${fmtMs(heardMs)}`) : null,
    el("div", { class: "text" }, text));
}

// A tool call on a timeline: its name, when it was dispatched, how long it took, arguments and
// result (or the error, in words).
function toolItem(t, offsetMs) {
  const failed = !!t.error;
  return el("li", { class: `tool${failed ? " failed" : ""}`, "data-tool": t.name },
    el("strong", {}, `⚙ ${t.name}`), el("span", { class: "when" }, fmtOffset(offsetMs)),
    el("span", { class: "muted" }, ` ${fmtMs(t.latency_ms)}`),
    el("div", {}, "arguments"), el("pre", {}, pretty(t.arguments)),
    el("div", {}, failed ? "error" : "result"),
    el("pre", {}, failed ? `${word("tool_error", t.error.code)}: ${t.error.message}` : pretty(t.output)));
}

// Inserts `node` into `list` by its time (data-t), then seq (data-seq): every timeline item has
// a time, whatever order its event arrived in.
function insertSorted(list, node, t, seq) {
  node.dataset.t = String(t);
  node.dataset.seq = String(seq);
  const after = (c) => Number(c.dataset.t) > t || (Number(c.dataset.t) === t && Number(c.dataset.seq) > seq);
  const next = [...list.children].find((c) => c.dataset.t !== undefined && after(c));
  list.insertBefore(node, next || null);
}

function startLive(handlers) {
  const source = new EventSource("/api/live");
  source.onopen = () => handlers.open && handlers.open();
  source.onerror = () => handlers.error && handlers.error(source.readyState === EventSource.CLOSED);
  source.onmessage = (m) => { let ev; try { ev = JSON.parse(m.data); } catch (_) { return; } handlers.event(ev); };
  return source;
}

// ---- calls list ----
const FILTERS = ["agent", "outcome", "from", "q", "since", "until"];
let cursor = null;
let listGeneration = 0;

// The filters as the API takes them (times in RFC 3339).
function apiQuery(filters) {
  const q = new URLSearchParams();
  for (const key of FILTERS) {
    const v = filters[key];
    if (!v) continue;
    if (key === "since" || key === "until") {
      const t = new Date(v);
      q.set(key, Number.isNaN(t.getTime()) ? v : t.toISOString());
    } else q.set(key, v);
  }
  return q;
}

function formFilters() {
  const form = new FormData($("filters"));
  const f = {};
  for (const key of FILTERS) f[key] = (form.get(key) || "").trim();
  return f;
}

async function loadList(reset) {
  const filters = formFilters();
  const q = apiQuery(filters);
  $("export").href = `/api/sessions.csv?${q}`;
  if (!reset && cursor) q.set("cursor", cursor);
  const generation = ++listGeneration;
  const rows = $("rows");
  const err = $("list-error");
  try {
    const page = await api(`/api/sessions?${q}`);
    if (generation !== listGeneration) return;
    err.hidden = true;
    if (reset) rows.replaceChildren();
    for (const s of page.sessions) rows.append(callRow(s));
    cursor = page.next_cursor;
    $("more").hidden = !cursor;
    $("count").textContent = page.total === 1 ? "1 call" : `${page.total} calls`;
    $("count").hidden = false;
    $("list-empty").hidden = page.total > 0;
  } catch (e) {
    if (generation !== listGeneration) return;
    // Rows of an earlier search must not pass for the answer to this one.
    rows.replaceChildren();
    cursor = null;
    $("more").hidden = true;
    $("count").hidden = true;
    $("list-empty").hidden = true;
    err.textContent = e.message;
    err.hidden = false;
  }
}

function callRow(s) {
  const link = el("a", { href: `/sessions/${encodeURIComponent(s.call_sid)}` }, fmtTime(s.started_at || s.ended_at));
  const outcome = s.outcome ? el("span", { class: "pill" }, s.outcome)
    : s.rejected_reason ? `Rejected: ${word("rejected_reason", s.rejected_reason)}` : "—";
  const ended = word("end_reason", s.end_reason) || (s.rejected_reason ? "Not answered" : s.ended_at ? "Ended" : "In progress");
  return el("tr", { "data-call-sid": s.call_sid },
    el("td", { "data-label": "Started" }, link), el("td", { "data-label": "Caller" }, s.from || "—"),
    el("td", { "data-label": "Direction" }, word("direction", s.direction) || "—"),
    el("td", { "data-label": "Agent" }, s.agent_id || "—"),
    el("td", { "data-label": "Outcome" }, outcome), el("td", { "data-label": "Ended" }, ended),
    el("td", { class: "num", "data-label": "Duration" }, fmtMs(s.duration_ms)),
    el("td", { class: "num", "data-label": "Cost" }, fmtCost(s.cost_usd)));
}

// Fills a pick-list with `values`, keeping `current` (from the URL) even if it is not one.
function pickList(select, values, current) {
  const all = [...new Set([...values, ...(current ? [current] : [])])];
  select.replaceChildren(select.options[0], ...all.map((v) => el("option", { value: v }, v)));
  select.value = current || "";
}

async function loadFacets(filters) {
  let facets = { agents: [], outcomes: [] };
  try { facets = await api("/api/facets"); } catch (_) { /* the list says what is wrong */ }
  pickList($("agent"), facets.agents, filters.agent);
  pickList($("outcome"), facets.outcomes, filters.outcome);
}

function sessionsPage() {
  // The filters live in the URL, so a search can be reloaded, bookmarked and shared.
  const params = new URLSearchParams(location.search);
  const filters = {};
  for (const key of FILTERS) filters[key] = params.get(key) || "";
  const form = $("filters");
  for (const key of ["from", "q", "since", "until"]) form.elements[key].value = filters[key];
  pickList($("agent"), [], filters.agent);
  pickList($("outcome"), [], filters.outcome);
  loadFacets(filters);
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(formFilters())) if (v) q.set(k, v);
    history.replaceState(null, "", q.toString() ? `/sessions?${q}` : "/sessions");
    loadList(true);
  });
  $("more").addEventListener("click", () => loadList(false));
  loadList(true);
  livePanel();
}

// ---- calls in progress ----
// Cards of the calls in progress: the ones already running when the page opened (from the
// record, with what was said so far) and each new one, kept up to date from /api/live. Events
// already shown (by seq) are not shown twice.
function livePanel() {
  const live = $("live");
  const empty = $("live-empty");
  const note = $("live-error");
  const dot = $("live-dot");
  const cards = new Map();
  let caughtUp = false;
  let connected = false;
  let problem = null;
  const refresh = () => {
    const say = problem || (caughtUp && !connected ? "Connecting to the live feed…" : null);
    note.textContent = say || "";
    note.hidden = !say;
    // "No calls in progress" only when that is known: caught up and following the feed.
    empty.hidden = !(caughtUp && connected && !problem && cards.size === 0);
    dot.classList.toggle("on", connected);
    // Cards not being followed are dimmed: what they show may be out of date.
    live.classList.toggle("stale", !connected);
  };

  const card = (sid) => {
    let c = cards.get(sid);
    if (c) return c;
    const name = el("a", { href: `/sessions/${encodeURIComponent(sid)}`, class: "live-title" }, "Call in progress");
    const elapsed = el("span", { class: "elapsed muted" });
    const lines = el("ol", { class: "live-lines" });
    const node = el("div", { class: "live-call", "data-call-sid": sid }, el("div", { class: "live-head" }, name, elapsed), lines);
    c = {
      node, lines, seen: new Set(), startedMs: null,
      describe(agent, from, startedAt) {
        if (agent || from) name.textContent = `${agent || "Agent"} · ${from || "unknown caller"}`;
        const t = Date.parse(startedAt || "");
        if (!Number.isNaN(t)) c.startedMs = t;
        c.tick();
      },
      tick() { elapsed.textContent = c.startedMs ? fmtElapsed(Date.now() - c.startedMs) : ""; },
      add(ev) {
        if (c.seen.has(ev.seq)) return;
        c.seen.add(ev.seq);
        if (ev.kind === "transcript") insertSorted(lines, line(ev.role, ev.text, ev.offset_ms, ev.interrupted, ev.heard_ms), ev.offset_ms, ev.seq);
        else if (ev.kind === "tool") {
          const at = c.startedMs && ev.at_ms ? ev.at_ms - ev.latency_ms - c.startedMs : ev.offset_ms || 0;
          const item = el("li", { class: `live-tool muted${ev.error ? " failed" : ""}` }, `⚙ ${ev.name} · ${fmtMs(ev.latency_ms)}${ev.error ? ` · ${word("tool_error", ev.error.code)}` : ""}`);
          insertSorted(lines, item, at, ev.seq);
        } else return;
        node.scrollTop = node.scrollHeight;
      },
      end() {
        if (c.ending) return;
        c.ending = true;
        setTimeout(() => { node.remove(); cards.delete(sid); refresh(); loadList(true); }, 5000);
      },
    };
    cards.set(sid, c);
    live.prepend(node);
    refresh();
    return c;
  };
  // What the record holds of a call so far: who, since when, and its lines and tool calls.
  const catchUp = async (sid) => {
    let s;
    try { s = await api(`/api/sessions/${encodeURIComponent(sid)}`); } catch (_) { return; }
    const c = card(sid);
    c.describe(s.agent_id, s.from, s.started_at);
    for (const t of s.transcript) c.add({ kind: "transcript", ...t });
    for (const t of s.tools) c.add({ kind: "tool", ...t });
    if (s.ended_at || s.rejected_reason) c.end();
  };

  setInterval(() => { for (const c of cards.values()) c.tick(); }, 1000);
  startLive({
    open() { connected = true; problem = null; refresh(); },
    error(closed) {
      connected = false;
      problem = closed ? "The live feed stopped. Reload the page to follow calls in progress."
        : "The live feed was interrupted; reconnecting…";
      refresh();
    },
    event(ev) {
      const known = cards.has(ev.call_sid);
      if (ev.kind === "ended" || ev.kind === "rejected") {
        if (known) cards.get(ev.call_sid).end(); else loadList(true);
        return;
      }
      if (!["started", "transcript", "tool"].includes(ev.kind)) return;
      const c = card(ev.call_sid);
      if (ev.kind === "started") { c.describe(ev.agent_id, ev.from, new Date(ev.at_ms).toISOString()); return; }
      c.add(ev);
      // A call that started before this page: fetch what was said before.
      if (!known) catchUp(ev.call_sid);
    },
  });
  // Calls already in progress (started within the last 12 hours: older ones lost their end).
  const since = new Date(Date.now() - 12 * 3600 * 1000).toISOString();
  api(`/api/sessions?status=in_progress&since=${encodeURIComponent(since)}&limit=50`).then((page) => {
    for (const s of page.sessions) {
      card(s.call_sid).describe(s.agent_id, s.from, s.started_at);
      catchUp(s.call_sid);
    }
    caughtUp = true;
    refresh();
  }, (e) => { problem = `Calls in progress cannot be shown: ${e.message}`; refresh(); });
}

// ---- one call ----
async function sessionPage() {
  const sid = decodeURIComponent(location.pathname.split("/").pop());
  $("title").textContent = "Call";
  $("sid").textContent = sid;
  // Events published while the record is read are not lost: they wait here until it is in.
  const early = [];
  let onEvent = (ev) => early.push(ev);
  const source = startLive({ event: (ev) => { if (ev.call_sid === sid) onEvent(ev); } });
  let s;
  try { s = await api(`/api/sessions/${encodeURIComponent(sid)}`); } catch (e) {
    source.close();
    $("detail").hidden = true;
    const box = $("detail-error");
    if (e.status === 404) {
      $("title").textContent = "No such call";
      box.replaceChildren(el("p", {}, "There is no call with this id in the record."),
        el("p", {}, el("a", { href: "/sessions" }, "Back to all calls")));
    } else box.textContent = e.message;
    box.hidden = false;
    return;
  }
  $("title").textContent = `Call from ${s.from || "an unknown caller"}${s.agent_id ? ` to ${s.agent_id}` : ""}`;
  const u = s.usage || {};
  const facts = [["Caller", s.from], ["Dialed", s.to], ["Agent", s.agent_id], ["Direction", word("direction", s.direction)],
    ["Started", fmtTime(s.started_at)], ["Ended", fmtTime(s.ended_at)], ["Duration", fmtMs(s.duration_ms)],
    ["End reason", word("end_reason", s.end_reason)],
    ["Answered by", word("answered_by", s.answered_by)],
    ["Outcome", s.outcome ? `${s.outcome}${s.outcome_detail ? ` (${s.outcome_detail})` : ""}` : null],
    ["Rejected", word("rejected_reason", s.rejected_reason)],
    ["Twilio status", s.twilio_status], ["Model", s.model], ["Worker", s.worker_id],
    ["Tokens in / out", u.input_tokens === null || u.input_tokens === undefined ? null : `${u.input_tokens} / ${u.output_tokens}`],
    ["Audio in / out", u.input_audio_tokens === null || u.input_audio_tokens === undefined ? null : `${u.input_audio_tokens} / ${u.output_audio_tokens}`],
    ["Cached", u.cached_tokens], ["Cost", fmtCost(s.cost_usd)], ["Takeovers", s.takeovers]];
  const dl = $("facts");
  for (const [k, v] of facts) dl.append(el("div", {}, el("dt", {}, k), el("dd", {}, v === null || v === undefined ? "—" : String(v))));

  // Every item at its time in the call: lines when their speech began, tool calls when they
  // were dispatched, ownership changes when the new owner took the call.
  const timeline = $("timeline");
  const startedMs = Date.parse(s.started_at || "");
  const seen = new Set();
  const nothing = el("li", { class: "muted" }, "Nothing was said.");
  const place = (node, t, seq) => { seen.add(seq); nothing.remove(); insertSorted(timeline, node, t, seq); };
  for (const t of s.transcript) place(line(t.role, t.text, t.offset_ms, t.interrupted, t.heard_ms), t.offset_ms, t.seq);
  for (const t of s.tools) place(toolItem(t, t.offset_ms), t.offset_ms, t.seq);
  for (const o of (s.owners || []).filter((x) => x.epoch > 0)) {
    const t = Number.isNaN(startedMs) ? 0 : Date.parse(o.at) - startedMs;
    insertSorted(timeline, el("li", { class: "owner muted" },
      `⇄ ${word("owner_reason", o.reason)} by ${o.worker_id}${o.previous_worker_id ? ` from ${o.previous_worker_id}` : ""} (gap ${fmtMs(o.gap_ms)})`),
    t, o.epoch * 2 ** 32);
  }
  if (!timeline.children.length) timeline.append(nothing);

  renderRecording(s, timeline);
  renderCost(s.cost);
  renderWebhooks(sid, 0);

  const turns = $("turns");
  const turnIds = new Set();
  const addTurn = (t) => {
    if (t.response_id && turnIds.has(t.response_id)) return;
    turnIds.add(t.response_id);
    turns.append(el("tr", {}, el("td", {}, String(turns.children.length + 1)), el("td", {}, humanize(t.kind)),
      el("td", {}, fmtOffset(t.offset_ms)), el("td", { class: "num" }, fmtMs(t.latency_ms))));
  };
  s.turns.forEach(addTurn);

  if (s.ended_at || s.rejected_reason) { source.close(); return; }
  // A call in progress: its lines, tool calls and turns appear as they happen.
  $("live-badge").hidden = false;
  const sinceStart = (atMs) => (Number.isNaN(startedMs) ? 0 : atMs - startedMs);
  onEvent = (ev) => {
    if (seen.has(ev.seq) && (ev.kind === "transcript" || ev.kind === "tool")) return;
    if (ev.kind === "transcript") place(line(ev.role, ev.text, ev.offset_ms, ev.interrupted, ev.heard_ms), ev.offset_ms, ev.seq);
    else if (ev.kind === "tool") { const t = sinceStart(ev.at_ms - ev.latency_ms); place(toolItem(ev, t), t, ev.seq); }
    else if (ev.kind === "turn") addTurn({ kind: ev.turn_kind, latency_ms: ev.latency_ms, response_id: ev.response_id, offset_ms: sinceStart(ev.at_ms) });
    else if (ev.kind === "ended") location.reload();
  };
  early.splice(0).forEach((ev) => onEvent(ev));
}

// ---- the call's recording ----
// A player for the call's two-channel WAV: the waveform of both channels (caller above, agent
// below), play/pause, seek by clicking the waveform, the time, the timeline item being spoken
// highlighted, and a click on a timeline item (a line, a tool call, an interruption, an owner
// change) plays from there. The WAV is fetched once: its bytes are decoded by Web Audio for the
// waveform and played by an <audio> element from a blob: URL (the policy's `media-src blob:`),
// which seeks exactly because the whole file is in memory.
// How long after a call's end its recording may still be on its way (the gateway's write takes
// at most 60 s, then the event reaches the record).
const RECORDING_STORED_WITHIN_MS = 90 * 1000;
async function renderRecording(s, timeline) {
  const section = $("recording");
  const note = el("p", { class: "muted", id: "recording-note" });
  const say = (text) => { note.textContent = text; section.dataset.state = "none"; };
  section.replaceChildren(el("h3", {}, "Recording"), note);
  section.hidden = false;
  if (!s.recording) {
    if (!s.ended_at && !s.rejected_reason) say("The recording is ready when the call has ended.");
    else if (s.rejected_reason) say("Not recorded: the call was not answered.");
    else {
      // The agents file (when the persister has it) says which: as it is now, not as it was.
      let agent = null;
      try { agent = (await api("/api/agents")).agents.find((a) => a.id === s.agent_id); } catch (_) { /* no AGENTS_FILE */ }
      // The gateway stores the recording after the call ends (within a minute).
      const endedMs = Date.parse(s.ended_at || "");
      const storing = !Number.isNaN(endedMs) && Date.now() - endedMs < RECORDING_STORED_WITHIN_MS;
      say(agent && agent.record === false ? `Not recorded: the agent ${agent.id} does not record its calls (record = false).`
        : storing ? "The call has just ended: its recording is being stored. Reload the page in a moment."
        : "No recording for this call: its agent does not record calls, or the retention period deleted it.");
    }
    return;
  }
  note.textContent = "Loading the recording…";
  let bytes;
  try {
    const r = await fetch(s.recording.url, { credentials: "same-origin" });
    if (r.status === 404) { say("The recording is no longer available (the retention period deleted it)."); return; }
    if (!r.ok) throw new Error(`the server answered HTTP ${r.status}`);
    bytes = await r.arrayBuffer();
  } catch (e) { say(`The recording cannot be loaded: ${e.message}. Try again in a moment.`); return; }
  let audio;
  try {
    // Decoded at the recording's own rate (8 kHz), so the waveform is drawn from its samples.
    audio = await new OfflineAudioContext(2, 1, 8000).decodeAudioData(bytes.slice(0));
  } catch (_) { say("The recording cannot be decoded by this browser."); return; }
  // Two clocks: the timeline's (`offset_ms`) starts when the worker accepted the call, before
  // the media stream opened; the recording's when the stream did (after a gateway failover, the
  // new stream). Both end with the call, so the call's length less the recording's is where the
  // call's clock stands at the recording's zero.
  const leadMs = Math.max(0, (s.duration_ms || 0) - s.recording.duration_ms);
  section.replaceChildren(el("h3", {}, "Recording"), player(audio, new Blob([bytes], { type: "audio/wav" }), timeline, leadMs));
  section.dataset.state = "ready";
}

// The loudest sample of each of `columns` slices of `samples`: the waveform's bars.
function peaks(samples, columns) {
  const out = new Float32Array(columns);
  const per = samples.length / columns;
  for (let c = 0; c < columns; c++) {
    let max = 0;
    const end = Math.min(samples.length, Math.floor((c + 1) * per));
    for (let i = Math.floor(c * per); i < end; i++) { const v = Math.abs(samples[i]); if (v > max) max = v; }
    out[c] = max;
  }
  return out;
}

// `leadMs`: the call's time (the timeline's) at the recording's zero.
function player(decoded, blob, timeline, leadMs) {
  const media = el("audio", { preload: "auto", id: "recording-audio" });
  media.src = URL.createObjectURL(blob);
  const toggle = el("button", { type: "button", id: "play" }, "Play");
  const clock = el("span", { class: "clock", id: "clock" });
  const canvas = el("canvas", { class: "waveform", id: "waveform", height: "120",
    title: "Click to play from here", "aria-label": "Waveform: caller above, agent below" });
  const legend = el("p", { class: "legend muted" }, el("span", { class: "caller" }, "■ Caller"), " ", el("span", { class: "agent" }, "■ Agent"));
  const durationMs = decoded.duration * 1000;
  const channels = [0, 1].map((c) => decoded.getChannelData(Math.min(c, decoded.numberOfChannels - 1)));
  const colours = getComputedStyle(document.documentElement);
  const ink = [colours.getPropertyValue("--caller").trim() || "#0f7b5f", colours.getPropertyValue("--agent").trim() || "#3b4fd1"];
  let bars = null;
  const draw = () => {
    const width = Math.max(1, Math.floor(canvas.clientWidth || 600));
    if (canvas.width !== width) { canvas.width = width; bars = null; }
    if (!bars) bars = channels.map((samples) => peaks(samples, width));
    const g = canvas.getContext("2d");
    const h = canvas.height / 2;
    const played = Math.round((media.currentTime * 1000 / durationMs) * width);
    g.clearRect(0, 0, width, canvas.height);
    bars.forEach((b, c) => {
      const mid = h * c + h / 2;
      for (let x = 0; x < width; x++) {
        const half = Math.max(0.5, b[x] * (h / 2 - 2));
        g.fillStyle = ink[c];
        g.globalAlpha = x < played ? 1 : 0.45;
        g.fillRect(x, mid - half, 1, half * 2);
      }
    });
    g.globalAlpha = 1;
    g.fillStyle = "#1d2330";
    g.fillRect(Math.min(played, width - 1), 0, 1, canvas.height);
  };
  // The item being spoken: the latest one (by time) that began at or before the position.
  let current = null;
  const follow = () => {
    const t = media.currentTime * 1000 + leadMs;
    clock.textContent = `${fmtOffset(media.currentTime * 1000)} / ${fmtOffset(durationMs)}`;
    let now = null;
    for (const item of timeline.children) {
      if (item.dataset.t === undefined) continue;
      if (Number(item.dataset.t) <= t) now = item; else break;
    }
    if (now !== current) {
      if (current) current.classList.remove("playing");
      if (now) now.classList.add("playing");
      current = now;
    }
    draw();
  };
  // `ms` on the recording's clock; `callMs` on the timeline's.
  const seek = (ms) => { media.currentTime = Math.max(0, Math.min(durationMs, ms)) / 1000; follow(); };
  const seekCall = (callMs) => seek(callMs - leadMs);
  let frame = 0;
  const tick = () => { follow(); frame = media.paused ? 0 : requestAnimationFrame(tick); };
  media.addEventListener("play", () => { toggle.textContent = "Pause"; if (!frame) frame = requestAnimationFrame(tick); });
  media.addEventListener("pause", () => { toggle.textContent = "Play"; follow(); });
  media.addEventListener("ended", () => { toggle.textContent = "Play"; follow(); });
  media.addEventListener("seeked", follow);
  toggle.addEventListener("click", () => { if (media.paused) media.play().catch(() => {}); else media.pause(); });
  canvas.addEventListener("click", (e) => {
    const box = canvas.getBoundingClientRect();
    seek(((e.clientX - box.left) / box.width) * durationMs);
  });
  // A click on a timeline item plays from its time; on an interruption, from where it cut in.
  timeline.classList.add("seekable");
  const jump = (target) => {
    const cut = target.closest(".interrupted[data-at]");
    if (cut) return seekCall(Number(cut.dataset.at));
    const item = target.closest("li[data-t]");
    if (item && timeline.contains(item)) seekCall(Number(item.dataset.t));
  };
  timeline.addEventListener("click", (e) => {
    // Selecting text (a tool's arguments) is not a seek.
    if (String(window.getSelection ? window.getSelection() : "").length) return;
    jump(e.target);
  });
  timeline.addEventListener("keydown", (e) => { if (e.key === "Enter") jump(e.target); });
  for (const item of timeline.children) if (item.dataset.t !== undefined) item.tabIndex = 0;
  window.addEventListener("resize", draw);
  media.addEventListener("loadedmetadata", follow);
  requestAnimationFrame(follow);
  return el("div", { class: "player" }, el("div", { class: "controls" }, toggle, clock), canvas, legend, media);
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

// The call's webhook deliveries, from the notifier's delivery log (read through /api), oldest
// first; a missing or unreachable log is a note, not a broken page. A failed delivery can be
// re-sent; the list then follows it until nothing is pending.
async function renderWebhooks(sid, follow) {
  const note = document.getElementById("webhooks-note");
  const body = document.getElementById("webhooks");
  const say = (text) => { note.textContent = text; note.hidden = false; };
  let log;
  try { log = await api(`/api/sessions/${encodeURIComponent(sid)}/webhooks`); } catch (e) { say(e.message); return; }
  note.hidden = true;
  body.replaceChildren();
  if (!log.deliveries.length) say("No webhook deliveries for this call.");
  if (follow > 0 && log.deliveries.some((d) => d.state === "pending")) setTimeout(() => renderWebhooks(sid, follow - 1), 1000);
  const resend = async (d) => {
    const r = await fetch(`/api/webhooks/deliveries/${encodeURIComponent(d.id)}/resend`, { method: "POST", credentials: "same-origin" });
    if (!r.ok) { say(`Re-sending failed: HTTP ${r.status}`); return; }
    renderWebhooks(sid, 30);
  };
  for (const d of [...log.deliveries].reverse()) {
    const last = d.attempt_log.length ? d.attempt_log[d.attempt_log.length - 1] : null;
    const tried = d.attempt_log.map((a) => `#${a.attempt} ${fmtTime(a.at)}: ${a.status === null ? "no answer" : a.status}, ${fmtMs(a.latency_ms)}${a.error ? `, ${a.error}` : ""}`);
    body.append(el("tr", { class: `delivery ${d.state}`, "data-delivery-id": d.id, title: tried.join("\n") },
      el("td", {}, d.endpoint_url), el("td", {}, d.event_type), el("td", {}, d.state),
      el("td", { class: "num" }, String(d.attempts)),
      el("td", { class: "num" }, d.last_status === null ? "—" : String(d.last_status)),
      el("td", {}, d.last_error || "—"),
      el("td", {}, last ? `${fmtTime(last.at)} (${fmtMs(last.latency_ms)})` : d.next_attempt_at ? `due ${fmtTime(d.next_attempt_at)}` : "—"),
      el("td", {}, d.state === "failed" ? resendButton(() => resend(d)) : null)));
  }
}

function resendButton(onClick) {
  const button = el("button", { class: "resend", type: "button" }, "Re-send");
  button.addEventListener("click", () => { button.disabled = true; onClick(); });
  return button;
}

// ---- webhooks: the endpoints, and deliveries across calls ----
// The filters live in the URL (?endpoint=&state=): the form is a plain GET of this page, so a
// filtered view can be reloaded, bookmarked and shared.
function webhooksPage() {
  const params = new URLSearchParams(location.search);
  const filters = { endpoint: params.get("endpoint") || "", state: params.get("state") || "" };
  document.getElementById("state").value = filters.state;
  renderEndpoints(filters);
  renderDeliveries(filters, 0);
}

// The notifier's endpoints (also the endpoint filter's choices); a disabled one (it answered
// 410) says since when and why, and can be enabled again.
async function renderEndpoints(filters) {
  const note = document.getElementById("endpoints-note");
  const body = document.getElementById("endpoints");
  const select = document.getElementById("endpoint");
  const say = (text) => { note.textContent = text; note.hidden = false; };
  const choices = (urls) => {
    if (filters.endpoint && !urls.includes(filters.endpoint)) urls.push(filters.endpoint);
    select.replaceChildren(el("option", { value: "" }, "All endpoints"), ...urls.map((u) => el("option", { value: u }, u)));
    select.value = filters.endpoint;
  };
  let listing;
  try { listing = await api("/api/webhooks/endpoints"); } catch (e) { say(e.message); choices([]); return; }
  note.hidden = true;
  choices(listing.endpoints.map((e) => e.url));
  body.replaceChildren();
  if (!listing.endpoints.length) say("No webhook endpoints are configured.");
  const enable = async (url) => {
    const r = await fetch(`/api/webhooks/endpoints/enable?${new URLSearchParams({ endpoint: url })}`, { method: "POST", credentials: "same-origin" });
    if (!r.ok) { say(`Enabling failed: HTTP ${r.status}`); return; }
    renderEndpoints(filters);
  };
  for (const e of listing.endpoints) {
    const button = e.disabled ? el("button", { class: "enable", type: "button" }, "Enable") : null;
    if (button) button.addEventListener("click", () => { button.disabled = true; enable(e.url); });
    body.append(el("tr", { class: `endpoint ${e.disabled ? "disabled" : "enabled"}`, "data-url": e.url },
      el("td", {}, e.url), el("td", {}, e.disabled ? "disabled" : "enabled"),
      el("td", { class: "muted" }, e.disabled ? `since ${fmtTime(e.disabled_at)}${e.disabled_reason ? `: ${e.disabled_reason}` : ""}` : ""),
      el("td", {}, button)));
  }
}

// One attempt: when, the status code (or that nothing answered), latency and error.
function attemptItem(a) {
  return el("li", { class: "attempt" }, `#${a.attempt} ${fmtTime(a.at)}: `,
    el("span", { class: "status" }, a.status === null ? "no answer" : String(a.status)), ", ",
    el("span", { class: "latency" }, fmtMs(a.latency_ms)),
    a.error ? el("span", { class: "error" }, `, ${a.error}`) : null);
}

// The newest deliveries matching the filters; each lists its attempts on expand. A failed one
// can be re-sent; the list then follows it until nothing is pending.
async function renderDeliveries(filters, follow) {
  const note = document.getElementById("deliveries-note");
  const body = document.getElementById("deliveries");
  const say = (text) => { note.textContent = text; note.hidden = false; };
  const q = new URLSearchParams({ limit: "200" });
  for (const [k, v] of Object.entries(filters)) if (v) q.set(k, v);
  let log;
  try { log = await api(`/api/webhooks/deliveries?${q}`); } catch (e) { say(e.message); return; }
  note.hidden = true;
  if (!log.deliveries.length) say("No deliveries match.");
  if (follow > 0 && log.deliveries.some((d) => d.state === "pending")) setTimeout(() => renderDeliveries(filters, follow - 1), 1000);
  const open = new Set([...body.querySelectorAll("details[open]")].map((x) => x.closest("tr").dataset.deliveryId));
  body.replaceChildren();
  const resend = async (d) => {
    const r = await fetch(`/api/webhooks/deliveries/${encodeURIComponent(d.id)}/resend`, { method: "POST", credentials: "same-origin" });
    if (!r.ok) { say(`Re-sending failed: HTTP ${r.status}`); return; }
    renderDeliveries(filters, 30);
  };
  for (const d of log.deliveries) {
    const tries = d.attempt_log;
    const last = tries.length ? tries[tries.length - 1] : null;
    const summary = last ? `${tries.length} · last ${last.status === null ? "no answer" : last.status}, ${fmtMs(last.latency_ms)}` : "none yet";
    const attempts = el("details", {}, el("summary", {}, summary), el("ol", { class: "attempts" }, ...tries.map(attemptItem)));
    if (open.has(d.id)) attempts.open = true;
    body.append(el("tr", { class: `delivery ${d.state}`, "data-delivery-id": d.id },
      el("td", {}, el("a", { href: `/sessions/${encodeURIComponent(d.call_sid)}` }, d.call_sid)),
      el("td", {}, d.endpoint_url), el("td", {}, d.event_type), el("td", {}, d.state),
      el("td", {}, attempts),
      el("td", {}, last ? fmtTime(last.at) : d.next_attempt_at ? `due ${fmtTime(d.next_attempt_at)}` : "—"),
      el("td", {}, d.state === "failed" ? resendButton(() => resend(d)) : null)));
  }
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
if (document.body.dataset.page === "webhooks") webhooksPage();
