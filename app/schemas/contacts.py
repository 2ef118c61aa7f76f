"""marshmallow schemas: the wire contract of the bulk endpoints.

A row loads into a dict with canonical snake_case keys holding only the
fields the client sent: an absent key means "leave unchanged", a None value
means "clear". Aliases (userId, language, customFields) fold into their
canonical field here, so nothing past this module knows about them.
"""

import math
import re
import sys
from collections.abc import Callable
from contextvars import ContextVar
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit

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
MAX_URL_LENGTH = 2048
MAX_CATALOGUE_NAME = 100
MAX_NAMES_PER_ROW = 100  # tags (or folders) added and removed by one row
MAX_COMPANIES_PER_ROW = 100
STATUSES = ("auto", "optout", "spam")

# (wire name, alias wire name, alias's loaded key, canonical loaded key)
ALIASES = (
    ("externalId", "userId", "user_id", "external_id"),
    ("locale", "language", "language", "locale"),
    ("attributes", "customFields", "custom_fields", "attributes"),
)
IDENTITY_NAMES = ("externalId", "userId", "email", "username")
ALIAS_WIRE_NAMES = frozenset(alias for _, alias, _, _ in ALIASES)
ALIAS_KEYS = frozenset(alias_key for _, _, alias_key, _ in ALIASES)


FORBIDDEN_CHARS_MESSAGE = "must not contain NUL characters or unpaired surrogates."


def check_text(value: str) -> None:
    """Refuse characters that PostgreSQL or UTF-8 cannot store."""
    # An ASCII string (str.isascii reads a flag) can only hold NUL of those:
    # one memchr instead of the regex, for nearly every value of a batch.
    if ("\x00" in value) if value.isascii() else FORBIDDEN_CHARS.search(value):
        raise ValidationError(f"Text {FORBIDDEN_CHARS_MESSAGE}")


class Text(fields.String):
    """A JSON string (never a number or bool) that PostgreSQL can store."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        return self.storable(value)

    def storable(self, value: Any) -> str:
        """`value` if it is a string PostgreSQL can store, else the field's error.
        The fields below call this, not super()._deserialize: a plain method
        call costs a third of that, for every value of every row."""
        if not isinstance(value, str):
            raise self.make_error("invalid")
        check_text(value)
        return value


class Identifier(Text):
    """An externalId: trimmed, then 1-255 characters."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        text = self.storable(value).strip()
        if not 1 <= len(text) <= 255:
            raise ValidationError("Must be 1 to 255 characters after trimming white space.")
        return text


# email-validator's check of the part after the @-sign (IDNA, character by
# character) is most of its time per address, and depends on the domain alone
# (and two options that contactsync never changes): new contacts of one batch
# mostly share a handful of domains. So validate_email, the judge of every
# address still, calls a cached copy of its own domain check. A domain it
# refuses raises, and is not cached. The copy replaces the name that
# validate_email's module looks up (email-validator 2.4.0, pinned);
# tests/test_schemas.py checks that it is used and answers as the original.
DOMAIN_CACHE_SIZE = 10_000
_validate_email_module = sys.modules[validate_email.__module__]
_validate_email_module.validate_email_domain_name = lru_cache(maxsize=DOMAIN_CACHE_SIZE)(
    _validate_email_module.validate_email_domain_name)
cached_domain_check = _validate_email_module.validate_email_domain_name


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


def identity_candidates(rows: list[Any]) -> dict[str, set[str]]:
    """The identities raw rows will most likely have once loaded, by engine
    name: emails as known_address_candidates finds them, externalIds (or
    userIds) trimmed and usernames trimmed and lower-cased as their fields
    load them, each only if storable. The engine reads the contacts these
    reach before validation, so that the read also tells which addresses
    are known; a loaded identity not among them is read after (app/engine/bulk.py)."""
    external_ids, usernames = set(), set()
    for raw in rows:
        if not isinstance(raw, dict):
            continue
        for name, found in (("externalId", external_ids), ("userId", external_ids), ("username", usernames)):
            value = raw.get(name)
            if isinstance(value, str):
                value = value.strip()
                if 1 <= len(value) <= 255 and not FORBIDDEN_CHARS.search(value):
                    found.add(value.lower() if name == "username" else value)
    return {"external_id": external_ids, "email": known_address_candidates(rows), "username": usernames}


