"""Reading contacts: look-ups and the change feed (no Flask: plain values in and out).

The feed orders contacts by the transaction that last wrote them
(`change_xid`, then `id`) and only ever returns rows of transactions older
than the reading statement's snapshot xmin (app/sql/contacts.sql,
select-contact-changes). A cursor is the position of the last row a page
returned, so a client that follows `nextCursor` sees every later write,
including one that committed after larger transaction ids were visible.
"""

import base64
import binascii
import json
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import psycopg

from app.sql import queries

CURSOR_VERSION = 1
XID = re.compile(r"[0-9]{1,20}")


# The feed's updatedSince slack (app/sql/contacts.sql, select-contact-changes).
SINCE_SLACK = timedelta(minutes=5)


class MalformedCursor(ValueError):
    """A cursor this service did not hand out (or one that was altered)."""


class TombstonesPurged(Exception):
    """The page would start before a tombstone that was purged (DESIGN 9):
    following the feed from there would miss that deletion."""


@dataclass(frozen=True)
class FeedPosition:
    """Where a feed reader is: after (change_xid, id), filtered by updatedSince."""

    change_xid: str = "0"
    contact_id: int = 0
    since: datetime | None = None

    def encode(self) -> str:
        """The opaque `nextCursor` form: base64url of a small JSON object."""
        raw = {"v": CURSOR_VERSION, "x": self.change_xid, "i": self.contact_id,
               "s": self.since.isoformat() if self.since else None}
        text = json.dumps(raw, separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(text).decode().rstrip("=")

    @classmethod
    def of_query(cls, query: dict[str, Any]) -> "FeedPosition":
        """Where a page of a loaded feed query starts: its cursor's position,
        else the start of the feed (from its updatedSince). MalformedCursor
        for a cursor this service did not hand out."""
        if "cursor" in query:
            return cls.decode(query["cursor"])
        return cls(since=query.get("updated_since"))

    @classmethod
    def decode(cls, cursor: str) -> "FeedPosition":
        """The position a cursor names; MalformedCursor for anything else."""
        try:
            text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
            raw = json.loads(text)
            since = None if raw["s"] is None else datetime.fromisoformat(raw["s"])
        except (binascii.Error, ValueError, TypeError, KeyError, RecursionError):
            raise MalformedCursor() from None
        well_formed = (
            isinstance(raw, dict) and raw.get("v") == CURSOR_VERSION
            and isinstance(raw.get("x"), str) and XID.fullmatch(raw["x"]) is not None
            and int(raw["x"]) < 2 ** 63
            and type(raw.get("i")) is int and 0 <= raw["i"] < 2 ** 63
            and (since is None or since.tzinfo is not None)
        )
        if not well_formed:
            raise MalformedCursor()
        return cls(raw["x"], raw["i"], since)


@dataclass(frozen=True)
class FeedPage:
    """Contacts in feed order, the position after the last of them, and whether more wait."""

    contacts: list[dict[str, Any]]
    next_position: FeedPosition
    has_more: bool


def read_changes(conn: psycopg.Connection, tenant_id: int, position: FeedPosition,
                 limit: int) -> FeedPage:
    """One page of the tenant's change feed after `position`: contacts, and the
    tombstones of deleted ones (`{"id", "externalId", "deleted": true, "deletedAt"}`).

    A page that is not full has shown everything below the horizon (the
    oldest transaction still running), so the next position is the horizon
    itself: a quiet poller does not walk the same rows again next time.
    Raises TombstonesPurged when a tombstone after `position` was purged.
    """
    rows = conn.execute(queries["select-contact-changes"], {
        "tenant_id": tenant_id, "after_xid": position.change_xid, "after_id": position.contact_id,
        "since": position.since, "limit": limit + 1,
    }).fetchall()
    if missed_a_purged_tombstone(position, rows[0]):
        raise TombstonesPurged()
    page = [row for row in rows if row["id"] is not None]
    if len(page) > limit:
        last = page[limit - 1]
        return FeedPage([row["contact"] for row in page[:limit]],
                        FeedPosition(last["change_xid"], last["id"], position.since), True)
    horizon = FeedPosition(rows[0]["horizon"], 0, position.since)
    return FeedPage([row["contact"] for row in page], max(position, horizon, key=feed_order), False)


def missed_a_purged_tombstone(position: FeedPosition, horizon: dict[str, Any]) -> bool:
    """Would a page from `position` have shown the newest tombstone purged?
    A cursor before it would; so would the feed's start with an updatedSince
    before its deletion (with the feed's slack). The start of the whole feed,
    with no updatedSince, rebuilds a mirror from scratch and misses nothing."""
    if horizon["purged_xid"] is None:
        return False
    if feed_order(position) != (0, 0):
        purged = FeedPosition(horizon["purged_xid"], horizon["purged_id"])
        return feed_order(position) < feed_order(purged)
    return position.since is not None and position.since - SINCE_SLACK <= horizon["purged_deleted_at"]


def feed_order(position: FeedPosition) -> tuple[int, int]:
    """Positions compare by (change_xid, id), as the feed is ordered."""
    return int(position.change_xid), position.contact_id


def find_contact(conn: psycopg.Connection, tenant_id: int, *, contact_id: int | None = None,
                 email: str | None = None, external_id: str | None = None,
                 username: str | None = None) -> dict[str, Any] | None:
    """The tenant's contact with this id, stored email, externalId or username (give one), or None."""
    if contact_id is not None:
        query, params = queries["select-contact-by-id"], {"id": contact_id}
    elif email is not None:
        query, params = queries["select-contact-by-email"], {"email": email}
    elif external_id is not None:
        query, params = queries["select-contact-by-external-id"], {"external_id": external_id}
    elif username is not None:
        query, params = queries["select-contact-by-username"], {"username": username}
    else:
        raise TypeError("find_contact needs contact_id, email, external_id or username")
    row = conn.execute(query, {"tenant_id": tenant_id, **params}).fetchone()
    return None if row is None else row["contact"]
