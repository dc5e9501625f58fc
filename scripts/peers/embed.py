"""sentence-transformers' side of `hearth bench embed`: one JSON line.

Texts/s embedding the cached corpus' first passages in batches (every
passage once, after one warm-up batch), and the median latency of one
short query, with the same thread count as hearth.
"""
import argparse
import json
import os
import time

import torch
from sentence_transformers import SentenceTransformer

QUERY = "How do I borrow a value mutably in Rust?"  # the same as hearth's

ap = argparse.ArgumentParser()
ap.add_argument("--model", required=True, help="the sentence-transformers folder")
ap.add_argument("--corpus", required=True, help="folder holding texts.json")
ap.add_argument("--threads", type=int, required=True)
ap.add_argument("--batch", type=int, default=32)
ap.add_argument("--passages", type=int, default=128)
ap.add_argument("--queries", type=int, default=50)
a = ap.parse_args()

torch.set_num_threads(a.threads)
torch.set_num_interop_threads(1)
model = SentenceTransformer(a.model, device="cpu")
model.max_seq_length = 256
texts = json.load(open(os.path.join(a.corpus, "texts.json"), encoding="utf-8"))[: a.passages]


def embed(batch):
    return model.encode(batch, batch_size=len(batch), normalize_embeddings=True,
                        convert_to_numpy=True, show_progress_bar=False)


with torch.inference_mode():
    embed(texts[: a.batch])  # warm-up
    start = time.perf_counter()
    for i in range(0, len(texts), a.batch):
        embed(texts[i : i + a.batch])
    secs = time.perf_counter() - start
    lat = []
    for _ in range(a.queries):
        t = time.perf_counter()
        embed([QUERY])
        lat.append((time.perf_counter() - t) * 1e3)
lat.sort()
print(json.dumps({
    "peer": "sentence-transformers",
    "kind": "embed",
    "threads": a.threads,
    "batch": a.batch,
    "texts": len(texts),
    "texts_per_s": len(texts) / secs,
    "query_ms": lat[len(lat) // 2],
}))
