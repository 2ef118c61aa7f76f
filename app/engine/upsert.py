"""The bulk upsert engine: validated rows in, one outcome per row out.

DESIGN 4.3 and 8 define a batch as if its rows were applied one after
another, matched by externalId, then email, then username. The engine keeps
exactly that definition and still costs a fixed number of statements per
batch, whatever its size and whatever it does to tags, folders and companies:

1. one SELECT reads every stored contact that the batch's identities can
   reach, with its row version (and its links, when a row changes any), and
   one more the catalogue names of the companies the rows send, if any;
2. the rows are applied in request order to that snapshot, in memory, so a
   later row sees what an earlier one did;
3. the contacts that changed are locked (in id order) and their versions
   checked, then the net result is written with at most one UPDATE and one
   INSERT, each fed from parallel arrays; then, for each relation a row
   changed, one statement makes the catalogue entries the rows named and
   one deletes and adds the links that changed.

So a batch costs at most 12 statements: 1 read (2 with companies), the
tenant's write lock, the row locks, 1 UPDATE, 1 INSERT and 2 per relation
(tests/test_upsert.py counts them). A plain batch still costs 5, in two
round trips: the lock, the row locks, UPDATE and INSERT go out in one
pipeline, and the versions are checked when its answers are back.

Only what is written is locked, so a re-sync of unchanged contacts is a read.
A contact changed by another transaction between steps 1 and 3 fails the
version check (a change of links updates the contact's row too, so the
version covers them), and the engine raises a serialization failure; a
concurrent batch that inserts one of the same identities or catalogue
entries after step 1 makes step 3 hit a unique index, or miss the entry. In
every case the caller retries the whole transaction, as it does for
PostgreSQL's own failures, with `exclusive=True`.

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

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg.errors import SerializationFailure
from psycopg.rows import tuple_row
from psycopg.types.json import Jsonb

from app.engine.catalogues import ensure_companies, ensure_names
from app.sql import queries

CREATED, UPDATED, UNCHANGED, FAILED = "created", "updated", "unchanged", "failed"
STALE = "stale"  # older than what the contact last received (sourceUpdatedAt): not applied
# A row with `create_only` (Intercom's strict create) whose identity is
# already held fails with this code instead of updating the holder.
CONTACT_EXISTS = "contact_exists"

# A row's identities, in the order they match (DESIGN 4.3 and 8).
IDENTITIES = ("external_id", "email", "username")
# The stored fields a row sets by value (a clearable one is cleared with null).
SCALAR_FIELDS = ("external_id", "email", "username", "first_name", "last_name", "name", "phone",
                 "locale", "opt_in", "status", "owner_id", "avatar_url", "source_updated_at")
# A contact's links to the tenant's catalogues, and how each is written.
RELATIONS = ("tags", "folders", "companies")
LINK_WRITES = {"tags": queries["write-contact-tags"], "folders": queries["write-contact-folders"],
               "companies": queries["write-contact-companies"]}
ABSENT = object()
SCALAR_FIELD_SET = frozenset(SCALAR_FIELDS)


@dataclass(eq=False, slots=True)  # slots: every contact a batch reads is one of these
class Contact:
    """A stored contact as this batch sees it; `id` is None until inserted.

    `links` holds, per relation, the keys of its entries: lower-cased tag and
    folder names, the client's companyIds. `stored_links` maps the keys read
    to their catalogue ids, so that only the difference is written. Both are
    None (no links) until a batch that touches relations reads or sets them:
    most batches never do, and every contact they read would pay for them.
    """

    id: int | None
    version: str | None = None  # xmin as read; None for a contact this batch creates
    external_id: str | None = None
    email: str | None = None
    username: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    name: str | None = None
    phone: str | None = None
    locale: str | None = None
    opt_in: bool | None = None
    status: str = "auto"
    owner_id: str | None = None
    avatar_url: str | None = None
    attributes: dict[str, Any] = field(default_factory=dict)
    # UTC as YYYY-MM-DDTHH:MM:SS.ffffffZ, so that text order is time order.
    source_updated_at: str | None = None
    links: dict[str, set[str]] | None = None
    stored_links: dict[str, dict[str, int]] | None = None
    created_by_index: int | None = None  # the row of this batch that created it
    changed_fields: set[str] = field(default_factory=set)  # over the whole batch

    def links_of(self, relation: str) -> set[str]:
        """The keys of the contact's entries of one relation, to read or change."""
        if self.links is None:
            self.links = {"tags": set(), "folders": set(), "companies": set()}
        return self.links[relation]

    def stored_links_of(self, relation: str) -> dict[str, int]:
        """The entries of one relation as read: key -> catalogue id."""
        return {} if self.stored_links is None else self.stored_links[relation]


