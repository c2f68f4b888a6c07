"""The web chat page of `rag serve` (GET /), as a person uses it: a real uvicorn server on
loopback with a key, over a real embedded collection answered with extracts (`llm = none`, no
model needed), driven by a real headless Chromium through selenium. The browser part is skipped
where /usr/bin/chromium or /usr/bin/chromedriver is missing (.ci/run installs both); the headers
check runs everywhere. Every wait is bounded, and Chromium is started with its background
networking off, so nothing but 127.0.0.1 is ever contacted."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import httpx
import pytest

from helpers_ingest import write
from pipelines.config import RagConfig
from pipelines.server.app import create_app, serve_in_background
from pipelines.server.schemas import ChunkWriter
from pipelines.server.options import ServeOptions
from pipelines.stores import StoreSettings
from rag.answer.prompt import check_citations
from rag.models import Answer, Passage

KEY, KEY_ENV = "web-page-key-0123456789", "RAG_TEST_WEB_PAGE_KEY"
CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
SCREENSHOT_COPY = Path("/tmp/rag_web_page.png")
WAIT_S = 60
DOCS = {"garden.txt": "Tomatoes need full sun and regular watering. Basil grows well next to tomatoes."}
# The markup in tea.txt must reach the page as text: the answer and the passage are never HTML.
NOTES = {"tea.txt": "Green tea is steeped at 70 to 80 degrees Celsius for two to three minutes. "
                    "Black tea takes boiling water and four minutes. Oolong is <b>never</b> boiled."}
CHROME_FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--no-first-run", "--window-size=1100,1300"]

# Streams as the server writes them, for what extracts over these notes never produce.
SOURCE = {"n": 1, "source": "/notes/tea.txt", "pages": "", "chunk_ids": ["x"], "text": "Oolong.", "score": 0.5}
UNSUPPORTED_SSE = "".join(f"data: {json.dumps(e)}\n\n" for e in [
    {"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}], "sources": [SOURCE]},
    {"choices": [{"index": 0, "delta": {"content": "Oolong was first brewed in 1725. [1]"}}]},
    {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}], "backend": "openai", "backend_origin": "a test",
     "citations": {"valid": [1], "invalid": []}, "grounding": {"unsupported": 1, "sentences": [
         {"index": 1, "text": "Oolong was first brewed in 1725.", "supported": False, "missing": ["1725"]}]}},
]) + "data: [DONE]\n\n"
ERROR_SSE = "".join(f"data: {json.dumps(e)}\n\n" for e in [
    {"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}], "sources": [SOURCE]},
    {"choices": [{"index": 0, "delta": {"content": "Oolong is"}}]},
    {"choices": [{"index": 0, "delta": {}, "finish_reason": "error"}],
     "error": {"message": "the LLM stopped: HTTP 503", "type": "upstream_error", "code": "llm_error"}},
]) + "data: [DONE]\n\n"
# The page's next chat request gets `arguments[0]` as its SSE body; every other request is real.
FAKE_NEXT_CHAT = """
const body = arguments[0], realFetch = window.fetch;
window.fetch = (url, init) => {
  if (url !== "/v1/chat/completions") return realFetch(url, init);
  window.fetch = realFetch;
  return Promise.resolve(new Response(body, {headers: {"Content-Type": "text/event-stream"}}));
};"""


# An answer citing with a list, a range and a number that names no passage, after a character
# outside the BMP (the spans count code points, JavaScript's strings UTF-16 units).
CITED_TEXT = ("Green tea wants water below boiling [1, 2]. \U0001F375 Black tea takes it boiling [1-3]. "
              "Oolong was first brewed in 1725 [9].")
CITED_PASSAGES = [Passage(number=i, text=t, source=f"/notes/{name}", page_start=1, page_end=1, score=0.5, rank=i)
                  for i, (name, t) in enumerate([("green.txt", "Green tea: 70 to 80 degrees."),
                                                 ("white.txt", "White tea: 75 degrees."),
                                                 ("black.txt", "Black tea: boiling water.")], 1)]


def cited_sse() -> str:
    """The stream the server writes (its ChunkWriter) for CITED_TEXT, cut into pieces that split
    the markers, so that the page can rely only on the last chunk's spans."""
    answer = check_citations(Answer(question="q", text=CITED_TEXT, kind="generated", backend="openai",
                                    passages=CITED_PASSAGES))
    writer = ChunkWriter("notes")
    cuts = [0, 38, 41, 80, 84, len(CITED_TEXT)]
    pieces = [CITED_TEXT[a:b] for a, b in zip(cuts, cuts[1:])]
    return (writer.first(CITED_PASSAGES) + "".join(writer.text(p) for p in pieces)
            + writer.last(answer, []) + writer.done())


