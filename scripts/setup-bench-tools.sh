#!/usr/bin/env bash
# Tools only `cargo xtask bench compare` uses, idempotently (not called by setup.sh or CI):
#  - bpfcc-tools (Debian): bcc's offcputime, the row "what users would run instead" for threads.
#    bcc compiles its programs at run time and attaches kprobes; on a kernel without kprobes or
#    without headers it installs but cannot run, and the bench prints the error it gave.
#  - curl: what the "curl /debug/pprof/goroutine?debug=2 once a second" habit runs.
set -euo pipefail

log() { printf 'setup-bench-tools: %s\n' "$*" >&2; }

missing=()
command -v offcputime-bpfcc >/dev/null 2>&1 || missing+=(bpfcc-tools)
command -v curl >/dev/null 2>&1 || missing+=(curl)
if [ "${#missing[@]}" -gt 0 ]; then
    log "installing ${missing[*]} (Debian packages)"
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null 2>&1; then
        apt-get update >/dev/null
        apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null
    fi
fi
log "ready: $(command -v offcputime-bpfcc) $(command -v curl)"
