#!/usr/bin/env bash
# A real run of the rendered Kubernetes YAML on a real engine, with no
# cluster: `podman kube play` runs the per-model topology that
# `hearth deploy kubernetes --replicas generate=2` renders, with the image
# scripts/build-image.sh builds and the default models mounted read-only
# from models/. Then, through the front doors:
#
#   1. greedy /rag and /fine-tuned answers equal a unified server's;
#   2. 8 concurrent /rag clients: each of the two rag-generator replicas
#      serves 40-60% of the generations (from their /metrics);
#   3. one rag-generator container is killed under that load: at most the
#      questions in flight on it fail, and the next ones are all answered;
#
# and tears everything down. Prints its figures; exits non-zero on a miss.
# Needs root (podman, a bridge network). scripts/kube_play.py says what is
# changed for podman (Deployments become Pods, Services become hostAliases).
#
#   scripts/kube-play.sh      (about 2 minutes once the image is built)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/container-env.sh >/dev/null
scripts/python-env.sh >/dev/null
scripts/fetch-models.sh >/dev/null
python=target/py-venv/bin/python
net=hearth-kube-play
prefix=10.89.77
key=kube-play-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')
work=target/kube-play
rendered=$work/rendered

scripts/build-image.sh --no-models
cargo build --release --quiet --bin hearth
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)

teardown() {
  podman kube play --down "$work/play.yaml" >/dev/null 2>&1 || true
  podman volume rm -f hearth-data >/dev/null 2>&1 || true
  podman network rm -f "$net" >/dev/null 2>&1 || true
  if [ -n "${unified:-}" ]; then kill "$unified" 2>/dev/null || true; fi
}
trap teardown EXIT
teardown
rm -rf "$work" && mkdir -p "$work"
target/release/hearth deploy kubernetes --config hearth.toml --topology per-model \
  --replicas generate=2 --models-host-path "$PWD/models" --api-key "$key" \
  --image "localhost/hearth:$version" --out "$rendered" >/dev/null
"$python" scripts/kube_play.py "$rendered" "$prefix" "$work/play.yaml" >"$work/pods"
podman network create --subnet "$prefix.0/24" "$net" >/dev/null
ips=$(awk '{printf " --ip %s", $2}' "$work/pods")
started=$(date +%s.%N)
# shellcheck disable=SC2086
podman kube play --network "$net" $ips "$work/play.yaml" >/dev/null 2>"$work/play.log"

# A unified server on loopback, for the greedy answers to compare with.
env -u HEARTH_API_KEYS target/release/hearth serve --listen 127.0.0.1:18480 \
  --data-dir "$work/unified-data" >"$work/unified.log" 2>&1 &
unified=$!

"$python" - "$work/pods" "$key" "$started" <<'EOF'
import json, subprocess, sys, threading, time, urllib.request, urllib.error

pods = dict(line.split() for line in open(sys.argv[1]))
key, started = sys.argv[2], float(sys.argv[3])
auth = {"authorization": f"Bearer {key}", "content-type": "application/json"}

def call(url, body=None, headers=auth, timeout=120):
    request = urllib.request.Request(url, data=None if body is None else json.dumps(body).encode(),
                                     headers=headers, method="GET" if body is None else "POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except OSError as e:
        return 0, str(e)

def wait_ready(base, name):
    while time.time() - started < 300:
        if call(f"{base}/readyz", headers={})[0] == 200:
            return time.time() - started
        time.sleep(0.05)
    sys.exit(f"{name} did not become ready")

ready = {name: wait_ready(f"http://{ip}:8080", name) for name, ip in pods.items()}
for name, s in ready.items():
    print(f"kube-play: {name} ready {s:.2f} s after `podman kube play` began")
wait_ready("http://127.0.0.1:18480", "the unified server")
rag = f"http://{pods['hearth-rag-0']}:8080"
fine_tuned = f"http://{pods['hearth-fine-tuned-0']}:8080"
unified = "http://127.0.0.1:18480"
docs = {"documents": [
    {"id": "france", "text": "Paris is the capital of France. The Seine flows through Paris."},
    {"id": "hearth", "text": "hearth runs models locally, offline, on the CPU or a GPU."}]}
for base in (rag, unified):
    status, body = call(f"{base}/documents", docs, headers=auth if base == rag else {"content-type": "application/json"})
    assert status in (200, 201), body
question = {"question": "What is the capital of France?", "max_tokens": 24}
prompt = {"prompt": "The three largest cities of France are", "max_tokens": 24}
plain = {"content-type": "application/json"}
for path, body, base in (("/rag", question, rag), ("/fine-tuned", prompt, fine_tuned)):
    status, got = call(f"{base}{path}", body)
    status2, want = call(f"{unified}{path}", body, headers=plain)
    assert status == status2 == 200, (got, want)
    got_text = json.loads(got).get("answer") or json.loads(got).get("text")
    want_text = json.loads(want).get("answer") or json.loads(want).get("text")
    assert got_text and got_text == want_text, f"{path}: {got_text!r} != unified {want_text!r}"
    print(f"kube-play: {path} greedy answer equals the unified server's: {got_text!r}")

def completed(ip):
    status, text = call(f"http://{ip}:8080/metrics")
    for line in text.splitlines():
        if line.startswith('hearth_generations_total{outcome="completed"}'):
            return float(line.split()[-1])
    return 0.0

generators = [n for n in pods if n.startswith("hearth-rag-generator-")]
before = {n: completed(pods[n]) for n in generators}
results = []
def client(n):
    for _ in range(n):
        results.append(call(f"{rag}/rag", question)[0])
threads = [threading.Thread(target=client, args=(10,)) for _ in range(8)]
began = time.time()
for t in threads: t.start()
for t in threads: t.join()
took = time.time() - began
served = {n: completed(pods[n]) - before[n] for n in generators}
total = sum(served.values())
print(f"kube-play: 8 clients, 80 /rag questions in {took:.1f} s ({80 / took:.1f} req/s), all 200: {results.count(200) == 80}")
ok = results.count(200) == 80
for n, s in served.items():
    share = s / total if total else 0
    print(f"kube-play: {n} served {s:.0f} of {total:.0f} generations ({share:.0%})")
    ok &= 0.4 <= share <= 0.6

# Kill one replica under load.
results.clear()
threads = [threading.Thread(target=client, args=(8,)) for _ in range(8)]
for t in threads: t.start()
time.sleep(1.0)
status, topo = call(f"{rag}/topology")
victim = pods["hearth-rag-generator-1"]
on_it = next(r["in_flight"] for p in json.loads(topo)["processes"] if p["name"] == "rag-generator"
             for r in p["replicas"] if victim in r["url"])
subprocess.run(["podman", "kill", "hearth-rag-generator-1-hearth"], check=True, capture_output=True)
for t in threads: t.join()
lost = len(results) - results.count(200)
print(f"kube-play: killed hearth-rag-generator-1 with {on_it} questions in flight on it: {lost} of {len(results)} questions failed")
ok &= lost <= on_it
after = [call(f"{rag}/rag", question)[0] for _ in range(10)]
print(f"kube-play: the next 10 questions: {after.count(200)} answered")
ok &= after.count(200) == 10
sys.exit(0 if ok else "kube-play: a target was missed (above)")
EOF
echo "kube-play: image localhost/hearth:$version, $(podman image inspect "localhost/hearth:$version" --format '{{.Size}}' | awk '{printf "%.1f MB", $1/1e6}')"
