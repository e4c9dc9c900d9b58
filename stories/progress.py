"""Progress of `stories seed`: a live display on a terminal (rich), one log line per phase otherwise.

Both are thread-safe: the seed reports from the database bridge's thread while it copies rows.
"""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from typing import TYPE_CHECKING

import structlog
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import TextIO

    from rich.progress import TaskID

    from stories.seed import SeedProgress

__all__ = ["PhaseLog", "TerminalProgress", "seed_progress"]

log = structlog.get_logger()


class PhaseLog:
    """One `seed.phase` line as each phase begins, with the previous phase's duration; `seed.done` at the end."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._current: str | None = None
        self._began = time.perf_counter()

    def phase(self, name: str, total: int | None = None) -> None:
        with self._lock:
            self._end_current()
            log.info("seed.phase", phase=name, total=total)
            self._current = name

    def advance(self, amount: int) -> None:
        """Nothing between phases: a log is read afterwards, one line per phase is what it needs."""

    def close(self) -> None:
        with self._lock:
            self._end_current()

    def _end_current(self) -> None:
        now = time.perf_counter()
        if self._current is not None:
            log.info("seed.phase_done", phase=self._current, duration_ms=round((now - self._began) * 1000, 1))
        self._current, self._began = None, now


class TerminalProgress:
    """A rich Progress with one row per phase: a bar where the phase knows its total, a spinner where not."""

    def __init__(self, progress: Progress) -> None:
        self._progress = progress
        self._task: TaskID | None = None

    def phase(self, name: str, total: int | None = None) -> None:
        self._finish_current()
        self._task = self._progress.add_task(name, total=total)

    def advance(self, amount: int) -> None:
        if self._task is not None:
            self._progress.advance(self._task, amount)

    def close(self) -> None:
        self._finish_current()

    def _finish_current(self) -> None:
        if self._task is None:
            return
        task = self._progress.tasks[self._task]
        done = task.total if task.total is not None else 1
        self._progress.update(self._task, total=done, completed=done)
        self._task = None


@contextmanager
def seed_progress(stream: TextIO) -> Iterator[SeedProgress]:
    """A live display on `stream` when it is a terminal, else log lines (which go to stdout)."""
    if not stream.isatty():
        phases = PhaseLog()
        try:
            yield phases
        finally:
            phases.close()
        return
    columns = (
        SpinnerColumn(finished_text="✓"),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=Console(file=stream)) as progress:
        display = TerminalProgress(progress)
        try:
            yield display
        finally:
            display.close()
