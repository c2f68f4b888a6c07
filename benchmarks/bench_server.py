"""A bounded load test of `rag serve` on loopback, with its reference in the same run.

    python benchmarks/bench_server.py [--source-store /tmp/cmp/after/store] [--store DIR]
        [--collection documents] [--clients 8] [--seconds 60] [--search-only-seconds 10]
        [--think-ms 1000,500,250] [--paced-seconds 30] [--floor-seconds 8] [--out /tmp/bench_server.json]

1. Store: a fresh copy (shutil.copytree) of `--source-store`, an already-ingested collection of
   the arXiv + Debian PDFs, so the run pays no ingest (`--store DIR` uses DIR as it is). When the
   source store is missing, ../shared/data/pdfs is ingested into the temp folder first. The point
   ids of the collection are recorded before any server holds it.
2. Reference: one `rag search "QUERY" --store COPY --json` process, timed end to end (the
   cold-start cost a user pays today), before the server starts. Then the encoder floor: the
   server's encoder behind its gate in this process, `--clients` threads embedding one question
   after another: what query encoding alone costs at that concurrency, no HTTP, no store.
3. Server: `rag serve --llm none` (extracts) as a subprocess on 127.0.0.1, a free port.
4. Load: `--clients` threads, each with its own httpx.Client, loop over fixed questions until
   the deadline (or MAX_REQUESTS each): 3 of 4 POST /v1/search (top_k 10), 1 of 4 POST
   /v1/chat/completions (not streamed). Every request has a 30 s timeout. At t = seconds/2, one
   POST /v1/documents of two small text files, its job polled until done (bounded). Before it,
   idle search latency (one client) and a short searches-only phase of the same clients. After
   it, the same mixed load once per `--think-ms`, each with its own upload of two new files at
   half time: each client pauses a seeded exponential think time of that mean after every
   answer, as users reading them do: latency at offered loads below saturation, beside the
   closed loop's.
5. Report: per endpoint requests, req/s, p50, p99, max, errors (must be 0); the target
   `/v1/search p50 <= 30 ms` (closed loop and each think time) beside the `rag search` process
   time and their ratio. A closed loop of N clients gives p50 ~ N / throughput, and the
   throughput is bound by the encoder (the floor line says by how much).
6. Integrity: the server stopped, its collection's point ids must equal the ids recorded in 1
   plus those of a clean ingest of every phase's uploaded files (same labels) into a fresh store.

Exit status 0 when there were no errors, every upload job is done and the ids are equal; 1 otherwise.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import numpy as np  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from pipelines.stores import StoreSettings, open_store  # noqa: E402

DEFAULT_SOURCE_STORE = Path("/tmp/cmp/after/store")
PDFS = ROOT.parent / "shared" / "data" / "pdfs"
RAG = Path(sys.executable).with_name("rag")
TARGET_P50_MS = 30.0
REQUEST_TIMEOUT = 30.0
MAX_REQUESTS = 20_000  # per client, a bound beside the deadline
JOB_TIMEOUT = 180.0
START_TIMEOUT = 120.0
REFERENCE_QUERY = "How does multi-head attention work in the Transformer?"
QUESTIONS = [
    "How does multi-head attention work in the Transformer?",
    "Why does the Transformer use positional encodings?",
    "What BLEU score did the Transformer reach on WMT 2014 English-German?",
    "What are the two pre-training tasks of BERT?",
    "How is the masked language model objective of BERT trained?",
    "How many question-answer pairs are in SQuAD?",
    "What was the human performance F1 on SQuAD?",
    "How does DrQA retrieve Wikipedia articles for open-domain questions?",
    "What does the document retriever of DrQA use, TF-IDF or bigram hashing?",
    "How does BERTserini combine Anserini with BERT?",
    "What are the two encoder variants of the Universal Sentence Encoder?",
    "How does Sentence-BERT derive fixed-size sentence embeddings?",
    "Which pooling strategy works best for SBERT?",
    "How does ReAct interleave reasoning traces and actions?",
    "How do I install an R package from CRAN?",
    "What is the difference between a list and a data frame in R?",
    "How do I read a CSV file into R with read.table?",
    "How can R import data from a relational database?",
    "How do I draw a table with ReportLab platypus?",
    "How are fonts embedded in a ReportLab PDF?",
]
UPLOADS = {
    "lighthouse_log.txt": (
        "The lighthouse at Cape Verity was built in 1871 from granite quarried on the island. Its keeper "
        "logged the tide tables every morning at dawn and trimmed the lamp wick twice a night.\n\n"
        "When the visibility dropped below one nautical mile, the fog horn sounded two blasts every "
        "minute. Ships approaching the reef were told to keep the light on their starboard bow.\n\n"
        "The station was automated in 1964. The last keeper, Agnes Morrow, kept a diary of forty years "
        "of storms, which the harbour museum now holds."),
    "sourdough_notes.txt": (
        "A sourdough starter is a culture of wild yeast and lactic acid bacteria. It is fed every day "
        "with equal weights of rye flour and water and kept at about 24 degrees Celsius.\n\n"
        "The dough is mixed with 75 percent hydration, rested for an hour, then folded four times at "
        "half-hour intervals. It rises overnight in a cool kitchen.\n\n"
        "Bake the loaf in a covered cast-iron pot at 250 degrees for twenty minutes, then uncovered at "
        "230 degrees for another twenty-five, until the crust is deep brown."),
}
console = Console(width=120)


# ---------------------------------------------------------------------------- setup


def prepare_store(args, work: Path) -> Path:
    """The store the server will own: --store as given, a copy of --source-store, or (no source
    store) a fresh ingest of the shared PDFs."""
    if args.store:
        return Path(args.store)
    store = work / "store"
    source = Path(args.source_store)
    if (source / args.collection).is_dir():
        shutil.copytree(source, store)
        (store / args.collection / ".rag.lock").unlink(missing_ok=True)  # a stale lock file of the source
        return store
    from pipelines.ingest import ingest

    console.print(f"[yellow]{source} has no collection {args.collection}: ingesting {PDFS} first[/yellow]")
    ingest([str(PDFS)], store=StoreSettings(store_dir=str(store), collection=args.collection), progress=False)
    return store


def point_ids(store: Path, collection: str) -> list[str]:
    vs = open_store(StoreSettings(store_dir=str(store), collection=collection))
    try:
        return [pid for pid, _ in vs.payloads(["source"])]
    finally:
        vs.close()


def collection_record(store: Path, collection: str) -> dict:
    return json.loads((store / collection / "rag_collection.json").read_text())


def reference_search(store: Path, collection: str) -> dict:
    """One `rag search --json` process, end to end (interpreter, imports, model load, store open)."""
    cmd = [str(RAG), "search", REFERENCE_QUERY, "--store", str(store), "--collection", collection, "--json"]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT)
    seconds = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"rag search failed ({done.returncode}): {done.stderr[-2000:]}")
    results = json.loads(done.stdout)["results"]
    return {"seconds": seconds, "ids": [r["id"] for r in results]}


# ---------------------------------------------------------------------------- the server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(store: Path, collection: str, log: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    cmd = [str(RAG), "serve", "--store", str(store), "--collection", collection, "--llm", "none",
           "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
    proc = subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT, cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"rag serve exited ({proc.returncode}): {log.read_text()[-2000:]}")
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    stop_server(proc)
    raise SystemExit(f"rag serve did not answer /health within {START_TIMEOUT:g} s")


def stop_server(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


# ---------------------------------------------------------------------------- load


def is_chat(i: int, chats: bool) -> bool:
    return chats and i % 4 == 3


def request(c: httpx.Client, i: int, question: str, chats: bool) -> tuple[str, int]:
    """Request number i of a client: 3 of 4 searches, 1 of 4 chats (with `chats`). (endpoint, status)"""
    if is_chat(i, chats):
        body = {"model": "documents", "messages": [{"role": "user", "content": question}]}
        r = c.post("/v1/chat/completions", json=body)
        ok = r.status_code == 200 and r.json()["choices"][0]["message"]["content"]
        return "/v1/chat/completions", r.status_code if ok else -r.status_code
    r = c.post("/v1/search", json={"query": question, "top_k": 10})
    ok = r.status_code == 200 and len(r.json()["results"]) == 10
    return "/v1/search", r.status_code if ok else -r.status_code


def client_loop(url: str, client_no: int, deadline: float, out: list, chats: bool = True,
                think: float = 0.0) -> None:
    """One client: its own connection, questions in turn from its own offset, until the deadline.
    `think`: the mean of an exponential pause (seconds, seeded per client) after each answer, as
    a user reading it; 0: the next request at once (closed loop)."""
    questions = itertools.cycle(QUESTIONS[client_no % len(QUESTIONS):] + QUESTIONS[:client_no % len(QUESTIONS)])
    rng = random.Random(client_no)
    with httpx.Client(base_url=url, timeout=REQUEST_TIMEOUT) as c:
        for i in range(client_no, client_no + MAX_REQUESTS):
            if think > 0:
                time.sleep(max(0.0, min(rng.expovariate(1 / think), deadline - time.monotonic())))
            if time.monotonic() >= deadline:
                return
            q = next(questions)
            t0 = time.perf_counter()
            try:
                endpoint, status = request(c, i, q, chats)
            except Exception as e:  # a timeout or a broken connection: an error, not a crash
                endpoint, status = ("/v1/chat/completions" if is_chat(i, chats) else "/v1/search"), repr(e)
            out.append((endpoint, time.perf_counter() - t0, status))


def upload_files(phase: int) -> dict[str, str]:
    """The two text files one load phase uploads: phase 0's as UPLOADS gives them, later phases'
    under their own names and with a line of their own, so that each phase's upload is new
    content to ingest (not "unchanged")."""
    if phase == 0:
        return dict(UPLOADS)
    return {f"{Path(name).stem}_{phase}.txt": f"{text}\n\nCopy {phase} of these notes, uploaded during load phase {phase}."
            for name, text in UPLOADS.items()}


def upload(url: str, folder: Path, phase: int = 0) -> dict:
    """POST the phase's two text files, then poll their job until it ends (bounded)."""
    files = []
    for name, text in upload_files(phase).items():
        (folder / name).write_text(text)
        files.append(("file", (name, text.encode(), "text/plain")))
    with httpx.Client(base_url=url, timeout=REQUEST_TIMEOUT) as c:
        t0 = time.perf_counter()
        r = c.post("/v1/documents", files=files)
        post_s = time.perf_counter() - t0
        if r.status_code != 202:
            return {"status": f"POST {r.status_code}", "post_ms": post_s * 1000, "error": r.text[:500]}
        job_id = r.json()["job_id"]
        deadline, job, polls = time.monotonic() + JOB_TIMEOUT, {"status": "queued"}, 0
        while job["status"] not in ("done", "failed") and time.monotonic() < deadline:
            time.sleep(0.1)
            job = c.get(f"/v1/jobs/{job_id}").json()
            polls += 1
        total_s = time.perf_counter() - t0
    ran = (job["finished"] - job["started"]) if job.get("finished") and job.get("started") else None
    return {"status": job["status"], "job_id": job_id, "post_ms": post_s * 1000, "until_done_s": total_s,
            "job_run_s": ran, "polls": polls, "chunks_written": job.get("chunks_written"),
            "total_points": job.get("total_points"), "error": job.get("error"),
            "outcomes": [{k: o[k] for k in ("source", "status", "chunks", "reason")} for o in job.get("outcomes", [])]}


