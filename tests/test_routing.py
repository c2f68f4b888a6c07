"""Document routing (rag.search.routing): a query that names documents by their titles and file
names searches those documents only. Real stores built by the test's own ingest: quarterly
reports of two made-up companies whose texts are the same template, so that only the company's
name tells their chunks apart."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from helpers_ingest import cli_env, edge_settings, rag_command, write
from pipelines.config import validate_config
from pipelines.ingest import ingest
from pipelines.stores import open_store
from rag.errors import ConfigError
from rag.ingest.chunking import Chunker
from rag.search.analyzer import Analyzer
from rag.search.retrieval import Retriever
from rag.search.routing import DocumentRouter, document_title, quarter_words
from rag.search.store import VectorStore

COMPANIES = {"ZPHR": "Zephyr Dynamics", "QLNF": "Quillon Foods"}
QUARTERS = ("2023 Q1", "2023 Q2")
SECTIONS = ("Results of operations", "Liquidity", "Segments", "Risk factors")


def filing(company: str, quarter: str, seed: int, extra: str = "") -> str:
    """A small report: a title heading, four sections, the company named in its text."""
    out = [f"# {company} quarterly report", ""]
    for i, section in enumerate(SECTIONS):
        out += [f"## {section}", ""]
        for j in range(3):
            n = 1000 + 37 * seed + 11 * i + j
            out.append(f"{company} reported net sales of {n} million dollars and operating income of "
                       f"{n // 3} million in {section.lower()} item {j}, against {n - 90} million a year "
                       f"earlier, as the board of {company} reviewed the results.")
        # a word of Zephyr's title ("Dynamics") that every filing's text uses
        out += [f"Management weighed the market dynamics of {section.lower()}.", ""]
    return "\n".join(out) + extra


def write_filings(folder: Path, kelp: bool = True) -> None:
    files = {}
    for s, (ticker, company) in enumerate(COMPANIES.items()):
        for q, quarter in enumerate(QUARTERS):
            # only Quillon's filings say "kelp": a word no Zephyr chunk has
            extra = "\nQuillon harvests kelp on its coastal farms.\n" if ticker == "QLNF" and kelp else ""
            files[f"{quarter} {ticker}.md"] = filing(company, quarter, 2 * s + q, extra)
    write(folder, files)


CHUNKER = Chunker(64, 8)


@pytest.fixture(scope="module")
def filings(tmp_path_factory, encoder):
    root = tmp_path_factory.mktemp("routing")
    write_filings(root / "filings")
    settings = edge_settings(root / "store", "filings")
    rep = ingest([root / "filings"], encoder=encoder, store=settings, chunker=CHUNKER, progress=False)
    assert not rep.failed
    vs = open_store(settings)
    yield vs
    vs.close()


def names(sources) -> set[str]:
    return {Path(s).name for s in sources}


# ------------------------------------------------------------------ the parts


def test_query_words_are_split_as_the_bm25_index_splits_them(tmp_path, encoder):
    a = Analyzer()
    assert a.terms("What were Apple's and NVIDIA's net sales?") == ["apple", "nvidia", "net", "sales"]
    assert a.terms("AMAZON.COM, INC. Form 10-Q naïve") == ["amazon", "com", "inc", "form", "10", "q", "naive"]
    # the engine agrees: each of those words finds the chunk, the possessive's "s" is no term
    write(tmp_path / "d", {"note.txt": "Apple's AMAZON.COM naïve 10-Q filing."})
    settings = edge_settings(tmp_path / "store")
    ingest([tmp_path / "d"], encoder=encoder, store=settings, chunker=CHUNKER, progress=False)
    vs = open_store(settings)
    try:
        r = Retriever(vs, encoder, route="off")
        for word in a.terms("Apple's AMAZON.COM naïve 10-Q"):
            assert r.search(word, mode="bm25").results, word
        assert not r.search("s", mode="bm25").results
    finally:
        vs.close()


def test_quarters_in_words_read_as_q1_to_q4():
    assert quarter_words(["first", "quarter", "of", "2023"])[-1] == "q1"
    assert quarter_words(["third", "fiscal", "quarter"])[-1] == "q3"
    assert quarter_words(["first", "time"]) == ["first", "time"]


def test_document_title_is_the_context_part_most_chunks_share():
    assert document_title(["2023 Q3 AAPL — Apple Inc. > Item 2", "2023 Q3 AAPL — Apple Inc. > Item 3",
                           "Item 1"]) == "2023 Q3 AAPL — Apple Inc."
    assert document_title(["Introduction", "Methods > Data", "Results"]) is None
    # a Markdown file's top heading, above every section, is part of its title
    assert document_title(["2023 Q1 ZPHR > Zephyr report > Liquidity", "2023 Q1 ZPHR > Zephyr report > Risks",
                           "2023 Q1 ZPHR > Zephyr report"]) == "2023 Q1 ZPHR — Zephyr report"
    assert document_title([]) is None


# ------------------------------------------------------------------ routing


def test_a_query_naming_a_company_and_quarter_searches_that_filing(filings, encoder):
    query = "What were Zephyr's net sales in the first quarter of 2023?"
    r = Retriever(filings, encoder, top_k=40)  # more than one filing's chunks
    resp = r.search(query)
    assert resp.route.routed
    assert names(resp.route.documents) == {"2023 Q1 ZPHR.md"}
    assert {"zephyr", "q1"} <= set(resp.route.terms)
    assert resp.results and names(h.source for h in resp.results) == {"2023 Q1 ZPHR.md"}
    assert any("routed to 1 of 4 documents" in n for n in resp.notes)
    # without routing, the rest of the 40 come from other filings
    off = r.search(query, route="off")
    assert off.route is None and len(names(h.source for h in off.results)) > 1


def test_ties_keep_every_document_of_the_company(filings, encoder):
    for mode in ("dense", "bm25", "hybrid"):
        resp = Retriever(filings, encoder, top_k=10, mode=mode).search("How did Quillon's net sales change?")
        assert names(resp.route.documents) == {"2023 Q1 QLNF.md", "2023 Q2 QLNF.md"}, mode
        assert names(h.source for h in resp.results) <= {"2023 Q1 QLNF.md", "2023 Q2 QLNF.md"}, mode


def test_latest_keeps_the_latest_period_of_the_documents_named(filings, encoder):
    resp = Retriever(filings, encoder).search("Zephyr's operating income in the latest report")
    assert names(resp.route.documents) == {"2023 Q2 ZPHR.md"}
    assert "latest" in resp.route.terms


def test_no_routing_without_a_word_that_names_a_minority(filings, encoder):
    r = Retriever(filings, encoder, top_k=10)
    for query in ("What were net sales and operating income?",  # content words only
                  "quarterly report 2023",  # title words in every document
                  "How did market dynamics change?"):  # in Zephyr's titles, in everyone's text
        resp = r.search(query)
        assert resp.route is not None and not resp.route.routed, query
        assert resp.route.reason
        assert "content words" in r.search("market dynamics").route.reason
        assert [h.id for h in resp.results] == [h.id for h in r.search(query, route="off").results]
    assert len(names(h.source for h in r.search("net sales", top_k=20).results)) > 1


def test_routing_off_searches_everything(filings, encoder):
    r = Retriever(filings, encoder, top_k=10, route="off")
    resp = r.search("Zephyr net sales")
    assert resp.route is None and not any("routed" in n for n in resp.notes)
    assert Retriever.from_dict(r.to_dict(), filings, encoder).route == "off"
    with pytest.raises(ConfigError, match="unknown route"):
        Retriever(filings, encoder, route="sometimes")


def test_routing_chooses_among_the_sources_a_filter_allows(filings, encoder):
    r = Retriever(filings, encoder, top_k=10)
    zephyr = sorted(s for s in filings.sources() if "ZPHR" in s)
    # two Zephyr filings allowed, the query names Q2: the Q2 one
    resp = r.search("net sales in Q2", filters=[f"source={','.join(zephyr)}"])
    assert names(resp.route.documents) == {"2023 Q2 ZPHR.md"}
    # one filing allowed, the query names the other company: the filter stands, nothing routed
    resp = r.search("Quillon net sales", filters=[f"source={zephyr[0]}"])
    assert not resp.route.routed and names(h.source for h in resp.results) == {Path(zephyr[0]).name}


def test_a_routed_query_with_no_match_in_its_documents_searches_them_all(filings, encoder):
    # a section only Zephyr's filings have, and a query naming Quillon
    section = next(p["section"] for _, p in filings.payloads(["section", "source"])
                   if "ZPHR" in p["source"] and (p.get("section") or "").endswith("Liquidity"))
    for mode in ("bm25", "hybrid"):
        resp = Retriever(filings, encoder, mode=mode).search("Quillon net sales", filters=[f"section={section}"])
        assert not resp.route.routed and "no match" in resp.route.reason, mode
        assert resp.notes[0].startswith("not routed: 2 of 4 documents named by 'quillon'"), mode
        assert resp.results and all(h.section == section for h in resp.results), mode


def test_a_collection_of_one_chunk_documents_is_never_routed(tmp_path, encoder):
    """SciFact-like: short abstracts whose titles are their content."""
    topics = ["Vitamin D and bone density", "Zinc and the common cold", "Statins and muscle pain",
              "Aspirin and stroke risk", "Sleep and memory", "Coffee and liver health"]
    write(tmp_path / "abstracts", {f"{i}.md": f"# {t}\n\nWe studied {t.lower()} in adults."
                                   for i, t in enumerate(topics)})
    settings = edge_settings(tmp_path / "store")
    ingest([tmp_path / "abstracts"], encoder=encoder, store=settings, chunker=CHUNKER, progress=False)
    vs = open_store(settings)
    try:
        resp = Retriever(vs, encoder).search("Does zinc shorten the common cold?")
        assert not resp.route.routed and "short" in resp.route.reason
        assert len(resp.results) == len(topics)
    finally:
        vs.close()


def test_the_descriptors_are_rebuilt_when_a_document_is_added(tmp_path, encoder):
    write_filings(tmp_path / "filings", kelp=False)
    settings = edge_settings(tmp_path / "store")
    ingest([tmp_path / "filings"], encoder=encoder, store=settings, chunker=CHUNKER, progress=False)
    vs = open_store(settings)
    try:
        r = Retriever(vs, encoder)
        assert not r.search("Xylotech net sales").route.routed
        built = r.router.index()
        assert r.router.index() is built  # unchanged collection: the cache is reused
        write(tmp_path / "new", {"2023 Q1 XYLO.md": filing("Xylotech", "2023 Q1", 9)})
        ingest([tmp_path / "new"], encoder=encoder, chunker=CHUNKER, progress=False, vector_store=vs)
        resp = r.search("Xylotech net sales")
        assert resp.route.routed and names(resp.route.documents) == {"2023 Q1 XYLO.md"}
        assert names(h.source for h in resp.results) == {"2023 Q1 XYLO.md"}
        assert len(r.router.index().documents) == 5
    finally:
        vs.close()


class CountingStore:
    """A store handle that counts its count() calls; `sole_writer` as given."""

    def __init__(self, store, sole_writer: bool):
        self._store, self.sole_writer, self.counts = store, sole_writer, 0

    def count(self) -> int:
        self.counts += 1
        return self._store.count()

    def __getattr__(self, name):
        return getattr(self._store, name)


def test_a_store_only_this_handle_writes_is_never_counted_per_query(tmp_path, encoder):
    """Routing's cache is keyed on the store's write counter alone where the handle is the only
    writer (the embedded store), so a query costs no exact count; a store others may write (a
    Qdrant server) is counted, at most once a second or after a write through the handle."""
    write_filings(tmp_path / "filings", kelp=False)
    settings = edge_settings(tmp_path / "store")
    ingest([tmp_path / "filings"], encoder=encoder, store=settings, chunker=CHUNKER, progress=False)
    vs = open_store(settings)
    try:
        assert vs.sole_writer
        sole = CountingStore(vs, sole_writer=True)
        router = DocumentRouter(sole)
        built = router.index()
        for _ in range(20):
            assert names(router.route("ZPHR Q2").documents) == {"2023 Q2 ZPHR.md"}
        assert sole.counts == 0 and router.index() is built
        write(tmp_path / "new", {"2023 Q1 XYLO.md": filing("Xylotech", "2023 Q1", 9)})
        ingest([tmp_path / "new"], encoder=encoder, chunker=CHUNKER, progress=False, vector_store=vs)
        assert router.index() is not built and len(router.index().documents) == 5
        assert names(router.route("Xylotech Q1").documents) == {"2023 Q1 XYLO.md"}

        shared = CountingStore(vs, sole_writer=False)
        router = DocumentRouter(shared)
        built = router.index()
        for _ in range(20):
            router.route("ZPHR Q2")
        assert shared.counts == 1 and router.index() is built  # within the second: counted once
        vs.delete_source(next(s for s in vs.sources() if s.endswith("XYLO.md")))
        assert len(router.index().documents) == 4 and shared.counts == 2  # a write: counted again
    finally:
        vs.close()


class Undeclared(VectorStore):
    """A store that says nothing of revision or sole_writer: it inherits the protocol's defaults
    (no revision kept, other writers possible). Only what routing reads is implemented."""

    def __init__(self, sources: list[str]):
        self.points, self.counts = [{"source": s} for s in sources], 0

    def count(self) -> int:
        self.counts += 1
        return len(self.points)

    def payloads(self, fields):
        for i, p in enumerate(self.points):
            yield str(i), {f: p[f] for f in fields if f in p}


def test_a_store_that_keeps_no_revision_is_counted_to_see_it_change(monkeypatch):
    """revision and sole_writer are declared on VectorStore with defaults, so routing reads them
    directly; a store that keeps no revision is keyed on its count (at most once a second)."""
    store = Undeclared(["a.txt", "b.txt"])
    assert store.revision is None and store.sole_writer is False
    router = DocumentRouter(store)
    built = router.index()
    assert router.index() is built and store.counts == 1
    store.points.append({"source": "c.txt"})
    clock = iter([1e6, 2e6])
    monkeypatch.setattr("rag.search.routing.time.monotonic", lambda: next(clock))
    assert router.index() is not built and store.counts == 2


def test_router_alone_reports_why(filings):
    router = DocumentRouter(filings)
    assert not router.route("net sales").routed
    assert router.route("ZPHR Q2").documents and names(router.route("ZPHR Q2").documents) == {"2023 Q2 ZPHR.md"}


# ------------------------------------------------------------------ settings and the CLI


def test_route_setting_in_the_config_file():
    assert validate_config({}, "t").retrieval.settings()["route"] == "auto"
    assert validate_config({"retrieval": {"route": "off"}}, "t").retrieval.settings()["route"] == "off"
    with pytest.raises(ConfigError):
        validate_config({"retrieval": {"route": "always"}}, "t")


def test_rag_search_json_and_explain_say_where_the_query_was_routed(tmp_path, encoder):
    write_filings(tmp_path / "filings")
    settings = edge_settings(tmp_path / "store", "filings")
    ingest([tmp_path / "filings"], encoder=encoder, store=settings, chunker=CHUNKER, progress=False)
    base = rag_command() + ["search", "--store", str(tmp_path / "store"), "--collection", "filings"]

    def run(*args):
        done = subprocess.run(base + list(args), capture_output=True, text=True, env=cli_env(), timeout=300)
        assert done.returncode == 0, done.stderr
        return done.stdout

    routed = json.loads(run("Quillon net sales in Q2 2023", "--json"))
    assert routed["route"]["routed"] and names(routed["route"]["documents"]) == {"2023 Q2 QLNF.md"}
    assert "quillon" in routed["route"]["terms"]
    assert json.loads(run("Quillon net sales in Q2 2023", "--json", "--route", "off"))["route"] is None
    explained = run("Quillon net sales in Q2 2023", "--explain")
    assert "route: 1 of 4 documents" in explained and "2023 Q2 QLNF.md" in explained
