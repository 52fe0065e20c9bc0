"""Answering a redelivered ToolCall with the first delivery's result, across replicas and
languages: the scheme and bucket (`voice-tool-results`) of the Rust SDK (docs/tools.md).

The first delivery claims `<tool>.<call_sid>.<call_id>` with a KV create holding `P<deadline ms>`,
runs the handler and stores `R<encoded ToolResult>`; a copy waits for that result. A claim
whose deadline passed (its replica died) is taken over with a compare-and-set.
"""

from __future__ import annotations

import asyncio
import time
from typing import Optional, Tuple

from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig
from nats.js.errors import BucketNotFoundError, KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from . import tool_pb2
from .tool import codes

RESULTS_BUCKET = "voice-tool-results"
RESULT_TTL_SECONDS = 600.0
POLL_SECONDS = 0.02
CLAIM_GRACE_MS = 2000
MAX_ID_LEN = 256
PENDING = b"P"
RESULT = b"R"


async def open_results(js: JetStreamContext) -> KeyValue:
    try:
        return await js.key_value(RESULTS_BUCKET)
    except BucketNotFoundError:
        try:
            return await js.create_key_value(
                KeyValueConfig(
                    bucket=RESULTS_BUCKET,
                    description="Switchboard tool results by (tool, call_sid, call_id), for retries",
                    history=1,
                    ttl=RESULT_TTL_SECONDS,
                    direct=True,
                )
            )
        except Exception:  # noqa: BLE001 - another replica may have created it meanwhile
            return await js.key_value(RESULTS_BUCKET)


def _escape(part: str) -> str:
    out = []
    for b in part.encode():
        c = chr(b)
        if c.isascii() and (c.isalnum() or c in "-_"):
            out.append(c)
        else:
            out.append(f"={b:02X}")
    return "".join(out)


def key(tool: str, call_sid: str, call_id: str) -> Optional[str]:
    """The KV key of one invocation, or None when it cannot be identified."""
    if not call_sid or not call_id or len(call_id.encode()) > MAX_ID_LEN:
        return None
    return f"{_escape(tool)}.{_escape(call_sid)}.{_escape(call_id)}"


def _now_ms() -> int:
    return int(time.time() * 1000)


def _pending(deadline_ms: int) -> bytes:
    return PENDING + str(deadline_ms).encode()


async def claim(
    kv: KeyValue, k: str, run_ms: int, wait_ms: int
) -> Tuple[Optional[int], Optional[tool_pb2.ToolResult]]:
    """(revision, None) when this delivery runs the handler; (None, result) when another did."""
    claim_ms = run_ms + CLAIM_GRACE_MS
    give_up = time.monotonic() + wait_ms / 1000
    while True:
        try:
            return await kv.create(k, _pending(_now_ms() + claim_ms)), None
        except KeyWrongLastSequenceError:
            pass
        while True:
            try:
                entry = await kv.get(k)
            except KeyNotFoundError:
                break  # expired or deleted meanwhile: claim afresh
            value = entry.value or b""
            if value[:1] == RESULT:
                result = tool_pb2.ToolResult()
                result.ParseFromString(value[1:])
                return None, result
            deadline = None
            if value[:1] == PENDING:
                try:
                    deadline = int(value[1:])
                except ValueError:
                    deadline = None
            if deadline is None or _now_ms() > deadline:
                try:
                    revision = await kv.update(
                        k, _pending(_now_ms() + claim_ms), last=entry.revision
                    )
                    return revision, None
                except KeyWrongLastSequenceError:
                    pass
            if time.monotonic() >= give_up:
                result = tool_pb2.ToolResult()
                result.error.code = codes.TIMEOUT
                result.error.message = "an earlier delivery of this tool call is still running"
                return None, result
            await asyncio.sleep(POLL_SECONDS)


async def finish(kv: KeyValue, k: str, revision: int, result: tool_pb2.ToolResult) -> None:
    await kv.update(k, RESULT + result.SerializeToString(), last=revision)