class EmailAddress(Text):
    """An email: trimmed of Unicode white space, validated, normalised, lower-cased."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        text = self.storable(value).strip()
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
        text = self.storable(value).strip()
        if len(text) > 32:
            raise ValidationError("A phone number can have at most 32 characters.")
        if not PHONE_CHARS.fullmatch(text) or sum(ch.isdigit() for ch in text) < 3:
            raise ValidationError(
                "Use digits, spaces and + - ( ) . only, with at least 3 digits.")
        return text


class Locale(Text):
    """A BCP 47 language tag (en, es, pt-BR), stored in its conventional case."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        text = self.storable(value).strip()
        tag = locale_tag(text) if len(text) <= 35 else None  # the bound keeps the cache's keys short
        if tag is None:
            raise ValidationError("Must be a BCP 47 language tag such as en, es or pt-BR.")
        return tag


# A batch holds a handful of distinct locales, each sent hundreds of times.
LOCALE_CACHE_SIZE = 1024


@lru_cache(maxsize=LOCALE_CACHE_SIZE)
def locale_tag(text: str) -> str | None:
    """The trimmed `text` (`_` read as `-`) in its conventional case, or
    None when it is no language tag. Pure, so cached."""
    text = text.replace("_", "-")
    return canonical_locale(text) if LOCALE_TAG.fullmatch(text) else None


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
        problems = []
        for key, item in value.items():
            problem = attribute_problem(key, item)
            if problem is not None:
                problems.append(problem)
        if problems:
            raise ValidationError(problems)
        return value


def attribute_problem(key: str, value: Any) -> str | None:
    """What is wrong with one attribute, or None when it is fine. It runs for
    every attribute of every row: the usual cases (a known key, a string, an
    int or a bool) are answered first."""
    if not (len(key) <= 64 and is_attribute_key(key)):
        return f"Key {key[:70]!r} must be 1-64 characters of A-Z a-z 0-9 _ . -"
    if isinstance(value, str):
        if len(value) > MAX_ATTRIBUTE_TEXT:
            return f"Value of {key!r} can have at most {MAX_ATTRIBUTE_TEXT} characters."
        if ("\x00" in value) if value.isascii() else FORBIDDEN_CHARS.search(value):  # as check_text
            return f"Value of {key!r} {FORBIDDEN_CHARS_MESSAGE}"
        return None
    if value is None or isinstance(value, bool | int):
        return None
    if isinstance(value, float):
        return None if math.isfinite(value) else f"Value of {key!r} must be a finite number."
    return f"Value of {key!r} must be a string, number, boolean or null."


# A tenant's rows use a few dozen attribute keys, over and over.
ATTRIBUTE_KEY_CACHE_SIZE = 4096


@lru_cache(maxsize=ATTRIBUTE_KEY_CACHE_SIZE)
def is_attribute_key(key: str) -> bool:
    """1-64 characters of A-Z a-z 0-9 _ . - (callers bound the length first,
    so that the cache holds short keys only)."""
    return ATTRIBUTE_KEY.fullmatch(key) is not None


# What the custom fields enforce, said again for the OpenAPI document.
IDENTIFIER_DOC = {"minLength": 1, "maxLength": 255, "description": "Trimmed; 1-255 characters."}
LOCALE_DOC = {"maxLength": 35, "description": "A BCP 47 tag such as en or pt-BR."}
ATTRIBUTES_DOC = {"maxProperties": MAX_ATTRIBUTES, "additionalProperties": ATTRIBUTE_VALUE,
                  "description": "Merged key by key; a key sent as null is removed. Keys are 1-64 "
                                 "characters of A-Z a-z 0-9 _ . -; strings at most 2048."}


