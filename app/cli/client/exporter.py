"""`contactsync export`: the change feed (`GET /contacts?cursor=...`) to its end,
as CSV or NDJSON, tombstones included (DESIGN 9, 14).

Each page is written and flushed, then (with `--state`) the state file
records the page's `nextCursor` and how many bytes of `--output` hold what
was written. A rerun cuts the output back to that length (dropping a page
written but not recorded) and continues from the cursor, so a stopped export
and its rerun together write every change once; a finished export's state
is kept, so the next run writes only what changed since. With the output on
stdout nothing can be cut back: a rerun may repeat the last page (the feed
is at-least-once anyway).
"""

import csv
import io
import json
import os
import sys
from pathlib import Path
from typing import Any, BinaryIO

import click

from app.cli.client.progress import Progress
from app.cli.client.service import (
    EXIT_INTERRUPTED,
    Interrupted,
    Service,
    ServiceError,
    connection_options,
)
from app.cli.client.statefile import StateError, read_state, write_state

FEED_PATH = "/contacts"
PAGE_SIZE = 1000
# The CSV columns: the contact as every read shows it, then the tombstone's two.
CSV_COLUMNS = ("id", "externalId", "email", "username", "firstName", "lastName", "name", "phone",
               "locale", "optIn", "status", "ownerId", "avatarUrl", "attributes", "tags", "folders",
               "companies", "sourceUpdatedAt", "createdAt", "updatedAt", "deleted", "deletedAt")


def csv_cell(name: str, value: Any) -> str:
    """One value as a CSV cell that `import` reads back to the same value."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if name in ("tags", "folders"):
        return json.dumps([item["name"] for item in value], ensure_ascii=False) if value else ""
    if name == "companies":
        return json.dumps([{"companyId": c["companyId"], "name": c["name"]} for c in value],
                          ensure_ascii=False) if value else ""
    if name == "attributes":
        return json.dumps(value, ensure_ascii=False) if value else ""
    return str(value)


def csv_rows(contacts: list[dict[str, Any]]) -> list[list[str]]:
    """A page of the feed as CSV rows."""
    return [[csv_cell(name, c.get(name, False if name == "deleted" else None)) for name in CSV_COLUMNS]
            for c in contacts]


def encode_page(contacts: list[dict[str, Any]], fmt: str, header: bool) -> bytes:
    """A page as bytes of the chosen format (with the CSV header first when asked)."""
    if fmt == "ndjson":
        return "".join(json.dumps(c, ensure_ascii=False) + "\n" for c in contacts).encode("utf-8")
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\r\n")
    if header:
        writer.writerow(CSV_COLUMNS)
    writer.writerows(csv_rows(contacts))
    return text.getvalue().encode("utf-8")


def open_output(output: Path | None, length: int) -> BinaryIO:
    """The output, cut back to `length` bytes (what the state file vouches for)."""
    if output is None:
        return sys.stdout.buffer
    if length:
        try:
            out = open(output, "r+b")  # noqa: SIM115 - closed by the caller
        except FileNotFoundError:
            raise StateError(f"{output} is gone but the state file says it holds an export: "
                             "delete the state file to start over.") from None
        out.truncate(length)
        out.seek(length)
        return out
    return open(output, "wb")  # noqa: SIM115 - closed by the caller


@click.command("export")
@click.option("--format", "fmt", type=click.Choice(["csv", "ndjson"]), default="csv", show_default=True)
@click.option("--state", "state_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Keep the feed's cursor here: a rerun continues where the last one stopped.")
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path),
              help="Write here (else to stdout).")
@click.option("--updated-since", metavar="ISO-8601",
              help="Start with contacts changed since then (first run only; else the whole feed).")
@connection_options
def export_command(fmt: str, state_path: Path | None, output: Path | None, updated_since: str | None,
                   url: str, token: str | None, retries: int) -> None:
    """Export the tenant's contacts (and deletions) from the change feed. See docs/command.md."""
    service = Service(url, token, retries)
    state = read_state(state_path) if state_path else None
    if state is not None and state.get("format") != fmt:
        raise StateError(f"{state_path} belongs to a --format {state.get('format')} export: use that, "
                         "or another state file.")
    target = str(output.resolve()) if output else None
    if state is not None and state.get("output") != target:
        raise StateError(f"{state_path} belongs to an export to {state.get('output') or 'stdout'}: "
                         "use that --output, or another state file.")
    params: dict[str, Any] = {"limit": PAGE_SIZE}
    if state is not None:
        params["cursor"] = state["cursor"]
    elif updated_since:
        params["updatedSince"] = updated_since
    length = int(state.get("outputBytes", 0)) if state is not None and output is not None else 0
    rows = int(state.get("rows", 0)) if state is not None else 0
    out = open_output(output, length)
    progress = Progress("export", None, done=rows)
    written = 0
    try:
        while True:
            try:
                page = service.request("GET", FEED_PATH, params=params)
            except ServiceError as exc:
                if exc.code == "cursor_expired":
                    raise ServiceError(
                        f"the saved cursor is too old: tombstones it would need are purged "
                        f"(410 cursor_expired). Delete {state_path} (and the output) to export "
                        "everything again.") from None
                raise
            header = fmt == "csv" and written == 0 and (output is None or out.tell() == 0)
            out.write(encode_page(page["data"], fmt, header))
            out.flush()
            if output is not None:
                os.fsync(out.fileno())
            written += len(page["data"])
            params = {"limit": PAGE_SIZE, "cursor": page["nextCursor"]}
            if state_path is not None:
                write_state(state_path, {"version": 1, "format": fmt, "cursor": page["nextCursor"],
                                         "output": target,
                                         "outputBytes": out.tell() if output is not None else 0,
                                         "rows": rows + written})
            progress.advance(len(page["data"]))
            if not page["hasMore"]:
                break
    except BrokenPipeError:  # `contactsync export | head`: the reader has seen enough
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(EXIT_INTERRUPTED)
    except (KeyboardInterrupt, Interrupted):
        progress.close(finished=False)
        click.echo("\nInterrupted" + (f": run the same command again to continue from {state_path}."
                                      if state_path else "."), err=True)
        sys.exit(EXIT_INTERRUPTED)
    except BaseException:
        progress.close(finished=False)
        raise
    finally:
        if output is not None:
            out.close()
    progress.close()
    click.echo(f"Exported {written:,} changes" + (f" to {output}" if output else "") + ".", err=True)