def run_load(url: str, clients: int, seconds: float, folder: Path | None, think: float = 0.0,
             phase: int = 0, chats: bool = True) -> tuple[list, dict | None, float]:
    """`clients` clients (client_loop: mixed, or searches only without `chats`; pausing `think`
    on average) for `seconds`, with the phase's upload into `folder` at half time (none without
    a folder): the records, the upload's job, the wall time."""
    records: list = []  # (endpoint, seconds, status); list.append is atomic
    start = time.monotonic()
    deadline = start + seconds
    threads = [threading.Thread(target=client_loop, args=(url, n, deadline, records, chats, think), daemon=True)
               for n in range(clients)]
    for t in threads:
        t.start()
    job = None
    if folder is not None:
        time.sleep(max(0.0, start + seconds / 2 - time.monotonic()))
        job = upload(url, folder, phase)
    for t in threads:
        t.join(deadline - time.monotonic() + REQUEST_TIMEOUT + 5)
    return records, job, time.monotonic() - start


def search_only(url: str, clients: int, seconds: float) -> dict:
    """The same clients sending searches only, for `seconds`: search latency without chats."""
    records, _, wall = run_load(url, clients, seconds, None, chats=False)
    return summarise(records, wall)["/v1/search"]


def paced(url: str, clients: int, seconds: float, think: float, folder: Path, phase: int) -> dict:
    """The mixed load (3 searches, 1 chat in 4) of `clients` clients that each pause `think`
    seconds on average after every answer, with an upload of new files at half time: the closed
    loop's test at an offered load below saturation."""
    records, job, wall = run_load(url, clients, seconds, folder, think=think, phase=phase)
    return {"think_ms": think * 1000, "upload": job, **summarise(records, wall)}