@dataclass(frozen=True)
class Conflict:
    """The contacts that hold a row's externalId, email and username (None: nobody)."""

    external_id_contact: Contact | None
    email_contact: Contact | None
    username_contact: Contact | None = None


@dataclass(slots=True)  # not frozen: its __init__ would set each field by object.__setattr__ (5x the time)
class RowOutcome:
    """What happened to one row of the request. A failed row has a conflict,
    or (an update by id whose contact is gone) neither contact nor conflict."""

    index: int
    status: str
    contact: Contact | None = None
    conflict: Conflict | None = None
    changed: frozenset[str] = frozenset()  # what this row changed (engine names), for an updated row
    code: str | None = None  # a failure's own code (CONTACT_EXISTS) when neither of the above says it


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


def merged_attributes(stored: dict[str, Any], sent: dict[str, Any]) -> dict[str, Any] | None:
    """The attributes after merging `sent` key by key (a key sent as null is
    removed), or None when that changes nothing, as a re-sync's rows do:
    then no merged copy is built."""
    for key, value in sent.items():
        if value is None:
            if key in stored:
                break
            continue
        old = stored.get(key, ABSENT)
        # same_value's common case inline (a value of the stored type), as in apply_fields.
        if (old != value) if type(old) is type(value) else not same_value(old, value):
            break
    else:
        return None
    merged = dict(stored)
    for key, value in sent.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    return merged


