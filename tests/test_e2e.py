"""End to end: a real gunicorn on 127.0.0.1, and the launcher behind `make run`."""

import asyncio
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time

import httpx2
import psycopg
import pytest
import requests
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from tests.server import ROOT, free_port, stop, wait_until_healthy
from tests.support import stored_contacts


def test_bulk_upsert_through_gunicorn(gunicorn, tenant, make_token, db):
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {make_token(tenant)}"
    contacts = [{"externalId": f"crm-{i}", "email": f"User{i}@Example.com"} for i in range(1000)]
    response = session.post(f"{gunicorn}/contacts/bulk-update", json={"contacts": contacts}, timeout=30)
    assert response.status_code == 200
    assert response.json()["data"]["createdCount"] == 1000
    again = session.post(f"{gunicorn}/contacts/bulk", json={"contacts": contacts}, timeout=30)
    assert again.json()["data"]["unchangedCount"] == 1000
    assert len(stored_contacts(db, tenant["id"])) == 1000


@pytest.mark.parametrize("body, expected", [
    (b"[" * 200_000, "invalid_json"),
    (b"\xc3\x28", "invalid_json"),
    (b'{"contacts": [' + b'{"externalId": "x"},' * 2000 + b'{"externalId": "x"}]}', "batch_size"),
    (b'{"contacts": [{"externalId": "a\\u0000"}]}', "row_failed"),
    (b'{"contacts": [{"email": "\\ud800@x.com"}]}', "row_failed"),
    (b'{"contacts": [{"externalId": "a", "attributes": {"n": 1e999}}]}', "row_failed"),
])
def test_hostile_bodies_are_refused_and_the_workers_keep_serving(gunicorn, tenant, make_token, db,
                                                                 body, expected):
    headers = {"Authorization": f"Bearer {make_token(tenant)}", "Content-Type": "application/json"}
    response = requests.post(f"{gunicorn}/contacts/bulk-update", data=body, headers=headers, timeout=30)
    if expected == "row_failed":
        assert response.status_code == 200
        assert response.json()["data"]["failures"][0]["code"] == "invalid_contact"
    else:
        assert response.status_code == 400
        assert response.json()["error"]["code"] == expected
    assert stored_contacts(db, tenant["id"]) == []
    for _ in range(4):  # both workers still answer
        assert requests.get(f"{gunicorn}/health", timeout=5).status_code == 200


