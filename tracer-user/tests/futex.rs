//! Threads stuck in futex waits, traced with the real eBPF probes (run as root).
mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

const S: u64 = 1_000_000_000;

#[test]
fn an_abba_deadlock_is_one_deadlock_naming_both_threads_and_both_locks() {
    require_root();
    let fixture = Fixture::start(&build_c("abba_deadlock"), &[]);
    let report = trace_pid(fixture.pid(), "2s", &[]);

    let deadlocks = of_kind(&report, "deadlock");
    assert_eq!(deadlocks.len(), 1, "one deadlock");
    let deadlock = deadlocks[0];
    assert_eq!(deadlock["count"], 2);
    let cycle = deadlock["cycle"].as_array().expect("the cycle");
    assert_eq!(cycle.len(), 2);
    // Each thread waits for the lock the other holds: two distinct locks, each held by the other.
    assert_ne!(cycle[0]["waits_for"], cycle[1]["waits_for"]);
    assert_eq!(cycle[0]["held_by"], cycle[1]["tid"]);
    assert_eq!(cycle[1]["held_by"], cycle[0]["tid"]);

    let threads = deadlock["threads"].as_array().expect("threads");
    let file = "abba_deadlock.c";
    for (name, function, marker) in [
        (
            "teller_one",
            "transfer_a_to_b",
            "lock_b is held by transfer_b_to_a",
        ),
        (
            "teller_two",
            "transfer_b_to_a",
            "lock_a is held by transfer_a_to_b",
        ),
    ] {
        let thread = threads
            .iter()
            .find(|t| t["name"] == name)
            .unwrap_or_else(|| panic!("no thread {name} in the deadlock"));
        assert_frame_at(
            &thread["blocking_stack"],
            function,
            file,
            line_of(file, marker),
        );
        // Blocked before tracing started: a lower bound, at least the trace length.
        assert_eq!(thread["blocked_at_least"], true);
        assert!(thread["blocked_ns"].as_u64().unwrap() >= 2 * S - S / 10);
    }
    assert_eq!(deadlock["blocked_ns"]["at_least"], true);
    for key in ["p50", "p90", "p99", "max"] {
        assert!(deadlock["blocked_ns"][key].as_u64().unwrap() >= S);
    }
    // The main thread joins a deadlocked thread: stuck behind it, not healthy.
    let joiner = of_kind(&report, "futex_wait");
    assert_eq!(joiner.len(), 1, "the joining main thread");
    assert!(joiner[0]["threads"][0]["joining_tid"].is_u64());
    assert_frame_at(
        &joiner[0]["blocking_stack"],
        "main",
        file,
        line_of(file, "pthread_join(one, NULL);"),
    );
}

#[test]
fn waiters_on_a_condition_variable_nobody_signals_are_one_group_never_woken() {
    require_root();
    let binary = build_c("condvar_never_signalled");
    let binary = binary.to_str().unwrap();
    // Started by leaktrace: the waits begin under the trace (300 ms in), so their start is exact.
    // The started command shares leaktrace's stdout, so the JSON goes to a file.
    let out = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("condvar-{}.json", std::process::id()));
    let out_arg = out.to_str().unwrap();
    let output = run_leaktrace(
        &[
            "--duration",
            "3s",
            "--format",
            "json",
            "-o",
            out_arg,
            "--",
            binary,
            "3",
            "300",
        ],
        Duration::from_secs(60),
    );
    assert!(output.status.success(), "{output:?}");
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    let _ = std::fs::remove_file(&out);
    println!("{}", serde_json::to_string_pretty(&report).unwrap());

    let stuck = of_kind(&report, "futex_wait");
    assert_eq!(stuck.len(), 1, "one group: {:?}", candidates(&report));
    let group = stuck[0];
    assert_eq!(group["count"], 3);
    assert_eq!(group["wakes_during_trace"], 0, "nobody signalled");
    assert_eq!(
        group["blocked_ns"]["at_least"], false,
        "seen entering the wait"
    );
    let max = group["blocked_ns"]["max"].as_u64().unwrap();
    assert!((2 * S..3 * S).contains(&max), "blocked {max} ns");
    let file = "condvar_never_signalled.c";
    assert_frame_at(
        &group["blocking_stack"],
        "wait_for_job",
        file,
        line_of(file, "nobody signals job_ready"),
    );
    for thread in group["threads"].as_array().unwrap() {
        assert_eq!(thread["name"], "consumer");
        assert!(functions(&thread["blocking_stack"])
            .iter()
            .any(|f| f.contains("pthread_cond_wait")));
    }
    // The main thread's short lock/unlock work is healthy activity, never a candidate.
    assert!(report["waits_seen"].as_u64().is_some());
    assert_eq!(report["target_exited"], false);
}

#[test]
fn threads_blocked_before_attach_are_found_with_lower_bound_times() {
    require_root();
    let fixture = Fixture::start(&build_c("condvar_never_signalled"), &["2", "0"]);
    std::thread::sleep(Duration::from_millis(300));
    let report = trace_pid(fixture.pid(), "1500ms", &["--min-blocked", "1s"]);
    let stuck = of_kind(&report, "futex_wait");
    assert_eq!(stuck.len(), 1, "{:?}", candidates(&report));
    assert_eq!(stuck[0]["count"], 2);
    assert_eq!(stuck[0]["blocked_ns"]["at_least"], true);
    assert!(stuck[0]["reasons"].as_array().unwrap().iter().any(|r| r
        .as_str()
        .unwrap()
        .contains("already blocked when tracing started")));
    assert!(functions(&stuck[0]["blocking_stack"]).contains(&"wait_for_job".to_string()));
}