class Username(Text):
    """A username (Inrō's identity): trimmed, 1-255 characters, lower-cased,
    so that it matches case-insensitively, as email does."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        text = self.storable(value).strip()
        if not 1 <= len(text) <= 255:
            raise ValidationError("Must be 1 to 255 characters after trimming white space.")
        return text.lower()


class SourceTime(Text):
    """sourceUpdatedAt (DESIGN 15): an ISO 8601 date and time with a zone,
    loaded as UTC text with microseconds (2026-12-04T09:30:00.000000Z), whose
    text order is its time order, so the engine compares it as it stands."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        text = self.storable(value).strip()
        try:
            moment = datetime.fromisoformat(text) if len(text) <= 40 else None
        except ValueError:
            moment = None
        if moment is None or "T" not in text.upper():
            raise ValidationError("Must be an ISO 8601 date and time, such as 2026-12-04T09:30:00Z.")
        if moment.tzinfo is None:
            raise ValidationError("Must carry a zone: Z or an offset such as +01:00.")
        try:
            utc = moment.astimezone(UTC)
        except OverflowError:  # 0001-01-01T00:00+01:00 is before year 1 in UTC
            raise ValidationError("Must be between the years 1 and 9999 in UTC.") from None
        return utc.isoformat(timespec="microseconds").replace("+00:00", "Z")


class Url(Text):
    """An http(s) URL of at most 2048 characters, with a host."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        text = self.storable(value).strip()
        if len(text) > MAX_URL_LENGTH:
            raise ValidationError(f"A URL can have at most {MAX_URL_LENGTH} characters.")
        try:
            parts = urlsplit(text)
        except ValueError:
            parts = None
        if (parts is None or parts.scheme.lower() not in ("http", "https") or not parts.hostname
                or any(ch.isspace() or not ch.isprintable() for ch in text)):
            raise ValidationError("Must be an http:// or https:// URL with a host and no spaces.")
        return text


class NameChanges(fields.Field):
    """Tags or folders to add and remove, by name: `{"add": [...], "remove": [...]}`.

    Names are trimmed and 1-100 characters; a name sent twice (in any case)
    counts once, and one row cannot add and remove the same name.
    """

    default_error_messages = {"invalid": 'Must be an object {{"add": [names], "remove": [names]}}.'}

    def _deserialize(self, value: Any, attr: str | None, data: Any,
                     **kwargs: Any) -> dict[str, list[str]]:
        if not isinstance(value, dict):
            raise self.make_error("invalid")
        problems = [f"Unknown key {key[:70]!r}: use add and remove." for key in value
                    if key not in ("add", "remove")]
        loaded: dict[str, list[str]] = {}
        for key in ("add", "remove"):
            names = value.get(key, [])
            if not isinstance(names, list):
                problems.append(f"{key} must be an array of names.")
                continue
            first_spellings: dict[str, str] = {}
            for item in names:
                name = catalogue_name(item, key, problems)
                if name is not None:
                    first_spellings.setdefault(name.lower(), name)
            loaded[key] = list(first_spellings.values())
        if sum(len(names) for names in loaded.values()) > MAX_NAMES_PER_ROW:
            problems.append(f"At most {MAX_NAMES_PER_ROW} names per contact.")
        both = {n.lower() for n in loaded.get("add", [])} & {n.lower() for n in loaded.get("remove", [])}
        if both:
            problems.append(f"Names both added and removed: {sorted(both)[:5]}.")
        if problems:
            raise ValidationError(problems)
        return {"add": loaded.get("add", []), "remove": loaded.get("remove", [])}


def catalogue_name(item: Any, key: str, problems: list[str]) -> str | None:
    """A tag or folder name, trimmed; None (and a problem noted) when it is not one."""
    if not isinstance(item, str):
        problems.append(f"Every name in {key} must be a string.")
        return None
    name = item.strip()
    if not 1 <= len(name) <= MAX_CATALOGUE_NAME or FORBIDDEN_CHARS.search(name):
        problems.append(f"Name {name[:70]!r} in {key} must be 1-{MAX_CATALOGUE_NAME} characters"
                        f" (after trimming) and {FORBIDDEN_CHARS_MESSAGE}")
        return None
    return name


class CatalogueName(Text):
    """A tag or folder name: trimmed, 1-100 characters."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        text = self.storable(value).strip()
        if not 1 <= len(text) <= MAX_CATALOGUE_NAME:
            raise ValidationError(f"Must be 1 to {MAX_CATALOGUE_NAME} characters after trimming white space.")
        return text


