"""Aggregate bench-peers' raw runs into results.json and a Markdown table.

Usage: report.py RAW.jsonl RESULTS.json RESULTS.md
Each raw line is one measurement (hearth's or a peer's); the report gives
medians per (metric, threads) and the ratio hearth / peer, with the target
the issue sets and whether it is met. Ratios above 1 mean hearth is faster,
except for latency, where the ratio is hearth's time over the peer's.
"""
import json
import platform
import statistics
import sys
from collections import defaultdict

raw_path, json_path, md_path = sys.argv[1:4]
rows = [json.loads(line) for line in open(raw_path, encoding="utf-8") if line.strip()]
values = defaultdict(list)  # (kind, metric, threads, extra, peer) -> [value]
recall = defaultdict(list)
build = defaultdict(list)
memory = defaultdict(list)  # (base, side) -> resident bytes per vector
for r in rows:
    side = "hearth" if r["peer"] == "hearth" else "peer"
    t = r["threads"]
    if r["kind"] == "llm":
        # One row per model file (SmolLM2 Q4_1 by default; the K-quant files).
        model = r.get("model", "SmolLM2-135M-Instruct.Q4_1")
        values[("llm", f"prompt tok/s, {model}", t, r["prompt_tokens"], side)].append(r["pp_tok_s"])
        if r["gen_tokens"] >= 16:  # the 512-token prompt runs decode one token
            values[("llm", f"decode tok/s, {model}", t, r["gen_tokens"], side)].append(r["tg_tok_s"])
    elif r["kind"] == "drafts":
        # Both sides in one line: drafting (hearth) against plain decoding.
        metric = f"decode tok/s on RAG answers, {r.get('model', 'SmolLM2-135M-Instruct.Q4_1')}"
        values[("drafts", metric, t, r["max_tokens"], "hearth")].append(r["draft_tg_tok_s"])
        values[("drafts", metric, t, r["max_tokens"], "peer")].append(r["plain_tg_tok_s"])
    elif r["kind"] == "embed":
        values[("embed", "texts/s", t, r["batch"], side)].append(r["texts_per_s"])
        if r["batch"] == 1:
            values[("embed", "query ms", t, 1, side)].append(r["query_ms"])
    elif r["kind"] == "hnsw":
        # One curve per index size (the Rust-docs vectors, the 100k set).
        base = r["base"]
        build[(base, side)].append(r["build_s"])
        if "rss_bytes_per_vector" in r:
            memory[(base, side)].append(r["rss_bytes_per_vector"])
        for p in r["curve"]:
            values[("hnsw", f"queries/s, {base:,} vectors", 1, p["ef"], side)].append(p["queries_per_s"])
            recall[(base, p["ef"], side)].append(p["recall_at_10"])

peers = {"llm": "llama.cpp", "drafts": "plain decoding", "embed": "sentence-transformers",
         "hnsw": "hnswlib"}
med = statistics.median
# Per index size, the ef_search the HNSW target is judged at: the smallest
# where both reach recall@10 0.95.
sizes = sorted({k[0] for k in recall})
target_ef = {}
for base in sizes:
    efs = sorted({k[1] for k in recall if k[0] == base})
    target_ef[base] = next((ef for ef in efs
                            if recall[(base, ef, "hearth")] and recall[(base, ef, "peer")]
                            and med(recall[(base, ef, "hearth")]) >= 0.95
                            and med(recall[(base, ef, "peer")]) >= 0.95), None)


def base_of(metric):
    return int(metric.split(", ")[1].split(" ")[0].replace(",", ""))


def target(kind, metric, extra):
    if kind == "llm":
        return 1.0
    if kind == "drafts":
        return 1.3
    if kind == "embed" and metric == "texts/s" and extra == 32:
        return 1.2
    if kind == "embed" and metric == "query ms":
        return 1.0
    if kind == "hnsw" and extra == target_ef.get(base_of(metric)):
        return 1.15
    return None


