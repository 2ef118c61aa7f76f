"""Deleting contacts (DESIGN 9): `POST /contacts/bulk-delete` entries.

Each entry names one contact by exactly one of `id`, `externalId`, `email`
or `username`, loaded as the contact stores them (an email normalised and
lower-cased, a username lower-cased, an externalId trimmed) under the
stored names (`external_id`), so an entry matches exactly what a look-up by
the same value finds.
"""

from typing import Any

from marshmallow import RAISE, Schema, fields, validate, validates_schema

from app.schemas.contacts import (
    ContactList,
    EmailAddress,
    Identifier,
    Username,
    check_one_identifier,
    load_each,
)

MAX_ENTRIES = 1000
MAX_ID = 2 ** 63 - 1  # ids are bigint
DELETE_IDENTIFIERS = ("id", "externalId", "email", "username")


class DeleteEntrySchema(Schema):
    """One contact to delete, by exactly one identifier."""

    class Meta:
        unknown = RAISE

    id = fields.Integer(strict=True, validate=validate.Range(min=1, max=MAX_ID))
    external_id = Identifier(data_key="externalId")
    email = EmailAddress()
    username = Username()

    @validates_schema(pass_original=True, skip_on_field_errors=False)
    def one_identifier(self, data: dict, original: Any, **kwargs: Any) -> None:
        check_one_identifier(original, DELETE_IDENTIFIERS)


class BulkDeleteRequestSchema(Schema):
    """The envelope: the entries, checked one by one afterwards."""

    class Meta:
        unknown = RAISE

    contacts = ContactList(required=True, metadata={
        "type": "array", "minItems": 1, "maxItems": MAX_ENTRIES,
        "items": {"$ref": "#/components/schemas/DeleteEntry"}})


class BulkDeleteResultSchema(Schema):
    deleted_count = fields.Integer(data_key="deletedCount", required=True)
    not_found_count = fields.Integer(data_key="notFoundCount", required=True)
    not_found = fields.List(fields.Dict(), data_key="notFound", required=True,
                            metadata={"description": "The entries that named no contact, as sent."})


class BulkDeleteResponseSchema(Schema):
    success = fields.Boolean(required=True)
    data = fields.Nested(BulkDeleteResultSchema, required=True)


delete_entry_schema = DeleteEntrySchema()
bulk_delete_request_schema = BulkDeleteRequestSchema()


def load_entries(entries: list[Any]) -> tuple[list[dict], dict[str, Any]]:
    """Every entry loaded, and the problems of the bad ones by index (as a string key)."""
    return load_each(delete_entry_schema, entries)
