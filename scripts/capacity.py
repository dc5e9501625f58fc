"""One closed-loop measurement for scripts/capacity.sh: 8 clients sending
requests back to back for S seconds to one hearth process, and the CPU
seconds the measured process (PID) spent meanwhile, from /proc/PID/stat.
Prints one JSON line.

Usage: capacity.py generate|embed|rag|search BASE_URL SECONDS PID
"""

import glob
import http.client
import json
import os
import sys
import threading
import time
import urllib.parse

CLIENTS = 8


def cpu_seconds(pid: int) -> float:
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def passages() -> str:
    """This repository's docs, from which each prompt takes its passages."""
    return "".join(open(p).read() for p in sorted(glob.glob("docs/*.md")))


def main() -> None:
    what, base, seconds, pid = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4])
    url = urllib.parse.urlparse(base)
    questions = [
        "How does hearth scale the model processes?",
        "What does the gateway do?",
        "Where does the store live?",
        "Which topology uses the least memory?",
    ]
    if what == "rag":
        docs = [{"id": p, "text": open(p).read()} for p in sorted(glob.glob("docs/*.md"))]
        conn = http.client.HTTPConnection(url.hostname, url.port, timeout=600)
        conn.request("POST", "/documents", json.dumps({"documents": docs}),
                     {"content-type": "application/json"})
        response = conn.getresponse()
        assert response.status in (200, 201), response.read()
        response.read()
    context = passages()

    def request(i: int):
        q = f"{questions[i % len(questions)]} ({i})"
        if what == "generate":
            # About 870 tokens, a different window each time: RAG prompts
            # share little beyond their first line, so the prefix cache
            # saves little here too.
            start = (i * 997) % (len(context) - 2600)
            window = context[start:start + 2600]
            return "/fine-tuned", {"prompt": f"Context:\n{window}\nQuestion: {q}\nAnswer:",
                                   "max_tokens": 64}
        if what == "embed":
            return "/embed", {"input": q}
        if what == "rag":
            return "/rag", {"question": q, "max_tokens": 64}
        return "/search", {"query": q}

    latencies, errors, counter = [], [], [0]
    lock = threading.Lock()
    stop = time.time() + seconds

    def client():
        conn = http.client.HTTPConnection(url.hostname, url.port, timeout=600)
        while time.time() < stop:
            with lock:
                counter[0] += 1
                i = counter[0]
            path, body = request(i)
            began = time.time()
            conn.request("POST", path, json.dumps(body), {"content-type": "application/json"})
            response = conn.getresponse()
            payload = response.read()
            with lock:
                if response.status == 200:
                    latencies.append(time.time() - began)
                else:
                    errors.append(payload[:200])

    cpu_before, began = cpu_seconds(pid), time.time()
    threads = [threading.Thread(target=client) for _ in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    took, cpu = time.time() - began, cpu_seconds(pid) - cpu_before
    if errors:
        sys.exit(f"capacity: {len(errors)} {what} requests failed, e.g. {errors[0]!r}")
    latencies.sort()
    n = len(latencies)
    print(json.dumps({
        "what": what, "clients": CLIENTS, "requests": n, "seconds": took,
        "rps": n / took,
        "p50_ms": latencies[n // 2] * 1e3, "p95_ms": latencies[int(n * 0.95)] * 1e3,
        "cpu_s_per_request": cpu / n,
    }))


if __name__ == "__main__":
    main()
