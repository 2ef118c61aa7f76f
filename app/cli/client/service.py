"""Talking to a running contactsync over HTTP: one request with bounded retries.

429 and 5xx answers, 409 `idempotency_key_in_progress` and lost connections
are retried, waiting the server's `Retry-After` when it sends one, else
0.5, 1, 2 ... seconds (at most 30). Anything else the caller cannot fix by
waiting becomes a `ServiceError` with a one-line message, never a traceback.
"""

import threading
from dataclasses import dataclass, field
from typing import Any

import click
import requests

DEFAULT_URL = "http://127.0.0.1:8000"
TOKEN_ENV = "CONTACTSYNC_TOKEN"
DEFAULT_RETRIES = 5
CONNECT_TIMEOUT_S = 10
READ_TIMEOUT_S = 300  # a batch of 1000 takes well under a second; a busy server may queue it
MAX_WAIT_S = 120.0
RETRIED_STATUSES = {429, 500, 502, 503, 504}

# Exit statuses shared by `import` and `export` (docs/command.md).
EXIT_ROWS_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_SERVICE = 3
EXIT_INTERRUPTED = 130


class ServiceError(click.ClickException):
    """The service could not be reached, refused us, or answered what we cannot use."""

    exit_code = EXIT_SERVICE

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.code = code  # the service's error code, when it answered with one


class Interrupted(Exception):
    """The user asked to stop (Ctrl-C) while a request waited to be retried."""


def connection_options(func: Any) -> Any:
    """`--url`, `--token` and `--retries`, shared by `import` and `export`."""
    func = click.option("--retries", type=click.IntRange(0, 100), default=DEFAULT_RETRIES,
                        show_default=True,
                        help="Attempts after the first for 429, 5xx and lost connections.")(func)
    func = click.option("--token", envvar=TOKEN_ENV, show_envvar=True,
                        help="A token of the tenant (cs_...).")(func)
    func = click.option("--url", default=DEFAULT_URL, show_default=True,
                        help="Base URL of the running service.")(func)
    return func


@dataclass
class Service:
    """A running contactsync at `base_url`, called with `token`. Safe to share between
    threads: each thread gets its own HTTP session (connection pool)."""

    base_url: str
    token: str | None
    retries: int = DEFAULT_RETRIES
    stopping: threading.Event = field(default_factory=threading.Event)
    _local: threading.local = field(default_factory=threading.local)

    def __post_init__(self) -> None:
        self.base_url = self.base_url.rstrip("/")
        if not self.token:
            raise click.UsageError(f"No token: pass --token or set {TOKEN_ENV}.")

    def session(self) -> requests.Session:
        """This thread's session."""
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
            session.headers["Authorization"] = f"Bearer {self.token}"
            session.headers["User-Agent"] = "contactsync-command"
        return session

    def request(self, method: str, path: str, *, body: bytes | None = None,
                params: dict[str, Any] | None = None, headers: dict[str, str] | None = None) -> Any:
        """Send one request, retrying what waiting can fix; return the decoded JSON answer of a 2xx."""
        url = f"{self.base_url}{path}"
        all_headers = {**({"Content-Type": "application/json"} if body is not None else {}),
                       **(headers or {})}
        for attempt in range(self.retries + 1):
            try:
                response = self.session().request(method, url, data=body, params=params,
                                                  headers=all_headers,
                                                  timeout=(CONNECT_TIMEOUT_S, READ_TIMEOUT_S))
            except (requests.exceptions.InvalidURL, requests.exceptions.MissingSchema,
                    requests.exceptions.InvalidSchema):
                raise ServiceError(f"{self.base_url} is not a URL this command can call: "
                                   "give --url like http://127.0.0.1:8000") from None
            except requests.RequestException as exc:
                problem, wait = f"cannot reach {self.base_url}: {describe(exc)}", backoff(attempt)
            else:
                if 200 <= response.status_code < 300:
                    return decoded(response, self.base_url)
                code = error_code(response)
                if not (response.status_code in RETRIED_STATUSES
                        or code == "idempotency_key_in_progress"):
                    raise ServiceError(refusal(response, code, self.base_url), code)
                problem = f"{self.base_url} answered {response.status_code} {code or ''}".rstrip()
                wait = retry_after(response) or backoff(attempt)
            if attempt == self.retries:
                raise ServiceError(f"{problem} (gave up after {self.retries + 1} attempts)")
            click.echo(f"{problem}; retrying in {wait:.1f} s", err=True)
            if self.stopping.wait(wait):
                raise Interrupted()
        raise AssertionError("unreachable")


def backoff(attempt: int) -> float:
    """Seconds to wait before attempt `attempt + 1` when the server did not say."""
    return min(0.5 * 2 ** attempt, 30.0)


def retry_after(response: requests.Response) -> float | None:
    """The server's Retry-After in seconds (the delay form), bounded; None if absent."""
    try:
        return min(max(float(response.headers["Retry-After"]), 0.0), MAX_WAIT_S)
    except (KeyError, ValueError):
        return None


def error_code(response: requests.Response) -> str | None:
    """The `error.code` of contactsync's error envelope, if the answer is one."""
    try:
        return response.json()["error"]["code"]
    except (ValueError, KeyError, TypeError):
        return None


def decoded(response: requests.Response, base_url: str) -> Any:
    """A 2xx answer's JSON; a 2xx that is not JSON is not contactsync talking."""
    if response.status_code == 204:
        return None
    try:
        return response.json()
    except ValueError:
        raise ServiceError(f"{base_url} answered HTTP {response.status_code} with no JSON: "
                           "is this contactsync's URL?") from None


def refusal(response: requests.Response, code: str | None, base_url: str) -> str:
    """One line saying why the service refused, and what to do about it."""
    status = response.status_code
    if status == 401:
        return f"{base_url} refused the token (401 unauthorized): check --token or ${TOKEN_ENV}."
    if code == "insufficient_scope":
        needed = (response.json().get("error", {}).get("details") or {}).get("requiredScope")
        return f"the token lacks the scope {needed or 'this needs'} (403 insufficient_scope)."
    if code is None:
        return (f"{base_url} answered HTTP {status} to {response.request.method} "
                f"{response.request.path_url.split('?')[0]}, not contactsync's error: is this its URL?")
    message = response.json()["error"].get("message", "")
    return f"{base_url} answered {status} {code}: {message}"


def describe(exc: requests.RequestException) -> str:
    """A short reason for a failed connection, without urllib3's nested repr."""
    if isinstance(exc, requests.Timeout):
        return "timed out"
    text = str(exc)
    for needle, reason in (("Connection refused", "connection refused"),
                           ("Name or service not known", "unknown host"),
                           ("nodename nor servname", "unknown host"),
                           ("Temporary failure in name resolution", "unknown host"),
                           ("Connection reset", "connection reset"),
                           ("RemoteDisconnected", "the server closed the connection"),
                           ("No route to host", "no route to host")):
        if needle in text:
            return reason
    return text[:200]
