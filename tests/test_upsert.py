"""The engine against DESIGN 4.3's sequential definition.

The property test sends random batches over HTTP and compares every row's
outcome and the final table with a deliberately naive reference model that
applies the rules one row at a time over a plain list.
"""

import json
import threading
import time

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg.rows import dict_row

from app.db import run_in_transaction
from app.engine.upsert import plan_upsert, same_value, upsert_contacts
from app.errors import DatabaseUnavailable
from app.sql import queries
from tests.reference import Reference, rows
from tests.support import in_app_transaction, post_bulk, stored_contacts

batches = st.lists(st.lists(rows(), min_size=1, max_size=8), min_size=1, max_size=3)


@settings(max_examples=200, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(batches=batches)
def test_engine_matches_the_sequential_reference(client, headers, db, tenant, batches):
    db.execute("TRUNCATE contacts RESTART IDENTITY")
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
                by_external_id, by_email = (c and db_id_of[c.id] for c in conflict)
                made_by_external_id, made_by_email = (
                    c.created_by[1] if c and c.created_by[0] == reference.batch else None
                    for c in conflict)
                assert conflicts[index] == {"externalIdContactId": by_external_id,
                                            "emailContactId": by_email,
                                            "externalIdRowIndex": made_by_external_id,
                                            "emailRowIndex": made_by_email}

    stored = sorted([
        (c["external_id"], c["email"], c["first_name"], c["opt_in"],
         json.dumps(c["attributes"], sort_keys=True))
        for c in stored_contacts(db, tenant["id"])], key=repr)
    assert stored == sorted((c.state() for c in reference.contacts), key=repr)


def record_statements(conn: psycopg.Connection, statements: list[str]) -> None:
    """Make `conn.execute` note each statement it runs (undo with `del conn.execute`)."""
    original = conn.execute

    def execute(query, params=None, **kwargs):
        statements.append(query)
        return original(query, params, **kwargs)

    conn.execute = execute


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
        record_statements(conn, statements)
        try:
            return upsert_contacts(conn, tenant["id"], rows)
        finally:
            del conn.execute

    result = in_app_transaction(app, counted)
    assert [o.status for o in result.outcomes].count("created") == 500
    assert statements == [queries["select-contacts-by-keys"], queries["lock-tenant-writes-shared"],
                          queries["lock-contacts-by-ids"], queries["update-contacts"],
                          queries["insert-contacts"]]
    assert len(stored_contacts(db, tenant["id"])) == 1000


def test_an_unchanged_batch_is_one_read_and_locks_nothing(app, tenant, db):
    rows = [(i, {"external_id": f"c{i}", "first_name": "Same"}) for i in range(100)]
    in_app_transaction(app, lambda conn: upsert_contacts(conn, tenant["id"], rows))
    statements: list[str] = []

    def resend(conn: psycopg.Connection):
        record_statements(conn, statements)
        try:
            result = upsert_contacts(conn, tenant["id"], rows)
        finally:
            del conn.execute
        # A row lock or a write would have given the transaction an id.
        xid = conn.execute("SELECT pg_current_xact_id_if_assigned() AS xid").fetchone()["xid"]
        return result, xid

    result, xid = in_app_transaction(app, resend)
    assert {o.status for o in result.outcomes} == {"unchanged"}
    assert statements == [queries["select-contacts-by-keys"]]
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
