"""The documents study (docs/bench/documents.md), three measurements on
the real default models, side by side in one run:

1. ingest: the Rust book printed to PDF by headless Chromium, against the
   same text (what hearth extracted from the PDF) as a plain-text file:
   `hearth ingest` on each, alternating, files/s and chunks/s;
2. collections: `/search` latency in one collection of 2,000 chunks when
   it is the only one, and when 19 more collections of 2,000 chunks each
   sit beside it;
3. sync: `/rag` latency while `hearth documents sync` feeds 2,000 files
   of the standard library's documentation through the same server,
   against the same questions on the idle server.

Run by scripts/bench-documents.sh (which builds hearth first); writes
target/bench-documents/results.json and prints a Markdown table.
"""

import json
import os
import random
import re
import shutil
import sqlite3
import statistics
import subprocess
import sys
import threading
import time
import urllib.request

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(REPO, "target", "bench-documents")
HEARTH = os.path.join(REPO, "target", "release", "hearth")
SYSROOT = subprocess.run(["rustc", "--print", "sysroot"], capture_output=True, text=True).stdout.strip()
DOCS = os.path.join(SYSROOT, "share", "doc", "rust", "html")
REPS = int(os.environ.get("REPS", "2"))


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def call(url, body=None, method=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method or ("POST" if data else "GET"))
    if data:
        req.add_header("content-type", "application/json")
    with urllib.request.urlopen(req, timeout=600) as r:
        return json.loads(r.read() or b"null")


def percentile(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


class Server:
    def __init__(self, data_dir):
        self.proc = subprocess.Popen(
            [HEARTH, "serve", "--listen", "127.0.0.1:0", "--data-dir", data_dir],
            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
            env={**os.environ, "RUST_LOG": "hearth=warn"},
        )
        for line in self.proc.stdout:
            if line.startswith("hearth listening on "):
                self.url = line.split()[-1]
                break
        threading.Thread(target=lambda: [None for _ in self.proc.stdout], daemon=True).start()
        while True:
            try:
                urllib.request.urlopen(self.url + "/readyz", timeout=5)
                return
            except Exception:
                time.sleep(0.2)

    def stop(self):
        self.proc.terminate()
        self.proc.wait()


def ingest_time(path, data_dir):
    """`hearth ingest PATH` into a fresh store: (seconds, chunks) from its summary."""
    shutil.rmtree(data_dir, ignore_errors=True)
    r = subprocess.run([HEARTH, "ingest", path, "--data-dir", data_dir], cwd=REPO,
                       capture_output=True, text=True, check=True)
    m = re.search(r"as (\d+) chunks in ([\d.]+) s", r.stderr)
    return float(m.group(2)), int(m.group(1))


def study_ingest(results):
    pdf = os.path.join(OUT, "book.pdf")
    started = time.time()
    subprocess.run(["/usr/bin/chromium", "--headless", "--no-sandbox", "--disable-gpu", "--no-pdf-header-footer",
                    "--print-to-pdf=" + pdf, "file://" + os.path.join(DOCS, "book", "print.html")],
                   capture_output=True, check=True)
    log(f"ingest: printed the book to PDF in {time.time() - started:.0f} s")
    # The same text: what hearth read from the PDF.
    ingest_time(pdf, os.path.join(OUT, "pdf-store"))
    db = sqlite3.connect(os.path.join(OUT, "pdf-store", "hearth.sqlite"))
    text, = db.execute("SELECT text FROM documents").fetchone()
    pages = db.execute("SELECT MAX(page) FROM chunks").fetchone()[0]
    db.close()
    txt = os.path.join(OUT, "book.txt")
    with open(txt, "w") as f:
        f.write(text)
    runs = {"pdf": [], "text": []}
    for rep in range(REPS):
        for kind, path in (("pdf", pdf), ("text", txt)):
            secs, chunks = ingest_time(path, os.path.join(OUT, kind + "-store"))
            runs[kind].append((secs, chunks))
            log(f"ingest {kind} rep {rep}: {secs:.1f} s, {chunks} chunks")
    pdf_s = statistics.median(s for s, _ in runs["pdf"])
    txt_s = statistics.median(s for s, _ in runs["text"])
    for kind in ("pdf", "text"):
        shutil.rmtree(os.path.join(OUT, kind + "-store"), ignore_errors=True)
    results["ingest"] = {
        "pages": pages, "pdf_bytes": os.path.getsize(pdf), "text_chars": len(text),
        "pdf_s": pdf_s, "text_s": txt_s, "pdf_chunks": runs["pdf"][0][1], "text_chunks": runs["text"][0][1],
        "pdf_chunks_per_s": runs["pdf"][0][1] / pdf_s, "text_chunks_per_s": runs["text"][0][1] / txt_s,
        "ratio": pdf_s / txt_s, "runs": runs,
    }


WORDS = ("billing search ingest auth mail cache queue render restart deploy rotate page alert disk memory "
         "latency host region backup restore schema index shard replica token quota budget invoice").split()


def collection_docs(seed, n):
    rng = random.Random(seed)
    return [{"id": f"d{i}", "text": " ".join(rng.choice(WORDS) for _ in range(24)) + f" item {seed}-{i}."}
            for i in range(n)]


def search_p50(url, collection, queries):
    times = []
    for q in queries:
        t = time.perf_counter()
        call(url + "/search", {"query": q, "collection": collection, "top_k": 5})
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times), percentile(times, 95)


