#!/usr/bin/env python3
"""clinic_hours: a Switchboard tool written in Python.

It answers `switchboard.v1.ToolCall` requests on `<prefix>.tools.clinic_hours` in the queue group
`tools.clinic_hours` (run as many copies as you like; each request goes to one of them), keeps its
`ToolSpec` in the KV bucket `voice-tools` (re-put every 30 s, so it disappears from the model's
tool list within minutes after the last copy stops), and replies with a `ToolResult`: the output
JSON, or an error with a code the model can act on.

Environment: NATS_URL (default nats://127.0.0.1:4222), NATS_SUBJECT_PREFIX (default voice),
NATS_USER / NATS_PASSWORD, NATS_CREDS. The protobuf classes come from ./generate.sh (into ./gen,
or any directory on PYTHONPATH).
"""

import asyncio
import json
import os
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "gen"))

import nats  # noqa: E402
from nats.js.api import KeyValueConfig  # noqa: E402
from switchboard.v1 import tool_pb2  # noqa: E402

NAME = "clinic_hours"
TOOLS_BUCKET = "voice-tools"
REFRESH_SECONDS = 30
ENTRY_MAX_AGE_SECONDS = 300

DAYS = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
# Same opening hours as the tool-worker's clinic schedule (local time, America/New_York).
HOURS = {
    "monday": ("09:00", "17:00"),
    "tuesday": ("09:00", "17:00"),
    "wednesday": ("09:00", "19:00"),
    "thursday": ("09:00", "17:00"),
    "friday": ("09:00", "17:00"),
    "saturday": ("09:00", "13:00"),
    "sunday": None,
}

SPEC = tool_pb2.ToolSpec(
    name=NAME,
    description="Tell the caller when the clinic is open, for one weekday or the whole week.",
    parameters_schema=json.dumps(
        {
            "type": "object",
            "properties": {
                "day": {
                    "type": "string",
                    "enum": DAYS,
                    "description": "The weekday asked about; omit for the whole week.",
                }
            },
            "required": [],
        }
    ),
    timeout_ms=2000,
    version="1.0.0",
)


class ToolFailure(Exception):
    def __init__(self, code, message):
        super().__init__(message)
        self.code = code
        self.message = message


def hours_of(day):
    hours = HOURS[day]
    if hours is None:
        return {"day": day, "open": False}
    return {"day": day, "open": True, "opens": hours[0], "closes": hours[1]}


def clinic_hours(arguments):
    """The tool itself: arguments (JSON text) -> output (a JSON-serializable value)."""
    try:
        args = json.loads(arguments) if arguments.strip() else {}
    except json.JSONDecodeError as e:
        raise ToolFailure("invalid_arguments", f"the arguments are not valid JSON ({e})")
    if not isinstance(args, dict):
        raise ToolFailure("invalid_arguments", "the arguments must be a JSON object")
    day = args.get("day")
    if day is None:
        return {"timezone": "America/New_York", "week": [hours_of(d) for d in DAYS]}
    if not isinstance(day, str) or day.strip().lower() not in HOURS:
        raise ToolFailure(
            "invalid_arguments", f"`day` must be one of {', '.join(DAYS)}; got {day!r}"
        )
    return {"timezone": "America/New_York", **hours_of(day.strip().lower())}


def respond(payload):
    """One request payload -> the encoded ToolResult; every failure is an error result."""
    result = tool_pb2.ToolResult()
    try:
        call = tool_pb2.ToolCall()
        try:
            call.ParseFromString(payload)
        except Exception as e:  # noqa: BLE001 - any decode failure is a bad request
            raise ToolFailure("invalid_request", f"the request is not a switchboard.v1.ToolCall: {e}")
        if call.name and call.name != NAME:
            raise ToolFailure("invalid_request", f"the request names tool `{call.name}`, not `{NAME}`")
        result.output = json.dumps(clinic_hours(call.arguments))
    except ToolFailure as f:
        result.error.code = f.code
        result.error.message = f.message
    except Exception as e:  # noqa: BLE001 - a bug must not take the service down
        result.error.code = "failed"
        result.error.message = f"`{NAME}` failed: {type(e).__name__}"
    return result.SerializeToString()


async def register(js):
    try:
        kv = await js.key_value(TOOLS_BUCKET)
    except Exception:  # noqa: BLE001 - missing bucket: create it like the Rust SDK does
        kv = await js.create_key_value(
            KeyValueConfig(bucket=TOOLS_BUCKET, history=1, ttl=ENTRY_MAX_AGE_SECONDS)
        )
    await kv.put(NAME, SPEC.SerializeToString())


async def main():
    options = {"servers": [os.environ.get("NATS_URL", "nats://127.0.0.1:4222")], "name": NAME}
    if os.environ.get("NATS_CREDS"):
        options["user_credentials"] = os.environ["NATS_CREDS"]
    if os.environ.get("NATS_USER"):
        options["user"] = os.environ["NATS_USER"]
        options["password"] = os.environ.get("NATS_PASSWORD", "")
    nc = await nats.connect(**options)
    prefix = os.environ.get("NATS_SUBJECT_PREFIX", "voice")

    async def on_request(msg):
        if msg.reply:
            await msg.respond(respond(msg.data))

    await nc.subscribe(f"{prefix}.tools.{NAME}", queue=f"tools.{NAME}", cb=on_request)
    await nc.flush()
    js = nc.jetstream()

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    print(f"{NAME}: serving {prefix}.tools.{NAME}", flush=True)
    while not stop.is_set():
        try:
            await register(js)
        except Exception as e:  # noqa: BLE001 - keep serving; retry on the next refresh
            print(f"{NAME}: registering failed: {e}", file=sys.stderr, flush=True)
        try:
            await asyncio.wait_for(stop.wait(), REFRESH_SECONDS)
        except asyncio.TimeoutError:
            pass
    # Drain: stop taking requests, answer those already received, then close.
    await nc.drain()


if __name__ == "__main__":
    asyncio.run(main())
