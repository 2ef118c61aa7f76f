"""`make bench`: the service end to end, the engine's SQL, the one-statement floor, a naive
baseline, CPU profiles.

Phases, all in one run so that they share machine, database and data:

1. database (DATABASE_URL, else embedded under .data/bench), schema, 200k
   seeded contacts in tenants bench-0..bench-9 (SCALE=2m: 2,000,000, in an
   embedded cluster of its own that later runs reuse), one token per tenant;
2. gunicorn (2 sync workers) on a free 127.0.0.1 port;
3. per scenario (mixed-1000, mixed-100, resync-1000, relations-1000: mixed
   rows that also add 2 tags and set 1 company): the service from 2
   client threads, then the engine's SQL (app.engine.upsert.upsert_contacts
   on pre-validated rows) from 2 threads, then the floor (one statement per
   batch, bench/onestatement.py) from 2 threads, same shapes, each way with
   its own new keys; all of it in 3 interleaved rounds, so that the
   machine's drift is shared fairly;
4. batch tasks: 100,000 rows with one and two task workers (bench/tasks.py);
   `contactsync import` of a 100,000-row CSV, end to end (bench/command.py);
5. the naive row-by-row baseline; the in-process CPU profiles (mixed, resync);
6. what the change feed's index costs the engine (bench/feed_index.py);
7. the table, the target checks, bench/results/*.json and *.png.

Every loop is bounded by a count and by time. Exit status: 0 when the run
completed (a missed target is reported, not an error), 1 on an error.
"""

import datetime
import gc
import os
import platform
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict

from bench.command import format_import, measure_import
from bench.drive import BenchError, Result, run_parallel, warm_up
from bench.feed_index import format_feed_index_cost, measure_feed_index_cost
from bench.floor import engine_sender, naive_sender
from bench.onestatement import one_statement_sender
from bench.profile import format_profile, profile_service
from bench.report import RESULTS_DIR, format_table, targets, write_results
from bench.seed import (
    CONTACTS_PER_TENANT,
    EMBEDDED_DATA_DIR,
    ROOT,
    SCALE,
    TENANT_COUNT,
    Database,
    Tenant,
    close_database,
    open_database,
    prepare,
    server_version,
)
from bench.service import WORKERS, Gunicorn, http_sender
from bench.tasks import format_tasks, measure_tasks
from bench.workload import SCENARIOS, THREADS, Batch, Workload

# Batches per client thread: roughly 15-25 s of the service each on an idle
# 2-core machine (the floor, faster, takes less): re-sync batches are quicker,
# so there are more of them, or that scenario's figure rests on the fewest
# seconds and swings most. TIME_LIMIT_S cuts a scenario short on a slower or
# busy machine. The engine's SQL and the floor run the same counts: same
# shapes, same rows.
# They are sent in ROUNDS rounds, each a third of every scenario (run_rounds).
REQUESTS_PER_THREAD = {"mixed-1000": 180, "mixed-100": 999, "resync-1000": 399, "relations-1000": 150}
ROUNDS = 3
WARMUP_PER_THREAD = 2
TIME_LIMIT_S = 40.0
NAIVE_BATCHES_PER_THREAD = 8  # ~0.5-1 s each: a few are enough for a rate
NAIVE_TIME_LIMIT_S = 30.0
# The two scenarios with a target on their own; mixed-100 is mixed-1000's work in smaller requests.
PROFILED_SCENARIOS = ("mixed-1000", "resync-1000")
BUSY_LOAD = 0.5  # 1-minute load average above which the machine is not idle

Sender = Callable[[Batch], None]


def log(message: str) -> None:
    """Progress on stderr, so that stdout holds the results alone."""
    print(f"[bench] {message}", file=sys.stderr, flush=True)


@contextmanager
def frozen_gc() -> Iterator[None]:
    """Keep the prebuilt batches out of the garbage collector's way while timing.

    Hundreds of thousands of prebuilt row dicts would otherwise be traversed
    by every full collection, pauses that belong to the bench, not the engine.
    """
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


@dataclass
class Way:
    """One way of writing a scenario (the service, the engine's SQL or the
    floor): a workload and a sender per client thread, kept from round to
    round so that new keys stay new and the direct ways keep their connections."""

    kind: str  # "service", "engine" or "floor"
    scenario: str
    workloads: list[Workload]
    senders: list[Sender]
    encode: bool  # the service takes JSON bodies, the direct ways validated rows

    @property
    def name(self) -> str:
        return f"{self.kind} {self.scenario}"

    def prebuilt(self, per_thread: int) -> list[tuple[list[Batch], Sender]]:
        """Each thread's next batches, built now so that the timed part sends only."""
        def built(workload: Workload) -> list[Batch]:
            batches = workload.batches(self.scenario, per_thread)
            return [b.encode() if self.encode else b.for_engine() for b in batches]

        return [(built(w), s) for w, s in zip(self.workloads, self.senders, strict=True)]


