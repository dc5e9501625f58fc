"""Embeddings under concurrency: the same single-text /v1/embeddings
requests (passages of the cached corpus) sent one at a time, then by N
concurrent clients; hearth's embed worker merges what is queued into one
batch. Prints one JSON line per mode: texts/s and latency p50/p95 (ms).

Usage: python3 scripts/peers/embed_load.py --url http://127.0.0.1:8080 \
           --corpus target/gpu-corpus --texts 256 --clients 32
"""
import argparse
import http.client
import json
import threading
import time
import urllib.parse


def run(url, model, texts, clients):
    u = urllib.parse.urlparse(url)
    lat, lock, nxt = [], threading.Lock(), [0]

    def client():
        conn = http.client.HTTPConnection(u.hostname, u.port, timeout=120)
        while True:
            with lock:
                i = nxt[0]
                nxt[0] += 1
            if i >= len(texts):
                break
            t = time.perf_counter()
            conn.request("POST", "/v1/embeddings", json.dumps({"model": model, "input": texts[i]}),
                         {"content-type": "application/json"})
            r = conn.getresponse()
            body = r.read()
            if r.status != 200:
                raise RuntimeError(f"HTTP {r.status}: {body[:200]!r}")
            with lock:
                lat.append((time.perf_counter() - t) * 1e3)
        conn.close()

    start = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    secs = time.perf_counter() - start
    lat.sort()
    return {"clients": clients, "texts": len(texts), "texts_per_s": len(texts) / secs,
            "p50_ms": lat[len(lat) // 2], "p95_ms": lat[int(0.95 * (len(lat) - 1))]}


ap = argparse.ArgumentParser()
ap.add_argument("--url", required=True)
ap.add_argument("--model", default="minilm-l6-v2")
ap.add_argument("--corpus", required=True, help="folder holding texts.json")
ap.add_argument("--texts", type=int, default=256)
ap.add_argument("--clients", type=int, default=32)
a = ap.parse_args()
texts = json.load(open(f"{a.corpus}/texts.json", encoding="utf-8"))[: a.texts]
run(a.url, a.model, texts[:16], 4)  # warm-up
for n in (1, a.clients):
    print(json.dumps(run(a.url, a.model, texts, n)))
