"""What every stage returns, and the progress display they share."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


@dataclass
class StageReport:
    stage: str
    run_id: str
    skipped: bool
    result: BaseModel
    seconds: float = 0.0

    @property
    def summary(self) -> dict[str, Any]:
        """The result as JSON data, as the ledger stores it."""
        return self.result.model_dump(mode="json")


def progress_bar(console: Console, *extra: TextColumn) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        *extra,
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )
