"""Progress on stderr: a tqdm bar (rows, rows/s, ETA) on a terminal, else a plain
line every few seconds, so that a log file or CI output stays readable."""

import sys
import time
from typing import TextIO

from tqdm import tqdm

PLAIN_EVERY_S = 5.0


class Progress:
    """Counts rows done out of `total` (None when unknown, as for the feed)."""

    def __init__(self, label: str, total: int | None, done: int = 0, sink: TextIO | None = None,
                 terminal: bool | None = None) -> None:
        self.sink = sink or sys.stderr
        self.label = label
        self.total = total
        self.done = done
        self.started_at = time.monotonic()
        self.started_with = done
        self.last_line_at = self.started_at
        use_bar = self.sink.isatty() if terminal is None else terminal
        self.bar = (tqdm(total=total, initial=done, unit=" rows", unit_scale=False, desc=label,
                         file=self.sink, dynamic_ncols=True, smoothing=0.1) if use_bar else None)

    def advance(self, rows: int) -> None:
        """`rows` more are done."""
        self.done += rows
        if self.bar is not None:
            self.bar.update(rows)
            return
        now = time.monotonic()
        if now - self.last_line_at >= PLAIN_EVERY_S:
            self.last_line_at = now
            self.line()

    def line(self) -> None:
        """One plain progress line: rows, rate and, when the total is known, the ETA."""
        elapsed = max(time.monotonic() - self.started_at, 1e-6)
        rate = (self.done - self.started_with) / elapsed
        text = f"{self.label}: {self.done:,}"
        if self.total:
            text += f"/{self.total:,} rows ({100 * self.done / self.total:.0f}%)"
        else:
            text += " rows"
        text += f", {rate:,.0f} rows/s"
        if self.total and rate > 0:
            text += f", ETA {format_seconds((self.total - self.done) / rate)}"
        print(text, file=self.sink, flush=True)

    def close(self, finished: bool = True) -> None:
        """End the bar, or print the last plain line (not when the run failed: the
        error is the last line then)."""
        if self.bar is not None:
            self.bar.close()
        elif finished:
            self.line()


def format_seconds(seconds: float) -> str:
    """H:MM:SS."""
    whole = int(seconds + 0.5)
    return f"{whole // 3600}:{whole % 3600 // 60:02d}:{whole % 60:02d}"
