#!/bin/bash
# Cost of the native-I/O probes: each workload run untraced, then traced (leaktrace started
# with `-- CMD`), in the same run; prints the medians of 3 and the ratio. Needs root.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
bin="${LEAKTRACE:-$here/../../target/release/leaktrace}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
for w in spawn epoll; do gcc -O2 -pthread -o "$work/$w" "$here/$w.c"; done
median() { sort -n | sed -n 2p; }
for spec in "spawn 20000" "epoll 500000"; do
    set -- $spec
    plain=$(for i in 1 2 3; do "$work/$1" "$2"; done | median)
    traced=$(for i in 1 2 3; do "$bin" --duration 60s -o /dev/null -- "$work/$1" "$2" 2>/dev/null; done | median)
    echo "$1: untraced ${plain} ns/op, traced ${traced} ns/op, ratio $(echo "scale=2; $traced / $plain" | bc)"
done
