//! Root integration tests for thread leaks (N3), epoll loops that never wake (N4) and timerfds
//! (N5, N6): real fixtures, the real `leaktrace` binary with real eBPF probes, JSON asserted.
//!
mod common;

use std::sync::Mutex;

use common::*;
use serde_json::Value;

/// The machines have 2 cores: these traces run one at a time so that timing stays predictable.
static SERIAL: Mutex<()> = Mutex::new(());

/// Starts fixture `name` in `mode`, lets it run `settle_ms`, and traces it for 3 s.
fn run(name: &str, mode: &str, settle_ms: u64) -> Value {
    require_root();
    let _guard = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let fixture = Fixture::start(&build_c(name), &[mode]);
    std::thread::sleep(std::time::Duration::from_millis(settle_ms));
    trace_pid(fixture.pid(), "3s", &["--min-blocked", "1s"])
}

/// True when some frame is `function` in `file` (file:line present).
fn has_frame(stack: &Value, function: &str, file: &str) -> bool {
    stack.as_array().is_some_and(|frames| {
        frames.iter().any(|f| {
            f["function"] == function
                && f["file"].as_str().is_some_and(|p| p.ends_with(file))
                && f["line"].as_u64().is_some()
        })
    })
}

#[test]
fn a_thread_per_task_that_never_exits_is_a_growing_thread_leak() {
    let report = run("thread_leak", "leak", 200);
    let leaks = of_kind(&report, "thread_leak");
    assert_eq!(leaks.len(), 1, "{report:#}");
    let leak = leaks[0];
    assert!(leak["count"].as_u64().unwrap() >= 20, "{leak:#}");
    assert!(
        has_frame(&leak["creation_stack"], "spawn_leaky_task", "thread_leak.c"),
        "{leak:#}"
    );
    assert!(
        has_frame(&leak["creation_stack"], "main", "thread_leak.c"),
        "{leak:#}"
    );
    assert!(
        has_frame(&leak["blocking_stack"], "wait_for_reply", "thread_leak.c"),
        "{leak:#}"
    );
    let group = &leak["thread_group"];
    assert_eq!(group["exited_during_trace"], 0);
    assert!(group["created_during_trace"].as_u64().unwrap() >= 20);
    assert!(group["growth_per_s"].as_f64().unwrap() > 5.0);
    assert_eq!(group["blocked_in"][0]["state"], "futex");
}

#[test]
fn short_lived_joined_threads_are_healthy() {
    let report = run("thread_leak", "joined", 200);
    assert_eq!(
        report["candidates"].as_array().unwrap().len(),
        0,
        "{report:#}"
    );
    assert!(report["native_io"]["threads_created"].as_u64().unwrap() >= 20);
    assert!(report["native_io"]["threads_exited"].as_u64().unwrap() >= 20);
}

#[test]
fn an_event_loop_on_a_pipe_nobody_writes_never_wakes() {
    let report = run("epoll_loop", "stuck", 200);
    let stuck = of_kind(&report, "epoll_wait");
    assert_eq!(stuck.len(), 1, "{report:#}");
    let c = stuck[0];
    assert!(
        has_frame(&c["blocking_stack"], "run_event_loop", "epoll_loop.c"),
        "{c:#}"
    );
    let event_loop = &c["epoll"]["loops"][0];
    assert_eq!(event_loop["timeout_ns"], Value::Null);
    assert_eq!(event_loop["fds"][0]["kind"], "pipe");
    assert!(event_loop["fds"][0]["dead_end"].is_string(), "{c:#}");
    assert_eq!(c["epoll"]["events_during_trace"], 0);
}

#[test]
fn an_event_loop_that_gets_events_is_healthy() {
    let report = run("epoll_loop", "healthy", 200);
    assert_eq!(
        report["candidates"].as_array().unwrap().len(),
        0,
        "{report:#}"
    );
    // ~10 wake-ups a second, counted while syscalls are watched: the first probe window (2 s)
    // of the default (low) mode, the whole 3 s in --detail full.
    assert!(report["counters"]["epoll_waits"].as_u64().unwrap() >= 10);
}

#[test]
fn a_heartbeat_rearmed_before_expiry_never_fires() {
    let report = run("timerfd_leak", "heartbeat", 0);
    let timers = of_kind(&report, "timerfd");
    assert_eq!(timers.len(), 1, "{report:#}");
    let c = timers[0];
    assert_eq!(c["timerfd"]["pattern"], "never_fires");
    assert!(
        has_frame(&c["blocking_stack"], "heartbeat", "timerfd_leak.c"),
        "{c:#}"
    );
    let timer = &c["timerfd"]["timers"][0];
    assert_eq!(timer["fired"], 0);
    // Re-armed every 200 ms, seen while syscalls are watched: the first probe window (2 s) in
    // the default (low) mode.
    assert!(timer["pushed_back"].as_u64().unwrap() >= 5);
    assert!(timer["next_expiry_ns"].as_u64().unwrap() <= 1_000_000_000);
}

#[test]
fn per_request_timerfds_never_closed_leak() {
    let report = run("timerfd_leak", "per_request", 0);
    let timers = of_kind(&report, "timerfd");
    assert_eq!(timers.len(), 1, "{report:#}");
    let c = timers[0];
    assert_eq!(c["timerfd"]["pattern"], "fd_leak");
    assert!(c["count"].as_u64().unwrap() >= 40, "{c:#}");
    assert!(
        has_frame(&c["creation_stack"], "handle_request", "timerfd_leak.c"),
        "{c:#}"
    );
    assert!(
        has_frame(&c["creation_stack"], "make_timer", "timerfd_leak.c")
            || has_frame(&c["creation_stack"], "handle_request", "timerfd_leak.c")
    );
    assert!(c["timerfd"]["growth_per_s"].as_f64().unwrap() > 10.0);
    assert!(
        c["timerfd"]["timers"][0]["next_expiry_ns"]
            .as_u64()
            .unwrap()
            > 3_500_000_000_000
    );
}

#[test]
fn a_periodic_timerfd_read_every_time_is_healthy() {
    let report = run("timerfd_leak", "periodic", 0);
    assert_eq!(
        report["candidates"].as_array().unwrap().len(),
        0,
        "{report:#}"
    );
    // Read every 100 ms, counted while syscalls are watched: the first probe window (2 s) in the
    // default (low) mode.
    assert!(report["counters"]["timerfd_reads"].as_u64().unwrap() >= 10);
}
