// Serves `bench_noop` with the TypeScript SDK for `tool-bench --external` (docs/benchmarks.md).
// The handler waits HANDLER_MS (default 0) and reports how long it ran, so tool-bench can
// subtract it. Deduplication is off, as in tool-bench's own SDK runs without `--idempotent`.
import { ToolServer, serveTools } from "../index.js";

const handlerMs = Number(process.env.HANDLER_MS ?? "0");

await serveTools(
  new ToolServer({ idempotent: false }).add(
    { name: "bench_noop", description: "Does nothing, for benchmarks.", parameters: { type: "object", properties: { seq: { type: "integer" } } } },
    async () => {
      const started = process.hrtime.bigint();
      if (handlerMs > 0) await new Promise((r) => setTimeout(r, handlerMs));
      return { handler_us: Number((process.hrtime.bigint() - started) / 1000n) };
    },
  ),
  "bench_noop",
);
