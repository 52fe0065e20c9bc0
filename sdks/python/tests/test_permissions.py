"""The Python SDK under the NATS permissions docs/operations.md lists for a tool ("Permissions of
a tool"): it creates both buckets, registers, answers, deduplicates and withdraws without a single
permissions violation."""

import asyncio
import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import nats

from conftest import nats_server_binary
from switchboard_tools import Tool, ToolServer, tool_pb2

TOOL_PUBLISH = [
    "$KV.voice-tools.>",
    "$JS.API.INFO",
    "$JS.API.STREAM.NAMES",
    "$JS.API.STREAM.INFO.KV_voice-tools",
    "$JS.API.STREAM.CREATE.KV_voice-tools",
    "$JS.API.STREAM.UPDATE.KV_voice-tools",
    "$JS.API.DIRECT.GET.KV_voice-tools.>",
    "$JS.API.STREAM.MSG.GET.KV_voice-tools",
    "$JS.API.CONSUMER.CREATE.KV_voice-tools",
    "$JS.API.CONSUMER.CREATE.KV_voice-tools.>",
    "$JS.API.CONSUMER.INFO.KV_voice-tools.>",
    "$JS.API.CONSUMER.DELETE.KV_voice-tools.>",
    "$KV.voice-tool-results.>",
    "$JS.API.STREAM.INFO.KV_voice-tool-results",
    "$JS.API.STREAM.CREATE.KV_voice-tool-results",
    "$JS.API.DIRECT.GET.KV_voice-tool-results.>",
    "$JS.API.STREAM.MSG.GET.KV_voice-tool-results",
]


def test_a_tool_needs_only_the_documented_permissions():
    doc = (Path(__file__).resolve().parents[3] / "docs" / "operations.md").read_text()
    section = doc[doc.index("### Permissions of a tool"):doc.index("### A Deployment for a custom tool")]
    for subject in TOOL_PUBLISH:
        assert f"`{subject}`" in section, f"{subject} is not documented"

    work = tempfile.mkdtemp(prefix="sb-perm-")
    quoted = ", ".join(json.dumps(s) for s in TOOL_PUBLISH)
    conf = Path(work) / "nats.conf"
    conf.write_text(
        f"jetstream {{ store_dir: {json.dumps(work + '/js')} }}\n"
        "authorization { users: [\n"
        "  { user: admin, password: admin }\n"
        f"  {{ user: tool, password: tool, permissions: {{ publish: {{ allow: [{quoted}] }},\n"
        '    subscribe: { allow: ["voice.tools.order_status", "_INBOX.>"] }, allow_responses: true } }\n'
        "] }\n"
    )
    log = Path(work) / "nats.log"
    proc = subprocess.Popen(
        [nats_server_binary(), "-c", str(conf), "-a", "127.0.0.1", "-p", "-1", "--ports_file_dir", work,
         "-l", str(log)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ports = Path(work) / f"nats-server_{proc.pid}.ports"
    for _ in range(500):
        if ports.exists() and ports.read_text().strip():
            break
        time.sleep(0.02)
    url = json.loads(ports.read_text())["nats"][0]

    async def main():
        tool_nc = await nats.connect(url, user="tool", password="tool")
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
