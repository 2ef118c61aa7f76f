"""Operator commands (DESIGN 2): init-db, tenants, tokens."""

import pytest

from tests.support import auth_headers, post_bulk


@pytest.fixture
def runner(app):
    return app.test_cli_runner()


def test_init_db_is_idempotent(runner, db):
    for _ in range(2):
        result = runner.invoke(args=["init-db"])
        assert result.exit_code == 0, result.output
    tables = {r["tablename"] for r in db.execute("SELECT tablename FROM pg_tables").fetchall()}
    assert {"tenants", "api_tokens", "contacts"} <= tables


def test_tenant_then_token_then_a_working_request(runner, client):
    assert runner.invoke(args=["tenants", "create", "acme", "--name", "Acme Inc"]).exit_code == 0
    result = runner.invoke(args=["tokens", "create", "acme", "--scope", "contacts:write"])
    assert result.exit_code == 0, result.output
    token = result.output.strip().splitlines()[-1]
    assert token.startswith("cs_")
    response = post_bulk(client, auth_headers(token), [{"externalId": "a"}])
    assert response.status_code == 200


@pytest.mark.parametrize("args", [
    ["tenants", "create", "Not A Slug"],
    ["tokens", "create", "nobody", "--scope", "contacts:write"],
    ["tokens", "create", "acme", "--scope", "contacts:delete"],
    ["tokens", "create", "acme"],
    ["tokens", "revoke", "cs_nothing"],
    ["tokens", "list", "nobody"],
])
def test_failures_exit_non_zero(runner, tenant, args):
    result = runner.invoke(args=args)
    assert result.exit_code != 0


def test_duplicate_tenant_fails(runner, tenant):
    result = runner.invoke(args=["tenants", "create", "acme"])
    assert result.exit_code != 0
    assert "exists" in result.output


def test_list_shows_prefixes_never_secrets_and_revoke_works(runner, client, tenant, make_token):
    token = make_token(tenant)
    listing = runner.invoke(args=["tokens", "list", "acme"]).output
    assert token[:11] in listing and token not in listing and "active" in listing
    assert runner.invoke(args=["tokens", "revoke", token[:11] + "..."]).exit_code == 0
    assert "revoked" in runner.invoke(args=["tokens", "list", "acme"]).output
    assert post_bulk(client, auth_headers(token), [{"externalId": "a"}]).status_code == 401
