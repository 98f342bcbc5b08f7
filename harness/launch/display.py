"""The live view of a sweep: a table redrawn in place on a terminal, status lines in a log.

Each row is a trial: pending, running (iteration, speed and ETA from its run directory's
status.json), done (a headline metric), failed (the reason) or pruned. On a terminal the
table is redrawn every refresh; otherwise a line is printed when a trial changes state and
a summary line every `every_s` seconds.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import IO

PENDING, RUNNING = "pending", "running"
STATES = (PENDING, RUNNING, "done", "failed", "pruned")


@dataclass(frozen=True)
class Row:
    """What the display shows of one trial."""

    trial_id: str
    state: str  # one of STATES
    iteration: int | None = None
    total: int | None = None
    it_per_s: float | None = None
    eta_s: float | None = None
    job_id: str | None = None
    note: str = ""  # a metric when done, the reason when failed


def format_seconds(seconds: float | None) -> str:
    """3725 -> 1h02m, 125 -> 2m05s, 7 -> 7s, None -> -."""
    if seconds is None:
        return "-"
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"


def _progress(row: Row) -> str:
    if row.iteration is None or not row.total:
        return "-"
    return f"{row.iteration}/{row.total}"


def render_table(rows: list[Row], title: str) -> list[str]:
    """The table as lines."""
    header = ("trial", "state", "iteration", "it/s", "ETA", "job", "")
    body = [(r.trial_id, r.state, _progress(r),
             f"{r.it_per_s:.2f}" if r.it_per_s else "-",
             format_seconds(r.eta_s) if r.state == RUNNING else "-",
             r.job_id or "-", r.note[:60]) for r in rows]
    widths = [max(len(str(line[i])) for line in [header, *body]) for i in range(len(header))]
    lines = [title] + ["  ".join(str(cell).ljust(w) for cell, w in zip(line, widths,
                                                                      strict=True)).rstrip()
                       for line in [header, *body]]
    return lines + [summary(rows)]


def summary(rows: list[Row]) -> str:
    """'2 done, 1 running, 1 pending, 0 failed' (pruned when there are some)."""
    counts = {state: sum(r.state == state for r in rows) for state in STATES}
    parts = [f"{counts[s]} {s}" for s in ("done", RUNNING, PENDING, "failed")]
    if counts["pruned"]:
        parts.append(f"{counts['pruned']} pruned")
    return ", ".join(parts)


class Display:
    """Shows rows as a live table (terminal) or as event and summary lines (log)."""

    def __init__(self, title: str, stream: IO[str] | None = None,
                 interactive: bool | None = None, every_s: float = 30.0):
        self.title = title
        self.stream = stream or sys.stdout  # bound now: trials may redirect sys.stdout later
        self.interactive = self.stream.isatty() if interactive is None else interactive
        self.every_s = every_s
        self._drawn = 0
        self._states: dict[str, str] = {}
        self._last_summary = 0.0
        self._lock = threading.Lock()

    def update(self, rows: list[Row]) -> None:
        """Show the rows' current state."""
        with self._lock:
            if self.interactive:
                lines = render_table(rows, self.title)
                if self._drawn:
                    self.stream.write(f"\x1b[{self._drawn}F\x1b[J")
                self.stream.write("\n".join(lines) + "\n")
                self._drawn = len(lines)
            else:
                self._log_lines(rows)
            self.stream.flush()

    def _log_lines(self, rows: list[Row]) -> None:
        now = time.time()
        stamp = time.strftime("%H:%M:%S")
        for row in rows:
            if self._states.get(row.trial_id) != row.state:
                self._states[row.trial_id] = row.state
                job = f" (job {row.job_id})" if row.job_id else ""
                note = f": {row.note}" if row.note else ""
                self.stream.write(f"[{stamp}] {row.trial_id} {row.state}{job}{note}\n")
        if now - self._last_summary >= self.every_s:
            self._last_summary = now
            running = [f"{r.trial_id} {_progress(r)} ETA {format_seconds(r.eta_s)}"
                       for r in rows if r.state == RUNNING and r.iteration is not None]
            detail = f" | {'; '.join(running)}" if running else ""
            self.stream.write(f"[{stamp}] {summary(rows)}{detail}\n")

    def finish(self, rows: list[Row]) -> None:
        """The final table, also in a log."""
        with self._lock:
            if self.interactive and self._drawn:
                self.stream.write(f"\x1b[{self._drawn}F\x1b[J")
            self._drawn = 0
            self.stream.write("\n".join(render_table(rows, self.title)) + "\n")
            self.stream.flush()

    @contextmanager
    def follow(self, rows: Callable[[], list[Row]], interval_s: float = 2.0) -> Iterator[None]:
        """Refresh from `rows()` on a background thread while the body runs (in-process
        trials block the main thread)."""
        stop = threading.Event()

        def loop() -> None:
            while not stop.wait(interval_s):
                self.update(rows())

        self.update(rows())
        thread = threading.Thread(target=loop, daemon=True, name="sweep-display")
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()
