"""Freed memory goes back to the system after a job (pipelines/memory.py).

Each check runs in a fresh Python process, so its resident memory is its own: a thread allocates
200 blocks of 1 MiB from glibc's malloc after freeing one of 16 MiB (which raises the mmap
threshold, as the encoder's activations do), frees all but the last (which keeps its heap's top in
use), and the process's anonymous RSS is read before and after. glibc keeps the freed 199 MiB
resident; `release_free_memory`, and so the server's writer after each task, hands them back."""

from __future__ import annotations

import json
import platform
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's allocator only")

FRAGMENT = textwrap.dedent("""
    import ctypes, json, sys, threading
    sys.path.insert(0, {root!r})
    libc = ctypes.CDLL("libc.so.6")
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    kept = []

    def anon_mb():
        return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("RssAnon")) / 1024

    def fragment():
        big = libc.malloc(16 << 20)
        ctypes.memset(big, 1, 16 << 20)
        libc.free(big)
        blocks = [libc.malloc(1 << 20) for _ in range(200)]
        for b in blocks:
            ctypes.memset(b, 1, 1 << 20)
        for b in blocks[:-1]:
            libc.free(b)
        kept.append(blocks[-1])
""")


def run(body: str) -> dict:
    code = FRAGMENT.format(root=str(ROOT)) + textwrap.dedent(body)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_release_free_memory_hands_back_what_a_thread_freed():
    r = run("""
        from pipelines.memory import release_free_memory
        before = anon_mb()
        t = threading.Thread(target=fragment)
        t.start(); t.join()
        freed = anon_mb()
        released = release_free_memory()
        print(json.dumps({"before": before, "freed": freed, "after": anon_mb(), "released": released}))
    """)
    assert r["freed"] - r["before"] > 150, r  # glibc kept the freed blocks: what the server saw
    assert r["released"] is True
    assert r["after"] - r["before"] < 30, r


def test_the_server_writer_releases_after_each_task():
    """A write task on the writer's thread frees 199 MiB; once the writer has taken its next task,
    they are no longer resident."""
    r = run("""
        from pipelines.server.jobs import DocumentWriter
        writer = DocumentWriter(collection=lambda name: None)
        writer.start()
        before = anon_mb()
        writer.call(fragment).result(60)
        writer.call(lambda: None).result(60)  # taken after the first task's release
        after = anon_mb()
        writer.stop()
        print(json.dumps({"before": before, "after": after}))
    """)
    assert r["after"] - r["before"] < 30, r
