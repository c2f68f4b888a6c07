"""Progress bars (rate and ETA) and result tables, with rich."""

from __future__ import annotations

import time
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                           TimeRemainingColumn)

console = Console(stderr=True)


class _IngestBar:
    def __init__(self, progress: Progress | None, task):
        self.progress, self.task = progress, task
        self.chunks = 0
        self.t0 = time.perf_counter()

    def advance_file(self) -> None:
        if self.progress is not None:
            self.progress.update(self.task, advance=1, **self._fields())

    def advance_chunks(self, n: int) -> None:
        self.chunks += n
        if self.progress is not None:
            self.progress.update(self.task, **self._fields())

    def _fields(self) -> dict:
        rate = self.chunks / max(time.perf_counter() - self.t0, 1e-9)
        return {"chunks": self.chunks, "rate": f"{rate:,.1f}"}


@contextmanager
def ingest_progress(total_files: int, enabled: bool = True):
    """Files done/total with ETA, plus chunks written and chunks/s."""
    if not enabled or total_files == 0:
        yield _IngestBar(None, None)
        return
    progress = Progress(
        TextColumn("[bold]ingest"), BarColumn(), MofNCompleteColumn(), TextColumn("files"),
        TextColumn("{task.fields[chunks]} chunks"), TextColumn("{task.fields[rate]} chunks/s"),
        TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
        console=console, transient=False,
    )
    with progress:
        task = progress.add_task("ingest", total=total_files, chunks=0, rate="0.0")
        yield _IngestBar(progress, task)


def print_ingest_report(report, out: Console | None = None) -> None:
    from rich.table import Table

    out = out or Console()
    counts = report.counts()
    t = Table(title=f"Ingest summary: {report.collection}", title_justify="left")
    t.add_column("files", justify="left")
    t.add_column("", justify="right")
    for k in ("ingested", "replaced", "unchanged", "failed", "pruned"):
        t.add_row(k, str(counts[k]))
    t.add_section()
    t.add_row("chunks written", str(report.chunks_written))
    t.add_row("chunks/s", f"{report.chunks_per_second:.1f}")
    t.add_row("points in collection", str(report.total_points))
    t.add_row("seconds", f"{report.seconds:.1f}")
    out.print(t)
    if report.failed:
        f = Table(title="Failed files (nothing of them was written)", title_justify="left")
        f.add_column("file", overflow="fold")
        f.add_column("reason", overflow="fold")
        for o in report.failed:
            f.add_row(o.source, o.reason or "")
        out.print(f)
    warned = [o for o in report.outcomes if o.warnings]
    if warned:
        w = Table(title="Warnings (files were ingested)", title_justify="left")
        w.add_column("file", overflow="fold")
        w.add_column("warning", overflow="fold")
        for o in warned:
            for msg in o.warnings:
                w.add_row(o.source, msg)
        out.print(w)
