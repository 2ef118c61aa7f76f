"""The `contactsync` console script (DESIGN 14): `import` and `export` run as a
subprocess against a real gunicorn, checked in the database and through the API."""

import csv
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import psycopg
import pytest
import requests
from psycopg.rows import dict_row

from app.db import apply_schema
from app.engine.tokens import create_token
from app.sql import queries
from tests.server import RestartablePostgres, free_port, running_gunicorn

COMMAND = Path(sys.executable).parent / "contactsync"
EXTRA_HEADERS = ["External ID", "E-mail", "First Name", "Opt In", "Plan", "Seats (licensed)"]


@pytest.fixture(scope="module")
def server(database_url: str) -> Iterator[str]:
    """One gunicorn for the module (as the `gunicorn` fixture, kept across tests to save start-ups)."""
    with running_gunicorn(database_url) as base_url:
        yield base_url


@pytest.fixture
def token(tenant, make_token) -> str:
    return make_token(tenant)


def contactsync(*args: str | Path, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run the installed console script; its output as text."""
    env = {k: v for k, v in os.environ.items() if k != "CONTACTSYNC_TOKEN"}
    return subprocess.run([str(COMMAND), *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=env)


def write_csv(path: Path, header: list[str], rows: list[list[str]], bom: bool = False) -> Path:
    with open(path, "w", encoding="utf-8-sig" if bom else "utf-8", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def crm_rows(count: int, start: int = 0) -> list[list[str]]:
    """Rows like a CRM export: mixed-case emails, extra columns."""
    return [[f"crm-{i}", f"User{i}@Example.COM", f"First{i}", "yes" if i % 2 else "no",
             ("free", "pro", "team")[i % 3], str(i % 50)] for i in range(start, start + count)]


def count_contacts(db, tenant_id: int) -> int:
    return db.execute("SELECT count(*) AS n FROM contacts WHERE tenant_id = %s",
                      (tenant_id,)).fetchone()["n"]


def test_imports_20000_rows_with_mapped_headers_and_attributes(server, tenant, token, db, tmp_path):
    path = write_csv(tmp_path / "crm.csv", EXTRA_HEADERS, crm_rows(20_000), bom=True)
    result = contactsync("import", path, "--url", server, "--token", token)
    assert result.returncode == 0, result.stderr
    assert "20,000 created, 0 updated, 0 unchanged, 0 failed" in result.stdout
    rows = db.execute("SELECT external_id, email, first_name, opt_in, attributes FROM contacts"
                      " WHERE tenant_id = %s ORDER BY id", (tenant["id"],)).fetchall()
    assert len(rows) == 20_000
    by_key = {r["external_id"]: r for r in rows}
    assert by_key["crm-7"] == {"external_id": "crm-7", "email": "user7@example.com", "first_name": "First7",
                       "opt_in": True, "attributes": {"Plan": "pro", "Seats_licensed": "7"}}
    assert len({r["email"] for r in rows}) == 20_000
    assert not (tmp_path / "crm.errors.csv").exists()
    assert not (tmp_path / "crm.csv.contactsync-state.json").exists()
    # The progress went to stderr as plain lines (no terminal here), the last with the total.
    assert "import: 20,000/20,000 rows (100%)" in result.stderr


def test_ctrl_c_then_rerun_applies_every_row_exactly_once(server, tenant, token, db, tmp_path):
    path = write_csv(tmp_path / "big.csv", EXTRA_HEADERS, crm_rows(20_000))
    state_path = tmp_path / "big.csv.contactsync-state.json"
    env = {k: v for k, v in os.environ.items() if k != "CONTACTSYNC_TOKEN"}
    process = subprocess.Popen([str(COMMAND), "import", str(path), "--url", server, "--token", token],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 60
    done = 0
    while time.monotonic() < deadline and process.poll() is None:
        try:
            done = json.loads(state_path.read_text())["batchesDone"]
        except (FileNotFoundError, ValueError):
            done = 0
        if done >= 3:
            break
        time.sleep(0.01)
    assert 3 <= done < 20, "the import finished before it could be interrupted"
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 130, stderr
    assert "run the same command again" in stderr and "Traceback" not in stderr
    recorded = json.loads(state_path.read_text())["batchesDone"]
    assert recorded < 20 and count_contacts(db, tenant["id"]) >= recorded * 1000

    result = contactsync("import", path, "--url", server, "--token", token)
    assert result.returncode == 0, result.stderr
    assert f"Resuming: {recorded} of 20 batches" in result.stderr
    # Every batch counted once: an acknowledged batch sent again would be replayed
    # (counted as created twice) or unchanged; an in-flight one was replayed from its key.
    assert "20,000 created, 0 updated, 0 unchanged, 0 failed" in result.stdout
    assert count_contacts(db, tenant["id"]) == 20_000
    assert db.execute("SELECT count(*) AS n FROM idempotency_keys WHERE tenant_id = %s",
                      (tenant["id"],)).fetchone()["n"] == 20
    assert not state_path.exists()


def test_failed_rows_go_to_an_errors_file_that_imports_once_fixed(server, tenant, token, db, tmp_path):
    header = ["Email", "Last Name", "Phone", "Plan"]
    rows = [["ok1@example.com", "A", "", "pro"],
            ["not-an-email", "B", "", "pro"],
            ["ok2@example.com", "C", "abc", "team"],
            ["ok3@example.com", "D", "", "free", "surplus"],
            ["", "E", "", "free"],
            ["ok4@example.com", "F", "", "free"]]
    path = write_csv(tmp_path / "people.csv", header, rows)
    result = contactsync("import", path, "--url", server, "--token", token)
    assert result.returncode == 1
    assert "2 created" in result.stdout and "4 failed" in result.stdout
    errors_path = tmp_path / "people.errors.csv"
    with open(errors_path, newline="", encoding="utf-8") as errors_file:
        failed = list(csv.reader(errors_file))
    assert failed[0] == [*header, "error"]
    assert [row[:4] for row in failed[1:]] == [rows[1][:4], rows[2], rows[3][:4], rows[4]]
    assert failed[1][4].startswith("line 3: Email:")
    assert failed[2][4].startswith("line 4: Phone:")
    assert failed[3][4:] == ["surplus", "line 5: 5 cells, but the header has 4 columns"]
    assert failed[4][4].startswith("line 6:")
    assert count_contacts(db, tenant["id"]) == 2

    fixed = [["b@example.com", *failed[1][1:]], [failed[2][0], "C", "+1 555 0100", "team", ""],
             failed[3][:4] + [""], ["e@example.com", *failed[4][1:]]]
    write_csv(errors_path, failed[0], fixed)
    again = contactsync("import", errors_path, "--url", server, "--token", token)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "4 created" in again.stdout and "0 failed" in again.stdout
    assert count_contacts(db, tenant["id"]) == 6
    stored = db.execute("SELECT attributes FROM contacts WHERE email = 'b@example.com'").fetchone()
    assert stored["attributes"] == {"Plan": "pro"}  # the error column was not sent


def test_dry_run_writes_nothing_and_reports_what_would_fail(server, tenant, token, db, tmp_path):
    path = write_csv(tmp_path / "dry.csv", ["email"], [["a@example.com"], ["bad@"]])
    result = contactsync("import", path, "--url", server, "--token", token, "--dry-run")
    assert result.returncode == 1
    assert "would fail: line 3: email:" in result.stderr
    assert "Dry run, nothing written" in result.stdout and "1 created" in result.stdout
    assert count_contacts(db, tenant["id"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dry.csv"]


def api(server: str, token: str, method: str, path: str, **kwargs) -> requests.Response:
    return requests.request(method, f"{server}{path}", headers={"Authorization": f"Bearer {token}"},
                            timeout=30, **kwargs)


def comparable(contacts: list[dict]) -> list[dict]:
    """A tenant's contacts without what differs between tenants (ids, times)."""
    keep = []
    for c in contacts:
        c = {k: v for k, v in c.items() if k not in ("id", "createdAt", "updatedAt")}
        c["tags"] = [t["name"] for t in c["tags"]]
        c["folders"] = [f["name"] for f in c["folders"]]
        keep.append(c)
    return sorted(keep, key=lambda c: c["email"])


def test_export_then_import_into_another_tenant_gives_equal_contacts(server, tenant, token, make_tenant,
                                                                     make_token, tmp_path):
    rows = [{"externalId": f"x-{i}", "email": f"P{i}@Example.com", "firstName": f"Pé{i}",
             "lastName": None if i % 2 else "Lidd, \"ell\"", "phone": "+1 555 0100", "locale": "pt-BR",
             "optIn": bool(i % 3), "username": f"user_{i}", "status": "optout" if i == 1 else "auto",
             "attributes": {"plan": "pro", "seats": i, "trial": i % 2 == 0, "note": "a\nb"},
             "tags": {"add": ["VIP", "beta"]}, "folders": {"add": ["Hot"]},
             "companies": [{"companyId": "6", "name": "Blue Sun"}]} for i in range(30)]
    rows.append({"email": "plain@example.com"})
    answer = api(server, token, "POST", "/contacts/bulk-update", json={"contacts": rows})
    assert answer.json()["data"]["createdCount"] == 31

    exported = tmp_path / "acme.csv"
    result = contactsync("export", "--format", "csv", "--output", exported, "--url", server, "--token", token)
    assert result.returncode == 0, result.stderr
    other_token = make_token(make_tenant("globex"))
    result = contactsync("import", exported, "--url", server, "--token", other_token)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "31 created" in result.stdout

    def feed(secret: str) -> list[dict]:
        out = tmp_path / f"{secret[:12]}.ndjson"
        done = contactsync("export", "--format", "ndjson", "--output", out, "--url", server,
                           "--token", secret)
        assert done.returncode == 0, done.stderr
        return [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]

    assert comparable(feed(other_token)) == comparable(feed(token))


def test_export_resumes_from_its_state_and_shows_a_tombstone(server, tenant, token, tmp_path):
    api(server, token, "POST", "/contacts/bulk-update",
        json={"contacts": [{"externalId": f"t-{i}", "email": f"t{i}@example.com"} for i in range(3)]})
    state, output = tmp_path / "feed.state.json", tmp_path / "feed.csv"
    args = ["export", "--format", "csv", "--state", state, "--output", output, "--url", server,
            "--token", token]
    assert contactsync(*args).returncode == 0
    first = list(csv.DictReader(output.open(newline="", encoding="utf-8")))
    assert [r["externalId"] for r in first] == ["t-0", "t-1", "t-2"]
    assert all(r["deleted"] == "false" for r in first)

    assert api(server, token, "DELETE", f"/contacts/{first[1]['id']}").status_code == 204
    result = contactsync(*args)
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader(output.open(newline="", encoding="utf-8")))
    assert rows[:3] == first  # appended once, under the one header
    assert len(rows) == 4
    assert rows[3]["id"] == first[1]["id"] and rows[3]["externalId"] == "t-1"
    assert rows[3]["deleted"] == "true" and rows[3]["deletedAt"] and rows[3]["email"] == ""
    # Re-importing an export skips its tombstones.
    assert contactsync("import", output, "--url", server, "--token", token).returncode == 0


