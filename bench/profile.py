"""Where a request's time goes, in ms per 1000 contacts: `python -m bench.profile`.

Builds the app in-process, sends batches of one scenario (mixed-1000 by
default: half updates, half new) through Flask's test client under
cProfile, and splits the profiled time into buckets. Run it before and
after an optimisation to compare.

Buckets, each found by (path suffix, function name) as cProfile records
them, so a moved line does not break the attribution:

| bucket     | functions (cumulative time)                                             |
|------------|-------------------------------------------------------------------------|
| json       | app/web/body.py parse_json (json.loads of the body); if                 |
|            | it is gone: json loads / orjson.loads not called from psycopg (psycopg  |
|            | decodes stored jsonb with json.loads, which is SQL time)                |
| validation | app/engine/bulk.py validate_rows (every row, whatever validates it)     |
|            | plus marshmallow/schema.py load called from bulk_door (the envelope); if|
|            | validate_rows is gone: every marshmallow load. Minus email              |
| email      | app/schemas/contacts.py normalise_email (email-validator, cache         |
|            | misses only: a cache hit is not a Python call and stays in              |
|            | validation); if renamed, email_validator's validate_email               |
| sql        | psycopg/cursor.py execute, executemany, fetchone, fetchmany, fetchall,  |
|            | copy, stream, and psycopg/transaction.py __enter__/__exit__ (BEGIN,     |
|            | COMMIT): waiting on the database plus adapting parameters and rows      |
| response   | flask/app.py finalize_request (make_response: the JSON dump, headers),  |
|            | app/engine/bulk.py summary, jsonify when called outside summary, and the|
|            | JSON provider's response() (run_write dumps the answer itself)          |
| rest       | total minus the above: routing, auth, the engine's Python, the pool...  |

cProfile slows Python code far more than it slows waiting on a socket, so
the buckets are shares of a profiled run; the unprofiled time per 1000
contacts is printed beside them for scale.
"""

import argparse
import cProfile
import os
import pstats
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bench.drive import BenchError, check_counts
from bench.seed import ROOT, Database, Tenant, close_database, open_database, prepare
from bench.workload import SCENARIOS, Batch, Workload

BULK_PATH = "/contacts/bulk-update"
DEFAULT_SCENARIO = "mixed-1000"
DEFAULT_BATCHES = 10
WARMUP_BATCHES = 2
TIME_LIMIT_S = 90  # per pass (warm-up, unprofiled, profiled)
TOP_FUNCTIONS = 15

Key = tuple[str, str]  # (path suffix, function name)

SQL_FUNCTIONS: list[Key] = [
    *[("psycopg/cursor.py", name) for name in
      ("execute", "executemany", "fetchone", "fetchmany", "fetchall", "copy", "stream")],
    ("psycopg/transaction.py", "__enter__"),
    ("psycopg/transaction.py", "__exit__"),
]
PARSE_JSON: Key = ("app/web/body.py", "parse_json")
JSON_LOADS: list[Key] = [("json/__init__.py", "loads"), ("~", "<built-in method orjson.loads>")]
SCHEMA_LOAD: Key = ("marshmallow/schema.py", "load")
VALIDATE_ROWS: Key = ("app/engine/bulk.py", "validate_rows")
BULK_DOOR: Key = ("app/web/contacts.py", "bulk_door")
EMAIL_CHECKS: list[Key] = [("app/schemas/contacts.py", "normalise_email"),
                           ("email_validator/validate_email.py", "validate_email")]
FINALIZE_REQUEST: Key = ("flask/app.py", "finalize_request")
SUMMARY: Key = ("app/engine/bulk.py", "summary")
JSONIFY: Key = ("flask/json/__init__.py", "jsonify")
JSON_RESPONSE: Key = ("flask/json/provider.py", "response")
BUCKETS = ("json", "validation", "email", "sql", "response", "rest")

FuncKey = tuple[str, int, str]  # cProfile's (filename, line, name)


def matches(func: FuncKey, key: Key) -> bool:
    """Does a cProfile entry name this (path suffix, function name)?"""
    filename, _, name = func
    return filename.replace(os.sep, "/").endswith(key[0]) and name == key[1]


