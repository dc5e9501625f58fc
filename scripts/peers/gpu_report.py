"""`scripts/gpu-check.sh`'s report: raw.jsonl in, gpu-check.json and
gpu-check.md out, and the table on stdout. Ratios are hearth / PyTorch
(same card, same shapes, same run); bandwidth use is the weights' bytes read
per decoded token over time per token, against the card's datasheet figure
(4.8 TB/s for an H200, or $GPU_BANDWIDTH_TBS)."""
import json
import os
import sys

raw, out = sys.argv[1:]
rows = [json.loads(line) for line in open(raw) if line.strip()]
bandwidth = float(os.environ.get("GPU_BANDWIDTH_TBS", "4.8")) * 1e12
speed = {r["label"]: r.get("result") for r in rows if r["check"] == "speed"}
files = {r["label"]: r["bytes"] for r in rows if r["check"] == "file"}
machine = next((r for r in rows if r["check"] == "machine"), {})
lines = [f"GPU: {machine.get('gpu', '?')}, {machine.get('date', '?')}, commit {machine.get('commit', '?')}", ""]


def fmt(x, unit=""):
    return "-" if x is None else (f"{x:,.0f}{unit}" if x >= 100 else f"{x:,.2f}{unit}")


def ratio(a, b):
    return "-" if a is None or b is None or b == 0 else f"{a / b:.2f}x"


lines += ["| check | result |", "| --- | --- |"]
for r in rows:
    if r["check"] == "tests":
        lines.append(f"| {r['name']} tests | {r['status']} {r.get('summary', '')} |")
for r in rows:
    if r["check"] == "readyz":
        what = fmt(r["seconds"], " s") if "seconds" in r else r["error"]
        lines.append(f"| start to /readyz, {r['label']} JIT cache | {what} |")
smoke = next((r for r in rows if r["check"] == "smoke"), None)
if smoke:
    if smoke.get("ok"):
        rag = smoke["rag"]
        lines.append(f"| smoke: /documents, /rag, /v1/embeddings | ok; first /rag {fmt(smoke['rag_first']['seconds'], ' s')} "
                     f"(cold kernels); then {rag['tokens']} tokens in {fmt(rag['total_ms'], ' ms')}, "
                     f"first token {fmt(rag['ttft_ms'], ' ms')}, {fmt(rag['tokens_per_s'])} tok/s |")
    else:
        lines.append(f"| smoke: /documents, /rag, /v1/embeddings | FAILED {smoke.get('error', smoke)} |")

lines += ["", "| LLM (random weights) | prompt 128 tok/s | prompt 512 tok/s | decode tok/s | PyTorch fp16 prompt 128 / 512 | PyTorch decode | prompt 512 ratio | decode ratio | decode bandwidth |",
          "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
torch_shape = {"smollm2-135m": "smollm2-135m", "llama1b": "llama1b", "llama8b": "llama8b"}
for label in sorted({k.split(" ")[1] for k in speed if k.startswith("hearth ") and ":" in k}):
    shape = label.split(":")[0]
    h128, h512 = speed.get(f"hearth {label} p128"), speed.get(f"hearth {label} p512")
    t128, t512 = speed.get(f"pytorch {torch_shape[shape]} p128"), speed.get(f"pytorch {torch_shape[shape]} p512")
    get = lambda d, k: None if not d else d.get(k)
    decode = get(h128, "tg_tok_s")
    bw = f"{files[label] * decode / bandwidth * 100:.1f}%" if decode and label in files else "-"
    lines.append(f"| {label} | {fmt(get(h128, 'pp_tok_s'))} | {fmt(get(h512, 'pp_tok_s'))} | {fmt(decode)} | "
                 f"{fmt(get(t128, 'pp_tok_s'))} / {fmt(get(t512, 'pp_tok_s'))} | {fmt(get(t128, 'tg_tok_s'))} | "
                 f"{ratio(get(h512, 'pp_tok_s'), get(t512, 'pp_tok_s'))} | {ratio(decode, get(t128, 'tg_tok_s'))} | {bw} |")

lines += ["", "| MiniLM embeddings | hearth texts/s | PyTorch fp16 texts/s | ratio | hearth query ms | PyTorch query ms |",
          "| --- | ---: | ---: | ---: | ---: | ---: |"]
for b in (32, 256):
    h, t = speed.get(f"hearth embed b{b}") or {}, speed.get(f"pytorch embed b{b}") or {}
    lines.append(f"| batch {b} ({h.get('texts', '?')} passages) | {fmt(h.get('texts_per_s'))} | {fmt(t.get('texts_per_s'))} | "
                 f"{ratio(h.get('texts_per_s'), t.get('texts_per_s'))} | {fmt(h.get('query_ms'))} | {fmt(t.get('query_ms'))} |")
failed = [k for k, v in speed.items() if v is None]
if failed:
    lines += ["", "Failed runs (see speed.log): " + ", ".join(failed)]

table = "\n".join(lines)
print(table)
open(os.path.join(out, "gpu-check.md"), "w").write(table + "\n")
json.dump(rows, open(os.path.join(out, "gpu-check.json"), "w"), indent=1)
