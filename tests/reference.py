"""A deliberately naive model of DESIGN 4.3 and a hypothesis strategy for rows,
shared by the bulk property test and the single-upsert one."""

import json
from dataclasses import dataclass, field
from typing import Any

from hypothesis import strategies as st

# Small pools, so that rows of a batch collide often: the same keys in other
# case and white space, invalid emails, and every field absent/null/set.
EXTERNAL_IDS = ["a", "b", "c", " a "]
EMAILS = ["x@ex.com", "X@Ex.com", " y@ex.com", "y@EX.COM\u00a0", "z@ex.com", "w@ex.com", "bad@"]
INVALID_EMAILS = {"bad@"}
ABSENT = object()


@dataclass
class RefContact:
    id: int
    external_id: str | None = None
    email: str | None = None
    first_name: str | None = None
    opt_in: bool | None = None
    attributes: dict[str, Any] = field(default_factory=dict)
    created_by: tuple[int, int] | None = None  # (batch number, row index)

    def state(self) -> tuple:
        return (self.external_id, self.email, self.first_name, self.opt_in,
                json.dumps(self.attributes, sort_keys=True))


class Reference:
    """DESIGN 4.3 read literally: one row at a time, linear searches, no cleverness."""

    def __init__(self) -> None:
        self.contacts: list[RefContact] = []
        self.batch = 0

    def find(self, name: str, value: str | None) -> RefContact | None:
        if value is None:
            return None
        return next((c for c in self.contacts if getattr(c, name) == value), None)

    def apply(self, index: int, row: dict[str, Any]) -> tuple[str, RefContact | None, tuple | None]:
        """Return (status, contact, (externalIdContact, emailContact) on conflict)."""
        external_id = row["externalId"].strip() if "externalId" in row else None
        email = row.get("email")
        if email in INVALID_EMAILS or (external_id is None and email is None):
            return "failed", None, None
        if email is not None:
            email = email.strip().lower()
        contact = self.find("external_id", external_id)
        if contact is not None:
            other = self.find("email", email)
            if other is not None and other is not contact:
                return "failed", None, (contact, other)
        else:
            contact = self.find("email", email)
            if contact is not None and external_id is not None and contact.external_id is not None:
                return "failed", None, (None, contact)
        if contact is None:
            contact = RefContact(id=len(self.contacts) + 1, created_by=(self.batch, index))
            self.contacts.append(contact)
            self.set_fields(contact, external_id, email, row)
            return "created", contact, None
        before = contact.state()
        self.set_fields(contact, external_id, email, row)
        return ("unchanged" if contact.state() == before else "updated"), contact, None

    @staticmethod
    def set_fields(contact: RefContact, external_id: str | None, email: str | None,
                   row: dict[str, Any]) -> None:
        if external_id is not None:
            contact.external_id = external_id
        if email is not None:
            contact.email = email
        for wire, name in (("firstName", "first_name"), ("optIn", "opt_in")):
            if wire in row:
                setattr(contact, name, row[wire])
        for key, value in row.get("attributes", {}).items():
            if value is None:
                contact.attributes.pop(key, None)
            else:
                contact.attributes[key] = value


def optional(values: st.SearchStrategy) -> st.SearchStrategy:
    return st.one_of(st.just(ABSENT), values)


@st.composite
def rows(draw: st.DrawFn) -> dict[str, Any]:
    fields = {
        "externalId": draw(optional(st.sampled_from(EXTERNAL_IDS))),
        "email": draw(optional(st.sampled_from(EMAILS))),
        "firstName": draw(optional(st.sampled_from([None, "Ann", "Bob"]))),
        "optIn": draw(optional(st.sampled_from([None, True, False]))),
        "attributes": draw(optional(st.dictionaries(
            st.sampled_from(["p", "q"]), st.sampled_from([None, 1, True, "1", 1.5]), max_size=2))),
    }
    return {k: v for k, v in fields.items() if v is not ABSENT}
