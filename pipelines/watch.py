"""`rag ingest PATH... --watch`: after a first ingest (with prune), follow the folders and keep the
collection equal to them, as a clean `rag ingest PATH... --prune` of their current state would.

Every change goes through the ingest job (`pipelines.ingest.ingest` on an open collection), so
a watched file gets the same per-file crash safety and outcomes as any ingest: new and changed
files are ingested ("ingested", "replaced"; a file saved without changes stays "unchanged"),
deleted ones, and the old names of renamed ones, removed ("pruned").

What the watcher decides is pure and tested on its own:
- `Debouncer`: changes are gathered until the folders have been quiet for `quiet` seconds (a
  burst of copies, a file written slowly, an editor's save-by-rename), or the oldest has waited
  `max_wait`; then the whole batch goes to one ingest job.
- `plan`: a batch of changed paths and what is on disk now -> the files to ingest and the
  sources to remove. Only the final state counts, so a rename is the old name's removal plus
  the new name's ingest, and a file created then deleted within a batch costs nothing. Files
  are selected by the walk's own rule (`rag.ingest.loaders.selected`: include/exclude globs,
  hidden folders skipped), so temporary and unsupported files are ignored exactly as a clean
  ingest ignores them, and a file renamed to a name no glob takes is removed.

Stopping: SIGTERM, or a first Ctrl-C, sets a stop event; the job in flight finishes the files
whose chunks it holds and starts no other (the rest wait for the next run, which finds them
changed), then the collection is closed. A second Ctrl-C abandons the file in flight at once;
like a crash, that leaves nothing the next run does not repair.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pipelines.ingest import IngestReport, ingest, open_for_writing
from pipelines.memory import release_free_memory
from pipelines.stores import StoreSettings
from rag.ingest.loaders import selected, source_name

QUIET = 1.0  # seconds without any change before a batch is ingested
MAX_WAIT = 30.0  # seconds the oldest change of a busy folder waits at most
TICK_MS = 200  # how often the watcher wakes to check the quiet time when nothing changes

Kind = Literal["file", "dir", "missing"]


@dataclass
class Debouncer:
    """Gathers changed paths into batches: `due(now)` hands over every pending path once no
    change arrived for `quiet` seconds, or once the oldest has waited `max_wait`."""

    quiet: float = QUIET
    max_wait: float = MAX_WAIT
    _pending: dict[str, None] = field(default_factory=dict)
    _first: float | None = None
    _last: float | None = None

    def add(self, paths: Iterable[str], now: float) -> None:
        paths = list(paths)
        if not paths:
            return
        self._pending.update(dict.fromkeys(paths))
        self._first = now if self._first is None else self._first
        self._last = now

    def due(self, now: float) -> list[str]:
        if not self._pending or self._first is None or self._last is None:
            return []
        if now - self._last < self.quiet and now - self._first < self.max_wait:
            return []
        out = list(self._pending)
        self._pending.clear()
        self._first = self._last = None
        return out

    def __len__(self) -> int:
        return len(self._pending)


@dataclass(frozen=True)
class Root:
    """A watched PATH as a source (resolved path) and whether it is a folder."""

    source: str
    is_dir: bool

    def owns(self, path: str) -> bool:
        return path.startswith(self.source + "/") if self.is_dir else path == self.source


@dataclass(frozen=True)
class Plan:
    ingest: list[str]  # files to ingest (sources, which are their paths)
    remove: list[str]  # stored sources to delete

    def __bool__(self) -> bool:
        return bool(self.ingest or self.remove)


def plan(state: Mapping[str, Kind], roots: Sequence[Root], include: Iterable[str], exclude: Iterable[str],
         stored: Callable[[str, bool], set[str]]) -> Plan:
    """What to do about a batch: `state` is what is on disk now at each changed path (by source),
    a changed folder's files included ("dir" for the folder itself); `stored(path, under)` the
    sources the collection holds at `path` (with `under`, also below it), asked only where
    something may have to go. A file under a root that the walk selects is ingested; a stored
    source is removed when its path is missing, lies under a missing folder, is a file no longer
    selected, or lies under a changed folder but is no longer among its files. Paths outside
    every root are ignored."""
    include, exclude = tuple(include), tuple(exclude)
    to_ingest: set[str] = set()
    maybe_gone: list[tuple[str, Kind]] = []  # paths whose stored sources may have to go
    for path, kind in state.items():
        root = next((r for r in roots if r.owns(path)), None)
        if root is None:
            continue
        if kind == "file" and (not root.is_dir or selected(Path(path[len(root.source) + 1:]), include, exclude)):
            to_ingest.add(path)
        else:
            maybe_gone.append((path, kind))
    remove: set[str] = set()
    for path, kind in maybe_gone:
        remove |= {s for s in stored(path, kind != "file") if any(r.owns(s) for r in roots)}
    return Plan(sorted(to_ingest), sorted(remove - to_ingest))


class StoredSources:
    """`plan`'s view of the collection: a path's own source by a filtered count, the sources
    below a folder by one scan of every source, made at most once per batch."""

    def __init__(self, vs):
        self.vs = vs
        self._all: set[str] | None = None

    def __call__(self, path: str, under: bool) -> set[str]:
        if self.vs.file_versions(path):
            return {path}
        if not under:
            return set()
        if self._all is None:
            self._all = self.vs.sources()
        return {s for s in self._all if s.startswith(path + "/")}


def survey(paths: Iterable[str], roots: Sequence[Root], ignore: Sequence[str] = ()) -> dict[str, Kind]:
    """What is on disk at each changed path now, by source; a folder's files are listed with it
    (a folder renamed into place brings files no event named). Left out: paths outside every
    root, under `ignore` (the store's own folder), and in or of hidden folders (which the walk
    skips, so nothing of them is stored)."""
    state: dict[str, Kind] = {}
    for raw in paths:
        p = Path(raw)
        src = source_name(p)
        root = next((r for r in roots if r.owns(src)), None)
        if root is None or any(src == i or src.startswith(i + "/") for i in ignore):
            continue
        parts = Path(src[len(root.source) + 1:]).parts if root.is_dir else ()
        if any(part.startswith(".") for part in parts[:-1]):
            continue
        if p.is_dir():
            if parts and parts[-1].startswith("."):
                continue
            state[src] = "dir"
            for dirpath, dirnames, names in os.walk(p):
                dirnames[:] = [d for d in dirnames if not d.startswith(".")]
                for n in names:
                    f = Path(dirpath) / n
                    if f.is_file():
                        state[source_name(f)] = "file"
        elif p.is_file():
            state[src] = "file"
        else:
            state[src] = "missing"
    return state


@dataclass
class WatchJob:
    """What the watcher runs each ingest with: `ingest`'s own arguments (encoder, chunker,
    include, exclude, text_index, batch_size, near_duplicates, dup_threshold, ocr,
    write_retry), and the store to open."""

    store: StoreSettings
    ingest_args: dict
    progress: bool = True


def watch(paths: Sequence[str | Path], job: WatchJob, on_report: Callable[[IngestReport], None],
          stop: threading.Event | None = None, quiet: float = QUIET, max_wait: float = MAX_WAIT) -> None:
    """Ingest `paths` with prune, then follow them until `stop` is set (by SIGTERM or Ctrl-C when
    run in the main thread), handing each job's report to `on_report`."""
    stop = stop or threading.Event()
    opened: list = []  # the collection, held open from the end of the first pass

    def first() -> None:
        on_report(ingest(paths, store=job.store, prune=True, progress=job.progress, stop=stop, **job.ingest_args))
        if not stop.is_set():
            opened.append(open_for_writing(job.store, job.ingest_args["encoder"], job.ingest_args["chunker"],
                                           job.ingest_args.get("text_index")))

    def apply(todo: Plan) -> None:
        on_report(ingest(todo.ingest, store=job.store, vector_store=opened[0], remove=todo.remove,
                         progress=job.progress, stop=stop, **job.ingest_args))
        release_free_memory()  # a watcher runs for days: what each batch freed goes back (pipelines/memory.py)

    with _stopping_on_signals(stop):
        try:
            follow(paths, job.store, job.ingest_args.get("include", ()), job.ingest_args.get("exclude", ()),
                   first, apply, lambda: StoredSources(opened[0]), stop, quiet, max_wait)
        finally:
            for vs in opened:
                vs.close()