@pytest.fixture(scope="module")
def server(tmp_path_factory, encoder):
    """Collections docs and notes, notes the default (so not the first by name); extracts; a
    server key (so the page must ask for it)."""
    from pipelines.ingest import ingest
    from rag.ingest.chunking import Chunker

    root = tmp_path_factory.mktemp("web_page")
    write(root / "docs", DOCS)
    write(root / "notes", NOTES)
    for name in ("docs", "notes"):
        rep = ingest([str(root / name)], encoder=encoder, chunker=Chunker(48, 8), progress=False,
                     store=StoreSettings(store_dir=str(root / "store"), collection=name))
        assert not rep.failed and rep.total_points
    cfg = RagConfig(store={"dir": str(root / "store"), "collection": "notes"}, llm={"backend": "none"})
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(KEY_ENV, KEY)
        app = create_app(cfg, ServeOptions(server_key_env=KEY_ENV), encoder=encoder)
    with serve_in_background(app) as url:
        yield url


def test_the_page_and_its_files_need_no_key_and_come_with_a_strict_policy(server):
    with httpx.Client(base_url=server, timeout=30) as c:
        for path, kind in (("/", "text/html"), ("/static/app.js", "text/javascript"), ("/static/app.css", "text/css")):
            r = c.get(path)
            assert r.status_code == 200 and r.headers["content-type"].startswith(kind), (path, r.status_code)
            assert r.headers["content-security-policy"] == "default-src 'self'"
            assert r.headers["x-content-type-options"] == "nosniff"
        page = c.get("/").text
        assert "http://" not in page and "https://" not in page  # nothing from another origin
        assert "<script>" not in page and "<style" not in page  # CSP: no inline code or styles
        assert "innerHTML" not in c.get("/static/app.js").text
        assert c.get("/favicon.ico").status_code == 204
        # only the fixed files are open; anything else, a path that climbs out included, needs the key
        for path in ("/v1/models", "/static/app.py", "/static/../app.py", "/static/%2e%2e/app.py"):
            assert c.get(path).status_code == 401, path
        keyed = {"Authorization": f"Bearer {KEY}"}
        for path in ("/static/app.py", "/static/%2e%2e/app.py", "/static/index.html"):
            assert c.get(path, headers=keyed).status_code == 404, path


