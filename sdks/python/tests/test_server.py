"""The Python SDK against a real nats-server: what the Rust SDK guarantees, in Python."""

import asyncio
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nats
import pytest

from switchboard_tools import (
    ENTRY_MAX_AGE_SECONDS,
    TIMEOUT_MARGIN_MS,
    Tool,
    ToolFailure,
    ToolServer,
    codes,
    handler_deadline_ms,
    open_registry,
)
from switchboard_tools import idempotency, tool_pb2

HERE = Path(__file__).resolve().parent
SDK = HERE.parent
ROOT = SDK.parents[1]

ORDERS = Tool(
    name="order_status",
    description="Where an order is.",
    parameters={
        "type": "object",
        "properties": {"order": {"type": "string"}, "sleep": {"type": "number"}},
        "required": ["order"],
    },
    timeout_ms=5000,
    version="1.2.3",
)

runs = []


async def order_status(ctx, args):
    runs.append((ctx.call_sid, ctx.call_id))
    if args.get("sleep"):
        await asyncio.sleep(args["sleep"])
    if args["order"] == "crash":
        raise RuntimeError("bug")
    if args["order"] == "missing":
        raise ToolFailure.not_found("No such order.")
    if args["order"] == "trace":
        return {"traceparent": ctx.traceparent, "trace_id": ctx.trace_id}
    ctx.set_outcome("status_given")
    return {"order": args["order"], "status": "shipped", "caller": ctx.caller}


def call(arguments, *, call_id="call_1", timeout_ms=5000, name="order_status"):
    return tool_pb2.ToolCall(
        call_sid="CA1",
        call_id=call_id,
        name=name,
        arguments=arguments if isinstance(arguments, str) else json.dumps(arguments),
        agent_id="desk",
        caller="+15550001234",
        timeout_ms=timeout_ms,
    ).SerializeToString()


async def request(nc, payload, *, headers=None, timeout=10):
    msg = await nc.request("voice.tools.order_status", payload, timeout=timeout, headers=headers)
    result = tool_pb2.ToolResult()
    result.ParseFromString(msg.data)
    return result


class Running:
    def __init__(self, url, **options):
        self.url = url
        self.options = options

    async def __aenter__(self):
        self.tool_nc = await nats.connect(self.url)
        self.nc = await nats.connect(self.url)
        self.server = ToolServer(**self.options).add(ORDERS, order_status)
        await self.server.start(self.tool_nc)
        return self

    async def __aexit__(self, *exc):
        await self.server.stop()
        await self.tool_nc.close()
        await self.nc.close()


def test_registers_and_answers(nats_url):
    async def main():
        async with Running(nats_url) as r:
            kv = await r.nc.jetstream().key_value("voice-tools")
            spec = tool_pb2.ToolSpec()
            spec.ParseFromString((await kv.get("order_status")).value)
            assert spec.name == "order_status"
            assert spec.timeout_ms == 5000
            assert spec.version == "1.2.3"
            assert json.loads(spec.parameters_schema)["required"] == ["order"]
            heartbeats = [k for k in await kv.keys() if k.startswith("order_status.")]
            assert len(heartbeats) == 1
            beat = json.loads((await kv.get(heartbeats[0])).value)
            assert beat["sdk"] == "python"

            result = await request(r.nc, call({"order": "A1"}))
            assert json.loads(result.output) == {
                "order": "A1", "status": "shipped", "caller": "+15550001234"}
            assert result.outcome == "status_given"
            result = await request(r.nc, call({"order": "missing"}, call_id="c2"))
            assert (result.error.code, result.error.message) == ("not_found", "No such order.")

    asyncio.run(main())


def test_a_slow_request_does_not_hold_back_fast_ones(nats_url):
    async def main():
        async with Running(nats_url, idempotent=False) as r:
            slow = asyncio.create_task(
                request(r.nc, call({"order": "S", "sleep": 2.0}, call_id="slow")))
            await asyncio.sleep(0.05)
            started = time.monotonic()
            fast = await asyncio.gather(
                *[request(r.nc, call({"order": f"F{i}"}, call_id=f"f{i}")) for i in range(3)])
            elapsed = time.monotonic() - started
            assert all(f.HasField("output") for f in fast)
            assert elapsed < 0.5, f"fast requests took {elapsed:.2f} s behind a slow one"
            assert (await slow).HasField("output")

    asyncio.run(main())


def test_bad_requests_and_arguments_become_error_results(nats_url):
    async def main():
        async with Running(nats_url) as r:
            cases = [
                (b"\xff\xff\xff", codes.INVALID_REQUEST, "ToolCall"),
                (call({"order": "A"}, name="other_tool"), codes.INVALID_REQUEST, "other_tool"),
                (call("{order:", call_id="a"), codes.INVALID_ARGUMENTS, "not valid JSON"),
                (call("[1]", call_id="b"), codes.INVALID_ARGUMENTS, "object"),
                (call("", call_id="c"), codes.INVALID_ARGUMENTS, "order"),
                (call({"order": 5}, call_id="d"), codes.INVALID_ARGUMENTS, "`order`"),
            ]
            for payload, code, mentions in cases:
                result = await request(r.nc, payload)
                assert result.error.code == code, (payload, result)
                assert mentions in result.error.message, result.error.message

    asyncio.run(main())


