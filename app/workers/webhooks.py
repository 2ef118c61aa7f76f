"""Webhook delivery the Standard Webhooks way: secrets, signatures, safe destinations, one POST.

A receiver verifies `webhook-signature` = `v1,` + base64 HMAC-SHA256 of
`{webhook-id}.{webhook-timestamp}.{body}`, keyed with the base64-decoded part
of its `whsec_` secret. Destinations must be http(s) and, unless the operator
opts in, resolve only to public addresses: a tenant must not be able to make
contactsync POST into the network it runs in. The check runs when the URL is
set and again at every delivery, and the connection goes to the very address
that was checked, so a DNS answer that changes in between cannot slip past.
"""

import base64
import contextlib
import hashlib
import hmac
import http.client
import ipaddress
import json
import secrets
import socket
import ssl
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from urllib.parse import urlsplit

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32
USER_AGENT = "contactsync-webhooks/1"


class DestinationRefused(ValueError):
    """A webhook URL that contactsync will not send to, with the reason for a person."""


@dataclass(frozen=True)
class Destination:
    """A checked webhook URL and the address to connect to."""

    scheme: str
    host: str
    port: int
    target: str  # path and query, as sent in the request line
    address: str


@dataclass(frozen=True)
class DeliveryResult:
    """How one attempt ended: `ok` for a 2xx, else a short reason."""

    ok: bool
    error: str | None = None


def new_secret() -> str:
    """A fresh signing secret: `whsec_` + base64 of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode("ascii")


def sign(secret: str, event_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` header value for one attempt."""
    key = base64.b64decode(secret.removeprefix(SECRET_PREFIX))
    signed = f"{event_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode("ascii")


def signed_headers(secret: str, event_id: str, body: bytes, now: float | None = None) -> dict[str, str]:
    """The headers of one attempt: the id is the event's, the timestamp this attempt's."""
    timestamp = int(time.time() if now is None else now)
    return {
        "content-type": "application/json",
        "user-agent": USER_AGENT,
        "webhook-id": event_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(secret, event_id, timestamp, body),
    }


def event_body(event_type: str, created_at_iso: str, tenant_slug: str, contact_json: str | None,
               changed_fields: list[str], batch_task_json: str | None = None) -> bytes:
    """The JSON body of an event (the same bytes on every attempt): a contact
    event carries the contact, a `batch_task.completed` event the task."""
    if batch_task_json is not None:
        data = {"tenant": tenant_slug, "batchTask": json.loads(batch_task_json)}
    else:
        data = {"tenant": tenant_slug, "contact": json.loads(contact_json or "null"),
                "changedFields": changed_fields}
    return json.dumps({"type": event_type, "timestamp": created_at_iso, "data": data},
                      separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def check_destination(url: str, allow_private: bool, timeout: float | None = None) -> Destination:
    """Parse and resolve a webhook URL (within `timeout` seconds); refuse what
    contactsync must not send to."""
    if not url.isascii() or any(ch.isspace() or not ch.isprintable() for ch in url):
        raise DestinationRefused("A webhook URL must be ASCII without spaces: percent-encode"
                                 " the path and write an international host name in punycode.")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise DestinationRefused("A webhook URL must be http:// or https:// with a host.")
    if parts.username is not None or parts.password is not None:
        raise DestinationRefused("A webhook URL must not carry a user name or password.")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise DestinationRefused("The webhook URL's port is not a number from 1 to 65535.") from None
    addresses = resolve(parts.hostname, port, timeout)
    if not allow_private:
        for address in addresses:
            if not is_public(ipaddress.ip_address(address.split("%")[0])):
                raise DestinationRefused(
                    f"{parts.hostname} resolves to {address}, a private, loopback, link-local or"
                    " otherwise non-public address (set CONTACTSYNC_WEBHOOK_ALLOW_PRIVATE=1 to allow it).")
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return Destination(parts.scheme, parts.hostname, port, target, addresses[0])


# getaddrinfo cannot be interrupted, so lookups run on these threads: a slow
# name server then costs an attempt its deadline, not a dispatcher its thread.
RESOLVERS = ThreadPoolExecutor(max_workers=8, thread_name_prefix="webhook-dns")


def resolve(host: str, port: int, timeout: float | None) -> list[str]:
    """The addresses `host` resolves to; TimeoutError when that takes over `timeout` seconds."""
    lookup = RESOLVERS.submit(socket.getaddrinfo, host, port, type=socket.SOCK_STREAM)
    try:
        infos = lookup.result(timeout=timeout)
    except (socket.gaierror, UnicodeError):
        raise DestinationRefused(f"The host {host!r} does not resolve.") from None
    return list(dict.fromkeys(info[4][0] for info in infos))


# IPv6 prefixes that carry an IPv4 address in their last 32 bits (RFC 6052 NAT64).
NAT64_PREFIXES = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))


