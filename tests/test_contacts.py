"""HTTP contract of the bulk doors (DESIGN 4.1-4.4), on a real PostgreSQL."""

import json

import pytest

from app.schemas.contacts import normalise_email
from tests.support import BULK_URL, auth_headers, post_bulk, stored_contacts

AUTOSEND_URL = "/v1/contacts/bulk-update"
MAILINGCORE_URL = "/contacts/bulk"


def data_of(response) -> dict:
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert body["success"] is True
    return body["data"]


def error_code(response) -> str:
    body = response.get_json()
    assert body["success"] is False
    return body["error"]["code"]


# --- the seed documents' own examples ---------------------------------------

def test_autosend_example_request_works_unchanged(client, headers, db, tenant):
    body = {
        "contacts": [{
            "email": "john.doe@example.com", "firstName": "John", "lastName": "Doe",
            "userId": "user_12345",
            "customFields": {"company": "Acme Corp", "role": "Developer", "plan": "premium"},
        }],
        "runWorkflow": False,
    }
    response = client.post(AUTOSEND_URL, json=body, headers=headers)
    data = data_of(response)
    assert {k: data[k] for k in ("successCount", "failedCount", "totalCount")} == \
        {"successCount": 1, "failedCount": 0, "totalCount": 1}
    [contact] = stored_contacts(db, tenant["id"])
    assert contact["external_id"] == "user_12345"
    assert contact["email"] == "john.doe@example.com"
    assert contact["attributes"] == {"company": "Acme Corp", "role": "Developer", "plan": "premium"}


def test_mailingcore_example_request_works_unchanged(client, headers, db, tenant):
    body = {"contacts": [
        {"email": "alice@example.com", "externalId": "crm-1", "locale": "en", "optIn": True,
         "attributes": {"firstName": "Alice"}},
        {"email": "bob@example.com", "externalId": "crm-2", "locale": "es", "optIn": True},
    ]}
    response = client.post(MAILINGCORE_URL, json=body,
                           headers={**headers, "X-Tenant-Id": tenant["slug"]})
    data = data_of(response)
    assert (data["createdCount"], data["updatedCount"], data["failedCount"]) == (2, 0, 0)
    stored = stored_contacts(db, tenant["id"])
    assert [(c["external_id"], c["locale"], c["opt_in"]) for c in stored] == \
        [("crm-1", "en", True), ("crm-2", "es", True)]


# --- matching rules (DESIGN 4.3) ----------------------------------------------

def test_rule_1_external_id_match_changes_email_and_keeps_the_contact(client, headers, db, tenant):
    data_of(post_bulk(client, headers, [{"externalId": "crm-1", "email": "old@example.com"}]))
    data = data_of(post_bulk(client, headers, [{"externalId": "crm-1", "email": "New@Example.com"}],
                             returnResults=True))
    assert data["updatedCount"] == 1
    [contact] = stored_contacts(db, tenant["id"])
    assert contact["email"] == "new@example.com"
    assert data["results"] == [{"index": 0, "id": contact["id"], "status": "updated",
                                "changedFields": ["email"]}]


def test_rule_1_email_held_by_another_contact_is_an_identity_conflict(client, headers, db, tenant):
    data = data_of(post_bulk(client, headers, [
        {"externalId": "crm-1", "email": "a@example.com"},
        {"externalId": "crm-2", "email": "b@example.com"},
    ], returnResults=True))
    first, second = (r["id"] for r in data["results"])
    data = data_of(post_bulk(client, headers, [{"externalId": "crm-1", "email": "B@example.com"}]))
    assert data["failedCount"] == 1
    [failure] = data["failures"]
    assert failure["code"] == "identity_conflict"
    assert failure["index"] == 0
    assert failure["externalId"] == "crm-1"
    assert failure["email"] == "B@example.com"  # as sent
    assert failure["conflict"] == {"externalIdContactId": first, "emailContactId": second,
                                   "externalIdRowIndex": None, "emailRowIndex": None,
                                   "usernameContactId": None, "usernameRowIndex": None}
    assert [c["email"] for c in stored_contacts(db, tenant["id"])] == ["a@example.com", "b@example.com"]


def test_rule_2_email_match_attaches_external_id(client, headers, db, tenant):
    data_of(post_bulk(client, headers, [{"email": "a@example.com"}]))
    data = data_of(post_bulk(client, headers, [{"email": "A@EXAMPLE.COM", "externalId": "crm-9"}]))
    assert data["updatedCount"] == 1
    [contact] = stored_contacts(db, tenant["id"])
    assert contact["external_id"] == "crm-9"


