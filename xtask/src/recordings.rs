//! `cargo xtask record-fixtures`: records fixtures with the real probes into
//! `tracer-user/tests/recordings/NAME.jsonl.gz`, writes the report each replays to as
//! `NAME.json`, and checks that it is the report the live run gave (apart from the tracer's own
//! CPU time and peak RSS, the run-specific fields of `replay::RUN_SPECIFIC_FIELDS`).
//!
//! Run it after a change of the recording format (`model::Event` and the types in it), never in
//! a refactor: the expected reports are what `tests/replay.rs` holds every later change to.
use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use serde_json::Value;

use crate::{run as run_command, KillOnDrop};

/// One recorded fixture: its program, arguments, how long it runs before and while traced.
struct Recording {
    name: &'static str,
    program: Program,
    args: &'static [&'static str],
    settle: Duration,
    duration: &'static str,
}

enum Program {
    /// `tests/fixtures/NAME.c`.
    C(&'static str),
    /// `tests/fixtures/go/DIR`, built with this Go version.
    Go(&'static str, &'static str),
}

const RECORDINGS: &[Recording] = &[
    Recording {
        name: "abba_deadlock",
        program: Program::C("abba_deadlock"),
        args: &[],
        settle: Duration::from_millis(300),
        duration: "2s",
    },
    Recording {
        name: "condvar_never_signalled",
        program: Program::C("condvar_never_signalled"),
        args: &["3", "0"],
        settle: Duration::from_millis(300),
        duration: "2s",
    },
    Recording {
        name: "thread_leak",
        program: Program::C("thread_leak"),
        args: &["leak"],
        settle: Duration::from_millis(200),
        duration: "3s",
    },
    Recording {
        name: "epoll_stuck",
        program: Program::C("epoll_loop"),
        args: &["stuck"],
        settle: Duration::from_millis(200),
        duration: "3s",
    },
    Recording {
        name: "timerfd_per_request",
        program: Program::C("timerfd_leak"),
        args: &["per_request"],
        settle: Duration::from_millis(0),
        duration: "3s",
    },
    Recording {
        name: "go_chan_recv",
        program: Program::Go("g01_chan_recv", "1.27"),
        args: &["-rate", "20"],
        settle: Duration::from_millis(700),
        duration: "3s",
    },
];

/// A recording larger than this is too big to check in.
const MAX_BYTES: u64 = 200 * 1024;

pub fn run(root: &Path) -> Result<()> {
    run_command(
        Command::new("cargo")
            .args(["build", "--package", "tracer-user"])
            .current_dir(root),
    )?;
    let leaktrace = root.join("target/debug/leaktrace");
    let out = root.join("tracer-user/tests/recordings");
    std::fs::create_dir_all(&out)?;
    // Outside the worktree, so the recordings do not name the machine's checkout.
    let work = PathBuf::from("/tmp/leaktrace-recordings");
    std::fs::create_dir_all(&work)?;
    for recording in RECORDINGS {
        record(root, &leaktrace, &work, &out, recording)
            .with_context(|| format!("recording {}", recording.name))?;
    }
    Ok(())
}

fn record(
    root: &Path,
    leaktrace: &Path,
    work: &Path,
    out: &Path,
    recording: &Recording,
) -> Result<()> {
    let binary = build(root, work, &recording.program)?;
    let mut child = Command::new(&binary)
        .args(recording.args)
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start {}", binary.display()))?;
    let stdout = child.stdout.take().expect("piped stdout");
    let fixture = KillOnDrop(child);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        let _ = tx.send(lines.next().and_then(|line| line.ok()));
        for _ in lines {}
    });
    match rx.recv_timeout(Duration::from_secs(20)) {
        Ok(Some(line)) if line.trim() == "READY" => {}
        other => bail!("{} did not print READY: {other:?}", binary.display()),
    }
    std::thread::sleep(recording.settle);

    let file = out.join(format!("{}.jsonl.gz", recording.name));
    let live = work.join(format!("{}.live.json", recording.name));
    let expected = out.join(format!("{}.json", recording.name));
    run_command(
        Command::new(leaktrace)
            .args(["record", "-o"])
            .arg(&file)
            .arg("--report")
            .arg(&live)
            .args(["--pid", &fixture.0.id().to_string()])
            .args(["--duration", recording.duration]),
    )?;
    drop(fixture);
    run_command(
        Command::new(leaktrace)
            .arg("report")
            .arg(&file)
            .args(["--format", "json", "-o"])
            .arg(&expected),
    )?;

    let without_run_specific = |path: &Path| -> Result<Value> {
        let mut report: Value = serde_json::from_slice(&std::fs::read(path)?)
            .with_context(|| format!("{} is not JSON", path.display()))?;
        if let Some(tracer) = report["tracer"].as_object_mut() {
            tracer.remove("max_rss_kb");
            tracer.remove("cpu_ns");
        }
        Ok(report)
    };
    if without_run_specific(&live)? != without_run_specific(&expected)? {
        bail!(
            "the replay of {} differs from its live report {}",
            expected.display(),
            live.display()
        );
    }
    let size = std::fs::metadata(&file)?.len();
    println!(
        "recorded {} ({size} bytes): replays to its live report",
        file.display()
    );
    if size > MAX_BYTES {
        bail!(
            "{} is {size} bytes, more than the {MAX_BYTES} a checked-in recording may have: shorten it",
            file.display()
        );
    }
    Ok(())
}

fn build(root: &Path, work: &Path, program: &Program) -> Result<PathBuf> {
    let fixtures = root.join("tracer-user/tests/fixtures");
    match program {
        Program::C(name) => {
            let binary = work.join(name);
            // Source paths relative to the repository, as any checkout would have them.
            run_command(
                Command::new("gcc")
                    .args(["-g", "-O1", "-fno-omit-frame-pointer", "-pthread"])
                    .arg(format!("-fdebug-prefix-map={}=.", root.display()))
                    .arg("-o")
                    .arg(&binary)
                    .arg(fixtures.join(format!("{name}.c")))
                    .current_dir(root),
            )?;
            Ok(binary)
        }
        Program::Go(dir, version) => {
            let binary = work.join(dir);
            let cache = root.join(".cache");
            let go = std::fs::read_dir(cache.join("go"))
                .context("no Go toolchains: run scripts/setup-go.sh")?
                .filter_map(|entry| entry.ok())
                .filter(|entry| {
                    let name = entry.file_name().to_string_lossy().into_owned();
                    name == *version || name.starts_with(&format!("{version}."))
                })
                .map(|entry| entry.path().join("venv/bin/go"))
                .filter(|go| go.is_file())
                .max()
                .with_context(|| format!("no Go {version} toolchain in {}", cache.display()))?;
            run_command(
                Command::new(go)
                    .args(["build", "-o"])
                    .arg(&binary)
                    .arg(format!("./{dir}"))
                    .current_dir(fixtures.join("go"))
                    .env("GOTOOLCHAIN", "local")
                    .env("GOFLAGS", "-mod=mod")
                    .env("GOCACHE", cache.join("go-build"))
                    .env("GOPATH", cache.join("gopath"))
                    .env_remove("GOROOT"),
            )?;
            Ok(binary)
        }
    }
}
