"""What the document context does to the chunks of one paper, on one set of chunk boundaries: the
chunks of a collection built without context (NOCONTEXT_STORE) are embedded alone and behind their
paper's context (read from CONTEXT_STORE, built with it); per paper, the mean cosine between its
chunks and to the context string, and per question of bench_arxiv_pages.py whose answering chunk
moves, its rank among its paper's chunks and overall, and the question's cosine to the context.

    python benchmarks/arxiv_context_spread.py /tmp/a-main-nosv /tmp/a-noctx
"""
import sys
from pathlib import Path as _P
sys.path.insert(0, str(_P(__file__).resolve().parent)); sys.path.insert(0, str(_P(__file__).resolve().parents[1]))
if len(sys.argv) != 3:
    raise SystemExit(__doc__)
CONTEXT_STORE, NOCONTEXT_STORE = sys.argv[1], sys.argv[2]
from bench_arxiv_pages import QUESTIONS
from pipelines.stores import StoreSettings, open_store
from rag.embed.encoder import SentenceEncoder
from rag.models import CONTEXT_SEPARATOR
import numpy as np
from pathlib import Path
enc = SentenceEncoder()
ctxs = {}
vs = open_store(StoreSettings(store_dir=CONTEXT_STORE))
for _, p in vs.payloads(['source', 'context']): ctxs[Path(p['source']).name] = p['context']
vs.close()
vs = open_store(StoreSettings(store_dir=NOCONTEXT_STORE))
pts = [p for _, p in vs.payloads(['source', 'page_start', 'page_end', 'text'])]
vs.close()
names = [Path(p['source']).name for p in pts]
A = enc.encode([p['text'] for p in pts]); W = enc.encode([f"{ctxs[n]}{CONTEXT_SEPARATOR}{p['text']}" for n, p in zip(names, pts)])
T = enc.encode([ctxs[n] for n in sorted(set(names))]); tv = dict(zip(sorted(set(names)), T))
print("paper | chunks | mean cos between its chunks: alone / with prefix | mean cos chunk-to-prefix alone / with")
for n in sorted(set(names)):
    idx = [i for i, m in enumerate(names) if m == n]
    def mpair(M):
        S = M[idx] @ M[idx].T; k = len(idx); return (S.sum() - k) / (k * k - k)
    print(f"{n[:30]} | {len(idx)} | {mpair(A):.3f} / {mpair(W):.3f} | {(A[idx] @ tv[n]).mean():.3f} / {(W[idx] @ tv[n]).mean():.3f}")
Q = enc.encode([q for q, _, _ in QUESTIONS])
print("\nq | paper | answering chunk: within-paper rank alone -> with; overall rank alone -> with | cos(q, prefix)")
for i, (q, f, pages) in enumerate(QUESTIONS):
    ans = [j for j, p in enumerate(pts) if names[j] == f and any(p['page_start'] <= g <= p['page_end'] for g in pages)]
    idx = [j for j, m in enumerate(names) if m == f]
    def ranks(M):
        s = M @ Q[i]; order = list(np.argsort(-s)); within = [j for j in order if names[j] == f]
        return min(within.index(j) for j in ans) + 1, min(order.index(j) for j in ans) + 1
    (wa, oa), (ww, ow) = ranks(A), ranks(W)
    if (wa, oa) != (ww, ow):
        print(f"{i} | {f[:22]} | {wa} -> {ww}; {oa} -> {ow} | {Q[i] @ tv[f]:.3f} | {q[:60]}")