def encoder_floor(clients: int, seconds: float) -> dict:
    """The server's encoder and its gate in this process, no HTTP and no store: `clients` threads
    each embedding one question after another (closed loop). What a search's query encoding
    alone costs at this concurrency on this machine, the floor under /v1/search."""
    from pipelines.server.encoding import EncoderGate
    from rag.embed.encoder import SentenceEncoder

    encoder = SentenceEncoder()
    encoder.warm_up()
    gate = EncoderGate(encoder)
    for q in QUESTIONS:
        gate.encode([q])
    single = []
    for q in QUESTIONS:
        t0 = time.perf_counter()
        gate.encode([q])
        single.append(time.perf_counter() - t0)
    times: list[float] = []
    deadline = time.monotonic() + seconds

    def loop(n: int) -> None:
        i = n
        while time.monotonic() < deadline:
            t0 = time.perf_counter()
            gate.encode([QUESTIONS[i % len(QUESTIONS)]])
            times.append(time.perf_counter() - t0)
            i += 1

    gate.stats.update(urgent_calls=0, urgent_passes=0, bulk_slices=0)
    threads = [threading.Thread(target=loop, args=(n,)) for n in range(clients)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds + 30)
    wall = time.monotonic() - t0
    ms = np.asarray(times) * 1000
    return {"single_p50_ms": float(np.percentile(np.asarray(single) * 1000, 50)), "clients": clients,
            "per_s": len(times) / wall, "p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)),
            "mean_batch": gate.stats["urgent_calls"] / max(1, gate.stats["urgent_passes"])}


