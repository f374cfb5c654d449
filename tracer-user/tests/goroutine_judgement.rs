//! How goroutine groups are judged stuck (issue 13, items 7 and 8), on real processes with real
//! probes (root), built with Go 1.27 and 1.22:
//! - busy is not stuck: a busy service (bursts of short request goroutines, more runnable work
//!   than CPUs, another process hogging every CPU) gets no goroutine candidate;
//! - a leak that happened before leaktrace attached is still a leak: 50 goroutines left blocked
//!   by 50 requests, 30 s before tracing, each way (send, receive, select, Cond, Mutex), are a
//!   candidate; the fixed twins and an idle pool of 16 workers on one shared channel are not.
mod common;

use std::time::Duration;

use common::*;

/// (mode, wait reasons the runtime gives, handler whose goroutine leaks, marker on its line)
const LATE_LEAKS: &[(&str, &[&str], &str, &str)] = &[
    ("send", &["chan send"], "main.handleSend", "// LEAK send"),
    ("recv", &["chan receive"], "main.handleRecv", "// LEAK recv"),
    ("select", &["select"], "main.handleSelect", "// LEAK select"),
    (
        "cond",
        &["sync.Cond.Wait"],
        "main.handleCond",
        "// LEAK cond",
    ),
    (
        "mutex",
        &["sync.Mutex.Lock"],
        "main.handleMutex",
        "// LEAK mutex",
    ),
];

const VERSIONS: &[&str] = &["1.27", "1.22"];

/// The goroutine groups leaktrace listed outside the candidates.
fn other_groups(report: &serde_json::Value) -> &Vec<serde_json::Value> {
    report["goroutines"]["other_groups"]
        .as_array()
        .expect("a Go target has goroutine groups")
}