class CompanyChangeSchema(Schema):
    """One company a row attaches (creating or renaming it) or detaches (`remove`)."""

    class Meta:
        unknown = RAISE

    company_id = Identifier(data_key="companyId", required=True, metadata=IDENTIFIER_DOC)
    name = Text(validate=validate.Length(max=255),
                metadata={"description": "Sets the company's name in the catalogue."})
    remove = StrictBoolean(load_default=False, metadata={"description": "Detach the company."})


class CompanyChanges(fields.Field):
    """A list of company changes, at most 100, each companyId once."""

    default_error_messages = {"invalid": "Must be an array of objects with companyId, name and remove."}

    def _deserialize(self, value: Any, attr: str | None, data: Any,
                     **kwargs: Any) -> list[dict[str, Any]]:
        if not isinstance(value, list):
            raise self.make_error("invalid")
        if len(value) > MAX_COMPANIES_PER_ROW:
            raise ValidationError(f"At most {MAX_COMPANIES_PER_ROW} companies per contact.")
        errors: dict[int, Any] = {}
        loaded = []
        for index, item in enumerate(value):
            if not isinstance(item, dict):
                errors[index] = ["Must be an object."]
                continue
            try:
                loaded.append(company_change_schema.load(item))
            except ValidationError as exc:
                errors[index] = exc.messages
        if errors:
            raise ValidationError(errors)
        company_ids = [item["company_id"] for item in loaded]
        if len(set(company_ids)) != len(company_ids):
            raise ValidationError("Send each companyId once per contact.")
        return loaded


SOURCE_TIME_DOC = {"format": "date-time", "description": (
    "When the source system last changed this contact (ISO 8601 with a zone). A row older than "
    "what the contact last received is not applied and ends stale; equal or newer applies and "
    "is stored.")}


def optional_text(max_length: int, data_key: str) -> Text:
    """A clearable free-text field (null clears it)."""
    return Text(data_key=data_key, allow_none=True, validate=validate.Length(max=max_length))


NAME_CHANGES_DOC = {
    "type": "object", "additionalProperties": False,
    "properties": {key: {"type": "array", "items": {"type": "string", "minLength": 1,
                                                    "maxLength": MAX_CATALOGUE_NAME}}
                   for key in ("add", "remove")},
    "description": f"Names to add (created when new) and remove, compared case-insensitively; "
                   f"at most {MAX_NAMES_PER_ROW} per contact."}