table = []
for key in sorted({k[:4] for k in values}, key=lambda k: (list(peers).index(k[0]), k[1], k[2], k[3])):
    kind, metric, t, extra = key
    h, p = values[key + ("hearth",)], values[key + ("peer",)]
    if not h or not p:
        continue
    hm, pm = med(h), med(p)
    latency = metric.endswith("ms")
    ratio = hm / pm
    goal = target(kind, metric, extra)
    met = None if goal is None else (ratio <= goal if latency else ratio >= goal)
    row = {"kind": kind, "peer": peers[kind], "metric": metric, "threads": t,
           "hearth": hm, "peer_value": pm, "ratio": ratio, "runs": min(len(h), len(p)),
           "target": goal, "met": met}
    if kind in ("llm", "drafts"):
        row["tokens"] = extra
    elif kind == "embed":
        row["batch"] = extra
    else:
        base = base_of(metric)
        row["ef"] = extra
        row["base"] = base
        row["recall_hearth"] = med(recall[(base, extra, "hearth")])
        row["recall_peer"] = med(recall[(base, extra, "peer")])
    table.append(row)

result = {
    "machine": {"cpu": platform.processor() or platform.machine(), "python": platform.python_version()},
    "hnsw_target_ef": {str(b): ef for b, ef in target_ef.items()},
    "hnsw_build_s": {f"{b} {side}": med(v) for (b, side), v in build.items()},
    "hnsw_rss_bytes_per_vector": {f"{b} {side}": med(v) for (b, side), v in memory.items()},
    "rows": table,
}
json.dump(result, open(json_path, "w", encoding="utf-8"), indent=2)


def fmt(x):
    return f"{x:.3g}" if abs(x) < 100 else f"{x:.0f}"


lines = ["| what | peer | threads | hearth | peer | hearth / peer | target | met |",
         "|---|---|---:|---:|---:|---:|---:|:---:|"]
for r in table:
    if r["kind"] == "llm":
        what = f"LLM {r['metric']} ({r['tokens']} tokens)"
    elif r["kind"] == "drafts":
        what = f"prompt-lookup decoding, {r['metric']} (up to {r['tokens']} tokens)"
    elif r["kind"] == "embed":
        what = "embed query latency, ms" if r["metric"] == "query ms" else f"embed texts/s, batch {r['batch']}"
    else:
        what = f"HNSW {r['metric']}, ef {r['ef']} (recall@10 {r['recall_hearth']:.3f} / {r['recall_peer']:.3f})"
    goal = "" if r["target"] is None else (f"<= {r['target']:.2f}x" if r["metric"].endswith("ms") else f">= {r['target']:.2f}x")
    met = "" if r["met"] is None else ("yes" if r["met"] else "**no**")
    lines.append(f"| {what} | {r['peer']} | {r['threads']} | {fmt(r['hearth'])} | {fmt(r['peer_value'])} "
                 f"| {r['ratio']:.2f}x | {goal} | {met} |")
for base in sizes:
    hb = med(build.get((base, "hearth"), [float("nan")]))
    pb = med(build.get((base, "peer"), [float("nan")]))
    met = "yes" if hb / pb <= 1.5 else "**no**"
    lines.append(f"| HNSW build, s, {base:,} vectors | hnswlib | all | {hb:.2f} | {pb:.2f} | {hb / pb:.2f}x | <= 1.5x | {met} |")
    hm, pm = memory.get((base, "hearth")), memory.get((base, "peer"))
    if hm and pm:
        lines.append(f"| HNSW memory, bytes per vector (resident), {base:,} vectors | hnswlib | all "
                     f"| {med(hm):.0f} | {med(pm):.0f} | {med(hm) / med(pm):.2f}x | | |")
runs = min((r["runs"] for r in table), default=0)
lines.append("")
lines.append(f"Medians of {runs} alternating runs each. Ratios are hearth / peer "
             "(higher is better, except latency and build time, where lower is).")
open(md_path, "w", encoding="utf-8").write("\n".join(lines) + "\n")
