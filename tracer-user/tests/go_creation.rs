//! Issue 13 items 5 and 6: a leaked goroutine's creation site reaches the program's own code.
//! - `g_http_body`: an HTTP client that never closes response bodies leaks net/http's
//!   readLoop/writeLoop goroutines, created in net/http by the transport's dialer goroutine:
//!   the candidate follows that ancestry to `main.fetch` and its `http.Get` line.
//! - `g_afterfunc_mutex`: `time.AfterFunc(10ms, f)` whose `f` blocks on a mutex held forever:
//!   the candidate names who called AfterFunc, not only the runtime's `time.goFunc`.
//!
//! On Go 1.22 and 1.27; each fixed twin stays out. Real processes and probes (root).
mod common;

use common::*;
use serde_json::Value;

/// Runs a fixture (leaky or fixed) a little, then traces it.
fn trace(dir: &str, go: &str, fixed: bool, args: &[&str], duration: &str) -> Value {
    require_root();
    let binary = build_go(dir, go, &[]);
    let mut args = args.to_vec();
    if fixed {
        args.push("-fixed");
    }
    let fixture = Fixture::start(&binary, &args);
    std::thread::sleep(std::time::Duration::from_millis(700));
    trace_pid(fixture.pid(), duration, &[])
}

/// Goroutine candidates whose goroutines sit in `function`.
fn sitting_in<'a>(report: &'a Value, function: &str) -> Vec<&'a Value> {
    of_kind(report, "goroutine_leak")
        .into_iter()
        .filter(|c| {
            functions(&c["blocking_stack"])
                .iter()
                .any(|f| f.contains(function))
        })
        .collect()
}

fn http_client(go: &str) {
    let dir = "g_http_body";
    // 50 requests a second: every one dials a new connection (the last one is still busy).
    let report = trace(dir, go, false, &["-rate", "50"], "4s");
    let request_line = line_of("go/g_http_body/main.go", "// REQUEST");
    let read_loops = sitting_in(&report, "(*persistConn).readLoop");
    assert!(
        !read_loops.is_empty(),
        "Go {go}: no readLoop candidate: {:#?}",
        candidates(&report)
    );
    for leak in read_loops
        .iter()
        .chain(sitting_in(&report, "(*persistConn).writeLoop").iter())
    {
        // The go statement is net/http's; the chain goes on to the request in main.fetch.
        let created_at = leak["goroutines"]["created_at"]
            .as_str()
            .unwrap_or_default();
        assert!(created_at.starts_with("net/http."), "{created_at}");
        assert_frame_at(
            &leak["creation_stack"],
            "main.fetch",
            "main.go",
            request_line,
        );
        let stack = functions(&leak["creation_stack"]);
        let dialer = stack.iter().position(|f| f.contains("dialConnFor"));
        let fetch = stack.iter().position(|f| f == "main.fetch");
        assert!(
            dialer.is_some() && dialer < fetch,
            "the chain passes through the dialer goroutine: {stack:?}"
        );
        let reasons = leak["reasons"].to_string();
        assert!(
            reasons.contains("in a goroutine created at net/http.")
                && reasons.contains(&format!("main.fetch (main.go:{request_line})")),
            "{reasons}"
        );
    }
    let fixed = trace(dir, go, true, &["-rate", "50"], "4s");
    assert!(
        of_kind(&fixed, "goroutine_leak").is_empty(),
        "Go {go}, fixed: {:#?}",
        candidates(&fixed)
    );
}

fn after_func_blocked(go: &str) {
    let dir = "g_afterfunc_mutex";
    let report = trace(dir, go, false, &[], "3s");
    let leaks = of_kind(&report, "go_timer");
    assert_eq!(leaks.len(), 1, "Go {go}: {:#?}", candidates(&report));
    let leak = leaks[0];
    let group = &leak["go_timers"];
    assert!(
        group["callback_goroutines"]["count"].as_u64().unwrap_or(0) >= 100,
        "{group}"
    );
    // The callback closure: `main.handle.func1` (`main.handle.1` on Go 1.27).
    assert_frame_at(
        &leak["blocking_stack"],
        "main.handle.",
        "main.go",
        line_of("go/g_afterfunc_mutex/main.go", "mu.Lock() // LEAK"),
    );
    // Who scheduled the callbacks: the AfterFunc call in main.handle, after the runtime's
    // time.goFunc that started each goroutine.
    let schedule_line = line_of("go/g_afterfunc_mutex/main.go", "// SCHEDULE");
    assert_eq!(leak["creation_stack"][0]["function"], "time.goFunc");
    assert_frame_at(
        &leak["creation_stack"],
        "main.handle",
        "main.go",
        schedule_line,
    );
    assert_frame_at(
        &group["starter_stack"],
        "main.handle",
        "main.go",
        schedule_line,
    );
    let site = group["creation_site"].as_str().unwrap();
    assert!(
        site.starts_with(&format!(
            "scheduled at main.handle (main.go:{schedule_line})"
        )),
        "{site}"
    );
    let fixed = trace(dir, go, true, &[], "3s");
    assert!(
        candidates(&fixed)
            .iter()
            .all(|c| c["kind"] != "go_timer" && c["kind"] != "goroutine_leak"),
        "Go {go}, fixed: {:#?}",
        candidates(&fixed)
    );
}

mod go_1_22 {
    #[test]
    fn http_client_without_body_close() {
        super::http_client("1.22");
    }
    #[test]
    fn after_func_callback_blocked() {
        super::after_func_blocked("1.22");
    }
}

mod go_1_27 {
    #[test]
    fn http_client_without_body_close() {
        super::http_client("1.27");
    }
    #[test]
    fn after_func_callback_blocked() {
        super::after_func_blocked("1.27");
    }
}
