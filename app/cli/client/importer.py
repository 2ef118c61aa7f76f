"""`contactsync import FILE.csv`: a CSV export into `POST /contacts/bulk-update`,
in batches of 1000 with at most 2 requests in flight (DESIGN 14).

Before the first request the whole file is read once (csvfile.scan) and the
header is mapped (mapping.build_plan): bad input stops the run with nothing
sent. Batch k is records k*1000 .. k*1000+999 of the file, always the same
rows, so its body and its Idempotency-Key (the file's hash, k, the options)
are the same on every run. Answers are taken in batch order; after each one
the failed rows are appended to FILE.errors.csv and then the state file
records "batches 0..k acknowledged, the errors file is N bytes long". A rerun
after Ctrl-C skips the acknowledged batches, cuts the errors file back to N
bytes (dropping rows of a batch whose acknowledgement was not recorded) and
sends the rest: a batch that was applied but not recorded is replayed by the
server from its key, never applied twice. A finished run removes its state
file; the errors file stays.
"""

import csv
import hashlib
import io
import json
import os
import sys
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import click

from app.cli.client.csvfile import InputError, Scan, records, scan
from app.cli.client.mapping import MappingError, Plan, RowError, build_plan, normalised
from app.cli.client.progress import Progress
from app.cli.client.service import (
    EXIT_INTERRUPTED,
    EXIT_ROWS_FAILED,
    Interrupted,
    Service,
    ServiceError,
    connection_options,
)
from app.cli.client.statefile import StateError, read_state, remove_state, write_state

BULK_PATH = "/contacts/bulk-update"
BATCH_SIZE = 1000
IN_FLIGHT = 2  # requests at once: the pool's threads
# Batches prepared ahead and queued for the pool: while the oldest answer is
# awaited and recorded, the next ones are ready, so both threads stay busy.
AHEAD = 4
STATE_SUFFIX = ".contactsync-state.json"
KEY_PREFIX = "csimport-"
DRY_RUN_SHOWN = 20  # failures a dry run prints; the count says how many more


@dataclass
class Batch:
    """Records `number * size ...` of the file: (line, cells) each."""

    number: int
    rows: list[tuple[int, list[str]]]


@dataclass
class Prepared:
    """A batch turned into a request: the contacts sent with their rows, and the rows
    that failed here already (unsent) or were skipped (tombstones of an export)."""

    batch: Batch
    sent: list[tuple[int, list[str]]] = field(default_factory=list)
    contacts: list[dict[str, Any]] = field(default_factory=list)
    failed: list[tuple[int, list[str], str]] = field(default_factory=list)
    skipped: int = 0


@dataclass
class Counts:
    """What happened to the rows so far (kept in the state file across runs)."""

    created: int = 0
    updated: int = 0
    unchanged: int = 0
    stale: int = 0
    failed: int = 0
    skipped: int = 0

    def add(self, data: dict[str, Any]) -> None:
        """Count one answer's `data`."""
        for name in ("created", "updated", "unchanged", "stale"):
            setattr(self, name, getattr(self, name) + data.get(f"{name}Count", 0))


def errors_path_of(path: Path) -> Path:
    """contacts.csv -> contacts.errors.csv."""
    stem = path.name[:-4] if path.name.lower().endswith(".csv") else path.name
    return path.with_name(f"{stem}.errors.csv")


def state_path_of(path: Path) -> Path:
    """contacts.csv -> contacts.csv.contactsync-state.json, beside it."""
    return path.with_name(path.name + STATE_SUFFIX)


def batches(path: Path, size: int) -> Iterator[Batch]:
    """The file's data records in batches of `size` (the header is not one of them)."""
    rows: list[tuple[int, list[str]]] = []
    number = 0
    stream = records(path)
    next(stream)  # the header; scan() has checked it
    for record in stream:
        rows.append(record)
        if len(rows) == size:
            yield Batch(number, rows)
            number, rows = number + 1, []
    if rows:
        yield Batch(number, rows)


def prepare(batch: Batch, plan: Plan) -> Prepared:
    """Map each row of the batch to a contact, or to an error of its own."""
    prepared = Prepared(batch)
    for line, cells in batch.rows:
        try:
            contact = plan.contact(cells)
        except RowError as exc:
            prepared.failed.append((line, cells, f"line {line}: {exc}"))
            continue
        if contact is None:
            prepared.skipped += 1
        else:
            prepared.sent.append((line, cells))
            prepared.contacts.append(contact)
    return prepared