class ContactRowSchema(Schema):
    """One contact of a bulk request (DESIGN 4.2)."""

    class Meta:
        unknown = RAISE

    external_id = Identifier(data_key="externalId", metadata=IDENTIFIER_DOC)
    user_id = Identifier(data_key="userId",  # AutoSend's name for externalId
                         metadata={**IDENTIFIER_DOC, "description": "Alias of externalId."})
    email = EmailAddress(metadata={"maxLength": MAX_EMAIL_LENGTH, "description": (
        "Matched case-insensitively: trimmed, validated and normalised, then lower-cased.")})
    username = Username(metadata={**IDENTIFIER_DOC, "description": (
        "A third identity, matched after externalId and email: trimmed, 1-255 characters, "
        "matched case-insensitively (stored lower-cased).")})
    first_name = optional_text(255, "firstName")
    last_name = optional_text(255, "lastName")
    name = optional_text(255, "name")
    phone = Phone(allow_none=True, metadata={
        "maxLength": 32, "description": "Digits, spaces and + - ( ) ., at least 3 digits."})
    locale = Locale(allow_none=True, metadata=LOCALE_DOC)
    language = Locale(allow_none=True,  # Inrō's name for locale
                      metadata={**LOCALE_DOC, "description": "Alias of locale."})
    opt_in = StrictBoolean(data_key="optIn", allow_none=True)
    status = Text(validate=validate.OneOf(STATUSES), metadata={
        "enum": list(STATUSES), "description": "auto (the default), optout or spam; independent of optIn."})
    owner_id = optional_text(255, "ownerId")
    avatar_url = Url(data_key="avatarUrl", allow_none=True, metadata={
        "maxLength": MAX_URL_LENGTH, "format": "uri", "description": "An http(s) URL, or null."})
    attributes = Attributes(metadata=ATTRIBUTES_DOC)
    custom_fields = Attributes(data_key="customFields",  # AutoSend's name for attributes
                               metadata={**ATTRIBUTES_DOC, "description": "Alias of attributes."})
    tags = NameChanges(metadata=NAME_CHANGES_DOC)
    folders = NameChanges(metadata=NAME_CHANGES_DOC)
    companies = CompanyChanges(metadata={
        "type": "array", "maxItems": MAX_COMPANIES_PER_ROW,
        "items": {"$ref": "#/components/schemas/CompanyChange"},
        "description": "Attach (creating or renaming) or detach (remove: true) companies by companyId."})
    source_updated_at = SourceTime(data_key="sourceUpdatedAt", metadata=SOURCE_TIME_DOC)

    @validates_schema(pass_original=True, skip_on_field_errors=False)
    def check_identity(self, data: dict, original: Any, **kwargs: Any) -> None:
        """A row names who it is, and never sends a field under two names."""
        if not isinstance(original, dict):
            return
        sent = original.keys()
        # Set operations on the keys, not loops: this runs for every row.
        if sent.isdisjoint(ALIAS_WIRE_NAMES) and not sent.isdisjoint(IDENTITY_NAMES):
            return
        errors: dict[str, list[str]] = {}
        for name, alias, _, _ in ALIASES:
            if name in original and alias in original:
                errors.setdefault(alias, []).append(f"Send {name} or {alias}, not both.")
        if sent.isdisjoint(IDENTITY_NAMES):
            errors["_schema"] = ["A contact needs an externalId (or userId), an email or a username."]
        if errors:
            raise ValidationError(errors)

    @post_load
    def fold_aliases(self, data: dict, **kwargs: Any) -> dict:
        """Store alias values under their canonical key."""
        if data.keys().isdisjoint(ALIAS_KEYS):  # most rows use no alias
            return data
        for _, _, alias_key, key in ALIASES:
            if alias_key in data:
                data[key] = data.pop(alias_key)
        return data


class ContactUpsertSchema(ContactRowSchema):
    """POST /contacts: one row, plus the option to fire its workflow event."""

    run_workflow = StrictBoolean(data_key="runWorkflow", load_default=False)
    dry_run = StrictBoolean(data_key="dryRun", load_default=False, metadata={
        "description": "Say what the upsert would do (status, changedFields); write nothing."})


def check_one_identifier(original: Any, names: tuple[str, ...]) -> None:
    """An entry of a by-identifier door names its contact by exactly one of `names`."""
    if isinstance(original, dict) and sum(name in original for name in names) != 1:
        listed = ", ".join(names[:-1]) + f" or {names[-1]}"
        raise ValidationError(f"Send exactly one of {listed}.", "_schema")


def load_each(schema: Schema, entries: list[Any]) -> tuple[list[dict], dict[str, Any]]:
    """Every entry loaded, and the problems of the bad ones by index (as a string key)."""
    loaded, problems = [], {}
    for index, entry in enumerate(entries):
        try:
            loaded.append(schema.load(entry))
        except ValidationError as exc:
            problems[str(index)] = exc.messages
    return loaded, problems


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
    dry_run = StrictBoolean(data_key="dryRun", load_default=False, metadata={
        "description": "The whole answer the request would give, with nothing written, no "
                       "events, in a read-only transaction; no Idempotency-Key. Rows it would "
                       "create have id null in results."})


MAX_FEED_PAGE = 1000
MAX_CATALOGUE_PAGE = 1000
LOOKUP_PARAMETERS = ("email", "externalId", "username")
FEED_PARAMETERS = ("updatedSince", "limit", "cursor")


