#!/usr/bin/env bash
# What the browser tests (tests/web.rs) need besides the Python virtualenv:
# Debian's Chromium and its chromedriver, from the distribution's packages.
# Idempotent; needs root (or sudo) the first time.
set -euo pipefail
if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then
  exit 0
fi
sudo=""
if [ "$(id -u)" != 0 ]; then sudo=sudo; fi
echo "browser-env: installing Debian's chromium and chromium-driver"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null
/usr/bin/chromium --version