def study_collections(results):
    shutil.rmtree(os.path.join(OUT, "collections-store"), ignore_errors=True)
    server = Server(os.path.join(OUT, "collections-store"))
    try:
        rng = random.Random(7)
        queries = [" ".join(rng.choice(WORDS) for _ in range(4)) for _ in range(200)]

        def fill(name, seed):
            call(server.url + "/collections", {"name": name})
            docs = collection_docs(seed, 2000)
            for i in range(0, len(docs), 500):
                batch = [dict(d, collection=name) for d in docs[i:i + 500]]
                call(server.url + "/documents", batch)

        fill("c00", 0)
        search_p50(server.url, "c00", queries[:20])  # warm
        alone = [search_p50(server.url, "c00", queries) for _ in range(REPS)]
        started = time.time()
        for c in range(1, 20):
            fill(f"c{c:02d}", c)
        log(f"collections: 19 more collections of 2,000 chunks in {time.time() - started:.0f} s")
        search_p50(server.url, "c00", queries[:20])
        beside = [search_p50(server.url, "c00", queries) for _ in range(REPS)]
        other = search_p50(server.url, "c13", queries)
        a = statistics.median(p for p, _ in alone)
        b = statistics.median(p for p, _ in beside)
        results["collections"] = {
            "alone_p50_ms": a, "beside_p50_ms": b, "ratio": b / a,
            "alone_p95_ms": statistics.median(p for _, p in alone),
            "beside_p95_ms": statistics.median(p for _, p in beside),
            "another_p50_ms": other[0], "queries": len(queries),
        }
    finally:
        server.stop()


QUESTIONS = [
    "How do I create a thread and wait for it to finish?",
    "What does the borrow checker do?",
    "How do I read a file into a string?",
    "What is a trait object?",
    "How do I iterate over a vector?",
    "What is the difference between String and &str?",
]


def rag_latencies(url, stop, limit=None):
    times, i = [], 0
    while not stop() and (limit is None or i < limit):
        t = time.perf_counter()
        call(url + "/rag", {"question": QUESTIONS[i % len(QUESTIONS)], "collection": "notes", "max_tokens": 24})
        times.append((time.perf_counter() - t) * 1000)
        i += 1
    return times


