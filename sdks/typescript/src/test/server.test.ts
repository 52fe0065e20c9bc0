// The TypeScript SDK against a real nats-server: what the Rust SDK guarantees, in TypeScript.
import assert from "node:assert/strict";
import { spawn, execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { Kvm } from "@nats-io/kv";
import { connect, headers, type NatsConnection } from "@nats-io/transport-node";
import { ENTRY_MAX_AGE_MS, TIMEOUT_MARGIN_MS, ToolFailure, ToolServer, codes, handlerDeadlineMs, openRegistry } from "../index.js";
import { ToolCallSchema, ToolResultSchema, ToolSpecSchema, type ToolResult } from "../gen/switchboard/v1/tool_pb.js";
import * as idempotency from "../idempotency.js";
import { NatsServer, ROOT } from "./nats.js";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const ORDERS = {
  name: "order_status",
  description: "Where an order is.",
  parameters: {
    type: "object" as const,
    properties: { order: { type: "string" }, sleep: { type: "number" } },
    required: ["order"],
  },
  timeoutMs: 5000,
  version: "1.2.3",
};
const runs: string[] = [];

async function orderStatus(ctx: any, args: { order: string; sleep?: number }) {
  runs.push(`${ctx.callSid}/${ctx.callId}`);
  if (args.sleep) await sleep(args.sleep * 1000);
  if (args.order === "crash") throw new Error("bug");
  if (args.order === "missing") throw ToolFailure.notFound("No such order.");
  if (args.order === "trace") return { traceparent: ctx.traceparent, traceId: ctx.traceId };
  ctx.setOutcome("status_given");
  return { order: args.order, status: "shipped", caller: ctx.caller };
}

function call(args: unknown, opts: { callId?: string; timeoutMs?: number; name?: string } = {}): Uint8Array {
  return toBinary(
    ToolCallSchema,
    create(ToolCallSchema, {
      callSid: "CA1",
      callId: opts.callId ?? "call_1",
      name: opts.name ?? "order_status",
      arguments: typeof args === "string" ? args : JSON.stringify(args),
      agentId: "desk",
      caller: "+15550001234",
      timeoutMs: opts.timeoutMs ?? 5000,
    }),
  );
}

async function request(nc: NatsConnection, payload: Uint8Array, traceparent?: string): Promise<ToolResult> {
  const h = headers();
  if (traceparent) h.set("traceparent", traceparent);
  const msg = await nc.request("voice.tools.order_status", payload, { timeout: 10_000, headers: h });
  return fromBinary(ToolResultSchema, msg.data);
}

function errorOf(r: ToolResult): { code: string; message: string } | undefined {
  return r.result.case === "error" ? r.result.value : undefined;
}

let nats: NatsServer;
before(async () => {
  nats = await NatsServer.start();
});
after(async () => {
  await nats.stop();
});

async function running(options = {}) {
  const toolNc = await connect({ servers: nats.url });
  const nc = await connect({ servers: nats.url });
  const server = new ToolServer(options).add(ORDERS, orderStatus);
  await server.start(toolNc);
  return {
    nc,
    server,
    async close() {
      await server.stop();
      await toolNc.close();
      await nc.close();
    },
  };
}

test("registers and answers", async () => {
  const r = await running();
  try {
    const kv = await new Kvm(r.nc).open("voice-tools");
    const spec = fromBinary(ToolSpecSchema, (await kv.get("order_status"))!.value);
    assert.equal(spec.name, "order_status");
    assert.equal(spec.timeoutMs, 5000);
    assert.equal(spec.version, "1.2.3");
    assert.deepEqual(JSON.parse(spec.parametersSchema).required, ["order"]);
    const beats: string[] = [];
    for await (const k of await kv.keys()) if (k.startsWith("order_status.")) beats.push(k);
    assert.equal(beats.length, 1);
    assert.equal(JSON.parse(new TextDecoder().decode((await kv.get(beats[0]))!.value)).sdk, "typescript");

    const ok = await request(r.nc, call({ order: "A1" }, { callId: "first" }));
    assert.equal(ok.result.case, "output");
    assert.deepEqual(JSON.parse(ok.result.value as string), { order: "A1", status: "shipped", caller: "+15550001234" });
    assert.equal(ok.outcome, "status_given");
    const missing = await request(r.nc, call({ order: "missing" }, { callId: "c2" }));
    assert.deepEqual(errorOf(missing), { $typeName: "switchboard.v1.ToolError", code: "not_found", message: "No such order." });
  } finally {
    await r.close();
  }
});

test("a slow request does not hold back fast ones", async () => {
  const r = await running({ idempotent: false });
  try {
    const slow = request(r.nc, call({ order: "S", sleep: 2 }, { callId: "slow" }));
    await sleep(50);
    const started = Date.now();
    const fast = await Promise.all([0, 1, 2].map((i) => request(r.nc, call({ order: `F${i}` }, { callId: `f${i}` }))));
    const elapsed = Date.now() - started;
    assert.ok(fast.every((f) => f.result.case === "output"));
    assert.ok(elapsed < 500, `fast requests took ${elapsed} ms behind a slow one`);
    assert.equal((await slow).result.case, "output");
  } finally {
    await r.close();
  }
});

test("bad requests and arguments become error results", async () => {
  const r = await running();
  try {
    const cases: Array<[Uint8Array, string, string]> = [
      [new Uint8Array([0xff, 0xff, 0xff]), codes.INVALID_REQUEST, "ToolCall"],
      [call({ order: "A" }, { name: "other_tool" }), codes.INVALID_REQUEST, "other_tool"],
      [call("{order:", { callId: "a" }), codes.INVALID_ARGUMENTS, "not valid JSON"],
      [call("[1]", { callId: "b" }), codes.INVALID_ARGUMENTS, "object"],
      [call("", { callId: "c" }), codes.INVALID_ARGUMENTS, "`order`"],
      [call({ order: 5 }, { callId: "d" }), codes.INVALID_ARGUMENTS, "`order`"],
    ];
    for (const [payload, code, mentions] of cases) {
      const e = errorOf(await request(r.nc, payload));
      assert.equal(e?.code, code, JSON.stringify(e));
      assert.ok(e?.message.includes(mentions), e?.message);
    }
  } finally {
    await r.close();
  }
});

test("a crashing handler is panicked and the server keeps serving", async () => {
  const r = await running();
  try {
    const e = errorOf(await request(r.nc, call({ order: "crash" }, { callId: "x" })));
    assert.equal(e?.code, codes.PANICKED);
    assert.ok(e?.message.includes("order_status"));
    assert.equal((await request(r.nc, call({ order: "A1" }, { callId: "y" }))).result.case, "output");
  } finally {
    await r.close();
  }
});

test("the handler stops before the caller's deadline", async () => {
  assert.equal(handlerDeadlineMs(8000, 1000), 1000 - TIMEOUT_MARGIN_MS);
  assert.equal(handlerDeadlineMs(500, 3000), 500);
  assert.equal(handlerDeadlineMs(8000, 0), 8000);
  assert.equal(handlerDeadlineMs(8000, 100), 50);
  const r = await running();
  try {
    const started = Date.now();
    const e = errorOf(await request(r.nc, call({ order: "S", sleep: 30 }, { timeoutMs: 1000, callId: "deadline" })));
    const elapsed = Date.now() - started;
    assert.equal(e?.code, codes.TIMEOUT);
    assert.ok(elapsed > 700 && elapsed < 950, `${elapsed} ms`);
  } finally {
    await r.close();
  }
});

test("trace context reaches the handler", async () => {
  const r = await running();
  try {
    const tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    const out = await request(r.nc, call({ order: "trace" }, { callId: "trace" }), tp);
    assert.deepEqual(JSON.parse(out.result.value as string), { traceparent: tp, traceId: "4bf92f3577b34da6a3ce929d0e0e4736" });
  } finally {
    await r.close();
  }
});

test("a redelivered call runs once", async () => {
  const r = await running();
  try {
    runs.length = 0;
    const [first, second] = await Promise.all([
      request(r.nc, call({ order: "A1", sleep: 0.3 }, { callId: "dup" })),
      request(r.nc, call({ order: "A1", sleep: 0.3 }, { callId: "dup" })),
    ]);
    const third = await request(r.nc, call({ order: "A1" }, { callId: "dup" }));
    assert.deepEqual(runs, ["CA1/dup"]);
    for (const other of [second, third]) {
      assert.deepEqual(toBinary(ToolResultSchema, other), toBinary(ToolResultSchema, first));
    }
    assert.equal(first.outcome, "status_given");
  } finally {
    await r.close();
  }
});

test("idempotency keys match the Rust SDK", () => {
  assert.equal(idempotency.key("book", "CA123", "call_abc-1"), "book.CA123.call_abc-1");
  assert.equal(idempotency.key("book", "CA1", "a.b c/=é*>"), "book.CA1.a=2Eb=20c=2F=3D=C3=A9=2A=3E");
  assert.equal(idempotency.key("t", "CA1", ""), undefined);
  assert.equal(idempotency.key("t", "CA1", "x".repeat(300)), undefined);
});

test("stop answers requests in flight and withdraws the tool", async () => {
  const r = await running();
  const kv = await new Kvm(r.nc).open("voice-tools");
  const inFlight = request(r.nc, call({ order: "A1", sleep: 0.5 }, { callId: "drain" }));
  await sleep(100);
  await r.server.stop();
  assert.equal((await inFlight).result.case, "output");
  const entry = await kv.get("order_status");
  assert.ok(!entry || entry.operation !== "PUT", "the spec is still registered");
  await assert.rejects(r.nc.request("voice.tools.order_status", call({ order: "A" }), { timeout: 2000 }), /no responders/i);
  await r.close();
});

test("the registry has the shared settings whoever creates it", async () => {
  const other = await NatsServer.start();
  const nc = await connect({ servers: other.url });
  try {
    // As older releases created it: entries that never expire.
    await new Kvm(nc).create("voice-tools", { history: 1 });
    await openRegistry(nc);
    const status = await (await new Kvm(nc).open("voice-tools")).status();
    assert.equal(status.ttl, ENTRY_MAX_AGE_MS);
    assert.equal(ENTRY_MAX_AGE_MS, 15_000);
    assert.equal(status.history, 1);
  } finally {
    await nc.close();
    await other.stop();
  }
});

test("a killed tool leaves the registry within the max age", async () => {
  const script = `
    import { serve } from ${JSON.stringify(new URL("../index.js", import.meta.url).href)};
    await serve({ name: "killed_tool", description: "d" }, () => ({}));
  `;
  const proc = spawn(process.execPath, ["--input-type=module", "-e", script], {
    env: { ...process.env, NATS_URL: nats.url },
    stdio: "ignore",
  });
  const nc = await connect({ servers: nats.url });
  try {
    const kv = await openRegistry(nc);
    let registered = false;
    for (let i = 0; i < 200 && !registered; i++) {
      registered = (await kv.get("killed_tool"))?.operation === "PUT";
      if (!registered) await sleep(50);
    }
    assert.ok(registered, "killed_tool never registered");
    proc.kill("SIGKILL");
    const killed = Date.now();
    for (;;) {
      const entry = await kv.get("killed_tool");
      if (!entry || entry.operation !== "PUT") break;
      assert.ok(Date.now() - killed < ENTRY_MAX_AGE_MS + 3000, "still registered after the max age");
      await sleep(200);
    }
  } finally {
    proc.kill("SIGKILL");
    await nc.close();
  }
});

test("the generated code is current", () => {
  const sdk = join(ROOT, "sdks/typescript");
  const out = mkdtempSync(join(tmpdir(), "sb-gen-"));
  execFileSync(
    join(sdk, "node_modules/.bin/buf"),
    ["generate", "../../proto", "--path", "../../proto/switchboard/v1/tool.proto", "--template", "buf.gen.yaml", "-o", out],
    { cwd: sdk, env: { ...process.env, PATH: `${join(sdk, "node_modules/.bin")}:${process.env.PATH}` } },
  );
  const fresh = readFileSync(join(out, "src/gen/switchboard/v1/tool_pb.ts"), "utf8");
  const committed = readFileSync(join(sdk, "src/gen/switchboard/v1/tool_pb.ts"), "utf8");
  assert.equal(fresh, committed, "tool_pb.ts is stale: run `npm run generate` in sdks/typescript");
});
