"""Drives one MCP server with the official Python SDK client (`mcp` 2.3.0) and prints, as one
JSON object on stdout, what it saw: the negotiated protocol version, tools/list and the results
of the requested tools/call. The Rust tests in tests/third_party.rs run it against a server
directly and through Sentinel and compare the two outputs.

usage: sdk_client.py (--url URL | --stdio COMMAND [ARG...] --) [--env NAME=VALUE]... [--mode MODE]
                     [--answer-sampling TEXT] [--call NAME JSON]...

--env sets a variable for the stdio server, as a client config's `env` does (the SDK adds only a
few harmless variables of its own environment, such as PATH and HOME).
"""

import argparse
import asyncio
import json
import sys

import mcp_types as types
from mcp import Client, StdioServerParameters


# Sentinel declares sampling, elicitation and roots to every backend (it relays them to its
# clients), and some servers (server-everything) offer tools only to clients that declare them.
# Declaring the same here makes a direct connection comparable with one through Sentinel. The
# callbacks only refuse: no test here triggers them.
async def refuse(*_args):
    return types.ErrorData(code=-32603, message="sdk_client.py does not answer server requests")


def dump(model):
    return model.model_dump(mode="json", by_alias=True, exclude_none=True)


def sampler(text):
    async def sample(*_args):
        return types.CreateMessageResult(
            role="assistant", content=types.TextContent(type="text", text=text), model="sdk-client", stopReason="endTurn"
        )

    return sample


async def run(args, server):
    out = {}
    sampling = sampler(args.answer_sampling) if args.answer_sampling is not None else refuse
    callbacks = dict(sampling_callback=sampling, elicitation_callback=refuse, list_roots_callback=refuse)
    async with Client(server, mode=args.mode, cache=None, **callbacks) as client:
        out["protocolVersion"] = client.protocol_version
        out["tools"] = [dump(t) for t in (await client.list_tools()).tools]
        out["calls"] = []
        for name, arguments in args.call or []:
            result = await client.call_tool(name, json.loads(arguments))
            out["calls"].append({"name": name, "result": dump(result)})
    return out


def main():
    argv = sys.argv[1:]
    command = None
    if "--stdio" in argv:
        i = argv.index("--stdio")
        end = argv.index("--", i)
        command = argv[i + 1 : end]
        argv = argv[:i] + argv[end + 1 :]
    p = argparse.ArgumentParser()
    p.add_argument("--url")
    p.add_argument("--mode", default="auto", help="auto, legacy or a modern version such as 2026-07-28")
    p.add_argument("--call", nargs=2, action="append", metavar=("NAME", "JSON"))
    p.add_argument("--env", action="append", default=[], metavar="NAME=VALUE")
    p.add_argument("--answer-sampling", metavar="TEXT", help="answer sampling/createMessage with this text")
    args = p.parse_args(argv)
    if command:
        env = dict(e.split("=", 1) for e in args.env) if args.env else None
        server = StdioServerParameters(command=command[0], args=command[1:], env=env)
    elif args.url:
        server = args.url
    else:
        p.error("one of --url or --stdio is required")
    print(json.dumps(asyncio.run(run(args, server))))


if __name__ == "__main__":
    main()
