#!/usr/bin/env python3
"""clinic_hours: a Switchboard tool written in Python with the `switchboard-tools` SDK
(sdks/python; `pip install ./sdks/python`).

The SDK serves it on `<prefix>.tools.clinic_hours` in the queue group `tools.clinic_hours` (run
as many copies as you like), keeps it registered in `voice-tools`, checks the arguments against
the schema, answers exceptions as `panicked`, and drains on SIGTERM.

Environment: NATS_URL (default nats://127.0.0.1:4222), NATS_SUBJECT_PREFIX (default voice),
NATS_USER / NATS_PASSWORD, NATS_CREDS.
"""

import asyncio

from switchboard_tools import Tool, serve

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

CLINIC_HOURS = Tool(
    name="clinic_hours",
    description="Tell the caller when the clinic is open, for one weekday or the whole week.",
    parameters={
        "type": "object",
        "properties": {
            "day": {
                "type": "string",
                "enum": DAYS,
                "description": "The weekday asked about; omit for the whole week.",
            }
        },
        "required": [],
    },
    timeout_ms=2000,
    version="1.0.0",
)


def hours_of(day):
    hours = HOURS[day]
    if hours is None:
        return {"day": day, "open": False}
    return {"day": day, "open": True, "opens": hours[0], "closes": hours[1]}


async def clinic_hours(ctx, args):
    """Arguments (already checked against the schema) -> a JSON-serializable output."""
    day = args.get("day")
    if day is None:
        return {"timezone": "America/New_York", "week": [hours_of(d) for d in DAYS]}
    return {"timezone": "America/New_York", **hours_of(day)}


if __name__ == "__main__":
    asyncio.run(serve(CLINIC_HOURS, clinic_hours))