class ContactsQuerySchema(Schema):
    """GET /contacts: a look-up (email, externalId or username) or the change feed
    (updatedSince, limit, cursor); the two do not mix."""

    class Meta:
        unknown = RAISE

    email = EmailAddress()
    external_id = Identifier(data_key="externalId")
    username = Username()
    updated_since = fields.AwareDateTime(data_key="updatedSince", format="iso")
    limit = fields.Integer(load_default=100, validate=validate.Range(1, MAX_FEED_PAGE))
    cursor = fields.String(validate=validate.Length(max=512))

    @validates_schema(pass_original=True, skip_on_field_errors=False)
    def check_one_kind(self, data: dict, original: Any, **kwargs: Any) -> None:
        """One look-up key, or feed parameters, or nothing (the feed from the start)."""
        lookups = [name for name in LOOKUP_PARAMETERS if name in original]
        if len(lookups) > 1 or (lookups and any(name in original for name in FEED_PARAMETERS)):
            raise ValidationError("Look up by email, externalId or username, or read the feed "
                                  "(updatedSince, limit, cursor): one of these per request.")
        if "cursor" in original and "updatedSince" in original:
            raise ValidationError("A cursor carries its updatedSince: send one or the other.")


class NewCatalogueEntrySchema(Schema):
    """POST /tags, POST /folders: the name of the entry to make."""

    class Meta:
        unknown = RAISE

    name = CatalogueName(required=True, metadata={
        "minLength": 1, "maxLength": MAX_CATALOGUE_NAME,
        "description": "Trimmed; unique per tenant compared case-insensitively."})


class CataloguePageQuerySchema(Schema):
    """GET /tags, /folders, /companies: a page in catalogue id order."""

    class Meta:
        unknown = RAISE

    after = fields.Integer(load_default=0, validate=validate.Range(0, 2 ** 63 - 1), metadata={
        "description": "nextAfter of the previous page; 0 (the default) starts at the beginning."})
    limit = fields.Integer(load_default=MAX_CATALOGUE_PAGE, validate=validate.Range(1, MAX_CATALOGUE_PAGE))


# The answers. Views build them from SQL and plain dicts; these schemas
# describe them for /openapi.json, and the tests check real answers against
# that document, so the two cannot drift apart unnoticed.


class ContactSchema(Schema):
    """A stored contact, as every read and every webhook event shows it."""

    id = fields.Integer(required=True)
    external_id = fields.String(data_key="externalId", required=True, allow_none=True)
    email = fields.String(required=True, allow_none=True)
    username = fields.String(required=True, allow_none=True)
    first_name = fields.String(data_key="firstName", required=True, allow_none=True)
    last_name = fields.String(data_key="lastName", required=True, allow_none=True)
    name = fields.String(required=True, allow_none=True)
    phone = fields.String(required=True, allow_none=True)
    locale = fields.String(required=True, allow_none=True)
    opt_in = fields.Boolean(data_key="optIn", required=True, allow_none=True)
    status = fields.String(required=True, validate=validate.OneOf(STATUSES))
    owner_id = fields.String(data_key="ownerId", required=True, allow_none=True)
    avatar_url = fields.String(data_key="avatarUrl", required=True, allow_none=True)
    attributes = fields.Dict(required=True, metadata={"additionalProperties": ATTRIBUTE_VALUE})
    source_updated_at = fields.DateTime(data_key="sourceUpdatedAt", required=True, allow_none=True)
    tags = fields.List(fields.Nested("CatalogueEntrySchema"), required=True,
                       metadata={"description": "Sorted by id."})
    folders = fields.List(fields.Nested("CatalogueEntrySchema"), required=True,
                          metadata={"description": "Sorted by id."})
    companies = fields.List(fields.Nested("CompanySchema"), required=True,
                            metadata={"description": "Sorted by the catalogue's id."})
    created_at = fields.DateTime(data_key="createdAt", required=True)
    updated_at = fields.DateTime(data_key="updatedAt", required=True)


