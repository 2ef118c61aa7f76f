"""The MCP server (DESIGN 13, app/mcp/), driven with the SDK's own client over
both transports against real processes: `flask --app app mcp --http` and a
task worker on 127.0.0.1, and `flask --app app mcp` over stdio."""

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import httpx2
import pytest
import requests
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client

from tests.server import ROOT, free_port, stop
from tests.support import auth_headers, stored_contacts

TOOLS = {"bulk_update_contacts", "list_batch_tasks", "get_batch_task", "upsert_contacts", "find_contact",
         "list_contact_changes"}
EVERY_SCOPE = ("contacts:read", "contacts:write", "jobs:read", "jobs:write")


@contextmanager
def process(database_url: str, *args: str) -> Iterator[subprocess.Popen]:
    """`flask --app app <args>` against the test database, stopped afterwards."""
    child = subprocess.Popen([sys.executable, "-m", "flask", "--app", "app", *args], cwd=ROOT,
                             env={**os.environ, "DATABASE_URL": database_url}, start_new_session=True,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield child
    finally:
        stop(child)


@pytest.fixture(scope="module")
def mcp_url(database_url: str) -> Iterator[str]:
    """A real MCP server over streamable HTTP, and a task worker beside it."""
    port = free_port()
    url = f"http://127.0.0.1:{port}/mcp"
    with process(database_url, "mcp", "--http", "--port", str(port)) as server, \
            process(database_url, "tasks", "run"):
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None, "the MCP server exited during start-up"
            try:
                requests.post(url, timeout=2)
                break
            except requests.ConnectionError:
                assert time.monotonic() < deadline, "the MCP server did not listen in 60 s"
                time.sleep(0.2)
        yield url


@asynccontextmanager
async def http_client(url: str, token: str):
    async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"},
                                  timeout=httpx2.Timeout(30.0)) as http, \
            Client(streamable_http_client(url, http_client=http)) as client:
        yield client


async def call(client: Client, tool: str, **arguments: Any) -> dict[str, Any]:
    """A tool's structured result; fails the test on a tool error."""
    result = await client.call_tool(tool, arguments)
    assert not result.is_error, result.content
    return result.structured_content


async def tool_error(client: Client, tool: str, **arguments: Any) -> dict[str, Any]:
    """A tool's error, as the JSON error object it carries."""
    result = await client.call_tool(tool, arguments)
    assert result.is_error
    return json.loads(result.content[0].text)["error"]


def test_the_tools_describe_themselves(mcp_url, tenant, make_token):
    async def scenario() -> dict[str, Any]:
        async with http_client(mcp_url, make_token(tenant, EVERY_SCOPE)) as client:
            return {tool.name: tool for tool in (await client.list_tools()).tools}

    tools = asyncio.run(scenario())
    assert set(tools) == TOOLS
    for name in ("list_batch_tasks", "get_batch_task", "find_contact", "list_contact_changes"):
        assert tools[name].annotations.read_only_hint is True, name
    for name in ("bulk_update_contacts", "upsert_contacts"):
        hints = tools[name].annotations
        assert (hints.read_only_hint, hints.destructive_hint) == (False, True)
    assert all(tool.description and tool.output_schema for tool in tools.values())
    bulk = tools["bulk_update_contacts"].input_schema
    entries = bulk["properties"]["contacts"]
    assert (entries["minItems"], entries["maxItems"]) == (1, 1000)
    updates = bulk["$defs"]["ContactUpdates"]["properties"]
    assert updates["status"]["anyOf"][0]["enum"] == ["auto", "optout", "spam"]
    assert all(field.get("description") for field in updates.values())
    row = tools["upsert_contacts"].input_schema["properties"]["contacts"]["items"]
    assert row["properties"]["status"]["enum"] == ["auto", "optout", "spam"]
    assert row["properties"]["companies"]["items"]["properties"]["companyId"]["maxLength"] == 255  # inlined