def test_rule_2_email_match_with_another_external_id_is_a_conflict(client, headers, db, tenant):
    data = data_of(post_bulk(client, headers, [{"email": "a@example.com", "externalId": "crm-1"}],
                             returnResults=True))
    held_by = data["results"][0]["id"]
    data = data_of(post_bulk(client, headers, [{"email": "a@example.com", "externalId": "crm-2"}]))
    [failure] = data["failures"]
    assert failure["code"] == "identity_conflict"
    assert failure["conflict"] == {"externalIdContactId": None, "emailContactId": held_by,
                                   "externalIdRowIndex": None, "emailRowIndex": None,
                                   "usernameContactId": None, "usernameRowIndex": None}
    assert len(stored_contacts(db, tenant["id"])) == 1


def test_rule_3_unknown_identities_create_a_contact(client, headers, db, tenant):
    data = data_of(post_bulk(client, headers, [{"externalId": "crm-1"}, {"email": "x@example.com"}]))
    assert data["createdCount"] == 2
    assert len(stored_contacts(db, tenant["id"])) == 2


def test_later_rows_see_earlier_rows_of_the_same_request(client, headers, db, tenant):
    data = data_of(post_bulk(client, headers, [
        {"externalId": "crm-1", "email": "a@example.com", "firstName": "A"},
        {"email": "a@example.com", "lastName": "Liddell"},
        {"externalId": "crm-1", "firstName": "A"},
    ], returnResults=True))
    assert [r["status"] for r in data["results"]] == ["created", "updated", "unchanged"]
    assert len({r["id"] for r in data["results"]}) == 1
    [contact] = stored_contacts(db, tenant["id"])
    assert (contact["first_name"], contact["last_name"]) == ("A", "Liddell")


def test_an_email_can_pass_from_one_contact_to_another_in_one_batch(client, headers, db, tenant):
    data_of(post_bulk(client, headers, [
        {"externalId": "a", "email": "one@example.com"},
        {"externalId": "b", "email": "two@example.com"},
    ]))
    data = data_of(post_bulk(client, headers, [
        {"externalId": "a", "email": "three@example.com"},
        {"externalId": "b", "email": "one@example.com"},
        {"externalId": "c", "email": "two@example.com"},
    ]))
    assert (data["updatedCount"], data["createdCount"], data["failedCount"]) == (2, 1, 0)
    stored = {c["external_id"]: c["email"] for c in stored_contacts(db, tenant["id"])}
    assert stored == {"a": "three@example.com", "b": "one@example.com", "c": "two@example.com"}


def test_an_external_id_attached_then_an_email_moved_in_one_batch(client, headers, db, tenant):
    """A contact gains its externalId (rule 2) and later moves its email (rule 1)
    while another contact takes the old email: one batch, no identity lost."""
    data_of(post_bulk(client, headers, [{"email": "y@ex.com"}, {"externalId": "b", "email": "w@ex.com"}]))
    data = data_of(post_bulk(client, headers, [
        {"externalId": "b", "email": "z@ex.com"},
        {"externalId": "a", "email": "y@ex.com"},
        {"externalId": "a", "email": "w@ex.com"},
    ]))
    assert data["failedCount"] == 0
    stored = {c["external_id"]: c["email"] for c in stored_contacts(db, tenant["id"])}
    assert stored == {"a": "w@ex.com", "b": "z@ex.com"}


def test_emails_can_move_in_a_cycle_within_one_batch(client, headers, db, tenant):
    data_of(post_bulk(client, headers, [{"externalId": "a", "email": "one@ex.com"},
                                        {"externalId": "b", "email": "two@ex.com"}]))
    data = data_of(post_bulk(client, headers, [
        {"externalId": "a", "email": "tmp@ex.com"},
        {"externalId": "b", "email": "one@ex.com"},
        {"externalId": "a", "email": "two@ex.com"},
    ]))
    assert data["updatedCount"] == 3
    stored = {c["external_id"]: c["email"] for c in stored_contacts(db, tenant["id"])}
    assert stored == {"a": "two@ex.com", "b": "one@ex.com"}


# --- field semantics -----------------------------------------------------------

def test_absent_fields_stay_null_clears_and_attributes_merge(client, headers, db, tenant):
    data_of(post_bulk(client, headers, [{
        "externalId": "crm-1", "firstName": "Alice", "lastName": "Liddell", "phone": "+1 555 0100",
        "locale": "en", "optIn": True, "attributes": {"plan": "pro", "seats": 5, "trial": True}}]))
    data = data_of(post_bulk(client, headers, [{
        "externalId": "crm-1", "lastName": None, "optIn": False,
        "attributes": {"seats": 6, "trial": None, "region": "eu"}}]))
    assert data["updatedCount"] == 1
    [c] = stored_contacts(db, tenant["id"])
    assert (c["first_name"], c["last_name"], c["phone"], c["locale"], c["opt_in"]) == \
        ("Alice", None, "+1 555 0100", "en", False)
    assert c["attributes"] == {"plan": "pro", "seats": 6, "region": "eu"}


