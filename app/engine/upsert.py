"""The bulk upsert engine: validated rows in, one outcome per row out.

DESIGN 4.3 defines a batch as if its rows were applied one after another.
The engine keeps exactly that definition and still costs a fixed number of
statements per batch:

1. one SELECT reads every stored contact that the batch's externalIds and
   emails can reach, with its row version;
2. the rows are applied in request order to that snapshot, in memory, so a
   later row sees what an earlier one did;
3. the contacts that changed are locked (in id order) and their versions
   checked, then the net result is written with at most one UPDATE and one
   INSERT, each fed from parallel arrays.

Only what is written is locked, so a re-sync of unchanged contacts is a read.
A contact changed by another transaction between steps 1 and 3 fails the
version check, and the engine raises a serialization failure; a concurrent
batch that inserts one of the same identities after step 1 makes step 3 hit a
unique index. Either way the caller retries the whole transaction, as it does
for PostgreSQL's own failures, with `exclusive=True`.

Writing batches hold their tenant's write lock in shared mode from step 3 to
commit; a retry takes it exclusively before step 1. It waits for the batches
in flight, keeps new ones from writing until it commits, and so cannot fail
the same way again, however many batches collide (a retry that merely locked
the rows it read could still lose to a concurrent insert of a new identity).

`plan_upsert` does steps 1 and 2 and `Batch.write` step 3, so a caller can
look at every row's outcome before deciding to write (all-or-nothing mode).

Plain values in, plain values out: no Flask here, and no commit; the caller
owns the connection and the transaction.
"""

from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg.errors import SerializationFailure
from psycopg.types.json import Jsonb

from app.sql import queries

CREATED, UPDATED, UNCHANGED, FAILED = "created", "updated", "unchanged", "failed"

# Fields a row may clear with null; identities and attributes cannot be cleared.
CLEARABLE_FIELDS = ("first_name", "last_name", "phone", "locale", "opt_in")


@dataclass(eq=False)
class Contact:
    """A stored contact as this batch sees it; `id` is None until inserted."""

    id: int | None
    version: str | None = None  # xmin as read; None for a contact this batch creates
    external_id: str | None = None
    email: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    phone: str | None = None
    locale: str | None = None
    opt_in: bool | None = None
    attributes: dict[str, Any] = field(default_factory=dict)
    created_by_index: int | None = None  # the row of this batch that created it
    changed_fields: set[str] = field(default_factory=set)  # over the whole batch


@dataclass(frozen=True)
class Conflict:
    """The contacts that hold a row's externalId and its email (None: nobody)."""

    external_id_contact: Contact | None
    email_contact: Contact | None


@dataclass(frozen=True)
class RowOutcome:
    """What happened to one row of the request."""

    index: int
    status: str
    contact: Contact | None = None
    conflict: Conflict | None = None


def same_value(a: Any, b: Any) -> bool:
    """Equality as a JSON round trip through jsonb sees it: numbers by value
    (jsonb gives 1e16 back as the integer 10000000000000000, and a float only
    ever had float precision), but true is not 1 and "1" is not 1."""
    if type(a) is type(b):  # the common case, first: a re-sent value of the same type
        return a == b
    if is_number(a) and is_number(b):  # an int and a float
        try:
            return float(a) == float(b)
        except OverflowError:  # an integer beyond any float differs from every float
            return False
    return False


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def merge_attributes(stored: dict[str, Any], sent: dict[str, Any]) -> dict[str, Any]:
    """Merge key by key; a key sent as null is removed."""
    merged = dict(stored)
    for key, value in sent.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    return merged


