"""A deliberately naive model of DESIGN 4.3 and 8 and a hypothesis strategy for
rows, shared by the bulk property test and the single-upsert one."""

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from hypothesis import strategies as st

# Small pools, so that rows of a batch collide often: the same keys in other
# case and white space, invalid emails, and every field absent/null/set.
EXTERNAL_IDS = ["a", "b", "c", " a "]
EMAILS = ["x@ex.com", "X@Ex.com", " y@ex.com", "y@EX.COM\u00a0", "z@ex.com", "w@ex.com", "bad@"]
USERNAMES = ["jane", " Jane ", "joe", "ann"]
INVALID_EMAILS = {"bad@"}
TAG_NAMES = ["vip", "VIP", "trial", "hot"]
FOLDER_NAMES = ["Leads", "leads", "March"]
COMPANY_IDS = ["1", "2", "3"]
COMPANY_NAMES = ["Blue Sun", "Red Moon"]
# sourceUpdatedAt values: the first two are one instant in two zones.
SOURCE_TIMES = ["2026-01-01T10:00:00Z", "2026-01-01T11:00:00+01:00", "2026-01-01T09:59:59.5Z",
                "2026-01-02T00:00:00-03:00"]
ABSENT = object()


@dataclass
class RefContact:
    id: int
    external_id: str | None = None
    email: str | None = None
    username: str | None = None
    first_name: str | None = None
    opt_in: bool | None = None
    status: str = "auto"
    attributes: dict[str, Any] = field(default_factory=dict)
    tags: set[str] = field(default_factory=set)  # lower-cased names
    folders: set[str] = field(default_factory=set)
    companies: set[str] = field(default_factory=set)  # companyIds
    source_updated_at: datetime | None = None
    created_by: tuple[int, int] | None = None  # (batch number, row index)

    def state(self) -> tuple:
        return (self.external_id, self.email, self.username, self.first_name, self.opt_in, self.status,
                json.dumps(self.attributes, sort_keys=True),
                tuple(sorted(self.tags)), tuple(sorted(self.folders)), tuple(sorted(self.companies)),
                self.source_updated_at)


class Reference:
    """DESIGN 4.3 and 8 read literally: one row at a time, linear searches, no cleverness."""

    def __init__(self) -> None:
        self.contacts: list[RefContact] = []
        self.batch = 0
        # The tenant's catalogues: lower-cased name -> first spelling; companyId -> name.
        self.tag_catalogue: dict[str, str] = {}
        self.folder_catalogue: dict[str, str] = {}
        self.company_catalogue: dict[str, str | None] = {}

    def find(self, name: str, value: str | None) -> RefContact | None:
        if value is None:
            return None
        return next((c for c in self.contacts if getattr(c, name) == value), None)

    def apply(self, index: int, row: dict[str, Any]) -> tuple[str, RefContact | None, tuple | None]:
        """Return (status, contact, (externalId, email, username holders) on conflict)."""
        external_id = row["externalId"].strip() if "externalId" in row else None
        email = row.get("email")
        username = row["username"].strip().lower() if "username" in row else None
        if email in INVALID_EMAILS or (external_id is None and email is None and username is None):
            return "failed", None, None
        if email is not None:
            email = email.strip().lower()
        holders = (self.find("external_id", external_id), self.find("email", email),
                   self.find("username", username))
        by_external_id, by_email, by_username = holders
        if by_external_id is not None:  # rule 1
            contact = by_external_id
            conflict = any(h is not None and h is not contact for h in (by_email, by_username))
        elif by_email is not None:  # rule 2
            contact = by_email
            conflict = ((external_id is not None and contact.external_id is not None)
                        or (by_username is not None and by_username is not contact))
        elif by_username is not None:  # rule 3 (the row's email, if any, is nobody's)
            contact = by_username
            conflict = external_id is not None and contact.external_id is not None
        else:
            contact = RefContact(id=len(self.contacts) + 1, created_by=(self.batch, index))
            self.contacts.append(contact)
            self.set_fields(contact, external_id, email, username, row)
            return "created", contact, None
        if conflict:
            return "failed", None, holders
        sent_at = datetime.fromisoformat(row["sourceUpdatedAt"]) if "sourceUpdatedAt" in row else None
        received_at = contact.source_updated_at
        if sent_at is not None and received_at is not None and sent_at < received_at:
            return "stale", contact, None  # DESIGN 15: older than what the contact last received
        before = contact.state()
        renamed = self.set_fields(contact, external_id, email, username, row)
        return ("unchanged" if contact.state() == before and not renamed else "updated"), contact, None

    def set_fields(self, contact: RefContact, external_id: str | None, email: str | None,
                   username: str | None, row: dict[str, Any]) -> bool:
        """Apply the row; True when it renamed a company it attaches (a change of the contact)."""
        for name, value in (("external_id", external_id), ("email", email), ("username", username)):
            if value is not None:
                setattr(contact, name, value)
        for wire, name in (("firstName", "first_name"), ("optIn", "opt_in"), ("status", "status")):
            if wire in row:
                setattr(contact, name, row[wire])
        if "sourceUpdatedAt" in row:
            contact.source_updated_at = datetime.fromisoformat(row["sourceUpdatedAt"])
        for key, value in row.get("attributes", {}).items():
            if value is None:
                contact.attributes.pop(key, None)
            else:
                contact.attributes[key] = value
        for wire, links, catalogue in (("tags", contact.tags, self.tag_catalogue),
                                       ("folders", contact.folders, self.folder_catalogue)):
            changes = row.get(wire, {})
            for name in changes.get("add", []):
                links.add(name.strip().lower())
                catalogue.setdefault(name.strip().lower(), name.strip())
            for name in changes.get("remove", []):
                links.discard(name.strip().lower())
        renamed = False
        for change in row.get("companies", []):
            company_id = change["companyId"]
            if change.get("remove"):
                contact.companies.discard(company_id)
                continue
            contact.companies.add(company_id)
            if "name" in change:
                renamed |= self.company_catalogue.get(company_id, ABSENT) != change["name"]
                self.company_catalogue[company_id] = change["name"]
            else:
                self.company_catalogue.setdefault(company_id, None)
        return renamed


