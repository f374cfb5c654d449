#!/usr/bin/env bash
# Installs Debian's chromium for the HTML report test (tests/formats.rs renders the report in
# headless Chromium and checks the page ran without script errors). Idempotent: does nothing
# when a chromium binary is already on PATH.
set -euo pipefail

log() { printf 'setup-chromium: %s\n' "$*" >&2; }

if command -v chromium >/dev/null 2>&1; then
    exit 0
fi
log "installing chromium (apt)"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends chromium >/dev/null
command -v chromium >/dev/null 2>&1 || { log "chromium did not install"; exit 1; }
log "chromium ready: $(chromium --version 2>/dev/null || true)"
