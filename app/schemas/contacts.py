"""marshmallow schemas: the wire contract of the bulk endpoints.

A row loads into a dict with canonical snake_case keys holding only the
fields the client sent: an absent key means "leave unchanged", a None value
means "clear". Aliases (userId, language, customFields) fold into their
canonical field here, so nothing past this module knows about them.
"""

import math
import re
from contextvars import ContextVar
from functools import lru_cache
from typing import Any

from email_validator import EmailNotValidError, validate_email
from marshmallow import (
    RAISE,
    Schema,
    ValidationError,
    fields,
    post_load,
    validate,
    validates_schema,
)

# PostgreSQL text cannot hold NUL, and lone surrogates cannot be encoded as
# UTF-8: both would fail deep in the driver, so they are refused up front.
FORBIDDEN_CHARS = re.compile("[\x00\ud800-\udfff]")
PHONE_CHARS = re.compile(r"[0-9 +\-().]+")
LOCALE_TAG = re.compile(r"[A-Za-z]{2,8}(?:-[A-Za-z0-9]{1,8})*")
ATTRIBUTE_KEY = re.compile(r"[A-Za-z0-9_.-]{1,64}")

MAX_EMAIL_LENGTH = 254
MAX_ATTRIBUTES = 100
MAX_ATTRIBUTE_TEXT = 2048

# (wire name, alias wire name, alias's loaded key, canonical loaded key)
ALIASES = (
    ("externalId", "userId", "user_id", "external_id"),
    ("locale", "language", "language", "locale"),
    ("attributes", "customFields", "custom_fields", "attributes"),
)
IDENTITY_NAMES = ("externalId", "userId", "email")


FORBIDDEN_CHARS_MESSAGE = "must not contain NUL characters or unpaired surrogates."


def check_text(value: str) -> None:
    """Refuse characters that PostgreSQL or UTF-8 cannot store."""
    if FORBIDDEN_CHARS.search(value):
        raise ValidationError(f"Text {FORBIDDEN_CHARS_MESSAGE}")


class Text(fields.String):
    """A JSON string (never a number or bool) that PostgreSQL can store."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        if not isinstance(value, str):
            raise self.make_error("invalid")
        check_text(value)
        return value


class Identifier(Text):
    """An externalId: trimmed, then 1-255 characters."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        text = super()._deserialize(value, attr, data, **kwargs).strip()
        if not 1 <= len(text) <= 255:
            raise ValidationError("Must be 1 to 255 characters after trimming white space.")
        return text


# About 370 bytes an address: 100k cost ~37 MB per worker, and cover a
# periodic resync of that many contacts per worker. An LRU cache smaller than
# a cyclic resync hits nothing, so it is sized for the resync, not the batch.
EMAIL_CACHE_SIZE = 100_000


@lru_cache(maxsize=EMAIL_CACHE_SIZE)
def normalise_email(address: str) -> tuple[str | None, str | None]:
    """Return (normalised address, None) or (None, error message).

    A pure function of its input, so it is cached: a sync job sends the same
    addresses again and again, and email-validator is the costliest step of
    validation. Errors are returned, not raised, so that they are cached too.
    """
    try:
        checked = validate_email(address, check_deliverability=False)
    except EmailNotValidError as exc:
        return None, str(exc)
    normalised = checked.normalized.lower()
    if len(normalised) > MAX_EMAIL_LENGTH:
        return None, f"An email address can have at most {MAX_EMAIL_LENGTH} characters."
    return normalised, None


# The addresses the tenant's contacts already hold, among those of the bulk
# request being validated (set by app/web/contacts.py around validation). Each
# was judged by email-validator and normalised when it was stored, and for
# ASCII neither validity nor the lower-cased result depends on case: an ASCII
# address that lower-cases to one of them is valid and normalises to it, so a
# re-sync does not pay email-validator again for every unchanged contact.
KNOWN_ADDRESSES: ContextVar[frozenset[str]] = ContextVar("known_addresses", default=frozenset())


