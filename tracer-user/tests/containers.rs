//! Root integration tests for targets in containers (issue 12, "Targets in containers"): a C
//! thread-leak fixture and a statically linked Go fixture run in their own mount and pid
//! namespaces, chrooted into a tmpfs that exists only in their mount namespace, in a cgroup of
//! their own. Their executables and the C library are at paths (/app/...) that do not exist in
//! leaktrace's namespace, so every file leaktrace reads from them must be opened through
//! /proc/PID/root or /proc/PID/map_files. Traced by their host pid, they must be reported like
//! any other target: creation and blocking stacks with file:line, and the container's view named
//! (cgroup path, pid 1 in its pid namespace).
mod common;

use std::sync::Mutex;
use std::time::Duration;

use common::container::*;
use common::*;
use serde_json::Value;

/// The machines have 2 cores: these traces run one at a time so that timing stays predictable.
static SERIAL: Mutex<()> = Mutex::new(());

/// Traces the container's fixture by its host pid.
fn trace(container: &Container) -> Value {
    trace_pid(container.host_pid, "3s", &["--min-blocked", "1s"])
}

/// The report names the container: its cgroup, and the fixture's pid (1) in its pid namespace.
fn assert_names_the_container(report: &Value, container: &Container) {
    let view = &report["target"]["container"];
    assert_eq!(view["cgroup"], container.cgroup.as_str(), "{view}");
    assert_eq!(view["namespace_pid"], 1, "{view}");
    assert_eq!(view["other_mount_namespace"], true, "{view}");
    assert_eq!(view["other_pid_namespace"], true, "{view}");
}

fn has_frame_at(stack: &Value, function: &str, file: &str, line: u64) -> bool {
    stack.as_array().is_some_and(|frames| {
        frames.iter().any(|f| {
            f["function"] == function
                && f["file"].as_str().is_some_and(|p| p.ends_with(file))
                && f["line"].as_u64() == Some(line)
        })
    })
}

#[test]
fn a_c_thread_leak_in_a_container_has_its_creation_stack() {
    require_root();
    let _guard = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let stage = scratch("stage-c");
    let program = stage_c(&stage, "thread_leak");

    let container = Container::start(&stage, &program, &["leak"]);
    std::thread::sleep(Duration::from_millis(200));
    let report = trace(&container);
    let attached = report["tracer"]["probes"].to_string();
    let leaks = of_kind(&report, "thread_leak");
    assert_eq!(leaks.len(), 1, "{report:#}");
    let leak = leaks[0];
    let spawn_line = line_of("thread_leak.c", "pthread_create(&t, NULL, leaky_task");
    assert!(
        has_frame_at(
            &leak["creation_stack"],
            "spawn_leaky_task",
            "thread_leak.c",
            spawn_line
        ),
        "the pthread_create uprobe must reach the container's libc ({attached}): {leak:#}"
    );
    let wait_line = line_of("thread_leak.c", "for (;;) pthread_cond_wait");
    assert!(
        has_frame_at(
            &leak["blocking_stack"],
            "wait_for_reply",
            "thread_leak.c",
            wait_line
        ),
        "{leak:#}"
    );
    assert_names_the_container(&report, &container);
    drop(container);

    // The fixed twin in the same container stays unreported.
    let container = Container::start(&stage, &program, &["joined"]);
    std::thread::sleep(Duration::from_millis(200));
    let report = trace(&container);
    assert!(candidates(&report).is_empty(), "{report:#}");
    assert!(report["native_io"]["threads_created"].as_u64().unwrap() >= 10);
    assert_names_the_container(&report, &container);
}

/// A mutex names its owner by the id the owner has in the container's pid namespace: the cycle
/// is only found when that id is translated to the one the host traces by.
#[test]
fn an_abba_deadlock_in_a_container_names_both_owners() {
    require_root();
    let _guard = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let stage = scratch("stage-abba");
    let program = stage_c(&stage, "abba_deadlock");

    let container = Container::start(&stage, &program, &[]);
    let report = trace(&container);
    let deadlocks = of_kind(&report, "deadlock");
    assert_eq!(deadlocks.len(), 1, "{report:#}");
    let cycle = deadlocks[0]["cycle"].as_array().expect("the cycle");
    assert_eq!(cycle.len(), 2, "{cycle:?}");
    assert_eq!(cycle[0]["held_by"], cycle[1]["tid"]);
    assert_eq!(cycle[1]["held_by"], cycle[0]["tid"]);
    // Host ids: the threads of the container as the host numbers them.
    let tasks: Vec<u64> = std::fs::read_dir(format!("/proc/{}/task", container.host_pid))
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    for link in cycle {
        assert!(tasks.contains(&link["tid"].as_u64().unwrap()), "{link}");
    }
    assert_names_the_container(&report, &container);
}

#[test]
fn a_static_go_goroutine_leak_in_a_container_has_its_frames() {
    require_root();
    let _guard = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let stage = scratch("stage-go");
    let program = stage_go(&stage, "g01_chan_recv");

    let container = Container::start(&stage, &program, &[]);
    std::thread::sleep(Duration::from_millis(700));
    let report = trace(&container);
    let leaks = of_kind(&report, "goroutine_leak");
    assert_eq!(leaks.len(), 1, "{:#?}", candidates(&report));
    let leak = leaks[0];
    assert_frame_at(
        &leak["blocking_stack"],
        "main.wait",
        "main.go",
        line_of("go/g01_chan_recv/main.go", "<-ch // LEAK"),
    );
    let go_statement = &leak["creation_stack"][0];
    assert!(
        go_statement["function"]
            .as_str()
            .is_some_and(|f| f.contains("main.handle")),
        "{go_statement}"
    );
    assert!(go_statement["file"]
        .as_str()
        .is_some_and(|f| f.ends_with("main.go")));
    assert_eq!(
        go_statement["line"].as_u64(),
        Some(line_of("go/g01_chan_recv/main.go", "go wait(ch)")),
        "{go_statement}"
    );
    assert!(leak["count"].as_u64().unwrap() >= 100, "{leak:#}");
    assert_names_the_container(&report, &container);
    drop(container);

    // The fixed twin stays unreported, and was analysed as Go.
    let container = Container::start(&stage, &program, &["-fixed"]);
    std::thread::sleep(Duration::from_millis(700));
    let report = trace(&container);
    assert!(candidates(&report).is_empty(), "{:#?}", candidates(&report));
    assert!(report["goroutines"]["snapshots"].as_u64().unwrap() >= 2);
    assert_names_the_container(&report, &container);
}