def request_body(contacts: list[dict[str, Any]], run_workflow: bool, dry_run: bool) -> bytes:
    """The JSON body, byte for byte the same for the same rows and options (replays need it)."""
    body: dict[str, Any] = {"contacts": contacts}
    if run_workflow:
        body["runWorkflow"] = True
    if dry_run:
        body["dryRun"] = True
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def batch_key(digest: str, number: int, options: str) -> str:
    """The batch's Idempotency-Key: the same file, batch and options give the same key."""
    return KEY_PREFIX + hashlib.sha256(f"{digest}:{number}:{options}".encode()).hexdigest()


def failure_message(failure: dict[str, Any], plan: Plan) -> str:
    """A failure of the answer as one line, naming the file's columns."""
    if failure.get("code") == "identity_conflict":
        conflict = failure.get("conflict") or {}
        held = [f"{name} is held by contact {conflict[f'{name}ContactId']}"
                for name in ("externalId", "email", "username")
                if conflict.get(f"{name}ContactId") is not None]
        return "identity_conflict: " + ("; ".join(held) or "the identities belong to different contacts")
    errors = failure.get("errors") or {}
    parts = [f"{plan.field_header(name)}: {text}" for name, text in flat_errors(errors)]
    return "; ".join(parts) or failure.get("message") or str(failure.get("code"))


def flat_errors(errors: Any, prefix: str = "") -> Iterator[tuple[str, str]]:
    """marshmallow's nested messages as (field, message) pairs."""
    if isinstance(errors, dict):
        for key, value in errors.items():
            name = f"{prefix}.{key}" if prefix else str(key)
            yield from flat_errors(value, name)
    elif isinstance(errors, list) and all(isinstance(item, str) for item in errors):
        yield prefix, " ".join(errors)
    elif isinstance(errors, list):
        for item in errors:
            yield from flat_errors(item, prefix)
    else:
        yield prefix, str(errors)


class ErrorsFile:
    """FILE.errors.csv: the original columns plus `error`, created at the first failure."""

    def __init__(self, path: Path, header: list[str], bom: bool, length: int, state_path: Path) -> None:
        self.path = path
        self.columns = len(header)
        self.bom = bom
        error_columns = [i for i, h in enumerate(header) if normalised(h) == "error"]
        # A file that is itself an errors file keeps one `error` column, with the new error.
        self.error_index = error_columns[-1] if error_columns else len(header)
        self.header = header if error_columns else [*header, "error"]
        self.out: BinaryIO | None = None
        if length:
            try:
                self.out = open(path, "r+b")  # noqa: SIM115 - kept open for the run, closed by close()
            except FileNotFoundError:
                raise StateError(f"{path}, which the interrupted import was writing, is gone: delete "
                                 f"{state_path} to start over.") from None
            self.out.truncate(length)
            self.out.seek(length)
        else:
            path.unlink(missing_ok=True)  # an earlier run's errors, now stale

    @property
    def length(self) -> int:
        """Bytes written so far (recorded in the state file)."""
        return 0 if self.out is None else self.out.tell()

    def write(self, rows: list[tuple[int, list[str], str]]) -> None:
        """Append failed rows and make them durable before the state names them."""
        if not rows:
            return
        text = io.StringIO()
        writer = csv.writer(text, lineterminator="\r\n")
        if self.out is None:
            self.out = open(self.path, "wb")  # noqa: SIM115 - kept open for the run
            if self.bom:
                self.out.write(b"\xef\xbb\xbf")
            writer.writerow(self.header)
        for _, cells, error in sorted(rows, key=lambda row: row[0]):
            if len(cells) > self.columns:
                writer.writerow([*cells, error])  # more cells than columns: kept whole, to be fixed
                continue
            padded = [*cells, *[""] * (len(self.header) - len(cells))]
            padded[self.error_index] = error
            writer.writerow(padded)
        self.out.write(text.getvalue().encode("utf-8"))
        self.out.flush()
        os.fsync(self.out.fileno())

    def close(self) -> None:
        """Close the file if it was opened."""
        if self.out is not None:
            self.out.close()


