"""How a background command runs: threads of one loop until SIGTERM or SIGINT,
with the upkeep (purges) done every few minutes by the main thread.

`workflows run` (app/workers/dispatcher.py) and `tasks run`
(app/workers/tasks.py) both run this way; each loop finishes the item in
hand (an attempt, a chunk) and returns once `stop` is set.
"""

import logging
import signal
import threading
import time
from collections.abc import Callable

import psycopg
from psycopg_pool import PoolTimeout

log = logging.getLogger(__name__)

UPKEEP_EVERY_SECONDS = 300.0


def repeat(step: Callable[[], bool], stop: threading.Event, poll_seconds: float, name: str) -> None:
    """Call `step()` (True: it found work) until `stop` is set, waiting
    `poll_seconds` after a step that found none. Database trouble is waited
    out; a bug in one step is logged and the loop goes on, so one bad item
    (whose lease then runs out) does not stop the others."""
    while not stop.is_set():
        try:
            busy = step()
        except (psycopg.OperationalError, PoolTimeout) as exc:
            log.warning("database unavailable, %s waits: %s", name, type(exc).__name__)
            busy = False
        except Exception:
            log.exception("%s error", name)
            busy = False
        if not busy:
            stop.wait(poll_seconds)


def run_until_signalled(loop: Callable[[threading.Event], None], threads: int, name: str,
                        upkeep: Callable[[], None]) -> None:
    """Run `threads` copies of `loop(stop)` and `upkeep()` now and every
    UPKEEP_EVERY_SECONDS until SIGTERM or SIGINT; return when all loops ended."""
    # The handler only appends to a list: one that set the Event itself would
    # take its lock, and deadlock when a second signal lands while the first
    # holds it (Ctrl-C, then the SIGTERM `serve` passes on).
    signals_received: list[int] = []
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda received, _frame: signals_received.append(received))
    stop = threading.Event()
    workers = [threading.Thread(target=loop, args=(stop,), name=f"{name}-{n}", daemon=True)
               for n in range(threads)]
    for worker in workers:
        worker.start()
    next_upkeep = time.monotonic()
    while not signals_received:
        if time.monotonic() >= next_upkeep:
            upkeep()
            next_upkeep = time.monotonic() + UPKEEP_EVERY_SECONDS
        time.sleep(0.2)  # a signal cuts the sleep short, and its handler runs here
    stop.set()
    for worker in workers:
        worker.join()