def service_way(base_url: str, tenants: list[Tenant], scenario: str) -> Way:
    """Through gunicorn, each thread with its own Session and tenants."""
    return Way("service", scenario, [Workload(t, f"svc-{scenario}") for t in range(THREADS)],
               [http_sender(base_url, tenants, scenario) for _ in range(THREADS)], encode=True)


def engine_way(conns: list[psycopg.Connection], tenants: list[Tenant], scenario: str) -> Way:
    """Straight into the engine (its SQL and its Python), one connection per thread."""
    return Way("engine", scenario, [Workload(t, f"floor-{scenario}") for t in range(THREADS)],
               [engine_sender(conn, tenants, scenario) for conn in conns], encode=False)


def floor_way(conns: list[psycopg.Connection], tenants: list[Tenant], scenario: str) -> Way:
    """One statement per batch (DESIGN 6's floor), one connection per thread.

    Same tenants, same stored rows and the same shapes as the other ways,
    its own new keys: the contacts it creates are new to it, its updates
    carry revisions nobody sent before, and the contacts it re-syncs it
    leaves as they are, so it works on what is in effect a copy of the same
    data and leaves the service's next rows as the service expects them.
    """
    return Way("floor", scenario, [Workload(t, f"one-{scenario}") for t in range(THREADS)],
               [one_statement_sender(conn, tenants, scenario) for conn in conns], encode=False)


