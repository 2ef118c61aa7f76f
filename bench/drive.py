"""Running prepared batches from several threads, bounded by count and by time.

Batches are built before the clock starts, so the measured time is the
system under test, not the bench building JSON. Throughput is total rows
over the wall time of the slowest thread; latency is per batch.
"""

import statistics
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from bench.workload import Batch


class BenchError(Exception):
    """The bench cannot trust what it measured (a failed row, a wrong count, ...)."""


@dataclass
class Result:
    """One scenario of one way of writing: what got through, and how fast."""

    name: str
    rows: int = 0
    requests: int = 0
    wall_s: float = 0.0
    latencies_s: list[float] = field(default_factory=list)
    stopped_by_time: bool = False

    @property
    def rate(self) -> float:
        """Contacts per second."""
        return self.rows / self.wall_s if self.wall_s else 0.0

    def percentile_ms(self, p: int) -> float:
        """The p-th percentile latency in milliseconds (inclusive method)."""
        if len(self.latencies_s) < 2:
            return self.latencies_s[0] * 1000 if self.latencies_s else float("nan")
        return statistics.quantiles(self.latencies_s, n=100, method="inclusive")[p - 1] * 1000

    def add(self, other: "Result") -> None:
        """Fold in another part of the same scenario (a later round)."""
        self.rows += other.rows
        self.requests += other.requests
        self.wall_s += other.wall_s
        self.latencies_s += other.latencies_s
        self.stopped_by_time |= other.stopped_by_time

    def summary(self) -> dict:
        """The numbers the report and the results file keep."""
        return {"name": self.name, "contacts": self.rows, "requests": self.requests,
                "wall_s": round(self.wall_s, 3), "contacts_per_s": round(self.rate, 1),
                "p50_ms": round(self.percentile_ms(50), 1), "p95_ms": round(self.percentile_ms(95), 1),
                "p99_ms": round(self.percentile_ms(99), 1), "stopped_by_time": self.stopped_by_time}


def check_counts(batch: Batch, created: int, updated: int, unchanged: int, failed: int,
                 where: str) -> None:
    """Every batch must report exactly what it was built to do, or the numbers lie."""
    expected = (batch.created, batch.updated, batch.unchanged, 0)
    got = (created, updated, unchanged, failed)
    if got != expected:
        raise BenchError(
            f"{where}: tenant bench-{batch.tenant} batch of {batch.size} reported "
            f"created/updated/unchanged/failed = {got}, expected {expected}")


def run_thread(batches: list[Batch], send: Callable[[Batch], None], deadline: float,
               stop: threading.Event) -> tuple[int, int, list[float], bool]:
    """Send batches in order until done, past the deadline, or another thread failed."""
    rows, latencies = 0, []
    for batch in batches:
        if stop.is_set() or time.monotonic() >= deadline:
            return rows, len(latencies), latencies, not stop.is_set()
        started = time.perf_counter()
        try:
            send(batch)
        except BaseException:
            stop.set()  # the other thread stops at its next batch
            raise
        latencies.append(time.perf_counter() - started)
        rows += batch.size
    return rows, len(latencies), latencies, False


def run_parallel(name: str, per_thread: list[tuple[list[Batch], Callable[[Batch], None]]],
                 time_limit_s: float) -> Result:
    """Run each thread's batches with its own sender; one Result for all of them."""
    stop = threading.Event()
    result = Result(name)
    started = time.perf_counter()
    deadline = time.monotonic() + time_limit_s
    with ThreadPoolExecutor(max_workers=len(per_thread), thread_name_prefix=name) as pool:
        futures = [pool.submit(run_thread, batches, send, deadline, stop)
                   for batches, send in per_thread]
        try:
            outcomes = [f.result() for f in futures]  # re-raises a thread's error
        except BaseException:  # Ctrl-C or SIGTERM too: the threads stop at their next batch
            stop.set()
            raise
    result.wall_s = time.perf_counter() - started
    for rows, requests, latencies, timed_out in outcomes:
        result.rows += rows
        result.requests += requests
        result.latencies_s += latencies
        result.stopped_by_time |= timed_out
    return result


def warm_up(per_thread: list[tuple[list[Batch], Callable[[Batch], None]]],
            time_limit_s: float = 60) -> None:
    """Send a few untimed batches first: pools connect, statements get prepared,
    caches and lazy imports fill, so the timed part measures the steady state.
    In parallel, so that both gunicorn workers get some."""
    run_parallel("warm-up", per_thread, time_limit_s)
