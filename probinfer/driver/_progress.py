"""Progress bars between compiled chunks, with fields chosen by the caller."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


class ProgressReporter:
    """One progress bar; several drives of a run (warm-up, then sampling) may share it.

    Attributes:
        completed: steps shown as done.
    """

    def __init__(self, progress: Progress, task: TaskID) -> None:
        self._progress = progress
        self._task = task
        self.completed = 0

    def update(
        self,
        *,
        description: str | None = None,
        advance: int = 0,
        rate: float | None = None,
        fields: dict[str, Any] | None = None,
    ) -> None:
        """Move the bar and refresh its fields.

        Args:
            description: a new label (e.g. the phase), or None to keep it.
            advance: steps done since the last update.
            rate: steps per second, or None to keep it.
            fields: ``name -> value`` shown after the rate (floats with 4 significant
                digits), or None to keep them.
        """
        self.completed += advance
        changes: dict[str, Any] = {"completed": self.completed}
        if description is not None:
            changes["description"] = description
        if rate is not None:
            changes["rate"] = rate
        if fields is not None:
            changes["text"] = "  ".join(
                f"{name}: {value:.4g}" if isinstance(value, float) else f"{name}: {value}"
                for name, value in fields.items()
            )
        self._progress.update(self._task, **changes)


@contextmanager
def progress_bar(
    enabled: bool, total: int | None, description: str, *, rate_unit: str = "steps/s"
) -> Iterator[ProgressReporter | None]:
    """A rich progress bar, or None when disabled.

    Args:
        enabled: show the bar.
        total: steps in all, or None when not known in advance (a loop that stops on a
            condition).
        description: the first label.
        rate_unit: the rate's unit text (e.g. ``"steps/s x 4 chains"``).

    Yields:
        The :class:`ProgressReporter`, or None.
    """
    if not enabled:
        yield None
        return
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]:>8.1f} " + rate_unit.replace("[", r"\[")),
        TextColumn("{task.fields[text]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, transient=False) as progress:
        task = progress.add_task(description, total=total, rate=0.0, text="")
        yield ProgressReporter(progress, task)