def test_unchanged_rows_write_nothing(client, headers, db, tenant):
    row = {"externalId": "crm-1", "email": "a@example.com", "optIn": False,
           "attributes": {"seats": 1, "flag": True}}
    data_of(post_bulk(client, headers, [row]))
    [before] = stored_contacts(db, tenant["id"])
    variant = {**row, "email": "  A@Example.COM\u00a0", "attributes": {"seats": 1}}
    data = data_of(post_bulk(client, headers, [variant]))
    assert data["unchangedCount"] == 1 and data["updatedCount"] == 0
    [after] = stored_contacts(db, tenant["id"])
    assert after["updated_at"] == before["updated_at"]


def test_a_resync_does_not_judge_stored_addresses_again(client, headers):
    rows = [{"externalId": f"k{i}", "email": f"Known{i}@Example.com"} for i in range(5)]
    assert data_of(post_bulk(client, headers, rows))["createdCount"] == 5
    normalise_email.cache_clear()
    resync = [{**row, "email": f" {row['email'].upper()}\u00a0"} for row in rows]
    assert data_of(post_bulk(client, headers, resync))["unchangedCount"] == 5
    assert normalise_email.cache_info().misses == 0  # email-validator was not asked again
    fresh = data_of(post_bulk(client, headers, [{"externalId": "k9", "email": "bad@@example.com"}]))
    assert fresh["failedCount"] == 1 and normalise_email.cache_info().misses == 1


@pytest.mark.parametrize("sent", ["JOS\u00c9@EXAMPLE.COM", "jose\u0301@example.com"])
def test_a_row_whose_address_only_normalising_makes_the_stored_one_finds_its_contact(
        client, headers, db, tenant, sent):
    """The read before validation looks for addresses as sent (trimmed,
    lower-cased ASCII); one that email-validator rewrites (a non-ASCII
    address in capitals, or decomposed) is looked for after validation, so
    the row updates its contact rather than making a second one."""
    assert data_of(post_bulk(client, headers, [{"email": "jos\u00e9@example.com"}]))["createdCount"] == 1
    data = data_of(post_bulk(client, headers, [{"email": sent, "firstName": "Jos\u00e9"}]))
    assert (data["createdCount"], data["updatedCount"], data["failedCount"]) == (0, 1, 0)
    [contact] = stored_contacts(db, tenant["id"])
    assert (contact["email"], contact["first_name"]) == ("jos\u00e9@example.com", "Jos\u00e9")


@pytest.mark.parametrize("stored, sent", [
    (True, 1),        # true and 1 are equal in Python, not in JSON
    (1, 1.5),
    ("1", 1),
])
def test_attribute_type_changes_are_updates(client, headers, db, tenant, stored, sent):
    data_of(post_bulk(client, headers, [{"externalId": "x", "attributes": {"k": stored}}]))
    data = data_of(post_bulk(client, headers, [{"externalId": "x", "attributes": {"k": sent}}]))
    assert data["updatedCount"] == 1
    assert stored_contacts(db, tenant["id"])[0]["attributes"] == {"k": sent}


@pytest.mark.parametrize("value", [1e16, 1.5e300, 10**20, 2.0])
def test_numbers_that_jsonb_stores_differently_are_still_unchanged(client, headers, value):
    """jsonb gives 1e16 back as an integer; resending it is not a change."""
    row = {"externalId": "x", "attributes": {"n": value}}
    data_of(post_bulk(client, headers, [row]))
    assert data_of(post_bulk(client, headers, [row]))["unchangedCount"] == 1


def test_every_attribute_error_is_reported(client, headers):
    attributes = {f"bad key {i}": 1 for i in range(40)}
    data = data_of(post_bulk(client, headers, [{"externalId": "x", "attributes": attributes}]))
    assert len(data["failures"][0]["errors"]["attributes"]) == 40


def test_invalid_rows_are_reported_and_valid_rows_written(client, headers, db, tenant):
    data = data_of(post_bulk(client, headers, [
        {"externalId": "ok-1"},
        {"email": "bad@", "optIn": "yes", "surname": "x"},
        "not an object",
        {"externalId": "ok-2"},
    ], returnResults=True))
    assert (data["totalCount"], data["successCount"], data["failedCount"]) == (4, 2, 2)
    assert [f["index"] for f in data["failures"]] == [1, 2]
    bad = data["failures"][0]
    assert bad["code"] == "invalid_contact"
    assert set(bad["errors"]) == {"email", "optIn", "surname"}  # all errors, not the first
    assert bad["email"] == "bad@"
    assert [r["status"] for r in data["results"]] == ["created", "failed", "failed", "created"]
    assert [c["external_id"] for c in stored_contacts(db, tenant["id"])] == ["ok-1", "ok-2"]


