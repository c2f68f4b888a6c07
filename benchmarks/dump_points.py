"""Every point of a collection as `id payload-digest`, sorted: two stores hold the same points
when these listings are equal (used by same_behaviour.sh to compare a refactor's before and after).

    python benchmarks/dump_points.py STORE_DIR [COLLECTION] > points.txt
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipelines.stores import StoreSettings, open_store  # noqa: E402
from rag.search import payload as P  # noqa: E402

FIELDS = [P.SOURCE, P.FILE_HASH, P.FILE_CHUNKS, P.CHUNK_INDEX, P.TEXT, P.PAGE_START, P.PAGE_END, P.SECTION,
          P.CONTEXT]


def main() -> int:
    store = sys.argv[1]
    collection = sys.argv[2] if len(sys.argv) > 2 else "documents"
    vs = open_store(StoreSettings(store_dir=store, collection=collection))
    try:
        rows = sorted((pid, json.dumps(p, sort_keys=True)) for pid, p in vs.payloads(FIELDS))
    finally:
        vs.close()
    for pid, payload in rows:
        print(pid, hashlib.sha1(payload.encode()).hexdigest()[:12])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
