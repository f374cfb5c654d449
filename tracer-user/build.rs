//! Builds the eBPF object (tracer-ebpf) with the nightly toolchain and bpf-linker, so that a
//! plain `cargo build` of leaktrace embeds it. scripts/setup.sh installs what this needs.
use anyhow::{anyhow, Context as _};

fn main() -> anyhow::Result<()> {
    compile_profile_proto()?;
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").context("CARGO_MANIFEST_DIR")?;
    let ebpf_dir = std::path::Path::new(&manifest_dir)
        .parent()
        .ok_or_else(|| anyhow!("tracer-user has no parent directory"))?
        .join("tracer-ebpf");
    let ebpf_dir = ebpf_dir
        .to_str()
        .ok_or_else(|| anyhow!("non-UTF-8 path {}", ebpf_dir.display()))?;
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "tracer-ebpf",
            root_dir: ebpf_dir,
            ..Default::default()
        }],
        aya_build::Toolchain::default(),
    )
    .context("building the eBPF programs failed: run scripts/setup.sh to install the nightly rust-src and bpf-linker")
}

/// pprof's profile.proto (checked in under proto/, as upstream ships it) compiled to Rust types
/// with protox, a protobuf compiler in Rust, so no protoc binary is needed.
fn compile_profile_proto() -> anyhow::Result<()> {
    println!("cargo:rerun-if-changed=proto/profile.proto");
    let descriptors = protox::compile(["profile.proto"], ["proto"])
        .map_err(|err| anyhow!("compiling proto/profile.proto: {err}"))?;
    prost_build::Config::new()
        .compile_fds(descriptors)
        .context("generating Rust types from proto/profile.proto")
}
