// clinic_directions: a Switchboard tool written in TypeScript with the `@switchboard/tools` SDK
// (sdks/typescript). The SDK serves it on `<prefix>.tools.clinic_directions` in the queue group
// `tools.clinic_directions` (run as many copies as you like), keeps it registered in
// `voice-tools`, checks the arguments against the schema, answers exceptions as `panicked`, and
// drains on SIGTERM.
//
//   npm install && npm run build && NATS_URL=nats://127.0.0.1:4222 npm start
//
// Environment: NATS_URL (default nats://127.0.0.1:4222), NATS_SUBJECT_PREFIX (default voice),
// NATS_USER / NATS_PASSWORD.
import { serve, ToolFailure, type Context } from "@switchboard/tools";

type Args = { from?: "north" | "south" | "downtown" };

const ROUTES: Record<string, string> = {
  north: "Take Route 9 south, exit 14, then the second right onto Elm Street.",
  south: "Take Route 9 north, exit 14, then the first left onto Elm Street.",
  downtown: "Bus 42 from Central Station stops in front of the clinic every 10 minutes.",
};

await serve(
  {
    name: "clinic_directions",
    description: "The clinic's address and parking, and directions from where the caller is coming.",
    parameters: {
      type: "object",
      properties: {
        from: {
          type: "string",
          enum: Object.keys(ROUTES),
          description: "Where the caller comes from, if they said.",
        },
      },
    },
    timeoutMs: 2000,
    version: "1.0.0",
  },
  async (_ctx: Context, args: Args) => {
    const route = args.from ? ROUTES[args.from] : undefined;
    if (args.from && !route) throw ToolFailure.notFound(`No directions from ${args.from}.`);
    return {
      address: "120 Elm Street, Springfield",
      parking: "Free parking behind the building; enter from Oak Lane.",
      ...(route ? { directions: route } : {}),
    };
  },
);
