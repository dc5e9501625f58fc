#!/usr/bin/env bash
# What the image and the `podman kube play` run need: Debian's podman with
# runc as its runtime (crun fails on these machines: "cgroups in hybrid mode
# not supported") and default ulimits low enough for the sandbox to grant.
# Idempotent; needs root (or sudo) the first time.
set -euo pipefail
sudo=""
if [ "$(id -u)" != 0 ]; then sudo=sudo; fi
if ! command -v podman >/dev/null || ! command -v runc >/dev/null || ! command -v catatonit >/dev/null; then
  echo "container-env: installing Debian's podman and runc"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends podman runc uidmap \
    fuse-overlayfs slirp4netns netavark aardvark-dns iptables catatonit >/dev/null
fi
conf=/etc/containers/containers.conf
want='# written by hearth scripts/container-env.sh
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]

[engine]
runtime = "runc"
'
if [ "$(cat "$conf" 2>/dev/null)" != "$(printf '%s' "$want")" ]; then
  $sudo mkdir -p /etc/containers
  printf '%s' "$want" | $sudo tee "$conf" >/dev/null
fi
podman --version
