"""Progress bars on standard error, shown only when it is a terminal.

Long commands (a retention pass over many rows, the demo, the benchmark)
show how far they got while they run. Piped or redirected, they show
nothing, so logs and scripts read exactly what they read before::

    with progress_bars() as bars:
        bar = bars.add("published", total=300)
        ...
        bar.update(completed=n)

A bar with ``total=None`` has no known end (it pulses) and says what was
done so far in its ``detail``. The bars vanish when the block ends; what
the command prints to standard output stays.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
)


class ProgressBar:
    """One bar; every method does nothing when the bars are not shown."""

    def __init__(self, progress: Progress | None, task: TaskID | None) -> None:
        self._progress = progress
        self._task = task

    def update(
        self,
        *,
        completed: float | None = None,
        description: str | None = None,
        detail: str | None = None,
    ) -> None:
        if self._progress is None or self._task is None:
            return
        if detail is None:
            self._progress.update(self._task, completed=completed, description=description)
        else:
            self._progress.update(self._task, completed=completed, description=description, detail=detail)

    def advance(self, amount: float = 1) -> None:
        if self._progress is not None and self._task is not None:
            self._progress.advance(self._task, amount)


class ProgressBars:
    """The bars of one display."""

    def __init__(self, progress: Progress | None) -> None:
        self._progress = progress

    @property
    def shown(self) -> bool:
        return self._progress is not None

    def add(self, description: str, total: float | None = None, detail: str = "") -> ProgressBar:
        if self._progress is None:
            return ProgressBar(None, None)
        return ProgressBar(self._progress, self._progress.add_task(description, total=total, detail=detail))


@contextmanager
def progress_bars(stream: TextIO | None = None) -> Iterator[ProgressBars]:
    """A display of progress bars on *stream* (standard error) while the block runs,
    if it is a terminal; otherwise bars that do nothing.

    While they are shown, what the block prints to standard error, and to
    standard output when that is the same kind of terminal, appears above
    them; standard output sent elsewhere (a file, a pipe) is left alone.
    """
    stream = stream if stream is not None else sys.stderr
    if not stream.isatty():
        yield ProgressBars(None)
        return
    progress = Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[detail]}"),
        TimeElapsedColumn(),
        console=Console(file=stream),
        transient=True,
        redirect_stdout=sys.stdout.isatty(),
        redirect_stderr=stream is sys.stderr,
    )
    with progress:
        yield ProgressBars(progress)
