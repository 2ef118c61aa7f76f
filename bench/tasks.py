"""The batch-task phase of `make bench`: 100,000 rows in one task.

Each run submits tasks through the running gunicorn (`Prefer: respond-async`)
and starts task workers (`flask --app app tasks run`) as processes of their
own, then polls the task until it ends:

- one task of 100,000 rows (half new contacts, half updates of existing
  ones) with one worker, then another with two workers: a tenant's chunks
  apply in order, so a second worker cannot speed one task up;
- two tasks of 50,000 rows of two tenants at once with two workers: how
  workers add up across tenants.

Figures: the submission's round trip (the 202; goal under 2 s), the apply
rate (rows over the server's startedAt..completedAt), and the poll's latency.
Every wait is bounded by TASK_TIME_LIMIT_S.
"""

import json
import os
import signal
import statistics
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import requests

from bench.drive import BenchError
from bench.seed import ROOT, Tenant, contact_number
from bench.workload import UPDATABLE, next_revision

TASK_ROWS = 100_000
POLL_SECONDS = 0.25
TASK_TIME_LIMIT_S = 180.0
SUBMIT_TIMEOUT_S = 60.0


def task_rows(tenant: int, count: int, tag: str) -> list[dict[str, Any]]:
    """Half updates of the tenant's updatable contacts (each a new rev, so
    updated), half new contacts, interleaved, as a client sends them."""
    rows = []
    for i in range(count // 2):
        n = contact_number(tenant, UPDATABLE.start + i % len(UPDATABLE))
        rows.append({"externalId": f"ext-{n}", "email": f"User{n}@Example.com",
                     "attributes": {"rev": next_revision()}})
        key = f"task-{tag}-{i}"
        rows.append({"externalId": key, "email": f"{key}@example.com", "firstName": "New",
                     "locale": "en", "attributes": {"plan": "free", "seats": 1}})
    return rows


def submit(base_url: str, tenant: Tenant, rows: list[dict[str, Any]]) -> tuple[int, float]:
    """POST the rows as a batch task; return its id and the round trip in seconds."""
    body = json.dumps({"contacts": rows}).encode()
    started = time.perf_counter()
    response = requests.post(f"{base_url}/contacts/bulk-update", data=body, timeout=SUBMIT_TIMEOUT_S,
                             headers={"Authorization": f"Bearer {tenant.token}",
                                      "Content-Type": "application/json", "Prefer": "respond-async"})
    elapsed = time.perf_counter() - started
    if response.status_code != 202:
        raise BenchError(f"task submission: HTTP {response.status_code}: {response.text[:500]}")
    return response.json()["data"]["id"], elapsed


def start_workers(database_url: str, count: int, log_path: Path) -> list[subprocess.Popen]:
    env = {**os.environ, "DATABASE_URL": database_url}
    with open(log_path, "ab") as log:
        return [subprocess.Popen([sys.executable, "-m", "flask", "--app", "app", "tasks", "run"],
                                 cwd=ROOT, env=env, start_new_session=True,
                                 stdout=log, stderr=subprocess.STDOUT) for _ in range(count)]


def stop_workers(workers: list[subprocess.Popen]) -> None:
    for worker in workers:
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGTERM)
    for worker in workers:
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait(timeout=10)


def wait_for(base_url: str, tenant: Tenant, task_id: int, poll_ms: list[float]) -> dict[str, Any]:
    """Poll the task until it ends; the polls' latencies go to `poll_ms`."""
    deadline = time.monotonic() + TASK_TIME_LIMIT_S
    session = requests.Session()
    while time.monotonic() < deadline:
        started = time.perf_counter()
        response = session.get(f"{base_url}/batch-tasks/{task_id}", timeout=10,
                               headers={"Authorization": f"Bearer {tenant.token}"})
        poll_ms.append((time.perf_counter() - started) * 1000)
        task = response.json()["data"]
        if task["completedAt"] is not None:
            return task
        time.sleep(POLL_SECONDS)
    raise BenchError(f"task {task_id} did not finish within {TASK_TIME_LIMIT_S:.0f} s")