def test_an_expired_cursor_says_to_delete_the_state_file(server, tenant, token, tmp_path, db):
    api(server, token, "POST", "/contacts/bulk-update", json={"contacts": [{"externalId": "e-1"}]})
    state = tmp_path / "feed.state.json"
    args = ["export", "--state", state, "--output", tmp_path / "out.csv", "--url", server, "--token", token]
    assert contactsync(*args).returncode == 0
    contact = api(server, token, "GET", "/contacts?externalId=e-1").json()["data"][0]
    assert api(server, token, "DELETE", f"/contacts/{contact['id']}").status_code == 204
    # The dispatcher's purge, as it runs once the tombstone is older than its retention.
    db.execute(queries["purge-tombstones"], {"retention_days": -1, "limit": 100})
    result = contactsync(*args)
    assert result.returncode == 3
    assert "cursor_expired" in result.stderr and str(state) in result.stderr
    assert "Traceback" not in result.stderr


def binary_file(path: Path) -> Path:
    path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)))
    return path


def bad_encoding_file(path: Path) -> Path:
    rows = [[f"u{i}@example.com", "x"] for i in range(6000)]
    rows[4998] = ["late@example.com", "Jos\udce9"]  # written below as a Latin-1 byte on line 5000
    with open(path, "w", encoding="utf-8", errors="surrogateescape", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["email", "name"])
        writer.writerows(rows)
    return path


