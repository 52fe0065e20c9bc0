#!/usr/bin/env bash
# Generates the Python protobuf classes of the tool contract (proto/switchboard/v1/tool.proto)
# into ./gen (not committed: always regenerated from the proto, with the pinned grpcio-tools of
# requirements-dev.txt). Usage: examples/python-tool/generate.sh [OUT_DIR]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
out="${1:-$here/gen}"
python="${PYTHON:-$root/.venv/bin/python}"
mkdir -p "$out"
"$python" -m grpc_tools.protoc -I "$root/proto" --python_out="$out" switchboard/v1/tool.proto
