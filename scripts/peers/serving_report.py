"""scripts/bench-serving.sh's report: results.jsonl (one line per server per
load level, from serve_load.py) in; results.md (the table, with hearth /
llama-server ratios) and serving.svg (requests/s, time to first token and
inter-token latency against concurrent clients, a line per server) out."""
import json
import sys

raw, out = sys.argv[1:]
rows = [json.loads(line) for line in open(raw) if line.strip()]
servers = ["hearth", "llama-server"]
by = {(r["label"], r["clients"]): r for r in rows}
clients = sorted({r["clients"] for r in rows})


def f(x, digits=0):
    return "-" if x is None else f"{x:,.{digits}f}"


def ratio(a, b):
    return "-" if not a or not b else f"{a / b:.2f}x"


lines = [
    "| clients | server | req/s | completion tok/s | p50 / p95 ms | TTFT p50 / p95 ms | inter-token p50 / p95 ms | errors |",
    "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
]
for c in clients:
    for s in servers:
        r = by.get((s, c))
        if not r:
            continue
        lines.append(f"| {c} | {s} | {f(r['req_s'], 2)} | {f(r['tok_s'])} | {f(r['p50_ms'])} / {f(r['p95_ms'])} | "
                     f"{f(r['ttft_p50_ms'])} / {f(r['ttft_p95_ms'])} | {f(r['itl_p50_ms'], 1)} / {f(r['itl_p95_ms'], 1)} | {r['errors']} |")
lines += ["", "| clients | req/s, hearth / llama-server | p95, llama-server / hearth | TTFT p50 / p95, llama-server / hearth | hearth tok/s vs its 1 client |", "| ---: | ---: | ---: | ---: | ---: |"]
one = by.get(("hearth", clients[0])) if clients else None
for c in clients:
    h, l = by.get(("hearth", c)), by.get(("llama-server", c))
    if not h or not l:
        continue
    lines.append(f"| {c} | {ratio(h['req_s'], l['req_s'])} | {ratio(l['p95_ms'], h['p95_ms'])} | "
                 f"{ratio(l['ttft_p50_ms'], h['ttft_p50_ms'])} / {ratio(l['ttft_p95_ms'], h['ttft_p95_ms'])} | "
                 f"{ratio(h['tok_s'], one['tok_s'] if one else None)} |")
table = "\n".join(lines)
print(table)
open(f"{out}/results.md", "w").write(table + "\n")

# The chart: three panels side by side, clients on a linear axis with
# integer ticks, a line per server (solid p50, dashed p95 where there are two).
W, H, PAD = 300, 230, 46
colors = {"hearth": "#c0392b", "llama-server": "#2c3e50"}
panels = [
    ("requests/s", [("req_s", "")]),
    ("time to first token (ms)", [("ttft_p50_ms", ""), ("ttft_p95_ms", "5,4")]),
    ("inter-token latency (ms)", [("itl_p50_ms", ""), ("itl_p95_ms", "5,4")]),
]
svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{3 * W}" height="{H + 40}" font-family="sans-serif" font-size="11">',
       f'<rect width="{3 * W}" height="{H + 40}" fill="white"/>']
cmax = max(clients) if clients else 1
for p, (title, series) in enumerate(panels):
    x0 = p * W
    vals = [by[(s, c)][k] for s in servers for c in clients for k, _ in series if (s, c) in by and by[(s, c)][k] is not None]
    vmax = max(vals) * 1.1 if vals else 1
    px = lambda c: x0 + PAD + (c / cmax) * (W - PAD - 14)
    py = lambda v: H - PAD + 20 - (v / vmax) * (H - PAD - 10)
    svg.append(f'<text x="{x0 + W / 2}" y="14" text-anchor="middle" font-weight="bold">{title}</text>')
    svg.append(f'<line x1="{px(0)}" y1="{py(0)}" x2="{px(cmax)}" y2="{py(0)}" stroke="#333"/>')
    svg.append(f'<line x1="{px(0)}" y1="{py(0)}" x2="{px(0)}" y2="{py(vmax)}" stroke="#333"/>')
    for c in clients:
        svg.append(f'<text x="{px(c)}" y="{py(0) + 14}" text-anchor="middle">{c}</text>')
    for i in range(5):
        v = vmax * i / 4
        svg.append(f'<text x="{px(0) - 4}" y="{py(v) + 4}" text-anchor="end">{v:,.0f}</text>')
        svg.append(f'<line x1="{px(0)}" y1="{py(v)}" x2="{px(cmax)}" y2="{py(v)}" stroke="#ddd" stroke-width="0.5"/>')
    svg.append(f'<text x="{x0 + W / 2}" y="{H + 30}" text-anchor="middle">concurrent clients</text>')
    for s in servers:
        for k, dash in series:
            pts = [(px(c), py(by[(s, c)][k])) for c in clients if (s, c) in by and by[(s, c)][k] is not None]
            if pts:
                d = " ".join(f"{x:.1f},{y:.1f}" for x, y in pts)
                svg.append(f'<polyline points="{d}" fill="none" stroke="{colors[s]}" stroke-width="2" stroke-dasharray="{dash}"/>')
                for x, y in pts:
                    svg.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2.5" fill="{colors[s]}"/>')
for i, s in enumerate(servers):
    svg.append(f'<rect x="{PAD + i * 110}" y="{H + 14}" width="12" height="3" fill="{colors[s]}"/>')
    svg.append(f'<text x="{PAD + 16 + i * 110}" y="{H + 19}">{s}</text>')
svg.append(f'<text x="{3 * W - 10}" y="{H + 19}" text-anchor="end">solid p50, dashed p95</text>')
svg.append("</svg>")
open(f"{out}/serving.svg", "w").write("\n".join(svg) + "\n")
