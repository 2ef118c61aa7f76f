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


@pytest.fixture
def loopback_runner(make_app):
    """A CLI runner whose config allows loopback webhook hosts, as the tests need."""
    return make_app(WEBHOOK_ALLOW_PRIVATE=True).test_cli_runner()


def stored_webhook(db) -> dict:
    return db.execute("SELECT webhook_url, webhook_secret, webhook_enabled FROM tenants"
                      " WHERE slug = 'acme'").fetchone()


def test_set_webhook_prints_a_secret_once_and_rotates_on_request(loopback_runner, tenant, db):
    first = loopback_runner.invoke(args=["tenants", "set-webhook", "acme", "http://127.0.0.1:9/a"])
    assert first.exit_code == 0, first.output
    secret = first.output.strip().splitlines()[-1]
    assert secret.startswith("whsec_")
    assert stored_webhook(db) == {"webhook_url": "http://127.0.0.1:9/a", "webhook_secret": secret,
                                  "webhook_enabled": True}

    moved = loopback_runner.invoke(args=["tenants", "set-webhook", "acme", "http://127.0.0.1:9/b"])
    assert moved.exit_code == 0 and "whsec_" not in moved.output
    assert stored_webhook(db)["webhook_secret"] == secret

    rotated = loopback_runner.invoke(args=["tenants", "set-webhook", "acme", "--rotate-secret"])
    assert rotated.exit_code == 0, rotated.output
    new_secret = rotated.output.strip().splitlines()[-1]
    assert new_secret.startswith("whsec_") and new_secret != secret
    assert stored_webhook(db) == {"webhook_url": "http://127.0.0.1:9/b", "webhook_secret": new_secret,
                                  "webhook_enabled": True}

    disabled = loopback_runner.invoke(args=["tenants", "set-webhook", "acme", "--disable"])
    assert disabled.exit_code == 0 and "whsec_" not in disabled.output
    assert stored_webhook(db) == {"webhook_url": "http://127.0.0.1:9/b", "webhook_secret": new_secret,
                                  "webhook_enabled": False}


@pytest.mark.parametrize("args", [
    ["tenants", "set-webhook", "acme", "http://127.0.0.1:9/hook"],   # loopback, no opt-in
    ["tenants", "set-webhook", "acme", "http://10.0.0.5/hook"],      # private, no opt-in
    ["tenants", "set-webhook", "acme", "ftp://example.com/hook"],
    ["tenants", "set-webhook", "acme"],                              # no URL yet
    ["tenants", "set-webhook", "acme", "--rotate-secret"],           # no URL yet
    ["tenants", "set-webhook", "nobody", "https://93.184.215.14/"],
    ["tenants", "set-webhook", "acme", "https://93.184.215.14/", "--disable"],
    ["workflows", "status", "nobody"],
])
def test_webhook_commands_refuse_with_a_message_and_change_nothing(runner, tenant, db, args):
    result = runner.invoke(args=args)
    assert result.exit_code != 0
    assert "Error" in result.output
    assert stored_webhook(db) == {"webhook_url": None, "webhook_secret": None, "webhook_enabled": False}


def test_workflows_status_counts_events_by_state(loopback_runner, runner, client, tenant, make_token,
                                                 make_tenant, db):
    loopback_runner.invoke(args=["tenants", "set-webhook", "acme", "http://127.0.0.1:9/hook"])
    make_tenant("globex")
    contacts = [{"externalId": f"c{i}"} for i in range(3)]
    post_bulk(client, auth_headers(make_token(tenant)), contacts, runWorkflow=True)
    db.execute("UPDATE webhook_events SET status = 'dead' WHERE id = (SELECT min(id) FROM webhook_events)")

    everyone = runner.invoke(args=["workflows", "status"])
    assert everyone.exit_code == 0, everyone.output
    lines = everyone.output.strip().splitlines()
    assert lines[1].split()[:4] == ["acme", "2", "0", "1"]
    assert lines[2].split()[:5] == ["globex", "0", "0", "0", "none"]
    one = runner.invoke(args=["workflows", "status", "acme"]).output.strip().splitlines()
    assert len(one) == 2 and one[1].startswith("acme")
