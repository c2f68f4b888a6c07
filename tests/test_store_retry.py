"""Store writes retried on transient errors (connectors/qdrant/retry.py, pipelines/writer.py).

1. The decision, on real exception objects: qdrant-client's REST and gRPC clients writing to a
   closed loopback port and to loopback servers that answer with an HTTP or gRPC status, stall,
   close or reset (tests/qdrant_faults.py); the embedded stores held by another process; the
   engines' own validation errors. Which are transient, and what wait the server asked for.
2. The waits: exponential with jitter, capped, Retry-After honoured up to its cap, attempts bounded.
3. The ingest job's writer, through a real Edge store that raises those real exceptions on
   scripted writes (no Qdrant server runs here, so a store cannot fail by itself): a bounded
   number of them ends with exactly the points and report of a clean ingest; a file whose writes
   keep failing is failed with the reason, what was written of it deleted again, its old version
   intact, the other files done, and the next run repairs the rest; a non-transient error stops
   the job at once.
"""

from __future__ import annotations

import logging
from pathlib import Path

import grpc
import pytest
from qdrant_client import QdrantClient, models

from connectors.qdrant.retry import RETRY_HTTP_STATUSES, WriteRetry, retry_after, transient_cause
from helpers_ingest import (copy_store, edge_settings, hold_store, local_settings, sentences, sha256, small_chunker,
                            snapshot, src, write)
from pipelines.ingest import ingest
from pipelines.stores import open_store
from qdrant_faults import FlakyStore, GrpcFaults, RestFaults, closed_port, grpc_error, real_errors, rest_error
from rag.errors import StoreLockedError, StoreWriteError
from rag.search.store import CollectionInfo

# ---------------------------------------------------------------- 1. the decision on real errors


@pytest.fixture(scope="module")
def rest():
    with RestFaults() as server:
        yield server


@pytest.fixture(scope="module")
def grpc_server():
    with GrpcFaults() as server:
        yield server


def rest_with(server: RestFaults, mode) -> BaseException:
    server.mode = mode
    return rest_error(server.url)


def grpc_with(server: GrpcFaults, code, metadata=(), sleep=0.0) -> BaseException:
    server.mode = (code, metadata, sleep)
    return grpc_error(server.port)


TRANSIENT_REST = [
    pytest.param(("status", 503, {}), "HTTP 503", id="http-503"),
    pytest.param(("status", 502, {}), "HTTP 502", id="http-502"),
    pytest.param(("status", 504, {}), "HTTP 504", id="http-504"),
    pytest.param(("status", 429, {}), "HTTP 429", id="http-429"),
    pytest.param(("stall", 2.5), "ReadTimeout", id="read-timeout"),
    pytest.param(("close",), "RemoteProtocolError", id="closed-before-answer"),
    pytest.param(("reset",), "reset", id="connection-reset"),
]


@pytest.mark.parametrize("mode,cause", TRANSIENT_REST)
def test_transient_rest_errors(rest, mode, cause):
    exc = rest_with(rest, mode)
    assert cause in (transient_cause(exc) or ""), repr(exc)


@pytest.mark.parametrize("mode", [("status", 400, {}), ("status", 401, {}), ("status", 404, {}),
                                  ("status", 500, {}), ("garbage",)],
                         ids=["http-400", "http-401", "http-404", "http-500", "answer-not-the-protocol"])
def test_not_transient_rest_errors(rest, mode):
    exc = rest_with(rest, mode)
    assert transient_cause(exc) is None, repr(exc)


def test_connection_refused_is_transient_over_rest_and_grpc():
    port = closed_port()
    refused = rest_error(f"http://127.0.0.1:{port}")
    assert "refused" in transient_cause(refused).lower()
    unavailable = grpc_error(port)
    assert isinstance(unavailable, grpc.RpcError)
    assert transient_cause(unavailable).startswith("gRPC UNAVAILABLE")


@pytest.mark.parametrize("code,sleep", [(grpc.StatusCode.UNAVAILABLE, 0), (grpc.StatusCode.RESOURCE_EXHAUSTED, 0),
                                        (grpc.StatusCode.OK, 2.5)],  # OK after the 1 s deadline: DEADLINE_EXCEEDED
                         ids=["unavailable", "resource-exhausted", "deadline-exceeded"])