@pytest.mark.parametrize(("make_file", "message"), [
    (binary_file, "line 1:"),
    (lambda p: write_csv(p, ["First Name", "Plan"], [["Ann", "pro"]]), "no email or externalId column"),
    (bad_encoding_file, "line 5000: not UTF-8"),
    (lambda p: (p.write_bytes(b""), p)[1], "no header row"),
    (lambda p: write_csv(p, ["Email", "E-mail"], [["a@example.com", "b@example.com"]]), "both fill email"),
])
def test_bad_input_is_refused_before_anything_is_sent(server, tenant, token, db, tmp_path, make_file,
                                                     message):
    path = make_file(tmp_path / "input.csv")
    result = contactsync("import", path, "--url", server, "--token", token)
    assert result.returncode == 2, result.stdout + result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert count_contacts(db, tenant["id"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["input.csv"]


def test_a_wrong_token_or_url_is_one_clear_line(server, tenant, token, db, tmp_path):
    path = write_csv(tmp_path / "ok.csv", ["email"], [["a@example.com"]])
    wrong = contactsync("import", path, "--url", server, "--token", "cs_wrong")
    assert wrong.returncode == 3
    assert "refused the token (401" in wrong.stderr and "Traceback" not in wrong.stderr
    nowhere = f"http://127.0.0.1:{free_port()}"
    for args in (["import", path], ["export"]):
        result = contactsync(*args, "--url", nowhere, "--token", token, "--retries", "1")
        assert result.returncode == 3
        assert f"cannot reach {nowhere}: connection refused" in result.stderr
        assert "Traceback" not in result.stderr
        assert result.stderr.strip().splitlines()[-1].startswith("Error: ")
    assert count_contacts(db, tenant["id"]) == 0
    missing = contactsync("export", "--url", server)
    assert missing.returncode == 2 and "CONTACTSYNC_TOKEN" in missing.stderr


def test_429_answers_are_waited_out_with_retry_after(database_url, tenant, token, db, tmp_path):
    """A server that allows 3 requests a second per worker: 30 batches of 10 all land,
    each once, by waiting what Retry-After says."""
    path = write_csv(tmp_path / "slow.csv", EXTRA_HEADERS, crm_rows(300))
    with running_gunicorn(database_url, CONTACTSYNC_RATE_LIMIT="3/second") as limited:
        result = contactsync("import", path, "--url", limited, "--token", token, "--batch-size", "10")
    assert result.returncode == 0, result.stderr
    assert "300 created, 0 updated, 0 unchanged, 0 failed" in result.stdout
    assert "answered 429 rate_limited; retrying in 1.0 s" in result.stderr
    assert count_contacts(db, tenant["id"]) == 300


def test_a_changed_file_is_not_resumed_with_an_old_state(server, tenant, token, tmp_path):
    path = write_csv(tmp_path / "c.csv", EXTRA_HEADERS, crm_rows(5))
    state = tmp_path / "c.csv.contactsync-state.json"
    state.write_text(json.dumps({"version": 1, "fileHash": "0" * 64, "options": "x", "batchesDone": 1,
                                 "errorsBytes": 0, "counts": {}}))
    result = contactsync("import", path, "--url", server, "--token", token)
    assert result.returncode == 2
    assert "changed since the interrupted import" in result.stderr and str(state) in result.stderr


def test_the_operator_commands_are_the_apps(app, database_url, db):
    """`contactsync` hosts whatever the Flask app registers; `tenants create` works through it."""
    env = {**os.environ, "DATABASE_URL": database_url}
    listing = subprocess.run([str(COMMAND), "--help"], capture_output=True, text=True, env=env, timeout=60)
    assert listing.returncode == 0, listing.stderr
    listed = {line.split()[0] for line in listing.stdout.split("Commands:")[1].splitlines() if line.strip()}
    assert set(app.cli.commands) | {"import", "export"} <= listed
    created = subprocess.run([str(COMMAND), "tenants", "create", "initech"], capture_output=True,
                             text=True, env=env, timeout=60)
    assert created.returncode == 0, created.stderr
    assert db.execute("SELECT count(*) AS n FROM tenants WHERE slug = 'initech'").fetchone()["n"] == 1


def test_a_database_outage_is_waited_out_and_every_row_lands_once(tmp_path):
    """PostgreSQL shut down (immediate, like a crash) for 3 s in the middle of an import:
    the service answers 503 with Retry-After, or drops connections, the
    command retries with the same Idempotency-Keys, and every row lands once."""
    postgres = RestartablePostgres(tmp_path)
    try:
        with psycopg.connect(postgres.url, autocommit=True, row_factory=dict_row) as conn:
            apply_schema(conn)
            tenant = conn.execute(queries["insert-tenant"], {"slug": "outage", "name": "outage"}).fetchone()
            token, _ = create_token(conn, tenant["id"], ["contacts:read", "contacts:write"])
        rows = 20_000
        path = write_csv(tmp_path / "outage.csv", EXTRA_HEADERS, crm_rows(rows))
        with running_gunicorn(postgres.url) as url:
            command = subprocess.Popen([str(COMMAND), "import", str(path), "--url", url,
                                        "--token", token.secret, "--batch-size", "100", "--retries", "20"],
                                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            with psycopg.connect(postgres.url, autocommit=True, row_factory=dict_row) as conn:
                deadline, landed = time.monotonic() + 60, 0
                while landed < 200 and time.monotonic() < deadline:  # the first batches are in
                    time.sleep(0.02)
                    landed = conn.execute("SELECT count(*) AS n FROM contacts").fetchone()["n"]
            postgres.shut_down("immediate")
            time.sleep(3.0)
            postgres.start()
            out, err = command.communicate(timeout=180)
        assert 200 <= landed < rows  # the crash came in the middle of the import
        assert command.returncode == 0, err
        assert "retrying" in err  # the outage was seen, and waited out
        assert "20,000 created, 0 updated, 0 unchanged, 0 failed" in out  # replays keep first answers
        with psycopg.connect(postgres.url, row_factory=dict_row) as conn:
            counts = conn.execute(
                "SELECT count(*) AS n, count(DISTINCT external_id) AS d FROM contacts").fetchone()
            assert (counts["n"], counts["d"]) == (rows, rows)
    finally:
        postgres.remove()


class CountingProxy:
    """A real HTTP proxy on 127.0.0.1 in front of the service that counts the
    requests it holds at once (each held a little, so that overlaps show)."""

    def __init__(self, upstream: str, hold_s: float = 0.05) -> None:
        self.upstream, self.hold_s = upstream, hold_s
        self.lock = threading.Lock()
        self.in_flight = self.most_in_flight = 0
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def forward(self) -> None:
                with proxy.lock:
                    proxy.in_flight += 1
                    proxy.most_in_flight = max(proxy.most_in_flight, proxy.in_flight)
                try:
                    time.sleep(proxy.hold_s)
                    body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                    headers = {k: v for k, v in self.headers.items()
                               if k.lower() not in ("host", "content-length")}
                    answer = requests.request(self.command, proxy.upstream + self.path, data=body,
                                              headers=headers, timeout=60)
                finally:
                    with proxy.lock:
                        proxy.in_flight -= 1
                self.send_response(answer.status_code)
                for name in ("Content-Type", "Retry-After"):
                    if name in answer.headers:
                        self.send_header(name, answer.headers[name])
                self.send_header("Content-Length", str(len(answer.content)))
                self.end_headers()
                self.wfile.write(answer.content)

            do_GET = do_POST = forward

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_at_most_two_requests_are_in_flight(server, tenant, token, db, tmp_path):
    path = write_csv(tmp_path / "paced.csv", EXTRA_HEADERS, crm_rows(3000))
    proxy = CountingProxy(server)
    try:
        result = contactsync("import", path, "--url", proxy.url, "--token", token, "--batch-size", "100")
    finally:
        proxy.close()
    assert result.returncode == 0, result.stderr
    assert proxy.most_in_flight == 2  # both used, never more
    assert count_contacts(db, tenant["id"]) == 3000


def test_the_client_commands_load_none_of_the_server():
    """`import` and `export` talk HTTP only: loading them must not load the
    app's server side (the database driver, validation, the engine, the web
    layer), whose modules were most of the command's start-up."""
    probe = ("import sys, app.cli.command; "
             "print(sorted(m for m in sys.modules if m.split('.')[0] in ('psycopg', 'marshmallow')"
             " or m.startswith(('app.engine', 'app.web', 'app.schemas', 'app.db', 'app.mcp'))))")
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True,
                            timeout=60).stdout.strip()
    assert loaded == "[]"
