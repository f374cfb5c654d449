#![no_std]
// The eBPF programs are the `tracer-ebpf` binary (src/main.rs); this empty library target only
// exists so that tracer-user can name this package as a build-dependency (aya-build needs that).