def test_transient_grpc_errors(grpc_server, code, sleep):
    exc = grpc_with(grpc_server, code, sleep=sleep)
    expected = "DEADLINE_EXCEEDED" if sleep else code.name
    assert exc.code().name == expected
    assert transient_cause(exc).startswith(f"gRPC {expected}")


@pytest.mark.parametrize("code", [grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND,
                                  grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.INTERNAL],
                         ids=lambda c: c.name.lower())
def test_not_transient_grpc_errors(grpc_server, code):
    exc = grpc_with(grpc_server, code)
    assert exc.code() == code and transient_cause(exc) is None


def test_the_wait_a_server_asks_for_is_read_from_rest_and_grpc(rest, grpc_server):
    limited = rest_with(rest, ("status", 429, {"Retry-After": "3"}))  # qdrant-client: ResourceExhaustedResponse
    assert transient_cause(limited) and retry_after(limited) == 3.0
    assert retry_after(rest_with(rest, ("status", 503, {"Retry-After": "2"}))) == 2.0
    assert retry_after(rest_with(rest, ("status", 503, {}))) is None
    limited = grpc_with(grpc_server, grpc.StatusCode.RESOURCE_EXHAUSTED, (("retry-after", "4"),))
    assert transient_cause(limited) and retry_after(limited) == 4.0


@pytest.mark.parametrize("settings", [edge_settings, local_settings], ids=["edge", "local-mode"])
def test_a_store_held_by_another_process_is_not_transient(tmp_path, settings):
    where = settings(tmp_path / "store")
    open_store(where, info=CollectionInfo(model="m", dimension=2, chunk_size=32, chunk_overlap=4), create=True).close()
    holder = hold_store(where)
    try:
        with pytest.raises(StoreLockedError) as caught:
            open_store(where)
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    assert transient_cause(caught.value) is None


def test_engine_validation_errors_are_not_transient(tmp_path):
    client = QdrantClient(location=":memory:")  # local mode: a vector of the wrong size
    client.create_collection("c", vectors_config=models.VectorParams(size=2, distance=models.Distance.COSINE))
    with pytest.raises(ValueError, match="dimension") as local:
        client.upsert("c", [models.PointStruct(id=1, vector=[0.1, 0.2, 0.3], payload={})])
    assert transient_cause(local.value) is None
    store = open_store(edge_settings(tmp_path / "edge"), info=CollectionInfo(model="m", dimension=2, chunk_size=32, chunk_overlap=4), create=True)
    try:  # Qdrant Edge: the same, raised by the engine
        with pytest.raises(Exception) as edge:
            store._upsert_points([store._point(1, {"dense": [0.1, 0.2, 0.3]}, {})])
    finally:
        store.close()
    assert "dimension" in str(edge.value).lower() and transient_cause(edge.value) is None
    assert transient_cause(StoreWriteError(["x"], "gave up")) is None  # never retried twice over


# ---------------------------------------------------------------- 2. the waits


def test_backoff_doubles_with_jitter_and_the_attempts_are_bounded():
    policy = WriteRetry(retries=3, backoff=0.5, backoff_max=1.5)
    refused = ConnectionRefusedError(111, "Connection refused")
    for attempt, ceiling in [(0, 0.5), (1, 1.0), (2, 1.5)]:
        delays = {policy.decide(attempt, refused).delay for _ in range(40)}
        assert all(ceiling / 2 <= d <= ceiling for d in delays) and len(delays) > 1
    last = policy.decide(3, refused)
    assert not last.retry and last.exhausted and "refused" in last.cause
    assert policy.attempts == 4
    no_retries = WriteRetry(retries=0).decide(0, refused)
    assert no_retries.exhausted
    not_transient = policy.decide(0, ValueError("bad vector"))
    assert not not_transient.retry and not not_transient.exhausted


def test_a_requested_wait_is_honoured_up_to_its_cap(rest):
    limited = rest_with(rest, ("status", 429, {"Retry-After": "3"}))
    assert WriteRetry().decide(0, limited).delay == 3.0
    assert WriteRetry(max_retry_after=0.25).decide(0, limited).delay == 0.25


def test_retry_statuses_are_the_overload_ones():
    assert RETRY_HTTP_STATUSES == {429, 502, 503, 504}