def test_counts_add_up(client, headers):
    data_of(post_bulk(client, headers, [{"externalId": "a"}, {"externalId": "b"}]))
    data = data_of(post_bulk(client, headers, [
        {"externalId": "a"}, {"externalId": "b", "firstName": "B"}, {"externalId": "c"},
        {"email": "nope"}]))
    assert (data["createdCount"], data["updatedCount"], data["unchangedCount"],
            data["failedCount"]) == (1, 1, 1, 1)
    assert data["successCount"] == data["createdCount"] + data["updatedCount"] + data["unchangedCount"]
    assert "results" not in data


# --- all-or-nothing ---------------------------------------------------------------

@pytest.mark.parametrize("url, options", [(BULK_URL, {"atomic": True}), (MAILINGCORE_URL, {})])
def test_atomic_batch_with_an_invalid_row_writes_nothing(client, headers, db, tenant, url, options):
    response = post_bulk(client, headers, [{"externalId": "ok"}, {"email": "bad@"}], url=url,
                         **options)
    assert response.status_code == 400
    assert error_code(response) == "validation_failed"
    failures = response.get_json()["error"]["details"]["failures"]
    assert [(f["index"], f["code"]) for f in failures] == [(1, "invalid_contact")]
    assert stored_contacts(db, tenant["id"]) == []


@pytest.mark.parametrize("url, options", [(BULK_URL, {"atomic": True}), (MAILINGCORE_URL, {})])
def test_atomic_batch_with_a_conflict_writes_nothing(client, headers, db, tenant, url, options):
    data_of(post_bulk(client, headers, [{"externalId": "a", "email": "a@example.com"}]))
    response = post_bulk(client, headers, [
        {"externalId": "new", "firstName": "N"},
        {"externalId": "b", "email": "a@example.com"},
    ], url=url, **options)
    assert response.status_code == 400
    assert error_code(response) == "validation_failed"
    [failure] = response.get_json()["error"]["details"]["failures"]
    assert (failure["index"], failure["code"]) == (1, "identity_conflict")
    assert [c["external_id"] for c in stored_contacts(db, tenant["id"])] == ["a"]


def test_atomic_failures_list_invalid_rows_and_conflicts_together(client, headers, db, tenant):
    response = post_bulk(client, headers, [
        {"externalId": "n", "email": "e1@ex.com"},
        {"externalId": "m", "email": "e2@ex.com"},
        {"email": "bad@"},
        {"externalId": "n", "email": "e2@ex.com"},
    ], atomic=True)
    assert response.status_code == 400
    failures = response.get_json()["error"]["details"]["failures"]
    assert [(f["index"], f["code"]) for f in failures] == \
        [(2, "invalid_contact"), (3, "identity_conflict")]
    # neither contact was written, so the conflict names the rows that made them
    assert failures[1]["conflict"] == {"externalIdContactId": None, "emailContactId": None,
                                       "externalIdRowIndex": 0, "emailRowIndex": 1,
                                       "usernameContactId": None, "usernameRowIndex": None}
    assert stored_contacts(db, tenant["id"]) == []


# --- whole-request errors (DESIGN 4.4 table) ------------------------------------------

@pytest.mark.parametrize("body", [
    b"{not json", b'{"contacts": [', b"\xff\xfe{}", b'{"contacts": [{"optIn": NaN}]}',
    b"[" * 100_000 + b"]" * 100_000, b'{"contacts": [{"attributes": {"n": 1' + b"0" * 5000 + b"}}]}",
])
def test_invalid_json(client, headers, body):
    response = client.post(BULK_URL, data=body, headers=headers, content_type="application/json")
    assert response.status_code == 400
    assert error_code(response) == "invalid_json"


@pytest.mark.parametrize("body", [
    [], "contacts", 42, None, {}, {"contacts": {"externalId": "a"}}, {"contacts": "a"},
    {"contacts": [{"externalId": "a"}], "runWorkflow": "yes"},
    {"contacts": [{"externalId": "a"}], "atomic": 1},
    {"contacts": [{"externalId": "a"}], "returnResults": None},
    {"contacts": [{"externalId": "a"}], "extra": True},
])
def test_invalid_request(client, headers, db, tenant, body):
    response = client.post(BULK_URL, data=json.dumps(body), headers=headers,
                           content_type="application/json")
    assert response.status_code == 400
    assert error_code(response) == "invalid_request"
    assert stored_contacts(db, tenant["id"]) == []