def _browser(tmp_path: Path):
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.skip(f"needs {CHROMIUM} and {CHROMEDRIVER} (apt-get install chromium chromium-driver)")
    pytest.importorskip("selenium", reason="needs selenium (the test extra)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in [*CHROME_FLAGS, f"--user-data-dir={tmp_path / 'chromium-profile'}"]:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(WAIT_S)
    driver.set_script_timeout(WAIT_S)
    return driver


def _console(driver) -> list[dict]:
    """The browser console since the last call (an empty list where the driver cannot read it)."""
    try:
        return driver.get_log("browser")
    except Exception:  # not every driver has the log
        return []


def test_a_person_asks_the_page_opens_the_cited_source_and_uploads_a_pdf(server, tmp_path, pdf_bytes):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import Select, WebDriverWait

    driver = _browser(tmp_path)
    wait = WebDriverWait(driver, WAIT_S)
    try:
        driver.get(server + "/")
        # the server has a key: the page says so and asks for it; the only console entry is that 401
        key_field = wait.until(EC.visibility_of_element_located((By.ID, "key")))
        assert "needs a key" in driver.find_element(By.ID, "status").text
        early = [e for e in _console(driver) if e["level"] == "SEVERE"]
        assert all("/v1/collections" in e["message"] and "401" in e["message"] for e in early), early
        key_field.send_keys(KEY)
        driver.find_element(By.CSS_SELECTOR, "#key-form button").click()
        wait.until(lambda d: [o.text for o in Select(d.find_element(By.ID, "collection")).options] == ["docs", "notes"])
        # the server's default is preselected, not the first name
        assert Select(driver.find_element(By.ID, "collection")).first_selected_option.text == "notes"
        assert not driver.find_element(By.ID, "key-box").is_displayed()
        assert driver.find_element(By.ID, "upload-box").is_displayed()

        Select(driver.find_element(By.ID, "collection")).select_by_visible_text("notes")
        wait.until(lambda d: d.find_element(By.ID, "upload-target").text == "notes")
        wait.until(lambda d: d.find_element(By.ID, "document-count").text == "1")  # tea.txt
        driver.find_element(By.ID, "question").send_keys("How hot should the water be for green tea?")
        driver.find_element(By.ID, "ask").click()

        answer = wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, ".turn .answer")))
        wait.until(lambda d: "70 to 80 degrees" in answer.text)
        marker = wait.until(EC.element_to_be_clickable((By.CSS_SELECTOR, ".turn .answer button.cite")))
        wait.until(lambda d: "answered by extractive" in d.find_element(By.CSS_SELECTOR, ".turn .meta").text)
        assert driver.find_element(By.CSS_SELECTOR, ".turn .question").text.startswith("How hot")
        marker.click()
        card = wait.until(EC.visibility_of_element_located((By.CSS_SELECTOR, ".turn .source-card")))
        wait.until(lambda d: card.find_element(By.CSS_SELECTOR, ".file").text == "tea.txt")
        assert card.get_attribute("data-n") == marker.get_attribute("data-n")
        assert "70 to 80 degrees" in card.find_element(By.CSS_SELECTOR, ".passage").text
        assert "score" in card.text
        assert driver.find_elements(By.CSS_SELECTOR, ".turn .error") == []
        assert driver.find_elements(By.CSS_SELECTOR, "#turns b") == []  # markup stayed text

        # what the server reports goes under the answer: unsupported sentences, an error chunk
        # (a stream the page gets from a stand-in fetch, as the server writes them: extracts
        # never fail part-way), and a plain error response (a wrong key, from the real server)
        for sse in (UNSUPPORTED_SSE, ERROR_SSE):
            driver.execute_script(FAKE_NEXT_CHAT, sse)
            driver.find_element(By.ID, "question").send_keys("And oolong?")
            driver.find_element(By.ID, "ask").click()
            wait.until(lambda d: d.find_element(By.ID, "ask").is_enabled())
        turns = driver.find_elements(By.CSS_SELECTOR, ".turn")
        assert len(turns) == 3
        assert "Oolong was first brewed in 1725." in turns[1].find_element(By.CSS_SELECTOR, ".unsupported").text
        assert "1725" in turns[1].find_element(By.CSS_SELECTOR, ".unsupported").text
        assert turns[2].find_element(By.CSS_SELECTOR, ".error").text == "Error: the LLM stopped: HTTP 503"
        assert turns[2].find_element(By.CSS_SELECTOR, ".answer").text == "Oolong is"
        # an upload: a PDF made here, into the selected collection; its outcome, then the list
        pdf = tmp_path / "harvest report.pdf"
        pdf.write_bytes(pdf_bytes([["Harvest report", "The pumpkin harvest weighed 412 kilograms this autumn."]]))
        driver.find_element(By.ID, "upload-files").send_keys(str(pdf))
        driver.find_element(By.ID, "upload").click()
        outcome = wait.until(EC.visibility_of_element_located((By.CSS_SELECTOR, "#upload-results .outcome.ingested")))
        assert outcome.find_element(By.CSS_SELECTOR, ".file").text == "harvest report.pdf"
        assert "ingested, 1 chunk(s)" in outcome.text
        wait.until(lambda d: d.find_element(By.ID, "document-count").text == "2")
        driver.find_element(By.CSS_SELECTOR, "#documents-box summary").click()
        listed = [e.text for e in driver.find_elements(By.CSS_SELECTOR, "#documents .file")]
        assert listed == ["harvest report.pdf", "tea.txt"]
        # and the chat finds it at once
        driver.find_element(By.ID, "question").send_keys("How heavy was the pumpkin harvest?")
        driver.find_element(By.ID, "ask").click()
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, ".turn")) == 4
                   and "412 kilograms" in d.find_elements(By.CSS_SELECTOR, ".turn .answer")[-1].text)
        # a wrong type is refused with the server's reason, and nothing is listed for it
        bad = tmp_path / "script.exe"
        bad.write_bytes(b"MZ\x90\x00 not a document")
        driver.find_element(By.ID, "upload-files").send_keys(str(bad))
        driver.find_element(By.ID, "upload").click()
        refused = wait.until(EC.visibility_of_element_located((By.CSS_SELECTOR, "#upload-results .outcome.failed")))
        assert ".exe" in refused.text
        assert driver.find_element(By.ID, "document-count").text == "2"
        problems = [e for e in _console(driver) if e["level"] == "SEVERE"]
        assert all("/v1/documents" in e["message"] and "415" in e["message"] for e in problems), problems
        driver.find_element(By.ID, "upload-results").location_once_scrolled_into_view

        shot = tmp_path / "rag_web_page.png"
        assert driver.save_screenshot(str(shot)) and shot.stat().st_size > 1000
        shutil.copyfile(shot, SCREENSHOT_COPY)

        driver.execute_script("apiKey = 'a-wrong-key';")
        driver.find_element(By.ID, "question").send_keys("Still there?")
        driver.find_element(By.ID, "ask").click()
        error = wait.until(EC.visibility_of_element_located((By.CSS_SELECTOR, ".turn:nth-of-type(5) .error")))
        assert "missing or wrong API key" in error.text and "a-wrong-key" not in error.text
        assert driver.find_element(By.ID, "key-box").is_displayed()
        late = [e for e in _console(driver) if e["level"] == "SEVERE"]
        assert all("/v1/chat/completions" in e["message"] and "401" in e["message"] for e in late), late
    finally:
        driver.quit()


