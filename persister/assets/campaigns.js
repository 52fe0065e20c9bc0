"use strict";
// The Campaigns page: outbound campaigns with their progress, a new campaign from a CSV of
// contacts, pause / resume / cancel, the do-not-call list, and (?id=) one campaign's contacts
// with each attempt linked to its call. Reads and changes them through the console's
// /api/campaigns and /api/dnc, which the persister passes on to the dialer. Uses el() and
// fmtTime() from app.js. The filters live in the URL (?state=, and ?id=&contact=&result=).

// A contact's progress counts, in the order the page shows them.
const PROGRESS = [
  ["dialed", "Dialed"], ["answered", "Answered"], ["voicemail", "Voicemail"], ["busy", "Busy"],
  ["no_answer", "No answer"], ["failed", "Failed"], ["dnc", "DNC"], ["pending", "Pending"],
];
const RESULT_WORDS = { answered: "Answered", voicemail: "Voicemail", busy: "Busy", no_answer: "No answer", failed: "Failed" };
const CONTACT_STATE_WORDS = { pending: "Pending", dialing: "Dialing", done: "Done", dnc: "Do not call", cancelled: "Cancelled" };
// The results a retry rule can be set for (the dialer's retry policy keys).
const RETRYABLE = ["busy", "no_answer", "voicemail", "failed"];
// How often a campaign being dialed is read again.
const REFRESH_MS = 2000;

// A call to the campaigns API: the parsed JSON answer, or an Error a person can act on.
async function campaignsApi(path, options) {
  let r;
  try { r = await fetch(path, { credentials: "same-origin", ...options }); } catch (_) {
    throw new Error("Cannot reach the Switchboard server. Check your connection.");
  }
  if (r.status === 401) { location.href = "/login"; throw new Error("signed out"); }
  let body = null;
  if (r.status !== 204) { try { body = await r.json(); } catch (_) { /* a proxy's error page */ } }
  if (!r.ok) {
    const said = (body && body.error) || `HTTP ${r.status}`;
    throw new Error(r.status === 502 || r.status === 503 ? `Campaigns are unavailable right now: ${said}.` : said);
  }
  return body;
}

const postJson = (path, body) => campaignsApi(path, {
  method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body || {}),
});

function note(id, text) {
  const p = document.getElementById(id);
  p.textContent = text || "";
  p.hidden = !text;
}

// A table cell with the label the narrow (stacked) layout shows before it.
const cell = (label, ...children) => el("td", { "data-label": label }, ...children);

// The counts as labelled pills; each carries its key for tests and styles.
function progressPills(progress, total) {
  return el("div", { class: "pills" },
    el("span", { class: "pill", "data-count": "total" }, `${total} contacts`),
    ...PROGRESS.map(([key, label]) => el("span", { class: `pill ${key}`, "data-count": key }, `${label} ${progress[key] ?? 0}`)));
}

// Pause / resume / cancel, as the campaign's state allows; `done` runs after a change.
function controls(c, done, say) {
  const act = async (button, action) => {
    if (action === "cancel" && !confirm("Cancel this campaign? Contacts not yet dialed will not be dialed.")) return;
    button.disabled = true;
    try { await postJson(`/api/campaigns/${encodeURIComponent(c.id)}/${action}`); } catch (e) { say(e.message); }
    done();
  };
  const button = (action, label) => {
    const b = el("button", { type: "button", class: action }, label);
    b.addEventListener("click", () => act(b, action));
    return b;
  };
  const open = c.state === "running" || c.state === "paused";
  return el("span", { class: "controls" },
    c.state === "running" ? button("pause", "Pause") : null,
    c.state === "paused" ? button("resume", "Resume") : null,
    open ? button("cancel", "Cancel") : null);
}

// ---- the list, the new-campaign form and the do-not-call list ----
function campaignsListPage(params) {
  document.getElementById("list-view").hidden = false;
  const state = params.get("state") || "";
  document.getElementById("state").value = state;
  renderCampaigns(state);
  renderDnc();
  loadAgents();
  loadZones();
  document.getElementById("create").addEventListener("submit", (e) => { e.preventDefault(); createCampaign(); });
  document.getElementById("dnc-add").addEventListener("submit", (e) => { e.preventDefault(); addDnc(); });
}