def optional(values: st.SearchStrategy) -> st.SearchStrategy:
    return st.one_of(st.just(ABSENT), values)


@st.composite
def name_changes(draw: st.DrawFn, names: list[str]) -> dict[str, list[str]]:
    """{"add": [...], "remove": [...]} of names, no name (in any case) in both."""
    add = draw(st.lists(st.sampled_from(names), max_size=3))
    added = {name.lower() for name in add}
    remove = draw(st.lists(st.sampled_from([n for n in names if n.lower() not in added] or names),
                           max_size=2))
    return {"add": add, "remove": [name for name in remove if name.lower() not in added]}


@st.composite
def company_changes(draw: st.DrawFn) -> list[dict[str, Any]]:
    """Companies attached (with or without a name) or removed, each companyId once."""
    changes = []
    for company_id in draw(st.lists(st.sampled_from(COMPANY_IDS), unique=True, max_size=2)):
        change: dict[str, Any] = {"companyId": company_id}
        kind = draw(st.sampled_from(["attach", "named", "remove"]))
        if kind == "named":
            change["name"] = draw(st.sampled_from(COMPANY_NAMES))
        elif kind == "remove":
            change["remove"] = True
        changes.append(change)
    return changes


@st.composite
def rows(draw: st.DrawFn) -> dict[str, Any]:
    fields = {
        "externalId": draw(optional(st.sampled_from(EXTERNAL_IDS))),
        "email": draw(optional(st.sampled_from(EMAILS))),
        "username": draw(optional(st.sampled_from(USERNAMES))),
        "firstName": draw(optional(st.sampled_from([None, "Ann", "Bob"]))),
        "optIn": draw(optional(st.sampled_from([None, True, False]))),
        "status": draw(optional(st.sampled_from(["auto", "optout", "spam"]))),
        "attributes": draw(optional(st.dictionaries(
            st.sampled_from(["p", "q"]), st.sampled_from([None, 1, 2, True, False, "1", "2", 1.5]),
            max_size=2))),
        "tags": draw(optional(name_changes(TAG_NAMES))),
        "folders": draw(optional(name_changes(FOLDER_NAMES))),
        "companies": draw(optional(company_changes())),
        "sourceUpdatedAt": draw(optional(st.sampled_from(SOURCE_TIMES))),
    }
    return {k: v for k, v in fields.items() if v is not ABSENT}