def cumulative(raw: dict, keys: list[Key],
               skip_caller: Callable[[FuncKey], bool] | None = None) -> float:
    """Cumulative seconds of the functions named by `keys`; with `skip_caller`,
    leaving out the calls made directly by a caller it accepts."""
    total = 0.0
    for func, (_, _, _, ct, callers) in raw.items():
        if not any(matches(func, k) for k in keys):
            continue
        if skip_caller is None:
            total += ct
        else:
            total += sum(e[3] for caller, e in callers.items() if not skip_caller(caller))
    return total


def edge(raw: dict, callee: Key, caller: Key) -> float:
    """Cumulative seconds of `callee` when called directly by `caller`."""
    return sum(e[3] for func, (*_, callers) in raw.items() if matches(func, callee)
               for c, e in callers.items() if matches(c, caller))


def first_present(raw: dict, candidates: list[Key]) -> float:
    """Cumulative seconds of the first candidate that was called at all."""
    for key in candidates:
        seconds = cumulative(raw, [key])
        if seconds:
            return seconds
    return 0.0


def from_psycopg(caller: FuncKey) -> bool:
    """psycopg's jsonb loader calls json.loads: that is SQL time, not request JSON."""
    return "psycopg" in caller[0]


def attribute(stats: pstats.Stats) -> dict[str, float]:
    """Seconds per bucket; see the module docstring for the mapping."""
    raw = stats.stats  # type: ignore[attr-defined]
    json_s = cumulative(raw, [PARSE_JSON]) or cumulative(raw, JSON_LOADS, from_psycopg)
    email_s = first_present(raw, EMAIL_CHECKS)
    # Every row's validation, however validate_rows does it, plus the envelope's load.
    rows_s = cumulative(raw, [VALIDATE_ROWS])
    loads_s = rows_s + edge(raw, SCHEMA_LOAD, BULK_DOOR) if rows_s else cumulative(raw, [SCHEMA_LOAD])
    validation_s = loads_s - email_s
    sql_s = cumulative(raw, SQL_FUNCTIONS)
    response_s = (cumulative(raw, [FINALIZE_REQUEST]) + cumulative(raw, [SUMMARY])
                  + cumulative(raw, [JSONIFY], lambda c: matches(c, SUMMARY))
                  + cumulative(raw, [JSON_RESPONSE]))
    total = stats.total_tt  # type: ignore[attr-defined]
    buckets = {"json": json_s, "validation": max(0.0, validation_s), "email": email_s,
               "sql": sql_s, "response": response_s}
    buckets["rest"] = total - sum(buckets.values())
    buckets["total"] = total
    return buckets


def short_name(func: FuncKey) -> str:
    """path:line(function) without the virtualenv, Python or checkout prefix."""
    filename, line, name = func
    if filename == "~":
        return name
    path = filename.replace(os.sep, "/")
    path = re.sub(r"^.*/site-packages/|^.*/lib/python3\.\d+/", "", path)
    path = path.removeprefix(str(ROOT).replace(os.sep, "/") + "/")
    return f"{path}:{line}({name})"


def top_functions(stats: pstats.Stats, per_1000: float, count: int = TOP_FUNCTIONS) -> list[dict]:
    """The functions with the most own time, in ms per 1000 contacts."""
    raw = stats.stats  # type: ignore[attr-defined]
    ranked = sorted(raw.items(), key=lambda item: item[1][2], reverse=True)[:count]
    return [{"function": short_name(func), "ncalls": nc,
             "tottime_ms": round(tt * 1000 / per_1000, 2), "cumtime_ms": round(ct * 1000 / per_1000, 2)}
            for func, (_, nc, tt, ct, _) in ranked]


@dataclass
class InProcessClient:
    """The app built in this process, and one token per bench tenant."""

    client: Any
    tokens: dict[int, str]

    def post(self, batch: Batch) -> Any:
        return self.client.post(BULK_PATH, data=batch.body, headers={
            "Authorization": f"Bearer {self.tokens[batch.tenant]}",
            "Content-Type": "application/json"})


def check(response: Any, batch: Batch) -> None:
    """Same checks as over HTTP: 200, no failed row, the expected counts."""
    if response.status_code != 200:
        raise BenchError(f"profile: HTTP {response.status_code}: {response.get_data(as_text=True)[:500]}")
    data = response.get_json()["data"]
    check_counts(batch, data["createdCount"], data["updatedCount"], data["unchangedCount"],
                 data["failedCount"], "profile")


