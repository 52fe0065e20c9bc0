#!/usr/bin/env bash
# Regenerates src/switchboard_tools/tool_pb2.py (+ .pyi) from proto/switchboard/v1/tool.proto.
#
# Generator: grpcio-tools' bundled protoc (`python -m grpc_tools.protoc`), the version pinned in
# requirements-dev.txt, with options `--python_out` and `--pyi_out` (type stubs) and the include
# path proto/, so the descriptor is registered as `switchboard/v1/tool.proto` as in every other
# language. The output is committed; tests/test_generated.py fails when it is stale.
# Usage: sdks/python/generate.sh [OUT_DIR]   (default: the package directory)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
out="${1:-$here/src/switchboard_tools}"
python="${PYTHON:-$root/.venv/bin/python}"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
"$python" -m grpc_tools.protoc -I "$root/proto" --python_out="$tmp" --pyi_out="$tmp" \
  switchboard/v1/tool.proto
mkdir -p "$out"
cp "$tmp/switchboard/v1/tool_pb2.py" "$tmp/switchboard/v1/tool_pb2.pyi" "$out/"