def test_list_and_range_citations_render_as_one_marker_each_showing_their_sources(server, tmp_path):
    """[1, 2] and [1-3] are citations as the server parses them (the last chunk's spans): each is
    one button, written as the model wrote it, that shows every source it names; [9] names no
    source and stays text."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import Select, WebDriverWait

    driver = _browser(tmp_path)
    wait = WebDriverWait(driver, WAIT_S)
    try:
        driver.get(server + "/")
        wait.until(EC.visibility_of_element_located((By.ID, "key"))).send_keys(KEY)
        driver.find_element(By.CSS_SELECTOR, "#key-form button").click()
        wait.until(lambda d: len(Select(d.find_element(By.ID, "collection")).options) == 2)
        driver.execute_script(FAKE_NEXT_CHAT, cited_sse())
        driver.find_element(By.ID, "question").send_keys("How hot should tea water be?")
        driver.find_element(By.ID, "ask").click()
        wait.until(lambda d: d.find_element(By.ID, "ask").is_enabled())
        answer = driver.find_element(By.CSS_SELECTOR, ".turn .answer")
        assert driver.execute_script("return arguments[0].textContent", answer) == CITED_TEXT
        markers = answer.find_elements(By.CSS_SELECTOR, "button.cite")
        assert [m.text for m in markers] == ["[1, 2]", "[1-3]"]
        assert [m.get_attribute("data-n") for m in markers] == ["1 2", "1 2 3"]
        assert markers[0].get_attribute("title") == "green.txt, white.txt"
        for marker, files in zip(markers, (["green.txt", "white.txt"], ["green.txt", "white.txt", "black.txt"])):
            marker.click()
            wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, ".turn .source-card")) == len(files))
            cards = driver.find_elements(By.CSS_SELECTOR, ".turn .source-card")
            assert [c.find_element(By.CSS_SELECTOR, ".file").text for c in cards] == files
            assert [c.get_attribute("data-n") for c in cards] == marker.get_attribute("data-n").split()
        assert "cites passages that were not given: [9]" in driver.find_element(By.CSS_SELECTOR, ".turn .checks").text
        problems = [e for e in _console(driver) if e["level"] == "SEVERE"]
        assert all("/v1/collections" in e["message"] and "401" in e["message"] for e in problems), problems
    finally:
        driver.quit()