class Batch:
    """The snapshot one batch read and the rows applied to it."""

    def __init__(self, tenant_id: int, stored: list[Contact], company_names: dict[str, str | None],
                 exclusive: bool) -> None:
        self.tenant_id = tenant_id
        self.exclusive = exclusive  # the tenant's write lock is already held exclusively
        self.outcomes: list[RowOutcome] = []
        self.contacts: list[Contact] = list(stored)
        self.by_id: dict[int, Contact] = {c.id: c for c in stored if c.id is not None}
        self.holders: dict[str, dict[str, Contact]] = {
            identity: {value: c for c in stored if (value := getattr(c, identity)) is not None}
            for identity in IDENTITIES}
        # The catalogue as the rows left it: companyId -> name, for every
        # company a row sends (absent: not in the catalogue yet).
        self.company_names = company_names
        # What the catalogues must hold at the end: each tag or folder name a
        # row added, in its first spelling, and each company a row attached
        # with the last name sent for it (None: none sent).
        self.spellings: dict[str, dict[str, str]] = {"tags": {}, "folders": {}}
        self.attached_companies: dict[str, str | None] = {}

    def apply_row(self, index: int, row: dict[str, Any]) -> RowOutcome:
        """Match one row (DESIGN 4.3: externalId, then email, then username) and
        apply it, or report its conflict. A row with an `id` (an update by id,
        as Inrō's door sends) updates that contact only: it never creates one,
        and its identities are values to set, held by nobody else. A row with
        `create_only` (Intercom's strict create) only creates: an identity of
        it that a contact holds fails it."""
        # Plain loops, not generator expressions: this runs for every row.
        holders: dict[str, Contact | None] = {}
        first_holder = None
        for identity in IDENTITIES:
            value = row.get(identity)
            if value is not None:
                holder = holders[identity] = self.holders[identity].get(value)
                if first_holder is None:
                    first_holder = holder
        if "id" in row:
            contact = self.by_id.get(row["id"])
            if contact is None:
                return RowOutcome(index, FAILED)
        else:
            contact = first_holder
            if contact is not None and row.get("create_only"):
                # Strict create: the holder may be stored or made by an
                # earlier row of this batch; either way nothing is changed.
                return RowOutcome(index, FAILED, conflict=Conflict(
                    holders.get("external_id"), holders.get("email"), holders.get("username")),
                    code=CONTACT_EXISTS)
        if contact is None:
            contact = Contact(id=None, created_by_index=index)
            self.contacts.append(contact)
            self.apply_fields(contact, row)
            return RowOutcome(index, CREATED, contact)
        # Another contact holds one of the row's identities, or the contact
        # already carries another externalId (an externalId is attached, never changed).
        taken = False
        for holder in holders.values():
            if holder is not None and holder is not contact:
                taken = True
                break
        other_external_id = "external_id" in holders and contact.external_id not in (None, row["external_id"])
        if taken or other_external_id:
            return RowOutcome(index, FAILED, conflict=Conflict(
                holders.get("external_id"), holders.get("email"), holders.get("username")))
        # The stale-write guard (DESIGN 15): UTC text of one format, so text order is time order.
        sent_at, received_at = row.get("source_updated_at"), contact.source_updated_at
        if sent_at is not None and received_at is not None and sent_at < received_at:
            return RowOutcome(index, STALE, contact)
        changed = self.apply_fields(contact, row)
        if not changed:
            return RowOutcome(index, UNCHANGED, contact)
        return RowOutcome(index, UPDATED, contact, changed=frozenset(changed))

    def apply_fields(self, contact: Contact, row: dict[str, Any]) -> set[str]:
        """Write the row's fields onto the contact; return the names that changed."""
        changed = set()
        for name, value in row.items():
            if name in SCALAR_FIELD_SET:
                stored = getattr(contact, name)
                # same_value's common case inline (a value of the stored type):
                # this runs for every field of every row.
                if (stored != value) if type(stored) is type(value) else not same_value(stored, value):
                    changed.add(name)
        if changed:
            moved = [identity for identity in IDENTITIES if identity in changed]
            for identity in moved:
                if getattr(contact, identity) is not None:
                    del self.holders[identity][getattr(contact, identity)]
            for name in changed:
                setattr(contact, name, row[name])
            for identity in moved:
                self.holders[identity][getattr(contact, identity)] = contact
        if "attributes" in row:
            merged = merged_attributes(contact.attributes, row["attributes"])
            if merged is not None:
                changed.add("attributes")
                contact.attributes = merged
        if "tags" in row or "folders" in row or "companies" in row:
            for relation, spellings in self.spellings.items():
                if relation in row and change_names(contact.links_of(relation), row[relation], spellings):
                    changed.add(relation)
            if "companies" in row and self.change_companies(contact, row["companies"]):
                changed.add("companies")
        if changed:
            contact.changed_fields |= changed
        return changed

    def change_companies(self, contact: Contact, changes: list[dict[str, Any]]) -> bool:
        """Attach and detach the row's companies; True when that changed the
        contact. Renaming a company it has counts as a change of it (and of
        no other contact: the name is the catalogue's)."""
        changed = False
        companies = contact.links_of("companies")
        for change in changes:
            company_id = change["company_id"]
            if change["remove"]:
                if company_id in companies:
                    companies.discard(company_id)
                    changed = True
                continue
            if company_id not in companies:
                companies.add(company_id)
                changed = True
            if "name" in change:
                if self.company_names.get(company_id, ABSENT) != change["name"]:
                    changed = True
                self.company_names[company_id] = change["name"]
                self.attached_companies[company_id] = change["name"]
            else:
                self.attached_companies.setdefault(company_id, None)
        return changed

    @property
    def failed(self) -> list[RowOutcome]:
        return [o for o in self.outcomes if o.status == FAILED]

    @property
    def written(self) -> list[Contact]:
        """The contacts the batch creates or changes (each has its id once written)."""
        return [c for c in self.contacts if c.changed_fields]

    def write(self, conn: psycopg.Connection) -> None:
        """Write the net result: changed existing contacts, new ones, then their relations.

        The tenant's lock, the row locks, UPDATE and INSERT go out in one
        pipeline, one round trip: the versions are checked once their answers
        are back. A stale version has by then been overwritten, inside this
        transaction only, which the raise rolls back.
        """
        changed = [c for c in self.written if c.id is not None]
        new = sorted((c for c in self.contacts if c.id is None),
                     key=lambda c: (c.external_id or "", c.email or "", c.username or ""))
        if changed or new:
            locked = inserted = None
            with conn.pipeline():
                if not self.exclusive:
                    conn.execute(queries["lock-tenant-writes-shared"], {"tenant_id": self.tenant_id})
                if changed:
                    # Still locked and checked under the exclusive lock: a
                    # writer outside contactsync (an operator's UPDATE) does not take it.
                    locked = conn.execute(queries["lock-contacts-by-ids"],
                                          {"tenant_id": self.tenant_id, "ids": sorted(c.id for c in changed)})
                    conn.execute(queries["update-contacts"],
                                 {"tenant_id": self.tenant_id, "ids": [c.id for c in changed],
                                  **contact_arrays(changed)})
                if new:
                    inserted = conn.execute(queries["insert-contacts"],
                                            {"tenant_id": self.tenant_id, **contact_arrays(new)})
            # The pipeline's end waited for every answer (and raised a failure).
            if locked is not None:
                check_versions(changed, locked.fetchall())
            if inserted is not None:
                assign_ids(new, inserted.fetchall())
        self.write_relations(conn, [*changed, *new])

    def write_relations(self, conn: psycopg.Connection, written: list[Contact]) -> None:
        """Write what changed of the written contacts' tags, folders and
        companies: two statements for each relation a row changed, whatever
        the batch's size (the catalogue's entries, then the links)."""
        for relation in RELATIONS:
            contacts = [c for c in written if relation in c.changed_fields]
            if contacts:
                entry_ids = self.ensure_entries(conn, relation)
                conn.execute(LINK_WRITES[relation], {"tenant_id": self.tenant_id,
                                                     **link_changes(contacts, relation, entry_ids)})

    def ensure_entries(self, conn: psycopg.Connection, relation: str) -> dict[str, int]:
        """The catalogue ids of every entry the rows added (key -> id), made when new."""
        if relation == "companies":
            return ensure_companies(conn, self.tenant_id, self.attached_companies)
        entries = ensure_names(conn, relation, self.tenant_id, self.spellings[relation])
        return {key: entry["id"] for key, entry in entries.items()}


