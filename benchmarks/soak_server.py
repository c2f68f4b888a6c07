"""A soak test of `rag serve`: mixed load for a set time, the server's resources sampled throughout.

    python benchmarks/soak_server.py [--minutes 30] [--clients 4] [--think-ms 200]
        [--upload-seconds 20] [--sample-seconds 5] [--store DIR] [--out /tmp/soak_server.json]

1. Store: a fresh one in a temp folder (or --store DIR, which must not exist), a collection
   `docs` of SEED_FILES generated notes ingested in this process (the encoder the server loads).
2. Server: `rag serve --llm none` (extractive answers) as a subprocess on 127.0.0.1, a free port.
3. Load, until the deadline: `--clients` threads, each with its own httpx.Client, pick one request
   after another (with a think time of `--think-ms`): POST /v1/search (4 in 10), a whole chat
   completion (2 in 10), a streamed one read to [DONE] (2 in 10), and a streamed one whose client
   goes away after the first event (2 in 10: the server must stop that answer and free what it
   held). One more thread, every `--upload-seconds`, uploads two new files, or a new version of an
   earlier upload and a new file, waits for the job, and every third round deletes an earlier
   upload (DELETE /v1/documents/{id}). Every response's status is checked; anything unexpected
   is an error.
4. Sampling, every `--sample-seconds`: the server process's RSS (in all, anonymous, file-backed),
   open file descriptors and threads (/proc/PID), its child processes' RSS, the spool's job
   records (STORE/.uploads/.jobs) and the collection's disk space. Reported: the values at start, middle and end, the slope per hour by
   least squares over the whole run and over its last half, and whether growth levels off: a
   series "grows without levelling" when its last half still climbs at more than half the rate
   of the whole run and by more than a floor (RSS 5 MB, fds 3, threads 2 over the last half).
5. Integrity: the server stopped (SIGINT), the collection's points (id -> source, file hash,
   chunk count) must equal those of a clean ingest, into a fresh store, of the seed files plus
   the last version of every upload not deleted (same labels, same chunking).

Exit status 0 when there were no errors, every job is done, none of anonymous RSS, descriptors
and threads grew without levelling (JUDGED; the others are reported: job records are bounded by
count and age, see spool.py; file-backed RSS follows the store's mapped files) and the integrity
check passed; 1 otherwise.
"""

from __future__ import annotations

import argparse
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

from pipelines.stores import StoreSettings, open_store  # noqa: E402

SEED_FILES = 12
START_TIMEOUT = 180.0
REQUEST_TIMEOUT = 60.0
JOB_TIMEOUT = 300.0
TOPICS = ["lighthouse", "orchard", "glacier", "harbour", "railway", "library", "vineyard", "observatory",
          "canal", "monastery", "foundry", "meadow", "quarry", "bakery", "tannery", "shipyard"]
WORDS = ["granite", "lantern", "copper", "violet", "cobalt", "walnut", "juniper", "falcon", "thistle", "ember",
         "marble", "saddle", "beacon", "pepper", "willow", "quartz", "tundra", "prairie", "canyon", "river"]
QUESTIONS = [f"What did the {t} keepers record about the {w}?" for t in TOPICS for w in WORDS[:4]]
COLLECTION = "docs"
FLOORS = {"rss_mb": 5.0, "rss_anon_mb": 5.0, "fds": 3.0, "threads": 2.0}
# The series that fail the run when they grow without levelling. The server's own memory is its
# anonymous RSS; its file-backed RSS is the libraries' code and the store's mapped segment files,
# which grow with what was uploaded (store_mb, sampled beside it) and which the kernel takes back
# under pressure without swapping, so it is reported, not judged.
JUDGED = ("rss_anon_mb", "fds", "threads")


def note(topic: str, n: int, seed: int) -> str:
    rng = random.Random(seed)
    lines = [f"# The {topic} ledger {n}", ""]
    for i in range(40):
        a, b = rng.choice(WORDS), rng.choice(WORDS)
        lines.append(f"In year {1800 + rng.randrange(200)} the {topic} keepers recorded {rng.randrange(1000)} "
                     f"crates of {a} beside the {b}, entry {n}.{i}.")
    return "\n".join(lines) + "\n"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------------------- sampling


def proc_status(pid: int) -> dict[str, int]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "RssAnon", "RssFile", "Threads"):
            out[key] = int(value.split()[0])
    return out


def children(pid: int) -> list[int]:
    kids = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            kids += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return kids


def disk_mb(folder: Path) -> float:
    """The disk space a folder's files take (allocated blocks: sparse files count what they hold)."""
    total = 0
    for f in folder.rglob("*"):
        try:
            total += f.lstat().st_blocks * 512
        except OSError:  # removed while walked (a segment merged away)
            pass
    return total / 2**20