def idle_search_p50(url: str, n: int = 20) -> float:
    """Sequential searches on an idle server (one client, after a warm-up): the floor."""
    times = []
    with httpx.Client(base_url=url, timeout=REQUEST_TIMEOUT) as c:
        c.post("/v1/search", json={"query": QUESTIONS[0], "top_k": 10})
        for q in QUESTIONS[:n]:
            t0 = time.perf_counter()
            c.post("/v1/search", json={"query": q, "top_k": 10}).raise_for_status()
            times.append(time.perf_counter() - t0)
    return float(np.percentile(np.asarray(times) * 1000, 50))


def summarise(records: list, wall: float) -> dict:
    out = {}
    for endpoint in ("/v1/search", "/v1/chat/completions"):
        mine = [r for r in records if r[0] == endpoint]
        ms = np.asarray([r[1] for r in mine]) * 1000 if mine else np.zeros(1)
        errors = [r[2] for r in mine if not (isinstance(r[2], int) and 200 <= r[2] < 300)]
        out[endpoint] = {"requests": len(mine), "req_per_s": len(mine) / wall,
                         "p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)),
                         "max_ms": float(ms.max()), "errors": len(errors), "error_samples": errors[:5]}
    return out


# ---------------------------------------------------------------------------- integrity


def clean_upload_ids(folder: Path, record: dict, collection: str, work: Path) -> list[str]:
    """The point ids of a clean ingest of the uploaded files, under their names, in a fresh store."""
    from pipelines.ingest import ingest
    from rag.embed.encoder import SentenceEncoder
    from rag.ingest.chunking import Chunker

    paths = sorted(folder.iterdir())  # every phase's uploads
    fresh = work / "fresh"
    ingest([str(p) for p in paths], encoder=SentenceEncoder(record["model"]),
           store=StoreSettings(store_dir=str(fresh), collection=collection),
           chunker=Chunker(record["chunk_size"], record["chunk_overlap"]), progress=False,
           labels={str(p): p.name for p in paths})
    return point_ids(fresh, collection)


def integrity(before: list[str], after: list[str], uploaded: list[str]) -> dict:
    expected = set(before) | set(uploaded)
    return {"equal": set(after) == expected and len(after) == len(set(after)), "server_points": len(after),
            "server_unique": len(set(after)), "expected_points": len(expected), "before_upload": len(before),
            "clean_upload_points": len(uploaded), "missing": len(expected - set(after)),
            "unexpected": len(set(after) - expected)}


# ---------------------------------------------------------------------------- report


