"""`ToolServer` and `serve`: tools as NATS request/reply services, the way the Rust SDK runs them.

Each tool has one queue subscription (`<prefix>.tools.<name>`, group `tools.<name>`), so any
number of replicas share the load. nats-py runs one subscription's callbacks one at a time, so
the callback only hands each request to its own task (at most `max_concurrency` at once; beyond
that requests wait in the subscription's buffer): a slow request never holds up a fast one. Each
request is decoded, its arguments checked against the tool's JSON Schema, the handler run under
its deadline, and every failure answered as a `ToolError`. On stop the tools are withdrawn
from the registry, the subscriptions drained and every request already received answered.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import os
import signal
import time
from typing import Any, Dict, List, Optional, Set, Tuple

import jsonschema
import nats
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from . import idempotency, tool_pb2
from .registry import REFRESH_SECONDS, Registration
from .tool import Context, Handler, Tool, ToolFailure, codes, handler_deadline_ms

log = logging.getLogger("switchboard_tools")

__version__ = "0.1.0"

#: Requests one server runs at once by default.
DEFAULT_MAX_CONCURRENCY = 256
#: How long withdrawing the registration may hold up a stop.
WITHDRAW_TIMEOUT_SECONDS = 2.0


def _failure(code: str, message: str) -> tool_pb2.ToolResult:
    result = tool_pb2.ToolResult()
    result.error.code = code
    result.error.message = message
    return result


def _path(error: jsonschema.ValidationError) -> str:
    parts = [str(p) for p in error.absolute_path]
    return ".".join(parts)


class _Served:
    def __init__(self, tool: Tool, handler: Handler):
        self.tool = tool
        self.handler = handler
        self.is_async = inspect.iscoroutinefunction(handler) or inspect.iscoroutinefunction(
            getattr(handler, "__call__", None)
        )
        cls = jsonschema.validators.validator_for(tool.parameters, jsonschema.Draft202012Validator)
        cls.check_schema(tool.parameters)
        self.validator = cls(tool.parameters)


class ToolServer:
    """A set of tools to serve: `add` them, then `start` (or use `serve`)."""

    def __init__(
        self,
        *,
        max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
        idempotent: bool = True,
        refresh_seconds: float = REFRESH_SECONDS,
    ):
        self._tools: Dict[str, _Served] = {}
        self._max_concurrency = max_concurrency
        self._idempotent = idempotent
        self._refresh_seconds = refresh_seconds
        self._nc: Optional[NATS] = None
        self._subs: List[Any] = []
        self._tasks: Set[asyncio.Task] = set()
        self._slots: Optional[asyncio.Semaphore] = None
        self._registration: Optional[Registration] = None
        self._refresher: Optional[asyncio.Task] = None
        self._results = None
        self._specs: List[Tuple[str, bytes]] = []

    def add(self, tool: Tool, handler: Handler) -> "ToolServer":
        """Adds a tool. `handler(ctx, args)` gets the validated arguments (a dict) and returns a
        JSON-serializable output (or raises `ToolFailure`); it may be async or plain (plain ones
        run in a worker thread)."""
        if tool.name in self._tools:
            raise ValueError(f"tool `{tool.name}` was added twice")
        self._tools[tool.name] = _Served(tool, handler)
        return self

    async def start(self, nc: NATS, prefix: str = "voice") -> None:
        """Subscribes every tool, then registers it; requests are answered once this returns."""
        if not self._tools:
            raise ValueError("no tools were added to the server")
        self._nc = nc
        self._slots = asyncio.Semaphore(self._max_concurrency)
        for served in self._tools.values():
            name = served.tool.name

            async def on_request(msg: Msg, served: _Served = served) -> None:
                await self._slots.acquire()
                task = asyncio.create_task(self._handle(served, msg))
                self._tasks.add(task)
                task.add_done_callback(self._done)

            self._subs.append(
                await nc.subscribe(f"{prefix}.tools.{name}", queue=f"tools.{name}", cb=on_request)
            )
        await nc.flush()
        js = nc.jetstream()
        if self._idempotent:
            try:
                self._results = await idempotency.open_results(js)
            except Exception as e:  # noqa: BLE001 - serve anyway, without deduplication
                log.warning("no results bucket; redelivered calls will run again: %s", e)
        self._specs = [(s.tool.name, s.tool.spec().SerializeToString()) for s in self._tools.values()]
        self._registration = Registration(js, __version__)
        try:
            await self._registration.put(self._specs)
            log.info("tools registered: %s", ", ".join(self._tools))
        except Exception as e:  # noqa: BLE001 - answering matters more than being listed
            log.warning("registering tools failed; will retry: %s", e)
        self._refresher = asyncio.create_task(self._refresh())

    def _done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if self._slots is not None:
            self._slots.release()

    async def _refresh(self) -> None:
        while True:
            await asyncio.sleep(self._refresh_seconds)
            try:
                await self._registration.put(self._specs)
            except Exception as e:  # noqa: BLE001 - retried on the next tick
                log.warning("refreshing tool registry failed: %s", e)

    async def stop(self) -> None:
        """Withdraws the tools, drains the subscriptions and answers what was received."""
        if self._refresher is not None:
            self._refresher.cancel()
            self._refresher = None
        if self._registration is not None:
            try:
                await asyncio.wait_for(
                    self._registration.withdraw(list(self._tools)), WITHDRAW_TIMEOUT_SECONDS
                )
            except Exception as e:  # noqa: BLE001 - they expire from the registry instead
                log.warning("withdrawing tools failed; they expire from the registry: %s", e)
        for sub in self._subs:
            try:
                await sub.drain()
            except Exception as e:  # noqa: BLE001
                log.warning("drain failed: %s", e)
        self._subs = []
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def _handle(self, served: _Served, msg: Msg) -> None:
        if not msg.reply:
            log.warning("tool %s: request without a reply subject dropped", served.tool.name)
            return
        result = await self.respond(served.tool.name, msg.data, msg.headers or {})
        try:
            await self._nc.publish(msg.reply, result.SerializeToString())
        except Exception as e:  # noqa: BLE001
            log.warning("tool %s: sending the result failed: %s", served.tool.name, e)

    async def respond(
        self, name: str, payload: bytes, headers: Optional[Dict[str, str]] = None
    ) -> tool_pb2.ToolResult:
        """Turns one request payload into its `ToolResult`; every failure is an error result."""
        served = self._tools[name]
        tool = served.tool
        call = tool_pb2.ToolCall()
        try:
            call.ParseFromString(payload)
        except Exception as e:  # noqa: BLE001 - any decode failure is a bad request
            return _failure(codes.INVALID_REQUEST, f"the request is not a switchboard.v1.ToolCall: {e}")
        if call.name and call.name != tool.name:
            return _failure(
                codes.INVALID_REQUEST,
                f"the request names tool `{call.name}` but was sent to `{tool.name}`",
            )
        try:
            args = json.loads(call.arguments) if call.arguments.strip() else {}
        except json.JSONDecodeError as e:
            return _failure(codes.INVALID_ARGUMENTS, f"the arguments are not valid JSON ({e})")
        error = jsonschema.exceptions.best_match(served.validator.iter_errors(args))
        if error is not None:
            where = _path(error)
            field = f"`{where}`: " if where else ""
            return _failure(
                codes.INVALID_ARGUMENTS, f"invalid arguments for `{tool.name}`: {field}{error.message}"
            )

        deadline_ms = handler_deadline_ms(tool.timeout_ms, call.timeout_ms)
        claimed = None
        if self._results is not None:
            k = idempotency.key(tool.name, call.call_sid, call.call_id)
            if k is not None:
                try:
                    revision, stored = await idempotency.claim(
                        self._results, k, tool.timeout_ms, deadline_ms
                    )
                    if stored is not None:
                        log.info("redelivered tool call answered with the stored result")
                        return stored
                    claimed = (k, revision)
                except Exception as e:  # noqa: BLE001 - serve without deduplication
                    log.warning("tool call deduplication unavailable: %s", e)
        ctx = Context(
            call_sid=call.call_sid,
            call_id=call.call_id,
            agent_id=call.agent_id,
            caller=call.caller,
            deadline_ms=deadline_ms,
            traceparent=(headers or {}).get("traceparent"),
        )
        result = await self._run(served, ctx, args)
        if claimed is not None:
            try:
                await idempotency.finish(self._results, claimed[0], claimed[1], result)
            except Exception as e:  # noqa: BLE001
                log.warning("storing the tool result for redeliveries failed: %s", e)
        return result

    async def _run(self, served: _Served, ctx: Context, args: dict) -> tool_pb2.ToolResult:
        tool = served.tool
        started = time.monotonic()
        extra = {"tool": tool.name, "call_sid": ctx.call_sid, "trace_id": ctx.trace_id}
        try:
            if served.is_async:
                work = served.handler(ctx, args)
            else:
                work = asyncio.to_thread(served.handler, ctx, args)
            value = await asyncio.wait_for(work, ctx.deadline_ms / 1000)
            result = tool_pb2.ToolResult(output=json.dumps(value))
        except ToolFailure as f:
            result = _failure(f.code, f.message)
        except asyncio.TimeoutError:
            log.warning("tool %s timed out after %d ms", tool.name, ctx.deadline_ms, extra=extra)
            result = _failure(
                codes.TIMEOUT, f"`{tool.name}` did not finish within {ctx.deadline_ms} ms"
            )
        except Exception:  # noqa: BLE001 - a bug must not take the service down
            log.exception("tool %s handler crashed", tool.name, extra=extra)
            result = _failure(codes.PANICKED, f"`{tool.name}` crashed while handling the request")
        if ctx.outcome:
            result.outcome = ctx.outcome
        log.debug(
            "tool %s answered in %.1f ms", tool.name, (time.monotonic() - started) * 1000, extra=extra
        )
        return result


def connect_options(name: str) -> dict:
    """nats-py connect options from the contract's env: NATS_URL, NATS_CREDS, NATS_USER +
    NATS_PASSWORD. With a user, replies arrive under `_INBOX_<user>` (a `-next` rotation suffix
    left out): the only inbox a tool's NATS user may subscribe to."""
    options: Dict[str, Any] = {
        "servers": os.environ.get("NATS_URL", "nats://127.0.0.1:4222").split(","),
        "name": name,
        "max_reconnect_attempts": -1,
    }
    if os.environ.get("NATS_CREDS"):
        options["user_credentials"] = os.environ["NATS_CREDS"]
    if os.environ.get("NATS_USER"):
        options["user"] = os.environ["NATS_USER"]
        options["password"] = os.environ.get("NATS_PASSWORD", "")
        options["inbox_prefix"] = inbox_prefix(os.environ["NATS_USER"])
    return options


def inbox_prefix(user: str) -> str:
    """The inbox prefix of a tool connecting as NATS user `user` (see proto/src/permissions.rs)."""
    role = user[: -len("-next")] if user.endswith("-next") else user
    return f"_INBOX_{role}"


async def serve_tools(server: ToolServer, *, name: str = "switchboard tool") -> None:
    """Connects from the environment, serves until SIGTERM or SIGINT, then stops cleanly."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    nc = await nats.connect(**connect_options(name))
    prefix = os.environ.get("NATS_SUBJECT_PREFIX", "voice")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await server.start(nc, prefix)
    log.info("serving on %s.tools.*", prefix)
    await stop.wait()
    log.info("stopping: draining requests in flight")
    await server.stop()
    await nc.drain()


async def serve(tool: Tool, handler: Handler, **options: Any) -> None:
    """Serves one tool until SIGTERM or SIGINT (the Rust SDK's `ToolServer::serve`)."""
    await serve_tools(ToolServer(**options).add(tool, handler), name=tool.name)
