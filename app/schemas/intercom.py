"""Intercom's door (DESIGN 12): the bodies of `/intercom/contacts/bulk` in
Intercom's own field names, loaded into the engine's rows.

Intercom ignores the fields it does not list, so this schema does too: an
unknown key (`role`, `signed_up_at`, a native name such as `externalId`) is
dropped, never an error. What is checked is Intercom's structure (the
`contacts` array of objects, at most 100, each update with its `id`) and the
value of every field it lists, with the same field rules as the native door
(app/schemas/contacts.py). Every problem is reported in Intercom's terms:
`{"code", "message", "field"}` with `field_not_found`, `type_mismatch` (a
value of the wrong JSON type) or `parameter_invalid` (the right type, but not
a value we can keep).

The loaded rows use the engine's names (app/engine/upsert.py), with `op`
("update", "create" or "delete"), an update's contact `id` (None when the id
sent can be no contact's, like Intercom's "abc123": that row then fails in
the worker, not_found) and `tag_ids` (tag ids, resolved to names when the
task applies).
"""

from dataclasses import dataclass
from typing import Any

from marshmallow import ValidationError, fields, validate

from app.schemas.contacts import (
    MAX_COMPANIES_PER_ROW,
    MAX_NAMES_PER_ROW,
    Attributes,
    EmailAddress,
    Identifier,
    Locale,
    Phone,
    Text,
    Url,
)

MAX_CONTACTS = 100
MAX_ID = 2 ** 63 - 1  # ids are bigint
UPDATE, UPSERT, DELETE = "update", "upsert", "delete"  # PUT, POST, POST .../delete
JOB_PREFIX, TASK_PREFIX = "job_", "task_"
NULL = type(None)


@dataclass(frozen=True)
class Problem:
    """One entry of Intercom's error.list."""

    code: str
    message: str
    field: str | None = None

    def as_dict(self) -> dict[str, str]:
        entry = {"code": self.code, "message": self.message}
        if self.field is not None:
            entry["field"] = self.field
        return entry


class RequestRejected(ValueError):
    """The body is not one Intercom's door takes; nothing is queued."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__(problems[0].message)
        self.problems = problems


@dataclass(frozen=True)
class BulkRequest:
    """A loaded request: the engine's rows, and the job to append them to (None: a new job)."""

    rows: list[dict[str, Any]]
    job_id: str | None


# The value fields, by Intercom's name: their loaded (engine) name, the JSON
# types they take (anything else is type_mismatch), and the field that checks
# the value (its ValidationError is parameter_invalid).
NAME = Text(allow_none=True, validate=validate.Length(max=255))
OWNER = Text(allow_none=True, validate=validate.Length(max=255))
VALUE_FIELDS: dict[str, tuple[str, tuple[type, ...], fields.Field]] = {
    "external_id": ("external_id", (str,), Identifier()),
    "user_id": ("external_id", (str,), Identifier()),  # seed 002's name for external_id
    "email": ("email", (str,), EmailAddress()),
    "name": ("name", (str, NULL), NAME),
    "phone": ("phone", (str, NULL), Phone(allow_none=True)),
    "language_override": ("locale", (str, NULL), Locale(allow_none=True)),
    "custom_attributes": ("attributes", (dict,), Attributes()),
}
JSON_TYPES = {str: "a string", int: "an integer", bool: "a boolean", dict: "an object", list: "an array",
              NULL: "null"}


def load_request(body: Any, mode: str) -> BulkRequest:
    """The request's rows and job, or RequestRejected naming every problem.
    `mode`: UPDATE (every item has an id), UPSERT (items with an id update,
    the others create), DELETE (ids only)."""
    if not isinstance(body, dict):
        raise RequestRejected([Problem("type_mismatch", "the request body must be a JSON object")])
    if "contacts" not in body:
        raise RequestRejected([Problem("field_not_found", "contacts field must be supplied", "contacts")])
    contacts = body["contacts"]
    if not isinstance(contacts, list):
        raise RequestRejected([Problem("type_mismatch", "contacts must be an array", "contacts")])
    if len(contacts) > MAX_CONTACTS:
        raise RequestRejected([Problem("parameter_invalid",
                                       f"maximum number of contacts per request is {MAX_CONTACTS}",
                                       "contacts")])
    if not contacts:
        raise RequestRejected([Problem("parameter_invalid", "at least one contact must be supplied",
                                       "contacts")])
    if not all(isinstance(item, dict) for item in contacts):
        raise RequestRejected([Problem("type_mismatch", "each contact must be an object", "contacts")])
    problems: list[Problem] = []
    job_id = load_job(body.get("job"), problems)
    rows = [load_item(item, f"contacts[{index}]", mode, problems) for index, item in enumerate(contacts)]
    if problems:
        raise RequestRejected(problems)
    return BulkRequest(rows, job_id)


