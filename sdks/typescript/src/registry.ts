// The tool registry, KV bucket `voice-tools`, with the settings every Switchboard process uses.
//
// Keys: `<tool>` holds the encoded ToolSpec (what call-workers offer the model); `<tool>.<instance>`
// holds one serving replica's heartbeat (JSON). Both are re-put every REFRESH_MS and expire
// ENTRY_MAX_AGE_MS after their last put. On a clean stop a replica deletes its heartbeat, and the
// spec too when no other replica serves the tool, so the tool leaves the model's list at once; a
// replica that dies leaves it within the max age.
import { randomBytes } from "node:crypto";
import { hostname } from "node:os";
import { jetstreamManager } from "@nats-io/jetstream";
import { Kvm, type KV } from "@nats-io/kv";
import type { NatsConnection } from "@nats-io/transport-node";

export const TOOLS_BUCKET = "voice-tools";
export const REFRESH_MS = 5_000;
export const ENTRY_MAX_AGE_MS = 15_000;
const DESCRIPTION = "Switchboard tool registry: <tool> -> ToolSpec, <tool>.<instance> -> heartbeat";

/**
 * Opens `voice-tools`, creating it (history 1, max age 15 s) if missing; a bucket made with other
 * settings is updated to these, or used as is (with a warning) if that is not allowed.
 */
export async function openRegistry(nc: NatsConnection): Promise<KV> {
  const kvm = new Kvm(nc);
  let kv: KV;
  try {
    kv = await kvm.open(TOOLS_BUCKET, { bindOnly: false });
    const status = await kv.status();
    if (status.ttl !== ENTRY_MAX_AGE_MS || status.history !== 1) {
      try {
        const jsm = await jetstreamManager(nc);
        const config = status.streamInfo.config;
        const maxAge = ENTRY_MAX_AGE_MS * 1_000_000; // nanoseconds
        await jsm.streams.update(config.name, {
          ...config,
          max_age: maxAge,
          max_msgs_per_subject: 1,
          duplicate_window: Math.min(config.duplicate_window || maxAge, maxAge),
        });
      } catch (e) {
        console.warn(`switchboard-tools: the tool registry has other settings and cannot be updated here (${e}); stopped tools may stay listed`);
      }
    }
    return kv;
  } catch (e) {
    if (!String(e).includes("not found")) throw e;
  }
  try {
    return await kvm.create(TOOLS_BUCKET, { history: 1, ttl: ENTRY_MAX_AGE_MS, description: DESCRIPTION });
  } catch {
    // Another process may have created it meanwhile.
    return await kvm.open(TOOLS_BUCKET);
  }
}

export function instanceKey(tool: string, instance: string): string {
  return `${tool}.${instance}`;
}

/** One serving replica, as its heartbeat describes it. */
export interface Instance {
  instance: string;
  host: string;
  pid: number;
  sdk: string;
  version: string;
  started_ms: number;
}

/** This replica's entries: specs and heartbeats, put periodically and withdrawn on stop. */
export class Registration {
  #kv: KV | undefined;
  readonly instance: Instance;

  constructor(
    private readonly nc: NatsConnection,
    version: string,
  ) {
    this.instance = {
      instance: randomBytes(6).toString("hex"),
      host: process.env.HOSTNAME || hostname(),
      pid: process.pid,
      sdk: "typescript",
      version,
      started_ms: Date.now(),
    };
  }

  async #store(): Promise<KV> {
    if (!this.#kv) this.#kv = await openRegistry(this.nc);
    return this.#kv;
  }

  async put(specs: Array<[string, Uint8Array]>): Promise<void> {
    const kv = await this.#store();
    const heartbeat = new TextEncoder().encode(JSON.stringify(this.instance));
    try {
      for (const [name, spec] of specs) {
        await kv.put(name, spec);
        await kv.put(instanceKey(name, this.instance.instance), heartbeat);
      }
    } catch (e) {
      this.#kv = undefined;
      throw e;
    }
  }

  async withdraw(names: string[]): Promise<void> {
    const kv = await this.#store();
    for (const name of names) await kv.delete(instanceKey(name, this.instance.instance));
    const others = await serving(kv);
    for (const name of names) {
      if (!others.has(name)) await kv.delete(name);
    }
  }
}

/** The tools some replica has a live heartbeat for. */
export async function serving(kv: KV): Promise<Set<string>> {
  const tools = new Set<string>();
  for await (const key of await kv.keys()) {
    const dot = key.indexOf(".");
    if (dot > 0) tools.add(key.slice(0, dot));
  }
  return tools;
}