def test_upsert_find_and_follow_the_feed_over_http(mcp_url, tenant, make_token, db):
    async def scenario() -> tuple[dict, ...]:
        async with http_client(mcp_url, make_token(tenant, EVERY_SCOPE)) as client:
            upserted = await call(client, "upsert_contacts", return_results=True, contacts=[
                {"externalId": "crm-1", "email": "Alice@Example.com", "firstName": "Alice"},
                {"email": "bo@example.com", "tags": {"add": ["vip"]}},
                {"email": "not an address"}])
            found = await call(client, "find_contact", email="ALICE@example.com")
            missing = await call(client, "find_contact", externalId="nobody")
            first = await call(client, "list_contact_changes", limit=1)
            rest = await call(client, "list_contact_changes", cursor=first["nextCursor"], limit=10)
            return upserted, found, missing, first, rest

    upserted, found, missing, first, rest = asyncio.run(scenario())
    assert (upserted["createdCount"], upserted["failedCount"]) == (2, 1)
    assert upserted["failures"][0]["code"] == "invalid_contact"
    stored = stored_contacts(db, tenant["id"])
    by_email = {c["email"]: c for c in stored}
    assert set(by_email) == {"alice@example.com", "bo@example.com"}
    assert found["contact"]["id"] == by_email["alice@example.com"]["id"]
    assert found["contact"]["firstName"] == "Alice"
    assert missing == {"contact": None}
    assert first["hasMore"] is True and len(first["contacts"]) == 1
    assert [c["id"] for c in first["contacts"] + rest["contacts"]] == [c["id"] for c in stored]
    fed = {c["email"]: c for c in first["contacts"] + rest["contacts"]}
    assert fed["bo@example.com"]["tags"][0]["name"] == "vip"


def test_a_bulk_update_answers_as_inros_door_and_its_task_completes(mcp_url, gunicorn, tenant, make_token,
                                                                     db):
    token = make_token(tenant, EVERY_SCOPE)
    requests.post(f"{gunicorn}/contacts/bulk-update", headers=auth_headers(token), timeout=30, json={
        "contacts": [{"email": "a@example.com"}, {"username": "jane"}]}).raise_for_status()
    entries = [{"email": "A@example.com", "updates": {"status": "optout", "name": "Ann"}},
               {"username": "Jane", "updates": {"custom_properties": {"plan": "pro"}}},
               {"email": "nobody@example.com", "updates": {"phone": "+15550000001"}}]
    as_inro = [{**{k: v for k, v in e.items() if k != "updates"}, "contact": e["updates"]} for e in entries]
    inro = requests.put(f"{gunicorn}/api/v1/contacts/bulk", headers=auth_headers(token), timeout=30,
                        json={"contacts": as_inro})

    async def scenario() -> tuple[dict, dict, dict]:
        async with http_client(mcp_url, token) as client:
            queued = await call(client, "bulk_update_contacts", contacts=entries)
            deadline = time.monotonic() + 30
            while True:
                task = await call(client, "get_batch_task", task_id=queued["batch_task_id"])
                if task["status"] == "completed" or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.2)
            listed = await call(client, "list_batch_tasks", limit=5)
            return queued, task, listed

    queued, task, listed = asyncio.run(scenario())
    door = inro.json()
    assert {k: v for k, v in queued.items() if k != "batch_task_id"} == \
        {k: v for k, v in door.items() if k != "batch_task_id"}
    assert queued["not_found"] == [{"email": "nobody@example.com"}] and queued["accepted_count"] == 2
    assert (task["status"], task["processed_count"], task["progress_percentage"]) == ("completed", 2, 100)
    assert set(task) == set(requests.get(f"{gunicorn}/api/v1/batch_tasks/{door['batch_task_id']}",
                                         headers=auth_headers(token), timeout=30).json())
    assert [t["id"] for t in listed["batch_tasks"]][0] == queued["batch_task_id"]
    by_email = {c["email"]: c for c in stored_contacts(db, tenant["id"])}
    assert (by_email["a@example.com"]["status"], by_email["a@example.com"]["name"]) == ("optout", "Ann")
    assert by_email[None]["attributes"] == {"plan": "pro"}


