// `ToolServer` and `serve`: tools as NATS request/reply services, the way the Rust SDK runs them.
//
// Each tool has one queue subscription (`<prefix>.tools.<name>`, group `tools.<name>`), so any
// number of replicas share the load. Every request runs in its own promise (at most
// `maxConcurrency` at once; beyond that requests wait in the subscription's buffer), so a slow
// request never holds up a fast one. Each request is decoded, its arguments checked against the
// tool's JSON Schema, the handler run under its deadline, and every failure answered as a
// ToolError. On stop the tools are withdrawn from the registry, the subscriptions drained and
// every request already received answered.
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import type { KV } from "@nats-io/kv";
import { connect, type Msg, type NatsConnection, type Subscription } from "@nats-io/transport-node";
import { Ajv, type ValidateFunction } from "ajv";
import {
  ToolCallSchema,
  ToolResultSchema,
  ToolSpecSchema,
  type ToolCall,
  type ToolResult,
} from "./gen/switchboard/v1/tool_pb.js";
import * as idempotency from "./idempotency.js";
import { REFRESH_MS, Registration } from "./registry.js";
import { Context, type Handler, Tool, type ToolDeclaration, ToolFailure, codes, handlerDeadlineMs } from "./tool.js";

export const VERSION = "0.1.0";
/** Requests one server runs at once by default. */
export const DEFAULT_MAX_CONCURRENCY = 256;
const WITHDRAW_TIMEOUT_MS = 2000;

export interface ServerOptions {
  /** Requests run at once (default 256); more wait in the subscription's buffer. */
  maxConcurrency?: number;
  /** Answer a redelivered call from the first delivery's result (default true). */
  idempotent?: boolean;
  /** How often the registration is refreshed (default 5000 ms). */
  refreshMs?: number;
}

function failure(code: string, message: string): ToolResult {
  return create(ToolResultSchema, { result: { case: "error", value: { code, message } } });
}

class Slots {
  #free: number;
  #waiting: Array<() => void> = [];
  constructor(n: number) {
    this.#free = n;
  }
  async acquire(): Promise<void> {
    if (this.#free > 0) {
      this.#free--;
      return;
    }
    await new Promise<void>((resolve) => this.#waiting.push(resolve));
  }
  release(): void {
    const next = this.#waiting.shift();
    if (next) next();
    else this.#free++;
  }
}

interface Served {
  tool: Tool;
  handler: Handler;
  validate: ValidateFunction;
}

/** A set of tools to serve: `add` them, then `start` (or use `serve`). */
export class ToolServer {
  readonly #tools = new Map<string, Served>();
  readonly #options: Required<ServerOptions>;
  readonly #ajv = new Ajv({ strict: false, allErrors: false });
  #nc: NatsConnection | undefined;
  #subs: Subscription[] = [];
  #loops: Promise<void>[] = [];
  #inFlight = new Set<Promise<void>>();
  #registration: Registration | undefined;
  #refresher: ReturnType<typeof setInterval> | undefined;
  #results: KV | undefined;
  #specs: Array<[string, Uint8Array]> = [];

  constructor(options: ServerOptions = {}) {
    this.#options = {
      maxConcurrency: options.maxConcurrency ?? DEFAULT_MAX_CONCURRENCY,
      idempotent: options.idempotent ?? true,
      refreshMs: options.refreshMs ?? REFRESH_MS,
    };
  }