@dataclass
class Run:
    """One import: its file, plan, options, and where it stands."""

    path: Path
    scanned: Scan
    plan: Plan
    service: Service
    batch_size: int
    run_workflow: bool
    dry_run: bool
    options: str = ""
    done: int = 0  # batches acknowledged
    counts: Counts = field(default_factory=Counts)
    shown: int = 0

    @property
    def state_path(self) -> Path:
        """Where this import records its progress."""
        return state_path_of(self.path)

    @property
    def total_batches(self) -> int:
        """How many batches the file makes."""
        return -(-self.scanned.rows // self.batch_size)

    def send(self, prepared: Prepared) -> dict[str, Any]:
        """POST one batch (in a worker thread); the answer's `data`."""
        body = request_body(prepared.contacts, self.run_workflow, self.dry_run)
        headers = {} if self.dry_run else {
            "Idempotency-Key": batch_key(self.scanned.digest, prepared.batch.number, self.options)}
        try:
            answer = self.service.request("POST", BULK_PATH, body=body, headers=headers)
        except ServiceError as exc:
            first, last = prepared.batch.rows[0][0], prepared.batch.rows[-1][0]
            hint = (" (try a smaller --batch-size)" if exc.code in ("payload_too_large", "batch_size")
                    else "")
            raise ServiceError(f"batch {prepared.batch.number + 1} (lines {first}-{last}): "
                               f"{exc.message}{hint}", exc.code) from None
        return answer["data"]

    def resume(self) -> int:
        """Load the state of an interrupted run; return the errors file's recorded length."""
        state = read_state(self.state_path)
        if state is None:
            return 0
        if state.get("fileHash") != self.scanned.digest:
            raise StateError(f"{self.path} changed since the interrupted import recorded in "
                             f"{self.state_path}: delete that file to import it from the start.")
        if state.get("options") != self.options:
            raise StateError(f"the interrupted import recorded in {self.state_path} used other "
                             "--map/--ignore/--batch-size/--run-workflow options: run it with the same "
                             "ones, or delete that file to start over.")
        try:
            self.done = int(state["batchesDone"])
            self.counts = Counts(**state["counts"])
            length = int(state["errorsBytes"])
        except (KeyError, TypeError, ValueError):
            raise StateError(f"{self.state_path} is damaged: delete it to start over.") from None
        click.echo(f"Resuming: {self.done} of {self.total_batches} batches were acknowledged "
                   f"by an earlier run ({self.state_path.name}).", err=True)
        return length

    def save(self, errors: ErrorsFile) -> None:
        """Record the acknowledged batches, atomically."""
        write_state(self.state_path, {
            "version": 1, "file": self.path.name, "fileHash": self.scanned.digest,
            "options": self.options, "batchesDone": self.done, "batchesTotal": self.total_batches,
            "errorsBytes": errors.length, "counts": self.counts.__dict__})

    def acknowledge(self, prepared: Prepared, answer: dict[str, Any] | None, errors: ErrorsFile | None,
                    progress: Progress) -> None:
        """Take one batch's answer: count it, write its failed rows, then record it."""
        failed = list(prepared.failed)
        if answer is not None:
            self.counts.add(answer)
            for failure in answer.get("failures", []):
                line, cells = prepared.sent[failure["index"]]
                failed.append((line, cells, f"line {line}: {failure_message(failure, self.plan)}"))
        self.counts.failed += len(failed)
        self.counts.skipped += prepared.skipped
        self.done = prepared.batch.number + 1
        if errors is None:
            self.show(failed)
        else:
            errors.write(failed)
            self.save(errors)
        progress.advance(len(prepared.batch.rows))

    def show(self, failed: list[tuple[int, list[str], str]]) -> None:
        """A dry run writes no file: it prints the first failures."""
        for _, _, error in sorted(failed, key=lambda row: row[0]):
            if self.shown < DRY_RUN_SHOWN:
                click.echo(f"would fail: {error}", err=True)
            self.shown += 1

    def go(self) -> None:
        """Send every batch not yet acknowledged, at most IN_FLIGHT at once and AHEAD queued,
        taking the answers in batch order."""
        errors = None
        if not self.dry_run:
            length = self.resume()
            errors = ErrorsFile(errors_path_of(self.path), self.scanned.header, self.scanned.has_bom,
                                length, self.state_path)
        progress = Progress("import", self.scanned.rows,
                            done=min(self.done * self.batch_size, self.scanned.rows))
        pool = ThreadPoolExecutor(max_workers=IN_FLIGHT, thread_name_prefix="contactsync-import")
        pending: deque[tuple[Prepared, Future | None]] = deque()
        try:
            for batch in batches(self.path, self.batch_size):
                if batch.number < self.done:
                    continue
                prepared = prepare(batch, self.plan)
                future = pool.submit(self.send, prepared) if prepared.contacts else None
                pending.append((prepared, future))
                while len(pending) > AHEAD or (pending and answered(pending[0])):
                    self.take(pending.popleft(), errors, progress)
            while pending:
                self.take(pending.popleft(), errors, progress)
        except BaseException:
            self.service.stopping.set()  # a request waiting to be retried gives up now
            pool.shutdown(wait=False, cancel_futures=True)
            progress.close(finished=False)
            raise
        finally:
            if errors is not None:
                errors.close()
        progress.close()
        pool.shutdown()
        if not self.dry_run:
            remove_state(self.state_path)

    def take(self, item: tuple[Prepared, Future | None], errors: ErrorsFile | None,
             progress: Progress) -> None:
        """Wait for the oldest batch's answer and acknowledge it."""
        prepared, future = item
        self.acknowledge(prepared, None if future is None else future.result(), errors, progress)

    def summary(self) -> str:
        """The last line: what happened to every row."""
        c = self.counts
        text = (f"{self.path.name}: {self.scanned.rows:,} rows: {c.created:,} created, "
                f"{c.updated:,} updated, {c.unchanged:,} unchanged, {c.failed:,} failed")
        if c.stale:
            text += f", {c.stale:,} stale"
        if c.skipped:
            text += f", {c.skipped:,} skipped (deleted)"
        if self.dry_run:
            text = f"Dry run, nothing written: {text} (would be)"
        elif c.failed:
            text += f"; the failed rows, with an error column, are in {errors_path_of(self.path)}"
        return text


def answered(item: tuple[Prepared, Future | None]) -> bool:
    """Is this batch's answer in (or was there nothing to send)?"""
    return item[1] is None or item[1].done()


def options_fingerprint(plan: Plan, batch_size: int, run_workflow: bool) -> str:
    """Everything besides the file that shapes the requests: part of every key."""
    described = json.dumps({"columns": plan.fingerprint(), "batchSize": batch_size,
                            "runWorkflow": run_workflow}, sort_keys=True)
    return hashlib.sha256(described.encode()).hexdigest()[:32]


@click.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--map", "mappings", multiple=True, metavar="COLUMN=FIELD",
              help="Fill FIELD (a field like email or firstName, or attributes.KEY) from COLUMN. Repeatable.")
