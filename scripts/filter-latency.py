#!/usr/bin/env python3
"""Filtered search latency: start `hearth serve` on a fresh data directory,
ingest N one-sentence runbook documents (four teams, two sources, five
levels), and time /search (its own `search_ms`, without embedding) with and
without metadata filters. Prints a Markdown table.

    python3 scripts/filter-latency.py [HEARTH_BINARY] [N]
"""
import json, socket, statistics, subprocess, sys, tempfile, time, urllib.request

binary = sys.argv[1] if len(sys.argv) > 1 else "target/release/hearth"
N = int(sys.argv[2]) if len(sys.argv) > 2 else 10000
with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
data = tempfile.mkdtemp(prefix="hearth-filter-")
server = subprocess.Popen([binary, "serve", "--data-dir", data, "--listen", f"127.0.0.1:{port}"],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def call(path, body=None):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}",
                                 data=None if body is None else json.dumps(body).encode(),
                                 headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=600) as r:
        return json.loads(r.read())


try:
    for _ in range(1200):
        try:
            call("/readyz")
            break
        except Exception:
            time.sleep(0.25)
    teams = ["ops", "sre", "web", "data"]
    services = ["billing", "search", "ingest", "auth", "mail", "cache", "queue", "render"]
    started = time.time()
    for first in range(0, N, 500):
        call("/documents", [{
            "id": f"rb-{i}",
            "text": f"Runbook {i}: when the {services[i % 8]} service pages, the {teams[i % 4]} team restarts it on host {i % 13}.",
            "source": "runbooks" if i % 2 == 0 else "wiki",
            "metadata": {"team": teams[i % 4], "level": i % 5},
        } for i in range(first, min(N, first + 500))])
    print(f"ingested {N} documents in {time.time() - started:.1f} s", file=sys.stderr)
    queries = [f"who restarts the {s} service on host {h}" for s in services for h in range(3)]
    cases = [
        ("no filter, dense", {"mode": "dense"}),
        ("no filter, lexical", {"mode": "lexical"}),
        ("no filter, hybrid", {"mode": "hybrid"}),
        (f"`metadata.team = sre` ({N // 4:,} chunks), hybrid", {"filter": {"metadata.team": "sre"}}),
        (f"`source = runbooks` ({N // 2:,} chunks), dense", {"mode": "dense", "filter": {"source": "runbooks"}}),
        (f"`source = runbooks` ({N // 2:,} chunks), hybrid", {"filter": {"source": "runbooks"}}),
        ("3 document ids (exact path), hybrid", {"filter": {"document_id": ["rb-1", "rb-2", "rb-3"]}}),
        (f"`metadata.level >= 3` and `team in (ops, web)` ({N // 5:,} chunks), hybrid",
         {"filter": {"metadata.level": {"gte": 3}, "metadata.team": ["ops", "web"]}}),
    ]
    print("| search | p50 ms | p95 ms |")
    print("|---|---|---|")
    for name, extra in cases:
        times = []
        for rep in range(2):  # the first pass warms up
            for q in queries:
                r = call("/search", dict({"query": q, "top_k": 10}, **extra))
                if rep:
                    times.append(r["timings"]["search_ms"])
        times.sort()
        print(f"| {name} | {statistics.median(times):.2f} | {times[int(len(times) * 0.95) - 1]:.2f} |")
finally:
    server.terminate()
    server.wait()
