// Switchboard tools in TypeScript: serve a function as a tool the voice model can call.
//
//   import { serve, ToolFailure } from "@switchboard/tools";
//
//   await serve(
//     { name: "order_status", description: "Where a customer's order is.",
//       parameters: { type: "object", properties: { order: { type: "string" } }, required: ["order"] },
//       timeoutMs: 3000 },
//     async (ctx, args: { order: string }) => {
//       if (args.order !== "A1") throw ToolFailure.notFound(`No order ${args.order}.`);
//       return { status: "shipped" };
//     },
//   );
//
// See docs/tools.md of the Switchboard repository for the contract.
export { Context, DEFAULT_TIMEOUT_MS, TIMEOUT_MARGIN_MS, Tool, ToolFailure, codes, handlerDeadlineMs } from "./tool.js";
export type { Handler, JsonSchema, ToolDeclaration } from "./tool.js";
export { ENTRY_MAX_AGE_MS, REFRESH_MS, TOOLS_BUCKET, openRegistry } from "./registry.js";
export { DEFAULT_MAX_CONCURRENCY, ToolServer, VERSION, connectOptions, serve, serveTools } from "./server.js";
export type { ServerOptions } from "./server.js";
export * as proto from "./gen/switchboard/v1/tool_pb.js";