def test_scopes_bad_input_and_tenants(mcp_url, tenant, make_tenant, make_token):
    other = make_tenant("other")

    async def scenario() -> dict[str, Any]:
        async with http_client(mcp_url, make_token(other, EVERY_SCOPE)) as client:
            await call(client, "upsert_contacts", contacts=[{"externalId": "th", "email": "t@example.com"}])
        async with http_client(mcp_url, make_token(tenant, ("contacts:read",))) as reader:
            refused = await tool_error(reader, "upsert_contacts", contacts=[{"externalId": "x"}])
            refused_bulk = await tool_error(reader, "bulk_update_contacts",
                                            contacts=[{"id": 1, "updates": {"name": "x"}}])
            refused_tasks = await tool_error(reader, "list_batch_tasks")
            not_theirs = await call(reader, "find_contact", email="t@example.com")
        async with http_client(mcp_url, make_token(tenant, EVERY_SCOPE)) as writer:
            bad_entries = await tool_error(writer, "bulk_update_contacts", contacts=[
                {"id": 1, "email": "a@example.com", "updates": {}},
                {"email": "not an address", "updates": {"status": "optout"}}])
            schema_refusal = await writer.call_tool("bulk_update_contacts", {"contacts": [
                {"id": 1, "updates": {"status": "active", "colour": "red"}}]})
            bad_cursor = await tool_error(writer, "list_contact_changes", cursor="not-ours")
            two_keys = await tool_error(writer, "find_contact", id=1, email="a@example.com")
            unknown_task = await tool_error(writer, "get_batch_task", task_id="abc")
        return locals()

    seen = asyncio.run(scenario())
    for refusal in (seen["refused"], seen["refused_bulk"], seen["refused_tasks"]):
        assert refusal["code"] == "insufficient_scope"
    assert seen["refused"]["details"] == {"requiredScope": "contacts:write"}
    assert seen["not_theirs"] == {"contact": None}
    assert seen["bad_entries"]["code"] == "invalid_request"
    assert set(seen["bad_entries"]["details"]["contacts"]) == {"0", "1"}  # every bad entry named
    refusal_text = seen["schema_refusal"].content[0].text
    assert seen["schema_refusal"].is_error and "status" in refusal_text and "colour" in refusal_text
    assert "Traceback" not in refusal_text
    assert seen["bad_cursor"]["code"] == "invalid_cursor"
    assert seen["two_keys"]["code"] == "invalid_request"
    assert seen["unknown_task"]["code"] == "not_found"


def test_http_refuses_a_missing_bad_or_revoked_token(mcp_url, tenant, make_token, db):
    initialize = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}
    headers = {"Accept": "application/json, text/event-stream"}
    for extra in ({}, {"Authorization": "Bearer cs_not_a_token"}, {"Authorization": "Basic abc"}):
        response = requests.post(mcp_url, json=initialize, headers={**headers, **extra}, timeout=10)
        assert response.status_code == 401, extra
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
    token = make_token(tenant, EVERY_SCOPE)
    accepted = requests.post(mcp_url, json=initialize, timeout=10,
                             headers={**headers, "Authorization": f"Bearer {token}"})
    assert accepted.status_code == 200
    db.execute("UPDATE api_tokens SET revoked_at = now()")
    revoked = requests.post(mcp_url, json=initialize, timeout=10,
                            headers={**headers, "Authorization": f"Bearer {token}"})
    assert revoked.status_code == 401


def stdio_server(database_url: str, token: str) -> StdioServerParameters:
    return StdioServerParameters(command=sys.executable, args=["-m", "flask", "--app", "app", "mcp"],
                                 cwd=str(ROOT),
                                 env={"DATABASE_URL": database_url, "CONTACTSYNC_TOKEN": token})


def test_stdio_upserts_and_finds_with_the_token_of_the_environment(database_url, tenant, make_token, db):
    async def scenario() -> tuple[set[str], dict, dict]:
        async with Client(stdio_server(database_url, make_token(tenant, EVERY_SCOPE))) as client:
            names = {tool.name for tool in (await client.list_tools()).tools}
            upserted = await call(client, "upsert_contacts", contacts=[{"username": "Zed", "name": "Zed Z"}])
            found = await call(client, "find_contact", username="zed")
            return names, upserted, found

    names, upserted, found = asyncio.run(scenario())
    assert names == TOOLS
    assert upserted["createdCount"] == 1
    [stored] = stored_contacts(db, tenant["id"])
    assert found["contact"]["id"] == stored["id"] and found["contact"]["name"] == "Zed Z"


@pytest.mark.parametrize("token", ["", "cs_unknown_token_000000000000000000000000000", "not-a-token"])
def test_stdio_refuses_to_start_without_a_valid_token(database_url, token):
    completed = subprocess.run([sys.executable, "-m", "flask", "--app", "app", "mcp"], cwd=ROOT,
                               env={**os.environ, "DATABASE_URL": database_url, "CONTACTSYNC_TOKEN": token},
                               input="", capture_output=True, text=True, timeout=60)
    assert completed.returncode != 0
    assert "CONTACTSYNC_TOKEN" in completed.stderr and "Traceback" not in completed.stderr
    assert completed.stdout == ""  # stdout is the protocol's
