#!/usr/bin/env bash
# Build hearth's OCI images with podman, from a fresh clone, with no
# container registry: the image is `FROM scratch` and holds only the release
# binary (stripped), the shared libraries it links (from this Debian
# machine: libc, libm, libgcc_s and the loader), CA certificates, a passwd
# entry for the non-root user 10001, and empty /data, /models and /tmp.
#
#   scripts/build-image.sh            localhost/hearth:VERSION and :VERSION-models
#   scripts/build-image.sh --no-models   only localhost/hearth:VERSION
#   scripts/build-image.sh --check       also run it: start to /readyz (the
#                                        models on disk, mounted read-only),
#                                        a RAG answer, and SIGTERM to exit
#
# The -models tag adds the default models (scripts/fetch-models.sh) under
# /models, for offline demos. Prints each image's size. Runs
# scripts/container-env.sh first (podman, runc, ulimits).
#
# Run it:
#   podman run --rm -p 8080:8080 -e HEARTH_API_KEYS=<a long key> \
#     -v hearth-data:/data localhost/hearth:VERSION-models
# (the image listens on 0.0.0.0:8080, so hearth asks for a key; set
# HEARTH_ALLOW_UNAUTHENTICATED=true to go without). A config file mounts at
# /etc/hearth/hearth.toml (-e HEARTH_CONFIG=/etc/hearth/hearth.toml); every
# key is also a HEARTH_* variable (docs/configuration.md).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
models=1 check=0
for arg in "$@"; do
  case $arg in
    --no-models) models=0 ;;
    --check) check=1 ;;
    *) echo "build-image: unknown argument $arg" >&2; exit 2 ;;
  esac
done
scripts/container-env.sh >/dev/null
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
image=localhost/hearth:$version

cargo build --release --quiet --bin hearth
stage=target/image
rm -rf "$stage"
root=$stage/rootfs
mkdir -p "$root"/{usr/local/bin,etc/ssl/certs,etc/hearth,data,models,tmp}
cp target/release/hearth "$root/usr/local/bin/hearth"
strip "$root/usr/local/bin/hearth"
# The shared libraries the binary links, and the loader, at their paths.
for lib in $(ldd target/release/hearth | grep -o '/[^ ]*'); do
  mkdir -p "$root$(dirname "$lib")"
  cp -L "$lib" "$root$lib"
done
if [ ! -f /etc/ssl/certs/ca-certificates.crt ]; then
  echo "build-image: /etc/ssl/certs/ca-certificates.crt is missing: apt-get install ca-certificates" >&2
  exit 1
fi
cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/"
printf 'root:x:0:0:root:/:/sbin/nologin\nhearth:x:10001:10001:hearth:/data:/sbin/nologin\n' >"$root/etc/passwd"
printf 'root:x:0:\nhearth:x:10001:\n' >"$root/etc/group"
printf 'hosts: files dns\n' >"$root/etc/nsswitch.conf"
printf 'multi on\n' >"$root/etc/host.conf"
chmod 1777 "$root/tmp"
# One archive, owners kept (ADD extracts it as it is): root owns
# everything but /data, which the non-root user writes.
chown -R 0:0 "$root"
chown 10001:10001 "$root/data"
tar --numeric-owner -C "$root" -cf "$stage/rootfs.tar" .

cat >"$stage/Containerfile" <<EOF
FROM scratch
ADD rootfs.tar /
LABEL org.opencontainers.image.title="hearth" \\
      org.opencontainers.image.description="Local inference: RAG and fine-tuned LLM pipelines, in every topology" \\
      org.opencontainers.image.version="$version"
USER 10001:10001
WORKDIR /
# Relative model paths (the defaults: models/...) resolve under /models.
ENV HEARTH_LISTEN=0.0.0.0:8080 \\
    HEARTH_DATA_DIR=/data \\
    SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
EXPOSE 8080
VOLUME ["/data"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/hearth"]
CMD ["serve"]
EOF
rm -rf "$root"
podman build --quiet --tag "$image" --file "$stage/Containerfile" "$stage" >/dev/null
echo "built $image: $(podman image inspect "$image" --format '{{.Size}}' | awk '{printf "%.1f MB", $1/1e6}')"

if [ "$models" = 1 ]; then
  scripts/fetch-models.sh >/dev/null
  mkdir -p "$stage/models"
  cp -r models/minilm-l6-v2 models/smollm2-135m-instruct "$stage/models/"
  cat >"$stage/Containerfile.models" <<EOF
FROM $image
COPY --chown=0:0 models/ /models/
EOF
  podman build --quiet --tag "$image-models" --file "$stage/Containerfile.models" "$stage" >/dev/null
  echo "built $image-models: $(podman image inspect "$image-models" --format '{{.Size}}' | awk '{printf "%.1f MB", $1/1e6}')"
fi

if [ "$check" = 1 ]; then
  scripts/fetch-models.sh >/dev/null
  name=hearth-image-check
  podman rm -f "$name" >/dev/null 2>&1 || true
  key=image-check-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')
  began=$(date +%s.%N)
  podman run -d --name "$name" -p 127.0.0.1:18380:8080 -e HEARTH_API_KEYS="$key" \
    -v "$PWD/models:/models:ro" "$image" >/dev/null
  until curl -sf http://127.0.0.1:18380/readyz >/dev/null; do
    if [ "$(podman inspect "$name" --format '{{.State.Running}}')" != true ]; then
      podman logs "$name" >&2; echo "build-image: the container stopped" >&2; exit 1
    fi
    sleep 0.02
  done
  echo "check: podman run to /readyz: $(echo "$(date +%s.%N) - $began" | bc) s"
  auth="authorization: Bearer $key"
  curl -sf -XPOST http://127.0.0.1:18380/documents -H "$auth" -H 'content-type: application/json' \
    -d '{"id":"france","text":"Paris is the capital of France."}' >/dev/null
  curl -sf -XPOST http://127.0.0.1:18380/rag -H "$auth" -H 'content-type: application/json' \
    -d '{"question":"What is the capital of France?","max_tokens":16}' |
    sed 's/.*"answer":"\([^"]*\)".*/check: RAG answers: \1/'
  echo
  stopped=$(date +%s.%N)
  podman stop -t 30 "$name" >/dev/null
  echo "check: SIGTERM to exit: $(echo "$(date +%s.%N) - $stopped" | bc) s, exit code $(podman inspect "$name" --format '{{.State.ExitCode}}')"
  podman logs "$name" 2>&1 | tail -n 1
  podman rm -f "$name" >/dev/null
fi