fn reasons(candidate: &serde_json::Value) -> Vec<String> {
    candidate["reasons"]
        .as_array()
        .map(|r| {
            r.iter()
                .map(|r| r.as_str().unwrap_or_default().to_string())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn a_busy_process_has_no_goroutine_candidate() {
    require_root();
    for go in VERSIONS {
        let binary = build_go("busy", go, &[]);
        // Another process keeps every CPU busy: the service's runnable goroutines queue.
        let _hog = Fixture::start(&binary, &["-hog"]);
        let busy = Fixture::start(&binary, &[]);
        std::thread::sleep(Duration::from_secs(1));
        let report = trace_pid(busy.pid(), "8s", &[]);
        let leaks = of_kind(&report, "goroutine_leak");
        assert!(
            leaks.is_empty(),
            "busy (Go {go}): goroutine candidates {leaks:#?}"
        );
        // It was analysed while busy: snapshots of many goroutines, its request groups listed
        // with why they are not candidates.
        assert!(report["goroutines"]["snapshots"].as_u64().unwrap() >= 4);
        assert!(report["goroutines"]["count_max"].as_u64().unwrap() >= 20);
        let requests: Vec<&serde_json::Value> = other_groups(&report)
            .iter()
            .filter(|g| {
                g["created_at"]
                    .as_str()
                    .is_some_and(|c| c.starts_with("main.client"))
            })
            .collect();
        assert!(
            !requests.is_empty(),
            "busy (Go {go}): no request group listed"
        );
        assert!(requests.iter().all(|g| g["not_a_candidate"].is_string()));
    }
}

#[test]
fn a_leak_over_before_attach_is_found_and_a_pool_is_not() {
    require_root();
    // Start everything first, then one shared wait: each leak is 30 s old when traced.
    struct Run {
        go: &'static str,
        mode: &'static str,
        fixed: bool,
        fixture: Fixture,
    }
    let mut runs = Vec::new();
    for &go in VERSIONS {
        let binary = build_go("late_leak", go, &[]);
        for &(mode, ..) in LATE_LEAKS {
            for fixed in [false, true] {
                let mut args = vec!["-mode", mode];
                if fixed {
                    args.push("-fixed");
                }
                runs.push(Run {
                    go,
                    mode,
                    fixed,
                    fixture: Fixture::start(&binary, &args),
                });
            }
        }
        runs.push(Run {
            go,
            mode: "pool",
            fixed: false,
            fixture: Fixture::start(&binary, &["-mode", "pool"]),
        });
    }
    std::thread::sleep(Duration::from_secs(30));

    for run in &runs {
        let (go, mode) = (run.go, run.mode);
        let report = trace_pid(run.fixture.pid(), "3s", &[]);
        assert!(report["goroutines"]["snapshots"].as_u64().unwrap() >= 2);
        // Nothing at all for the fixed twins and the pool: neither their goroutines nor the
        // runtime's idle threads (its network poller included) are stuck.
        let goroutine_leaks = of_kind(&report, "goroutine_leak");
        if run.fixed {
            assert!(
                candidates(&report).is_empty(),
                "{mode} -fixed (Go {go}) reported: {:#?}",
                candidates(&report)
            );
            continue;
        }
        if mode == "pool" {
            assert!(
                candidates(&report).is_empty(),
                "the idle pool (Go {go}) reported: {:#?}",
                candidates(&report)
            );
            let pool = other_groups(&report)
                .iter()
                .find(|g| g["count"] == 16)
                .unwrap_or_else(|| panic!("pool (Go {go}): no group of 16 workers"));
            let why = pool["not_a_candidate"].as_str().unwrap_or_default();
            assert!(
                why.contains("16 of them wait on one shared channel"),
                "pool (Go {go}): {why}"
            );
            continue;
        }
        let &(_, wait_reasons, handler, marker) = LATE_LEAKS
            .iter()
            .find(|l| l.0 == mode)
            .expect("a mode of the table");
        let leaks = goroutine_leaks;
        assert_eq!(
            leaks.len(),
            1,
            "{mode} (Go {go}): one goroutine leak expected, got {:#?}",
            candidates(&report)
        );
        let leak = leaks[0];
        assert_eq!(leak["count"], 50, "{mode} (Go {go})");
        assert_eq!(leak["grew"], false, "{mode} (Go {go}): the leak was over");
        let reason = leak["wait_reason"].as_str().unwrap_or_default();
        assert!(
            wait_reasons.contains(&reason),
            "{mode} (Go {go}): wait reason {reason:?}"
        );
        assert_frame_at(
            &leak["blocking_stack"],
            &format!("{handler}.func"),
            "main.go",
            line_of("go/late_leak/main.go", marker),
        );
        let go_statement = leak["creation_stack"][0]["function"]
            .as_str()
            .unwrap_or_default();
        assert!(
            go_statement.starts_with(handler),
            "{mode} (Go {go}): go statement in {go_statement}"
        );
        // The evidence is what the target's memory shows, not growth.
        let why = reasons(leak);
        let evidence = match mode {
            "recv" | "select" => "waits alone on its own channel",
            _ => "without running: a pool idles on a receive or a select",
        };
        assert!(
            why.iter().any(|r| r.contains(evidence)),
            "{mode} (Go {go}): reasons {why:#?}"
        );
        assert!(
            why.iter().any(|r| r.contains("g.waitsince")),
            "{mode} (Go {go}): reasons {why:#?}"
        );
    }
}

/// The reader itself: the channel each parked goroutine waits on, read from the target's memory
/// (`g.waiting` -> `sudog.c`), and its run count (`g.trackingSeq`). 1,000 goroutines parked on
/// one channel share it; 50 leaked requests have one each; a select shows both its channels.
#[test]
fn the_reader_sees_which_channel_each_goroutine_waits_on() {
    use std::collections::HashSet;
    use tracer_user::goruntime;
    require_root();
    for go in VERSIONS {
        // The goroutines whose start function (a `go func() {...}()`, no wrapper) begins with
        // `function`, or, for None, those parked in a channel receive.
        let on = |binary: &std::path::Path, args: &[&str], function: Option<&str>| {
            let fixture = Fixture::start(binary, args);
            // The last goroutines started just before READY: let them park.
            std::thread::sleep(Duration::from_millis(300));
            let process = goruntime::inspect(fixture.pid())
                .expect("inspect")
                .expect("a Go program");
            assert!(process.wait_layout().is_ok(), "{:?}", process.wait_layout());
            let snapshot = process.snapshot().expect("snapshot");
            snapshot
                .goroutines
                .into_iter()
                .filter(|g| match function {
                    Some(function) => process
                        .function_at(g.startpc)
                        .is_some_and(|f| f.starts_with(function)),
                    None => g.wait_reason.as_deref() == Some("chan receive"),
                })
                .collect::<Vec<_>>()
        };
        let shared = on(&build_go("many", go, &[]), &["-n", "1000"], None);
        assert_eq!(shared.len(), 1000, "many (Go {go})");
        let channels: HashSet<&Vec<u64>> = shared.iter().map(|g| &g.waits_on).collect();
        assert_eq!(channels.len(), 1, "many (Go {go}): {channels:?}");
        assert_eq!(shared[0].waits_on.len(), 1);
        assert!(shared.iter().all(|g| g.tracking_seq.is_some()));

        let late = build_go("late_leak", go, &[]);
        for (mode, cases) in [("recv", 1), ("select", 2)] {
            let leaked = on(&late, &["-mode", mode], Some("main.handle"));
            assert_eq!(leaked.len(), 50, "{mode} (Go {go})");
            assert!(
                leaked.iter().all(|g| g.waits_on.len() == cases),
                "{mode} (Go {go}): {:?}",
                leaked.iter().map(|g| &g.waits_on).collect::<Vec<_>>()
            );
            let distinct: HashSet<u64> = leaked.iter().flat_map(|g| g.waits_on.clone()).collect();
            assert_eq!(distinct.len(), 50 * cases, "{mode} (Go {go})");
        }
        // A semaphore wait (sync.Cond) has no channel.
        let on_cond = on(&late, &["-mode", "cond"], Some("main.handle"));
        assert_eq!(on_cond.len(), 50, "cond (Go {go})");
        assert!(on_cond.iter().all(|g| g.waits_on.is_empty()));
    }
}
