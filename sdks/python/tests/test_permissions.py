"""The Python SDK under the NATS users `switchboard nats tool-user` generates for a tool (the
grants of proto/src/permissions.rs, shown in docs/operations.md): it creates both buckets,
registers, answers, deduplicates and withdraws without a single permissions violation."""

import asyncio
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import nats

from conftest import ROOT, nats_server_binary
from switchboard_tools import Tool, ToolServer, tool_pb2
from switchboard_tools.server import inbox_prefix

def generated_tool_users() -> str:
    """The NATS users of a tool server as `switchboard nats tool-user` generates them (the grants
    of proto/src/permissions.rs, the same docs/operations.md shows)."""
    cli = ROOT / "target" / "debug" / "switchboard"
    if not cli.exists():
        raise RuntimeError("build the workspace binaries first (cargo build --bins)")
    return subprocess.run([str(cli), "nats", "tool-user", "--user", "tool", "--tool", "order_status"],
                          check=True, capture_output=True, text=True).stdout


def test_a_tool_needs_only_the_generated_permissions():
    work = tempfile.mkdtemp(prefix="sb-perm-")
    users = generated_tool_users().replace("users: [", "users: [\n    { user: admin, password: admin }", 1)
    conf = Path(work) / "nats.conf"
    conf.write_text(f"jetstream {{ store_dir: {json.dumps(work + '/js')} }}\n" + users)
    log = Path(work) / "nats.log"
    proc = subprocess.Popen(
        [nats_server_binary(), "-c", str(conf), "-a", "127.0.0.1", "-p", "-1", "--ports_file_dir", work,
         "-l", str(log)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env={**os.environ, "TOOL_PASSWORD": "tool", "TOOL_NEXT_PASSWORD": "tool-next"})
    ports = Path(work) / f"nats-server_{proc.pid}.ports"
    for _ in range(500):
        if ports.exists() and ports.read_text().strip():
            break
        time.sleep(0.02)
    url = json.loads(ports.read_text())["nats"][0]

    async def main():
        tool_nc = await nats.connect(url, user="tool", password="tool", inbox_prefix=inbox_prefix("tool"))
        admin = await nats.connect(url, user="admin", password="admin")
        server = ToolServer().add(
            Tool(name="order_status", description="d",
                 parameters={"type": "object", "properties": {"order": {"type": "string"}}}),
            lambda ctx, args: {"status": "shipped"})
        await server.start(tool_nc)
        kv = await admin.jetstream().key_value("voice-tools")
        assert (await kv.get("order_status")).value
        call = tool_pb2.ToolCall(call_sid="CA1", call_id="c1", name="order_status", arguments="{}",
                                 timeout_ms=2000).SerializeToString()
        for _ in range(2):  # the second is a redelivery, answered from voice-tool-results
            reply = await admin.request("voice.tools.order_status", call, timeout=5)
            result = tool_pb2.ToolResult()
            result.ParseFromString(reply.data)
            assert json.loads(result.output) == {"status": "shipped"}
        await server.stop()
        try:
            await kv.get("order_status")
            raise AssertionError("the tool was not withdrawn")
        except nats.js.errors.KeyNotFoundError:
            pass
        await tool_nc.close()
        await admin.close()

    try:
        asyncio.run(main())
        violations = [line for line in log.read_text().splitlines() if "Violation" in line]
        assert not violations, "\n".join(violations)
    finally:
        proc.kill()
        proc.wait()
        shutil.rmtree(work, ignore_errors=True)