def is_public(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """A unicast address on the public internet, also through any IPv4 address an
    IPv6 one embeds (mapped, 6to4, Teredo, NAT64), since a gateway may route it there."""
    if address.version == 6:
        embedded = [address.ipv4_mapped, address.sixtofour, *(address.teredo or ())]
        if any(address in prefix for prefix in NAT64_PREFIXES):
            embedded.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
        if address.is_site_local or any(ip is not None and not is_public(ip) for ip in embedded):
            return False
    return address.is_global and not address.is_multicast


class PinnedHTTPConnection(http.client.HTTPConnection):
    """HTTP to a checked address, with the URL's host in the Host header."""

    def __init__(self, destination: Destination, timeout: float) -> None:
        super().__init__(destination.host, destination.port, timeout=timeout)
        self.address = destination.address

    def connect(self) -> None:
        self.sock = socket.create_connection((self.address, self.port), self.timeout)


class PinnedHTTPSConnection(PinnedHTTPConnection):
    """HTTPS to a checked address; the certificate must match the URL's host."""

    tls = ssl.create_default_context()

    def connect(self) -> None:
        super().connect()
        self.sock = self.tls.wrap_socket(self.sock, server_hostname=self.host)


def post(destination: Destination, body: bytes, headers: dict[str, str], timeout: float) -> DeliveryResult:
    """POST once; the whole attempt (connect, send, answer) ends within `timeout` seconds."""
    connection_class = PinnedHTTPSConnection if destination.scheme == "https" else PinnedHTTPConnection
    connection = connection_class(destination, timeout)
    # Socket timeouts bound each read, not their sum: a receiver trickling
    # bytes is cut off at the deadline by shutting the socket down.
    expired = threading.Event()
    deadline = threading.Timer(timeout, cut_off, args=(connection, expired))
    deadline.start()
    try:
        connection.request("POST", destination.target, body=body, headers=headers)
        # The status decides; the body is not read (the connection is closed
        # after each attempt), so a slow body cannot hold the attempt up.
        response = connection.getresponse()
        if 200 <= response.status < 300:
            return DeliveryResult(ok=True)
        return DeliveryResult(ok=False, error=f"HTTP {response.status}")
    except (OSError, http.client.HTTPException, ValueError) as exc:  # ValueError: what http.client refuses
        if expired.is_set() or isinstance(exc, TimeoutError):
            return DeliveryResult(ok=False, error="timed out")
        return DeliveryResult(ok=False, error=f"{type(exc).__name__}: {exc}"[:300])
    finally:
        deadline.cancel()
        connection.close()


def cut_off(connection: http.client.HTTPConnection, expired: threading.Event) -> None:
    """At the deadline: note it, and unblock the connection's pending read or write."""
    expired.set()
    sock = connection.sock  # read once: the sending thread may be closing it
    if sock is not None:
        with contextlib.suppress(OSError):  # already closed: nothing to unblock
            sock.shutdown(socket.SHUT_RDWR)


def deliver(url: str, secret: str, event_id: str, body: bytes, *, timeout: float,
            allow_private: bool) -> DeliveryResult:
    """Check the destination again, sign this attempt and send it, all within `timeout`."""
    deadline = time.monotonic() + timeout
    try:
        destination = check_destination(url, allow_private, timeout)
    except DestinationRefused as exc:
        return DeliveryResult(ok=False, error=f"refused: {exc}")
    except TimeoutError:
        return DeliveryResult(ok=False, error="timed out (name lookup)")
    remaining = max(deadline - time.monotonic(), 0.1)
    return post(destination, body, signed_headers(secret, event_id, body), remaining)