def load_job(job: Any, problems: list[Problem]) -> str | None:
    """`"job": {"id": "job_..."}`: the job's id as sent (absent or null: a new job)."""
    if job is None:
        return None
    if not isinstance(job, dict):
        problems.append(Problem("type_mismatch", "job must be an object", "job"))
        return None
    if "id" not in job:
        problems.append(Problem("field_not_found", "job.id must be supplied", "job.id"))
        return None
    if not isinstance(job["id"], str):
        problems.append(Problem("type_mismatch", "job.id must be a string", "job.id"))
        return None
    return job["id"]


def parse_prefixed_id(text: str, prefix: str) -> int | None:
    """17 from "job_17" (or "task_17"); None when it is no id we hand out."""
    digits = text.removeprefix(prefix) if text.startswith(prefix) else ""
    return contact_number(digits) if digits.isascii() and digits.isdigit() else None


def contact_number(value: str | int) -> int | None:
    """A contact (or tag, job) id sent as an integer or a decimal string; None
    when it can be no id of ours ("abc123", 0, beyond a bigint)."""
    if isinstance(value, str):
        text = value.strip()
        if not (text.isascii() and text.isdigit() and len(text) <= 19):
            return None
        value = int(text)
    return value if 1 <= value <= MAX_ID else None


def is_of(value: Any, types: tuple[type, ...]) -> bool:
    """JSON types: true is a boolean, not an integer."""
    if isinstance(value, bool):
        return bool in types
    return isinstance(value, types)


def type_problem(field: str, types: tuple[type, ...]) -> Problem:
    wanted = " or ".join(JSON_TYPES[t] for t in types)
    return Problem("type_mismatch", f"{field} must be {wanted}", field)


def load_id(item: dict[str, Any], where: str, problems: list[Problem]) -> int | None:
    """The item's contact id (None: it names no contact)."""
    value = item["id"]
    if not is_of(value, (str, int)):
        problems.append(type_problem(f"{where}.id", (str, int)))
        return None
    return contact_number(value)


def load_item(item: dict[str, Any], where: str, mode: str, problems: list[Problem]) -> dict[str, Any]:
    """One contact of the request as an engine row; its problems are added to `problems`."""
    if mode in (UPDATE, DELETE) and "id" not in item:
        problems.append(Problem("field_not_found", "contacts must be identified by id", f"{where}.id"))
        return {}
    if mode == DELETE:
        return {"op": "delete", "id": load_id(item, where, problems)}
    row: dict[str, Any] = {"op": "update", "id": load_id(item, where, problems)} if "id" in item \
        else {"op": "create"}
    if "external_id" in item and "user_id" in item and item["external_id"] != item["user_id"]:
        problems.append(Problem("parameter_invalid", "send external_id or user_id, not both",
                                f"{where}.user_id"))
    for name, (key, types, field) in VALUE_FIELDS.items():
        if name in item:
            value = load_value(item[name], f"{where}.{name}", types, field, problems)
            if value is not ABSENT:
                row[key] = value
    load_avatar(item, row, where, problems)
    load_owner(item, row, where, problems)
    if "unsubscribed_from_emails" in item:
        value = item["unsubscribed_from_emails"]
        if is_of(value, (bool, NULL)):
            row["opt_in"] = None if value is None else not value
        else:
            problems.append(type_problem(f"{where}.unsubscribed_from_emails", (bool, NULL)))
    load_companies(item, row, where, problems)
    load_tags(item, row, where, problems)
    if row["op"] == "create" and "external_id" not in row and "email" not in row:
        problems.append(Problem("field_not_found", "a contact to create needs an external_id or an email",
                                where))
    return row


ABSENT = object()


def load_value(value: Any, field_name: str, types: tuple[type, ...], field: fields.Field,
               problems: list[Problem]) -> Any:
    """A checked value, or ABSENT (and a problem noted)."""
    if not is_of(value, types):
        problems.append(type_problem(field_name, types))
        return ABSENT
    try:
        return field.deserialize(value)
    except ValidationError as exc:
        problems.append(Problem("parameter_invalid", f"{field_name}: {first_message(exc.messages)}",
                                field_name))
        return ABSENT


def first_message(messages: Any) -> str:
    """The first human message of a marshmallow error, however nested."""
    while isinstance(messages, dict | list) and messages:
        messages = next(iter(messages.values())) if isinstance(messages, dict) else messages[0]
    return str(messages) if messages else "invalid value"


URL = Url(allow_none=True)


def load_avatar(item: dict[str, Any], row: dict[str, Any], where: str, problems: list[Problem]) -> None:
    """avatar: a URL, or {"image_url": URL}; null clears it."""
    if "avatar" not in item:
        return
    value, field_name = item["avatar"], f"{where}.avatar"
    if isinstance(value, dict):
        if "image_url" not in value:
            problems.append(Problem("field_not_found", "avatar.image_url must be supplied",
                                    f"{field_name}.image_url"))
            return
        value, field_name = value["image_url"], f"{field_name}.image_url"
    url = load_value(value, field_name, (str, NULL), URL, problems)
    if url is not ABSENT:
        row["avatar_url"] = url


