"""Switchboard tools in Python: serve a function as a tool the voice model can call.

    import asyncio
    from switchboard_tools import Tool, ToolFailure, serve

    ORDER_STATUS = Tool(
        name="order_status",
        description="Where a customer's order is.",
        parameters={"type": "object", "properties": {"order": {"type": "string"}},
                    "required": ["order"]},
        timeout_ms=3000,
    )

    async def order_status(ctx, args):
        if args["order"] != "A1":
            raise ToolFailure.not_found(f"No order {args['order']}.")
        return {"status": "shipped"}

    asyncio.run(serve(ORDER_STATUS, order_status))

See docs/tools.md of the Switchboard repository for the contract.
"""

from .registry import ENTRY_MAX_AGE_SECONDS, REFRESH_SECONDS, TOOLS_BUCKET, open_registry
from .server import ToolServer, __version__, connect_options, serve, serve_tools
from .tool import (
    DEFAULT_TIMEOUT_MS,
    TIMEOUT_MARGIN_MS,
    Context,
    Tool,
    ToolFailure,
    codes,
    handler_deadline_ms,
)

__all__ = [
    "Context",
    "DEFAULT_TIMEOUT_MS",
    "ENTRY_MAX_AGE_SECONDS",
    "REFRESH_SECONDS",
    "TIMEOUT_MARGIN_MS",
    "TOOLS_BUCKET",
    "Tool",
    "ToolFailure",
    "ToolServer",
    "__version__",
    "codes",
    "connect_options",
    "handler_deadline_ms",
    "open_registry",
    "serve",
    "serve_tools",
]