@pytest.mark.parametrize("url, size", [
    (BULK_URL, 0), (BULK_URL, 1001), (AUTOSEND_URL, 0), (AUTOSEND_URL, 101), (MAILINGCORE_URL, 1001),
])
def test_batch_size(client, headers, db, tenant, url, size):
    contacts = [{"externalId": f"c{i}"} for i in range(size)]
    response = post_bulk(client, headers, contacts, url=url)
    assert response.status_code == 400
    assert error_code(response) == "batch_size"
    assert stored_contacts(db, tenant["id"]) == []


@pytest.mark.parametrize("url, size", [(BULK_URL, 1000), (AUTOSEND_URL, 100), (MAILINGCORE_URL, 1000)])
def test_largest_batch_of_each_door_is_accepted(client, headers, url, size):
    contacts = [{"externalId": f"c{i}", "email": f"c{i}@example.com"} for i in range(size)]
    assert data_of(post_bulk(client, headers, contacts, url=url))["createdCount"] == size


def test_bulk_max_is_configurable(make_app, headers):
    client = make_app(BULK_MAX=2).test_client()
    response = post_bulk(client, headers, [{"externalId": "a"}] * 3)
    assert error_code(response) == "batch_size"


def test_payload_too_large(make_app, headers, db, tenant):
    client = make_app(MAX_BODY_BYTES=2048).test_client()
    contacts = [{"externalId": f"c{i}", "firstName": "x" * 100} for i in range(30)]
    response = post_bulk(client, headers, contacts)
    assert response.status_code == 413
    assert error_code(response) == "payload_too_large"
    assert stored_contacts(db, tenant["id"]) == []


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
def test_unsupported_media_type(client, headers, content_type):
    extra = {"Content-Type": content_type} if content_type else {}
    response = client.post(BULK_URL, data='{"contacts": [{"externalId": "a"}]}',
                           headers={**headers, **extra})
    assert response.status_code == 415
    assert error_code(response) == "unsupported_media_type"


def test_json_with_charset_parameter_is_accepted(client, headers):
    response = client.post(BULK_URL, data='{"contacts": [{"externalId": "a"}]}',
                           headers={**headers, "Content-Type": "application/json; charset=utf-8"})
    assert data_of(response)["createdCount"] == 1


def test_checks_run_in_the_documented_order(make_app, make_token, tenant):
    client = make_app(MAX_BODY_BYTES=1024).test_client()
    reader = {"Authorization": f"Bearer {make_token(tenant, ('contacts:read',))}"}
    writer = {"Authorization": f"Bearer {make_token(tenant, ('contacts:write',))}"}
    big = "x" * 5000
    # no token beats everything else
    assert client.post(BULK_URL, data=big, content_type="text/plain").status_code == 401
    # tenant mismatch beats a missing scope
    assert client.post(BULK_URL, data=big, content_type="text/plain",
                       headers={**reader, "X-Tenant-Id": "other"}).status_code == 403
    assert error_code(client.post(BULK_URL, data=big, content_type="text/plain",
                                  headers={**reader, "X-Tenant-Id": "other"})) == "tenant_mismatch"
    # scope beats content type
    assert error_code(client.post(BULK_URL, data=big, content_type="text/plain",
                                  headers=reader)) == "insufficient_scope"
    # content type beats size, size beats JSON
    assert client.post(BULK_URL, data=big, content_type="text/plain", headers=writer).status_code == 415
    assert client.post(BULK_URL, data=big, content_type="application/json",
                       headers=writer).status_code == 413
    assert client.post(BULK_URL, data="{", content_type="application/json",
                       headers=writer).status_code == 400


def test_unknown_route_and_wrong_method(client, headers):
    response = client.get("/nowhere", headers=headers)
    assert (response.status_code, error_code(response)) == (404, "not_found")
    response = client.get(BULK_URL, headers=headers)
    assert (response.status_code, error_code(response)) == (405, "method_not_allowed")
    assert "POST" in response.headers["Allow"]


def test_health_and_ready(client):
    assert client.get("/health").get_json() == {"status": "ok"}
    assert client.get("/ready").get_json() == {"status": "ready"}


# --- the whole contact (DESIGN 8) ---------------------------------------------

WHOLE = {"externalId": "crm-1", "email": "Jane@Example.com", "username": " Jane_Doe ",
         "firstName": "Jane", "lastName": "Doe", "name": "Jane D.", "phone": "+1 555 0100",
         "locale": "en", "optIn": True, "status": "optout", "ownerId": "owner-7",
         "avatarUrl": "https://img.example.com/jane.png", "attributes": {"plan": "pro"},
         "tags": {"add": ["VIP", "trial"]}, "folders": {"add": ["Hot Prospects"]},
         "companies": [{"companyId": "6", "name": "Blue Sun"}, {"companyId": "2"}]}