  /**
   * Adds a tool. `handler(ctx, args)` gets the validated arguments and returns a JSON-serializable
   * output (or throws `ToolFailure`).
   */
  add<A = any>(tool: Tool | ToolDeclaration, handler: Handler<A>): this {
    const t = tool instanceof Tool ? tool : new Tool(tool);
    if (this.#tools.has(t.name)) throw new Error(`tool \`${t.name}\` was added twice`);
    this.#tools.set(t.name, { tool: t, handler, validate: this.#ajv.compile(t.parameters) });
    return this;
  }

  /** Subscribes every tool, then registers it; requests are answered once this resolves. */
  async start(nc: NatsConnection, prefix = "voice"): Promise<void> {
    if (this.#tools.size === 0) throw new Error("no tools were added to the server");
    this.#nc = nc;
    const slots = new Slots(this.#options.maxConcurrency);
    for (const served of this.#tools.values()) {
      const name = served.tool.name;
      const sub = nc.subscribe(`${prefix}.tools.${name}`, { queue: `tools.${name}` });
      this.#subs.push(sub);
      this.#loops.push(
        (async () => {
          for await (const msg of sub) {
            await slots.acquire();
            const task = this.#handle(served, msg).finally(() => {
              slots.release();
              this.#inFlight.delete(task);
            });
            this.#inFlight.add(task);
          }
        })(),
      );
    }
    await nc.flush();
    if (this.#options.idempotent) {
      try {
        this.#results = await idempotency.openResults(nc);
      } catch (e) {
        console.warn(`switchboard-tools: no results bucket; redelivered calls will run again: ${e}`);
      }
    }
    this.#specs = [...this.#tools.values()].map((s) => [s.tool.name, toBinaryOf(s.tool)]);
    this.#registration = new Registration(nc, VERSION);
    try {
      await this.#registration.put(this.#specs);
      console.info(`switchboard-tools: tools registered: ${[...this.#tools.keys()].join(", ")}`);
    } catch (e) {
      console.warn(`switchboard-tools: registering tools failed; will retry: ${e}`);
    }
    this.#refresher = setInterval(() => {
      this.#registration?.put(this.#specs).catch((e) => console.warn(`switchboard-tools: refreshing tool registry failed: ${e}`));
    }, this.#options.refreshMs);
  }

  /** Withdraws the tools, drains the subscriptions and answers what was received. */
  async stop(): Promise<void> {
    if (this.#refresher) clearInterval(this.#refresher);
    this.#refresher = undefined;
    if (this.#registration) {
      const withdrawn = this.#registration.withdraw([...this.#tools.keys()]);
      const timeout = new Promise<never>((_, reject) => setTimeout(() => reject(new Error("timed out")), WITHDRAW_TIMEOUT_MS).unref());
      try {
        await Promise.race([withdrawn, timeout]);
      } catch (e) {
        console.warn(`switchboard-tools: withdrawing tools failed; they expire from the registry: ${e}`);
      }
      this.#registration = undefined;
    }
    await Promise.all(this.#subs.map((s) => s.drain().catch(() => undefined)));
    await Promise.all(this.#loops);
    while (this.#inFlight.size > 0) await Promise.allSettled([...this.#inFlight]);
    this.#subs = [];
    this.#loops = [];
  }

  async #handle(served: Served, msg: Msg): Promise<void> {
    if (!msg.reply) {
      console.warn(`switchboard-tools: ${served.tool.name}: request without a reply subject dropped`);
      return;
    }
    const result = await this.respond(served.tool.name, msg.data, msg.headers?.get("traceparent") || undefined);
    try {
      msg.respond(toBinary(ToolResultSchema, result));
    } catch (e) {
      console.warn(`switchboard-tools: ${served.tool.name}: sending the result failed: ${e}`);
    }
  }

  /** Turns one request payload into its ToolResult; every failure is an error result. */
  async respond(name: string, payload: Uint8Array, traceparent?: string): Promise<ToolResult> {
    const served = this.#tools.get(name);
    if (!served) return failure(codes.INVALID_REQUEST, `no tool \`${name}\` is served here`);
    const { tool } = served;
    let call: ToolCall;
    try {
      call = fromBinary(ToolCallSchema, payload);
    } catch (e) {
      return failure(codes.INVALID_REQUEST, `the request is not a switchboard.v1.ToolCall: ${e}`);
    }
    if (call.name && call.name !== tool.name) {
      return failure(codes.INVALID_REQUEST, `the request names tool \`${call.name}\` but was sent to \`${tool.name}\``);
    }
    let args: unknown;
    try {
      args = call.arguments.trim() ? JSON.parse(call.arguments) : {};
    } catch (e) {
      return failure(codes.INVALID_ARGUMENTS, `the arguments are not valid JSON (${(e as Error).message})`);
    }
    if (!served.validate(args)) {
      const error = served.validate.errors?.[0];
      const where = (error?.instancePath ?? "").split("/").filter(Boolean).join(".");
      const field = where ? `\`${where}\` ` : "";
      const detail = error?.params && "missingProperty" in error.params ? `missing required field \`${error.params.missingProperty}\`` : `${field}${error?.message ?? "does not match the schema"}`;
      return failure(codes.INVALID_ARGUMENTS, `invalid arguments for \`${tool.name}\`: ${detail}`);
    }

    const deadlineMs = handlerDeadlineMs(tool.timeoutMs, call.timeoutMs);
    let claimed: { key: string; revision: number } | undefined;
    const k = this.#results ? idempotency.key(tool.name, call.callSid, call.callId) : undefined;
    if (this.#results && k) {
      try {
        const c = await idempotency.claim(this.#results, k, tool.timeoutMs, deadlineMs);
        if ("result" in c) return c.result;
        claimed = { key: k, revision: c.revision };
      } catch (e) {
        console.warn(`switchboard-tools: tool call deduplication unavailable: ${e}`);
      }
    }
    const result = await this.#run(served, call, args, deadlineMs, traceparent);
    if (claimed && this.#results) {
      await idempotency.finish(this.#results, claimed.key, claimed.revision, result).catch((e) => console.warn(`switchboard-tools: storing the tool result for redeliveries failed: ${e}`));
    }
    return result;
  }

  async #run(served: Served, call: ToolCall, args: unknown, deadlineMs: number, traceparent?: string): Promise<ToolResult> {
    const { tool } = served;
    const abort = new AbortController();
    const ctx = new Context(call.callSid, call.callId, call.agentId, call.caller, deadlineMs, abort.signal, traceparent);
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timedOut = new Promise<"timeout">((resolve) => {
      timer = setTimeout(() => resolve("timeout"), deadlineMs);
    });
    let result: ToolResult;
    try {
      const outcome = await Promise.race([Promise.resolve().then(() => served.handler(ctx, args)), timedOut]);
      if (outcome === "timeout") {
        abort.abort();
        console.warn(`switchboard-tools: ${tool.name} timed out after ${deadlineMs} ms (call ${call.callSid}${ctx.traceId ? `, trace ${ctx.traceId}` : ""})`);
        result = failure(codes.TIMEOUT, `\`${tool.name}\` did not finish within ${deadlineMs} ms`);
      } else {
        const text = JSON.stringify(outcome ?? {});
        result = create(ToolResultSchema, { result: { case: "output", value: text } });
      }
    } catch (e) {
      if (e instanceof ToolFailure) {
        result = failure(e.code, e.message);
      } else {
        console.error(`switchboard-tools: ${tool.name} handler crashed (call ${call.callSid}${ctx.traceId ? `, trace ${ctx.traceId}` : ""}):`, e);
        result = failure(codes.PANICKED, `\`${tool.name}\` crashed while handling the request`);
      }
    } finally {
      clearTimeout(timer);
    }
    if (ctx.outcome) result.outcome = ctx.outcome;
    return result;
  }
}

function toBinaryOf(tool: Tool): Uint8Array {
  return toBinary(ToolSpecSchema, tool.spec());
}

/**
 * nats.js connect options from the contract's env: NATS_URL, NATS_USER + NATS_PASSWORD. With a
 * user, replies arrive under `_INBOX_<user>` (a `-next` rotation suffix left out): the only inbox a
 * tool's NATS user may subscribe to (see proto/src/permissions.rs).
 */
export function connectOptions(name: string) {
  return {
    servers: (process.env.NATS_URL ?? "nats://127.0.0.1:4222").split(","),
    name,
    maxReconnectAttempts: -1,
    ...(process.env.NATS_USER
      ? {
          user: process.env.NATS_USER,
          pass: process.env.NATS_PASSWORD ?? "",
          inboxPrefix: inboxPrefix(process.env.NATS_USER),
        }
      : {}),
  };
}

/** The inbox prefix of a tool connecting as NATS user `user`. */
export function inboxPrefix(user: string): string {
  return `_INBOX_${user.endsWith("-next") ? user.slice(0, -"-next".length) : user}`;
}

/** Connects from the environment, serves until SIGTERM or SIGINT, then stops cleanly. */
export async function serveTools(server: ToolServer, name = "switchboard tool"): Promise<void> {
  const nc = await connect(connectOptions(name));
  const prefix = process.env.NATS_SUBJECT_PREFIX ?? "voice";
  let stop!: () => void;
  const stopped = new Promise<void>((resolve) => (stop = resolve));
  process.once("SIGTERM", () => stop());
  process.once("SIGINT", () => stop());
  await server.start(nc, prefix);
  console.info(`switchboard-tools: serving on ${prefix}.tools.*`);
  await stopped;
  console.info("switchboard-tools: stopping: draining requests in flight");
  await server.stop();
  await nc.drain();
}

/** Serves one tool until SIGTERM or SIGINT (the Rust SDK's `ToolServer::serve`). */
export async function serve<A = any>(tool: Tool | ToolDeclaration, handler: Handler<A>, options: ServerOptions = {}): Promise<void> {
  const t = tool instanceof Tool ? tool : new Tool(tool);
  await serveTools(new ToolServer(options).add(t, handler), t.name);
}