def first_identity(values: Any) -> tuple[str, str]:
    """A new contact's key within its batch: its first identity and which one it is."""
    identity = next(name for name in IDENTITIES if values[name] is not None)
    return identity, values[identity]


def check_versions(contacts: list[Contact], locked: list[dict[str, Any]]) -> None:
    """Fail if any contact about to be updated changed since it was read (the
    locked rows' versions). Every change of a contact's links updates its row
    too, so the version covers its tags, folders and companies as well."""
    current = {row["id"]: row["version"] for row in locked}
    if any(current.get(c.id) != c.version for c in contacts):
        raise SerializationFailure("a contact of the batch changed after it was read")


def assign_ids(new: list[Contact], inserted: list[dict[str, Any]]) -> None:
    """Give each new contact its id, found again by its first identity."""
    id_of = {first_identity(row): row["id"] for row in inserted}
    for contact in new:
        contact.id = id_of[first_identity({name: getattr(contact, name) for name in IDENTITIES})]


def change_names(current: set[str], changes: dict[str, list[str]], spellings: dict[str, str]) -> bool:
    """Add and remove tag or folder names (compared lower-cased), or with
    `set` make them exactly these; note each name added in its first
    spelling. True when the contact's set changed."""
    if "set" in changes:
        wanted = {name.lower(): name for name in changes["set"]}
        for key, name in wanted.items():
            if key not in current:
                spellings.setdefault(key, name)
        changed = current != wanted.keys()
        current.clear()
        current.update(wanted)
        return changed
    changed = False
    for name in changes["add"]:
        key = name.lower()
        if key not in current:
            current.add(key)
            spellings.setdefault(key, name)
            changed = True
    for name in changes["remove"]:
        key = name.lower()
        if key in current:
            current.discard(key)
            changed = True
    return changed