# ---------------------------------------------------------------- 3. the ingest job's writer

V1 = {
    "a.txt": sentences("alpha", 4),  # 2 chunks
    "b.md": f"# Beta\n\n{sentences('beta', 3)}\n\n## Usage\n\n{sentences('beta', 3, 10)}\n",  # 4
    "e.txt": sentences("echo", 4),  # 2
}
V2 = {  # b.md changed (5 chunks), d.txt new (5), e.txt deleted; a.txt unchanged
    "b.md": f"# Beta revised\n\n{sentences('beta', 5, 20)}\n\n## Usage\n\n{sentences('beta', 3, 30)}\n",
    "d.txt": sentences("delta", 10),
}
FAST = WriteRetry(retries=3, backoff=0.001, backoff_max=0.004, max_retry_after=0.01)


def chunker():
    # No document context: the chunk counts above (and so which batch holds which chunks, with
    # batch size 4) are those of the crash-safety tests.
    c = small_chunker()
    c.context = False
    return c


@pytest.fixture(scope="module")
def errors():
    return real_errors()


@pytest.fixture(scope="module")
def lab(tmp_path_factory, encoder):
    """V1 ingested into `base`; the folder then changed to V2; `clean`: a clean ingest of V2."""
    root = tmp_path_factory.mktemp("retry")
    docs = root / "docs"
    files = write(docs, V1)
    base = edge_settings(root / "base")
    assert ingest([docs], encoder=encoder, store=base, chunker=chunker(), progress=False).counts()["ingested"] == 3
    v1 = snapshot(base)
    b1 = sha256(files["b.md"])
    files.update(write(docs, V2))
    files["e.txt"].unlink()
    clean = edge_settings(root / "clean")
    clean_report = run(docs, clean, encoder)
    return {"root": root, "docs": docs, "base": base, "v1": v1, "clean": snapshot(clean),
            "clean_report": clean_report, "src": {k: src(p) for k, p in files.items()}, "b1": b1,
            "b2": sha256(files["b.md"])}


def run(docs: Path, settings, encoder, rules=None, retry=FAST):
    """The job (prune on, batch size 4) on `settings`, through a FlakyStore when rules are given."""
    if rules is None:
        return ingest([docs], encoder=encoder, store=settings, chunker=chunker(), prune=True, batch_size=4,
                      progress=False, write_retry=retry)
    store = open_store(settings)
    flaky = FlakyStore(store, rules)
    try:
        report = ingest([docs], encoder=encoder, store=settings, chunker=chunker(), prune=True, batch_size=4,
                        progress=False, write_retry=retry, vector_store=flaky)
    finally:
        store.close()
    return report, flaky


def statuses(report) -> dict[str, str]:
    return {o.source: o.status for o in report.outcomes}


def copy_of_base(lab, name: str):
    return copy_store(lab["base"], lab["root"] / name)


