use which::which;

/// Rebuild the eBPF object when bpf-linker changes (e.g. scripts/setup.sh installed a new one),
/// and fail early with a useful message when it is missing.
fn main() {
    match which("bpf-linker") {
        Ok(path) => println!("cargo:rerun-if-changed={}", path.display()),
        Err(_) => panic!("bpf-linker not found: run scripts/setup.sh (or `cargo xtask setup`)"),
    }
}