def link_changes(contacts: list[Contact], relation: str, entry_ids: dict[str, int]) -> dict[str, list[int]]:
    """Parallel arrays of the links to add and to delete: (contact id, entry id)."""
    added: list[tuple[int, int]] = []
    removed: list[tuple[int, int]] = []
    for contact in contacts:
        assert contact.id is not None
        keys, stored = contact.links_of(relation), contact.stored_links_of(relation)
        added.extend((contact.id, entry_ids[key]) for key in keys - stored.keys())
        removed.extend((contact.id, stored[key]) for key in stored.keys() - keys)
    added.sort()  # concurrent batches insert links in the same order
    return {"added_contact_ids": [a[0] for a in added], "added_ids": [a[1] for a in added],
            "removed_contact_ids": [r[0] for r in removed], "removed_ids": [r[1] for r in removed]}


def contact_arrays(contacts: list[Contact]) -> dict[str, Any]:
    """Parallel arrays of the stored fields, as the write statements take them."""
    return {
        "external_ids": [c.external_id for c in contacts],
        "emails": [c.email for c in contacts],
        "usernames": [c.username for c in contacts],
        "first_names": [c.first_name for c in contacts],
        "last_names": [c.last_name for c in contacts],
        "names": [c.name for c in contacts],
        "phones": [c.phone for c in contacts],
        "locales": [c.locale for c in contacts],
        "opt_ins": [c.opt_in for c in contacts],
        "statuses": [c.status for c in contacts],
        "owner_ids": [c.owner_id for c in contacts],
        "avatar_urls": [c.avatar_url for c in contacts],
        "attributes": Jsonb([c.attributes for c in contacts]),  # one document: see update-contacts
        "source_updated_ats": [c.source_updated_at for c in contacts],
    }


# The columns of select-contacts-by-keys(-plain), in Contact's field order:
# rows come back as tuples and become Contacts by position, without a dict
# per row (tests/test_upsert.py checks the two orders agree).
STORED_COLUMNS = ("id", "version", "external_id", "email", "username", "first_name", "last_name", "name",
                  "phone", "locale", "opt_in", "status", "owner_id", "avatar_url", "attributes",
                  "source_updated_at")
ATTRIBUTES_AT = STORED_COLUMNS.index("attributes")


def stored_contacts(records: list[tuple[Any, ...]], with_links: bool) -> list[Contact]:
    """Contacts from rows of select-contacts-by-keys(-plain). `attributes`
    comes as jsonb's text and is parsed for all rows in one json.loads: one
    call per row cost four times as much, most of a re-sync's read. With
    links, the row ends with tags, folders and companies as [catalogue id,
    key] pairs (tag and folder names are compared lower-cased)."""
    attributes = json.loads("[" + ",".join(record[ATTRIBUTES_AT] for record in records) + "]")
    if not with_links:
        return [Contact(*record[:ATTRIBUTES_AT], attrs, record[ATTRIBUTES_AT + 1])
                for record, attrs in zip(records, attributes, strict=True)]
    contacts = []
    for record, attrs in zip(records, attributes, strict=True):
        pairs = dict(zip(RELATIONS, record[len(STORED_COLUMNS):], strict=True))
        stored_links = {relation: {key if relation == "companies" else key.lower(): entry_id
                                   for entry_id, key in pairs[relation] or []} for relation in RELATIONS}
        contacts.append(Contact(*record[:ATTRIBUTES_AT], attrs, record[ATTRIBUTES_AT + 1],
                                links={relation: set(keys) for relation, keys in stored_links.items()},
                                stored_links=stored_links))
    return contacts


def batch_keys(rows: list[tuple[int, dict[str, Any]]]) -> dict[str, set[Any]]:
    """The ids (updates by id) and identities the rows match by."""
    return {identity: {r[identity] for _, r in rows if r.get(identity) is not None}
            for identity in ("id", *IDENTITIES)}


def changes_relations(rows: Iterable[Any]) -> bool:
    """Does a row change tags, folders or companies? Only then are links read.
    Loaded rows and rows as sent name these fields alike."""
    return any(isinstance(r, dict) and ("tags" in r or "folders" in r or "companies" in r) for r in rows)


