#!/usr/bin/env bash
# Tools the tests use to check leaktrace from the kernel's side, idempotently:
#  - bpftool: tests/faults.rs lists the kernel's BPF programs and links to prove that nothing of
#    leaktrace's is left after every way it can end. The product itself never runs it.
set -euo pipefail

log() { printf 'setup-tools: %s\n' "$*" >&2; }

if ! command -v bpftool >/dev/null 2>&1; then
    log "installing bpftool (Debian package)"
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y --no-install-recommends bpftool >/dev/null 2>&1; then
        apt-get update >/dev/null
        apt-get install -y --no-install-recommends bpftool >/dev/null
    fi
fi
bpftool version >/dev/null
log "bpftool ready: $(bpftool version | head -1)"
