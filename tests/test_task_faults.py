"""Batch-task workers (DESIGN 10) as real processes, killed and starved of their database.

- A worker killed with SIGKILL again and again (at random instants mid-chunk,
  and at the instant a chunk's writes become visible) and started again each
  time: every task ends, and every row is applied exactly once: the contacts,
  their events, the stored results and the task counters all say exactly
  what the rows asked for.
- PostgreSQL crashes (immediate shutdown) and comes back while a worker
  applies tasks: the worker waits it out and finishes, as exactly.
- Two workers on one queue: every chunk is applied once, by one of them, at
  its first attempt, and both did some of the work.

Tasks are submitted and read through a real gunicorn over 127.0.0.1; the
worker is `flask --app app tasks run` in its own session. The figures are
printed (pytest -rP).
"""

import os
import random
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
import requests
from psycopg.rows import dict_row

from app.db import apply_schema
from app.engine.tokens import create_token
from app.engine.upsert import CREATED, FAILED, UNCHANGED, UPDATED
from app.sql import queries
from tests.server import ROOT, RestartablePostgres, running_gunicorn, stop

SHORT_LEASE_S = 2  # a killed worker's chunk is due again this soon
LONG_LEASE_S = 30  # far longer than any chunk takes: no lease runs out by itself
WAIT_S = 60  # the bound of every wait for the workers
RESULTS_PAGE = 300  # not a multiple of the chunk size: pages end inside chunks
PRE_CONTACTS = 300  # contacts each tenant has before the tasks (no events)
FINISHED = ("completed", "completed_with_errors")
READY = "Task worker applying"  # the banner it prints once started
APPLIED = re.compile(r"applied chunk (\d+) of task (\d+) \(tenant (\d+)\)")


# -- the plan: tasks, their rows, and what each row must come to -----------------------------------

@dataclass
class Tenant:
    id: int
    token: str
    pre: list[str]  # externalIds of the contacts it had before (first name "old")


@dataclass
class Task:
    tenant: str
    rows: list[dict]
    expected: list[tuple[str, str]]  # per row: its externalId, and the status it must end with
    id: int | None = None


def new_row(k: int, i: int) -> dict:
    return {"externalId": f"new-{k}-{i}", "email": f"new{k}.{i}@example.com", "firstName": "N"}


def mixed_task(tenant: str, k: int, size: int = 1000) -> Task:
    """The tenant's k-th task: mostly new contacts; an update of a contact the
    tenant had before; from the second task on, an update of a contact the
    previous task created and an identical re-send of another (unchanged);
    and an invalid row in ten."""
    rows, expected = [], []
    for i in range(size):
        r = i % 10
        if r == 9:
            row, status = {"externalId": f"bad-{k}-{i}", "email": "not-an-address"}, FAILED
        elif r == 0:
            row = {"externalId": f"pre-{(k * 100 + i // 10) % PRE_CONTACTS}", "firstName": f"task{k}"}
            status = UPDATED
        elif r == 1 and k > 0 and i + 4 < size:  # the previous task's row i + 4 (r == 5) was new
            row, status = {"externalId": f"new-{k - 1}-{i + 4}", "firstName": f"again{k}"}, UPDATED
        elif r == 2 and k > 0 and i + 4 < size:  # the previous task's row i + 4 (r == 6) was new
            row, status = new_row(k - 1, i + 4), UNCHANGED
        else:
            row, status = new_row(k, i), CREATED
        rows.append(row)
        expected.append((row["externalId"], status))
    return Task(tenant, rows, expected)


def small_task(tenant: str, k: int, size: int) -> Task:
    """The tenant's k-th small task: its hot contact renamed, and new contacts."""
    rows = [{"externalId": "hot", "firstName": f"k{k}"}] + [
        {"externalId": f"small-{k}-{i}", "email": f"small{k}.{i}@example.com"} for i in range(size - 1)]
    expected = [(row["externalId"], CREATED) for row in rows]
    expected[0] = ("hot", CREATED if k == 0 else UPDATED)
    return Task(tenant, rows, expected)


def connect(url: str) -> psycopg.Connection:
    return psycopg.connect(url, autocommit=True, row_factory=dict_row)