def attributes_equal(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return a.keys() == b.keys() and all(same_value(a[k], b[k]) for k in a)


class Batch:
    """The snapshot one batch read and the rows applied to it."""

    def __init__(self, tenant_id: int, stored: list[Contact], exclusive: bool) -> None:
        self.tenant_id = tenant_id
        self.exclusive = exclusive  # the tenant's write lock is already held exclusively
        self.outcomes: list[RowOutcome] = []
        self.contacts: list[Contact] = list(stored)
        self.by_external_id = {c.external_id: c for c in stored if c.external_id is not None}
        self.by_email = {c.email: c for c in stored if c.email is not None}

    def apply_row(self, index: int, row: dict[str, Any]) -> RowOutcome:
        """Match one row (DESIGN 4.3) and apply it, or report its conflict."""
        external_id, email = row.get("external_id"), row.get("email")
        contact = self.by_external_id.get(external_id) if external_id is not None else None
        if contact is not None:
            holder = self.by_email.get(email) if email is not None else None
            if holder is not None and holder is not contact:
                return RowOutcome(index, FAILED, conflict=Conflict(contact, holder))
        elif email is not None and email in self.by_email:
            contact = self.by_email[email]
            if external_id is not None and contact.external_id is not None:
                return RowOutcome(index, FAILED, conflict=Conflict(None, contact))
        else:
            contact = Contact(id=None, created_by_index=index)
            self.contacts.append(contact)
            self.apply_fields(contact, row)
            return RowOutcome(index, CREATED, contact)
        changed = self.apply_fields(contact, row)
        return RowOutcome(index, UPDATED if changed else UNCHANGED, contact)

    def apply_fields(self, contact: Contact, row: dict[str, Any]) -> set[str]:
        """Write the row's fields onto the contact; return the names that changed."""
        changed: set[str] = set()
        for name in ("external_id", "email", *CLEARABLE_FIELDS):
            if name in row and not same_value(getattr(contact, name), row[name]):
                changed.add(name)
        if "attributes" in row:
            merged = merge_attributes(contact.attributes, row["attributes"])
            if not attributes_equal(merged, contact.attributes):
                changed.add("attributes")
                contact.attributes = merged
        if "email" in changed and contact.email is not None:
            del self.by_email[contact.email]
        for name in changed - {"attributes"}:
            setattr(contact, name, row[name])
        if "email" in changed:
            self.by_email[contact.email] = contact
        if "external_id" in changed:
            self.by_external_id[contact.external_id] = contact
        contact.changed_fields |= changed
        return changed

    @property
    def failed(self) -> list[RowOutcome]:
        return [o for o in self.outcomes if o.status == FAILED]

    @property
    def written(self) -> list[Contact]:
        """The contacts the batch creates or changes (each has its id once written)."""
        return [c for c in self.contacts if c.changed_fields]

    def write(self, conn: psycopg.Connection) -> None:
        """Write the net result: changed existing contacts, then new ones."""
        changed = [c for c in self.written if c.id is not None]
        new = sorted((c for c in self.contacts if c.id is None),
                     key=lambda c: (c.external_id or "", c.email or ""))
        if (changed or new) and not self.exclusive:
            conn.execute(queries["lock-tenant-writes-shared"], {"tenant_id": self.tenant_id})
        if changed:
            # Still checked under the exclusive lock: a writer outside
            # contactsync (an operator's UPDATE) does not take it.
            self.lock_and_check_versions(conn, changed)
            conn.execute(queries["update-contacts"],
                         {"tenant_id": self.tenant_id, "ids": [c.id for c in changed],
                          **contact_arrays(changed)})
        if new:
            self.insert(conn, new)

    def lock_and_check_versions(self, conn: psycopg.Connection, contacts: list[Contact]) -> None:
        """Lock the contacts about to be updated; fail if any changed since step 1."""
        locked = conn.execute(queries["lock-contacts-by-ids"],
                              {"tenant_id": self.tenant_id,
                               "ids": sorted(c.id for c in contacts)}).fetchall()
        current = {row["id"]: row["version"] for row in locked}
        if any(current.get(c.id) != c.version for c in contacts):
            raise SerializationFailure("a contact of the batch changed after it was read")

    def insert(self, conn: psycopg.Connection, new: list[Contact]) -> None:
        """Insert new contacts and give each its id, found again by its key."""
        rows = conn.execute(queries["insert-contacts"],
                            {"tenant_id": self.tenant_id, **contact_arrays(new)}).fetchall()
        by_external_id = {r["external_id"]: r["id"] for r in rows if r["external_id"] is not None}
        by_email = {r["email"]: r["id"] for r in rows if r["external_id"] is None}
        for contact in new:
            if contact.external_id is not None:
                contact.id = by_external_id[contact.external_id]
            else:
                contact.id = by_email[contact.email]


def contact_arrays(contacts: list[Contact]) -> dict[str, list[Any]]:
    """Parallel arrays of the stored fields, as the write statements take them."""
    return {
        "external_ids": [c.external_id for c in contacts],
        "emails": [c.email for c in contacts],
        "first_names": [c.first_name for c in contacts],
        "last_names": [c.last_name for c in contacts],
        "phones": [c.phone for c in contacts],
        "locales": [c.locale for c in contacts],
        "opt_ins": [c.opt_in for c in contacts],
        "attributes": [Jsonb(c.attributes) for c in contacts],
    }


def read_contacts(conn: psycopg.Connection, tenant_id: int,
                  rows: list[tuple[int, dict[str, Any]]]) -> list[Contact]:
    """Read, with their versions, every stored contact the rows can reach."""
    external_ids = sorted({r["external_id"] for _, r in rows if r.get("external_id") is not None})
    emails = sorted({r["email"] for _, r in rows if r.get("email") is not None})
    records = conn.execute(queries["select-contacts-by-keys"],
                           {"tenant_id": tenant_id, "external_ids": external_ids,
                            "emails": emails}).fetchall()
    return [Contact(**record) for record in records]


def plan_upsert(conn: psycopg.Connection, tenant_id: int,
                rows: list[tuple[int, dict[str, Any]]], *, exclusive: bool = False) -> Batch:
    """Read what validated `(index, row)` pairs reach and apply them in memory.

    Nothing is written yet: the caller reads `batch.outcomes`, then calls
    `batch.write(conn)` in the same transaction, or rolls back. `exclusive`
    (for a retry) first takes the tenant's write lock exclusively.
    """
    if exclusive:
        conn.execute(queries["lock-tenant-writes-exclusive"], {"tenant_id": tenant_id})
    batch = Batch(tenant_id, read_contacts(conn, tenant_id, rows), exclusive)
    batch.outcomes = [batch.apply_row(index, row) for index, row in rows]
    return batch


def upsert_contacts(conn: psycopg.Connection, tenant_id: int,
                    rows: list[tuple[int, dict[str, Any]]]) -> Batch:
    """Plan and write in one go, inside the caller's transaction."""
    batch = plan_upsert(conn, tenant_id, rows)
    batch.write(conn)
    return batch
