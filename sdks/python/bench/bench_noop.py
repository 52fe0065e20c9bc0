#!/usr/bin/env python3
"""Serves `bench_noop` with the Python SDK for `tool-bench --external` (docs/benchmarks.md).

The handler waits HANDLER_MS (default 0) and reports how long it ran, so tool-bench can subtract
it. Deduplication is off, as in tool-bench's own SDK runs without `--idempotent`.
"""

import asyncio
import os
import time

from switchboard_tools import Tool, ToolServer, serve_tools

HANDLER_MS = int(os.environ.get("HANDLER_MS", "0"))

BENCH_NOOP = Tool(
    name="bench_noop",
    description="Does nothing, for benchmarks.",
    parameters={"type": "object", "properties": {"seq": {"type": "integer"}}},
)


async def bench_noop(ctx, args):
    started = time.monotonic()
    if HANDLER_MS:
        await asyncio.sleep(HANDLER_MS / 1000)
    return {"handler_us": int((time.monotonic() - started) * 1_000_000)}


if __name__ == "__main__":
    asyncio.run(serve_tools(ToolServer(idempotent=False).add(BENCH_NOOP, bench_noop), name="bench_noop"))
