"""How the columns of a CSV export become the fields of a contact (docs/command.md).

A header is recognised case-, space- and punctuation-insensitively (`E-mail`,
`Email Address` and `email` are one), `--map COLUMN=field` overrides that,
`--ignore COLUMN` drops a column, and every other column becomes an attribute.
The plan is checked against the header before anything is sent.
"""

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

# Wire fields a column can fill, and the headers (normalised) recognised for each.
FIELD_HEADERS: dict[str, tuple[str, ...]] = {
    "externalId": ("externalid", "userid", "crmid", "recordid", "contactid", "customerid"),
    "email": ("email", "emailaddress", "mail", "primaryemail"),
    "username": ("username", "login"),
    "firstName": ("firstname", "givenname", "forename"),
    "lastName": ("lastname", "surname", "familyname"),
    "name": ("name", "fullname", "displayname"),
    "phone": ("phone", "phonenumber", "mobile", "mobilephone", "mobilenumber", "telephone", "tel"),
    "locale": ("locale", "language", "lang", "preferredlanguage"),
    "optIn": ("optin", "optedin", "emailoptin", "subscribed"),
    "status": ("status",),
    "ownerId": ("ownerid", "owner"),
    "avatarUrl": ("avatarurl", "avatar", "photourl"),
    "tags": ("tags",),
    "folders": ("folders",),
    "companies": ("companies",),
    "attributes": ("attributes", "customfields"),
    "sourceUpdatedAt": ("sourceupdatedat",),
}
IDENTITIES = ("externalId", "email", "username")
# Columns that the service owns (as `export` writes them) or that an errors file
# adds: never sent. `deleted` marks a tombstone of an export: that row is skipped.
IGNORED_HEADERS = ("id", "createdat", "updatedat", "deletedat", "error")
DELETED_HEADER = "deleted"
MAX_ATTRIBUTES = 100
ATTRIBUTE_KEY = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
TRUE_WORDS = {"true", "yes", "y", "1", "on", "t"}
FALSE_WORDS = {"false", "no", "n", "0", "off", "f"}

HEADER_TO_FIELD = {header: name for name, headers in FIELD_HEADERS.items() for header in headers}


class MappingError(ValueError):
    """The header, with these options, cannot be imported: nothing may be sent."""


class RowError(ValueError):
    """One row cannot be turned into a contact; it goes to the errors file unsent."""


def normalised(header: str) -> str:
    """`E-mail Address ` -> `emailaddress`: what recognition compares."""
    return re.sub(r"[^0-9a-z]", "", header.casefold())


def attribute_key(header: str) -> str:
    """An attribute key from a header: runs of characters keys may not hold become `_`."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", header.strip()).strip("_")[:64]


@dataclass(frozen=True)
class Column:
    """What one column of the file does: fill `field`, set attribute `key`, mark
    tombstones (`deleted`), or nothing (`ignored`)."""

    index: int
    header: str
    role: str  # "field", "attribute", "deleted" or "ignored"
    target: str = ""  # the field name or the attribute key

    def describe(self) -> str:
        """For messages and the options fingerprint."""
        return {"field": self.target, "attribute": f"attributes.{self.target}"}.get(self.role, self.role)


@dataclass(frozen=True)
class Plan:
    """Every column's role; turns a row of cells into a contact."""

    header: list[str]
    columns: list[Column]

    def fingerprint(self) -> list[str]:
        """What the plan does, column by column: part of each batch's Idempotency-Key."""
        return [f"{c.header}={c.describe()}" for c in self.columns]

    def field_header(self, name: str) -> str:
        """The column that fills wire field `name` (for error messages), else the name."""
        for column in self.columns:
            if column.role == "field" and column.target == name:
                return column.header
        return name

    def contact(self, cells: Sequence[str]) -> dict[str, Any] | None:
        """The contact a row sends, or None when the row is a tombstone to skip."""
        if len(cells) > len(self.header):
            raise RowError(f"{len(cells)} cells, but the header has {len(self.header)} columns")
        contact: dict[str, Any] = {}
        attributes: dict[str, Any] = {}
        for column in self.columns:
            value = cells[column.index] if column.index < len(cells) else ""
            if not value.strip():
                continue  # an empty cell leaves the field as it is
            if column.role == "field":
                if column.target == "attributes":
                    attributes = {**json_attributes(value), **attributes}
                else:
                    contact[column.target] = field_value(column.target, value)
            elif column.role == "attribute":
                attributes[column.target] = value
            elif column.role == "deleted" and value.strip().casefold() in TRUE_WORDS:
                return None
        if attributes:
            contact["attributes"] = attributes
        return contact


