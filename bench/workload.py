"""Batches: the same contacts as a JSON body (service) and as validated rows (engine).

Each client thread owns half of the bench tenants, so two threads never
lock the same rows. Within a tenant, the first half of the seeded contacts
(0-9,999 at the default scale) are the "existing" half of mixed batches
(updated again and again, with a new `rev` attribute each time so every one
is a real update) and the second half (10,000-19,999) are only ever resent
unchanged, so their stored values stay those of `stored_contact`. Both
ranges wrap around: at the default scale a thread's 50,000 resynced
contacts come round again every 50 batches of 1000, so later rounds may find
their emails in a worker's email-validation cache, as a periodic resync would.
New contacts are always new, so their emails never are cached.
"""

import itertools
import json
import time
from dataclasses import dataclass, field
from typing import Any

from bench.seed import CONTACTS_PER_TENANT, TENANT_COUNT, contact_number, stored_contact

THREADS = 2
TENANTS_PER_THREAD = TENANT_COUNT // THREADS
UPDATABLE = range(0, CONTACTS_PER_TENANT // 2)  # local numbers mixed batches update
RESYNCED = range(CONTACTS_PER_TENANT // 2, CONTACTS_PER_TENANT)  # never changed

# Engine field name -> wire (JSON) field name of the native door.
WIRE_NAMES = {"external_id": "externalId", "email": "email", "first_name": "firstName",
              "locale": "locale", "opt_in": "optIn", "attributes": "attributes"}

# One counter for the whole process: a contact updated in one phase and again
# in a later one must never be sent the same `rev`, or it would be unchanged.
# It starts at the run's start in milliseconds, not at 1: a reused cluster
# (SCALE=2m) keeps the revs an earlier run stored, and the same workload from
# 1 sent them again, so a later run's updates came back unchanged.
_revisions = itertools.count(time.time_ns() // 1_000_000)


def next_revision() -> int:
    """A `rev` attribute value never sent before, in this run or an earlier one."""
    return next(_revisions)


@dataclass
class Batch:
    """One request's worth of contacts for one tenant, and what it must report."""

    tenant: int  # bench tenant index, 0-9
    rows: list[tuple[int, dict[str, Any]]]  # (index, validated row): what the engine takes
    wire: list[dict[str, Any]]  # the same rows as a client sends them
    created: int
    updated: int
    unchanged: int
    size: int = field(init=False)
    body: bytes = b""  # the JSON request body, once encode() has run

    def __post_init__(self) -> None:
        self.size = len(self.rows)

    def encode(self) -> "Batch":
        """Build the JSON body now, ahead of timing, so the client costs little then.

        A request only needs its body, so the rows are dropped: hundreds of
        prebuilt batches would otherwise hold gigabytes of small objects.
        """
        self.body = json.dumps({"contacts": self.wire}).encode()
        self.rows, self.wire = [], []
        return self

    def for_engine(self) -> "Batch":
        """Drop the wire rows, which the engine never sees (memory, as above)."""
        self.wire = []
        return self


def to_wire(row: dict[str, Any]) -> dict[str, Any]:
    """A validated row back in its wire spelling."""
    wire = {WIRE_NAMES[name]: value for name, value in row.items() if name in WIRE_NAMES}
    if "tags" in row:
        wire["tags"] = {"add": row["tags"]["add"]}
    if "companies" in row:
        wire["companies"] = [{"companyId": c["company_id"], "name": c["name"]} for c in row["companies"]]
    return wire


def with_relations(row: dict[str, Any], n: int) -> dict[str, Any]:
    """The row adding 2 tags and setting 1 company too (of small catalogues, so
    that most already exist: the usual case of a CRM sync)."""
    return {**row, "tags": {"add": [f"segment-{n % 20}", f"source-{n % 5}"], "remove": []},
            "companies": [{"company_id": f"company-{n % 50}", "name": f"Company {n % 50}",
                           "remove": False}]}


def mixed_case_email(n: int) -> str:
    """user<n>@example.com as a careless client sends it; it normalises back."""
    return f"User{n}@Example.COM"


class Workload:
    """Batch builder of one client thread: its own tenants, its own new keys."""

    def __init__(self, thread: int, tag: str) -> None:
        self.thread = thread
        self.tag = tag  # makes new keys unique across phases and scenarios
        self.tenants = [thread * TENANTS_PER_THREAD + i for i in range(TENANTS_PER_THREAD)]
        self.turn = 0
        self.new_serial = 0
        self.next_updatable = dict.fromkeys(self.tenants, UPDATABLE.start)
        self.next_resynced = dict.fromkeys(self.tenants, RESYNCED.start)

    def next_tenant(self) -> int:
        """Round-robin over this thread's tenants, one tenant per batch."""
        tenant = self.tenants[self.turn % len(self.tenants)]
        self.turn += 1
        return tenant

    def take(self, cursor: dict[int, int], tenant: int, span: range, count: int) -> list[int]:
        """The next `count` local numbers of `span` for a tenant, wrapping around."""
        start = cursor[tenant]
        picked = [span.start + (start - span.start + i) % len(span) for i in range(count)]
        cursor[tenant] = span.start + (start - span.start + count) % len(span)
        return picked

    def new_row(self) -> dict[str, Any]:
        """A contact no run has sent before."""
        self.new_serial += 1
        key = f"new-{self.tag}-{self.thread}-{self.new_serial}"
        return {"external_id": key, "email": f"{key}@example.com", "first_name": "New",
                "locale": "en", "opt_in": self.new_serial % 2 == 0,
                "attributes": {"plan": "free", "seats": 1, "vip": False}}

    def mixed(self, size: int, relations: bool = False) -> Batch:
        """Half updates of existing contacts (mixed-case email, new rev), half new
        ones; with `relations`, every row also adds 2 tags and sets 1 company."""
        tenant = self.next_tenant()
        existing = self.take(self.next_updatable, tenant, UPDATABLE, size // 2)
        rows, wire = [], []
        for local in existing:
            n = contact_number(tenant, local)
            update = {"external_id": f"ext-{n}", "email": f"user{n}@example.com",
                      "first_name": f"First{n}", "attributes": {"rev": next_revision()}}
            new = self.new_row()
            if relations:
                update, new = with_relations(update, n), with_relations(new, self.new_serial)
            rows += [update, new]
            wire += [{**to_wire(update), "email": mixed_case_email(n)}, to_wire(new)]
        new_count = size - len(existing)
        for _ in range(new_count - len(existing)):  # odd sizes: one more new row
            new = self.new_row()
            if relations:
                new = with_relations(new, self.new_serial)
            rows.append(new)
            wire.append(to_wire(new))
        return Batch(tenant, list(enumerate(rows)), wire, created=new_count,
                     updated=len(existing), unchanged=0)

    def resync(self, size: int) -> Batch:
        """Existing contacts sent with exactly their stored values: all unchanged."""
        tenant = self.next_tenant()
        rows = [stored_contact(contact_number(tenant, local))
                for local in self.take(self.next_resynced, tenant, RESYNCED, size)]
        return Batch(tenant, list(enumerate(rows)), [to_wire(r) for r in rows],
                     created=0, updated=0, unchanged=size)

    def batches(self, scenario: str, count: int) -> list[Batch]:
        """`count` batches of a named scenario (see SCENARIOS)."""
        kind, size = SCENARIOS[scenario]
        if kind == "resync":
            return [self.resync(size) for _ in range(count)]
        return [self.mixed(size, relations=kind == "mixed-relations") for _ in range(count)]


# name -> (kind, rows per batch)
SCENARIOS = {
    "mixed-1000": ("mixed", 1000),
    "mixed-100": ("mixed", 100),
    "resync-1000": ("resync", 1000),
    # mixed-1000 whose rows also add 2 tags and set 1 company (DESIGN 8)
    "relations-1000": ("mixed-relations", 1000),
}
