//! Faults: every probe is removed on every way leaktrace can end (Ctrl-C, SIGTERM, SIGKILL,
//! the target's exit, an error while attaching), checked with the kernel's own view: the BPF
//! program and link ids leaktrace held (from its /proc/PID/fdinfo) no longer exist
//! (`bpftool prog`/`link`), no program of ours is left without an owner, and no uprobe event
//! names the target (`uprobe_events`). The target is unharmed: programs that print a checksum of
//! their work print the same one traced as untraced. Two leaktraces on one target, and on two
//! targets, work at once.
mod common;

use std::collections::BTreeSet;
use std::io::{BufRead as _, BufReader, Read as _};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// Whether a program name (as the kernel shows it: 15 bytes) is one of leaktrace's: its
/// tracepoint programs are named after their tracepoints, the low mode's window programs
/// `raw_sys_enter` and `raw_sys_exit`, its uprobes `pthread_create_entry`, `go_newproc` and
/// `go_timer_start`.
fn is_ours(name: &str) -> bool {
    [
        "sys_enter_",
        "sys_exit_",
        "raw_sys_",
        "sched_process",
        "task_rename",
        "go_newproc",
        "go_timer_start",
        "pthread_create_",
    ]
    .iter()
    .any(|p| name.starts_with(p))
}

