"""The example scripts run as a user would run them."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from helpers_ingest import cli_env, edge_settings, sentences, snapshot, write

pytestmark = pytest.mark.slow

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def run_example(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(EXAMPLES / "ingest_job.py"), *args], cwd=cwd,
                          env=cli_env(), capture_output=True, text=True, timeout=300)


def test_ingest_job_demo_and_folder(tmp_path):
    # With no argument: its own demo folder in a temporary directory, nothing left behind.
    demo_cwd = tmp_path / "demo"
    demo_cwd.mkdir()
    demo = subprocess.Popen([sys.executable, str(EXAMPLES / "ingest_job.py")], cwd=demo_cwd, env=cli_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # With a folder and a store (run side by side with the demo).
    docs = tmp_path / "docs"
    write(docs, {"a.txt": sentences("alpha", 4), "b.md": f"# B\n\n{sentences('beta', 3)}"})
    store = tmp_path / "store"
    given = run_example(str(docs), "--store", str(store), cwd=tmp_path)
    out, err = demo.communicate(timeout=300)

    assert demo.returncode == 0, err
    assert "Ingest summary" in out and re.search(r"ingested\W+2\W", out), out
    assert list(demo_cwd.iterdir()) == []

    assert given.returncode == 0, given.stderr
    assert re.search(r"ingested\W+2\W", given.stdout), given.stdout
    assert snapshot(edge_settings(store, "documents")).sources == {
        (docs / "a.txt").resolve().as_posix(), (docs / "b.md").resolve().as_posix()}


def test_hybrid_search_example(tmp_path):
    done = subprocess.run([sys.executable, str(EXAMPLES / "hybrid_search.py")], cwd=tmp_path, env=cli_env(),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "ingested 2 files" in done.stdout
    first = next(line for line in done.stdout.splitlines() if line.startswith("│ 1 "))
    assert "espresso.md" in first, done.stdout


def test_chat_app_example_with_extracts_and_with_a_server(tmp_path):
    from llm_fake_server import FakeLLMServer

    done = subprocess.run([sys.executable, str(EXAMPLES / "chat_app.py"), "--llm", "none"], cwd=tmp_path,
                          env=cli_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "ingested 2 files" in out
    first, second = out.split("\n> ")[1:3]
    assert '"A shot takes 25 to 30 seconds." [1]' in first and "[1] cited espresso.md" in first
    assert "70 to 80 degrees Celsius" in second and "cited tea.txt" in second
    assert list(tmp_path.iterdir()) == []  # the demo store lived in a temporary folder

    with FakeLLMServer(answer="A shot takes 25 to 30 seconds [1].") as server:
        done = subprocess.run([sys.executable, str(EXAMPLES / "chat_app.py"), "--llm", "openai",
                               "--base-url", server.openai_url, "--model", "fake-model",
                               "--question", "How long does an espresso shot take?"],
                              cwd=tmp_path, env=cli_env(), capture_output=True, text=True, timeout=300)
        asked = [r.body for r in server.requests]
    assert done.returncode == 0, done.stderr
    assert "A shot takes 25 to 30 seconds [1]." in done.stdout and "[1] cited espresso.md" in done.stdout
    assert len(asked) == 1 and asked[0]["stream"] is True
    assert "How long does an espresso shot take?" in asked[0]["messages"][-1]["content"]
