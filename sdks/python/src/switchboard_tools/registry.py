"""The tool registry, KV bucket `voice-tools`, with the settings every Switchboard process uses.

Keys: `<tool>` holds the encoded `ToolSpec` (what call-workers offer the model);
`<tool>.<instance>` holds one serving replica's heartbeat (JSON). Both are re-put every
`REFRESH_SECONDS` and expire `ENTRY_MAX_AGE_SECONDS` after their last put. On a clean stop a
replica deletes its heartbeat, and the spec too when no other replica serves the tool, so the
tool leaves the model's list at once; a replica that dies leaves it within the max age.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import socket
import time
from typing import Iterable, List, Optional, Tuple

from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig
from nats.js.errors import BucketNotFoundError, NoKeysError, NotFoundError
from nats.js.kv import KeyValue

log = logging.getLogger("switchboard_tools")

TOOLS_BUCKET = "voice-tools"
REFRESH_SECONDS = 5.0
ENTRY_MAX_AGE_SECONDS = 15.0
DESCRIPTION = "Switchboard tool registry: <tool> -> ToolSpec, <tool>.<instance> -> heartbeat"


async def open_registry(js: JetStreamContext) -> KeyValue:
    """Opens `voice-tools`, creating it (history 1, max age 15 s) if missing; a bucket made with
    other settings is updated to these, or used as is (with a warning) if that is not allowed."""
    try:
        kv = await js.key_value(TOOLS_BUCKET)
    except BucketNotFoundError:
        try:
            return await js.create_key_value(
                KeyValueConfig(
                    bucket=TOOLS_BUCKET,
                    description=DESCRIPTION,
                    history=1,
                    ttl=ENTRY_MAX_AGE_SECONDS,
                    direct=True,
                )
            )
        except Exception:  # noqa: BLE001 - another process may have created it meanwhile
            return await js.key_value(TOOLS_BUCKET)
    status = await kv.status()
    if status.ttl != ENTRY_MAX_AGE_SECONDS or status.history != 1:
        config = status.stream_info.config
        config.max_age = ENTRY_MAX_AGE_SECONDS
        config.max_msgs_per_subject = 1
        # The server refuses a duplicate window longer than the max age.
        if not config.duplicate_window or config.duplicate_window > ENTRY_MAX_AGE_SECONDS:
            config.duplicate_window = ENTRY_MAX_AGE_SECONDS
        try:
            await js.update_stream(config)
        except Exception as e:  # noqa: BLE001 - keep serving; the operator is told
            log.warning(
                "the tool registry has other settings and cannot be updated here (%s); "
                "stopped tools may stay listed",
                e,
            )
    return kv


def instance_key(tool: str, instance: str) -> str:
    return f"{tool}.{instance}"


class Registration:
    """This replica's entries: specs and heartbeats, put periodically and withdrawn on stop."""

    def __init__(self, js: JetStreamContext, version: str):
        self._js = js
        self._kv: Optional[KeyValue] = None
        self.instance = {
            "instance": secrets.token_hex(6),
            "host": os.environ.get("HOSTNAME") or socket.gethostname(),
            "pid": os.getpid(),
            "sdk": "python",
            "version": version,
            "started_ms": int(time.time() * 1000),
        }

    async def _store(self) -> KeyValue:
        if self._kv is None:
            self._kv = await open_registry(self._js)
        return self._kv

    async def put(self, specs: Iterable[Tuple[str, bytes]]) -> None:
        kv = await self._store()
        heartbeat = json.dumps(self.instance).encode()
        try:
            for name, spec in specs:
                await kv.put(name, spec)
                await kv.put(instance_key(name, self.instance["instance"]), heartbeat)
        except Exception:
            self._kv = None
            raise

    async def withdraw(self, names: List[str]) -> None:
        kv = await self._store()
        for name in names:
            await kv.delete(instance_key(name, self.instance["instance"]))
        others = await serving(kv)
        for name in names:
            if name not in others:
                await kv.delete(name)


async def serving(kv: KeyValue) -> set:
    """The tools some replica has a live heartbeat for."""
    try:
        keys = await kv.keys()
    except (NoKeysError, NotFoundError):
        return set()
    return {k.split(".", 1)[0] for k in keys if "." in k}