def load_owner(item: dict[str, Any], row: dict[str, Any], where: str, problems: list[Problem]) -> None:
    """owner_id: a string, or an integer taken as its decimal string; null clears it."""
    if "owner_id" not in item:
        return
    value = item["owner_id"]
    if is_of(value, (int,)):
        value = str(value)
    owner = load_value(value, f"{where}.owner_id", (str, int, NULL), OWNER, problems)
    if owner is not ABSENT:
        row["owner_id"] = owner


COMPANY_ID = Identifier()
COMPANY_NAME = Text(validate=validate.Length(max=255))


def load_companies(item: dict[str, Any], row: dict[str, Any], where: str, problems: list[Problem]) -> None:
    """companies (each attached, or detached with remove: true) and seed 002's
    singular company, together as the engine's company changes."""
    sent: list[tuple[str, Any]] = []
    if "companies" in item:
        if isinstance(item["companies"], list):
            sent.extend((f"{where}.companies[{i}]", c) for i, c in enumerate(item["companies"]))
        else:
            problems.append(type_problem(f"{where}.companies", (list,)))
    if "company" in item:
        sent.append((f"{where}.company", item["company"]))
    if not sent and "companies" not in item:
        return
    if len(sent) > MAX_COMPANIES_PER_ROW:
        problems.append(Problem("parameter_invalid", f"at most {MAX_COMPANIES_PER_ROW} companies per contact",
                                f"{where}.companies"))
        return
    changes = [change for field_name, company in sent
               if (change := load_company(company, field_name, problems)) is not None]
    company_ids = [change["company_id"] for change in changes]
    if len(set(company_ids)) != len(company_ids):
        problems.append(Problem("parameter_invalid", "each company_id may be sent once per contact",
                                f"{where}.companies"))
    row["companies"] = changes


def load_company(company: Any, field_name: str, problems: list[Problem]) -> dict[str, Any] | None:
    """One company change: {company_id, name?, remove}."""
    if not isinstance(company, dict):
        problems.append(type_problem(field_name, (dict,)))
        return None
    if "company_id" not in company:
        problems.append(Problem("field_not_found", "company_id must be supplied", f"{field_name}.company_id"))
        return None
    company_id = company["company_id"]
    if is_of(company_id, (int,)):
        company_id = str(company_id)
    loaded = load_value(company_id, f"{field_name}.company_id", (str, int), COMPANY_ID, problems)
    change: dict[str, Any] = {"company_id": loaded, "remove": False}
    if "remove" in company:
        if is_of(company["remove"], (bool,)):
            change["remove"] = company["remove"]
        else:
            problems.append(type_problem(f"{field_name}.remove", (bool,)))
    if "name" in company and company["name"] is not None:
        name = load_value(company["name"], f"{field_name}.name", (str,), COMPANY_NAME, problems)
        if name is not ABSENT:
            change["name"] = name
    return None if loaded is ABSENT else change


def load_tags(item: dict[str, Any], row: dict[str, Any], where: str, problems: list[Problem]) -> None:
    """tags: {add: [{id}], remove: [{id}]} by tag id; an id that can be no tag's
    is skipped here, one the tenant lacks when the task applies."""
    if "tags" not in item:
        return
    tags, field_name = item["tags"], f"{where}.tags"
    if not isinstance(tags, dict):
        problems.append(type_problem(field_name, (dict,)))
        return
    loaded: dict[str, list[int]] = {}
    for key in ("add", "remove"):
        entries = tags.get(key, [])
        if not isinstance(entries, list):
            problems.append(type_problem(f"{field_name}.{key}", (list,)))
            continue
        ids: list[int] = []
        for index, entry in enumerate(entries):
            entry_name = f"{field_name}.{key}[{index}]"
            if not isinstance(entry, dict):
                problems.append(type_problem(entry_name, (dict,)))
            elif "id" not in entry:
                problems.append(Problem("field_not_found", "a tag must be identified by id",
                                        f"{entry_name}.id"))
            elif not is_of(entry["id"], (str, int)):
                problems.append(type_problem(f"{entry_name}.id", (str, int)))
            elif (tag_id := contact_number(entry["id"])) is not None and tag_id not in ids:
                ids.append(tag_id)
        loaded[key] = ids
    if sum(len(ids) for ids in loaded.values()) > MAX_NAMES_PER_ROW:
        problems.append(Problem("parameter_invalid", f"at most {MAX_NAMES_PER_ROW} tags per contact",
                                field_name))
    row["tag_ids"] = {"add": loaded.get("add", []), "remove": loaded.get("remove", [])}

