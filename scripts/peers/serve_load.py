"""Closed-loop load on an OpenAI-compatible chat server, the same for hearth
and llama.cpp's llama-server: N clients, each sending streamed greedy
`/v1/chat/completions` requests back to back for a fixed time. Prints one
JSON line: requests/s, completion tokens/s, end-to-end latency, time to
first token and inter-token latency percentiles (ms).

Every request asks a different question (a counter in the text), so no
server can answer from a cached prompt of an earlier request beyond the
shared chat-template prefix. With --context FILE, each question comes after
the first --context-chars characters of FILE as passages to answer from: a
RAG-shaped prompt (the counter first, so even the passages are not reused
from a cache).
"""
import argparse
import http.client
import json
import threading
import time
import urllib.parse

QUESTIONS = [
    "Explain what a hash map is and when to use one.",
    "Give three tips for writing clear technical documentation.",
    "What is the difference between a process and a thread?",
    "Describe how a binary search works.",
    "Why do databases use indexes?",
    "What does a load balancer do?",
    "Summarize the idea of version control.",
    "How does garbage collection differ from manual memory management?",
]


def one(host, port, model, i, max_tokens, context):
    question = QUESTIONS[i % len(QUESTIONS)]
    if context:
        content = (f"({i}) Answer from these passages.\n\n{context}\n\n"
                   f"Question: {question}")
    else:
        content = f"({i}) {question}"
    body = json.dumps({
        "model": model,
        "messages": [{"role": "user", "content": content}],
        "max_tokens": max_tokens, "temperature": 0, "stream": True,
    })
    conn = http.client.HTTPConnection(host, port, timeout=300)
    start = time.perf_counter()
    conn.request("POST", "/v1/chat/completions", body, {"content-type": "application/json"})
    resp = conn.getresponse()
    if resp.status != 200:
        raise RuntimeError(f"HTTP {resp.status}: {resp.read()[:200]!r}")
    stamps = []
    buf = b""
    while True:
        chunk = resp.read1(65536) if hasattr(resp, "read1") else resp.read(1)
        if not chunk:
            break
        buf += chunk
        while b"\n\n" in buf:
            frame, buf = buf.split(b"\n\n", 1)
            for line in frame.split(b"\n"):
                if not line.startswith(b"data:"):
                    continue
                data = line[5:].strip()
                if data == b"[DONE]":
                    continue
                d = json.loads(data)
                for c in d.get("choices", []):
                    if c.get("delta", {}).get("content"):
                        stamps.append(time.perf_counter())
    conn.close()
    end = time.perf_counter()
    return start, end, stamps


def pct(xs, p):
    if not xs:
        return None
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--model", default="hearth-fine-tuned")
    ap.add_argument("--clients", type=int, required=True)
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--label", default="")
    ap.add_argument("--context", help="a text file whose start is every prompt's passages")
    ap.add_argument("--context-chars", type=int, default=3000)
    a = ap.parse_args()
    context = ""
    if a.context:
        context = open(a.context, encoding="utf-8").read()[: a.context_chars]
    u = urllib.parse.urlparse(a.url)
    results, errors = [], []
    lock = threading.Lock()
    counter = [0]
    deadline = time.perf_counter() + a.seconds

    def client():
        while time.perf_counter() < deadline:
            with lock:
                counter[0] += 1
                i = counter[0]
            try:
                r = one(u.hostname, u.port, a.model, i, a.max_tokens, context)
            except Exception as e:  # recorded, not fatal
                with lock:
                    errors.append(repr(e))
                continue
            with lock:
                results.append(r)

    t0 = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(a.clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    lat = [(e - s) * 1e3 for s, e, _ in results]
    ttft = [(st[0] - s) * 1e3 for s, _, st in results if st]
    itl = [(b - a_) * 1e3 for _, _, st in results for a_, b in zip(st, st[1:])]
    tokens = sum(len(st) for _, _, st in results)
    print(json.dumps({
        "label": a.label, "clients": a.clients, "context_chars": len(context), "requests": len(results), "errors": len(errors),
        "first_error": errors[0] if errors else None, "seconds": wall,
        "req_s": len(results) / wall, "tok_s": tokens / wall,
        "p50_ms": pct(lat, 50), "p95_ms": pct(lat, 95),
        "ttft_p50_ms": pct(ttft, 50), "ttft_p95_ms": pct(ttft, 95),
        "itl_p50_ms": pct(itl, 50), "itl_p95_ms": pct(itl, 95),
    }))


main()
