"""Everything the user reads: progress bars (rate and ETA) and result tables, with rich.

Commands and jobs compute their results; the functions here print them. Tables go to stdout,
bars and notes to stderr. On a terminal a table fits its width; piped (`| grep`, a log file,
cron) it is as wide as its content, so a file path or a reason is never split across lines and
a log can be searched for a file name.
"""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                           TimeRemainingColumn)
from rich.table import Table

from rag.models import page_label

PIPED_WIDTH = 10_000  # wider than any row: piped tables never wrap


def _console(stderr: bool = False) -> Console:
    con = Console(stderr=stderr)
    return con if con.is_terminal else Console(stderr=stderr, width=PIPED_WIDTH)


console = _console(stderr=True)  # bars, notes and status lines


def stdout() -> Console:
    """A console on the current stdout (made per call: tests and callers may redirect it)."""
    return _console()


# ---------------------------------------------------------------------------- progress


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


@contextmanager
def query_progress(enabled: bool = True) -> Iterator[Callable[[str, int], Callable[[int], None]]]:
    """Queries done/total per evaluated mode, with ETA. Yields `start(mode, total)`, which
    returns an `advance(n)` callback for that mode."""
    with Progress(TextColumn("[bold]eval {task.fields[mode]}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("queries"), TimeRemainingColumn(), console=console, disable=not enabled) as bar:
        def start(mode: str, total: int) -> Callable[[int], None]:
            task = bar.add_task("eval", total=total, mode=mode)
            return lambda n: bar.advance(task, n)

        yield start


@contextmanager
def count_progress(label: str, total: int, unit: str = "queries",
                   enabled: bool = True) -> Iterator[Callable[[int], None]]:
    """Items done/total with rate and ETA for one long loop; yields `advance(n)`."""
    with Progress(TextColumn(f"[bold]{escape(label)}"), BarColumn(), MofNCompleteColumn(), TextColumn(unit),
                  TimeRemainingColumn(), console=console, disable=not enabled) as bar:
        task = bar.add_task(label, total=total)
        yield lambda n: bar.advance(task, n)


@contextmanager
def status(message: str, enabled: bool = True, report_after: float = 5.0):
    """A spinner while something blocking runs; afterwards, its time when it took a while."""
    if not enabled:
        yield
        return
    started = time.perf_counter()
    with console.status(message):
        yield
    spent = time.perf_counter() - started
    if spent > report_after:
        console.print(f"{message.rstrip(' .')}: done in {spent:.0f} s")


class TrainingProgress:
    """Steps done/total with the loss and ETA; on a log file (no terminal) a line every 5 %
    instead of a bar. `on_step` and `on_epoch` are the trainer's callbacks."""

    def __init__(self, bar: Progress, task):
        self.bar, self.task = bar, task
        self.t0 = time.perf_counter()

    def on_step(self, step: int, total: int, loss: float) -> None:
        self.bar.update(self.task, completed=step, total=total, loss=f"{loss:.4f}")
        if not console.is_terminal and not self.bar.disable and (step % max(1, total // 20) == 0 or step == total):
            spent = time.perf_counter() - self.t0
            console.print(f"step {step}/{total} loss {loss:.4f} elapsed {spent:.0f} s "
                          f"ETA {spent / step * (total - step):.0f} s (training only)")

    def on_epoch(self, e) -> None:
        dev = "" if e.dev_score is None else f", dev {e.dev_score:.4f}"
        if not self.bar.disable:
            self.bar.console.print(f"epoch {e.epoch}: train loss {e.train_loss:.4f}{dev} ({e.seconds:.0f} s)")


@contextmanager
def training_progress(enabled: bool = True) -> Iterator[TrainingProgress]:
    with Progress(TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(), TextColumn("steps"),
                  TextColumn("loss {task.fields[loss]}"), TimeElapsedColumn(), TextColumn("ETA"),
                  TimeRemainingColumn(), console=console, disable=not enabled) as bar:
        yield TrainingProgress(bar, bar.add_task("train", total=None, loss="-"))


def note(text: str) -> None:
    """A line for the user on stderr (kept apart from the results on stdout)."""
    console.print(text)


# ---------------------------------------------------------------------------- tables


def _table(title: str, **kwargs: Any) -> Table:
    """A table whose title (markup) fits on one line when the console has the room: a title
    wrapped to a narrow table would split the collection's path."""
    from rich.text import Text

    return Table(title=title, title_justify="left", min_width=Text.from_markup(title).cell_len, **kwargs)


def print_ingest_report(report, out: Console | None = None) -> None:
    out = out or stdout()
    counts = report.counts()
    t = _table(f"Ingest summary: {report.collection}")
    t.add_column("files", justify="left")
    t.add_column("", justify="right")
    for k in ("ingested", "replaced", "unchanged", "failed", "pruned"):
        t.add_row(k, str(counts[k]))
    t.add_section()
    ocr_files = [o for o in report.outcomes if o.ocr_pages]
    if ocr_files:
        t.add_row("pages read by OCR", f"{sum(o.ocr_pages for o in ocr_files)} in {len(ocr_files)} file(s)")
    t.add_row("chunks written", str(report.chunks_written))
    t.add_row("chunks/s", f"{report.chunks_per_second:.1f}")
    t.add_row("points in collection", str(report.total_points))
    t.add_row("seconds", f"{report.seconds:.1f}")
    out.print(t)
    if report.failed:
        f = _table("Failed files (nothing of them was written)")
        f.add_column("file", overflow="fold")
        f.add_column("reason", overflow="fold")
        for o in report.failed:
            f.add_row(escape(o.source), escape(o.reason or ""))
        out.print(f)
    if ocr_files:
        o_t = _table("Pages read by OCR (no text layer, or --ocr force)")
        o_t.add_column("file", overflow="fold")
        o_t.add_column("pages", justify="right")
        for o in ocr_files:
            o_t.add_row(escape(o.source), str(o.ocr_pages))
        out.print(o_t)
    warned = [o for o in report.outcomes if o.warnings]
    if warned:
        w = _table("Warnings (files were ingested)")
        w.add_column("file", overflow="fold")
        w.add_column("warning", overflow="fold")
        for o in warned:
            for msg in o.warnings:
                w.add_row(escape(o.source), escape(msg))
        out.print(w)
    print_near_duplicates(report, out)


def print_watch_outcomes(report, out: Console | None = None) -> None:
    """The rolling log of `rag ingest --watch`: one timestamped line per file a job changed (or
    failed on), then the collection's size."""
    out = out or stdout()
    stamp = time.strftime("%H:%M:%S")
    changed = [o for o in report.outcomes if o.status != "unchanged"]
    for o in changed:
        detail = f"{o.chunks} chunks" if o.status in ("ingested", "replaced") else (o.reason or "")
        out.print(f"{stamp} {o.status:<8} {escape(o.source)}  {escape(detail)}".rstrip(), highlight=False)
        for msg in o.warnings:
            out.print(f"{stamp}   warning: {escape(msg)}", highlight=False)
    if changed:
        out.print(f"{stamp} {report.total_points} points in {escape(report.collection)}", highlight=False)


def print_near_duplicates(report, out: Console | None = None) -> None:
    """The near-duplicate part of the ingest summary (nothing when the check was off)."""
    if report.near_duplicate_action is None:
        return
    out = out or stdout()
    verb = "skipped (not written)" if report.near_duplicate_action == "skip" else "flagged (written)"
    out.print(f"near-duplicate chunks (cosine >= {report.near_duplicate_threshold:g}): "
              f"{report.near_duplicates} {verb}")
    if report.near_duplicate_examples:
        t = _table("Near-duplicate chunks (examples)")
        for c in ("chunk", "duplicate of", "cosine", "text"):
            t.add_column(c, overflow="fold", justify="right" if c == "cosine" else "left")
        for d in report.near_duplicate_examples:
            t.add_row(escape(f"{Path(d.source).name}#{d.chunk_index}"),
                      escape(f"{Path(d.duplicate_of).name}#{d.duplicate_of_chunk}"),
                      f"{d.similarity:.3f}", escape(d.text[:120]))
        out.print(t)


def highlight(text: str, query: str, width: int = 300) -> str:
    """A snippet around the first query term, with query terms (and their inflections:
    words sharing the first 4+ letters) in bold, as rich markup."""
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
    out = out or stdout()
    title = f"{resp.mode}" + (f" ({resp.fusion})" if resp.fusion else "") + f": {resp.query}"
    t = _table(escape(title), show_lines=True)
    t.add_column("#", justify="right")
    t.add_column("score", justify="right")
    t.add_column("source:page", overflow="fold")
    legs = ("dense", "bm25") + tuple(x for x in ("fused", "rerank") if any(x in r.legs for r in resp.results))
    if explain:
        for leg in legs:
            t.add_column(f"{leg} rank/score", justify="right")
    t.add_column("text")
    for r in resp.results:
        row = [str(r.rank), f"{r.score:.4f}", escape(f"{Path(r.source).name}:{page_label(r.page_start, r.page_end)}")]
        if explain:
            for leg in legs:
                x = r.legs.get(leg)
                row.append(f"{x.rank} / {x.score:.3f}" if x else "-")
        text = highlight(r.text, resp.query)
        if explain and r.unit_start is not None:  # the sentence the dense leg matched best
            text += f"\n[dim]best sentence:[/] {escape(r.text[r.unit_start:r.unit_end])}"
        row.append(text)
        t.add_row(*row)
    out.print(t)
    route = getattr(resp, "route", None)
    if explain and route is not None:
        if route.routed:
            out.print(f"route: {len(route.documents)} of {route.considered} documents, named by "
                      + escape(", ".join(route.terms)) + ": "
                      + escape(", ".join(Path(s).name for s in route.documents)))
        else:
            out.print(f"route: not routed ({escape(route.reason)})")
    for n in resp.notes:
        out.print(f"[dim]note: {escape(n)}[/]")
    if not resp.results:
        out.print("no results")


METRICS = ("ndcg@10", "recall@10", "recall@100", "mrr@10")


def print_eval_report(report, out: Console | None = None) -> None:
    out = out or stdout()
    t = _table(escape(f"{report.dataset} ({report.split}, {report.queries} queries) — {report.collection}"))
    t.add_column("mode")
    for m in METRICS:
        t.add_column(m, justify="right")
    t.add_column("queries/s", justify="right")
    t.add_column("settings")
    for r in report.results:
        t.add_row(r.mode, *(f"{r.metrics[m]:.4f}" for m in METRICS),
                  f"{report.queries / r.seconds:.0f}" if r.seconds else "-", _describe(r.settings))
    out.print(t)


def _describe(settings: dict[str, Any]) -> str:
    parts = []
    if "fusion" in settings:
        parts.append(settings["fusion"] + (f" k={settings['rrf_k']}" if settings["fusion"] == "rrf" else ""))
        parts.append("w=" + ",".join(f"{w:g}" for w in settings["weights"]))
    parts.append(f"c={settings['candidates']}")
    if settings.get("route") == "off":
        parts.append("route off")
    elif "routed" in settings:
        parts.append(f"routed {settings['routed']}")
    if settings.get("reranker"):
        model = (settings["reranker"].get("init_parameters") or {}).get("model", "")
        parts.append(f"rerank {Path(str(model)).name} top {settings.get('rerank_depth')}")
    return " ".join(parts)


def print_answer_eval(report, out: Console | None = None) -> None:
    """`rag eval answers`: one row per question, then the overall figures."""
    out = out or stdout()
    t = _table(f"Answers: {report.file} on {report.collection} ({report.backend})")
    for col, justify in (("#", "right"), ("question", "left"), ("hit", "right"), ("on target", "right"),
                         ("figures in passages", "right"), ("in answer", "right"), ("citations", "right"),
                         ("unsupported", "right"), ("s", "right")):
        t.add_column(col, justify=justify, overflow="fold" if col == "question" else "ellipsis")
    for i, r in enumerate(report.per_question, 1):
        n = len(r.figures)
        t.add_row(str(i), escape(_clip(r.question, 70)), "-" if r.hit is None else ("yes" if r.hit else "no"),
                  "-" if r.on_target is None else f"{r.on_target:.2f}",
                  f"{len(r.figures_in_passages)}/{n}" if n else "-", f"{len(r.figures_in_answer)}/{n}" if n else "-",
                  "valid" if r.citations_valid else "invalid", f"{r.unsupported}/{r.sentences}", f"{r.seconds:.2f}")
    out.print(t)
    o = report.overall
    s = _table("Overall")
    s.add_column("metric", justify="left")
    s.add_column("", justify="right")
    for key, label in (("hit_rate", "hit rate (questions with a source glob)"),
                       ("on_target_rate", "passages from the named documents"),
                       ("figure_recall_passages", f"reference figures in passages (of {o['figures']:.0f})"),
                       ("all_figures_passages_rate", f"questions with every figure in passages "
                                                     f"(of {o['questions_with_figures']:.0f})"),
                       ("figure_recall_answer", "reference figures in the answer"),
                       ("citation_valid_rate", "citations valid"),
                       ("unsupported_rate", f"sentences unsupported (of {o['sentences']:.0f})")):
        s.add_row(label, f"{o[key]:.3f}")
    s.add_row("latency p50 / mean / max s", f"{o['latency_p50']:.2f} / {o['latency_mean']:.2f} / {o['latency_max']:.2f}")
    out.print(s)


def print_sts_result(result, model: str, out: Console | None = None) -> None:
    out = out or stdout()
    t = _table(escape(f"STS: {result.file} ({model})"))
    for c in ("pairs", "spearman", "pearson"):
        t.add_column(c, justify="right")
    t.add_row(str(result.pairs), f"{result.spearman:.4f}", f"{result.pearson:.4f}")
    out.print(t)


def print_training_report(report, title: str, model: str, out: Console | None = None) -> None:
    out = out or stdout()
    t = _table(escape(f"{title}: {model} -> {report.output} ({report.loss} loss, {report.examples} examples, "
                      f"{report.seconds:.0f} s)"))
    for c in ("epoch", "train loss", f"dev {report.dev_metric or '-'}", "seconds", ""):
        t.add_column(c, justify="right")
    for e in report.epochs:
        t.add_row(str(e.epoch), f"{e.train_loss:.4f}", "-" if e.dev_score is None else f"{e.dev_score:.4f}",
                  f"{e.seconds:.0f}", "kept" if e.epoch == report.best_epoch else "")
    out.print(t)
    first = getattr(report, "first_stage_dev_score", None)
    if first is not None:
        out.print(f"dev {report.dev_metric} of the first stage alone (no reranking): {first:.4f}")


def print_mined_pairs(pairs, texts, threshold: float, label: str, seconds: float, top: int,
                      out: Console | None = None) -> None:
    out = out or stdout()
    t = _table(escape(f"{len(pairs)} pairs with cosine >= {threshold} among {len(texts)} texts of {label} "
                      f"({seconds:.1f} s)" + (f"; top {top}" if len(pairs) > top else "")), show_lines=True)
    t.add_column("cosine", justify="right")
    t.add_column("text", overflow="fold")
    t.add_column("near-duplicate", overflow="fold")
    for i, j, sim in pairs[:top]:
        t.add_row(f"{sim:.4f}", escape(texts[i][:300]), escape(texts[j][:300]))
    out.print(t)


def print_clusters(clusters, texts, threshold: float, min_size: int, label: str, seconds: float, top: int,
                   out: Console | None = None) -> None:
    """One row per cluster, largest first: size, most central text, top terms."""
    out = out or stdout()
    clustered = sum(c.size for c in clusters)
    t = _table(escape(f"{len(clusters)} clusters (cosine >= {threshold}, at least {min_size} texts) among "
                      f"{len(texts)} texts of {label}: {clustered} clustered, {len(texts) - clustered} in none "
                      f"({seconds:.1f} s)" + (f"; top {top}" if len(clusters) > top else "")), show_lines=True)
    t.add_column("#", justify="right")
    t.add_column("size", justify="right")
    t.add_column("most central text", overflow="fold")
    t.add_column("top terms", overflow="fold")
    for c in clusters[:top]:
        t.add_row(str(c.id), str(c.size), escape(" ".join(texts[c.central].split())[:300]),
                  escape(", ".join(term for term, _ in c.terms)))
    out.print(t)


def short_source(source: str) -> str:
    """A source path as the user would type it: relative to the working folder when inside it,
    else its last two parts."""
    path = Path(source)
    try:
        return path.relative_to(Path.cwd()).as_posix()
    except ValueError:
        return "…/" + "/".join(path.parts[-2:]) if len(path.parts) > 2 else source


def print_answer_sources(answer, out: Console | None = None) -> None:
    """After an answer: the rewritten question (chat), the passages that were in the prompt and
    whether the answer cites each, then the notes."""
    out = out or stdout()
    if answer.standalone_question:
        console.print(f"[dim]searched for: {escape(answer.standalone_question)}[/dim]")
    if answer.passages:
        t = _table(escape(f"Sources ({answer.kind}, {answer.backend}, {answer.seconds:.1f} s)"))
        t.add_column("#", justify="right")
        t.add_column("cited")
        t.add_column("source", overflow="fold")
        t.add_column("pages", justify="right")
        t.add_column("score", justify="right")
        cited = set(answer.cited)
        for p in answer.passages:
            t.add_row(f"[{p.number}]", "yes" if p.number in cited else "", escape(short_source(p.source)),
                      p.pages, f"{p.score:.3f}")
        out.print(t)
    unsupported = [x for x in answer.support if not x.supported]
    if unsupported:
        console.print(f"[red]unsupported:[/red] {len(unsupported)} of {len(answer.support)} sentence(s) state "
                      "figures or names that no cited passage holds:")
        for x in unsupported:
            console.print(f"  [red]✗[/red] {escape(_clip(x.text, 160))}  [dim]missing: "
                          f"{escape(', '.join(x.missing))}[/dim]")
    for n in answer.notes:
        console.print(f"[yellow]note:[/yellow] {escape(n)}")
    console.print(f"[dim]answered by: {escape(answer.backend)}"
                  + (f" — {escape(answer.backend_origin)}" if answer.backend_origin else "") + "[/dim]")


def _clip(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[:width - 1] + "…"
