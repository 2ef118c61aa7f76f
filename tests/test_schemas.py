"""The row contract (DESIGN 4.2): what loads, into what, and what is refused."""

import sys

import pytest
from email_validator import validate_email
from hypothesis import given, settings
from hypothesis import strategies as st
from marshmallow import ValidationError, fields, missing, validate

from app.schemas.contacts import (
    KNOWN_ADDRESSES,
    ROW_FIELD_BY_WIRE_NAME,
    bulk_request_schema,
    cached_domain_check,
    canonical_locale,
    contact_row_schema,
    load_row,
    load_valid_row,
    normalise_email,
    value_loader,
)


def load(row):
    return contact_row_schema.load(row)


def errors_of(row) -> dict:
    with pytest.raises(ValidationError) as info:
        load(row)
    return info.value.messages


@pytest.mark.parametrize("sent, stored", [
    ("Alice@Example.COM", "alice@example.com"),
    ("  alice@example.com\t", "alice@example.com"),
    ("\u00a0alice@example.com\u2003", "alice@example.com"),  # NBSP and em space
    ("ALICE@EXAMPLE.COM", "alice@example.com"),
    ("用户@例子.广告", "用户@例子.广告"),
    ("josé@Example.com", "josé@example.com"),
])
def test_emails_are_trimmed_normalised_and_lower_cased(sent, stored):
    assert load({"email": sent})["email"] == stored


@pytest.mark.parametrize("email", [
    "bad@", "@example.com", "no-at-sign", "a@b", "a b@example.com", "a@@example.com", "",
    "a" * 250 + "@example.com", "x" * 5000, "a\x00@example.com", "a@example.com\ud800", 42, True,
    ["a@example.com"],
])
def test_bad_emails_are_refused(email):
    assert "email" in errors_of({"email": email})


def test_case_variants_of_an_ascii_email_share_one_cache_entry():
    normalise_email.cache_clear()
    assert load({"email": "Case@Example.com"})["email"] == load({"email": "cASE@EXAMPLE.COM"})["email"]
    assert normalise_email.cache_info().hits == 1


def test_email_validation_is_cached():
    normalise_email.cache_clear()
    for _ in range(3):
        load({"email": "Cached@Example.com"})
    assert normalise_email.cache_info().hits == 2


def test_email_validator_checks_each_domain_once():
    normalise_email.cache_clear()
    cached_domain_check.cache_clear()
    for n in range(3):
        load({"email": f"person{n}@domain-cache.example.com"})
    assert cached_domain_check.cache_info().misses == 1
    assert cached_domain_check.cache_info().hits == 2


DOMAIN_SAMPLES = [
    "person@example.com", "person@EXAMPLE.com", "person@b\u00fccher.example", "person@xn--bcher-kva.example",
    "person@sub.domain.example.co.uk", "person@example.com.", "person@-bad.example", "person@exa_mple.com",
    "person@localhost", "person@example", "person@exam ple.com", "person@" + "a" * 64 + ".example.com",
    "person@example.invalid", "person@\u2126.example", "person@example..com",
]


@pytest.mark.parametrize("address", DOMAIN_SAMPLES)
def test_the_cached_domain_check_answers_as_email_validator(address, monkeypatch):
    """Uncached, then twice cached (the second from the cache): the same
    normalised address, or the same error, every time."""
    uncached = normalise_email.__wrapped__
    cached_domain_check.cache_clear()
    with monkeypatch.context() as patch:
        patch.setattr(sys.modules[validate_email.__module__], "validate_email_domain_name",
                      cached_domain_check.__wrapped__)
        expected = uncached(address)
    assert uncached(address) == expected
    assert uncached(address) == expected


