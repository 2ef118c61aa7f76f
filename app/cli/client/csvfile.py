"""Reading a CSV export as a stream of records, each with the line it starts on.

The file is read in binary, line by line, and each line decoded as UTF-8 (a BOM
on the first line is dropped), so that a bad byte is reported with its line
number and no more than one line is ever held undecoded. `scan` reads the whole
file once before anything is sent: it hashes it (the Idempotency-Keys need the
hash), counts its records (the progress bar needs the total) and proves that
every line decodes and parses, so a bad byte deep in a large file stops the
import before its first request rather than half way.
"""

import csv
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import click

from app.cli.client.service import EXIT_BAD_INPUT

BOM = b"\xef\xbb\xbf"


class InputError(click.ClickException):
    """The file cannot be imported as it is: nothing was sent."""

    exit_code = EXIT_BAD_INPUT


@dataclass(frozen=True)
class Scan:
    """What the first pass learnt: the file's SHA-256, its header, how many data records."""

    digest: str
    header: list[str]
    rows: int
    has_bom: bool


def text_lines(binary: BinaryIO, path: Path, hasher: Any = None) -> Iterator[str]:
    """The file's lines as text, checked: UTF-8, no NUL byte (a binary file)."""
    for number, raw in enumerate(binary, 1):
        if hasher is not None:
            hasher.update(raw)
        if number == 1 and raw.startswith(BOM):
            raw = raw[len(BOM):]
        if b"\0" in raw:
            raise InputError(f"{path}, line {number}: a NUL byte: this is a binary file, not a CSV export.")
        try:
            yield raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InputError(
                f"{path}, line {number}: not UTF-8 text (byte 0x{raw[exc.start]:02x} at byte "
                f"{exc.start + 1} of the line): save the export as UTF-8 CSV.") from None


def records(path: Path, hasher: Any = None) -> Iterator[tuple[int, list[str]]]:
    """(line it starts on, cells) for every record, header included; blank lines skipped."""
    with open(path, "rb") as binary:
        reader = csv.reader(text_lines(binary, path, hasher))
        end = 0
        try:
            for cells in reader:
                start, end = end + 1, reader.line_num
                if cells:
                    yield start, cells
        except csv.Error as exc:
            raise InputError(f"{path}, line {reader.line_num}: not valid CSV ({exc}).") from None


def scan(path: Path) -> Scan:
    """Read the whole file once: hash, header, record count, and every check of `records`."""
    hasher = hashlib.sha256()
    header: list[str] | None = None
    rows = 0
    try:
        for _, cells in records(path, hasher):
            if header is None:
                header = cells
            else:
                rows += 1
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror}") from None
    if header is None or not any(cell.strip() for cell in header):
        raise InputError(f"{path}, line 1: no header row: the first line must name the columns.")
    with open(path, "rb") as binary:
        has_bom = binary.read(len(BOM)) == BOM
    return Scan(hasher.hexdigest(), header, rows, has_bom)