def test_the_native_door_takes_and_reads_back_the_whole_contact(client, headers):
    data = data_of(post_bulk(client, headers, [WHOLE], returnResults=True))
    [result] = data["results"]
    contact = client.get(f"/contacts/{result['id']}", headers=headers).get_json()["data"]
    assert {k: contact[k] for k in ("externalId", "email", "username", "name", "status", "ownerId",
                                    "avatarUrl")} == {
        "externalId": "crm-1", "email": "jane@example.com", "username": "jane_doe", "name": "Jane D.",
        "status": "optout", "ownerId": "owner-7", "avatarUrl": "https://img.example.com/jane.png"}
    assert [t["name"] for t in contact["tags"]] == ["trial", "VIP"]  # sorted by id: created in name order
    assert [t["id"] for t in contact["tags"]] == sorted(t["id"] for t in contact["tags"])
    assert [f["name"] for f in contact["folders"]] == ["Hot Prospects"]
    assert contact["companies"] == [{"companyId": "2", "name": None}, {"companyId": "6", "name": "Blue Sun"}]
    by_username = client.get("/contacts", query_string={"username": "JANE_DOE"}, headers=headers)
    assert [c["id"] for c in by_username.get_json()["data"]] == [result["id"]]


@pytest.mark.parametrize("resend, status", [
    ({"tags": {"add": ["vip"]}}, "unchanged"),  # has it already, in another case
    ({"tags": {"remove": ["cold"]}}, "unchanged"),  # never had it
    ({"companies": [{"companyId": "6", "name": "Blue Sun"}]}, "unchanged"),
    ({"companies": [{"companyId": "6"}]}, "unchanged"),
    ({"folders": {"add": ["hot prospects"]}}, "unchanged"),
    ({"tags": {"add": ["new"]}}, "updated"),
    ({"tags": {"remove": ["Trial"]}}, "updated"),
    ({"folders": {"remove": ["Hot Prospects"]}}, "updated"),
    ({"companies": [{"companyId": "6", "name": "Blue Moon"}]}, "updated"),  # a rename
    ({"companies": [{"companyId": "6", "remove": True}]}, "updated"),
    ({"companies": [{"companyId": "9"}]}, "updated"),
])
def test_relations_change_the_contact_exactly_when_they_change(client, headers, db, tenant, resend, status):
    data_of(post_bulk(client, headers, [WHOLE]))
    [before] = stored_contacts(db, tenant["id"])
    data = data_of(post_bulk(client, headers, [{"externalId": "crm-1", **resend}], returnResults=True))
    assert data["results"][0]["status"] == status
    [after] = stored_contacts(db, tenant["id"])
    assert (after["updated_at"] != before["updated_at"]) is (status == "updated")


def test_username_is_the_third_identity(client, headers, db, tenant):
    data_of(post_bulk(client, headers, [{"username": "Jane", "firstName": "J"}]))
    # no externalId or email holder: matched by username, and both are attached
    data = data_of(post_bulk(client, headers, [{"externalId": "crm-9", "email": "j@example.com",
                                                "username": " JANE "}], returnResults=True))
    assert data["results"][0]["status"] == "updated"
    [contact] = stored_contacts(db, tenant["id"])
    assert (contact["external_id"], contact["email"], contact["username"]) == \
        ("crm-9", "j@example.com", "jane")
    data_of(post_bulk(client, headers, [{"username": "joe"}]))
    # externalId matches the first contact, whose username the row would change to joe's
    data = data_of(post_bulk(client, headers, [{"externalId": "crm-9", "username": "joe"}]))
    [failure] = data["failures"]
    joe = next(c for c in stored_contacts(db, tenant["id"]) if c["username"] == "joe")
    assert failure["code"] == "identity_conflict"
    assert failure["conflict"]["usernameContactId"] == joe["id"]
    assert failure["conflict"]["externalIdContactId"] == contact["id"]


def test_bad_whole_contact_fields_fail_their_row_with_every_error_named(client, headers, db, tenant):
    bad = {"email": "bad-row@example.com", "status": "vip", "avatarUrl": "javascript:alert(1)",
           "tags": {"add": ["", "x" * 101]}, "companies": [{"companyId": "c" * 256}], "colour": "red",
           "folders": {"add": [f"f{i}" for i in range(101)]}}
    data = data_of(post_bulk(client, headers, [bad, {"email": "good@example.com", "tags": {"add": ["ok"]}}]))
    assert (data["createdCount"], data["failedCount"]) == (1, 1)
    [failure] = data["failures"]
    assert set(failure["errors"]) == {"status", "avatarUrl", "tags", "companies", "colour", "folders"}
    assert [c["email"] for c in stored_contacts(db, tenant["id"])] == ["good@example.com"]
    assert db.execute("SELECT name FROM tags").fetchall() == [{"name": "ok"}]


