"""The engine against DESIGN 4.3's sequential definition.

The property test sends random batches over HTTP and compares every row's
outcome and the final table with a deliberately naive reference model that
applies the rules one row at a time over a plain list.
"""

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import fields
from pathlib import Path
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg.rows import dict_row

from app.db import get_conn, run_in_transaction
from app.engine.bulk import BulkOptions, bulk_upsert
from app.engine.upsert import RELATIONS, STORED_COLUMNS, Contact, plan_upsert, same_value, upsert_contacts
from app.errors import DatabaseUnavailable
from app.schemas.contacts import normalise_email
from app.sql import queries
from tests.reference import Reference, rows
from tests.support import in_app_transaction, post_bulk, stored_contacts

batches = st.lists(st.lists(rows(), min_size=1, max_size=8), min_size=1, max_size=3)


@settings(max_examples=200, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(batches=batches)
def test_engine_matches_the_sequential_reference(client, headers, db, tenant, batches):
    db.execute("TRUNCATE contacts, tags, folders, companies RESTART IDENTITY CASCADE")
    reference = Reference()
    db_id_of: dict[int, int] = {}  # reference id -> database id, learned from created rows

    for batch in batches:
        reference.batch += 1
        response = post_bulk(client, headers, batch, returnResults=True)
        assert response.status_code == 200, response.get_json()
        data = response.get_json()["data"]
        conflicts = {f["index"]: f["conflict"] for f in data["failures"] if "conflict" in f}
        for index, (row, result) in enumerate(zip(batch, data["results"], strict=True)):
            status, contact, conflict = reference.apply(index, row)
            assert result["status"] == status, (index, row)
            if status == "created":
                db_id_of[contact.id] = result["id"]
            if contact is not None:
                assert result["id"] == db_id_of[contact.id]
            if conflict is not None:
                ids = [c and db_id_of[c.id] for c in conflict]
                made_by = [c.created_by[1] if c and c.created_by[0] == reference.batch else None
                           for c in conflict]
                expected = {}
                for key, contact_id, row_index in zip(IDENTITY_KEYS, ids, made_by, strict=True):
                    expected |= {f"{key}ContactId": contact_id, f"{key}RowIndex": row_index}
                assert conflicts[index] == expected

    stored = sorted((stored_state(c) for c in stored_contacts(db, tenant["id"])), key=repr)
    assert stored == sorted((c.state() for c in reference.contacts), key=repr)
    assert catalogues(db, tenant["id"]) == (
        sorted(reference.tag_catalogue.values()), sorted(reference.folder_catalogue.values()),
        sorted(reference.company_catalogue.items()))


IDENTITY_KEYS = ("externalId", "email", "username")


@settings(max_examples=100, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(batches=batches)
def test_a_dry_run_answers_what_the_real_run_then_does(client, headers, db, tenant, batches):
    """DESIGN 15: over random batches, each dry run's answer is the next real
    run's, but for ids that do not exist yet; and the dry runs wrote nothing
    (the table is what the real runs alone make of it: the reference's)."""
    db.execute("TRUNCATE contacts, tags, folders, companies RESTART IDENTITY CASCADE")
    reference = Reference()
    for batch in batches:
        reference.batch += 1
        dry = post_bulk(client, headers, batch, returnResults=True, dryRun=True).get_json()["data"]
        real = post_bulk(client, headers, batch, returnResults=True).get_json()["data"]
        assert dry.pop("dryRun") is True
        assert dry == without_new_ids(real)
        for index, row in enumerate(batch):
            reference.apply(index, row)
    stored = sorted((stored_state(c) for c in stored_contacts(db, tenant["id"])), key=repr)
    assert stored == sorted((c.state() for c in reference.contacts), key=repr)


def without_new_ids(data: dict) -> dict:
    """A real answer as a dry run gives it: contacts the batch created have no id yet."""
    new_ids = {r["id"] for r in data["results"] if r["status"] == "created"}
    results = [{**r, "id": None} if r["id"] in new_ids else r for r in data["results"]]
    failures = []
    for failure in data["failures"]:
        if "conflict" in failure:
            conflict = {key: None if key.endswith("ContactId") and value in new_ids else value
                        for key, value in failure["conflict"].items()}
            failure = {**failure, "conflict": conflict}
        failures.append(failure)
    return {**data, "results": results, "failures": failures}


def stored_state(contact: dict) -> tuple:
    """A stored contact (tests/support.py, stored_contacts) in the reference model's terms."""
    return (contact["external_id"], contact["email"], contact["username"], contact["first_name"],
            contact["opt_in"], contact["status"], json.dumps(contact["attributes"], sort_keys=True),
            tuple(sorted(name.lower() for name in contact["tags"])),
            tuple(sorted(name.lower() for name in contact["folders"])),
            tuple(sorted(contact["companies"])), contact["source_updated_at"])


def catalogues(db: psycopg.Connection, tenant_id: int) -> tuple[list, list, list]:
    """The tenant's tag names, folder names and (companyId, name) pairs, sorted."""
    def column(query: str) -> list:
        return [tuple(row.values()) if len(row) > 1 else row["name"]
                for row in db.execute(query, (tenant_id,)).fetchall()]

    return (column("SELECT name FROM tags WHERE tenant_id = %s ORDER BY name"),
            column("SELECT name FROM folders WHERE tenant_id = %s ORDER BY name"),
            column("SELECT company_id, name FROM companies WHERE tenant_id = %s ORDER BY company_id"))


@contextmanager
def recorded_statements(conn: psycopg.Connection, statements: list[str]) -> Iterator[None]:
    """Note each statement run on `conn` while inside, through `conn.execute`
    or a cursor of its own (every statement goes through a cursor)."""
    class RecordingCursor(psycopg.Cursor):
        def execute(self, query, params=None, **kwargs):
            statements.append(query)
            return super().execute(query, params, **kwargs)

    conn.cursor_factory = RecordingCursor
    try:
        yield
    finally:
        conn.cursor_factory = psycopg.Cursor


@pytest.mark.parametrize("stored, sent, same", [
    ("a", "a", True), ("a", "b", False), (None, None, True), (None, "", False),
    (1, 1.0, True), (1.0, 1, True), (10**16, 1e16, True), (0.1, 0.1, True), (1, 2.0, False),
    (True, 1, False), (1, True, False), (False, 0.0, False), ("1", 1, False),
    (10**400, 1.0, False), (1.0, 10**400, False), (10**400, 10**400, True),
])
def test_values_compare_as_a_jsonb_round_trip_sees_them(stored, sent, same):
    assert same_value(stored, sent) is same


def test_a_batch_costs_a_fixed_number_of_statements(app, tenant, db):
    """1000 rows, half new and half existing, take five statements, not thousands."""
    seed = [(i, {"external_id": f"c{i}", "email": f"c{i}@example.com"}) for i in range(500)]
    in_app_transaction(app, lambda conn: upsert_contacts(conn, tenant["id"], seed))
    rows = [(i, {"external_id": f"c{i}", "email": f"c{i}@example.com", "first_name": "N"})
            for i in range(1000)]
    statements: list[str] = []

    def counted(conn: psycopg.Connection):
        with recorded_statements(conn, statements):
            return upsert_contacts(conn, tenant["id"], rows)

    result = in_app_transaction(app, counted)
    assert [o.status for o in result.outcomes].count("created") == 500
    assert statements == [queries["select-contacts-by-keys-plain"], queries["lock-tenant-writes-shared"],
                          queries["lock-contacts-by-ids"], queries["update-contacts"],
                          queries["insert-contacts"]]
    assert len(stored_contacts(db, tenant["id"])) == 1000


def count_round_trips(conn: psycopg.Connection, work: Callable[[], Any], trace_path: Path) -> int:
    """Run work() on conn and count the times it waited for the server: each
    Sync (extended protocol) or Query (simple protocol, as BEGIN) that the
    client sent, as libpq's protocol trace shows them."""
    with open(trace_path, "w") as trace:
        conn.pgconn.trace(trace.fileno())
        conn.pgconn.set_trace_flags(psycopg.pq.Trace.SUPPRESS_TIMESTAMPS)
        try:
            work()
        finally:
            conn.pgconn.untrace()
    messages = [line.split("\t")[:3] for line in trace_path.read_text().splitlines()]
    return sum(1 for message in messages if message[0] == "F" and message[2] in ("Sync", "Query"))


def test_the_read_returns_its_columns_in_contact_order(app, tenant):
    """The engine builds Contacts from the read's rows by position."""
    assert [f.name for f in fields(Contact)][:len(STORED_COLUMNS)] == list(STORED_COLUMNS)
    keys = {"tenant_id": tenant["id"], "ids": [], "external_ids": [], "emails": [], "usernames": []}
    with app.app_context(), get_conn() as conn:
        for name, links in (("select-contacts-by-keys-plain", ()), ("select-contacts-by-keys", RELATIONS)):
            columns = [column.name for column in conn.execute(queries[name], keys).description]
            assert columns == [*STORED_COLUMNS, *links]


def test_a_mixed_batch_costs_four_round_trips(app, tenant, tmp_path):
    """BEGIN, the read, the write (tenant lock, row locks, UPDATE and INSERT in
    one pipeline) and COMMIT, for 1000 rows half new and half changed."""
    seed = [(i, {"external_id": f"c{i}", "email": f"c{i}@example.com"}) for i in range(500)]
    in_app_transaction(app, lambda conn: upsert_contacts(conn, tenant["id"], seed))
    rows = [(i, {"external_id": f"c{i}", "email": f"c{i}@example.com", "first_name": "N"})
            for i in range(1000)]

    def batch(conn: psycopg.Connection) -> None:
        with conn.transaction():
            result = upsert_contacts(conn, tenant["id"], rows)
        assert [o.status for o in result.outcomes].count("updated") == 500

    with app.app_context(), get_conn() as conn:
        assert count_round_trips(conn, lambda: batch(conn), tmp_path / "trace") == 4


def test_the_bulk_path_reads_once_and_before_validation(app, tenant):
    """Rows as a client sends them (addresses in mixed case), half known: the
    read before validation also tells which addresses are known, and when
    the loaded identities are those sent it is the only read."""
    seed = [(i, {"external_id": f"c{i}", "email": f"c{i}@example.com"}) for i in range(500)]
    in_app_transaction(app, lambda conn: upsert_contacts(conn, tenant["id"], seed))
    sent = [{"externalId": f"c{i}", "email": f"C{i}@Example.com", "firstName": "N"} for i in range(1000)]
    statements: list[str] = []

    def counted(conn: psycopg.Connection):
        normalise_email.cache_clear()
        with recorded_statements(conn, statements):
            return bulk_upsert(conn, tenant["id"], sent, BulkOptions())

    report = in_app_transaction(app, counted)
    assert (report.summary["createdCount"], report.summary["updatedCount"]) == (500, 500)
    assert statements == [queries[name] for name in (
        "select-contacts-by-keys-plain", "lock-tenant-writes-shared", "lock-contacts-by-ids",
        "update-contacts", "insert-contacts")]
    assert normalise_email.cache_info().misses == 500  # the new addresses only


def test_relations_of_1000_rows_cost_two_statements_each(app, tenant, db):
    """Tags, folders and companies added and removed on 1000 contacts: the five
    statements of a plain batch, the company names' read, and two per relation."""
    def with_relations(i: int, tags: list[str]) -> tuple[int, dict]:
        return (i, {"external_id": f"c{i}", "tags": {"add": tags, "remove": ["old"]},
                    "folders": {"add": [f"f{i % 3}"], "remove": []},
                    "companies": [{"company_id": f"co{i % 7}", "name": f"Co {i % 7}", "remove": False}]})

    seed = [with_relations(i, ["old"]) for i in range(500)]
    in_app_transaction(app, lambda conn: upsert_contacts(conn, tenant["id"], seed))
    rows = [with_relations(i, [f"t{i % 5}", "vip"]) for i in range(1000)]
    statements: list[str] = []

    def counted(conn: psycopg.Connection):
        with recorded_statements(conn, statements):
            return upsert_contacts(conn, tenant["id"], rows)

    result = in_app_transaction(app, counted)
    assert [o.status for o in result.outcomes].count("updated") == 500
    assert statements == [queries[name] for name in (
        "select-contacts-by-keys", "select-company-names", "lock-tenant-writes-shared",
        "lock-contacts-by-ids", "update-contacts", "insert-contacts", "ensure-tags",
        "write-contact-tags", "ensure-folders", "write-contact-folders", "ensure-companies",
        "write-contact-companies")]
    links = db.execute("SELECT count(*) AS n FROM contact_tags WHERE tenant_id = %s",
                       (tenant["id"],)).fetchone()["n"]
    assert links == 2000  # t0..t4 and vip on each; every "old" removed


def test_an_unchanged_batch_is_one_read_and_locks_nothing(app, tenant, db):
    rows = [(i, {"external_id": f"c{i}", "first_name": "Same"}) for i in range(100)]
    in_app_transaction(app, lambda conn: upsert_contacts(conn, tenant["id"], rows))
    statements: list[str] = []

    def resend(conn: psycopg.Connection):
        with recorded_statements(conn, statements):
            result = upsert_contacts(conn, tenant["id"], rows)
        # A row lock or a write would have given the transaction an id.
        xid = conn.execute("SELECT pg_current_xact_id_if_assigned() AS xid").fetchone()["xid"]
        return result, xid

    result, xid = in_app_transaction(app, resend)
    assert {o.status for o in result.outcomes} == {"unchanged"}
    assert statements == [queries["select-contacts-by-keys-plain"]]
    assert xid is None


def test_a_contact_changed_between_read_and_write_fails_the_version_check(app, tenant, db):
    """Another transaction updates a contact after the batch read it: the write
    refuses (a retryable serialization failure) instead of overwriting it."""
    in_app_transaction(app, lambda conn: upsert_contacts(
        conn, tenant["id"], [(0, {"external_id": "x", "first_name": "Old"})]))

    def race(conn: psycopg.Connection):
        batch = plan_upsert(conn, tenant["id"], [(0, {"external_id": "x", "last_name": "Mine"})])
        db.execute("UPDATE contacts SET first_name = 'Theirs' WHERE external_id = 'x'")
        batch.write(conn)

    with pytest.raises(DatabaseUnavailable) as failure:  # what a request gets once retries run out
        in_app_transaction(app, race)
    assert isinstance(failure.value.__cause__, psycopg.errors.SerializationFailure)
    [contact] = stored_contacts(db, tenant["id"])
    assert (contact["first_name"], contact["last_name"]) == ("Theirs", None)


def test_a_retry_after_a_version_conflict_wins(app, tenant, db):
    in_app_transaction(app, lambda conn: upsert_contacts(
        conn, tenant["id"], [(0, {"external_id": "x", "first_name": "Old"})]))

    def work(conn: psycopg.Connection, attempt: int):
        batch = plan_upsert(conn, tenant["id"], [(0, {"external_id": "x", "last_name": "Mine"})],
                            exclusive=attempt > 1)
        if attempt == 1:  # a concurrent writer gets in between, once
            db.execute("UPDATE contacts SET first_name = 'Theirs' WHERE external_id = 'x'")
        batch.write(conn)
        return attempt

    with app.app_context():
        from app.db import get_conn
        with get_conn() as conn:
            assert run_in_transaction(conn, work, attempts=3) == 2
    [contact] = stored_contacts(db, tenant["id"])
    assert (contact["first_name"], contact["last_name"]) == ("Theirs", "Mine")  # nothing lost


def test_a_tag_another_transaction_makes_meanwhile_is_found_by_the_retry(app, client, headers, tenant, db,
                                                                          database_url):
    """A batch that adds a new tag while another transaction inserts the same
    name waits for it, finds the name in neither its snapshot nor its insert,
    and starts again: it then links the other's tag, and no second one is made."""
    answers: list = []
    with psycopg.connect(database_url, autocommit=True) as other:
        with other.transaction():
            other.execute("INSERT INTO tags (tenant_id, name) VALUES (%s, 'Launch')", (tenant["id"],))
            sender = threading.Thread(target=lambda: answers.append(post_bulk(
                client, headers, [{"externalId": "a", "tags": {"add": ["launch"]}}], returnResults=True)))
            sender.start()
            deadline = time.monotonic() + 5
            while not db.execute("SELECT 1 FROM pg_locks WHERE locktype = 'transactionid' AND NOT granted"
                                 ).fetchone() and time.monotonic() < deadline:
                time.sleep(0.02)  # until the batch waits on the uncommitted name
        sender.join(timeout=30)
    [response] = answers
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["data"]["results"][0]["status"] == "created"
    [contact] = stored_contacts(db, tenant["id"])
    assert contact["tags"] == ["Launch"]
    assert db.execute("SELECT count(*) AS n FROM tags").fetchone()["n"] == 1


def wait_for_advisory_lock_waiter(db: psycopg.Connection, timeout: float = 5.0) -> bool:
    """True once some session waits for an advisory lock (the retry under test)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if db.execute("SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND NOT granted").fetchone():
            return True
        time.sleep(0.02)
    return False


def test_a_retry_waits_for_the_tenants_writing_batches_and_sees_their_rows(database_url, tenant, db):
    """A retry that planned while another batch's insert of the same new
    identity was uncommitted would hit the unique index again; instead it waits
    for that batch to commit, then reads and matches the contact it created."""
    with psycopg.connect(database_url, autocommit=True, row_factory=dict_row) as writer, \
            psycopg.connect(database_url, autocommit=True, row_factory=dict_row) as retry:
        outcome: list[str] = []

        def run_retry() -> None:
            with retry.transaction():
                batch = plan_upsert(retry, tenant["id"], [(0, {"external_id": "new", "first_name": "R"})],
                                    exclusive=True)
                batch.write(retry)
                outcome.append(batch.outcomes[0].status)

        with writer.transaction():
            upsert_contacts(writer, tenant["id"], [(0, {"external_id": "new", "first_name": "W"})])
            thread = threading.Thread(target=run_retry)
            thread.start()
            assert wait_for_advisory_lock_waiter(db)
            assert thread.is_alive()  # held off while the writer's insert is uncommitted
        thread.join(timeout=10)
    assert outcome == ["updated"]  # it saw the writer's contact rather than inserting a twin
    [contact] = stored_contacts(db, tenant["id"])
    assert contact["first_name"] == "R"


def test_transaction_is_retried_from_scratch_after_a_unique_violation(app, make_tenant, db):
    make_tenant("taken")
    attempts: list[int] = []

    def work(conn: psycopg.Connection, attempt: int) -> str:
        attempts.append(attempt)
        conn.execute(queries["insert-tenant"], {"slug": f"fresh-{len(attempts)}", "name": "x"})
        if len(attempts) == 1:  # a real unique violation, as a concurrent insert would cause
            conn.execute(queries["insert-tenant"], {"slug": "taken", "name": "x"})
        return "done"

    with app.app_context():
        from app.db import get_conn
        with get_conn() as conn:
            assert run_in_transaction(conn, work, attempts=3) == "done"
    assert attempts == [1, 2]
    slugs = {r["slug"] for r in db.execute("SELECT slug FROM tenants").fetchall()}
    assert slugs == {"taken", "fresh-2"}  # the first attempt left nothing behind


def test_retries_are_bounded(app, make_tenant):
    make_tenant("taken")
    calls: list[int] = []

    def work(conn: psycopg.Connection, attempt: int) -> None:
        calls.append(attempt)
        conn.execute(queries["insert-tenant"], {"slug": "taken", "name": "x"})

    with app.app_context():
        from app.db import get_conn
        with get_conn() as conn, pytest.raises(psycopg.errors.UniqueViolation):
            run_in_transaction(conn, work, attempts=3)
    assert calls == [1, 2, 3]