def run_pass(app: InProcessClient, batches: list[Batch],
             profiler: cProfile.Profile | None) -> tuple[int, float]:
    """Send batches (under the profiler if given); returns (contacts, seconds)."""
    contacts, seconds = 0, 0.0
    deadline = time.monotonic() + TIME_LIMIT_S
    for batch in batches:
        if time.monotonic() >= deadline:
            break
        started = time.perf_counter()
        if profiler is not None:
            profiler.enable()
        response = app.post(batch)
        if profiler is not None:
            profiler.disable()
        seconds += time.perf_counter() - started
        check(response, batch)  # outside the profiler: parsing the answer is the client's
        contacts += batch.size
    return contacts, seconds


def profile_service(database: Database, tenants: list[Tenant], scenario: str = DEFAULT_SCENARIO,
                    batches: int = DEFAULT_BATCHES) -> dict[str, Any]:
    """Profile batches of a scenario through the in-process app; buckets in ms per 1000."""
    from app import create_app  # late: the bench may run against a database set up just now
    from app.db import pool_of

    os.environ["CONTACTSYNC_RATE_LIMIT"] = "off"  # as for gunicorn: never rate-limit the bench
    flask_app = create_app({"DATABASE_URL": database.url})
    try:
        app = InProcessClient(flask_app.test_client(), {t.index: t.token for t in tenants})
        workload = Workload(thread=0, tag=f"prof-{scenario}")  # new keys stay new across profiles
        build = lambda n: [b.encode() for b in workload.batches(scenario, n)]  # noqa: E731
        run_pass(app, build(WARMUP_BATCHES), None)
        plain_contacts, plain_s = run_pass(app, build(batches), None)
        profiler = cProfile.Profile()
        contacts, _ = run_pass(app, build(batches), profiler)
    finally:
        pool_of(flask_app).close()
    stats = pstats.Stats(profiler)
    per_1000 = contacts / 1000
    buckets = {name: round(s * 1000 / per_1000, 2) for name, s in attribute(stats).items()}
    return {"scenario": scenario, "batches": contacts // SCENARIOS[scenario][1], "contacts": contacts,
            "unprofiled_ms_per_1000": round(plain_s * 1000 / (plain_contacts / 1000), 2),
            "profiled_ms_per_1000": buckets["total"], "buckets_ms_per_1000": buckets,
            "top": top_functions(stats, per_1000)}


def format_profile(result: dict[str, Any]) -> str:
    """The buckets and the top functions as text."""
    total = result["profiled_ms_per_1000"]
    lines = [f"CPU breakdown: {result['batches']} {result['scenario']} batches in-process under cProfile, "
             f"ms per 1000 contacts (unprofiled: {result['unprofiled_ms_per_1000']:.1f} ms)",
             f"  {'bucket':<12}{'ms/1000':>10}{'share':>8}"]
    for name in BUCKETS:
        ms = result["buckets_ms_per_1000"][name]
        lines.append(f"  {name:<12}{ms:>10.1f}{ms / total:>8.0%}")
    lines += [f"  {'total':<12}{total:>10.1f}{1:>8.0%}", "",
              f"Top {len(result['top'])} functions by own time (ms per 1000 contacts):",
              f"  {'tottime':>8} {'cumtime':>8} {'ncalls':>8}  function"]
    lines += [f"  {t['tottime_ms']:>8.1f} {t['cumtime_ms']:>8.1f} {t['ncalls']:>8}  {t['function']}"
              for t in result["top"]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Seed the bench tenants, profile, print. Exit 1 on an error."""
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__.split("\n")[0])
    parser.add_argument("--batches", type=int, default=DEFAULT_BATCHES,
                        help=f"profiled batches (default {DEFAULT_BATCHES})")
    parser.add_argument("--scenario", choices=SCENARIOS, default=DEFAULT_SCENARIO,
                        help=f"what the batches are (default {DEFAULT_SCENARIO})")
    args = parser.parse_args(argv)
    database = open_database()
    try:
        tenants = prepare(database)
        print(format_profile(profile_service(database, tenants, args.scenario, max(1, args.batches))))
    except BenchError as exc:
        print(f"bench: error: {exc}", file=sys.stderr)
        return 1
    finally:
        close_database(database)
    return 0


if __name__ == "__main__":
    sys.exit(main())
