"""Bearer tokens, scopes and tenant isolation (DESIGN 3)."""

import hashlib

import pytest

from app.engine.tokens import hash_token, mint_token
from tests.support import BULK_URL, auth_headers, post_bulk, stored_contacts

ROW = [{"externalId": "crm-1", "email": "a@example.com"}]


def error_of(response) -> tuple[int, str]:
    return response.status_code, response.get_json()["error"]["code"]


@pytest.mark.parametrize("authorization", [
    None, "", "Bearer", "Bearer ", "Basic dXNlcjpwYXNz", "Token cs_abc", "Bearer not-ours",
    "Bearer cs_" + "x" * 500, "Bearer cs_unknowntokenunknowntokenunknowntoken1234",
    "Bearer cs_caf\u00e9",
])
def test_missing_malformed_or_unknown_token_is_401(client, tenant, authorization):
    headers = {"Authorization": authorization} if authorization is not None else {}
    response = post_bulk(client, headers, ROW)
    assert error_of(response) == (401, "unauthorized")
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_revoked_token_is_401(client, tenant, make_token, db):
    token = make_token(tenant)
    assert post_bulk(client, auth_headers(token), ROW).status_code == 200
    db.execute("UPDATE api_tokens SET revoked_at = now()")
    assert error_of(post_bulk(client, auth_headers(token), ROW)) == (401, "unauthorized")


def test_bearer_scheme_is_case_insensitive(client, tenant, make_token):
    token = make_token(tenant)
    assert post_bulk(client, {"Authorization": f"bearer {token}"}, ROW).status_code == 200


def test_missing_scope_is_403_and_names_the_scope(client, tenant, make_token, db):
    response = post_bulk(client, auth_headers(make_token(tenant, ("contacts:read",))), ROW)
    assert error_of(response) == (403, "insufficient_scope")
    assert response.get_json()["error"]["details"] == {"requiredScope": "contacts:write"}
    assert stored_contacts(db, tenant["id"]) == []


def test_tenant_header_must_name_the_tokens_tenant(client, make_tenant, make_token, db):
    acme, other = make_tenant("acme"), make_tenant("other")
    token = make_token(acme)
    response = post_bulk(client, auth_headers(token, **{"X-Tenant-Id": "other"}), ROW)
    assert error_of(response) == (403, "tenant_mismatch")
    assert stored_contacts(db, other["id"]) == [] and stored_contacts(db, acme["id"]) == []
    ok = post_bulk(client, auth_headers(token, **{"X-Tenant-Id": "acme"}), ROW)
    assert ok.status_code == 200


def test_same_identities_in_two_tenants_are_two_contacts(client, make_tenant, make_token, db):
    acme, other = make_tenant("acme"), make_tenant("other")
    post_bulk(client, auth_headers(make_token(acme)), [{**ROW[0], "firstName": "Acme"}])
    response = post_bulk(client, auth_headers(make_token(other)), [{**ROW[0], "firstName": "Other"}])
    assert response.get_json()["data"]["createdCount"] == 1  # not an update of acme's contact
    assert [c["first_name"] for c in stored_contacts(db, acme["id"])] == ["Acme"]
    assert [c["first_name"] for c in stored_contacts(db, other["id"])] == ["Other"]


def test_only_the_hash_of_a_token_is_stored(client, tenant, make_token, db):
    token = make_token(tenant)
    [row] = db.execute("SELECT prefix, token_hash FROM api_tokens").fetchall()
    assert bytes(row["token_hash"]) == hashlib.sha256(token.encode()).digest()
    assert token.startswith(row["prefix"]) and len(row["prefix"]) < 16
    dump = str(db.execute("SELECT * FROM api_tokens").fetchall())
    assert token not in dump and token[len(row["prefix"]):] not in dump


def test_minted_tokens_are_long_random_and_prefixed():
    tokens = {mint_token().secret for _ in range(100)}
    assert len(tokens) == 100
    assert all(t.startswith("cs_") and len(t) >= 43 for t in tokens)
    token = mint_token()
    assert token.token_hash == hash_token(token.secret)


def test_use_is_recorded_without_a_write_per_request(client, tenant, make_token, db):
    headers = auth_headers(make_token(tenant))
    post_bulk(client, headers, ROW)
    first = db.execute("SELECT last_used_at FROM api_tokens").fetchone()["last_used_at"]
    assert first is not None
    post_bulk(client, headers, ROW)
    assert db.execute("SELECT last_used_at FROM api_tokens").fetchone()["last_used_at"] == first


def test_routes_need_a_token_except_probes(client):
    assert client.get("/health").status_code == 200
    assert client.post(BULK_URL, json={"contacts": ROW}).status_code == 401
