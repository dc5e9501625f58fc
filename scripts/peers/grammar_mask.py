"""The peer of `hearth bench grammar`: outlines-core (the other Rust engine
the structured-outputs issue names, through its Python bindings) on hearth's
default vocabulary (SmolLM2, 49,152 tokens) and the same person schema:
the index's build time, and per-token mask time along a given output
(compact JSON: outlines' schema regex allows single spaces only).

    python -m venv target/oc && target/oc/bin/pip install outlines-core==0.2.14 gguf==0.19.0 numpy==2.4.6
    target/oc/bin/python scripts/peers/grammar_mask.py MODEL.gguf '{"name": "Jordan", "age": 25, "languages": ["Python", "JavaScript", "Java"]}'
"""
import json, sys, time
import gguf
from outlines_core import Vocabulary, Index, Guide
from outlines_core.json_schema import build_regex_from_schema

path = sys.argv[1]
text = sys.argv[2]
r = gguf.GGUFReader(path)
tokens = r.fields["tokenizer.ggml.tokens"].contents()
types = r.fields["tokenizer.ggml.token_type"].contents()
eos = r.fields["tokenizer.ggml.eos_token_id"].contents()
bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
cs = bs[:]; n = 0
for b in range(256):
    if b not in bs:
        bs.append(b); cs.append(256 + n); n += 1
dec = {chr(c): b for b, c in zip(bs, cs)}
vocab = {}
for i, (t, k) in enumerate(zip(tokens, types)):
    if k != 1 or i == eos:
        continue
    try:
        b = bytes(dec[c] for c in t)
    except KeyError:
        continue
    vocab.setdefault(b, []).append(i)
schema = {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer", "minimum": 0},
          "languages": {"type": "array", "items": {"type": "string"}, "maxItems": 3}},
          "required": ["name", "age", "languages"], "additionalProperties": False}
regex = build_regex_from_schema(json.dumps(schema))
t = time.perf_counter(); v = Vocabulary(eos, vocab); vb = time.perf_counter() - t
t = time.perf_counter(); index = Index(regex, v); build = time.perf_counter() - t
guide = Guide(index)
by_id = {i: b for b, ids in vocab.items() for i in ids}
rest = text.encode()
times = []
while rest:
    t = time.perf_counter(); allowed = guide.get_tokens(); times.append((time.perf_counter() - t) * 1e6)
    best = max((by_id[i] for i in allowed if i in by_id and rest.startswith(by_id[i])), key=len, default=None)
    if best is None:
        break
    guide.advance(vocab[best][0]); rest = rest[len(best):]
times.sort()
print(json.dumps({"engine": "outlines-core 0.2.14", "vocabulary_ms": vb * 1e3, "index_build_ms": build * 1e3,
                  "steps": len(times), "mask_us_p50": times[len(times) // 2], "mask_us_p95": times[int(len(times) * 0.95)],
                  "mask_us_mean": sum(times) / len(times), "regex_chars": len(regex)}))