def known_address_candidates(rows: list[Any]) -> set[str]:
    """The rows' emails that could be known addresses: ASCII, in the form
    EmailAddress looks them up (trimmed, lower-cased), storable and not too long."""
    candidates = set()
    for raw in rows:
        email = raw.get("email") if isinstance(raw, dict) else None
        if isinstance(email, str):
            email = email.strip().lower()
            if 0 < len(email) <= MAX_EMAIL_LENGTH and email.isascii() and "\x00" not in email:
                candidates.add(email)
    return candidates


class EmailAddress(Text):
    """An email: trimmed of Unicode white space, validated, normalised, lower-cased."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        text = super()._deserialize(value, attr, data, **kwargs).strip()
        # Checked before the validator (and its cache): no time or memory is
        # spent on megabyte strings.
        if len(text) > MAX_EMAIL_LENGTH:
            raise ValidationError(f"An email address can have at most {MAX_EMAIL_LENGTH} characters.")
        if text.isascii():
            # Case changes neither validity nor the (lower-cased) result, so
            # User@Example.COM and user@example.com share one cache entry.
            text = text.lower()
            if text in KNOWN_ADDRESSES.get():
                return text
        normalised, error = normalise_email(text)
        if error is not None:
            raise ValidationError(error)
        return normalised


class Phone(Text):
    """A phone number as people write it: digits, spaces and + - ( ) ."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        text = super()._deserialize(value, attr, data, **kwargs).strip()
        if len(text) > 32:
            raise ValidationError("A phone number can have at most 32 characters.")
        if not PHONE_CHARS.fullmatch(text) or sum(ch.isdigit() for ch in text) < 3:
            raise ValidationError(
                "Use digits, spaces and + - ( ) . only, with at least 3 digits.")
        return text


