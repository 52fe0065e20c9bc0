// Answering a redelivered ToolCall with the first delivery's result, across replicas and
// languages: the scheme and bucket (`voice-tool-results`) of the Rust SDK (docs/tools.md).
//
// The first delivery claims `<tool>.<call_sid>.<call_id>` with a KV create holding `P<deadline ms>`,
// runs the handler and stores `R<encoded ToolResult>`; a copy waits for that result. A claim whose
// deadline passed (its replica died) is taken over with a compare-and-set.
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { Kvm, type KV } from "@nats-io/kv";
import type { NatsConnection } from "@nats-io/transport-node";
import { ToolResultSchema, type ToolResult } from "./gen/switchboard/v1/tool_pb.js";
import { codes } from "./tool.js";

export const RESULTS_BUCKET = "voice-tool-results";
export const RESULT_TTL_MS = 600_000;
const POLL_MS = 20;
const CLAIM_GRACE_MS = 2000;
const MAX_ID_LEN = 256;
const PENDING = 0x50; // 'P'
const RESULT = 0x52; // 'R'

export async function openResults(nc: NatsConnection): Promise<KV> {
  const kvm = new Kvm(nc);
  try {
    const kv = await kvm.open(RESULTS_BUCKET, { bindOnly: false });
    await kv.status(); // fails when the bucket does not exist
    return kv;
  } catch (e) {
    if (!String(e).includes("not found")) throw e;
  }
  try {
    return await kvm.create(RESULTS_BUCKET, {
      history: 1,
      ttl: RESULT_TTL_MS,
      description: "Switchboard tool results by (tool, call_sid, call_id), for retries",
    });
  } catch {
    return await kvm.open(RESULTS_BUCKET);
  }
}

function escape(part: string): string {
  let out = "";
  for (const b of new TextEncoder().encode(part)) {
    const c = String.fromCharCode(b);
    out += /[A-Za-z0-9_-]/.test(c) ? c : `=${b.toString(16).toUpperCase().padStart(2, "0")}`;
  }
  return out;
}

/** The KV key of one invocation, or undefined when it cannot be identified. */
export function key(tool: string, callSid: string, callId: string): string | undefined {
  if (!callSid || !callId || new TextEncoder().encode(callId).length > MAX_ID_LEN) return undefined;
  return `${escape(tool)}.${escape(callSid)}.${escape(callId)}`;
}

function pending(deadlineMs: number): Uint8Array {
  return new TextEncoder().encode(`P${deadlineMs}`);
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** `{revision}` when this delivery runs the handler; `{result}` when another one did. */
export async function claim(
  kv: KV,
  k: string,
  runMs: number,
  waitMs: number,
): Promise<{ revision: number } | { result: ToolResult }> {
  const claimMs = runMs + CLAIM_GRACE_MS;
  const giveUp = Date.now() + waitMs;
  for (;;) {
    try {
      return { revision: await kv.create(k, pending(Date.now() + claimMs)) };
    } catch {
      // The key exists (or the create raced): wait for its result below.
    }
    for (;;) {
      const entry = await kv.get(k);
      if (!entry || entry.operation !== "PUT") break; // expired or deleted: claim afresh
      const value = entry.value;
      if (value[0] === RESULT) return { result: fromBinary(ToolResultSchema, value.subarray(1)) };
      const deadline = value[0] === PENDING ? Number(new TextDecoder().decode(value.subarray(1))) : NaN;
      if (!Number.isFinite(deadline) || Date.now() > deadline) {
        try {
          return { revision: await kv.update(k, pending(Date.now() + claimMs), entry.revision) };
        } catch {
          // Another copy took it over first.
        }
      }
      if (Date.now() >= giveUp) {
        return {
          result: create(ToolResultSchema, {
            result: {
              case: "error",
              value: { code: codes.TIMEOUT, message: "an earlier delivery of this tool call is still running" },
            },
          }),
        };
      }
      await sleep(POLL_MS);
    }
  }
}

export async function finish(kv: KV, k: string, revision: number, result: ToolResult): Promise<void> {
  const encoded = toBinary(ToolResultSchema, result);
  const value = new Uint8Array(encoded.length + 1);
  value[0] = RESULT;
  value.set(encoded, 1);
  await kv.update(k, value, revision);
}