def test_catalogues_belong_to_their_tenant(client, headers, db, tenant, make_tenant, make_token):
    other = auth_headers(make_token(make_tenant("globex")))
    data_of(post_bulk(client, headers, [{"email": "a@example.com", "tags": {"add": ["vip"]},
                                         "companies": [{"companyId": "6", "name": "Blue Sun"}]}]))
    data_of(post_bulk(client, other, [{"email": "a@example.com", "tags": {"add": ["VIP"]},
                                       "companies": [{"companyId": "6", "name": "Globex Six"}]}]))
    for who, name, company in ((headers, "vip", "Blue Sun"), (other, "VIP", "Globex Six")):
        assert [t["name"] for t in client.get("/tags", headers=who).get_json()["data"]] == [name]
        assert client.get("/companies", headers=who).get_json()["data"] == \
            [{"companyId": "6", "name": company}]
    assert db.execute("SELECT count(*) AS n FROM tags").fetchone()["n"] == 2
    # links join contacts and entries of one tenant only (both keys carry tenant_id)
    assert db.execute("SELECT count(*) AS n FROM contact_tags l JOIN tags t ON t.id = l.tag_id"
                      " WHERE t.tenant_id <> l.tenant_id").fetchone()["n"] == 0


def test_tags_and_folders_are_made_once_whatever_the_case(client, headers):
    first = client.post("/tags", json={"name": " Hot Prospects "}, headers=headers)
    again = client.post("/tags", json={"name": "hot prospects"}, headers=headers)
    assert (first.status_code, again.status_code) == (201, 200)
    assert first.get_json()["data"] == again.get_json()["data"] == {"id": first.get_json()["data"]["id"],
                                                                   "name": "Hot Prospects"}
    assert client.post("/folders", json={"name": "March Leads"}, headers=headers).status_code == 201
    bad = client.post("/folders", json={"name": ""}, headers=headers)
    assert (bad.status_code, error_code(bad)) == (400, "validation_failed")
    page = client.get("/tags", query_string={"limit": 1}, headers=headers).get_json()
    assert (len(page["data"]), page["hasMore"], page["nextAfter"]) == (1, False, None)


def test_each_updated_row_names_what_it_changed_in_the_documented_order(client, headers):
    post_bulk(client, headers, [{"externalId": "crm-1", "email": "a@example.com", "firstName": "A"}])
    data = data_of(post_bulk(client, headers, [
        {"externalId": "crm-1", "firstName": "B", "attributes": {"plan": "pro"}, "email": "b@example.com"},
        {"externalId": "crm-1", "tags": {"add": ["vip"], "remove": []}, "firstName": "B"},
        {"externalId": "crm-1", "firstName": "B"},
        {"externalId": "crm-2"},
    ], returnResults=True))
    assert [r.get("changedFields") for r in data["results"]] == [
        ["email", "firstName", "attributes"], ["tags"], None, None]
    assert [r["status"] for r in data["results"]] == ["updated", "updated", "unchanged", "created"]


def test_a_dry_run_answers_what_the_write_would_and_writes_nothing(client, headers, db, tenant):
    post_bulk(client, headers, [{"externalId": "crm-1", "email": "a@example.com", "firstName": "A"}])
    before = stored_contacts(db, tenant["id"])
    batch = [{"externalId": "crm-1", "firstName": "B", "tags": {"add": ["vip"], "remove": []}},
             {"externalId": "crm-2", "email": "a@example.com"},  # conflict
             {"email": "not-an-address"},
             {"externalId": "crm-3", "email": "c@example.com"}]
    dry = data_of(post_bulk(client, headers, batch, returnResults=True, dryRun=True, runWorkflow=True))
    assert stored_contacts(db, tenant["id"]) == before
    assert db.execute("SELECT count(*) AS n FROM tags").fetchone()["n"] == 0
    real = data_of(post_bulk(client, headers, batch, returnResults=True, runWorkflow=True))
    assert dry.pop("dryRun") is True and "dryRun" not in real
    created_id = real["results"][3].pop("id")
    assert dry["results"][3].pop("id") is None and created_id is not None  # no id before it exists
    assert dry == real


def test_a_dry_run_takes_no_idempotency_key_and_no_batch_task(client, headers):
    keyed = client.post("/contacts/bulk-update", json={"contacts": [{"externalId": "x"}], "dryRun": True},
                        headers={**headers, "Idempotency-Key": "k-1"})
    assert keyed.status_code == 400 and "Idempotency-Key" in keyed.get_json()["error"]["details"]
    queued = client.post("/contacts/bulk-update", json={"contacts": [{"externalId": "x"}], "dryRun": True},
                         headers={**headers, "Prefer": "respond-async"})
    assert queued.status_code == 400 and "dryRun" in queued.get_json()["error"]["details"]