class Locale(Text):
    """A BCP 47 language tag (en, es, pt-BR), stored in its conventional case."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        text = super()._deserialize(value, attr, data, **kwargs).strip().replace("_", "-")
        if len(text) > 35 or not LOCALE_TAG.fullmatch(text):
            raise ValidationError("Must be a BCP 47 language tag such as en, es or pt-BR.")
        return canonical_locale(text)


def canonical_locale(tag: str) -> str:
    """pt-br -> pt-BR, zh-hant-tw -> zh-Hant-TW: the case BCP 47 recommends."""
    first, *rest = tag.split("-")
    subtags = [first.lower()]
    for subtag in rest:
        if len(subtag) == 2 and subtag.isalpha():
            subtags.append(subtag.upper())  # region
        elif len(subtag) == 4 and subtag.isalpha():
            subtags.append(subtag.title())  # script
        else:
            subtags.append(subtag.lower())
    return "-".join(subtags)


class StrictBoolean(fields.Field):
    """true or false only: "yes", 1 and "false" are refused, not guessed at."""

    default_error_messages = {"invalid": "Must be true or false."}

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> bool:
        if not isinstance(value, bool):
            raise self.make_error("invalid")
        return value


ATTRIBUTE_VALUE = {"type": ["string", "number", "boolean", "null"]}


class Attributes(fields.Field):
    """Custom attributes: an object of at most 100 flat key/value pairs."""

    default_error_messages = {"invalid": "Must be an object of key/value pairs."}

    def _deserialize(self, value: Any, attr: str | None, data: Any,
                     **kwargs: Any) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.make_error("invalid")
        if len(value) > MAX_ATTRIBUTES:
            raise ValidationError(f"At most {MAX_ATTRIBUTES} attributes per contact.")
        problems = [p for key, item in value.items() if (p := attribute_problem(key, item))]
        if problems:
            raise ValidationError(problems)
        return value


def attribute_problem(key: str, value: Any) -> str | None:
    """What is wrong with one attribute, or None when it is fine."""
    if not ATTRIBUTE_KEY.fullmatch(key):
        return f"Key {key[:70]!r} must be 1-64 characters of A-Z a-z 0-9 _ . -"
    if value is None or isinstance(value, bool | int):
        return None
    if isinstance(value, float):
        return None if math.isfinite(value) else f"Value of {key!r} must be a finite number."
    if isinstance(value, str):
        if len(value) > MAX_ATTRIBUTE_TEXT:
            return f"Value of {key!r} can have at most {MAX_ATTRIBUTE_TEXT} characters."
        if FORBIDDEN_CHARS.search(value):
            return f"Value of {key!r} {FORBIDDEN_CHARS_MESSAGE}"
        return None
    return f"Value of {key!r} must be a string, number, boolean or null."


def optional_text(max_length: int, data_key: str) -> Text:
    """A clearable free-text field (null clears it)."""
    return Text(data_key=data_key, allow_none=True, validate=validate.Length(max=max_length))


# What the custom fields enforce, said again for the OpenAPI document.
IDENTIFIER_DOC = {"minLength": 1, "maxLength": 255, "description": "Trimmed; 1-255 characters."}
LOCALE_DOC = {"maxLength": 35, "description": "A BCP 47 tag such as en or pt-BR."}
ATTRIBUTES_DOC = {"maxProperties": MAX_ATTRIBUTES, "additionalProperties": ATTRIBUTE_VALUE,
                  "description": "Merged key by key; a key sent as null is removed. Keys are 1-64 "
                                 "characters of A-Z a-z 0-9 _ . -; strings at most 2048."}


class ContactRowSchema(Schema):
    """One contact of a bulk request (DESIGN 4.2)."""

    class Meta:
        unknown = RAISE

    external_id = Identifier(data_key="externalId", metadata=IDENTIFIER_DOC)
    user_id = Identifier(data_key="userId",  # AutoSend's name for externalId
                         metadata={**IDENTIFIER_DOC, "description": "Alias of externalId."})
    email = EmailAddress(metadata={"maxLength": MAX_EMAIL_LENGTH, "description": (
        "Matched case-insensitively: trimmed, validated and normalised, then lower-cased.")})
    first_name = optional_text(255, "firstName")
    last_name = optional_text(255, "lastName")
    phone = Phone(allow_none=True, metadata={
        "maxLength": 32, "description": "Digits, spaces and + - ( ) ., at least 3 digits."})
    locale = Locale(allow_none=True, metadata=LOCALE_DOC)
    language = Locale(allow_none=True,  # Inrō's name for locale
                      metadata={**LOCALE_DOC, "description": "Alias of locale."})
    opt_in = StrictBoolean(data_key="optIn", allow_none=True)
    attributes = Attributes(metadata=ATTRIBUTES_DOC)
    custom_fields = Attributes(data_key="customFields",  # AutoSend's name for attributes
                               metadata={**ATTRIBUTES_DOC, "description": "Alias of attributes."})

    @validates_schema(pass_original=True, skip_on_field_errors=False)
    def check_identity(self, data: dict, original: Any, **kwargs: Any) -> None:
        """A row names who it is, and never sends a field under two names."""
        if not isinstance(original, dict):
            return
        errors: dict[str, list[str]] = {}
        for name, alias, _, _ in ALIASES:
            if name in original and alias in original:
                errors.setdefault(alias, []).append(f"Send {name} or {alias}, not both.")
        if not any(name in original for name in IDENTITY_NAMES):
            errors["_schema"] = ["A contact needs an externalId (or userId), an email, or both."]
        if errors:
            raise ValidationError(errors)

    @post_load
    def fold_aliases(self, data: dict, **kwargs: Any) -> dict:
        """Store alias values under their canonical key."""
        for _, _, alias_key, key in ALIASES:
            if alias_key in data:
                data[key] = data.pop(alias_key)
        return data


class ContactUpsertSchema(ContactRowSchema):
    """POST /contacts: one row, plus the option to fire its workflow event."""

    run_workflow = StrictBoolean(data_key="runWorkflow", load_default=False)


class ContactList(fields.Field):
    """The `contacts` array; rows are validated one by one afterwards, so that
    each row's errors can be reported under its own index."""

    default_error_messages = {"invalid": "Must be an array of contact objects."}

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> list:
        if not isinstance(value, list):
            raise self.make_error("invalid")
        return value