class TombstoneSchema(Schema):
    """A deleted contact, as the change feed and contact.deleted events show it (DESIGN 9)."""

    id = fields.Integer(required=True)
    external_id = fields.String(data_key="externalId", required=True, allow_none=True)
    deleted = fields.Boolean(required=True, metadata={"enum": [True]})
    deleted_at = fields.DateTime(data_key="deletedAt", required=True)


class CatalogueEntrySchema(Schema):
    """A tag or a folder of the tenant's catalogue."""

    id = fields.Integer(required=True)
    name = fields.String(required=True)


class CompanySchema(Schema):
    """A company of the tenant's catalogue, by the client's companyId."""

    company_id = fields.String(data_key="companyId", required=True)
    name = fields.String(required=True, allow_none=True)


class ConflictSchema(Schema):
    """Who holds a row's externalId, email and username (null: nobody)."""

    external_id_contact_id = fields.Integer(data_key="externalIdContactId", required=True,
                                            allow_none=True)
    email_contact_id = fields.Integer(data_key="emailContactId", required=True, allow_none=True)
    username_contact_id = fields.Integer(data_key="usernameContactId", allow_none=True)
    external_id_row_index = fields.Integer(
        data_key="externalIdRowIndex", allow_none=True,
        metadata={"description": "The earlier row of this request that creates that contact."})
    email_row_index = fields.Integer(data_key="emailRowIndex", allow_none=True)
    username_row_index = fields.Integer(data_key="usernameRowIndex", allow_none=True)


# invalid_contact and identity_conflict on every door; a batch task of
# updates by id (Inrō's door) adds not_found and unknown_folder, Intercom's
# strict create contact_exists, and internal_error for rows of a chunk that
# could not be applied.
FAILURE_CODES = ["invalid_contact", "identity_conflict", "not_found", "unknown_folder", "contact_exists",
                 "internal_error"]


class FailureSchema(Schema):
    """One row that was not written, and why."""

    index = fields.Integer(required=True)
    external_id = fields.Raw(data_key="externalId", required=True, allow_none=True,
                             metadata={"description": "As sent, clipped to 320 characters."})
    email = fields.Raw(required=True, allow_none=True)
    code = fields.String(required=True, validate=validate.OneOf(FAILURE_CODES))
    message = fields.String(required=True)
    errors = fields.Dict(metadata={"description": "invalid_contact: every message, by field."})
    conflict = fields.Nested(ConflictSchema, metadata={"description": "identity_conflict only."})


class RowResultSchema(Schema):
    """What happened to one row (with returnResults)."""

    index = fields.Integer(required=True)
    id = fields.Integer(required=True, allow_none=True)
    status = fields.String(required=True,
                           validate=validate.OneOf(["created", "updated", "unchanged", "stale", "failed"]))
    changed_fields = fields.List(fields.String(), data_key="changedFields", metadata={
        "description": "Updated rows only: what this row changed, in wire names and this order: "
                       "externalId, email, username, firstName, lastName, name, phone, locale, optIn, "
                       "status, ownerId, avatarUrl, attributes, tags, folders, companies, "
                       "sourceUpdatedAt."})


class BulkSummarySchema(Schema):
    """The counts of a bulk request, its failures, and per-row results on request."""

    total_count = fields.Integer(data_key="totalCount", required=True)
    success_count = fields.Integer(data_key="successCount", required=True)
    failed_count = fields.Integer(data_key="failedCount", required=True)
    created_count = fields.Integer(data_key="createdCount", required=True)
    updated_count = fields.Integer(data_key="updatedCount", required=True)
    unchanged_count = fields.Integer(data_key="unchangedCount", required=True)
    stale_count = fields.Integer(data_key="staleCount", required=True, metadata={
        "description": "Rows older than what their contact last received (sourceUpdatedAt): "
                       "not applied, not failures."})
    failures = fields.List(fields.Nested(FailureSchema), required=True)
    results = fields.List(fields.Nested(RowResultSchema))
    dry_run = fields.Boolean(data_key="dryRun", metadata={"description": "Present (true) in a dry run."})


class BulkResponseSchema(Schema):
    success = fields.Boolean(required=True)
    data = fields.Nested(BulkSummarySchema, required=True)