def sample(pid: int, store: Path, t0: float) -> dict[str, float]:
    jobs_dir = store / ".uploads" / ".jobs"
    status = proc_status(pid)
    kids_rss = 0
    for kid in children(pid):
        try:
            kids_rss += proc_status(kid).get("VmRSS", 0)
        except OSError:
            pass
    return {"t": time.monotonic() - t0, "rss_mb": status["VmRSS"] / 1024,
            "rss_anon_mb": status.get("RssAnon", 0) / 1024, "rss_file_mb": status.get("RssFile", 0) / 1024,
            "threads": status["Threads"],
            "fds": len(os.listdir(f"/proc/{pid}/fd")), "children_rss_mb": kids_rss / 1024,
            "job_records": sum(1 for _ in jobs_dir.iterdir()) if jobs_dir.is_dir() else 0,
            "store_mb": disk_mb(store / COLLECTION)}


def slope_per_hour(ts: list[float], ys: list[float]) -> float:
    if len(ts) < 3 or ts[-1] - ts[0] <= 0:
        return 0.0
    return float(np.polyfit(np.asarray(ts) / 3600.0, np.asarray(ys, dtype=float), 1)[0])


def growth(samples: list[dict], key: str) -> dict[str, float | bool]:
    ts, ys = [s["t"] for s in samples], [s[key] for s in samples]
    half = len(samples) // 2
    whole, last = slope_per_hour(ts, ys), slope_per_hour(ts[half:], ys[half:])
    rise_last_half = ys[-1] - ys[half] if samples else 0.0
    floor = FLOORS.get(key, 0.0)
    unlevelled = last > 0 and last > 0.5 * max(whole, 0.0) and rise_last_half > floor
    return {"start": ys[0], "middle": ys[half], "end": ys[-1], "max": max(ys),
            "slope_per_hour": round(whole, 3), "slope_per_hour_last_half": round(last, 3),
            "grows_without_levelling": bool(unlevelled)}


# ---------------------------------------------------------------------------- load


class Load:
    def __init__(self, url: str, deadline: float, think: float, seed: int):
        self.url, self.deadline, self.think = url, deadline, think
        self.counts: dict[str, int] = {}
        self.errors: list[str] = []
        self.lock = threading.Lock()
        self.seed = seed

    def count(self, what: str) -> None:
        with self.lock:
            self.counts[what] = self.counts.get(what, 0) + 1

    def error(self, what: str) -> None:
        with self.lock:
            self.errors.append(what[:300])

    def client_loop(self, n: int) -> None:
        rng = random.Random(self.seed + n)
        with httpx.Client(base_url=self.url, timeout=REQUEST_TIMEOUT) as c:
            while time.monotonic() < self.deadline:
                kind = rng.choices(["search", "chat", "stream", "stream_cut"], weights=[4, 2, 2, 2])[0]
                question = rng.choice(QUESTIONS)
                try:
                    getattr(self, kind)(c, question)
                    self.count(kind)
                except Exception as e:  # noqa: BLE001 - every failure is counted as an error
                    self.error(f"{kind}: {type(e).__name__}: {e}")
                time.sleep(rng.expovariate(1 / self.think) if self.think else 0)

    def search(self, c: httpx.Client, q: str) -> None:
        r = c.post("/v1/search", json={"query": q, "top_k": 5})
        if r.status_code != 200 or not r.json().get("results"):
            raise RuntimeError(f"search {r.status_code} {r.text[:200]}")

    def chat(self, c: httpx.Client, q: str) -> None:
        r = c.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": q}]})
        if r.status_code != 200 or r.json()["choices"][0]["message"]["role"] != "assistant":
            raise RuntimeError(f"chat {r.status_code} {r.text[:200]}")

    def stream(self, c: httpx.Client, q: str) -> None:
        body = {"stream": True, "messages": [{"role": "user", "content": q}]}
        with c.stream("POST", "/v1/chat/completions", json=body) as r:
            if r.status_code != 200:
                raise RuntimeError(f"stream {r.status_code}")
            lines = [line for line in r.iter_lines() if line.startswith("data: ")]
        if not lines or lines[-1] != "data: [DONE]" or any('"error"' in line for line in lines):
            raise RuntimeError(f"stream ended without [DONE] or with an error: {lines[-2:]}")

    def stream_cut(self, c: httpx.Client, q: str) -> None:
        """A client that leaves after the first event (its own connection, closed)."""
        body = {"stream": True, "messages": [{"role": "user", "content": q}]}
        with httpx.Client(base_url=self.url, timeout=REQUEST_TIMEOUT) as own, \
                own.stream("POST", "/v1/chat/completions", json=body) as r:
            if r.status_code != 200:
                raise RuntimeError(f"stream_cut {r.status_code}")
            for line in r.iter_lines():
                if line.startswith("data: "):
                    break

    def uploads(self, every: float, kept: dict[str, str], rounds: list[dict]) -> None:
        """Uploads (new files, new versions) and deletions; `kept`: label -> its last content."""
        rng = random.Random(self.seed + 1000)
        n = 0
        with httpx.Client(base_url=self.url, timeout=REQUEST_TIMEOUT) as c:
            while time.monotonic() + every < self.deadline:
                time.sleep(every)
                n += 1
                files = {f"soak-{n}-a.md": note(rng.choice(TOPICS), n, rng.randrange(10 ** 9))}
                if kept and n % 2 == 0:
                    files[rng.choice(sorted(kept))] = note(rng.choice(TOPICS), n, rng.randrange(10 ** 9))  # new version
                else:
                    files[f"soak-{n}-b.txt"] = note(rng.choice(TOPICS), n, rng.randrange(10 ** 9))
                try:
                    parts = [("file", (k, v.encode(), "text/plain")) for k, v in files.items()]
                    r = c.post("/v1/documents", files=parts)
                    if r.status_code != 202:
                        raise RuntimeError(f"upload {r.status_code} {r.text[:200]}")
                    job = self.wait_job(c, r.json()["job_id"])
                    bad = [o for o in job["outcomes"] if o["status"] == "failed"]
                    if job["status"] != "done" or bad:
                        raise RuntimeError(f"job {job['status']} {job['error']} {bad}")
                    kept.update(files)
                    self.count("upload")
                    round_ = {"round": n, "files": sorted(files), "job": job["job_id"]}
                    if n % 3 == 0 and kept:
                        gone = rng.choice(sorted(kept))
                        doc_id = next(d["id"] for d in c.get("/v1/documents").json()["data"] if d["source"] == gone)
                        r = c.delete(f"/v1/documents/{doc_id}")
                        if r.status_code != 200:
                            raise RuntimeError(f"delete {r.status_code} {r.text[:200]}")
                        del kept[gone]
                        self.count("delete")
                        round_["deleted"] = gone
                    rounds.append(round_)
                except Exception as e:  # noqa: BLE001
                    self.error(f"upload round {n}: {type(e).__name__}: {e}")

    @staticmethod
    def wait_job(c: httpx.Client, job_id: str) -> dict:
        deadline = time.monotonic() + JOB_TIMEOUT
        while time.monotonic() < deadline:
            job = c.get(f"/v1/jobs/{job_id}").json()
            if job["status"] in ("done", "failed"):
                return job
            time.sleep(0.2)
        raise RuntimeError(f"job {job_id} not finished in {JOB_TIMEOUT} s")


