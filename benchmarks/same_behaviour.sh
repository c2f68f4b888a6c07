#!/usr/bin/env bash
# Outputs to compare before and after a change that must not change behaviour (issue 22's check):
# run it on each checkout with its own OUT, then `diff -r` the two folders (ignore "seconds" and
# the store paths in the JSON). Ingests ../shared/data/pdfs (twice, and with --ray), runs seven
# `rag search --json` shapes on both stores, lists every point's id and payload digest, and runs
# `rag eval retrieval` on SciFact (a fresh HNSW graph can move hybrid recall@100 in the third
# decimal; the points and the nDCG must be equal).
#     benchmarks/same_behaviour.sh /tmp/before      (from the old checkout)
#     benchmarks/same_behaviour.sh /tmp/after       (from the new one)
set -u
OUT=${1:?usage: same_behaviour.sh OUT_DIR}; rm -rf "$OUT"; mkdir -p "$OUT"
ROOT=$(cd "$(dirname "$0")/.." && pwd); cd "$ROOT"
RAG=.venv/bin/rag; PY=.venv/bin/python; D=../shared/data
export PYTHONPATH=$ROOT
$RAG ingest $D/pdfs --store "$OUT/store" --no-progress --json > "$OUT/ingest.json" 2>/dev/null
$RAG ingest $D/pdfs --store "$OUT/store" --no-progress --json > "$OUT/ingest2.json" 2>/dev/null
$RAG ingest $D/pdfs --store "$OUT/store_ray" --ray --no-progress --json > "$OUT/ingest_ray.json" 2>/dev/null
i=0
while IFS= read -r line; do
  i=$((i+1))
  eval "$RAG search $line --store \"$OUT/store\" --json" > "$OUT/search_$i.json" 2>/dev/null
  eval "$RAG search $line --store \"$OUT/store_ray\" --json" > "$OUT/search_ray_$i.json" 2>/dev/null
done <<'Q'
"how is SBERT fine-tuned?"
"siamese network" --mode bm25 --filter page=2-4 --explain
"pooling strategy" --mode dense --top-k 5
"How does BERT use attention?" --explain
"multi-head attention" --mmr 0.7
"apt-get install" --filter section=Introduction
"transformer encoder layers" --fusion rrf --weights 1,2
Q
$PY benchmarks/dump_points.py "$OUT/store" > "$OUT/points.txt"
$PY benchmarks/dump_points.py "$OUT/store_ray" > "$OUT/points_ray.txt"
$RAG eval retrieval $D/scifact --store "$OUT/scifact" --no-progress --out "$OUT/scifact.json" > /dev/null 2>&1
$PY benchmarks/dump_points.py "$OUT/scifact" beir-scifact > "$OUT/scifact_points.txt"
echo "wrote $OUT"
