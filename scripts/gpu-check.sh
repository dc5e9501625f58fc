#!/usr/bin/env bash
# The GPU check: one prepared run on a machine with an NVIDIA GPU, inside
# 8 minutes. It runs
#   1. the CUDA unit tests (GPU against CPU on random-weight models),
#   2. the reference tests on the GPU (HEARTH_TEST_DEVICE=cuda), when the
#      real models are in models/ (the reference outputs are tests/fixtures/),
#   3. the speed table: hearth and PyTorch fp16 (same card, same shapes,
#      random weights) for LLM prompt/decode at the 135M, 1B and 8B llama
#      shapes and MiniLM embeddings at batch 32 and 256, plus bandwidth use,
#   4. start to /readyz with an empty and a warm CUDA JIT cache, and a server
#      smoke test (/documents, /rag, /v1/embeddings) on the GPU,
# then prints one table and writes gpu-check.json and gpu-check.md to $OUT
# (default target/gpu-check).
#
# Usage:
#   scripts/build-cuda.sh 90 --tests && scripts/gpu-check.sh --pack
#       here, on any machine: build, then bundle what the GPU machine needs
#       (binaries xz-compressed, a tokenizer template, MiniLM's config and
#       tokenizer, 1,024 passages) into target/gpu-bundle (about 30 MiB).
#   scripts/gpu-check.sh [--quick]
#       on the GPU machine, in the repo with target/gpu-bundle (or a
#       target/cuda build) present. --quick skips the 8B shape.
# Random-weight models are written on the GPU machine (hearth bench
# random-llm; a BERT from MiniLM's config via PyTorch), so no weights travel.
# The CUDA 13 libraries are taken from $CUDA_LIBS, target/cuda-toolkit, or
# python3's nvidia wheels (PyTorch's), in that order.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bundle=target/gpu-bundle
copy_binaries() { # into DIR: hearth, and test-<name> for each test binary of the CUDA build
  mkdir -p "$1"
  cp target/cuda/release/hearth "$1/hearth"
  while read -r name path; do cp "$path" "$1/test-$name"; done <target/cuda/test-binaries.txt
}

