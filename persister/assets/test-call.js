"use strict";
// The test-call page: talks to an agent through the gateway's GET /web-call, in the message
// format of Twilio Media Streams. The microphone is captured, resampled to 8 kHz and mu-law
// encoded in an AudioWorklet (/assets/web-call-worklet.js) and sent as 20 ms `media` frames;
// the agent's audio is played there too, `mark`s echoed once their audio has played and
// `clear` obeyed, so barge-in works as on the phone. The transcript comes from /api/live.
// Uses el(), api(), line() and startLive() from app.js.

async function postJson(path, body) {
  const r = await fetch(path, {
    method: "POST", credentials: "same-origin",
    headers: { "content-type": "application/json" }, body: JSON.stringify(body),
  });
  if (r.status === 401) { location.href = "/login"; throw new Error("signed out"); }
  const answer = await r.json();
  if (!r.ok) throw new Error(answer.error || `HTTP ${r.status}`);
  return answer;
}

const b64encode = (bytes) => { let s = ""; for (const b of bytes) s += String.fromCharCode(b); return btoa(s); };
const b64decode = (text) => Uint8Array.from(atob(text), (c) => c.charCodeAt(0));

function testCallPage() {
  const form = document.getElementById("call-form");
  const select = document.getElementById("agent");
  const startButton = document.getElementById("start");
  const hangupButton = document.getElementById("hangup");
  const status = document.getElementById("status");
  const error = document.getElementById("call-error");
  const transcript = document.getElementById("transcript");
  const record = document.getElementById("record");
  const recordLink = document.getElementById("record-link");
  const fail = (message) => { error.textContent = message; error.hidden = false; };
  let call = null; // {callSid, ws, ctx, mic, streamSid, seq}

  api("/api/agents").then((body) => {
    for (const a of body.agents) select.append(el("option", { value: a.id }, a.id));
    const wanted = new URLSearchParams(location.search).get("agent");
    if (wanted) select.value = wanted;
  }).catch((e) => fail(e.message));

  startLive({ event: (ev) => {
    if (!call || ev.call_sid !== call.callSid) return;
    if (ev.kind === "transcript") transcript.append(line(ev.role, ev.text, ev.offset_ms, ev.interrupted, ev.heard_ms));
    else if (ev.kind === "tool") transcript.append(el("li", { class: "line system" }, `tool ${ev.name} (${fmtMs(ev.latency_ms)})`));
    else if (ev.kind === "ended") status.textContent = `Call ended: ${ev.reason || ev.outcome || "ended"}.`;
  } });

  const send = (msg) => { if (call && call.ws.readyState === WebSocket.OPEN) call.ws.send(JSON.stringify(msg)); };
  const nextSeq = () => String(++call.seq);

  function finish(reason) {
    if (!call) return;
    const ended = call;
    call = null;
    ended.mic.getTracks().forEach((t) => t.stop());
    ended.ctx.close();
    startButton.disabled = false; hangupButton.disabled = true;
    status.textContent = reason;
    recordLink.href = `/sessions/${encodeURIComponent(ended.callSid)}`;
    record.hidden = false;
    document.body.dataset.callState = "ended";
  }

  async function start() {
    error.hidden = true; record.hidden = true; transcript.replaceChildren();
    startButton.disabled = true;
    status.textContent = "Starting…";
    let ctx = null, mic = null;
    try {
      const ticket = await postJson("/api/web-call-ticket", { agent: select.value });
      mic = await navigator.mediaDevices.getUserMedia({
        audio: { channelCount: 1, echoCancellation: true, noiseSuppression: true, autoGainControl: true },
      });
      ctx = new AudioContext();
      await ctx.audioWorklet.addModule("/assets/web-call-worklet.js");
      const capture = new AudioWorkletNode(ctx, "web-call-capture", { numberOfOutputs: 0 });
      const playback = new AudioWorkletNode(ctx, "web-call-playback", { numberOfInputs: 0, outputChannelCount: [1] });
      playback.connect(ctx.destination);
      ctx.createMediaStreamSource(mic).connect(capture);
      await ctx.resume();
      const streamSid = `MZ${crypto.randomUUID().replaceAll("-", "")}`;
      const ws = new WebSocket(ticket.url);
      call = { callSid: ticket.call_sid, ws, ctx, mic, streamSid, seq: 0, chunk: 0 };
      document.body.dataset.callSid = ticket.call_sid;
      document.body.dataset.callState = "connecting";
      ws.onopen = () => {
        send({ event: "connected", protocol: "Call", version: "1.0.0" });
        send({
          event: "start", sequenceNumber: nextSeq(), streamSid,
          start: {
            streamSid, accountSid: "", callSid: "", tracks: ["inbound"], customParameters: {},
            mediaFormat: { encoding: "audio/x-mulaw", sampleRate: 8000, channels: 1 },
          },
        });
        status.textContent = "Connected: speak.";
        hangupButton.disabled = false;
        document.body.dataset.callState = "live";
      };
      capture.port.onmessage = (e) => {
        if (!call || call.ws !== ws) return;
        const chunk = ++call.chunk;
        send({
          event: "media", sequenceNumber: nextSeq(), streamSid,
          media: { track: "inbound", chunk: String(chunk), timestamp: String((chunk - 1) * 20), payload: b64encode(e.data) },
        });
      };
      playback.port.onmessage = (e) => {
        send({ event: "mark", sequenceNumber: nextSeq(), streamSid, mark: { name: e.data.played } });
        document.body.dataset.marksPlayed = String(Number(document.body.dataset.marksPlayed || 0) + 1);
      };
      ws.onmessage = (m) => {
        let msg;
        try { msg = JSON.parse(m.data); } catch (_) { return; }
        if (msg.event === "media") {
          const bytes = b64decode(msg.media.payload);
          playback.port.postMessage({ type: "audio", bytes });
          // Milliseconds of the agent's audio received (8 bytes a millisecond), for the eye and tests.
          document.body.dataset.agentAudioMs = String(Number(document.body.dataset.agentAudioMs || 0) + bytes.length / 8);
        }
        else if (msg.event === "mark") playback.port.postMessage({ type: "mark", name: msg.mark.name });
        else if (msg.event === "clear") playback.port.postMessage({ type: "clear" });
      };
      ws.onclose = (e) => {
        if (call && call.ws === ws) {
          finish(e.code === 1000 ? "Call ended." : `Call ended (${e.code}${e.reason ? `: ${e.reason}` : ""}).`);
        }
      };
    } catch (e) {
      if (mic) mic.getTracks().forEach((t) => t.stop());
      if (ctx) ctx.close();
      call = null;
      startButton.disabled = false;
      status.textContent = "Not connected.";
      fail(e.message);
    }
  }

  form.addEventListener("submit", (e) => { e.preventDefault(); if (!call) start(); });
  hangupButton.addEventListener("click", () => {
    if (!call) return;
    send({ event: "stop", sequenceNumber: nextSeq(), streamSid: call.streamSid, stop: { accountSid: "", callSid: "" } });
    call.ws.close(1000);
    finish("Hung up.");
  });
}

if (document.body.dataset.page === "test-call") testCallPage();