# ---------------------------------------------------------------------------- integrity


def points(settings: StoreSettings) -> dict[str, tuple]:
    store = open_store(settings)
    try:
        return {pid: (p["source"], p["file_hash"], int(p["file_chunks"]))
                for pid, p in store.payloads(["source", "file_hash", "file_chunks"])}
    finally:
        store.close()


def chunker_of(settings: StoreSettings):
    from rag.ingest.chunking import Chunker

    store = open_store(settings)
    try:
        info = store.info
        return Chunker(info.chunk_size, info.chunk_overlap, context=info.context,
                       sentence_vectors=info.sentence_vectors)
    finally:
        store.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--think-ms", type=float, default=200.0)
    ap.add_argument("--upload-seconds", type=float, default=20.0)
    ap.add_argument("--sample-seconds", type=float, default=5.0)
    ap.add_argument("--store", type=Path, default=None)
    ap.add_argument("--seed", type=int, default=23)
    ap.add_argument("--out", type=Path, default=Path("/tmp/soak_server.json"))
    args = ap.parse_args(argv)

    from pipelines.ingest import ingest
    from rag.embed.encoder import SentenceEncoder

    work = Path(tempfile.mkdtemp(prefix="soak_server_"))
    store = args.store or work / "store"
    if store.exists():
        raise SystemExit(f"--store {store} exists: give a new folder")
    seed_dir = work / "seed"
    seed_dir.mkdir()
    for i in range(SEED_FILES):
        (seed_dir / f"seed-{i:02d}.md").write_text(note(TOPICS[i % len(TOPICS)], i, args.seed + i))
    encoder = SentenceEncoder(device="cpu")
    settings = StoreSettings(store_dir=str(store), collection=COLLECTION)
    ingest([str(seed_dir)], encoder=encoder, store=settings, progress=False)

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    log = open(work / "server.log", "w")
    server = subprocess.Popen([sys.executable, "-m", "pipelines.cli", "serve", "--store", str(store),
                               "--collection", COLLECTION, "--llm", "none", "--port", str(port), "--log-level", "warning",
                               "--max-requests-per-client", "64"],
                              stdout=log, stderr=subprocess.STDOUT, cwd=work, env=env)
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        if server.poll() is not None:
            raise SystemExit(f"rag serve exited {server.returncode}: see {work / 'server.log'}")
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            server.kill()
            raise SystemExit("rag serve did not start")
        time.sleep(0.3)

    t0 = time.monotonic()
    end = t0 + args.minutes * 60
    load = Load(url, end, args.think_ms / 1000, args.seed)
    kept: dict[str, str] = {}
    rounds: list[dict] = []
    samples: list[dict] = []
    threads = [threading.Thread(target=load.client_loop, args=(i,), daemon=True) for i in range(args.clients)]
    threads.append(threading.Thread(target=load.uploads, args=(args.upload_seconds, kept, rounds), daemon=True))
    samples.append(sample(server.pid, store, t0))
    for t in threads:
        t.start()
    while time.monotonic() < end:
        time.sleep(max(0.0, min(args.sample_seconds, end - time.monotonic())))
        samples.append(sample(server.pid, store, t0))
        done = sum(load.counts.values())
        print(f"\r{samples[-1]['t']:7.0f} s  requests {done:6d}  errors {len(load.errors):3d}  "
              f"rss {samples[-1]['rss_mb']:7.1f} MB  fds {samples[-1]['fds']:4d}  threads {samples[-1]['threads']:3d}  "
              f"job records {samples[-1]['job_records']:3d}", end="", flush=True)
    for t in threads:
        t.join(timeout=JOB_TIMEOUT)
    samples.append(sample(server.pid, store, t0))
    print()
    server.send_signal(signal.SIGINT)
    try:
        server.wait(timeout=60)
    except subprocess.TimeoutExpired:
        server.kill()
        load.error("the server did not stop on SIGINT within 60 s")
    log.close()

    # Integrity: a clean ingest of the seed and of what was uploaded and not deleted.
    clean_dir = work / "clean_files"
    clean_dir.mkdir()
    for label, text in kept.items():
        (clean_dir / label).write_text(text)
    clean = StoreSettings(store_dir=str(work / "clean_store"), collection=COLLECTION)
    chunker = chunker_of(settings)
    ingest([str(seed_dir)], encoder=encoder, store=clean, chunker=chunker, progress=False)
    if kept:
        paths = [clean_dir / label for label in kept]
        ingest([str(p) for p in paths], encoder=encoder, store=clean, chunker=chunker, progress=False,
               labels={str(p): p.name for p in paths})
    served, expected = points(settings), points(clean)
    integrity = served == expected

    keys = ["rss_mb", "rss_anon_mb", "rss_file_mb", "store_mb", "children_rss_mb", "fds", "threads", "job_records"]
    report = {"minutes": args.minutes, "clients": args.clients, "think_ms": args.think_ms,
              "upload_seconds": args.upload_seconds, "requests": load.counts, "errors": len(load.errors),
              "error_examples": load.errors[:10], "upload_rounds": len(rounds), "kept_uploads": len(kept),
              "points": len(served), "integrity": integrity,
              "missing_points": len(set(expected) - set(served)), "extra_points": len(set(served) - set(expected)),
              "growth": {k: growth(samples, k) for k in keys}, "samples": samples}
    args.out.write_text(json.dumps(report, indent=1))
    seconds = samples[-1]["t"]
    print(f"{args.minutes:g} min, {args.clients} clients (think {args.think_ms:g} ms) + uploads every "
          f"{args.upload_seconds:g} s: " + ", ".join(f"{k} {v}" for k, v in sorted(load.counts.items()))
          + f" ({sum(load.counts.values()) / seconds:.1f} req/s); errors {len(load.errors)}")
    print(f"{'series':16} {'start':>9} {'middle':>9} {'end':>9} {'max':>9} {'slope/h':>10} {'last half/h':>12}"
          "  levels off")
    for k in keys:
        g = report["growth"][k]
        print(f"{k:16} {g['start']:9.1f} {g['middle']:9.1f} {g['end']:9.1f} {g['max']:9.1f} "
              f"{g['slope_per_hour']:10.2f} {g['slope_per_hour_last_half']:12.2f}  "
              f"{'NO' if g['grows_without_levelling'] else 'yes'}")
    print(f"integrity: {len(served)} points; {'equal to' if integrity else 'DIFFERENT from'} a clean ingest of the "
          f"seed and the {len(kept)} uploads kept ({report['missing_points']} missing, {report['extra_points']} extra)")
    for e in load.errors[:10]:
        print("  error:", e)
    print(f"report: {args.out}")
    unlevelled = [k for k in JUDGED if report["growth"][k]["grows_without_levelling"]]
    ok = not load.errors and integrity and not unlevelled
    if args.store is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
