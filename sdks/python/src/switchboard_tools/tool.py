"""Declaring a tool: its spec, what its handler gets (`Context`) and how it fails (`ToolFailure`)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Optional, Union

from . import tool_pb2

#: How long a tool may run when its declaration does not say; the call-worker's default
#: `TOOL_TIMEOUT_MS`.
DEFAULT_TIMEOUT_MS = 8000

#: OpenAI's function-name rule, which also makes the name a safe NATS subject token.
NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class codes:
    """The `ToolError.code` values of the contract (docs/tools.md)."""

    INVALID_REQUEST = "invalid_request"
    INVALID_ARGUMENTS = "invalid_arguments"
    NOT_FOUND = "not_found"
    FAILED = "failed"
    TIMEOUT = "timeout"
    UNAVAILABLE = "unavailable"
    PANICKED = "panicked"


class ToolFailure(Exception):
    """Raise it from a handler to answer with `ToolError { code, message }`: the model is told the
    tool failed and can recover in conversation. `message` is a sentence for the model."""

    def __init__(self, code: str, message: str):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message

    @classmethod
    def invalid_arguments(cls, message: str) -> "ToolFailure":
        return cls(codes.INVALID_ARGUMENTS, message)

    @classmethod
    def not_found(cls, message: str) -> "ToolFailure":
        return cls(codes.NOT_FOUND, message)

    @classmethod
    def failed(cls, message: str) -> "ToolFailure":
        return cls(codes.FAILED, message)

    @classmethod
    def unavailable(cls, message: str) -> "ToolFailure":
        return cls(codes.UNAVAILABLE, message)


@dataclass
class Context:
    """Who is asking: the phone call the model is serving when it called the tool."""

    #: Twilio's CallSid.
    call_sid: str
    #: The model's function-call id; with `call_sid` it identifies the invocation.
    call_id: str
    #: The agent running the call.
    agent_id: str
    #: The caller's number (E.164), for tools that look people up.
    caller: str
    #: Milliseconds the handler has before the SDK answers `timeout` (the call's deadline less
    #: a margin for the reply to travel back).
    deadline_ms: int
    #: The W3C `traceparent` of the call's `tool` span, if the request carried one; pass it on
    #: (as a `traceparent` header) to what the tool calls, so they join the call's trace.
    traceparent: Optional[str] = None
    _outcome: Optional[str] = field(default=None, repr=False)

    def set_outcome(self, outcome: str) -> bool:
        """Sets the call's business outcome (e.g. `booked`); the first one set wins."""
        if self._outcome is not None:
            return False
        self._outcome = outcome
        return True

    @property
    def outcome(self) -> Optional[str]:
        return self._outcome

    @property
    def trace_id(self) -> Optional[str]:
        """The trace id of `traceparent` (32 hex digits), for log lines."""
        parts = (self.traceparent or "").split("-")
        return parts[1] if len(parts) == 4 and len(parts[1]) == 32 else None


Handler = Callable[[Context, dict], Union[Any, Awaitable[Any]]]


@dataclass
class Tool:
    """A tool's declaration: what the model is told about it.

    `parameters` is the JSON Schema of the arguments (an object schema, inline: no `$ref`);
    arguments are validated against it before the handler runs. `timeout_ms` bounds the handler
    and is advertised so the call-worker waits as long.
    """

    name: str
    description: str
    parameters: dict = field(default_factory=lambda: {"type": "object", "properties": {}})
    timeout_ms: int = DEFAULT_TIMEOUT_MS
    version: str = "0.0.0"

    def __post_init__(self) -> None:
        if not NAME_RE.match(self.name):
            raise ValueError(
                f"tool name {self.name!r} must match ^[A-Za-z0-9_-]{{1,64}}$ (OpenAI's rule)"
            )
        if not isinstance(self.parameters, dict) or self.parameters.get("type") != "object":
            raise ValueError(
                f'the parameters of tool `{self.name}` must be a JSON Schema with "type": "object"'
            )
        if self.timeout_ms <= 0:
            raise ValueError(f"the timeout of tool `{self.name}` must be positive")

    def spec(self) -> tool_pb2.ToolSpec:
        """Its registration in the `voice-tools` bucket."""
        return tool_pb2.ToolSpec(
            name=self.name,
            description=self.description,
            parameters_schema=json.dumps(self.parameters, separators=(",", ":")),
            timeout_ms=self.timeout_ms,
            version=self.version,
        )


#: Time the SDK keeps between its own deadline and the call-worker's: the worker gives up at
#: exactly `ToolCall.timeout_ms` after sending, so a tool that stopped then would answer too late.
TIMEOUT_MARGIN_MS = 200


def handler_deadline_ms(tool_timeout_ms: int, call_timeout_ms: int) -> int:
    """How long the handler may run: the tool's own timeout, and the call's deadline less
    `TIMEOUT_MARGIN_MS` (at most half of it), whichever is shorter."""
    if call_timeout_ms <= 0:
        return tool_timeout_ms
    return min(tool_timeout_ms, call_timeout_ms - min(TIMEOUT_MARGIN_MS, call_timeout_ms // 2))
