"""The `contactsync import` phase of `make bench`: a 100,000-row CSV end to end.

The installed console script runs as a process of its own against the bench's
gunicorn, as a user runs it: the first pass over the file, the header mapping,
batches of 1000 with 2 in flight, the state file after every answer. The rows
are a CRM export's: half updates of the tenant's updatable seeded contacts
(mixed-case emails, a new `rev` each time), half new contacts, interleaved,
with extra columns that become attributes. The figure is rows over the
command's whole run (process start to exit), beside the synchronous
mixed-1000 figure of the service (2 client threads).
"""

import csv
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.drive import BenchError
from bench.seed import ROOT, Tenant, contact_number
from bench.workload import UPDATABLE, next_revision

IMPORT_ROWS = 100_000
IMPORT_TENANT = 4  # tenants 0-3 take the batch tasks
IMPORT_TIME_LIMIT_S = 300.0
HEADER = ["External ID", "Email", "First Name", "Locale", "rev", "plan", "seats"]
COMMAND = Path(sys.executable).parent / "contactsync"


def write_export(path: Path, tenant: int, count: int) -> None:
    """The CSV: even rows update seeded contacts, odd rows create new ones (keys new
    to this run too, should DATABASE_URL keep an earlier run's)."""
    run = time.strftime("%Y%m%d%H%M%S")
    with open(path, "w", encoding="utf-8", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(HEADER)
        for i in range(count // 2):
            n = contact_number(tenant, UPDATABLE.start + i % len(UPDATABLE))
            writer.writerow([f"ext-{n}", f"User{n}@Example.com", "", "", next_revision(), "", ""])
            key = f"import-{run}-{i}"
            writer.writerow([key, f"{key}@Example.com", "New", "en", "", "free", "1"])


def measure_import(base_url: str, tenants: list[Tenant], log: Any) -> dict[str, Any]:
    """Run the import once; its rows per second over the whole process."""
    tenant = tenants[IMPORT_TENANT]
    with tempfile.TemporaryDirectory(prefix="contactsync-bench-") as folder:
        path = Path(folder) / "crm-export.csv"
        write_export(path, tenant.index, IMPORT_ROWS)
        size_mb = path.stat().st_size / 1e6
        started = time.perf_counter()
        try:
            done = subprocess.run([str(COMMAND), "import", str(path), "--url", base_url,
                                   "--token", tenant.token], cwd=ROOT, capture_output=True, text=True,
                                  timeout=IMPORT_TIME_LIMIT_S)
        except subprocess.TimeoutExpired:
            raise BenchError(f"contactsync import did not finish within {IMPORT_TIME_LIMIT_S:.0f} s") \
                from None
        elapsed = time.perf_counter() - started
    expected = f"{IMPORT_ROWS // 2:,} created, {IMPORT_ROWS // 2:,} updated, 0 unchanged, 0 failed"
    if done.returncode != 0 or expected not in done.stdout:
        raise BenchError(f"contactsync import exited {done.returncode}, expected '{expected}':\n"
                         f"{done.stdout[-1000:]}{done.stderr[-2000:]}")
    if re.search(r"retrying in", done.stderr):
        log("contactsync import had to retry requests: the figure includes the waits")
    result = {"rows": IMPORT_ROWS, "file_mb": round(size_mb, 1), "seconds": round(elapsed, 2),
              "contacts_per_s": round(IMPORT_ROWS / elapsed)}
    log(f"contactsync import: {IMPORT_ROWS:,} rows ({size_mb:.1f} MB) in {elapsed:.1f} s: "
        f"{result['contacts_per_s']:,} contacts/s")
    return result


def format_import(result: dict[str, Any], sync_rate: float) -> str:
    """The phase's line, beside the synchronous mixed-1000 figure."""
    return (f"contactsync import of a {result['rows']:,}-row CSV ({result['file_mb']} MB), end to end: "
            f"{result['contacts_per_s']:,} contacts/s in {result['seconds']:.1f} s; synchronous "
            f"mixed-1000: {sync_rate:,.0f} contacts/s; ratio {result['contacts_per_s'] / sync_rate:.2f}")
