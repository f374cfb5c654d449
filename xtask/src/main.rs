//! Project tasks: `cargo xtask setup | demo | test | check | bench | record-fixtures`.
//!
//! Each task first runs scripts/setup.sh (idempotent), so a fresh machine needs nothing else.
mod bench;
mod recordings;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "leaktrace project tasks")]
struct Args {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install the toolchain pieces the eBPF build needs (nightly rust-src, bpf-linker).
    Setup,
    /// Build everything and trace a bundled demo process that deadlocks (needs root).
    Demo,
    /// Run the whole test suite: formatting, clippy, unit and root integration tests.
    Test,
    /// What a contributor without root can run: formatting, clippy (both halves), the unit
    /// tests and the replay of the checked-in recordings (the model, analysis and report are
    /// pure; no probe is loaded).
    Check,
    /// Measure what tracing costs the target and the rest of the host (traced vs untraced,
    /// and untraced vs untraced for the noise floor, in the same run).
    Bench {
        /// Only the workloads whose name contains this ("Go:", "futex", "host", "goroutines").
        only: Option<String>,
    },
    /// Re-record the checked-in recordings of fixtures (tracer-user/tests/recordings) and their
    /// expected reports, after a change of the recording format (needs root). Checks that each
    /// recording replays to the report its live run gave.
    RecordFixtures,
}

fn main() -> Result<()> {
    let root = workspace_root();
    match Args::parse().task {
        Task::Setup => setup(&root),
        Task::Demo => {
            setup(&root)?;
            demo(&root)
        }
        Task::Test => {
            setup(&root)?;
            test(&root)
        }
        Task::Check => {
            run(Command::new("bash")
                .arg(root.join("scripts/setup.sh"))
                .env("LEAKTRACE_SETUP", "build"))?;
            lint(&root)?;
            // tests/replay.rs replays checked-in recordings: the model, analysis and report
            // without root.
            run(Command::new("cargo")
                .args(["test", "--lib", "--bins", "--test", "replay"])
                .current_dir(&root))
        }
        Task::RecordFixtures => {
            setup(&root)?;
            require_root("record-fixtures")?;
            recordings::run(&root)
        }
        Task::Bench { only } => {
            setup(&root)?;
            run(Command::new("cargo")
                .args(["build", "--release", "--package", "tracer-user"])
                .current_dir(&root))?;
            let work = root.join("target/bench");
            std::fs::create_dir_all(&work)?;
            bench::run(
                &root.join("target/release/leaktrace"),
                &root,
                &work,
                only.as_deref(),
            )
        }
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

fn setup(root: &Path) -> Result<()> {
    run(Command::new("bash").arg(root.join("scripts/setup.sh")))
}

fn require_root(task: &str) -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("`cargo xtask {task}` loads eBPF programs: run it as root (e.g. `sudo -E cargo xtask {task}`)");
    }
    Ok(())
}

fn test(root: &Path) -> Result<()> {
    require_root("test")?;
    lint(root)?;
    run(Command::new("cargo")
        .args(["test", "--no-fail-fast"])
        .current_dir(root))
}

/// Formatting and clippy on both halves: needs no root.
fn lint(root: &Path) -> Result<()> {
    run(Command::new("cargo")
        .args(["fmt", "--all", "--", "--check"])
        .current_dir(root))?;
    run(Command::new("cargo")
        .args(["clippy", "--all-targets", "--", "-D", "warnings"])
        .current_dir(root))?;
    // The eBPF crate only builds for the BPF target, with nightly.
    run(Command::new("cargo")
        .args([
            "+nightly",
            "clippy",
            "--package",
            "tracer-ebpf",
            "--target",
            "bpfel-unknown-none",
        ])
        .args(["-Z", "build-std=core", "--", "-D", "warnings"])
        .current_dir(root))
}

/// The demo: an ABBA deadlock, plus a condition variable nobody signals, traced for a few seconds.
fn demo(root: &Path) -> Result<()> {
    require_root("demo")?;
    run(Command::new("cargo")
        .args(["build", "--release", "--package", "tracer-user"])
        .current_dir(root))?;
    let work = root.join("target/demo");
    std::fs::create_dir_all(&work)?;
    let demo = work.join("abba_deadlock");
    run(Command::new("gcc")
        .args(["-g", "-O1", "-fno-omit-frame-pointer", "-pthread", "-o"])
        .arg(&demo)
        .arg(root.join("tracer-user/tests/fixtures/abba_deadlock.c")))?;
    let mut child = KillOnDrop(
        Command::new(&demo)
            .stdout(Stdio::null())
            .spawn()
            .with_context(|| format!("cannot start {}", demo.display()))?,
    );
    // Let it reach the deadlock before attaching: this is the "attach to a stuck service" case.
    std::thread::sleep(Duration::from_millis(500));
    println!(
        "demo: tracing the deadlocked demo process (pid {}) for 3 s\n",
        child.0.id()
    );
    run(Command::new(root.join("target/release/leaktrace")).args([
        "--pid",
        &child.0.id().to_string(),
        "--duration",
        "3s",
    ]))?;
    let _ = child.0.kill();
    Ok(())
}

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