def test_bounded_transient_errors_end_exactly_as_a_clean_ingest(lab, encoder, errors, caplog):
    s, e = lab["src"], errors
    rules = [("upsert", s["b.md"], 2, e["refused"], False),
             ("upsert", s["d.txt"], 1, e["timeout"], True),  # the server wrote it, then the answer timed out
             ("delete_other_versions", s["b.md"], 1, e["503"], False),
             ("delete_other_versions", s["d.txt"], 1, e["unavailable"], False),
             ("delete_source", s["e.txt"], 1, e["429"], False)]  # Retry-After 5, capped at 0.01
    store = copy_of_base(lab, "bounded")
    with caplog.at_level(logging.WARNING, logger="pipelines.writer"):
        report, flaky = run(lab["docs"], store, encoder, rules)
    assert statuses(report) == {s["a.txt"]: "unchanged", s["b.md"]: "replaced", s["d.txt"]: "ingested",
                                s["e.txt"]: "pruned"}  # what the same job without faults reports
    chunks = {o.source: o.chunks for o in lab["clean_report"].outcomes}
    assert {o.source: o.chunks for o in report.outcomes if o.status != "pruned"} == chunks
    assert report.chunks_written == chunks[s["b.md"]] + chunks[s["d.txt"]] == 10
    after = snapshot(store)
    assert after.points == lab["clean"].points and after.count == len(after.ids) == report.total_points
    # b's batches [b0..b3] and [b4, d0..d2]: the first tried three times, the second (d's timeout) twice
    assert flaky.attempts("upsert", s["b.md"]) == 3 + 2
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 6, warned
    assert sum(s["b.md"] in w and "refused" in w.lower() for w in warned) == 2
    assert any(s["d.txt"] in w and "ReadTimeout" in w for w in warned)
    assert any(s["b.md"] in w and "delete_other_versions" in w and "HTTP 503" in w for w in warned)
    assert any(s["e.txt"] in w and "retrying in 0.01 s" in w for w in warned)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_a_file_whose_writes_keep_failing_is_failed_and_its_old_version_kept(lab, encoder, errors, caplog):
    s = lab["src"]
    store = copy_of_base(lab, "exhausted")
    with caplog.at_level(logging.WARNING, logger="pipelines.writer"):
        report, flaky = run(lab["docs"], store, encoder, [("upsert", s["b.md"], None, errors["503"], False)])
    assert statuses(report) == {s["a.txt"]: "unchanged", s["b.md"]: "failed", s["d.txt"]: "ingested",
                                s["e.txt"]: "pruned"}
    failed = report.failed[0]
    assert "store write failed after 4 attempts (HTTP 503 Service Unavailable)" in failed.reason
    assert "nothing of this version was kept" in failed.reason
    assert flaky.attempts("upsert", s["b.md"]) == 4  # its first batch; the rest of it was not sent
    assert report.chunks_written == 5  # d's
    errors_logged = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors_logged) == 1 and s["b.md"] in errors_logged[0]
    # b exactly as before the job (version 1, whole, same ids); everything else as a clean ingest.
    after, clean, v1 = snapshot(store), lab["clean"], lab["v1"]
    assert after.versions(s["b.md"]) == {lab["b1"]: (4, 4)}
    assert after.ids_of(s["b.md"]) == v1.ids_of(s["b.md"])
    assert {i: p for i, p in after.points.items() if p[0] != s["b.md"]} == \
           {i: p for i, p in clean.points.items() if p[0] != s["b.md"]}
    rerun = run(lab["docs"], store, encoder)  # the store is back: the next run finishes the job
    assert statuses(rerun) == {s["a.txt"]: "unchanged", s["b.md"]: "replaced", s["d.txt"]: "unchanged"}
    assert snapshot(store).points == clean.points


def test_a_failed_batch_fails_every_file_it_carried_and_removes_what_was_written(lab, encoder, errors):
    s = lab["src"]
    store = copy_of_base(lab, "batch")
    # Batches of 4: [b0..b3] is written, [b4, d0, d1, d2] keeps failing: b and d fail, b's first
    # four new points are deleted again, d's first batch never lands.
    report, flaky = run(lab["docs"], store, encoder, [("upsert", s["d.txt"], None, errors["refused"], False)])
    assert [c[:2] for c in flaky.calls[:2]] == [("upsert", (s["b.md"],)), ("upsert", (s["b.md"], s["d.txt"]))]
    assert statuses(report) == {s["a.txt"]: "unchanged", s["b.md"]: "failed", s["d.txt"]: "failed",
                                s["e.txt"]: "pruned"}
    assert all("after 4 attempts" in o.reason and "refused" in o.reason.lower() for o in report.failed)
    assert report.chunks_written == 0
    assert ("delete_version", (s["b.md"],), False) in flaky.calls
    after = snapshot(store)
    assert after.versions(s["b.md"]) == {lab["b1"]: (4, 4)} and s["d.txt"] not in after.sources
    assert after.sources == {s["a.txt"], s["b.md"]}
    run(lab["docs"], store, encoder)
    assert snapshot(store).points == lab["clean"].points


