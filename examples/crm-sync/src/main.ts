// An outside subscriber of Switchboard call events: keeps a CRM-style `crm_calls` table and each
// call's notes (`crm_call_notes`: what was said, which tools ran) in Postgres in sync, reading VOICE_EVENTS through its own durable consumer under the read-only
// `Outside` NATS user (docs/events.md).
//
// Exactly once in effect: each event is applied in one transaction together with its
// (call_sid, seq) in `crm_applied`, and acknowledged only after the commit. A redelivered event
// finds its ledger row and changes nothing; an event not yet acknowledged when the process stops
// is redelivered when it starts again.
import { AckPolicy, DeliverPolicy, connect, type JsMsg } from "nats";
import pg from "pg";
import { switchboard } from "../generated/switchboard.js";

const STREAM = "VOICE_EVENTS";

function setting(name: string, fallback?: string): string {
  const value = process.env[name] ?? fallback;
  if (value === undefined || value === "") {
    console.error(`crm-sync: ${name} is not set`);
    process.exit(2);
  }
  return value;
}

const natsUrl = setting("NATS_URL", "nats://127.0.0.1:4222");
const user = setting("NATS_USER");
const password = setting("NATS_PASSWORD");
const consumer = setting("CONSUMER", user);
const prefix = setting("NATS_SUBJECT_PREFIX", "voice");
const pool = new pg.Pool({ connectionString: setting("DATABASE_URL"), max: 2 });

await pool.query(`
  CREATE TABLE IF NOT EXISTS crm_calls (
    call_sid TEXT PRIMARY KEY,
    agent_id TEXT,
    caller TEXT,
    status TEXT NOT NULL DEFAULT 'in-progress',
    end_reason TEXT,
    outcome TEXT,
    transcript_lines INT NOT NULL DEFAULT 0,
    tool_calls INT NOT NULL DEFAULT 0,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now());
  CREATE TABLE IF NOT EXISTS crm_call_notes (
    call_sid TEXT NOT NULL,
    seq BIGINT NOT NULL,
    -- 'user', 'assistant' or 'system' for what was said; 'tool' for a tool call.
    author TEXT NOT NULL,
    -- What was said, or the tool's name.
    text TEXT NOT NULL,
    PRIMARY KEY (call_sid, seq));
  CREATE TABLE IF NOT EXISTS crm_applied (
    call_sid TEXT NOT NULL,
    seq BIGINT NOT NULL,
    PRIMARY KEY (call_sid, seq));`);

/** The change one event makes to its call's row (after the row exists). */
function change(event: switchboard.v1.CallEvent): [string, unknown[]] | null {
  if (event.started) {
    return ["agent_id = $2, caller = $3", [event.started.agent_id, event.started.from]];
  }
  if (event.transcript) return ["transcript_lines = transcript_lines + 1", []];
  if (event.tool) return ["tool_calls = tool_calls + 1", []];
  if (event.outcome) return ["outcome = $2", [event.outcome.outcome]];
  if (event.ended) return ["status = 'ended', end_reason = $2", [event.ended.reason]];
  return null;
}

/** The note one event adds to its call: who (a speaker, or `tool`) and what. */
function note(event: switchboard.v1.CallEvent): [string, string] | null {
  if (event.transcript) {
    const role = switchboard.v1.Role[event.transcript.role ?? 0] ?? "ROLE_UNSPECIFIED";
    return [role.replace(/^ROLE_/, "").toLowerCase(), event.transcript.text ?? ""];
  }
  if (event.tool) return ["tool", event.tool.name ?? ""];
  return null;
}

async function apply(message: JsMsg): Promise<void> {
  const event = switchboard.v1.CallEvent.decode(message.data);
  const seq = Number(event.seq);
  const db = await pool.connect();
  try {
    await db.query("BEGIN");
    const fresh = await db.query(
      "INSERT INTO crm_applied (call_sid, seq) VALUES ($1, $2) ON CONFLICT DO NOTHING",
      [event.call_sid, seq],
    );
    if (fresh.rowCount === 1) {
      await db.query(
        "INSERT INTO crm_calls (call_sid) VALUES ($1) ON CONFLICT DO NOTHING",
        [event.call_sid],
      );
      const update = change(event);
      if (update) {
        await db.query(
          `UPDATE crm_calls SET ${update[0]}, updated_at = now() WHERE call_sid = $1`,
          [event.call_sid, ...update[1]],
        );
      }
      const added = note(event);
      if (added) {
        await db.query(
          "INSERT INTO crm_call_notes (call_sid, seq, author, text) VALUES ($1, $2, $3, $4)",
          [event.call_sid, seq, ...added],
        );
      }
    }
    await db.query("COMMIT");
  } catch (error) {
    await db.query("ROLLBACK").catch(() => {});
    throw error;
  } finally {
    db.release();
  }
}

const nc = await connect({ servers: natsUrl, user, pass: password, inboxPrefix: `_INBOX_${user}` });
// The outside user may not call $JS.API.INFO; skip the API check.
const jsm = await nc.jetstreamManager({ checkAPI: false });
await jsm.consumers.add(STREAM, {
  durable_name: consumer,
  ack_policy: AckPolicy.Explicit,
  deliver_policy: DeliverPolicy.All,
  filter_subject: `${prefix}.events.>`,
  ack_wait: 30_000_000_000,
});
const messages = await (await nc.jetstream({ checkAPI: false }).consumers.get(STREAM, consumer)).consume({
  max_messages: 100,
});

let stopping = false;
for (const signal of ["SIGTERM", "SIGINT"] as const) {
  process.on(signal, () => {
    stopping = true;
    messages.stop();
  });
}
console.log(`crm-sync: following ${STREAM} as ${consumer}`);
for await (const message of messages) {
  try {
    await apply(message);
    message.ack();
  } catch (error) {
    console.error("crm-sync: applying an event failed; it will be redelivered", error);
    message.nak(2000);
  }
  if (stopping) break;
}
await nc.drain();
await pool.end();
console.log("crm-sync: stopped");