def create_tenant(conn: psycopg.Connection, slug: str, pre_contacts: int = 0) -> Tenant:
    """A tenant whose workflow events are on (no dispatcher runs: they stay in
    the outbox, to be counted), a token to submit and read tasks, and
    `pre_contacts` contacts written directly (with no events)."""
    tenant = conn.execute(queries["insert-tenant"], {"slug": slug, "name": slug}).fetchone()
    conn.execute("UPDATE tenants SET webhook_url = 'https://hooks.example.com/c',"
                 " webhook_secret = 'whsec_test', webhook_enabled = true WHERE id = %s", (tenant["id"],))
    token, _ = create_token(conn, tenant["id"], ["contacts:write", "jobs:read"])
    pre = [f"pre-{n}" for n in range(pre_contacts)]
    for external_id in pre:
        conn.execute("INSERT INTO contacts (tenant_id, external_id, first_name) VALUES (%s, %s, 'old')",
                     (tenant["id"], external_id))
    return Tenant(tenant["id"], token.secret, pre)


# -- processes ------------------------------------------------------------------------------------

def start_worker(database_url: str, log: Path, lease_seconds: int, threads: int) -> subprocess.Popen:
    """The real `flask --app app tasks run` in a session of its own, its output appended to `log`."""
    env = {**os.environ, "DATABASE_URL": database_url,
           "CONTACTSYNC_TASK_LEASE_SECONDS": str(lease_seconds)}
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", "flask", "--app", "app", "tasks", "run",
                                 "--threads", str(threads)],
                                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)


def kill(worker: subprocess.Popen) -> None:
    os.killpg(worker.pid, signal.SIGKILL)
    worker.wait(timeout=10)


def wait_until(condition: Callable[[], Any], deadline: float, what: str, poll_s: float = 0.05,
               explain: Callable[[], Any] | None = None) -> None:
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting until {what}" + (f": {explain()}" if explain else ""))
        time.sleep(poll_s)


def scalar(conn: psycopg.Connection, query: str) -> Any:
    return next(iter(conn.execute(query).fetchone().values()))


def unfinished(conn: psycopg.Connection) -> int:
    return scalar(conn, "SELECT count(*) FROM batch_tasks"
                        " WHERE status NOT IN ('completed', 'completed_with_errors')")


def stuck_tasks(conn: psycopg.Connection) -> list[dict]:
    """The tasks that have not ended, with their counters and what their chunks hold."""
    return conn.execute(
        "SELECT t.id, t.status, t.total_count, t.processed_count,"
        " (SELECT coalesce(sum(c.row_count), 0) FROM batch_task_chunks AS c WHERE c.tenant_id = t.tenant_id"
        "  AND c.task_id = t.id AND c.state = 'done') AS rows_in_done_chunks"
        " FROM batch_tasks AS t WHERE t.status NOT IN ('completed', 'completed_with_errors')"
        " ORDER BY t.id").fetchall()


def chunk_figures(conn: psycopg.Connection) -> dict:
    return conn.execute("SELECT count(*) AS chunks, count(*) FILTER (WHERE state = 'done') AS done,"
                        " count(*) FILTER (WHERE attempts > 1) AS retried,"
                        " coalesce(max(attempts), 0) AS max_attempts,"
                        " coalesce(sum(attempts), 0) AS claims FROM batch_task_chunks").fetchone()


# -- HTTP -----------------------------------------------------------------------------------------

def submit(session: requests.Session, base_url: str, tenant: Tenant, task: Task) -> None:
    response = session.post(f"{base_url}/contacts/bulk-update",
                            json={"contacts": task.rows, "runWorkflow": True},
                            headers={"Authorization": f"Bearer {tenant.token}", "Prefer": "respond-async"},
                            timeout=30)
    assert response.status_code == 202, response.text
    task.id = response.json()["data"]["id"]


def get_json(session: requests.Session, url: str, token: str, deadline: float) -> dict:
    """GET, waiting out a 503 or a dropped connection (the database may just be back)."""
    while True:
        try:
            response = session.get(url, headers={"Authorization": f"Bearer {token}"}, timeout=15)
            if response.status_code == 200:
                return response.json()
            assert response.status_code == 503, (url, response.status_code, response.text)
        except requests.ConnectionError:
            pass
        assert time.monotonic() < deadline, f"{url} was not served in time"
        time.sleep(0.2)