@pytest.mark.parametrize("row, field", [
    ({"externalId": ""}, "externalId"),
    ({"externalId": "   "}, "externalId"),
    ({"externalId": "x" * 256}, "externalId"),
    ({"externalId": 12}, "externalId"),
    ({"externalId": None}, "externalId"),
    ({"email": None}, "email"),
    ({"externalId": "a", "attributes": None}, "attributes"),
    ({"externalId": "a", "firstName": "x" * 256}, "firstName"),
    ({"externalId": "a", "firstName": 3}, "firstName"),
    ({"externalId": "a", "phone": "12"}, "phone"),
    ({"externalId": "a", "phone": "call me"}, "phone"),
    ({"externalId": "a", "phone": "1" * 33}, "phone"),
    ({"externalId": "a", "locale": "english!"}, "locale"),
    ({"externalId": "a", "locale": "e"}, "locale"),
    ({"externalId": "a", "locale": "en-" + "x" * 40}, "locale"),
    ({"externalId": "a", "optIn": "true"}, "optIn"),
    ({"externalId": "a", "optIn": 1}, "optIn"),
    ({"externalId": "a", "attributes": []}, "attributes"),
    ({"externalId": "a", "attributes": {"bad key": 1}}, "attributes"),
    ({"externalId": "a", "attributes": {"k" * 65: 1}}, "attributes"),
    ({"externalId": "a", "attributes": {"k": {"nested": 1}}}, "attributes"),
    ({"externalId": "a", "attributes": {"k": [1]}}, "attributes"),
    ({"externalId": "a", "attributes": {"k": "x" * 2049}}, "attributes"),
    ({"externalId": "a", "attributes": {"k": float("inf")}}, "attributes"),
    ({"externalId": "a", "attributes": {"k": "nul\x00"}}, "attributes"),
    ({"externalId": "a", "attributes": {"k": "caf\u00e9\ud800"}}, "attributes"),
    ({"externalId": "a", "attributes": {"caf\u00e9": 1}}, "attributes"),
    ({"externalId": "a", "firstName": "nul\x00"}, "firstName"),
    ({"externalId": "a", "firstName": "caf\u00e9\udc00"}, "firstName"),
    ({"externalId": "a\x00b"}, "externalId"),
    ({"externalId": "a", "locale": "en\x00"}, "locale"),
    ({"externalId": "a", "attributes": {f"k{i}": i for i in range(101)}}, "attributes"),
    ({"externalId": "a", "userId": "b"}, "userId"),
    ({"externalId": "a", "locale": "en", "language": "en"}, "language"),
    ({"externalId": "a", "attributes": {}, "customFields": {}}, "customFields"),
    ({"externalId": "a", "firstname": "typo"}, "firstname"),
    ({"firstName": "nobody"}, "_schema"),
    ({}, "_schema"),
])
def test_invalid_rows_name_the_field(row, field):
    assert field in errors_of(row)


def test_all_errors_of_a_row_are_reported():
    errors = errors_of({"externalId": "", "email": "bad@", "phone": "x", "optIn": "no", "zz": 1})
    assert set(errors) == {"externalId", "email", "phone", "optIn", "zz"}


def test_aliases_fold_into_canonical_fields():
    row = load({"userId": " u-1 ", "language": "pt_br", "customFields": {"plan": "pro"}})
    assert row == {"external_id": "u-1", "locale": "pt-BR", "attributes": {"plan": "pro"}}


def test_absent_and_null_are_different():
    assert load({"externalId": "a"}) == {"external_id": "a"}
    assert load({"externalId": "a", "firstName": None, "optIn": None}) == \
        {"external_id": "a", "first_name": None, "opt_in": None}


def test_the_cached_checks_answer_as_the_checks():
    """Locales and attribute keys are checked through per-worker caches: a
    cached answer (the second load) is the first one, and a long padded
    locale is trimmed before the cache sees it."""
    row = {"externalId": "a", "locale": " " * 500 + "pt_br ", "attributes": {"k" * 64: "caf\u00e9"}}
    assert load(row) == load(row) == {"external_id": "a", "locale": "pt-BR",
                                      "attributes": {"k" * 64: "caf\u00e9"}}
    for _ in range(2):
        assert "locale" in errors_of({"externalId": "a", "locale": "english!"})
        assert "attributes" in errors_of({"externalId": "a", "attributes": {"bad key": 1}})


def test_attribute_values_keep_their_json_types():
    attributes = {"s": "x", "i": 5, "f": 1.5, "b": False, "n": None, "big": 10**30}
    assert load({"externalId": "a", "attributes": attributes})["attributes"] == attributes


@pytest.mark.parametrize("tag, canonical", [
    ("EN", "en"), ("pt-br", "pt-BR"), ("zh-hant-tw", "zh-Hant-TW"), ("es-419", "es-419"),
])
def test_locales_take_their_conventional_case(tag, canonical):
    assert canonical_locale(tag) == canonical


def test_request_options_default_to_false():
    assert bulk_request_schema.load({"contacts": []}) == \
        {"contacts": [], "run_workflow": False, "atomic": False, "return_results": False, "dry_run": False}