def run_rounds(ways: dict[str, dict[str, Way]]) -> dict[str, dict[str, Result]]:
    """Every scenario of every way, in ROUNDS interleaved rounds.

    The machine's speed drifts over a run (on a shared 2-core VM by 20% and
    more within minutes); one block per scenario would put that drift into
    the ratios between scenarios, and between the service and the floors.
    """
    results = {kind: {scenario: Result(way.name) for scenario, way in by_scenario.items()}
               for kind, by_scenario in ways.items()}
    for round_number in range(1, ROUNDS + 1):
        for scenario in SCENARIOS:
            for kind, by_scenario in ways.items():
                way = by_scenario[scenario]
                if round_number == 1:
                    warm_up(way.prebuilt(WARMUP_PER_THREAD))
                per_thread = way.prebuilt(REQUESTS_PER_THREAD[scenario] // ROUNDS)
                with frozen_gc():
                    result = run_parallel(way.name, per_thread, TIME_LIMIT_S / ROUNDS)
                log(f"round {round_number}/{ROUNDS} {way.name}: {result.rate:,.0f} contacts/s, "
                    f"{result.requests} requests in {result.wall_s:.1f} s"
                    + (" (stopped by the time limit)" if result.stopped_by_time else ""))
                results[kind][scenario].add(result)
    return results


def run_naive(conns: list[psycopg.Connection], tenants: list[Tenant]) -> Result:
    """Mixed batches of 1000, one SELECT + INSERT/UPDATE per contact."""
    per_thread = [(Workload(t, "naive").batches("mixed-1000", NAIVE_BATCHES_PER_THREAD),
                   naive_sender(conn, tenants)) for t, conn in enumerate(conns)]
    with frozen_gc():
        result = run_parallel("naive", per_thread, NAIVE_TIME_LIMIT_S)
    log(f"naive: {result.rate:,.0f} contacts/s, {result.requests} batches in {result.wall_s:.1f} s")
    return result


def describe_database(database: Database) -> str:
    """Where the data lives, without any password."""
    if database.embedded:
        return f"embedded ({EMBEDDED_DATA_DIR.relative_to(ROOT)})"
    info = conninfo_to_dict(database.url)
    return " ".join(["DATABASE_URL"] + [f"{k}={info[k]}" for k in ("host", "port", "dbname") if k in info])


def git_commit() -> str | None:
    """The checked-out commit, to tell results apart (read-only git call)."""
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                              text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def collect(database: Database, service: dict[str, Result], engine: dict[str, Result],
            floor: dict[str, Result], naive: Result, tasks: dict[str, Any], command_import: dict[str, Any],
            profile: dict[str, Any], feed_index: dict[str, Any], started: float,
            stamp: str) -> dict[str, Any]:
    """Everything the report prints and the JSON file keeps."""
    results: dict[str, Any] = {
        "timestamp": stamp,
        "environment": {"cpus": os.cpu_count(), "python": platform.python_version(),
                        "postgres": server_version(database), "database": describe_database(database),
                        "git_commit": git_commit(), "gunicorn_workers": WORKERS, "client_threads": THREADS},
        "seed": {"scale": SCALE, "tenants": TENANT_COUNT, "contacts": TENANT_COUNT * CONTACTS_PER_TENANT},
        "service": {name: r.summary() for name, r in service.items()},
        "engine_sql": {name: r.summary() for name, r in engine.items()},
        "floor": {name: r.summary() for name, r in floor.items()},
        # service / one-statement floor: what the targets are about
        "ratios": {name: round(service[name].rate / floor[name].rate, 3) for name in service},
        # service / engine's SQL: HTTP, JSON, auth and validation
        "service_to_engine": {name: round(service[name].rate / engine[name].rate, 3) for name in service},
        # engine's SQL / one-statement floor: the engine's own waste
        "engine_to_floor": {name: round(engine[name].rate / floor[name].rate, 3) for name in service},
        "naive": naive.summary(),
        "speedup_over_naive": {"floor": round(floor["mixed-1000"].rate / naive.rate, 1),
                               "engine_sql": round(engine["mixed-1000"].rate / naive.rate, 1),
                               "service": round(service["mixed-1000"].rate / naive.rate, 1)},
        "tasks": tasks,
        "command_import": command_import,
        "profile": profile,
        "feed_index_cost": feed_index,
    }
    results["targets"] = targets(results)
    results["run_time_s"] = round(time.perf_counter() - started, 1)
    return results


def bench(database: Database, started: float, stamp: str) -> dict[str, Any]:
    """Phases 1-5; gunicorn and the floor connections are closed whatever happens."""
    tenants = prepare(database, log)
    gunicorn = Gunicorn(database.url, RESULTS_DIR / "gunicorn.log")
    conns = []
    try:
        gunicorn.wait_ready()
        log(f"gunicorn ready on {gunicorn.base_url} ({WORKERS} workers)")
        conns = [database.connect() for _ in range(THREADS)]
        results = run_rounds({
            "service": {s: service_way(gunicorn.base_url, tenants, s) for s in SCENARIOS},
            "engine": {s: engine_way(conns, tenants, s) for s in SCENARIOS},
            "floor": {s: floor_way(conns, tenants, s) for s in SCENARIOS}})
        service, engine, floor = results["service"], results["engine"], results["floor"]
        tasks = measure_tasks(gunicorn.base_url, database.url, tenants, RESULTS_DIR / "tasks.log", log)
        command_import = measure_import(gunicorn.base_url, tenants, log)
        gunicorn.stop()  # idle from here on; the rest runs in this process
        naive = run_naive(conns, tenants)
    finally:
        for conn in conns:
            conn.close()
        gunicorn.stop()
    profile = {}
    for scenario in PROFILED_SCENARIOS:
        log(f"profiling {scenario} in-process")
        profile[scenario] = profile_service(database, tenants, scenario)
    log("measuring the feed index's cost on two scratch databases")
    feed_index = measure_feed_index_cost(database.url, log)
    return collect(database, service, engine, floor, naive, tasks, command_import, profile, feed_index,
                   started, stamp)


def main() -> int:
    """Run the whole bench; print the report; exit 1 on an error."""
    # `kill` (SIGTERM) should clean up like Ctrl-C does: unwind through the finally blocks.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    started = time.perf_counter()
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    load_before = os.getloadavg()[0]
    if load_before > BUSY_LOAD:
        log(f"warning: load average {load_before:.1f} before the run; other work on this machine "
            "will show up in the numbers")
    database = open_database()
    try:
        results = bench(database, started, stamp)
        results["environment"]["load_average_before"] = round(load_before, 2)
    except BenchError as exc:
        print(f"bench: error: {exc}", file=sys.stderr)
        return 1
    finally:
        close_database(database)
    json_path, png_path = write_results(results, stamp)
    print(format_table(results))
    print()
    print(format_tasks(results["tasks"], results["service"]["mixed-1000"]["contacts_per_s"]))
    print(format_import(results["command_import"], results["service"]["mixed-1000"]["contacts_per_s"]))
    print(format_feed_index_cost(results["feed_index_cost"]))
    print()
    for profile in results["profile"].values():
        print(format_profile(profile))
        print()
    print(f"results: {json_path.relative_to(ROOT)}, {png_path.relative_to(ROOT)} (and latest.*)")
    print(f"run time: {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