class BulkRequestSchema(Schema):
    """The envelope of a bulk request: the rows plus options."""

    class Meta:
        unknown = RAISE

    contacts = ContactList(required=True, metadata={
        "type": "array", "items": {"$ref": "#/components/schemas/ContactRow"},
        "description": "The rows; each door sets its own limit."})
    run_workflow = StrictBoolean(data_key="runWorkflow", load_default=False)
    atomic = StrictBoolean(load_default=False)
    return_results = StrictBoolean(data_key="returnResults", load_default=False)


MAX_FEED_PAGE = 1000
LOOKUP_PARAMETERS = ("email", "externalId")
FEED_PARAMETERS = ("updatedSince", "limit", "cursor")


class ContactsQuerySchema(Schema):
    """GET /contacts: a look-up (email or externalId) or the change feed
    (updatedSince, limit, cursor); the two do not mix."""

    class Meta:
        unknown = RAISE

    email = EmailAddress()
    external_id = Identifier(data_key="externalId")
    updated_since = fields.AwareDateTime(data_key="updatedSince", format="iso")
    limit = fields.Integer(load_default=100, validate=validate.Range(1, MAX_FEED_PAGE))
    cursor = fields.String(validate=validate.Length(max=512))

    @validates_schema(pass_original=True, skip_on_field_errors=False)
    def check_one_kind(self, data: dict, original: Any, **kwargs: Any) -> None:
        """One look-up key, or feed parameters, or nothing (the feed from the start)."""
        lookups = [name for name in LOOKUP_PARAMETERS if name in original]
        if len(lookups) > 1 or (lookups and any(name in original for name in FEED_PARAMETERS)):
            raise ValidationError("Look up by email or by externalId, or read the feed "
                                  "(updatedSince, limit, cursor): one of these per request.")
        if "cursor" in original and "updatedSince" in original:
            raise ValidationError("A cursor carries its updatedSince: send one or the other.")


# The answers. Views build them from SQL and plain dicts; these schemas
# describe them for /openapi.json, and the tests check real answers against
# that document, so the two cannot drift apart unnoticed.


class ContactSchema(Schema):
    """A stored contact, as every read and every webhook event shows it."""

    id = fields.Integer(required=True)
    external_id = fields.String(data_key="externalId", required=True, allow_none=True)
    email = fields.String(required=True, allow_none=True)
    first_name = fields.String(data_key="firstName", required=True, allow_none=True)
    last_name = fields.String(data_key="lastName", required=True, allow_none=True)
    phone = fields.String(required=True, allow_none=True)
    locale = fields.String(required=True, allow_none=True)
    opt_in = fields.Boolean(data_key="optIn", required=True, allow_none=True)
    attributes = fields.Dict(required=True, metadata={"additionalProperties": ATTRIBUTE_VALUE})
    created_at = fields.DateTime(data_key="createdAt", required=True)
    updated_at = fields.DateTime(data_key="updatedAt", required=True)


class ConflictSchema(Schema):
    """Who holds a row's externalId and its email (null: nobody)."""

    external_id_contact_id = fields.Integer(data_key="externalIdContactId", required=True,
                                            allow_none=True)
    email_contact_id = fields.Integer(data_key="emailContactId", required=True, allow_none=True)
    external_id_row_index = fields.Integer(
        data_key="externalIdRowIndex", allow_none=True,
        metadata={"description": "The earlier row of this request that creates that contact."})
    email_row_index = fields.Integer(data_key="emailRowIndex", allow_none=True)


class FailureSchema(Schema):
    """One row that was not written, and why."""

    index = fields.Integer(required=True)
    external_id = fields.Raw(data_key="externalId", required=True, allow_none=True,
                             metadata={"description": "As sent, clipped to 320 characters."})
    email = fields.Raw(required=True, allow_none=True)
    code = fields.String(required=True, validate=validate.OneOf(["invalid_contact", "identity_conflict"]))
    message = fields.String(required=True)
    errors = fields.Dict(metadata={"description": "invalid_contact: every message, by field."})
    conflict = fields.Nested(ConflictSchema, metadata={"description": "identity_conflict only."})