async function renderCampaigns(state) {
  const body = document.getElementById("campaigns");
  let listing;
  try { listing = await campaignsApi("/api/campaigns"); } catch (e) { note("campaigns-note", e.message); return; }
  const shown = listing.campaigns.filter((c) => !state || c.state === state);
  note("campaigns-note", shown.length ? "" : state ? "No campaigns in this state." : "No campaigns yet.");
  body.replaceChildren(...shown.map((c) => el("tr", { class: `campaign ${c.state}`, "data-campaign-id": c.id },
    cell("Campaign", el("a", { href: `/campaigns?id=${encodeURIComponent(c.id)}` }, c.name || c.id)),
    cell("Agent", c.agent_id),
    cell("State", el("span", { class: `pill state ${c.state}` }, c.state)),
    cell("Progress", progressPills(c.progress, c.contacts_total)),
    cell("Created", fmtTime(c.created_at)),
    cell("", controls(c, () => renderCampaigns(state), (t) => note("campaigns-note", t))))));
  if (listing.campaigns.some((c) => c.state === "running")) {
    clearTimeout(renderCampaigns.timer);
    renderCampaigns.timer = setTimeout(() => renderCampaigns(state), REFRESH_MS);
  }
}

// The agent pick-list, from the console's agents file.
async function loadAgents() {
  const select = document.getElementById("agent");
  try {
    const listing = await campaignsApi("/api/agents");
    select.append(...listing.agents.map((a) => el("option", { value: a.id }, a.id)));
  } catch (e) { note("create-note", `The agents cannot be listed: ${e.message}`); }
}

// Time-zone suggestions: the browser's own zone database.
function loadZones() {
  const zones = typeof Intl.supportedValuesOf === "function" ? Intl.supportedValuesOf("timeZone") : [];
  document.getElementById("zones").replaceChildren(...zones.map((z) => el("option", { value: z })));
}

// The retry policy from the form: a rule for each result with more than one attempt.
function retryPolicy() {
  const retry = {};
  for (const result of RETRYABLE) {
    const attempts = Number(document.getElementById(`retry-${result}-attempts`).value || 1);
    const minutes = Number(document.getElementById(`retry-${result}-delay`).value || 0);
    if (attempts > 1) retry[result] = { max_attempts: attempts, delay_seconds: Math.round(minutes * 60) };
  }
  return retry;
}

// Creates the campaign paused, uploads its contacts as CSV (the dialer checks every row), and
// starts it unless asked not to. A CSV the dialer refuses cancels the empty campaign.
async function createCampaign() {
  const value = (id) => document.getElementById(id).value.trim();
  const button = document.getElementById("create-button");
  const file = document.getElementById("contacts").files[0];
  if (!file) { note("create-note", "Choose a CSV file of contacts."); return; }
  const start = value("hours-start"), end = value("hours-end");
  if (!!start !== !!end) { note("create-note", "Give both ends of the calling hours, or neither."); return; }
  const campaign = {
    name: value("name"), agent_id: value("agent"), from: value("from"),
    calls_per_second: Number(value("cps")), max_concurrent: Number(value("concurrency")),
    retry: retryPolicy(), contacts: [], paused: true,
  };
  if (start) campaign.calling_hours = { start, end };
  if (value("time-zone")) campaign.time_zone = value("time-zone");
  button.disabled = true;
  note("create-note", "Creating…");
  try {
    const csv = await file.text();
    const { id } = await postJson("/api/campaigns", campaign);
    const path = `/api/campaigns/${encodeURIComponent(id)}`;
    try {
      await campaignsApi(`${path}/contacts`, { method: "POST", headers: { "Content-Type": "text/csv" }, body: csv });
    } catch (e) {
      await postJson(`${path}/cancel`).catch(() => {});
      throw new Error(`The contacts were refused (${e.message}); the campaign was not started.`);
    }
    if (!document.getElementById("paused").checked) await postJson(`${path}/resume`);
    location.href = `/campaigns?id=${encodeURIComponent(id)}`;
  } catch (e) {
    note("create-note", e.message);
    button.disabled = false;
  }
}

async function renderDnc() {
  const body = document.getElementById("dnc");
  let listing;
  try { listing = await campaignsApi("/api/dnc"); } catch (e) { note("dnc-note", e.message); return; }
  note("dnc-note", listing.numbers.length ? "" : "The list is empty.");
  body.replaceChildren(...listing.numbers.map((n) => {
    const remove = el("button", { type: "button", class: "remove" }, "Remove");
    remove.addEventListener("click", async () => {
      remove.disabled = true;
      try { await campaignsApi(`/api/dnc/${encodeURIComponent(n.number)}`, { method: "DELETE" }); } catch (e) { note("dnc-note", e.message); }
      renderDnc();
    });
    return el("tr", { class: "dnc-number", "data-number": n.number },
      cell("Number", n.number), cell("Reason", n.reason || "—"), cell("Added", fmtTime(n.added_at)), cell("", remove));
  }));
}

async function addDnc() {
  const number = document.getElementById("dnc-number");
  const reason = document.getElementById("dnc-reason");
  try {
    await postJson("/api/dnc", { numbers: [number.value.trim()], reason: reason.value.trim() });
    number.value = ""; reason.value = "";
  } catch (e) { note("dnc-note", e.message); return; }
  renderDnc();
}

