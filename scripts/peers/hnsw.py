"""hnswlib's side of `hearth bench hnsw`: one JSON line.

The same split as hearth (the corpus' last N vectors are the queries),
inner-product space on the unit-length MiniLM vectors, the same M and
ef_construction; the build uses the given threads, queries run on one.
"""
import argparse
import ctypes
import json
import os
import time

import hnswlib
import numpy as np

ap = argparse.ArgumentParser()
ap.add_argument("--corpus", required=True, help="folder holding vectors.f32 and texts.json")
ap.add_argument("--threads", type=int, required=True, help="threads for the build")
ap.add_argument("--queries", type=int, default=1000)
ap.add_argument("--ef", default="16,32,64,128,256")
ap.add_argument("--m", type=int, default=16)
ap.add_argument("--ef-construction", type=int, default=200)
ap.add_argument("--min-seconds", type=float, default=1.0, help="repeat the query set until this much time has passed")
a = ap.parse_args()

n = len(json.load(open(os.path.join(a.corpus, "texts.json"), encoding="utf-8")))
vectors = np.fromfile(os.path.join(a.corpus, "vectors.f32"), dtype="<f4").reshape(n, -1)
base, queries = vectors[: n - a.queries], vectors[n - a.queries :]
def rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


# The parsed texts are freed; hand their memory back to the system so the
# index's allocations show in the resident size instead of reusing it.
ctypes.CDLL("libc.so.6").malloc_trim(0)
rss_before = rss_bytes()
start = time.perf_counter()
index = hnswlib.Index(space="ip", dim=vectors.shape[1])
index.init_index(max_elements=len(base), M=a.m, ef_construction=a.ef_construction, random_seed=100)
index.add_items(base, np.arange(len(base)), num_threads=a.threads)
build_s = time.perf_counter() - start
rss_per_vector = (rss_bytes() - rss_before) / len(base)

k = 10
# Exact neighbours by brute force, as hearth computes them (after the
# build, so its memory is not mixed with the index's).
scores = queries @ base.T
truth = np.argsort(-scores, axis=1)[:, :k]

index.set_num_threads(1)
curve = []
for ef in (int(e) for e in a.ef.split(",")):
    index.set_ef(ef)
    start = time.perf_counter()
    passes = 0
    # All queries in one call on one thread: hnswlib's C++ speed, without
    # Python's per-call overhead (the stricter comparison for hearth).
    # Whole passes over the query set until min-seconds have gone.
    while passes == 0 or time.perf_counter() - start < a.min_seconds:
        found = index.knn_query(queries, k=k, num_threads=1)[0]
        passes += 1
    secs = time.perf_counter() - start
    hits = sum(len(set(f.tolist()) & set(t.tolist())) for f, t in zip(found, truth))
    curve.append({"ef": ef, "recall_at_10": hits / (k * len(queries)), "queries_per_s": passes * len(queries) / secs})
print(json.dumps({
    "peer": "hnswlib",
    "kind": "hnsw",
    "threads": a.threads,
    "base": len(base),
    "queries": a.queries,
    "dim": vectors.shape[1],
    "m": a.m,
    "ef_construction": a.ef_construction,
    "build_s": build_s,
    "rss_bytes_per_vector": rss_per_vector,
    "curve": curve,
}))
