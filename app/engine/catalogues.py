"""The tenants' catalogues of tags, folders and companies: entries made when a
row (or POST /tags, /folders) first names them, and pages of them to read.

Tag and folder names are compared case-insensitively and keep the spelling
they were created with; companies are keyed by the client's companyId.
Plain values in and out; no Flask.
"""

from typing import Any

import psycopg
from psycopg.errors import SerializationFailure

from app.sql import queries

ENSURE_QUERIES = {"tags": queries["ensure-tags"], "folders": queries["ensure-folders"]}
LIST_QUERIES = {"tags": queries["list-tags"], "folders": queries["list-folders"],
                "companies": queries["list-companies"]}


def ensure_names(conn: psycopg.Connection, kind: str, tenant_id: int,
                 spellings: dict[str, str]) -> dict[str, dict[str, Any]]:
    """The tag or folder entries of these names (lower-cased name -> {id, name,
    created}), creating the new ones in the spelling given. A name another
    transaction created after this one's snapshot is not seen: a
    serialization failure, so that the caller retries and then finds it."""
    rows = conn.execute(ENSURE_QUERIES[kind], {
        "tenant_id": tenant_id, "names": sorted(spellings.values(), key=str.lower)}).fetchall()
    entries = {row["name"].lower(): row for row in rows}
    if entries.keys() != spellings.keys():
        raise SerializationFailure("a catalogue entry was created by a concurrent transaction")
    return entries


def ensure_companies(conn: psycopg.Connection, tenant_id: int,
                     attached: dict[str, str | None]) -> dict[str, int]:
    """The catalogue ids of these companies (companyId -> id), creating the new
    ones and renaming those sent with another name; as ensure_names on a race."""
    company_ids = sorted(attached)
    rows = conn.execute(queries["ensure-companies"], {
        "tenant_id": tenant_id, "company_ids": company_ids,
        "names": [attached[company_id] for company_id in company_ids]}).fetchall()
    ids = {row["company_id"]: row["id"] for row in rows}
    if ids.keys() != attached.keys():
        raise SerializationFailure("a company was created by a concurrent batch")
    return ids


def list_entries(conn: psycopg.Connection, tenant_id: int, kind: str, *, after: int,
                 limit: int) -> tuple[list[dict[str, Any]], bool]:
    """A page of the tenant's tags, folders or companies after catalogue id
    `after`, and whether more follow."""
    rows = conn.execute(LIST_QUERIES[kind], {"tenant_id": tenant_id, "after": after,
                                             "limit": limit + 1}).fetchall()
    return rows[:limit], len(rows) > limit


def add_name(conn: psycopg.Connection, tenant_id: int, kind: str, name: str) -> tuple[dict[str, Any], bool]:
    """The tag or folder of this name (in any case), made if new; and whether it was made."""
    [entry] = ensure_names(conn, kind, tenant_id, {name.lower(): name}).values()
    return {"id": entry["id"], "name": entry["name"]}, entry["created"]