@dataclass
class Snapshot:
    """The stored contacts one read found, and what it looked for: the keys
    (as batch_keys names them) and whether it read their links."""

    tenant_id: int
    keys: dict[str, set[Any]]
    with_links: bool
    contacts: list[Contact]

    def emails(self) -> frozenset[str]:
        """The addresses of the contacts read: the tenant holds them."""
        return frozenset(c.email for c in self.contacts if c.email is not None)

    def reaching(self, conn: psycopg.Connection, rows: list[tuple[int, dict[str, Any]]]) -> list[Contact]:
        """Every stored contact the rows can reach: those read, and those that
        keys the read did not look for reach (read now, in the same transaction)."""
        wanted = batch_keys(rows)
        if changes_relations(r for _, r in rows) and not self.with_links:
            return read_snapshot(conn, self.tenant_id, wanted, with_links=True).contacts
        missing = {key: values - self.keys.get(key, set()) for key, values in wanted.items()}
        if not any(missing.values()):
            return self.contacts
        read = {c.id for c in self.contacts}
        more = read_snapshot(conn, self.tenant_id, missing, with_links=self.with_links).contacts
        return [*self.contacts, *(c for c in more if c.id not in read)]


def read_snapshot(conn: psycopg.Connection, tenant_id: int, keys: dict[str, set[Any]], *,
                  with_links: bool, exclusive: bool = False) -> Snapshot:
    """Read, with their versions, the tenant's contacts these keys reach; with
    their tags, folders and companies if `with_links`. `exclusive` (a retry)
    first takes the tenant's write lock exclusively."""
    if exclusive:
        conn.execute(queries["lock-tenant-writes-exclusive"], {"tenant_id": tenant_id})
    params = {"tenant_id": tenant_id, **{name: sorted(keys.get(key, ())) for key, name in (
        ("id", "ids"), ("external_id", "external_ids"), ("email", "emails"), ("username", "usernames"))}}
    # No link read or written: the contacts alone, with empty links as a new
    # contact has (a third of a re-sync's engine time otherwise).
    query = queries["select-contacts-by-keys" if with_links else "select-contacts-by-keys-plain"]
    records = conn.cursor(row_factory=tuple_row).execute(query, params).fetchall()
    return Snapshot(tenant_id, keys, with_links, stored_contacts(records, with_links))


def read_company_names(conn: psycopg.Connection, tenant_id: int,
                       rows: list[tuple[int, dict[str, Any]]]) -> dict[str, str | None]:
    """The catalogue's name of every company a row sends (none when no row sends one)."""
    company_ids = sorted({c["company_id"] for _, r in rows for c in r.get("companies", ())})
    if not company_ids:
        return {}
    records = conn.execute(queries["select-company-names"],
                           {"tenant_id": tenant_id, "company_ids": company_ids}).fetchall()
    return {record["company_id"]: record["name"] for record in records}


def plan_upsert(conn: psycopg.Connection, tenant_id: int, rows: list[tuple[int, dict[str, Any]]], *,
                exclusive: bool = False, snapshot: Snapshot | None = None) -> Batch:
    """Read what validated `(index, row)` pairs reach and apply them in memory.

    Nothing is written yet: the caller reads `batch.outcomes`, then calls
    `batch.write(conn)` in the same transaction, or rolls back. `exclusive`
    (for a retry) first takes the tenant's write lock exclusively. A
    `snapshot` read earlier in the transaction (taken with the same
    `exclusive`) is used, and completed with what it did not look for.
    """
    if snapshot is None:
        stored = read_snapshot(conn, tenant_id, batch_keys(rows),
                               with_links=changes_relations(r for _, r in rows), exclusive=exclusive).contacts
    else:
        stored = snapshot.reaching(conn, rows)
    batch = Batch(tenant_id, stored, read_company_names(conn, tenant_id, rows), exclusive)
    batch.outcomes = [batch.apply_row(index, row) for index, row in rows]
    return batch


def upsert_contacts(conn: psycopg.Connection, tenant_id: int,
                    rows: list[tuple[int, dict[str, Any]]]) -> Batch:
    """Plan and write in one go, inside the caller's transaction."""
    batch = plan_upsert(conn, tenant_id, rows)
    batch.write(conn)
    return batch