def test_a_crashing_handler_is_panicked_and_the_server_keeps_serving(nats_url):
    async def main():
        async with Running(nats_url) as r:
            result = await request(r.nc, call({"order": "crash"}, call_id="x"))
            assert result.error.code == codes.PANICKED
            assert "order_status" in result.error.message
            result = await request(r.nc, call({"order": "A1"}, call_id="y"))
            assert result.HasField("output")

    asyncio.run(main())


def test_the_handler_stops_before_the_callers_deadline(nats_url):
    assert handler_deadline_ms(8000, 1000) == 1000 - TIMEOUT_MARGIN_MS
    assert handler_deadline_ms(500, 3000) == 500
    assert handler_deadline_ms(8000, 0) == 8000
    assert handler_deadline_ms(8000, 100) == 50

    async def main():
        async with Running(nats_url) as r:
            started = time.monotonic()
            result = await request(
                r.nc, call({"order": "S", "sleep": 30}, timeout_ms=1000), timeout=5)
            elapsed = time.monotonic() - started
            assert result.error.code == codes.TIMEOUT
            # Answered before the worker, which gives up at exactly timeout_ms, stops waiting.
            assert 0.7 < elapsed < 0.95, elapsed

    asyncio.run(main())


def test_trace_context_reaches_the_handler(nats_url):
    async def main():
        async with Running(nats_url) as r:
            tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
            result = await request(r.nc, call({"order": "trace"}), headers={"traceparent": tp})
            out = json.loads(result.output)
            assert out == {"traceparent": tp, "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736"}

    asyncio.run(main())


def test_a_redelivered_call_runs_once(nats_url):
    async def main():
        async with Running(nats_url) as r:
            runs.clear()
            first, second = await asyncio.gather(
                request(r.nc, call({"order": "A1", "sleep": 0.3}, call_id="dup")),
                request(r.nc, call({"order": "A1", "sleep": 0.3}, call_id="dup")),
            )
            third = await request(r.nc, call({"order": "A1"}, call_id="dup"))
            assert runs == [("CA1", "dup")]
            assert first == second == third
            assert first.outcome == "status_given"

    asyncio.run(main())


def test_idempotency_keys_match_the_rust_sdk():
    assert idempotency.key("book", "CA123", "call_abc-1") == "book.CA123.call_abc-1"
    assert idempotency.key("book", "CA1", "a.b c/=é*>") == "book.CA1.a=2Eb=20c=2F=3D=C3=A9=2A=3E"
    assert idempotency.key("t", "CA1", "") is None
    assert idempotency.key("t", "CA1", "x" * 300) is None


def test_stop_answers_requests_in_flight_and_withdraws_the_tool(nats_url):
    async def main():
        async with Running(nats_url) as r:
            kv = await r.nc.jetstream().key_value("voice-tools")
            in_flight = asyncio.create_task(
                request(r.nc, call({"order": "A1", "sleep": 0.5}, call_id="drain")))
            await asyncio.sleep(0.1)
            await r.server.stop()
            assert (await in_flight).HasField("output")
            with pytest.raises(nats.js.errors.KeyNotFoundError):
                await kv.get("order_status")
            with pytest.raises(nats.errors.NoRespondersError):
                await r.nc.request("voice.tools.order_status", call({"order": "A"}), timeout=2)

    asyncio.run(main())


def test_the_registry_has_the_shared_settings_whoever_creates_it(nats_url):
    async def main():
        nc = await nats.connect(nats_url)
        js = nc.jetstream()
        # As older releases created it: entries that never expire.
        await js.create_key_value(bucket="voice-tools", history=1)
        kv = await open_registry(js)
        status = await (await js.key_value("voice-tools")).status()
        assert status.ttl == ENTRY_MAX_AGE_SECONDS == 15
        assert status.history == 1
        await nc.close()

    asyncio.run(main())


def test_a_killed_tool_leaves_the_registry_within_the_max_age(nats_url):
    """A replica that dies (SIGKILL: no withdrawal) stops being listed once its entries expire."""
    script = (
        "import asyncio, sys\n"
        "from switchboard_tools import Tool, serve\n"
        "t = Tool(name='order_status', description='d')\n"
        "asyncio.run(serve(t, lambda ctx, args: {}))\n"
    )
    env = {"NATS_URL": nats_url, "PYTHONPATH": str(SDK / "src"), "PATH": "/usr/bin:/bin"}
    proc = subprocess.Popen([sys.executable, "-c", script], env=env)

    async def main():
        nc = await nats.connect(nats_url)
        js = nc.jetstream()
        for _ in range(200):
            try:
                kv = await js.key_value("voice-tools")
                await kv.get("order_status")
                break
            except Exception:  # noqa: BLE001 - not there yet
                await asyncio.sleep(0.05)
        proc.kill()
        proc.wait()
        killed = time.monotonic()
        while True:
            try:
                await kv.get("order_status")
            except nats.js.errors.KeyNotFoundError:
                break
            assert time.monotonic() - killed < ENTRY_MAX_AGE_SECONDS + 3
            await asyncio.sleep(0.2)
        await nc.close()

    try:
        asyncio.run(main())
    finally:
        proc.kill()


def test_the_generated_code_is_current():
    with tempfile.TemporaryDirectory() as out:
        subprocess.run([str(SDK / "generate.sh"), out], check=True,
                       env={"PYTHON": sys.executable, "PATH": "/usr/bin:/bin"})
        for name in ("tool_pb2.py", "tool_pb2.pyi"):
            fresh = (Path(out) / name).read_text()
            committed = (SDK / "src" / "switchboard_tools" / name).read_text()
            assert fresh == committed, f"{name} is stale: run sdks/python/generate.sh"