if [ "${1:-}" = "--pack" ]; then
  set -e
  [ -f target/cuda/test-binaries.txt ] || { echo "gpu-check: run scripts/build-cuda.sh --tests first" >&2; exit 1; }
  scripts/fetch-models.sh >/dev/null
  rm -rf "$bundle" && mkdir -p "$bundle/minilm" "$bundle/corpus"
  copy_binaries "$bundle/bin"
  strip "$bundle"/bin/*
  tar -C "$bundle" -cf - bin | xz -6 -T2 >"$bundle/bin.tar.xz"
  rm -rf "$bundle/bin"
  # The CUDA build cannot start without a driver: the CPU build writes the inputs.
  cargo run --quiet -- bench random-llm --shape tiny --dtype q8-0 --out "$bundle/template.gguf" >/dev/null
  cp models/minilm-l6-v2/{config.json,tokenizer.json,sentence_bert_config.json} "$bundle/minilm/"
  corpus=target/bench-peers/corpus
  [ -f "$corpus/texts.json" ] || corpus=target/gpu-corpus
  [ -f "$corpus/texts.json" ] || cargo run --quiet -- bench corpus --out "$corpus" \
    "$(rustc --print sysroot)/share/doc/rust/html/book" >/dev/null
  python3 - "$corpus" "$bundle/corpus" <<'EOF'
import json, sys
src, dst = sys.argv[1:]
texts = json.load(open(f"{src}/texts.json"))[:1024]
dim = len(open(f"{src}/vectors.f32", "rb").read()) // 4 // len(json.load(open(f"{src}/texts.json")))
json.dump(texts, open(f"{dst}/texts.json", "w"))
open(f"{dst}/vectors.f32", "wb").write(open(f"{src}/vectors.f32", "rb").read()[: len(texts) * dim * 4])
EOF
  du -sh "$bundle"
  exit 0
fi

quick=0
[ "${1:-}" = "--quick" ] && quick=1
out="${OUT:-target/gpu-check}"
work="${GPU_CHECK_WORK:-/tmp/hearth-gpu-check}"
mkdir -p "$out" "$work"
raw="$out/raw.jsonl"
: >"$raw"
started=$(date +%s)
note() { echo "gpu-check [$(($(date +%s) - started))s]: $*"; }
record() { # kind, JSON fields: one line of raw.jsonl
  echo "{\"check\": \"$1\", $2}" >>"$raw"
}

# Binaries: $GPU_CHECK_BIN (a folder with hearth and test-*), a local CUDA
# build, else the bundle. GPU_CHECK_DEVICE=cpu with a CPU build's binaries
# rehearses the script on a machine without a GPU.
device="${GPU_CHECK_DEVICE:-cuda}"
bin="${GPU_CHECK_BIN:-$work/bin}"
if [ -n "${GPU_CHECK_BIN:-}" ]; then
  :
elif [ -x target/cuda/release/hearth ] && [ -f target/cuda/test-binaries.txt ]; then
  copy_binaries "$bin"
elif [ -f "$bundle/bin.tar.xz" ]; then
  xz -dc "$bundle/bin.tar.xz" | tar -C "$work" -xf -
else
  echo "gpu-check: no CUDA build: run scripts/build-cuda.sh --tests (and --pack to carry it)" >&2
  exit 1
fi
hearth="$bin/hearth"

libs="${CUDA_LIBS:-}"
[ -z "$libs" ] && [ -d target/cuda-toolkit/nvidia/cu13/lib ] && libs="$PWD/target/cuda-toolkit/nvidia/cu13/lib"
[ -z "$libs" ] && libs=$(python3 -c 'import nvidia, os; print(os.path.join(list(nvidia.__path__)[0], "cu13", "lib"))' 2>/dev/null)
if [ ! -f "$libs/libcublas.so.13" ]; then
  found=$(find /usr /opt -name libcublas.so.13 2>/dev/null | head -1)
  [ -n "$found" ] && libs=$(dirname "$found")
fi
[ -d /usr/local/nvidia/lib64 ] && libs="$libs:/usr/local/nvidia/lib64"
export LD_LIBRARY_PATH="$libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
gpu=$(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null | head -1)
note "GPU: ${gpu:-none found}; CUDA libraries: $libs"
record machine "\"gpu\": \"$gpu\", \"cpus\": $(nproc), \"date\": \"$(date -u +%FT%TZ)\", \"commit\": \"$(git rev-parse --short HEAD 2>/dev/null)\""
if ! "$hearth" --version >/dev/null; then
  ldd "$hearth" | grep 'not found'
  echo "gpu-check: hearth does not start here (see the missing libraries above)" >&2
  exit 1
fi

# 1. CUDA unit tests. 2. Reference tests on the GPU.
export CUDA_CACHE_PATH="$work/jit-cache"
run_tests() { # name, binary, filters...
  local name="$1" binary="$2"; shift 2
  local t0=$SECONDS
  if timeout 300 "$binary" --test-threads 1 "$@" >"$out/$name.log" 2>&1; then status=passed; else status=failed; fi
  local summary
  summary=$(grep -E '^test result' "$out/$name.log" | tail -1)
  note "$name: $status ($summary)"
  record tests "\"name\": \"$name\", \"status\": \"$status\", \"summary\": \"$summary\", \"seconds\": $((SECONDS - t0))"
}
run_tests cuda-unit "$bin/test-lib" cuda
run_tests cuda-kernels "$bin/test-hearth_kernels" cuda
if [ -f models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf ] && [ -f tests/fixtures/llm-reference.json ] && [ -x "$bin/test-e2e" ]; then
  HEARTH_TEST_DEVICE="$device" HEARTH_TEST_REPO="$PWD" run_tests reference "$bin/test-e2e" llm:: embedder::
else
  note "reference tests not run: they need models/ (scripts/fetch-models.sh) and tests/fixtures/ on this machine"
  record tests '"name": "reference", "status": "not run: models or tests/fixtures absent"'
fi

# 3. Models for the speed runs: random weights of real shapes.
template=models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf
[ -f "$template" ] || template="$bundle/template.gguf"
shapes="smollm2-135m:q4-1 llama1b:q4-1 llama1b:q8-0"
[ "$quick" = 0 ] && shapes="$shapes llama8b:q4-1"
shapes="${GPU_CHECK_SHAPES:-$shapes}"
for s in $shapes; do
  "$hearth" bench random-llm --template "$template" --shape "${s%%:*}" --dtype "${s##*:}" \
    --out "$work/${s%%:*}-${s##*:}.gguf" >/dev/null || note "random-llm $s failed"
done
minilm="$work/minilm"
if [ -f models/minilm-l6-v2/model.safetensors ]; then
  minilm=models/minilm-l6-v2
else
  mkdir -p "$minilm" && cp "$bundle"/minilm/* "$minilm/"
  python3 -c "
import torch, transformers
cfg = transformers.BertConfig.from_json_file('$minilm/config.json')
torch.manual_seed(0)
transformers.BertModel(cfg, add_pooling_layer=False).save_pretrained('$minilm')" >/dev/null 2>&1 ||
    note "random MiniLM weights could not be written"
  cp "$bundle"/minilm/config.json "$minilm/config.json"
fi
corpus="$bundle/corpus"
[ -f "$corpus/texts.json" ] || corpus=target/bench-peers/corpus
note "models ready: $(ls "$work"/*.gguf 2>/dev/null | xargs -n1 basename | tr '\n' ' ')"

# 4a. Cold start: the first start with an empty JIT cache, then a warm one.
port=18931
readyz() { # label: start `hearth serve` on the GPU, time it to /readyz, leave it running
  local data="$work/data-$1"
  rm -rf "$data"
  local t0
  t0=$(date +%s.%N)
  "$hearth" --device "$device" serve --listen "127.0.0.1:$port" --data-dir "$data" --embedder "$minilm" \
    --rag-generator "$work/smollm2-135m-q4-1.gguf" --fine-tuned "$work/smollm2-135m-q4-1.gguf" \
    >"$out/serve-$1.log" 2>&1 &
  server=$!
  python3 - "$port" "$t0" "$1" >>"$raw" <<'EOF'
import json, sys, time, urllib.request
port, t0, label = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
deadline = time.time() + 120
while time.time() < deadline:
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1)
        print(json.dumps({"check": "readyz", "label": label, "seconds": time.time() - t0}))
        break
    except Exception:
        time.sleep(0.05)
else:
    print(json.dumps({"check": "readyz", "label": label, "error": "not ready in 120 s"}))
EOF
}
rm -rf "$CUDA_CACHE_PATH"
readyz cold
# The first requests compile the kernels they use (PTX JIT) on a cold cache.
python3 - "$port" >>"$raw" <<'EOF'
import json, sys, time, urllib.error, urllib.request
port = int(sys.argv[1])
def post(path, body):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", json.dumps(body).encode(),
                                 {"content-type": "application/json"})
    t = time.time()
    with urllib.request.urlopen(req, timeout=120) as r:
        return r.status, json.loads(r.read()), time.time() - t
res = {"check": "smoke"}
try:
    s, d, secs = post("/documents", [{"id": f"doc{i}", "text": f"Section {i}. Deploys go out on Tuesdays; rollbacks take {i} minutes."} for i in range(20)])
    res["documents"] = s
    s, d, secs = post("/rag", {"question": "When do deploys go out?", "top_k": 3, "max_tokens": 32})
    res["rag_first"] = {"status": s, "sources": len(d["sources"]), "tokens": d["usage"]["completion_tokens"], "seconds": secs}
    s, d, secs = post("/rag", {"question": "How long does a rollback take?", "top_k": 3, "max_tokens": 64, "temperature": 0})
    res["rag"] = {"status": s, "sources": len(d["sources"]), "tokens": d["usage"]["completion_tokens"],
                  "ttft_ms": d["timings"]["ttft_ms"], "total_ms": d["timings"]["total_ms"], "tokens_per_s": d["timings"]["tokens_per_s"]}
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=10) as r:
        embedder = next(m["id"] for m in json.loads(r.read())["data"] if "minilm" in m["id"])
    s, d, secs = post("/v1/embeddings", {"model": embedder, "input": ["first text", "second text"]})
    res["embeddings"] = {"status": s, "vectors": len(d["data"]), "dim": len(d["data"][0]["embedding"])}
    res["ok"] = res["documents"] in (200, 201) and res["rag"]["sources"] > 0 and res["embeddings"]["dim"] == 384
except urllib.error.HTTPError as e:
    res["ok"] = False
    res["error"] = f"{e.code} {e.read()[:300]!r}"
except Exception as e:
    res["ok"] = False
    res["error"] = repr(e)
print(json.dumps(res))
EOF
kill "$server" 2>/dev/null; wait "$server" 2>/dev/null
readyz warm
kill "$server" 2>/dev/null; wait "$server" 2>/dev/null
note "start and smoke test done"

# 3b. Speed: hearth, then PyTorch, per shape.
speed() { # label, command...: one JSON line from the command, tagged
  local label="$1"; shift
  local line
  if line=$(timeout 240 "$@" 2>>"$out/speed.log" | tail -1) && [ -n "$line" ]; then
    echo "{\"check\": \"speed\", \"label\": \"$label\", \"result\": $line}" >>"$raw"
  else
    echo "{\"check\": \"speed\", \"label\": \"$label\", \"error\": \"failed, see speed.log\"}" >>"$raw"
  fi
}
for b in 32 256; do
  speed "hearth embed b$b" "$hearth" --device "$device" bench embed --embedder "$minilm" --corpus "$corpus" --batch "$b" --passages 1024
  speed "pytorch embed b$b" python3 scripts/peers/gpu_torch.py --device "$device" embed --model "$minilm" --corpus "$corpus" --batch "$b"
done
torch_done=""
for s in $shapes; do # the largest last: a run cut short keeps the others
  shape="${s%%:*}" model="$work/${s%%:*}-${s##*:}.gguf"
  [ -f "$model" ] || continue
  gen=128
  [ "$shape" = llama8b ] && gen=32
  for p in 128 512; do
    speed "hearth $s p$p" "$hearth" --device "$device" bench llm --llm "$model" --prompt-tokens "$p" --gen-tokens "$gen"
  done
  echo "{\"check\": \"file\", \"label\": \"$s\", \"bytes\": $(stat -c %s "$model")}" >>"$raw"
  case " $torch_done " in *" $shape "*) continue ;; esac
  torch_done="$torch_done $shape"
  for p in 128 512; do
    speed "pytorch $shape p$p" python3 scripts/peers/gpu_torch.py --device "$device" llm --shape "$shape" \
      --prompt-tokens "$p" --gen-tokens 32 --reps 2
  done
done
note "speed runs done"

python3 scripts/peers/gpu_report.py "$raw" "$out"
note "wrote $out/gpu-check.json and $out/gpu-check.md"