def test_a_dry_run_of_one_contact_says_what_would_change(client, headers, db, tenant):
    client.post("/contacts", json={"externalId": "crm-1", "firstName": "A"}, headers=headers)
    before = stored_contacts(db, tenant["id"])
    dry = client.post("/contacts", json={"externalId": "crm-1", "firstName": "B", "dryRun": True},
                      headers=headers)
    assert dry.status_code == 200
    assert dry.get_json()["data"] == {"status": "updated", "changedFields": ["firstName"], "contact": None,
                                      "dryRun": True}
    new = client.post("/contacts", json={"externalId": "crm-9", "dryRun": True}, headers=headers)
    assert new.status_code == 200 and new.get_json()["data"]["status"] == "created"
    assert stored_contacts(db, tenant["id"]) == before
    real = client.post("/contacts", json={"externalId": "crm-1", "firstName": "B"}, headers=headers)
    assert real.get_json()["data"]["changedFields"] == ["firstName"]


def test_a_dry_run_waits_for_no_row_lock(client, headers, database_url):
    """A writer holds a contact's row lock: a dry run that would update the
    contact answers at once (a real write would wait for the lock)."""
    import psycopg

    post_bulk(client, headers, [{"externalId": "held", "firstName": "A"}])
    with psycopg.connect(database_url) as blocker:
        blocker.execute("SELECT 1 FROM contacts WHERE external_id = 'held' FOR UPDATE")
        dry = data_of(post_bulk(client, headers, [{"externalId": "held", "firstName": "B"}],
                                dryRun=True, returnResults=True))
        assert dry["results"][0]["changedFields"] == ["firstName"]


def test_a_row_older_than_what_its_contact_received_is_stale(client, headers, db, tenant):
    post_bulk(client, headers, [{"externalId": "crm-1", "firstName": "New",
                                 "sourceUpdatedAt": "2026-12-04T10:00:00+01:00"}])
    data = data_of(post_bulk(client, headers, [
        {"externalId": "crm-1", "firstName": "Old", "sourceUpdatedAt": "2026-12-04T08:59:59Z"},
        {"externalId": "crm-1", "firstName": "Same time", "sourceUpdatedAt": "2026-12-04T09:00:00Z"},
        {"externalId": "crm-1", "firstName": "Out of order", "sourceUpdatedAt": "2026-12-04T08:00:00Z"},
        {"externalId": "crm-1", "firstName": "No time"},
    ], returnResults=True, runWorkflow=True))
    assert [r["status"] for r in data["results"]] == ["stale", "updated", "stale", "updated"]
    assert (data["staleCount"], data["failedCount"], data["successCount"]) == (2, 0, 4)
    [contact] = stored_contacts(db, tenant["id"])
    assert contact["first_name"] == "No time"
    assert contact["source_updated_at"].isoformat() == "2026-12-04T09:00:00+00:00"
    read = client.get(f"/contacts/{contact['id']}", headers=headers).get_json()["data"]
    assert read["sourceUpdatedAt"] == "2026-12-04T09:00:00.000000Z"


def test_a_source_time_needs_a_date_a_time_and_a_zone(client, headers):
    data = data_of(post_bulk(client, headers, [
        {"externalId": "a", "sourceUpdatedAt": "2026-12-04T10:00:00"},
        {"externalId": "b", "sourceUpdatedAt": "2026-12-04"},
        {"externalId": "c", "sourceUpdatedAt": "yesterday"},
        {"externalId": "d", "sourceUpdatedAt": 1764842400},
        {"externalId": "e", "sourceUpdatedAt": "2026-12-04T10:00:00.123456-05:30"},
        {"externalId": "f", "sourceUpdatedAt": "0001-01-01T00:00:00+01:00"},  # before year 1 in UTC
    ]))
    assert [f["index"] for f in data["failures"]] == [0, 1, 2, 3, 5]
    assert all("sourceUpdatedAt" in f["errors"] for f in data["failures"])
    assert "zone" in data["failures"][0]["errors"]["sourceUpdatedAt"][0]


def test_a_stale_single_upsert_says_so_and_changes_nothing(client, headers):
    first = client.post("/contacts", json={"externalId": "a", "firstName": "New",
                                           "sourceUpdatedAt": "2026-12-04T10:00:00Z"}, headers=headers)
    older = client.post("/contacts", json={"externalId": "a", "firstName": "Old",
                                           "sourceUpdatedAt": "2026-12-03T10:00:00Z"}, headers=headers)
    assert older.status_code == 200
    assert older.get_json()["data"]["status"] == "stale"
    assert older.get_json()["data"]["contact"] == first.get_json()["data"]["contact"]