@pytest.mark.parametrize("address", [
    "Simple@Example.com", "first.last+tag@sub.example.co.uk", "o'brien@example.ie",
    "x@xn--bcher-kva.example", "UPPER@EXAMPLE.COM", "a-b_c@domain-with-hyphen.org",
])
def test_a_stored_address_normalises_to_itself(address):
    """The premise of KNOWN_ADDRESSES: what the store holds is a fixed point of
    normalisation, so an ASCII address equal to it in any case needs no new judgement."""
    stored, error = normalise_email(address.lower())
    assert error is None
    assert normalise_email(stored) == (stored, None)
    assert normalise_email(stored.upper().lower()) == (stored, None)


def test_a_known_address_skips_email_validator_and_loads_the_same():
    address = "Known.Person@Example.org"
    expected = load({"email": address})["email"]
    normalise_email.cache_clear()
    known = KNOWN_ADDRESSES.set(frozenset({expected}))
    try:
        assert load({"email": f"  {address.upper()} "})["email"] == expected
        assert normalise_email.cache_info().misses == 0  # not asked
        assert "email" in errors_of({"email": "not-known@"})  # others are still judged
        assert normalise_email.cache_info().misses == 1
    finally:
        KNOWN_ADDRESSES.reset(known)


ROW_VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(), st.text(max_size=12),
    st.sampled_from(["a@example.com", "Bad@", "pt_br", "+1 555 0100", " crm-1 ", "x" * 300]),
    st.dictionaries(st.text(max_size=5), st.integers() | st.text(max_size=3), max_size=3))
VALID_VALUES = {
    "externalId": st.just(" crm-1 "), "userId": st.just("u-1"), "email": st.just("A@Example.com"),
    "firstName": st.sampled_from(["Ann", None]), "lastName": st.just("Lee"),
    "phone": st.just("+1 555 0100"), "locale": st.just("pt_br"), "language": st.just("en"),
    "optIn": st.sampled_from([True, None]), "attributes": st.just({"plan": "pro", "gone": None}),
    "customFields": st.just({"seats": 3}),
}
# Rows of 0-5 keys, each value valid half of the time, with an unknown key now and then.
ROWS = st.lists(st.sampled_from([*ROW_FIELD_BY_WIRE_NAME, "unknown"]), unique=True, max_size=5).flatmap(
    lambda keys: st.fixed_dictionaries({key: VALID_VALUES.get(key, ROW_VALUES) | ROW_VALUES
                                        for key in keys}))


def outcome(load, row):
    try:
        return "loaded", load(row)
    except ValidationError as exc:
        return "refused", exc.messages


@settings(max_examples=500, deadline=None)
@given(row=ROWS | st.lists(st.integers(), max_size=2) | st.integers() | st.none())
def test_load_row_gives_what_the_schema_gives(row):
    assert outcome(load_row, row) == outcome(contact_row_schema.load, row)


def test_a_valid_row_loads_through_its_fields_as_the_schema_loads_it():
    row = {"userId": " u-1 ", "email": "A@Example.com", "language": "pt_br",
           "customFields": {"seats": 3}, "optIn": None}
    expected = {"external_id": "u-1", "email": "a@example.com", "locale": "pt-BR",
                "attributes": {"seats": 3}, "opt_in": None}
    assert load_valid_row(row) == contact_row_schema.load(row) == expected


def test_load_valid_row_knows_all_the_row_schema_does():
    """load_valid_row runs the fields and these two hooks itself: a hook, a
    required field or a default added to ContactRowSchema must be added there."""
    hooks = {name for registered in contact_row_schema._hooks.values() for name, *_ in registered}
    assert hooks == {"check_identity", "fold_aliases"}
    for field in contact_row_schema.load_fields.values():
        assert not field.required and field.load_default is missing and field.attribute is None


def test_value_loader_runs_the_field_and_its_validators_without_the_wrapper():
    """load_valid_row's loaders: the field's own _deserialize and validators; a
    field whose class changes deserialize keeps marshmallow's own."""
    load = value_loader(fields.String(validate=validate.Length(max=3)))
    assert load("abc", "x", {}) == "abc"
    with pytest.raises(ValidationError):
        load("abcd", "x", {})
    with pytest.raises(ValidationError):
        load(None, "x", {})
    assert value_loader(fields.String(allow_none=True))(None, "x", {}) is None

    class Custom(fields.String):
        def deserialize(self, *args, **kwargs):
            return "custom"

    field = Custom()
    assert value_loader(field) == field.deserialize
