"""A real webhook receiver on 127.0.0.1 for the dispatcher tests.

It records every request as it arrives (before answering) and answers each
with the next of the answers it was told, or 200 when told none.
"""

import threading
import time
from collections import deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass(frozen=True)
class Received:
    """One request as the receiver got it."""

    path: str
    headers: dict[str, str]  # names lower-cased
    body: bytes


@dataclass(frozen=True)
class Answer:
    """What to answer one request: a status, after `delay` seconds; with
    `trickle`, the status line and headers one byte every quarter second."""

    status: int = 200
    delay: float = 0.0
    trickle: bool = False


class Receiver:
    """An HTTP server in a thread; `url` is where to send, `requests` what came."""

    def __init__(self) -> None:
        self.requests: list[Received] = []
        self.answers: deque[Answer] = deque()
        self.arrived = threading.Condition()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self.handler_class())
        self.server.daemon_threads = True  # a handler still sleeping does not hold up the end
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hooks/contacts"

    def answer(self, *answers: Answer) -> None:
        """Answer the next requests so, in order; then 200 again."""
        self.answers.extend(answers)

    def wait_for(self, count: int, timeout: float = 15.0) -> list[Received]:
        """Wait until `count` requests have arrived; return them all."""
        deadline = time.monotonic() + timeout
        with self.arrived:
            while len(self.requests) < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"{len(self.requests)} of {count} webhook requests arrived")
                self.arrived.wait(remaining)
            return list(self.requests)

    def handler_class(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with receiver.arrived:
                    receiver.requests.append(Received(
                        self.path, {k.lower(): v for k, v in self.headers.items()}, body))
                    answer = receiver.answers.popleft() if receiver.answers else Answer()
                    receiver.arrived.notify_all()
                time.sleep(answer.delay)
                try:
                    if answer.trickle:
                        self.close_connection = True
                        for byte in f"HTTP/1.1 {answer.status} OK\r\nContent-Length: 0\r\n\r\n".encode():
                            self.wfile.write(bytes([byte]))
                            self.wfile.flush()
                            time.sleep(0.25)
                        return
                    self.send_response(answer.status)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                except OSError:  # the sender gave up waiting
                    pass

            def log_message(self, format: str, *args: object) -> None:  # keep test output clean
                pass

        return Handler

    def __enter__(self) -> "Receiver":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