def field_value(name: str, value: str) -> Any:
    """A cell as the wire field `name` takes it."""
    if name == "optIn":
        word = value.strip().casefold()
        if word in TRUE_WORDS:
            return True
        if word in FALSE_WORDS:
            return False
        return value  # the service names what is wrong with it
    if name in ("tags", "folders"):
        names = json_value(value, name, list) if value.lstrip().startswith("[") else value.split(";")
        return {"add": [n.strip() if isinstance(n, str) else n for n in names
                        if not isinstance(n, str) or n.strip()]}
    if name == "companies":
        return json_value(value, name, list)
    return value


def json_attributes(value: str) -> dict[str, Any]:
    """An `attributes` cell: a JSON object, as `export` writes it."""
    return json_value(value, "attributes", dict)


def json_value(value: str, name: str, kind: type) -> Any:
    """A cell holding JSON of type `kind`."""
    try:
        parsed = json.loads(value)
    except ValueError:
        parsed = None
    if not isinstance(parsed, kind):
        raise RowError(f"{name}: not a JSON {'object' if kind is dict else 'array'}")
    return parsed


def parse_mappings(mappings: Sequence[str]) -> dict[str, str]:
    """`--map COLUMN=field` options: column -> field (or `attributes.KEY`)."""
    parsed = {}
    for item in mappings:
        column, sep, target = item.rpartition("=")
        if not sep or not column.strip() or not target.strip():
            raise MappingError(f"--map {item!r}: write it as COLUMN=field")
        parsed[column] = resolve_target(target.strip(), item)
    return parsed


def resolve_target(target: str, item: str) -> str:
    """A `--map` target: a field (its wire name or a recognised header) or `attributes.KEY`."""
    if target.startswith(("attributes.", "attribute.")):
        key = target.partition(".")[2]
        if not ATTRIBUTE_KEY.match(key):
            raise MappingError(f"--map {item!r}: an attribute key is 1-64 of A-Z a-z 0-9 _ . -")
        return f"attributes.{key}"
    name = HEADER_TO_FIELD.get(normalised(target))
    if name is None:
        fields = ", ".join(FIELD_HEADERS)
        raise MappingError(f"--map {item!r}: {target!r} is no field; use one of {fields} or attributes.KEY")
    return name


def find_column(header: list[str], wanted: str, option: str) -> int:
    """The index of the column an option names: exactly, else as recognition compares."""
    if wanted in header:
        return header.index(wanted)
    matches = [i for i, h in enumerate(header) if normalised(h) == normalised(wanted)]
    if len(matches) != 1:
        raise MappingError(f"{option} {wanted!r}: the header has no such column "
                           f"(it has: {', '.join(h for h in header if h)})")
    return matches[0]


def build_plan(header: list[str], mappings: Sequence[str], ignored: Sequence[str]) -> Plan:
    """Each column's role, checked: one column per field, an identity, valid and distinct keys."""
    mapped = {find_column(header, column, "--map"): target
              for column, target in parse_mappings(mappings).items()}
    dropped = {find_column(header, column, "--ignore") for column in ignored}
    columns = []
    for index, text in enumerate(header):
        key = normalised(text)
        if index in dropped or not text.strip():
            columns.append(Column(index, text, "ignored"))  # an unnamed column: a trailing comma
        elif index in mapped:
            target = mapped[index]
            if target.startswith("attributes."):
                columns.append(Column(index, text, "attribute", target.partition(".")[2]))
            else:
                columns.append(Column(index, text, "field", target))
        elif key in HEADER_TO_FIELD:
            columns.append(Column(index, text, "field", HEADER_TO_FIELD[key]))
        elif key == DELETED_HEADER:
            columns.append(Column(index, text, "deleted"))
        elif key in IGNORED_HEADERS:
            columns.append(Column(index, text, "ignored"))
        else:
            columns.append(Column(index, text, "attribute", attribute_key(text)))
    check_plan(columns)
    return Plan(header, columns)


def check_plan(columns: list[Column]) -> None:
    """Refuse a plan that would make every row fail, or lose a column silently."""
    seen: dict[str, Column] = {}
    for column in columns:
        if column.role == "attribute" and not ATTRIBUTE_KEY.match(column.target):
            raise MappingError(f"column {column.header!r} gives no valid attribute key: "
                               "use --map COLUMN=attributes.KEY or --ignore COLUMN")
        if column.role in ("field", "attribute", "deleted"):
            target = column.describe()
            if target in seen:
                raise MappingError(f"columns {seen[target].header!r} and {column.header!r} both "
                                   f"fill {target}: --ignore one of them, or --map it elsewhere")
            seen[target] = column
    if not any(c.role == "field" and c.target in IDENTITIES for c in columns):
        raise MappingError("no email or externalId column (nor username) in the header: name one "
                           "with --map COLUMN=email or --map COLUMN=externalId")
    attributes = sum(c.role == "attribute" for c in columns)
    if attributes > MAX_ATTRIBUTES:
        raise MappingError(f"{attributes} columns would become attributes; a contact holds at most "
                           f"{MAX_ATTRIBUTES}: --ignore some")