def test_when_the_clean_up_fails_too_the_partial_copy_is_left_for_the_next_run(lab, encoder, errors):
    s = lab["src"]
    store = copy_of_base(lab, "no-cleanup")
    rules = [("upsert", s["b.md"], None, errors["timeout"], True),  # every batch lands, every answer times out
             ("delete_version", s["b.md"], None, errors["unavailable"], False)]
    report, _ = run(lab["docs"], store, encoder, rules)
    failed = report.failed[0]
    assert failed.source == s["b.md"] and "ReadTimeout" in failed.reason
    assert "partial copy could not be removed" in failed.reason and "gRPC UNAVAILABLE" in failed.reason
    # What a crash leaves: the old version whole, the new one partial; searchable, and repaired next.
    assert snapshot(store).versions(s["b.md"]) == {lab["b1"]: (4, 4), lab["b2"]: (4, 5)}
    rerun = run(lab["docs"], store, encoder)
    assert statuses(rerun)[s["b.md"]] == "replaced"
    assert snapshot(store).points == lab["clean"].points


def test_old_versions_that_cannot_be_deleted_leave_the_new_one_whole(lab, encoder, errors):
    s = lab["src"]
    store = copy_of_base(lab, "no-delete")
    report, _ = run(lab["docs"], store, encoder, [("delete_other_versions", s["b.md"], None, errors["503"], False)])
    failed = report.failed[0]
    assert failed.source == s["b.md"] and failed.chunks == 5
    assert "its new version is stored, but deleting its older versions failed" in failed.reason
    assert statuses(report)[s["d.txt"]] == "ingested"
    assert snapshot(store).versions(s["b.md"]) == {lab["b1"]: (4, 4), lab["b2"]: (5, 5)}
    rerun = run(lab["docs"], store, encoder)
    assert statuses(rerun)[s["b.md"]] == "replaced"
    assert snapshot(store).points == lab["clean"].points


def test_a_prune_that_keeps_failing_is_reported_and_tried_again_next_time(lab, encoder, errors):
    s = lab["src"]
    store = copy_of_base(lab, "no-prune")
    report, _ = run(lab["docs"], store, encoder, [("delete_source", s["e.txt"], None, errors["refused"], False)])
    assert statuses(report)[s["e.txt"]] == "failed" and "could not be pruned" in report.failed[0].reason
    assert s["e.txt"] in snapshot(store).sources
    assert statuses(run(lab["docs"], store, encoder))[s["e.txt"]] == "pruned"
    assert snapshot(store).points == lab["clean"].points


def test_a_non_transient_error_stops_the_job_at_once(lab, encoder, errors, caplog):
    s = lab["src"]
    store = copy_of_base(lab, "bad-request")
    with caplog.at_level(logging.WARNING, logger="pipelines.writer"), pytest.raises(type(errors["400"])) as caught:
        run(lab["docs"], store, encoder, [("upsert", s["b.md"], None, errors["400"], False)])
    assert caught.value is errors["400"] and caught.value.status_code == 400
    assert not caplog.records  # no retry


def test_retries_off_fails_the_file_at_the_first_transient_error(lab, encoder, errors):
    s = lab["src"]
    store = copy_of_base(lab, "no-retries")
    report, flaky = run(lab["docs"], store, encoder, [("upsert", s["b.md"], 1, errors["refused"], False)],
                        retry=WriteRetry(retries=0))
    assert statuses(report)[s["b.md"]] == "failed" and "after 1 attempt" in report.failed[0].reason
    assert flaky.attempts("upsert", s["b.md"]) == 1


# ---------------------------------------------------------------- settings


def test_write_retry_settings_from_the_config_file_and_the_flag(tmp_path):
    from pipelines.cli.app import build_parser
    from pipelines.cli.options import config_from_args
    from pipelines.config import load_config
    from rag.errors import ConfigError

    (tmp_path / "rag.toml").write_text("[ingest]\nwrite_retries = 5\nwrite_backoff = 0.25\n")
    cfg = load_config(tmp_path / "rag.toml")
    assert cfg.ingest.write_retry() == WriteRetry(retries=5, backoff=0.25, backoff_max=8.0)
    args = build_parser(cfg).parse_args(["ingest", "docs", "--write-retries", "1"])
    assert config_from_args(args).ingest.write_retry() == WriteRetry(retries=1, backoff=0.25)  # the flag wins
    assert build_parser().parse_args(["ingest", "docs"]).write_retries == 3  # the default
    (tmp_path / "bad.toml").write_text("[ingest]\nwrite_retries = -1\n")
    with pytest.raises(ConfigError, match=r"\[ingest.write_retries\]"):
        load_config(tmp_path / "bad.toml")