#[test]
fn a_healthy_ping_pong_produces_no_candidate_but_shows_its_waits() {
    require_root();
    let fixture = Fixture::start(&build_c("pingpong_healthy"), &[]);
    let report = trace_pid(fixture.pid(), "3s", &[]);
    assert!(
        candidates(&report).is_empty(),
        "healthy ping-pong reported: {:?}",
        candidates(&report)
    );
    assert!(report["waits_seen"].as_u64().unwrap() > 100, "waits seen");
    let sites = report["wait_sites"].as_array().unwrap();
    assert!(!sites.is_empty(), "completed waits are summarised");
    // Spread over the two condition variables and the mutex, in an order that load can change.
    let site_waits: u64 = sites.iter().map(|s| s["waits"].as_u64().unwrap()).sum();
    assert!(site_waits > 100, "{site_waits} waits in the sites");
    assert_eq!(report["lost_events"], 0);
}

#[test]
fn an_idle_pool_whose_condition_is_signalled_is_healthy() {
    require_root();
    // Four workers, a job every 700 ms: each worker waits ~2.8 s between jobs, past the
    // threshold, on a condition variable that is signalled all along.
    let fixture = Fixture::start(&build_c("idle_pool"), &["4", "700"]);
    std::thread::sleep(std::time::Duration::from_secs(2));
    let report = trace_pid(fixture.pid(), "5s", &["--min-blocked", "1s"]);
    assert!(
        candidates(&report).is_empty(),
        "an idle pool reported: {:#?}",
        candidates(&report)
    );
    let healthy = report["blocked_but_healthy"].as_array().unwrap();
    assert!(
        healthy.iter().any(|t| t["why"]
            .as_str()
            .unwrap_or_default()
            .contains("waits its turn")),
        "the waiting workers are shown as healthy, with why: {healthy:#?}"
    );
}

#[test]
fn a_rust_std_mutex_deadlock_shows_both_threads_in_rust_code() {
    require_root();
    let fixture = Fixture::start(&build_rust("rust_mutex_deadlock"), &[]);
    let report = trace_pid(fixture.pid(), "1500ms", &["--min-blocked", "1s"]);
    let file = "rust_mutex_deadlock.rs";
    let line = line_of(file, "blocks forever");
    let mut names = Vec::new();
    for candidate in candidates(&report) {
        for thread in candidate["threads"].as_array().unwrap() {
            let name = thread["name"].as_str().unwrap().to_string();
            if name.ends_with("_worker") {
                assert_frame_at(&thread["blocking_stack"], "credit_then_debit", file, line);
                names.push(name);
            }
        }
    }
    names.sort();
    assert_eq!(names, vec!["credit_worker", "debit_worker"]);
}

#[test]
fn a_target_that_exits_mid_trace_is_reported_as_seen() {
    require_root();
    let fixture = Fixture::start(&build_c("exits_while_blocked"), &["2500"]);
    let started = Instant::now();
    let report = trace_pid(fixture.pid(), "20s", &["--min-blocked", "1s"]);
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "leaktrace noticed the exit"
    );
    assert_eq!(report["target_exited"], true);
    let stuck = of_kind(&report, "futex_wait");
    assert_eq!(stuck.len(), 1, "{:?}", candidates(&report));
    assert!(functions(&stuck[0]["blocking_stack"]).contains(&"wait_until_exit".to_string()));
}

#[test]
fn bad_input_gets_a_clear_error_and_a_non_zero_exit() {
    require_root();
    let fail = |args: &[&str], expected: &str| {
        let output = run_leaktrace(args, Duration::from_secs(30));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{args:?} succeeded");
        assert!(
            stderr.contains(expected),
            "{args:?}: {expected:?} not in {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{args:?} panicked: {stderr}");
    };
    // A PID that existed a moment ago and is gone now.
    let mut gone = std::process::Command::new("true").spawn().unwrap();
    let gone_pid = gone.id().to_string();
    gone.wait().unwrap();
    fail(&["--pid", &gone_pid, "--duration", "1s"], "does not exist");
    fail(&["--pid", "0", "--duration", "1s"], "does not exist");
    fail(&[], "--pid");
    fail(&["--pid", "1", "--duration", "soon"], "invalid value");
    fail(
        &["--pid", "1", "-o", "/nonexistent-dir/report.json"],
        "cannot write the report to /nonexistent-dir/report.json",
    );
    fail(
        &["--duration", "1s", "--", "/nonexistent/program"],
        "cannot run /nonexistent/program",
    );

    // Not root: the same binary run as an unprivileged user.
    let fixture = Fixture::start(&build_c("pingpong_healthy"), &[]);
    let output = std::process::Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
        ])
        .arg(env!("CARGO_BIN_EXE_leaktrace"))
        .args(["--pid", &fixture.pid().to_string(), "--duration", "1s"])
        .output()
        .expect("run setpriv (util-linux)");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("not root"), "{stderr}");
}
