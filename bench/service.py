"""contactsync under gunicorn on 127.0.0.1, and an HTTP client that checks every answer."""

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import requests

from bench.drive import BenchError, check_counts
from bench.seed import ROOT, Tenant
from bench.workload import Batch

WORKERS = 2
STARTUP_SECONDS = 60
REQUEST_TIMEOUT_S = 60
BULK_PATH = "/contacts/bulk-update"


def free_port() -> int:
    """A port nobody listens on right now (gunicorn binds it a moment later)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Gunicorn:
    """gunicorn with 2 sync workers in its own process group, logging to a file;
    it serves the contactsync of `tree` (this checkout unless told: bench/compare.py
    serves an older commit's beside it)."""

    def __init__(self, database_url: str, log_path: Path, tree: Path = ROOT) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "DATABASE_URL": database_url,
               "PYTHONPATH": str(tree),  # the tree's app/, before the installed checkout's
               # A later feature limits request rates; a benchmark must not be limited.
               "CONTACTSYNC_RATE_LIMIT": "off"}
        with open(log_path, "wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{self.port}",
                 "--workers", str(WORKERS), "--graceful-timeout", "5", "wsgi:app"],
                cwd=tree, env=env, start_new_session=True,  # own group: stop() reaches the workers
                stdout=log, stderr=subprocess.STDOUT)

    def wait_ready(self) -> None:
        """Poll /ready until the workers answer with a working database."""
        deadline = time.monotonic() + STARTUP_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise BenchError(f"gunicorn exited during start-up; see {self.log_path}:\n"
                                 + self.log_tail())
            try:
                if requests.get(f"{self.base_url}/ready", timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.2)
        raise BenchError(f"gunicorn was not ready within {STARTUP_SECONDS} s; see {self.log_path}")

    def worker_cpu_s(self) -> float:
        """CPU seconds (user and system) the master's children, the workers,
        have used so far, read from /proc (Linux)."""
        ticks = 0
        for stat_path in Path("/proc").glob("[0-9]*/stat"):
            try:
                # After the command's ")": state, ppid, ... utime (12th), stime (13th).
                stat = stat_path.read_text().rsplit(")", 1)[1].split()
            except OSError:  # a process that just exited
                continue
            if int(stat[1]) == self.process.pid:
                ticks += int(stat[11]) + int(stat[12])
        return ticks / os.sysconf("SC_CLK_TCK")

    def log_tail(self, lines: int = 30) -> str:
        """The end of gunicorn's log, for error messages."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        """SIGTERM to the whole process group (master and workers), SIGKILL if it lingers."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)


def http_sender(base_url: str, tenants: list[Tenant], scenario: str) -> Callable[[Batch], None]:
    """A sender for one thread: its own Session, checks on every answer.

    The Session would keep its connection alive, but gunicorn's sync workers
    close every connection after the answer, so each request opens a new one
    on loopback, as any client of contactsync under `make run` does.

    Batches must be encode()d beforehand, so no JSON is built while timing.
    """
    session = requests.Session()
    url = base_url + BULK_PATH
    tokens = {t.index: t.token for t in tenants}

    def send(batch: Batch) -> None:
        response = session.post(url, data=batch.body, timeout=REQUEST_TIMEOUT_S,
                                headers={"Authorization": f"Bearer {tokens[batch.tenant]}",
                                         "Content-Type": "application/json"})
        if response.status_code != 200:
            raise BenchError(f"service {scenario}: HTTP {response.status_code} for a batch of "
                             f"{batch.size} (tenant bench-{batch.tenant}): {response.text[:500]}")
        data = response.json()["data"]
        if data["failedCount"]:
            raise BenchError(f"service {scenario}: {data['failedCount']} rows failed, first: "
                             f"{data['failures'][:1]}")
        check_counts(batch, data["createdCount"], data["updatedCount"], data["unchangedCount"],
                     data["failedCount"], f"service {scenario}")

    return send