// ---- one campaign: its settings, controls, progress and contacts ----
function campaignPage(params) {
  document.getElementById("detail-view").hidden = false;
  const id = params.get("id");
  const filter = { contact: params.get("contact") || "", result: params.get("result") || "" };
  document.getElementById("campaign-id").value = id;
  document.getElementById("contact-state").value = filter.contact;
  document.getElementById("contact-result").value = filter.result;
  renderCampaign(id, filter);
}

function retryText(retry) {
  const rules = Object.entries(retry || {}).map(([result, r]) =>
    `${RESULT_WORDS[result] || result}: ${r.max_attempts} attempts, ${Math.round(r.delay_seconds / 60)} min apart`);
  return rules.length ? rules.join("; ") : "no retries";
}

// One attempt: when it was dialed, what it came to, and its call (a link to the call's page).
function attemptItem(a) {
  const result = a.result ? RESULT_WORDS[a.result] || a.result : a.call_sid ? "in progress" : "being placed";
  return el("li", { class: "attempt", "data-result": a.result || "" },
    el("span", { class: "when" }, fmtTime(a.dial_at)), " · ",
    el("span", { class: "result" }, result),
    a.answered_by ? el("span", { class: "muted" }, ` (${a.answered_by})`) : null,
    ...(a.call_sid ? [" · ", el("a", { class: "call", href: `/sessions/${encodeURIComponent(a.call_sid)}` }, a.call_sid)] : []),
    a.error ? el("span", { class: "error" }, ` · ${a.error}`) : null);
}

async function renderCampaign(id, filter) {
  const path = `/api/campaigns/${encodeURIComponent(id)}`;
  let c;
  try { c = await campaignsApi(path); } catch (e) { note("campaign-note", e.message); return; }
  note("campaign-note", "");
  document.title = `${c.name || "Campaign"} · Switchboard`;
  document.getElementById("campaign-name").textContent = c.name || `Campaign ${c.id}`;
  document.body.dataset.campaignState = c.state;
  const fact = (label, value) => el("div", {}, el("dt", {}, label), el("dd", {}, value));
  const hours = c.calling_hours ? `${c.calling_hours.start}–${c.calling_hours.end} (${c.time_zone})` : "any time";
  document.getElementById("campaign-facts").replaceChildren(
    fact("State", c.state), fact("Agent", c.agent_id), fact("From", c.from),
    fact("Calls per second", String(c.calls_per_second)), fact("At once", String(c.max_concurrent)),
    fact("Calling hours", hours), fact("Retry", retryText(c.retry)), fact("Created", fmtTime(c.created_at)));
  const again = () => renderCampaign(id, filter);
  document.getElementById("campaign-actions").replaceChildren(
    controls(c, again, (t) => note("campaign-note", t)),
    el("a", { class: "export", href: `${path}/contacts.csv`, download: `campaign-${c.id}.csv` }, "Export CSV"));
  document.getElementById("campaign-progress").replaceChildren(progressPills(c.progress, c.contacts_total));
  const shown = c.contacts.filter((ct) => (!filter.contact || ct.state === filter.contact)
    && (!filter.result || ct.result === filter.result));
  const open = new Set([...document.querySelectorAll("#contacts-list details[open]")].map((d) => d.closest("tr").dataset.position));
  document.getElementById("contacts-list").replaceChildren(...shown.map((ct) => {
    const attempts = el("details", {}, el("summary", {}, String(ct.attempts.length)),
      el("ol", { class: "attempts" }, ...ct.attempts.map(attemptItem)));
    if (open.has(String(ct.position))) attempts.open = true;
    const due = ct.state === "pending" && ct.attempts.length ? ` · next ${fmtTime(ct.next_attempt_at)}` : "";
    return el("tr", { class: `contact ${ct.state}`, "data-position": String(ct.position), "data-to": ct.to },
      cell("#", String(ct.position)), cell("Number", ct.to),
      cell("State", `${CONTACT_STATE_WORDS[ct.state] || ct.state}${due}`),
      cell("Result", ct.result ? RESULT_WORDS[ct.result] || ct.result : "—"),
      cell("Attempts", attempts));
  }));
  const busy = c.state === "running" || c.contacts.some((ct) => ct.state === "dialing");
  clearTimeout(renderCampaign.timer);
  if (busy) renderCampaign.timer = setTimeout(again, REFRESH_MS);
}

if (document.body.dataset.page === "campaigns") {
  const params = new URLSearchParams(location.search);
  if (params.get("id")) campaignPage(params); else campaignsListPage(params);
}
