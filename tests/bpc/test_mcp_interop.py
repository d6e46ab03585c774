"""``bpc-client`` 1.0.0's MCP server (``bpc-mcp``), unchanged, driven over stdio against authgate.

The published client ships a second command besides ``bpc``: an MCP server that an AI
assistant starts and calls with JSON-RPC lines on stdin. Every tool that talks to a server
is called here against authgate in process (the aiohttp test server, proxying to the echo
upstream): health, registration, signed requests with and without a body, rotation and the
audit trail, and a signed request after the operator revoked the pair. The MCP process
runs with ``HOME`` in the test's directory, where it keeps its pairs.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any

import httpx

from tests.bpc.conftest import SECRET, Gateway


def mcp_command() -> list[str]:
    """The installed ``bpc-mcp`` console script, next to this interpreter."""
    script = Path(sys.executable).with_name("bpc-mcp")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from bpc_client.mcp.server import main; main()"]


async def call_tools(*calls: tuple[str, dict[str, Any]]) -> list[Any]:
    """One ``bpc-mcp`` session: ``initialize``, then each ``tools/call`` in turn; the JSON
    each tool answered, in order."""
    lines = [{"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {}}]
    lines += [
        {"jsonrpc": "2.0", "id": i, "method": "tools/call", "params": {"name": n, "arguments": a}}
        for i, (n, a) in enumerate(calls, start=1)
    ]
    proc = await asyncio.create_subprocess_exec(
        *mcp_command(),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONIOENCODING": "utf-8"},
    )
    sent = "".join(json.dumps(line) + "\n" for line in lines).encode()
    out, err = await asyncio.wait_for(proc.communicate(sent), timeout=120)
    replies = {reply["id"]: reply for reply in map(json.loads, out.decode().splitlines())}
    assert set(replies) == set(range(len(lines))), err.decode()
    assert replies[0]["result"]["serverInfo"]["name"] == "bpc-mcp"
    answers = []
    for i in range(1, len(lines)):
        result = replies[i]["result"]
        assert result["isError"] is False
        answers.append(json.loads(result["content"][0]["text"]))
    return answers


async def test_every_server_tool_of_the_mcp_server_works(gateway: Gateway) -> None:
    """Health, registration, a signed GET, a signed POST whose body reaches the upstream
    intact, rotation (the next request signs with the new secret) and the audit trail."""
    url = gateway.base_url
    body = {"order": 42, "note": "from an assistant"}
    status, registered, got, posted, rotated, after, audit, info = await call_tools(
        ("bpc_server_status", {"base_url": url}),
        ("bpc_register_pair", {"base_url": url, "name": "assistant", "secret": SECRET}),
        ("bpc_signed_request", {"pair_name": "assistant", "method": "GET", "path": "/api/a?x=1"}),
        (
            "bpc_signed_request",
            {"pair_name": "assistant", "method": "POST", "path": "/api/orders", "body": body},
        ),
        ("bpc_rotate_pair", {"name": "assistant", "new_secret": SECRET + "-2"}),
        ("bpc_signed_request", {"pair_name": "assistant", "method": "GET", "path": "/api/b"}),
        ("bpc_audit_log", {"pair_name": "assistant", "limit": 10}),
        ("bpc_pair_info", {"name": "assistant"}),
    )
    assert status == {"status": "ok", "ok": True, "version": "1.0"}
    assert registered["ok"] is True
    pair_id = registered["pair_id"]
    assert (await gateway.pairs.get(pair_id)).pair_id == pair_id
    assert got["status"] == 200, got
    assert (got["body"]["method"], got["body"]["target"]) == ("GET", "/api/a?x=1")
    assert posted["status"] == 200, posted
    # The upstream received the very bytes the client signed (the body hash held).
    sent = httpx.Request("POST", url, json=body).content  # what the client sends
    assert posted["body"]["method"] == "POST"
    assert posted["body"]["body_sha256"] == hashlib.sha256(sent).hexdigest(), posted
    assert rotated == {"ok": True, "pair_id": pair_id}
    assert after["status"] == 200, after
    paths = [entry.get("path") for entry in audit["entries"]]
    assert {"/api/a?x=1", "/api/orders", "/api/b"} <= set(paths), paths
    assert audit["pairId"] == pair_id
    assert "private_key_pem" not in info


async def test_a_revoked_pair_is_refused_through_the_mcp_server(gateway: Gateway) -> None:
    """After the operator revokes the pair, the tool reports authgate's refusal with its
    code, and the pair's trail records the refused request."""
    url = gateway.base_url
    (registered,) = await call_tools(
        ("bpc_register_pair", {"base_url": url, "name": "assistant", "secret": SECRET})
    )
    await gateway.pairs.revoke(registered["pair_id"], by="operator", operator="test")
    (refused,) = await call_tools(
        ("bpc_signed_request", {"pair_name": "assistant", "method": "GET", "path": "/api/c"})
    )
    # The published client turns authgate's 401 into its own error, keeping the code.
    assert refused["code"] == "pair_revoked", refused
    (newest, *_) = await gateway.pairs.trail(registered["pair_id"], 5)
    assert (newest["path"], newest["outcome"]) == ("/api/c", "pair_revoked")