def all_results(session: requests.Session, base_url: str, tenant: Tenant, task: Task,
                deadline: float) -> list[dict]:
    """Every row outcome of the task, page after page."""
    results: list[dict] = []
    url = f"{base_url}/batch-tasks/{task.id}/results?limit={RESULTS_PAGE}"
    for _ in range(len(task.rows) // RESULTS_PAGE + 2):
        page = get_json(session, url, tenant.token, deadline)
        results.extend(page["data"])
        if not page["hasMore"]:
            return results
        url = f"{base_url}/batch-tasks/{task.id}/results?limit={RESULTS_PAGE}&cursor={page['nextCursor']}"
    raise AssertionError(f"task {task.id}: more result pages than rows")


# -- exactness ------------------------------------------------------------------------------------

def assert_applied_exactly_once(session: requests.Session, base_url: str, conn: psycopg.Connection,
                                tenants: dict[str, Tenant], tasks: list[Task]) -> None:
    """Every task ended, its counters are its results, each row ended as planned
    (a row applied twice would come back `unchanged`), and each tenant's
    contacts, their events and their names are what applying every row once,
    in submission order, makes them."""
    deadline = time.monotonic() + WAIT_S
    results_of: dict[int, list[dict]] = {}
    views: dict[int, dict] = {}
    for task in tasks:
        tenant = tenants[task.tenant]
        view = get_json(session, f"{base_url}/batch-tasks/{task.id}", tenant.token, deadline)["data"]
        results = all_results(session, base_url, tenant, task, deadline)
        total = len(task.rows)
        assert [r["index"] for r in results] == list(range(total)), f"task {task.id}: row indexes"
        statuses = [r["status"] for r in results]
        wrong = [(i, xid, want, got) for i, ((xid, want), got) in enumerate(zip(task.expected, statuses,
                                                                               strict=True)) if want != got]
        assert not wrong, f"task {task.id}: {len(wrong)} rows did not end as planned, e.g. {wrong[:5]}"
        counts = Counter(statuses)
        assert (view["totalCount"], view["processedCount"], view["createdCount"], view["updatedCount"],
                view["unchangedCount"], view["failedCount"]) == \
            (total, total, counts[CREATED], counts[UPDATED], counts[UNCHANGED], counts[FAILED]), view
        assert view["status"] == ("completed_with_errors" if counts[FAILED] else "completed")
        assert {r.get("code") for r in results if r["status"] == FAILED} <= {"invalid_contact"}
        results_of[task.id], views[task.id] = results, view

    for slug, tenant in tenants.items():
        mine = [task for task in tasks if task.tenant == slug]  # in submission order
        contacts = {row["external_id"]: row for row in conn.execute(
            "SELECT id, external_id, first_name FROM contacts WHERE tenant_id = %s", (tenant.id,))}
        names = dict.fromkeys(tenant.pre, "old")
        events: Counter = Counter()
        for task in mine:
            for row, (xid, status) in zip(task.rows, task.expected, strict=True):
                if status == FAILED:
                    continue
                names.setdefault(xid, None)
                if "firstName" in row:
                    names[xid] = row["firstName"]
                if status in (CREATED, UPDATED):
                    events[(xid, "contact." + status)] += 1
        # No contact twice, none missing, none extra (count == distinct externalIds expected).
        assert len(contacts) == len(names) and set(contacts) == set(names), slug
        assert {xid: c["first_name"] for xid, c in contacts.items()} == names, slug
        # Each result names the contact its row wrote.
        for task in mine:
            for result, (xid, status) in zip(results_of[task.id], task.expected, strict=True):
                assert result["id"] == (None if status == FAILED else contacts[xid]["id"]), (task.id, result)
        stored = Counter({(row["external_id"], row["type"]): row["n"] for row in conn.execute(
            "SELECT c.external_id, e.type, count(*) AS n FROM webhook_events AS e"
            " JOIN contacts AS c ON c.tenant_id = e.tenant_id AND c.id = e.contact_id"
            " WHERE e.tenant_id = %s GROUP BY 1, 2", (tenant.id,))})
        assert stored == events, f"{slug}: contact events differ from one per change"
        assert scalar(conn, f"SELECT count(*) FROM webhook_events WHERE tenant_id = {tenant.id}"
                            " AND type <> 'batch_task.completed'") == sum(events.values())
        task_events = [row["batch_task"] for row in conn.execute(
            "SELECT batch_task FROM webhook_events WHERE tenant_id = %s"
            " AND type = 'batch_task.completed' ORDER BY id", (tenant.id,))]
        assert task_events == [views[task.id] for task in mine], f"{slug}: one event per task, as it ended"


def worker_errors(*logs: Path) -> list[str]:
    return [line for log in logs for line in log.read_text(errors="replace").splitlines()
            if " ERROR " in line or "Traceback" in line]


# -- the tests ------------------------------------------------------------------------------------

KILLS = 4


def test_a_worker_killed_again_and_again_applies_every_row_exactly_once(database_url, db, tmp_path):
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    tenants = {slug: create_tenant(db, slug, PRE_CONTACTS) for slug in ("acme", "globex")}
    tasks = [mixed_task(slug, k, size=750) for k in range(4) for slug in tenants]  # 16 chunks
    log = tmp_path / "worker.log"
    kills: Counter = Counter()

    def events_written() -> int:
        return scalar(db, "SELECT count(*) FROM webhook_events")

    with running_gunicorn(database_url, CONTACTSYNC_RATE_LIMIT="off") as base_url, \
            requests.Session() as session:
        for task in tasks:
            submit(session, base_url, tenants[task.tenant], task)
        started = time.monotonic()
        deadline = started + WAIT_S
        worker = start_worker(database_url, log, SHORT_LEASE_S, threads=2)
        try:
            for n in range(KILLS):
                claims = chunk_figures(db)["claims"]
                # The (new) worker is at work: it claimed a chunk.
                wait_until(lambda: chunk_figures(db)["claims"] > claims or unfinished(db) == 0,  # noqa: B023
                           deadline, "the worker claimed a chunk")
                if unfinished(db) == 0:
                    break
                if n % 2 == 0:  # at a random instant, most likely in the middle of applying it
                    time.sleep(rng.uniform(0.01, 0.15))
                    kind = "mid-chunk"
                else:  # the instant a chunk's writes are seen: the done mark must be in that commit
                    written = events_written()
                    wait_until(lambda: events_written() != written or unfinished(db) == 0,  # noqa: B023
                               deadline, "a chunk's writes were committed", poll_s=0.001)
                    kind = "at a commit"
                kill(worker)
                kills[kind] += 1
                worker = start_worker(database_url, log, SHORT_LEASE_S, threads=2)
            wait_until(lambda: unfinished(db) == 0, deadline, "every task ended",
                       explain=lambda: stuck_tasks(db))
            elapsed = time.monotonic() - started
            # The last one may have started after the work ended: let it start up fully.
            wait_until(lambda: log.read_text().count(READY) == sum(kills.values()) + 1, deadline,
                       "the last worker started")
            time.sleep(0.5)  # past its banner, to its signal handlers
        finally:
            status = stop(worker)
        assert status == 0  # the last one stops cleanly

        figures = chunk_figures(db)
        print(f"killed worker: {len(tasks)} tasks, {sum(len(t.rows) for t in tasks)} rows, "
              f"{figures['chunks']} chunks, {sum(kills.values())} kills ({kills['mid-chunk']} mid-chunk, "
              f"{kills['at a commit']} at a commit), {figures['retried']} chunks needed more than one "
              f"attempt (at most {figures['max_attempts']}), all applied in {elapsed:.1f} s "
              f"(lease {SHORT_LEASE_S} s, seed {seed})")
        assert sum(kills.values()) == KILLS, "the work ended before every kill"
        assert figures["done"] == figures["chunks"]
        assert figures["retried"] > 0  # some chunk was lost with its worker and claimed again
        assert_applied_exactly_once(session, base_url, db, tenants, tasks)
    assert worker_errors(log) == []


@pytest.fixture
def postgres(tmp_path) -> Iterator[RestartablePostgres]:
    server = RestartablePostgres(tmp_path)
    try:
        with psycopg.connect(server.url, autocommit=True) as conn:
            apply_schema(conn)
        yield server
    finally:
        server.remove()


OUTAGE_S = 4  # a crash, and a few seconds before the database is back


def test_a_worker_waits_out_a_postgres_crash_and_applies_every_row_exactly_once(postgres, tmp_path):
    url = postgres.url
    with connect(url) as conn:
        tenants = {slug: create_tenant(conn, slug, PRE_CONTACTS) for slug in ("acme", "globex")}
    tasks = [mixed_task(slug, k) for k in range(2) for slug in tenants]
    log = tmp_path / "worker.log"

    def figures_or_none() -> dict | None:
        try:
            with connect(url) as conn:
                return {**chunk_figures(conn), "unfinished": unfinished(conn)}
        except psycopg.OperationalError:  # down, or still starting
            return None

    with running_gunicorn(url, CONTACTSYNC_RATE_LIMIT="off") as base_url, requests.Session() as session:
        for task in tasks:
            submit(session, base_url, tenants[task.tenant], task)
        deadline = time.monotonic() + WAIT_S
        worker = start_worker(url, log, SHORT_LEASE_S, threads=2)
        try:
            wait_until(lambda: (figures_or_none() or {}).get("done", 0) >= 1, deadline,
                       "a first chunk was applied")
            with connect(url) as conn:
                in_flight = scalar(conn, "SELECT count(*) FROM batch_task_chunks"
                                         " WHERE state = 'pending' AND lease_until > now()")
                before = chunk_figures(conn)
            postgres.shut_down("immediate")
            time.sleep(OUTAGE_S)
            postgres.start()
            back = time.monotonic()
            wait_until(lambda: (figures_or_none() or {}).get("unfinished") == 0, deadline,
                       "every task ended", poll_s=0.2)
            finished = time.monotonic()
            assert worker.poll() is None, "the worker exited instead of waiting for the database"
        finally:
            status = stop(worker)
        assert status == 0

        text = log.read_text(errors="replace")
        with connect(url) as conn:
            after = chunk_figures(conn)
            print(f"postgres crash: {len(tasks)} tasks, {sum(len(t.rows) for t in tasks)} rows, "
                  f"{after['chunks']} chunks, {before['done']} applied and {in_flight} in flight at the "
                  f"crash, {OUTAGE_S} s down, the rest applied {finished - back:.1f} s after it was back; "
                  f"{after['retried']} chunks needed more than one attempt; the worker logged "
                  f"{text.count('database unavailable')} waits")
            assert before["done"] < before["chunks"], "every chunk was applied before the crash"
            assert after["done"] == after["chunks"]
            assert "database unavailable" in text  # it did meet the outage
            assert_applied_exactly_once(session, base_url, conn, tenants, tasks)
    assert worker_errors(log) == []


def test_two_workers_on_one_queue_apply_each_chunk_once(database_url, db, tmp_path):
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    tenants = {f"t{n}": create_tenant(db, f"t{n}") for n in range(4)}
    tasks = [small_task(f"t{n % 4}", n // 4, rng.randint(50, 120)) for n in range(40)]
    logs = [tmp_path / f"worker-{n}.log" for n in range(2)]

    with running_gunicorn(database_url, CONTACTSYNC_RATE_LIMIT="off") as base_url, \
            requests.Session() as session:
        deadline = time.monotonic() + WAIT_S
        workers: list[subprocess.Popen] = []
        try:
            for log in logs:
                workers.append(start_worker(database_url, log, LONG_LEASE_S, threads=2))
            wait_until(lambda: all(READY in log.read_text() for log in logs),
                       deadline, "both workers started")
            started = time.monotonic()
            for task in tasks:  # while both workers poll the queue
                submit(session, base_url, tenants[task.tenant], task)
            wait_until(lambda: unfinished(db) == 0, deadline, "every task ended",
                       explain=lambda: stuck_tasks(db))
            elapsed = time.monotonic() - started
        finally:
            statuses = [stop(worker) for worker in workers]
        assert statuses == [0, 0]

        applied = [[(int(m[2]), int(m[1])) for m in APPLIED.finditer(log.read_text())] for log in logs]
        chunks = db.execute("SELECT task_id, seq, state, attempts FROM batch_task_chunks").fetchall()
        print(f"two workers: {len(tasks)} tasks, {sum(len(t.rows) for t in tasks)} rows, "
              f"{len(chunks)} chunks, applied {len(applied[0])} and {len(applied[1])} of them, in "
              f"{elapsed:.1f} s (seed {seed})")
        assert sorted(applied[0] + applied[1]) == sorted((c["task_id"], c["seq"]) for c in chunks)
        assert all(applied), "one worker applied nothing"
        assert {c["state"] for c in chunks} == {"done"}
        # A 30 s lease never runs out here: a second attempt is a chunk claimed by both workers.
        twice = [(c["task_id"], c["seq"], c["attempts"]) for c in chunks if c["attempts"] != 1]
        lost = [line for log in logs for line in log.read_text().splitlines() if "was lost" in line]
        assert not twice, f"chunks claimed more than once under a live lease: {twice}; {lost}"
        assert_applied_exactly_once(session, base_url, db, tenants, tasks)
    assert worker_errors(*logs) == []