class UpsertResultSchema(Schema):
    status = fields.String(required=True,
                           validate=validate.OneOf(["created", "updated", "unchanged", "stale"]))
    changed_fields = fields.List(fields.String(), data_key="changedFields", required=True,
                                 metadata={"description": "What changed (updated only; else empty)."})
    contact = fields.Nested(ContactSchema, required=True, allow_none=True,
                            metadata={"description": "The contact as written; null in a dry run."})
    dry_run = fields.Boolean(data_key="dryRun", metadata={"description": "Present (true) in a dry run."})


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
    data = fields.List(fields.Raw(metadata={"oneOf": [{"$ref": "#/components/schemas/Contact"},
                                                      {"$ref": "#/components/schemas/Tombstone"}]}),
                       required=True, metadata={"description": "Contacts and tombstones, in feed order."})
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


class CatalogueEntryResponseSchema(Schema):
    success = fields.Boolean(required=True)
    data = fields.Nested(CatalogueEntrySchema, required=True)


class CataloguePageResponseSchema(Schema):
    success = fields.Boolean(required=True)
    data = fields.List(fields.Nested(CatalogueEntrySchema), required=True)
    has_more = fields.Boolean(data_key="hasMore", required=True)
    next_after = fields.Integer(data_key="nextAfter", required=True, allow_none=True,
                                metadata={"description": "Send as after for the next page; null: none."})


class CompanyPageResponseSchema(Schema):
    success = fields.Boolean(required=True)
    data = fields.List(fields.Nested(CompanySchema), required=True)
    has_more = fields.Boolean(data_key="hasMore", required=True)
    next_after = fields.Integer(data_key="nextAfter", required=True, allow_none=True)


class StatusSchema(Schema):
    status = fields.String(required=True)


contact_row_schema = ContactRowSchema()
company_change_schema = CompanyChangeSchema()
contact_upsert_schema = ContactUpsertSchema()
bulk_request_schema = BulkRequestSchema()
contacts_query_schema = ContactsQuerySchema()
new_catalogue_entry_schema = NewCatalogueEntrySchema()
catalogue_page_query_schema = CataloguePageQuerySchema()

# wire name -> (loaded key, field) of every row field.
ROW_FIELD_BY_WIRE_NAME = {field.data_key or name: (name, field)
                          for name, field in contact_row_schema.load_fields.items()}


def value_loader(field: fields.Field) -> Callable[[Any, str, dict], Any]:
    """What `field.deserialize(value, attr, data)` does with a value a JSON body
    holds, for less: the field's own `_deserialize` and validators, without
    marshmallow's per-call wrapper, which checks for `missing` (a body never
    holds it) and builds an `And` of the field's validators on every call, of
    none too: about 40% of a plainly valid row's validation. A field with load
    hooks, or whose class changes that wrapper, keeps `deserialize`. Any
    refusal is raised: load_row then asks the schema, whose messages count.
    """
    kind = type(field)
    if (field.pre_load or field.post_load or kind.deserialize is not fields.Field.deserialize
            or kind._validate is not fields.Field._validate
            or kind._validate_missing is not fields.Field._validate_missing):
        return field.deserialize
    deserialize, allow_none = field._deserialize, field.allow_none

    def load(value: Any, attr: str, data: dict) -> Any:
        if value is None:
            if allow_none:
                return None
            raise field.make_error("null")
        output = deserialize(value, attr, data)
        for validator in field.validators:  # a refusal raises (And would gather them all;
            validator(output)  # load_row then asks the schema for every message)
        return output

    return load


# wire name -> (loaded key, loader of the value) of every row field, for load_valid_row.
ROW_LOADER_BY_WIRE_NAME = {wire_name: (name, value_loader(field))
                           for wire_name, (name, field) in ROW_FIELD_BY_WIRE_NAME.items()}


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
        name, load = ROW_LOADER_BY_WIRE_NAME[wire_name]
        loaded[name] = load(value, wire_name, raw)
    contact_row_schema.check_identity(loaded, raw)
    return contact_row_schema.fold_aliases(loaded)
