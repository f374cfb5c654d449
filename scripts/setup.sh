#!/usr/bin/env bash
# Installs what building leaktrace needs on a fresh machine, idempotently:
#  - the nightly toolchain's rust-src (the eBPF crate is built with -Z build-std=core)
#  - bpf-linker, built against the nightly toolchain's own libLLVM (no usable prebuilt here,
#    and the system LLVM is too old); see docs/requirements.md
# Safe to run again: each step checks first and does nothing when already done.
set -euo pipefail

log() { printf 'setup: %s\n' "$*" >&2; }

if ! rustup toolchain list | grep -q '^nightly'; then
    log "installing the nightly toolchain"
    rustup toolchain install nightly --profile minimal
fi

for component in rust-src clippy; do
    if ! rustup component list --toolchain nightly --installed | grep -q "^${component}"; then
        log "adding ${component} to nightly"
        rustup component add "${component}" --toolchain nightly
    fi
done

if ! command -v bpf-linker >/dev/null 2>&1 && [ ! -x "$HOME/.cargo/bin/bpf-linker" ]; then
    NL="$(rustc +nightly --print sysroot)/lib"
    LLVM_SO_PATH="$(ls "$NL"/libLLVM-*.so 2>/dev/null | head -1 || true)"
    if [ -z "$LLVM_SO_PATH" ]; then
        log "no libLLVM-*.so in $NL: cannot build bpf-linker against nightly's LLVM"
        exit 1
    fi
    LLVM_SO="$(basename "$LLVM_SO_PATH" .so)"
    LLVM_MAJOR="$(echo "$LLVM_SO" | sed -E 's/^libLLVM-([0-9]+).*/\1/')"
    log "building bpf-linker against $LLVM_SO (takes about a minute)"
    RUSTFLAGS="-C link-arg=-L$NL -C link-arg=-l${LLVM_SO#lib} -C link-arg=-Wl,-rpath,$NL" \
        cargo install bpf-linker --locked --no-default-features --features "llvm-${LLVM_MAJOR},no-llvm-linking"
fi
log "toolchain ready"

# Go toolchains for the Go test fixtures (tests/goruntime.rs). `cargo xtask check` (no root, no
# integration tests) sets LEAKTRACE_SETUP=build to skip what only the root tests need.
if [ "${LEAKTRACE_SETUP:-all}" = build ]; then
    exit 0
fi
bash "$(dirname "${BASH_SOURCE[0]}")/setup-go.sh"

# Tools the fault tests check the kernel's view with (bpftool).
bash "$(dirname "${BASH_SOURCE[0]}")/setup-tools.sh"
# Prometheus and promtool for the agent's test (tests/agent.rs).
bash "$(dirname "${BASH_SOURCE[0]}")/setup-prometheus.sh"
# Headless Chromium for the HTML report test (tests/formats.rs).
bash "$(dirname "${BASH_SOURCE[0]}")/setup-chromium.sh"