def test_make_run_launcher_bootstraps_serves_and_stops_cleanly(tmp_path, receiver):
    """`flask --app app serve` on an empty data dir: embedded PostgreSQL, demo
    tenant, a printed curl that works, a workflow dispatcher beside gunicorn
    that delivers, a task worker that applies, an MCP server that answers at
    the printed client configuration; Ctrl-C stops everything; data is kept."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    mcp_port = free_port()
    env.update({"CONTACTSYNC_DATA_DIR": str(tmp_path / "data"), "PORT": str(port), "MCP_PORT": str(mcp_port),
                "CONTACTSYNC_WEBHOOK_ALLOW_PRIVATE": "1"})

    def launch() -> subprocess.Popen:
        process = subprocess.Popen(
            [sys.executable, "-m", "flask", "--app", "app", "serve"], cwd=ROOT, env=env,
            start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        wait_until_healthy(f"http://127.0.0.1:{port}", process)
        return process

    first = launch()
    try:
        os.killpg(first.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
        output = first.communicate(timeout=30)[0]
    finally:
        stop(first)
    assert first.returncode == 0
    token = re.search(r"\bcs_[A-Za-z0-9_-]{40,}", output).group(0)
    curl = output[output.index("curl "):].split("\n\n")[0].replace("\\\n", " ")
    assert f"127.0.0.1:{port}" in curl and token in curl
    printed = output[output.index('{\n  "mcpServers"'):]
    configuration = json.loads(printed[:printed.index("\n}\n") + 2])
    assert configuration["mcpServers"]["contactsync"]["url"] == f"http://127.0.0.1:{mcp_port}/mcp"
    postmaster = tmp_path / "data" / "pgdata" / "postmaster.pid"
    assert not postmaster.exists()  # the embedded PostgreSQL stopped with it

    second = launch()
    try:
        completed = subprocess.run(shlex.split(curl), capture_output=True, text=True, timeout=30)
        assert '"createdCount":1' in completed.stdout.replace(" ", "")
        # The dispatcher beside gunicorn delivers a workflow event.
        subprocess.run([sys.executable, "-m", "flask", "--app", "app", "tenants", "set-webhook", "demo",
                        receiver.url], cwd=ROOT, env=env, check=True, capture_output=True, timeout=60)
        changed = requests.post(f"http://127.0.0.1:{port}/contacts/bulk-update", timeout=30,
                                headers={"Authorization": f"Bearer {token}"},
                                json={"contacts": [{"externalId": "crm-1", "firstName": "Al"}],
                                      "runWorkflow": True})
        assert changed.json()["data"]["updatedCount"] == 1
        [event] = receiver.wait_for(1, timeout=30)
        assert json.loads(event.body)["data"]["changedFields"] == ["firstName"]
        # The task worker beside them applies an Inrō bulk update, as the README shows.
        assert_inro_update_applies(f"http://127.0.0.1:{port}", token)
        # The MCP server beside them answers at the printed client configuration.
        found = asyncio.run(mcp_find(configuration["mcpServers"]["contactsync"], "alice@example.com"))
        assert found["contact"]["status"] == "optout"
    finally:
        stop(second, signal.SIGINT)
    assert second.returncode == 0
    output = second.stdout.read()
    assert "cs_" not in output  # data was reused: no second demo tenant
    assert "Dispatcher stopped." in output and "Task worker stopped." in output


async def mcp_find(server: dict, email: str) -> dict:
    """Call find_contact through the SDK's client with a host's server configuration."""
    async with httpx2.AsyncClient(headers=server["headers"], timeout=httpx2.Timeout(30.0)) as http, \
            Client(streamable_http_client(server["url"], http_client=http)) as client:
        result = await client.call_tool("find_contact", {"email": email})
    assert not result.is_error, result.content
    return result.structured_content


def assert_inro_update_applies(base_url: str, token: str) -> None:
    """PUT one update by email, poll its batch task until it ends, read the contact."""
    auth = {"Authorization": f"Bearer {token}"}
    queued = requests.put(f"{base_url}/api/v1/contacts/bulk", headers=auth, timeout=30, json={
        "contacts": [{"email": "alice@example.com", "contact": {"status": "optout"}}]}).json()
    assert queued["accepted_count"] == 1, queued
    deadline = time.monotonic() + 30
    while True:
        task = requests.get(f"{base_url}/api/v1/batch_tasks/{queued['batch_task_id']}", headers=auth,
                            timeout=10).json()
        if task["status"] == "completed" or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert task["status"] == "completed", task
    [contact] = requests.get(f"{base_url}/contacts?email=alice@example.com", headers=auth,
                             timeout=10).json()["data"]
    assert contact["status"] == "optout"


def test_a_worker_killed_mid_batch_leaves_none_of_it_and_the_service_goes_on(gunicorn, tenant,
                                                                            make_token, db,
                                                                            database_url):
    """A batch waits inside its transaction on a row lock held here; its worker
    is killed with SIGKILL; the client sees the connection drop, not one row
    of the batch is stored, and the other worker (then a fresh one) serves."""
    headers = {"Authorization": f"Bearer {make_token(tenant)}"}
    seeded = requests.post(f"{gunicorn}/contacts/bulk-update", headers=headers, timeout=30,
                           json={"contacts": [{"externalId": "held"}]})
    assert seeded.status_code == 200
    batch = [{"externalId": "held", "firstName": "Changed"}] + \
            [{"externalId": f"new-{i}"} for i in range(999)]
    outcome: list = []

    def send() -> None:
        try:
            outcome.append(requests.post(f"{gunicorn}/contacts/bulk-update", headers=headers,
                                         json={"contacts": batch}, timeout=30))
        except requests.ConnectionError as exc:
            outcome.append(exc)

    with psycopg.connect(database_url) as blocker:
        blocker.execute("SELECT 1 FROM contacts WHERE external_id = 'held' FOR UPDATE")
        sender = threading.Thread(target=send)
        sender.start()
        deadline, worker_pid = time.monotonic() + 8, None
        while worker_pid is None:
            assert time.monotonic() < deadline, "the batch never reached its row lock"
            row = db.execute("SELECT application_name FROM pg_stat_activity"
                             " WHERE wait_event_type = 'Lock' AND application_name LIKE 'contactsync/%'"
                             ).fetchone()
            worker_pid = int(row["application_name"].split("/")[1]) if row else None
            time.sleep(0.05)
        os.kill(worker_pid, signal.SIGKILL)
        sender.join(timeout=30)
        blocker.rollback()
    assert isinstance(outcome[0], requests.ConnectionError)  # the answer was lost, as it should be
    stored = stored_contacts(db, tenant["id"])
    assert [(c["external_id"], c["first_name"]) for c in stored] == [("held", None)]  # all absent
    for _ in range(4):
        again = requests.post(f"{gunicorn}/contacts/bulk-update", headers=headers, timeout=30,
                              json={"contacts": [{"externalId": "after"}]})
        assert again.status_code == 200
