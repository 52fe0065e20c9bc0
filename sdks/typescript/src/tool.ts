// Declaring a tool: its spec, what its handler gets (`Context`) and how it fails (`ToolFailure`).
import { create } from "@bufbuild/protobuf";
import { ToolSpecSchema, type ToolSpec } from "./gen/switchboard/v1/tool_pb.js";

/** How long a tool may run when its declaration does not say (the worker's `TOOL_TIMEOUT_MS`). */
export const DEFAULT_TIMEOUT_MS = 8000;

/**
 * Time kept between the handler's deadline and the call-worker's: the worker gives up at exactly
 * `ToolCall.timeout_ms` after sending, so a handler stopped only then would answer too late.
 */
export const TIMEOUT_MARGIN_MS = 200;

/** OpenAI's function-name rule, which also makes the name a safe NATS subject token. */
export const NAME_RE = /^[A-Za-z0-9_-]{1,64}$/;

/** The `ToolError.code` values of the contract (docs/tools.md). */
export const codes = {
  INVALID_REQUEST: "invalid_request",
  INVALID_ARGUMENTS: "invalid_arguments",
  NOT_FOUND: "not_found",
  FAILED: "failed",
  TIMEOUT: "timeout",
  UNAVAILABLE: "unavailable",
  PANICKED: "panicked",
} as const;

/**
 * Throw it from a handler to answer with `ToolError { code, message }`: the model is told the tool
 * failed and can recover in conversation. `message` is a sentence for the model.
 */
export class ToolFailure extends Error {
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
    this.name = "ToolFailure";
  }
  static invalidArguments(message: string): ToolFailure {
    return new ToolFailure(codes.INVALID_ARGUMENTS, message);
  }
  static notFound(message: string): ToolFailure {
    return new ToolFailure(codes.NOT_FOUND, message);
  }
  static failed(message: string): ToolFailure {
    return new ToolFailure(codes.FAILED, message);
  }
  static unavailable(message: string): ToolFailure {
    return new ToolFailure(codes.UNAVAILABLE, message);
  }
}

/** Who is asking: the phone call the model is serving when it called the tool. */
export class Context {
  #outcome: string | undefined;
  constructor(
    /** Twilio's CallSid. */
    readonly callSid: string,
    /** The model's function-call id; with `callSid` it identifies the invocation. */
    readonly callId: string,
    /** The agent running the call. */
    readonly agentId: string,
    /** The caller's number (E.164), for tools that look people up. */
    readonly caller: string,
    /** Milliseconds the handler has before the SDK answers `timeout`. */
    readonly deadlineMs: number,
    /** Aborted at the deadline: pass it to `fetch` and the like. */
    readonly signal: AbortSignal,
    /**
     * The W3C `traceparent` of the call's `tool` span, if the request carried one; send it on
     * (as a `traceparent` header) so what the tool calls joins the call's trace.
     */
    readonly traceparent?: string,
  ) {}

  /** Sets the call's business outcome (e.g. `booked`); the first one set wins. */
  setOutcome(outcome: string): boolean {
    if (this.#outcome !== undefined) return false;
    this.#outcome = outcome;
    return true;
  }

  get outcome(): string | undefined {
    return this.#outcome;
  }

  /** The trace id of `traceparent` (32 hex digits), for log lines. */
  get traceId(): string | undefined {
    const parts = (this.traceparent ?? "").split("-");
    return parts.length === 4 && parts[1].length === 32 ? parts[1] : undefined;
  }
}

/** A JSON Schema object (of the arguments). */
export type JsonSchema = { type: "object"; [keyword: string]: unknown };

/** A tool's declaration: what the model is told about it. */
export interface ToolDeclaration {
  /** The function name the model uses (`^[A-Za-z0-9_-]{1,64}$`). */
  name: string;
  /** What the tool does and when to use it; the model reads it. */
  description: string;
  /** JSON Schema of the arguments (an inline object schema); checked before the handler runs. */
  parameters?: JsonSchema;
  /** How long the handler may run, advertised so the worker waits as long (default 8000). */
  timeoutMs?: number;
  /** Free-form version of the implementation, for operators. */
  version?: string;
}

/** The handler: validated arguments in, a JSON-serializable output out (or a thrown `ToolFailure`). */
export type Handler<A = any> = (ctx: Context, args: A) => unknown | Promise<unknown>;

/** A checked declaration. */
export class Tool {
  readonly name: string;
  readonly description: string;
  readonly parameters: JsonSchema;
  readonly timeoutMs: number;
  readonly version: string;

  constructor(d: ToolDeclaration) {
    if (!NAME_RE.test(d.name)) {
      throw new Error(`tool name ${JSON.stringify(d.name)} must match ^[A-Za-z0-9_-]{1,64}$ (OpenAI's rule)`);
    }
    const parameters = d.parameters ?? { type: "object", properties: {} };
    if (parameters.type !== "object") {
      throw new Error(`the parameters of tool \`${d.name}\` must be a JSON Schema with "type": "object"`);
    }
    const timeoutMs = d.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    if (!(timeoutMs > 0)) throw new Error(`the timeout of tool \`${d.name}\` must be positive`);
    this.name = d.name;
    this.description = d.description;
    this.parameters = parameters;
    this.timeoutMs = timeoutMs;
    this.version = d.version ?? "0.0.0";
  }

  /** Its registration in the `voice-tools` bucket. */
  spec(): ToolSpec {
    return create(ToolSpecSchema, {
      name: this.name,
      description: this.description,
      parametersSchema: JSON.stringify(this.parameters),
      timeoutMs: this.timeoutMs,
      version: this.version,
    });
  }
}

/**
 * How long the handler may run: the tool's own timeout, and the call's deadline less
 * `TIMEOUT_MARGIN_MS` (at most half of it), whichever is shorter.
 */
export function handlerDeadlineMs(toolTimeoutMs: number, callTimeoutMs: number): number {
  if (callTimeoutMs <= 0) return toolTimeoutMs;
  return Math.min(toolTimeoutMs, callTimeoutMs - Math.min(TIMEOUT_MARGIN_MS, Math.floor(callTimeoutMs / 2)));
}