class RowResultSchema(Schema):
    """What happened to one row (with returnResults)."""

    index = fields.Integer(required=True)
    id = fields.Integer(required=True, allow_none=True)
    status = fields.String(required=True,
                           validate=validate.OneOf(["created", "updated", "unchanged", "failed"]))


class BulkSummarySchema(Schema):
    """The counts of a bulk request, its failures, and per-row results on request."""

    total_count = fields.Integer(data_key="totalCount", required=True)
    success_count = fields.Integer(data_key="successCount", required=True)
    failed_count = fields.Integer(data_key="failedCount", required=True)
    created_count = fields.Integer(data_key="createdCount", required=True)
    updated_count = fields.Integer(data_key="updatedCount", required=True)
    unchanged_count = fields.Integer(data_key="unchangedCount", required=True)
    failures = fields.List(fields.Nested(FailureSchema), required=True)
    results = fields.List(fields.Nested(RowResultSchema))


class BulkResponseSchema(Schema):
    success = fields.Boolean(required=True)
    data = fields.Nested(BulkSummarySchema, required=True)


class UpsertResultSchema(Schema):
    status = fields.String(required=True, validate=validate.OneOf(["created", "updated", "unchanged"]))
    contact = fields.Nested(ContactSchema, required=True)


class UpsertResponseSchema(Schema):
    success = fields.Boolean(required=True)
    data = fields.Nested(UpsertResultSchema, required=True)


class ContactResponseSchema(Schema):
    success = fields.Boolean(required=True)
    data = fields.Nested(ContactSchema, required=True)


class ContactListResponseSchema(Schema):
    success = fields.Boolean(required=True)
    data = fields.List(fields.Nested(ContactSchema), required=True,
                       metadata={"description": "0 or 1 contact."})


class FeedPageResponseSchema(Schema):
    success = fields.Boolean(required=True)
    data = fields.List(fields.Nested(ContactSchema), required=True)
    next_cursor = fields.String(data_key="nextCursor", required=True,
                                metadata={"description": "Resume here, now or later."})
    has_more = fields.Boolean(data_key="hasMore", required=True)


class ErrorSchema(Schema):
    code = fields.String(required=True, metadata={"description": "Stable; the message is for people."})
    message = fields.String(required=True)
    details = fields.Raw()


class ErrorResponseSchema(Schema):
    success = fields.Boolean(required=True)
    error = fields.Nested(ErrorSchema, required=True)


class StatusSchema(Schema):
    status = fields.String(required=True)


contact_row_schema = ContactRowSchema()
contact_upsert_schema = ContactUpsertSchema()
bulk_request_schema = BulkRequestSchema()
contacts_query_schema = ContactsQuerySchema()

# wire name -> (loaded key, field) of every row field.
ROW_FIELD_BY_WIRE_NAME = {field.data_key or name: (name, field)
                          for name, field in contact_row_schema.load_fields.items()}


def load_row(raw: Any) -> dict:
    """A dict equal to what contact_row_schema.load(raw) returns (or the same
    ValidationError), for less.

    marshmallow's load visits all eleven fields of every row and keeps
    per-field error bookkeeping; most rows send three to six fields and are
    valid. Such a row goes through the very same fields and schema hooks
    directly (about half the time of a load). Any row that is not plainly
    valid (unknown keys, a refused value, not an object) is loaded by the
    schema itself, which collects every error of it.
    """
    if isinstance(raw, dict) and raw.keys() <= ROW_FIELD_BY_WIRE_NAME.keys():
        try:
            return load_valid_row(raw)
        except ValidationError:
            pass
    return contact_row_schema.load(raw)


def load_valid_row(raw: dict) -> dict:
    """The row's known fields deserialized, then the schema's own checks and
    folding; raises at the first error (load_row then asks the schema for all).
    It stands in for Schema.load only while the row schema has no required
    field, default or attribute name and no hooks but these two (tested)."""
    loaded = {}
    for wire_name, value in raw.items():
        name, field = ROW_FIELD_BY_WIRE_NAME[wire_name]
        loaded[name] = field.deserialize(value, wire_name, raw)
    contact_row_schema.check_identity(loaded, raw)
    return contact_row_schema.fold_aliases(loaded)