/// `bpftool -j KIND show`: (id, name) of every program or link the kernel has.
fn bpftool_list(kind: &str) -> Vec<(u64, String)> {
    let output = Command::new("bpftool")
        .args(["-j", kind, "show"])
        .output()
        .expect("bpftool runs (scripts/setup-tools.sh installs it)");
    assert!(output.status.success(), "bpftool {kind} show failed");
    let list: Value = serde_json::from_slice(&output.stdout).expect("bpftool prints JSON");
    list.as_array()
        .expect("a list")
        .iter()
        .map(|p| {
            (
                p["id"].as_u64().expect("an id"),
                p["name"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// Every program id held by any live process (for finding programs nobody owns).
fn all_held_programs() -> BTreeSet<u64> {
    let mut all = BTreeSet::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        if let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse().ok()) {
            let (progs, _) = held_ids(pid);
            all.extend(progs);
        }
    }
    all
}

fn max_program_id() -> u64 {
    bpftool_list("prog")
        .iter()
        .map(|(id, _)| *id)
        .max()
        .unwrap_or(0)
}

/// Polls (the kernel frees programs after an RCU grace period) until `check` returns None or
/// 10 s pass; panics with the last complaint.
fn eventually(what: &str, check: impl Fn() -> Option<String>) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match check() {
            None => return,
            Some(complaint) if Instant::now() > deadline => panic!("{what}: {complaint}"),
            Some(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

/// Nothing of a leaktrace run is left in the kernel: the ids it held are gone, no program of
/// ours newer than `baseline` is left without an owner, no uprobe event names the target.
fn assert_nothing_left(held: &(BTreeSet<u64>, BTreeSet<u64>), baseline: u64, target: &Path) {
    eventually("programs leaktrace held are still loaded", || {
        let alive: Vec<u64> = bpftool_list("prog")
            .into_iter()
            .map(|(id, _)| id)
            .filter(|id| held.0.contains(id))
            .collect();
        (!alive.is_empty()).then(|| format!("{alive:?}"))
    });
    eventually("links leaktrace held are still there", || {
        let alive: Vec<u64> = bpftool_list("link")
            .into_iter()
            .map(|(id, _)| id)
            .filter(|id| held.1.contains(id))
            .collect();
        (!alive.is_empty()).then(|| format!("{alive:?}"))
    });
    eventually("programs of ours nobody holds", || {
        let owned = all_held_programs();
        let orphans: Vec<(u64, String)> = bpftool_list("prog")
            .into_iter()
            .filter(|(id, name)| *id > baseline && is_ours(name) && !owned.contains(id))
            .collect();
        (!orphans.is_empty()).then(|| format!("{orphans:?}"))
    });
    let events = [
        "/sys/kernel/tracing/uprobe_events",
        "/sys/kernel/debug/tracing/uprobe_events",
    ]
    .iter()
    .filter_map(|p| std::fs::read_to_string(p).ok())
    .collect::<String>();
    let name = target.file_name().unwrap().to_string_lossy();
    assert!(
        !events.contains(name.as_ref()),
        "uprobe events name the target {name}:\n{events}"
    );
}

/// A leaktrace started on `pid` with no duration and `--detail detail`; returns once it says
/// it is tracing.
fn start_leaktrace(pid: u32, detail: &str) -> (Child, std::sync::mpsc::Receiver<String>) {
    let mut child = leaktrace()
        .args(["--pid", &pid.to_string(), "--format", "json"])
        .args(["--detail", detail])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start leaktrace");
    let stderr = child.stderr.take().expect("piped stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) if line.contains("tracing pid") => return (child, rx),
            Ok(_) => {}
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("leaktrace never said it is tracing");
            }
        }
    }
}

/// Waits for a leaktrace to end by itself (at most 60 s) and returns its exit status and stdout.
fn wait_for(mut child: Child) -> (std::process::ExitStatus, String) {
    let mut stdout = child.stdout.take().expect("piped stdout");
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stdout.read_to_string(&mut text);
        text
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for leaktrace") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("leaktrace did not end within 60 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    (status, reader.join().expect("stdout reader"))
}

/// How a trace is ended in [`probes_are_removed`].
#[derive(Clone, Copy, Debug)]
enum End {
    Signal(i32),
    TargetExits,
}

/// The names of the programs leaktrace holds (`held`'s program ids).
fn names_of(held: &BTreeSet<u64>) -> BTreeSet<String> {
    bpftool_list("prog")
        .into_iter()
        .filter(|(id, _)| held.contains(id))
        .map(|(_, name)| name)
        .collect()
}

/// Traces a Go target that creates goroutines all the time (so the Go uprobes' windows open
/// and close) with `--detail detail`, ends the trace `how`, and checks the kernel is left
/// clean.
fn probes_are_removed(how: End, detail: &str) {
    require_root();
    let binary = build_go("g01_chan_recv", "1.27", &[]);
    let mut fixture = Fixture::start(&binary, &["-rate", "500"]);
    let baseline = max_program_id();
    let (child, _stderr) = start_leaktrace(fixture.pid(), detail);
    // Several probe windows (100 ms a second) open and close meanwhile.
    std::thread::sleep(Duration::from_millis(2500));
    let held = held_ids(child.id());
    let names = names_of(&held.0);
    // The lifecycle tracepoints (task_newtask, sched_process_exit, task_rename) stay linked
    // throughout in both modes. The low mode loads the two raw window programs (their links
    // come and go with the windows) instead of the ~40 per-syscall tracepoint programs of the
    // full mode.
    // bpftool names a program from its BTF (whole) or, without it, the kernel's 15 bytes.
    let lifecycle = ["task_newtask", "sched_process_e", "task_rename"];
    assert!(
        lifecycle
            .iter()
            .all(|p| names.iter().any(|n| n.starts_with(p)))
            && held.1.len() >= 3,
        "leaktrace holds too few programs/links to be tracing: {names:?} {held:?}"
    );
    match detail {
        "low" => assert!(
            names.contains("raw_sys_enter")
                && names.contains("raw_sys_exit")
                && !names.iter().any(|n| n.starts_with("sys_enter_")),
            "the low mode watches syscalls through the two raw programs only: {names:?}"
        ),
        _ => assert!(
            held.0.len() >= 20 && names.contains("sys_exit_futex"),
            "the full mode holds every tracepoint program: {names:?}"
        ),
    }
    match how {
        End::Signal(signal) => {
            // SAFETY: signalling the leaktrace this test started, which is running.
            unsafe { libc::kill(child.id() as i32, signal) };
        }
        End::TargetExits => {
            let _ = fixture.child.kill();
            let _ = fixture.child.wait();
        }
    }
    let (status, stdout) = wait_for(child);
    match how {
        End::Signal(libc::SIGKILL) => {
            assert_eq!(
                std::os::unix::process::ExitStatusExt::signal(&status),
                Some(libc::SIGKILL)
            );
        }
        _ => {
            assert!(status.success(), "leaktrace failed ({status}):\n{stdout}");
            let report: Value = serde_json::from_str(&stdout).expect("a JSON report");
            let exited = matches!(how, End::TargetExits);
            assert_eq!(report["target_exited"], exited, "{how:?}");
            assert!(report["goroutines"].is_object(), "{how:?}: goroutines read");
        }
    }
    assert_nothing_left(&held, baseline, &binary);
}

#[test]
fn every_probe_is_removed_on_ctrl_c() {
    probes_are_removed(End::Signal(libc::SIGINT), "low");
}

#[test]
fn every_probe_is_removed_on_ctrl_c_in_full_detail() {
    probes_are_removed(End::Signal(libc::SIGINT), "full");
}

#[test]
fn every_probe_is_removed_on_sigterm() {
    probes_are_removed(End::Signal(libc::SIGTERM), "low");
}

#[test]
fn every_probe_is_removed_when_leaktrace_is_killed() {
    probes_are_removed(End::Signal(libc::SIGKILL), "low");
}

#[test]
fn every_probe_is_removed_when_the_target_exits() {
    probes_are_removed(End::TargetExits, "low");
}

#[test]
fn every_probe_is_removed_when_attaching_fails() {
    require_root();
    let fixture = Fixture::start(&build_c("condvar_never_signalled"), &["1", "0"]);
    let baseline = max_program_id();
    let pid = fixture.pid().to_string();
    // sys_exit_futex is required: without it no wait can be timed. Full detail, because it
    // attaches the per-syscall tracepoints, which a tracefs mount can take away; the low
    // mode's raw sys_enter/sys_exit programs are attached by the kernel's tracepoint name
    // (BPF_RAW_TRACEPOINT_OPEN), which nothing outside leaktrace can make fail.
    let output = common::tracefs::leaktrace_without(
        &["syscalls/sys_exit_futex"],
        &[
            "--pid",
            &pid,
            "--duration",
            "2s",
            "--format",
            "json",
            "--detail",
            "full",
        ],
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "leaktrace must fail: {stderr}");
    assert_eq!(
        output.status.code(),
        Some(1),
        "an error, not a crash: {stderr}"
    );
    assert!(
        stderr.contains("leaktrace: error: attaching to syscalls:sys_exit_futex failed"),
        "the error names the tracepoint: {stderr}"
    );
    assert!(output.stdout.is_empty(), "no report on failure");
    // It loaded and attached the programs before sys_exit_futex: all must be gone.
    assert_nothing_left(
        &(BTreeSet::new(), BTreeSet::new()),
        baseline,
        Path::new("condvar_never_signalled"),
    );
}

/// Runs `binary args` untraced and returns what it printed after READY (its checksum line).
fn run_untraced(binary: &Path, args: &[&str]) -> String {
    let output = Command::new(binary)
        .args(args)
        .output()
        .expect("run the fixture");
    assert!(
        output.status.success(),
        "{} failed untraced",
        binary.display()
    );
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.lines().skip(1).collect::<Vec<_>>().join("\n")
}

/// Runs `binary args` traced by leaktrace from its READY to its exit; returns what it printed
/// after READY and the report.
fn run_traced(binary: &Path, args: &[&str]) -> (String, Value) {
    let mut child = Command::new(binary)
        .args(args)
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the fixture");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().and_then(|l| l.ok()).as_deref(), Some("READY"));
    let (tracer, _stderr) = start_leaktrace(child.id(), "low");
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let status = child.wait().expect("wait for the fixture");
    assert!(
        status.success(),
        "{} traced ended with {status}",
        binary.display()
    );
    let (tracer_status, stdout) = wait_for(tracer);
    assert!(tracer_status.success(), "leaktrace failed:\n{stdout}");
    let report: Value = serde_json::from_str(&stdout).expect("a JSON report");
    assert_eq!(report["target_exited"], true);
    (rest.join("\n"), report)
}

#[test]
fn a_go_program_computes_the_same_traced_as_untraced() {
    require_root();
    let binary = build_go("checksum", "1.27", &[]);
    // Waits 2 s after READY for leaktrace to attach, then works for a few seconds.
    let args = ["-wait", "2s", "-rounds", "40"];
    let untraced = run_untraced(&binary, &args);
    assert!(untraced.starts_with("checksum "), "{untraced}");
    let (traced, report) = run_traced(&binary, &args);
    assert_eq!(traced, untraced, "the traced run computed something else");
    // It was really traced while its goroutines were created: the creation probe ran.
    assert!(report["goroutines"].is_object());
    assert!(
        report["counters"]["go_creations"].as_u64().unwrap_or(0) > 0,
        "the Go creation uprobe never fired: {}",
        report["counters"]
    );
}

#[test]
fn a_c_program_computes_the_same_traced_as_untraced() {
    require_root();
    let binary = build_c("checksum");
    let args = ["2000", "100"];
    let untraced = run_untraced(&binary, &args);
    assert!(untraced.starts_with("checksum "), "{untraced}");
    let (traced, report) = run_traced(&binary, &args);
    assert_eq!(traced, untraced, "the traced run computed something else");
    assert!(report["counters"]["waits_started"].as_u64().unwrap_or(0) > 0);
    assert!(report["counters"]["threads_created"].as_u64().unwrap_or(0) > 0);
}

#[test]
fn two_leaktraces_on_one_target_and_on_two_targets_work_at_once() {
    require_root();
    let binary = build_c("condvar_never_signalled");
    let first = Fixture::start(&binary, &["1", "0"]);
    let second = Fixture::start(&binary, &["1", "0"]);
    let run = |pid: u32| {
        std::thread::spawn(move || {
            let pid = pid.to_string();
            json_report(&run_leaktrace(
                &["--pid", &pid, "--duration", "3s", "--format", "json"],
                Duration::from_secs(120),
            ))
        })
    };
    // Two on the first target and one on the second, all at the same time.
    let runs = [run(first.pid()), run(first.pid()), run(second.pid())];
    for (i, handle) in runs.into_iter().enumerate() {
        let report = handle.join().expect("leaktrace run");
        let waits = of_kind(&report, "futex_wait");
        assert_eq!(waits.len(), 1, "run {i}: {:#?}", candidates(&report));
        assert_eq!(report["lost_events"], 0, "run {i}");
    }
}
