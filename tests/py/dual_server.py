"""A dual-generation MCP server built on the official Python SDK (`mcp` 2.3.0, `MCPServer`) over
Streamable HTTP, as many real servers are: it answers `server/discover` (2026-07-28) and
`initialize` (2025-11-25). Its `ask_llm` tool asks the client for sampling the session-based
way; in stateless mode the SDK cannot ("no back-channel"), so a session-based client gets an
answer only over a session. tests/third_party.rs drives it directly and through Sentinel.

usage: dual_server.py PORT|stdio  (over HTTP, uvicorn logs `Uvicorn running on ...` once it listens)
"""

import sys

from mcp.server.mcpserver import Context, MCPServer
from mcp.types import SamplingMessage, TextContent

server = MCPServer("dual-test")


@server.tool()
async def ask_llm(prompt: str, ctx: Context) -> str:
    """Asks the client's LLM (sampling)."""
    message = SamplingMessage(role="user", content=TextContent(type="text", text=prompt))
    answer = await ctx.session.create_message(messages=[message], max_tokens=50)
    return f"sampled: {answer.content.text}"


@server.tool()
def add(a: int, b: int) -> int:
    """Adds two integers."""
    return a + b


if __name__ == "__main__":
    if sys.argv[1] == "stdio":
        server.run()
    else:
        server.run(transport="streamable-http", host="127.0.0.1", port=int(sys.argv[1]))
