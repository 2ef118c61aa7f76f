"""Inrō's door (DESIGN 11, seed 000): `PUT /api/v1/contacts/bulk` entries.

Each entry names one contact by exactly one of `id`, `username` or `email`
and carries a `contact` of the fields Inrō lets a client set. They load into
the canonical names of DESIGN 8 (`language` -> locale, `custom_properties` ->
attributes; `folder_ids` stays ids, resolved when the task applies), with
the same field rules as the native door.
"""

from typing import Any

from marshmallow import RAISE, Schema, fields, post_load, validate, validates_schema

from app.schemas.contacts import (
    ATTRIBUTES_DOC,
    IDENTIFIER_DOC,
    LOCALE_DOC,
    MAX_NAMES_PER_ROW,
    SOURCE_TIME_DOC,
    STATUSES,
    Attributes,
    ContactList,
    EmailAddress,
    Locale,
    Phone,
    SourceTime,
    Text,
    Username,
    check_one_identifier,
    load_each,
    optional_text,
)

MAX_ENTRIES = 1000
MAX_ID = 2 ** 63 - 1  # ids are bigint
INRO_IDENTIFIERS = ("id", "username", "email")


class InroContactSchema(Schema):
    """The fields an entry changes (Inrō's `contact` object)."""

    class Meta:
        unknown = RAISE

    status = Text(validate=validate.OneOf(STATUSES), metadata={
        "enum": list(STATUSES), "description": "auto lets the contact's status be derived again."})
    email = EmailAddress(metadata={"description": "The contact's new address."})
    phone = Phone(allow_none=True, metadata={"maxLength": 32})
    language = Locale(allow_none=True, metadata=LOCALE_DOC)
    folder_ids = fields.List(
        fields.Integer(strict=True, validate=validate.Range(min=1, max=MAX_ID)),
        validate=validate.Length(max=MAX_NAMES_PER_ROW),
        metadata={"description": "The contact's folders become exactly these (the tenant's folder ids)."})
    custom_properties = Attributes(metadata=ATTRIBUTES_DOC)
    name = optional_text(255, "name")
    source_updated_at = SourceTime(metadata=SOURCE_TIME_DOC)

    @post_load
    def canonical_names(self, data: dict, **kwargs: Any) -> dict:
        """Inrō's names onto the canonical ones (DESIGN 8)."""
        if "language" in data:
            data["locale"] = data.pop("language")
        if "custom_properties" in data:
            data["attributes"] = data.pop("custom_properties")
        if "folder_ids" in data:
            data["folder_ids"] = sorted(set(data["folder_ids"]))
        return data


class InroEntrySchema(Schema):
    """One entry: exactly one identifier, and the contact's changes."""

    class Meta:
        unknown = RAISE

    id = fields.Integer(strict=True, validate=validate.Range(min=1, max=MAX_ID))
    username = Username(metadata=IDENTIFIER_DOC)
    email = EmailAddress()
    contact = fields.Nested(InroContactSchema, required=True)

    @validates_schema(pass_original=True, skip_on_field_errors=False)
    def one_identifier(self, data: dict, original: Any, **kwargs: Any) -> None:
        check_one_identifier(original, INRO_IDENTIFIERS)


class InroBulkRequestSchema(Schema):
    """The envelope: the entries, checked one by one afterwards."""

    class Meta:
        unknown = RAISE

    contacts = ContactList(required=True, metadata={
        "type": "array", "minItems": 1, "maxItems": MAX_ENTRIES,
        "items": {"$ref": "#/components/schemas/InroEntry"}})


inro_entry_schema = InroEntrySchema()
inro_bulk_request_schema = InroBulkRequestSchema()


def load_entries(entries: list[Any]) -> tuple[list[dict], dict[str, Any]]:
    """Every entry loaded, and the problems of the bad ones by index (as a string key)."""
    return load_each(inro_entry_schema, entries)