def print_report(fig: dict) -> None:
    t = Table(title=f"rag serve under load: {fig['clients']} clients, {fig['wall_s']:.1f} s, llm none, loopback")
    for col in ("endpoint", "requests", "req/s", "p50 ms", "p99 ms", "max ms", "errors"):
        t.add_column(col, justify="left" if col == "endpoint" else "right")
    for endpoint, s in fig["endpoints"].items():
        t.add_row(endpoint, str(s["requests"]), f"{s['req_per_s']:.1f}", f"{s['p50_ms']:.1f}",
                  f"{s['p99_ms']:.1f}", f"{s['max_ms']:.1f}", str(s["errors"]))
    console.print(t)
    job = fig["upload"]
    console.print(f"upload (t = {fig['seconds'] / 2:g} s, 2 text files): POST {job['post_ms']:.0f} ms, job "
                  f"{job['status']} after {job.get('until_done_s', 0):.2f} s (ran {job.get('job_run_s') or 0:.2f} s), "
                  f"{job.get('chunks_written')} chunks; "
                  + ", ".join(f"{o['source']}: {o['status']} ({o['chunks']})" for o in job.get("outcomes", [])))
    search, ref = fig["endpoints"]["/v1/search"], fig["reference"]
    verdict = "PASS" if fig["target_pass"] else "FAIL"
    console.print(f"target: /v1/search p50 <= {TARGET_P50_MS:g} ms (including query encoding): "
                  f"{search['p50_ms']:.1f} ms under load -> [bold]{verdict}[/bold]  "
                  f"(idle, 1 client: {fig['idle_search_p50_ms']:.1f} ms before the load, "
                  f"{fig['idle_search_p50_after_ms']:.1f} ms after)")
    if fig["search_only"]:
        s = fig["search_only"]
        console.print(f"searches only, {fig['clients']} clients, {s['requests']} requests ({s['req_per_s']:.1f}/s): "
                      f"p50 {s['p50_ms']:.1f} ms, p99 {s['p99_ms']:.1f} ms, max {s['max_ms']:.1f} ms, "
                      f"errors {s['errors']}")
    if fig["paced"]:
        t = Table(title=f"latency against offered load: {fig['clients']} clients, mixed (3 searches, 1 chat in 4), "
                        f"{fig['paced_seconds']:g} s each")
        for col in ("think time", "req/s", "search p50", "search p99", "chat p50", "chat p99", "errors",
                    "upload at half time", "target"):
            t.add_column(col, justify="right")
        rows = [{"think_ms": 0.0, "upload": fig["upload"], **fig["endpoints"]}] + fig["paced"]
        for row in rows:
            se, ch, job = row["/v1/search"], row["/v1/chat/completions"], row["upload"]
            t.add_row("none (closed loop)" if row["think_ms"] == 0 else f"{row['think_ms']:.0f} ms",
                      f"{se['req_per_s'] + ch['req_per_s']:.1f}", f"{se['p50_ms']:.1f}", f"{se['p99_ms']:.1f}",
                      f"{ch['p50_ms']:.1f}", f"{ch['p99_ms']:.1f}", str(se["errors"] + ch["errors"]),
                      f"{job['status']} in {job.get('until_done_s') or 0:.1f} s",
                      "PASS" if se["p50_ms"] <= TARGET_P50_MS else "FAIL")
        console.print(t)
    if fig["encoder_floor"]:
        f = fig["encoder_floor"]
        console.print(f"encoder floor (the gate in-process, no HTTP, no store): one question alone p50 "
                      f"{f['single_p50_ms']:.1f} ms; {f['clients']} threads closed loop: {f['per_s']:.0f}/s, "
                      f"p50 {f['p50_ms']:.1f} ms, p99 {f['p99_ms']:.1f} ms, {f['mean_batch']:.1f} questions a pass")
    console.print(f"reference: `rag search --json` process, end to end: {ref['seconds'] * 1000:.0f} ms = "
                  f"{fig['ratio_reference_to_p50']:.0f}x the server's p50 under load "
                  f"(same top 10 as /v1/search: {fig['reference_matches_server']})")
    i = fig["integrity"]
    console.print(f"integrity: server points {'EQUAL' if i['equal'] else 'NOT EQUAL'} to the clean ingest: "
                  f"{i['server_points']} points ({i['server_unique']} unique) vs {i['expected_points']} expected "
                  f"({i['before_upload']} before the uploads + {i['clean_upload_points']} from a clean ingest of "
                  f"the uploads); missing {i['missing']}, unexpected {i['unexpected']}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--source-store", default=str(DEFAULT_SOURCE_STORE), help="store to copy (default: %(default)s)")
    ap.add_argument("--store", help="use this store as it is (it gets the upload) instead of a copy")
    ap.add_argument("--collection", default="documents")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--search-only-seconds", type=float, default=10.0,
                    help="a searches-only phase of the same clients before the mixed load (0: none)")
    ap.add_argument("--think-ms", default="1000,500,250",
                    help="after the closed-loop load, one mixed phase per mean think time (comma-separated; "
                         "empty: none)")
    ap.add_argument("--paced-seconds", type=float, default=30.0, help="length of each think-time phase")
    ap.add_argument("--floor-seconds", type=float, default=8.0,
                    help="the encoder-alone closed loop in this process before the server starts (0: none)")
    ap.add_argument("--out", help="write all figures as JSON here")
    args = ap.parse_args(argv)
    thinks = [float(x) / 1000 for x in args.think_ms.split(",") if x.strip()]

    with tempfile.TemporaryDirectory(prefix="bench_server_") as tmp:
        work = Path(tmp)
        uploads = work / "uploads"
        uploads.mkdir()
        store = prepare_store(args, work)
        before = point_ids(store, args.collection)
        record = collection_record(store, args.collection)
        console.print(f"store {store}: collection {args.collection}, {len(before)} points; "
                      f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs; "
                      f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}")
        ref = reference_search(store, args.collection)
        floor = encoder_floor(args.clients, args.floor_seconds) if args.floor_seconds > 0 else None
        proc, url = start_server(store, args.collection, work / "server.log")
        try:
            with httpx.Client(base_url=url, timeout=REQUEST_TIMEOUT) as c:
                served = c.post("/v1/search", json={"query": REFERENCE_QUERY, "top_k": 10}).json()
            idle_p50 = idle_search_p50(url)
            only = search_only(url, args.clients, args.search_only_seconds) if args.search_only_seconds > 0 else None
            records, job, wall = run_load(url, args.clients, args.seconds, uploads)
            paced_runs = [paced(url, args.clients, args.paced_seconds, think, uploads, phase)
                          for phase, think in enumerate(thinks, start=1)]
            idle_after = idle_search_p50(url)
        finally:
            stop_server(proc)
        after = point_ids(store, args.collection)
        uploaded = clean_upload_ids(uploads, record, args.collection, work)
        endpoints = summarise(records, wall)
        p50 = endpoints["/v1/search"]["p50_ms"]
        fig = {"clients": args.clients, "seconds": args.seconds, "wall_s": wall, "store": str(store),
               "collection": args.collection, "endpoints": endpoints, "upload": job,
               "idle_search_p50_ms": idle_p50, "idle_search_p50_after_ms": idle_after, "search_only": only,
               "omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "target_p50_ms": TARGET_P50_MS, "target_pass": p50 <= TARGET_P50_MS,
               "reference": {"query": REFERENCE_QUERY, "seconds": ref["seconds"]},
               "ratio_reference_to_p50": ref["seconds"] * 1000 / p50,
               "reference_matches_server": ref["ids"] == [r["id"] for r in served.get("results", [])],
               "paced": paced_runs, "paced_seconds": args.paced_seconds, "encoder_floor": floor,
               "integrity": integrity(before, after, uploaded), "load_average_end": os.getloadavg()[0]}
        if proc.returncode not in (0, -signal.SIGINT):
            fig["server_log_tail"] = (work / "server.log").read_text()[-2000:]
    print_report(fig)
    if args.out:
        Path(args.out).write_text(json.dumps(fig, indent=2))
        console.print(f"figures: {args.out}")
    errors = sum(s["errors"] for s in fig["endpoints"].values()) + (fig["search_only"] or {}).get("errors", 0)
    errors += sum(run[e]["errors"] for run in fig["paced"] for e in ("/v1/search", "/v1/chat/completions"))
    jobs_done = all(j["status"] == "done" for j in [job] + [run["upload"] for run in fig["paced"]])
    return 0 if errors == 0 and fig["integrity"]["equal"] and jobs_done else 1


if __name__ == "__main__":
    raise SystemExit(main())
