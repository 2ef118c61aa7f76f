"""Signing, destinations and one POST (app/workers/webhooks.py), against a real receiver on 127.0.0.1."""

import base64
import re
import socket
import time
from pathlib import Path

import pytest

from app.workers import webhooks
from tests.receiver import Answer

OPERATIONS_DOC = Path(__file__).resolve().parent.parent / "docs" / "operations.md"


def documented_verifier():
    """docs/operations.md's verification snippet, run as a receiver would copy it."""
    blocks = re.findall(r"```python\n(.*?)```", OPERATIONS_DOC.read_text(encoding="utf-8"), re.S)
    [snippet] = [block for block in blocks if "def verify_webhook" in block]
    namespace: dict = {}
    exec(snippet, namespace)
    return namespace["verify_webhook"]


def test_a_secret_is_whsec_and_at_least_24_random_bytes():
    secrets = {webhooks.new_secret() for _ in range(20)}
    assert len(secrets) == 20
    for secret in secrets:
        assert secret.startswith("whsec_")
        assert len(base64.b64decode(secret.removeprefix("whsec_"), validate=True)) >= 24


def test_the_readme_snippet_verifies_our_signature_and_nothing_else():
    verify = documented_verifier()
    secret, body = webhooks.new_secret(), b'{"type":"contact.created"}'
    headers = webhooks.signed_headers(secret, "msg_1", body)
    assert verify(secret, headers, body)
    assert not verify(secret, headers, body + b" ")                          # body changed
    assert not verify(webhooks.new_secret(), headers, body)                  # another secret
    assert not verify(secret, {**headers, "webhook-id": "msg_2"}, body)      # another event
    old = webhooks.signed_headers(secret, "msg_1", body, now=time.time() - 3600)
    assert not verify(secret, old, body)                                     # a replay


def test_the_signature_is_the_documented_hmac():
    """Standard Webhooks' own example: secret, id, timestamp and body give this signature."""
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    body = b'{"test": 2432232314}'
    assert webhooks.sign(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body) == \
        "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


@pytest.mark.parametrize("url", [
    "ftp://example.com/hook",
    "file:///etc/passwd",
    "https:///no-host",
    "https://user:pw@example.com/hook",
    "https://example.com:99999/hook",
    "http://127.0.0.1:8000/hook",
    "http://localhost/hook",
    "http://10.1.2.3/hook",
    "http://192.168.0.10/hook",
    "http://169.254.169.254/latest/meta-data",
    "http://[::1]/hook",
    "http://[fe80::1]/hook",
    "http://0.0.0.0/hook",
    "http://100.64.0.1/hook",
    "http://224.0.0.1/hook",                 # multicast
    "http://[fec0::1]/hook",                 # site-local
    "http://[::ffff:10.0.0.5]/hook",         # IPv4-mapped private
    "http://[64:ff9b::a00:5]/hook",          # NAT64 of 10.0.0.5
    "http://[2002:7f00:1::]/hook",           # 6to4 of 127.0.0.1
    "http://example.com/caf\u00e9",          # not ASCII: http.client could not send it
    "http://example.com/a b",
    "http://example.com/\x7f",
])
def test_unsafe_destinations_are_refused(url):
    with pytest.raises(webhooks.DestinationRefused):
        webhooks.check_destination(url, allow_private=False)


def test_public_ipv6_is_taken_too():
    assert webhooks.check_destination("https://[2606:4700::1111]/h", allow_private=False).port == 443


def test_a_public_address_is_taken_and_loopback_only_with_the_opt_in():
    public = webhooks.check_destination("https://93.184.215.14/hooks?x=1", allow_private=False)
    assert (public.scheme, public.port, public.target, public.address) == \
        ("https", 443, "/hooks?x=1", "93.184.215.14")
    local = webhooks.check_destination("http://127.0.0.1:8080/h", allow_private=True)
    assert (local.address, local.port) == ("127.0.0.1", 8080)


def test_a_2xx_delivers_and_the_request_is_signed(receiver):
    secret, body = webhooks.new_secret(), b'{"type":"contact.created"}'
    result = webhooks.deliver(receiver.url, secret, "msg_1", body, timeout=5, allow_private=True)
    assert result.ok
    [request] = receiver.wait_for(1)
    assert request.path == "/hooks/contacts" and request.body == body
    assert request.headers["content-type"] == "application/json"
    assert request.headers["webhook-id"] == "msg_1"
    assert documented_verifier()(secret, request.headers, request.body)


@pytest.mark.parametrize("status", [500, 404, 302])
def test_any_other_status_fails_the_attempt(receiver, status):
    receiver.answer(Answer(status))
    result = webhooks.deliver(receiver.url, webhooks.new_secret(), "msg_1", b"{}", timeout=5,
                              allow_private=True)
    assert not result.ok and result.error == f"HTTP {status}"


def test_a_receiver_that_does_not_answer_in_time_fails_the_attempt(receiver):
    receiver.answer(Answer(200, delay=4))
    started = time.monotonic()
    result = webhooks.deliver(receiver.url, webhooks.new_secret(), "msg_1", b"{}", timeout=1,
                              allow_private=True)
    assert not result.ok and result.error == "timed out"
    assert time.monotonic() - started < 4  # it gave up rather than wait for the answer


def test_a_receiver_that_trickles_its_answer_is_cut_off_at_the_deadline(receiver):
    """Each byte comes well within the socket timeout; only the whole-attempt bound stops it."""
    receiver.answer(Answer(200, trickle=True))  # about 10 s for the status line and headers
    started = time.monotonic()
    result = webhooks.deliver(receiver.url, webhooks.new_secret(), "msg_1", b"{}", timeout=1,
                              allow_private=True)
    assert not result.ok and result.error == "timed out"
    assert time.monotonic() - started < 5


def test_nothing_listening_fails_the_attempt():
    with socket.socket() as sock:  # a port that was free a moment ago, and nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = webhooks.deliver(f"http://127.0.0.1:{port}/", webhooks.new_secret(), "msg_1", b"{}",
                              timeout=2, allow_private=True)
    assert not result.ok and "ConnectionRefused" in result.error


def test_delivery_checks_the_destination_again(receiver):
    result = webhooks.deliver(receiver.url, webhooks.new_secret(), "msg_1", b"{}", timeout=2,
                              allow_private=False)
    assert not result.ok and result.error.startswith("refused:")
    assert receiver.requests == []