@click.option("--ignore", "ignored", multiple=True, metavar="COLUMN",
              help="Do not send COLUMN (else an unrecognised column becomes an attribute). Repeatable.")
@click.option("--dry-run", is_flag=True,
              help="Ask the service what would happen (dryRun); write nothing, keep no state.")
@click.option("--run-workflow", is_flag=True, help="Send runWorkflow: true (webhook events).")
@click.option("--batch-size", type=click.IntRange(1, BATCH_SIZE), default=BATCH_SIZE, show_default=True,
              help="Rows per request.")
@connection_options
def import_command(file: Path, mappings: tuple[str, ...], ignored: tuple[str, ...], dry_run: bool,
                   run_workflow: bool, batch_size: int, url: str, token: str | None, retries: int) -> None:
    """Import FILE (a CSV export with a header row) into the service, resumably.

    Failed rows go to FILE.errors.csv (the original columns and an `error` column);
    the exit status is 1 when any row failed. See docs/command.md.
    """
    service = Service(url, token, retries)
    try:
        scanned = scan(file)
    except KeyboardInterrupt:
        click.echo("\nInterrupted while reading the file; nothing was sent.", err=True)
        sys.exit(EXIT_INTERRUPTED)
    try:
        plan = build_plan(scanned.header, mappings, ignored)
    except MappingError as exc:
        raise InputError(f"{file}, line 1: {exc}") from None
    run = Run(file, scanned, plan, service, batch_size, run_workflow, dry_run,
              options=options_fingerprint(plan, batch_size, run_workflow))
    try:
        run.go()
    except (KeyboardInterrupt, Interrupted):
        if dry_run:
            click.echo("\nInterrupted.", err=True)
        else:
            click.echo(f"\nInterrupted: {run.done} of {run.total_batches} batches acknowledged and "
                       f"recorded in {run.state_path}; run the same command again to continue.", err=True)
        sys.exit(EXIT_INTERRUPTED)
    except ServiceError as exc:
        if not dry_run and run.done:
            exc.message += (f" ({run.done} of {run.total_batches} batches were acknowledged and recorded "
                            f"in {run.state_path}: run the same command again to continue)")
        raise
    if run.shown > DRY_RUN_SHOWN:
        click.echo(f"... and {run.shown - DRY_RUN_SHOWN:,} more", err=True)
    click.echo(run.summary())
    if run.counts.failed:
        sys.exit(EXIT_ROWS_FAILED)