def study_sync(results):
    folder = os.path.join(OUT, "std-2000")
    shutil.rmtree(folder, ignore_errors=True)
    os.makedirs(folder)
    pages = []
    for root, _, names in os.walk(os.path.join(DOCS, "std")):
        pages += [os.path.join(root, n) for n in names if n.endswith(".html")]
    pages.sort()
    for i, page in enumerate(pages[:2000]):
        os.symlink(page, os.path.join(folder, f"{i:04d}-{os.path.basename(page)}"))
    notes = os.path.join(OUT, "notes")
    shutil.rmtree(notes, ignore_errors=True)
    os.makedirs(notes)
    for name in ("ch16-01-threads.html", "ch04-01-what-is-ownership.html", "ch12-02-reading-a-file.html",
                 "ch18-02-trait-objects.html", "ch08-01-vectors.html", "ch08-02-strings.html"):
        shutil.copy(os.path.join(DOCS, "book", name), notes)
    shutil.rmtree(os.path.join(OUT, "sync-store"), ignore_errors=True)
    server = Server(os.path.join(OUT, "sync-store"))
    try:
        subprocess.run([HEARTH, "documents", "sync", notes, "--collection", "notes", "--url", server.url],
                       check=True, capture_output=True)
        rag_latencies(server.url, lambda: False, limit=6)  # warm
        idle = rag_latencies(server.url, lambda: False, limit=60)
        sync = subprocess.Popen([HEARTH, "documents", "sync", folder, "--collection", "std", "--url", server.url],
                                stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
        busy = rag_latencies(server.url, lambda: sync.poll() is not None)
        summary = sync.stderr.read().strip().splitlines()[-1]
        sync.wait()
        m = re.search(r"([\d.]+) files/s, ([\d.]+) chunks/s", summary)
        results["sync"] = {
            "idle_p50_ms": percentile(idle, 50), "idle_p95_ms": percentile(idle, 95),
            "busy_p50_ms": percentile(busy, 50), "busy_p95_ms": percentile(busy, 95),
            "ratio_p95": percentile(busy, 95) / percentile(idle, 95),
            "rag_requests_idle": len(idle), "rag_requests_busy": len(busy),
            "sync_summary": summary,
            "files_per_s": float(m.group(1)) if m else None, "chunks_per_s": float(m.group(2)) if m else None,
        }
        log("sync: " + summary)
    finally:
        server.stop()


def main():
    os.makedirs(OUT, exist_ok=True)
    parts = sys.argv[1:] or ["ingest", "collections", "sync"]
    results = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "reps": REPS}
    for part in parts:
        log(f"== {part}")
        {"ingest": study_ingest, "collections": study_collections, "sync": study_sync}[part](results)
        # After each part, so that a later part's failure keeps the earlier figures.
        log(json.dumps({part: results[part]}))
        with open(os.path.join(OUT, "results.json"), "w") as f:
            json.dump(results, f, indent=2)
    print("| measurement | figure |\n|---|---|")
    if "ingest" in results:
        r = results["ingest"]
        print(f"| the book as PDF ({r['pages']} pages) | {r['pdf_s']:.1f} s, {r['pdf_chunks']} chunks, "
              f"{r['pdf_chunks_per_s']:.0f} chunks/s |")
        print(f"| the same text as a text file | {r['text_s']:.1f} s, {r['text_chunks']} chunks, "
              f"{r['text_chunks_per_s']:.0f} chunks/s |")
        print(f"| PDF / text time | {r['ratio']:.2f}x (target <= 1.2x) |")
    if "collections" in results:
        r = results["collections"]
        print(f"| /search p50, one collection of 2,000 chunks | {r['alone_p50_ms']:.2f} ms |")
        print(f"| /search p50, the same beside 19 more | {r['beside_p50_ms']:.2f} ms ({r['ratio']:.2f}x; target <= 1.2x) |")
    if "sync" in results:
        r = results["sync"]
        print(f"| /rag p50 / p95, idle | {r['idle_p50_ms']:.0f} / {r['idle_p95_ms']:.0f} ms ({r['rag_requests_idle']} requests) |")
        print(f"| /rag p50 / p95, during a 2,000-file sync | {r['busy_p50_ms']:.0f} / {r['busy_p95_ms']:.0f} ms "
              f"({r['rag_requests_busy']} requests; p95 {r['ratio_p95']:.2f}x idle, target <= 2x) |")
        print(f"| the sync | {r['files_per_s']} files/s, {r['chunks_per_s']} chunks/s |")


if __name__ == "__main__":
    main()