def follow(paths: Sequence[str | Path], store: StoreSettings, include: Iterable[str], exclude: Iterable[str],
           first: Callable[[], None], apply: Callable[[Plan], None], stored: Callable[[], StoredSources],
           stop: threading.Event, quiet: float = QUIET, max_wait: float = MAX_WAIT) -> None:
    """The watcher: `first()` (the first pass), then `apply(plan)` for each batch of changes that
    asks for something, until `stop` is set. `stored()`: the collection's sources for a batch.
    Shared by `rag ingest --watch` and `rag serve --watch` (which applies through its writer)."""
    import watchfiles

    missing = [str(p) for p in paths if not Path(p).exists()]
    if missing:
        from rag.errors import LoadError

        raise LoadError(missing[0], "no such file or directory: --watch follows existing files and folders")
    roots = [Root(source_name(Path(p)), Path(p).is_dir()) for p in paths]
    folders = sorted({r.source if r.is_dir else str(Path(r.source).parent) for r in roots})
    ignore = [source_name(Path(store.store_dir))] if store.store_dir and not store.url else []
    if store.local_path:
        ignore.append(source_name(Path(store.local_path)))
    debouncer = Debouncer(quiet, max_wait)
    changes = watchfiles.watch(*folders, watch_filter=None, stop_event=stop, rust_timeout=TICK_MS,
                               yield_on_timeout=True, debounce=1000, step=50, raise_interrupt=False)
    # The watcher is live from its first step, so changes made during the first pass are not
    # lost: they wait in it, and are looked at once that pass is done.
    debouncer.add(_paths(next(changes, set())), time.monotonic())
    first()
    if stop.is_set():
        return
    for batch in changes:
        now = time.monotonic()
        debouncer.add(_paths(batch), now)
        due = debouncer.due(now)
        if not due:
            continue
        todo = plan(survey(due, roots, ignore), roots, include, exclude, stored())
        if todo:
            before = {p: _stamp(p) for p in todo.ingest}
            apply(todo)
            # A file written on while its job ran (a slow copy) is looked at again, whether or
            # not its later events reached the watcher.
            debouncer.add([p for p, stamp in before.items() if _stamp(p) != stamp], time.monotonic())
        if stop.is_set():
            break


def _stamp(path: str) -> tuple[int, int] | None:
    """A file's modification time and size (None once it is gone): what a job read may be old."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size


def _paths(batch) -> list[str]:
    return [path for _, path in batch or ()]


@contextmanager
def _stopping_on_signals(stop: threading.Event) -> Iterator[None]:
    """SIGTERM and a first Ctrl-C set `stop`; a second Ctrl-C raises KeyboardInterrupt (abandon
    the file in flight). Only in the main thread (elsewhere signals cannot be handled)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_signal(signum, frame) -> None:
        if signum == signal.SIGINT and stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        from pipelines.render import note

        note("stopping: finishing the file in flight (Ctrl-C again to abandon it)")

    before = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in before.items():
            signal.signal(s, handler)
