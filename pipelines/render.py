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


def highlight(text: str, query: str, width: int = 300) -> str:
    """A snippet around the first query term, with query terms (and their inflections:
    words sharing the first 4+ letters) in bold, as rich markup."""
    import re

    from rich.markup import escape

    terms = {t.lower() for t in re.findall(r"\w+", query) if len(t) > 2}
    stems = {t[:max(4, len(t) - 3)] for t in terms}

    def is_term(w: str) -> bool:
        w = w.lower()
        return w in terms or any(len(s) >= 4 and w.startswith(s) for s in stems)

    words = list(re.finditer(r"\w+", text))
    first = next((m.start() for m in words if is_term(m.group())), 0)
    start = max(0, first - width // 3)
    snippet = text[start:start + width]
    out, pos = [], 0
    for m in re.finditer(r"\w+", snippet):
        out.append(escape(snippet[pos:m.start()]))
        out.append(f"[bold yellow]{escape(m.group())}[/]" if is_term(m.group()) else escape(m.group()))
        pos = m.end()
    out.append(escape(snippet[pos:]))
    return ("…" if start else "") + "".join(out) + ("…" if start + width < len(text) else "")


def print_search_response(resp, explain: bool = False, out: Console | None = None) -> None:
    from pathlib import Path

    from rich.table import Table

    out = out or Console()
    title = f"{resp.mode}" + (f" ({resp.fusion})" if resp.fusion else "") + f": {resp.query}"
    t = Table(title=title, title_justify="left", show_lines=True)
    t.add_column("#", justify="right")
    t.add_column("score", justify="right")
    t.add_column("source:page", overflow="fold")
    if explain:
        t.add_column("dense rank/score", justify="right")
        t.add_column("bm25 rank/score", justify="right")
    t.add_column("text")
    for r in resp.results:
        pages = str(r.page_start) if r.page_start == r.page_end else f"{r.page_start}-{r.page_end}"
        row = [str(r.rank), f"{r.score:.4f}", f"{Path(r.source).name}:{pages}"]
        if explain:
            for leg in ("dense", "bm25"):
                x = r.legs.get(leg)
                row.append(f"{x.rank} / {x.score:.3f}" if x else "-")
        row.append(highlight(r.text, resp.query))
        t.add_row(*row)
    out.print(t)
    for note in resp.notes:
        out.print(f"[dim]note: {note}[/]")
    if not resp.results:
        out.print("no results")