def apply_seconds(task: dict[str, Any]) -> float:
    """From the first claim to the end, by the server's clock."""
    return (parse_time(task["completedAt"]) - parse_time(task["startedAt"])).total_seconds()


def parse_time(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def check_task(task: dict[str, Any], rows: int) -> None:
    """Every row applied and none failed: a bench figure over failed rows means nothing."""
    if task["status"] != "completed" or task["createdCount"] + task["updatedCount"] != rows:
        raise BenchError(f"task {task['id']} ended {task['status']}: {task}")


def run_case(base_url: str, database_url: str, tenants: list[Tenant], workers: int,
             row_counts: list[int], tag: str, log_path: Path, log: Any) -> dict[str, Any]:
    """Submit one task per tenant given, with `workers` workers running; time it all."""
    bodies = [task_rows(t.index, count, f"{tag}-{t.index}") for t, count in zip(tenants, row_counts,
                                                                               strict=True)]
    processes = start_workers(database_url, workers, log_path)
    poll_ms: list[float] = []
    try:
        submitted = [submit(base_url, t, rows) for t, rows in zip(tenants, bodies, strict=True)]
        done = [wait_for(base_url, t, task_id, poll_ms)
                for t, (task_id, _) in zip(tenants, submitted, strict=True)]
    finally:
        stop_workers(processes)
    for task, count in zip(done, row_counts, strict=True):
        check_task(task, count)
    started = min(parse_time(t["startedAt"]) for t in done)
    ended = max(parse_time(t["completedAt"]) for t in done)
    rows = sum(row_counts)
    rate = rows / (ended - started).total_seconds()
    result = {"workers": workers, "tasks": len(done), "rows": rows,
              "submit_s": round(max(s for _, s in submitted), 3),
              "apply_s": round((ended - started).total_seconds(), 2), "contacts_per_s": round(rate),
              "poll_p50_ms": round(statistics.median(poll_ms), 1)}
    log(f"tasks {tag}: {rows:,} rows in {len(done)} task(s), {workers} worker(s): "
        f"{rate:,.0f} contacts/s, submitted in {result['submit_s']:.2f} s, "
        f"poll p50 {result['poll_p50_ms']:.1f} ms")
    return result


def measure_tasks(base_url: str, database_url: str, tenants: list[Tenant], log_path: Path,
                  log: Any) -> dict[str, Any]:
    """The three cases of the module docstring."""
    return {
        "one-task-one-worker": run_case(base_url, database_url, tenants[:1], 1, [TASK_ROWS],
                                        "1w", log_path, log),
        "one-task-two-workers": run_case(base_url, database_url, tenants[1:2], 2, [TASK_ROWS],
                                         "2w", log_path, log),
        "two-tenants-two-workers": run_case(base_url, database_url, tenants[2:4], 2,
                                            [TASK_ROWS // 2] * 2, "2t", log_path, log),
    }


def format_tasks(tasks: dict[str, Any], sync_rate: float) -> str:
    """The phase's table, with each rate beside the synchronous mixed-1000 figure."""
    lines = [f"batch tasks (half new, half updates; synchronous mixed-1000: {sync_rate:,.0f} contacts/s)",
             f"{'case':<25}| {'rows':>7} | {'submit s':>8} | {'contacts/s':>10} | {'vs sync':>7} | "
             f"{'poll p50 ms':>11}"]
    for name, t in tasks.items():
        lines.append(f"{name:<25}| {t['rows']:>7,} | {t['submit_s']:>8.2f} | {t['contacts_per_s']:>10,} | "
                     f"{t['contacts_per_s'] / sync_rate:>7.2f} | {t['poll_p50_ms']:>11.1f}")
    return "\n".join(lines)
