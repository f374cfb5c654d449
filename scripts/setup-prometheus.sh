#!/usr/bin/env bash
# Prometheus and promtool for the agent's tests (tests/agent.rs), idempotently, from Debian's
# `prometheus` package: the test starts its own `prometheus` (temporary storage, a free port)
# scraping the agent, and checks the agent's exposition and docs/alerts.yml with `promtool`.
# The package's own service is not wanted: on a machine with an init system its postinst would
# start Prometheus on :9090, so the install runs with a policy-rc.d that refuses service starts,
# and any Prometheus still listening on 9090 afterwards is stopped. The product never runs these.
set -euo pipefail

log() { printf 'setup-prometheus: %s\n' "$*" >&2; }

if ! command -v prometheus >/dev/null 2>&1 || ! command -v promtool >/dev/null 2>&1; then
    log "installing prometheus and promtool (Debian package)"
    export DEBIAN_FRONTEND=noninteractive
    policy=/usr/sbin/policy-rc.d
    if [ ! -e "$policy" ]; then
        # invoke-rc.d and deb-systemd-invoke ask this script; 101 means "action forbidden".
        printf '#!/bin/sh\nexit 101\n' >"$policy"
        chmod 755 "$policy"
        trap 'rm -f "$policy"' EXIT
    fi
    if ! apt-get install -y --no-install-recommends prometheus >/dev/null 2>&1; then
        apt-get update >/dev/null
        apt-get install -y --no-install-recommends prometheus >/dev/null
    fi
fi

# Disable the packaged service where an init system knows it, so a reboot does not bring it back.
if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
    systemctl disable --now prometheus >/dev/null 2>&1 || true
elif [ -x /etc/init.d/prometheus ] && command -v update-rc.d >/dev/null 2>&1; then
    /etc/init.d/prometheus stop >/dev/null 2>&1 || true
    update-rc.d prometheus disable >/dev/null 2>&1 || true
fi
# A packaged Prometheus left listening on its default port: stop it by its pid.
if command -v ss >/dev/null 2>&1; then
    for pid in $(ss -Hltnp 'sport = :9090' 2>/dev/null | grep -o '"prometheus",pid=[0-9]*' | sed 's/.*pid=//'); do
        log "stopping the packaged prometheus (pid $pid) listening on :9090"
        kill "$pid" 2>/dev/null || true
    done
fi

prometheus --version >/dev/null 2>&1
promtool --version >/dev/null 2>&1
log "prometheus ready: $(prometheus --version 2>&1 | head -1)"
