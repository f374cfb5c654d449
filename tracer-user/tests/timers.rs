//! Go timer leaks (catalogue T1-T4) found from the outside in unmodified, running Go programs,
//! by reading the runtime's timer heaps (no probes), on Go 1.22 (the old timers) and 1.27 (the
//! timers rewritten in 1.23), each with its fixed twin that must produce no timer candidate.
//! Real processes, real symbolization (root).
mod common;

use common::*;
use serde_json::Value;

/// Timer candidates of a report.
fn timer_leaks(report: &Value) -> Vec<&Value> {
    candidates(report)
        .iter()
        .filter(|c| c["kind"] == "go_timer")
        .collect()
}

/// Runs the fixture (leaky or fixed) a little, then traces it for 3 s.
fn trace(dir: &str, go: &str, fixed: bool) -> Value {
    require_root();
    let binary = build_go(dir, go, &[]);
    let args: &[&str] = if fixed { &["-fixed"] } else { &[] };
    let fixture = Fixture::start(&binary, args);
    std::thread::sleep(std::time::Duration::from_millis(700));
    let report = trace_pid(fixture.pid(), "3s", &[]);
    let timers = &report["go_timers"];
    assert!(
        timers["snapshots"].as_u64().unwrap_or(0) >= 2,
        "{dir} (Go {go}): timers were not read: {:?}",
        report["tracer"]["notes"]
    );
    let implementation = if go == "1.22" { "go1.22-" } else { "go1.23+" };
    assert_eq!(timers["implementation"], implementation);
    report
}

/// The one timer candidate of a leaky run: pending, growing, with its detail.
fn one_growing_leak<'a>(report: &'a Value, dir: &str, go: &str, kind: &str) -> &'a Value {
    let leaks = timer_leaks(report);
    assert_eq!(
        leaks.len(),
        1,
        "{dir} (Go {go}): one timer leak expected, got {:#?}",
        candidates(report)
    );
    let leak = leaks[0];
    let group = &leak["go_timers"];
    assert_eq!(group["kind"], kind, "{dir} (Go {go}): {group}");
    // 100 requests a second, one timer each: hundreds, and growing while traced.
    let count = leak["count"].as_u64().unwrap();
    assert!(count >= 200, "{dir} (Go {go}): only {count} timers");
    assert_eq!(leak["grew"], true, "{dir}: {:?}", leak["reasons"]);
    assert!(group["count_at_start"].as_u64().unwrap() < count);
    assert!(group["lifecycle"]["created"].as_u64().unwrap() >= 100);
    assert_eq!(group["lifecycle"]["stopped"], 0);
    assert!(report["go_timers"]["pending_max"].as_u64().unwrap() >= count);
    leak
}

/// The candidate's starter stack (sampled by the timer-start probe) reaches the program's call
/// in `function` at the line of `marker`, and goes on to the fixture's request loop.
fn assert_starter(leak: &Value, function: &str, dir: &str, marker: &str) {
    let stack = &leak["creation_stack"];
    assert_frame_at(
        stack,
        function,
        "main.go",
        line_of(&format!("go/{dir}/main.go"), marker),
    );
    assert!(
        functions(stack).iter().any(|f| f.ends_with("loop.Serve")),
        "{:?}",
        functions(stack)
    );
    assert!(leak["go_timers"]["creation_site"]
        .as_str()
        .unwrap()
        .starts_with(&format!("at {function} ")));
}

fn no_timer_candidate(report: &Value, what: &str) {
    assert!(
        timer_leaks(report).is_empty(),
        "{what} reported: {:#?}",
        timer_leaks(report)
    );
}

fn after_func(go: &str) {
    let dir = "t1_afterfunc";
    let report = trace(dir, go, false);
    let leak = one_growing_leak(&report, dir, go, "func");
    let group = &leak["go_timers"];
    // The callback is the user's closure, named and placed where its code starts: its
    // declaration or its first statement, as the compiler attributes the entry.
    let line = line_of("go/t1_afterfunc/main.go", "time.AfterFunc(time.Hour");
    let callback = group["callback"].as_str().unwrap();
    assert!(
        callback == format!("main.handle.func1 (main.go:{line})")
            || callback == format!("main.handle.func1 (main.go:{})", line + 1),
        "{group}"
    );
    // Who started them: the timer-start probe's sample, from the AfterFunc call in main.handle
    // out to the fixture's request loop.
    assert_starter(
        leak,
        "main.handle",
        "t1_afterfunc",
        "time.AfterFunc(time.Hour",
    );
    // AfterFunc(1h): every deadline is most of an hour away.
    assert!(group["due_in_ns"]["p50"].as_u64().unwrap() > 3_000_000_000_000);
    assert_eq!(group["lifecycle"]["fired"], 0);
    assert!(
        report["go_timers"]["by_kind"]["AfterFunc"]["pending"]
            .as_u64()
            .unwrap()
            >= leak["count"].as_u64().unwrap()
    );
    let fixed = trace(dir, go, true);
    no_timer_candidate(&fixed, &format!("{dir} -fixed (Go {go})"));
    assert_eq!(
        fixed["go_timers"]["by_kind"]["AfterFunc"]["pending"]
            .as_u64()
            .unwrap_or(0),
        0
    );
}

fn timer_loop(go: &str) {
    let dir = "t2_timer_loop";
    let report = trace(dir, go, false);
    if go == "1.22" {
        let leak = one_growing_leak(&report, dir, go, "chan");
        assert!(
            leak["reasons"]
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r.as_str().unwrap().contains("Go 1.22 and older")),
            "{:?}",
            leak["reasons"]
        );
        assert!(leak["go_timers"]["due_in_ns"]["p50"].as_u64().unwrap() > 3_000_000_000_000);
        assert_starter(
            leak,
            "main.handle",
            "t2_timer_loop",
            "time.NewTimer(time.Hour)",
        );
    } else {
        // Go 1.23+: the unstopped, unreferenced timers are collected by the GC, not a leak.
        no_timer_candidate(&report, &format!("{dir} (Go {go})"));
        assert_eq!(
            report["go_timers"]["by_kind"]["channel timer"]["pending"]
                .as_u64()
                .unwrap_or(0),
            0
        );
    }
    no_timer_candidate(&trace(dir, go, true), &format!("{dir} -fixed (Go {go})"));
}

fn ticker(go: &str) {
    let dir = "t3_ticker";
    let report = trace(dir, go, false);
    if go == "1.22" {
        let leak = one_growing_leak(&report, dir, go, "ticker");
        let group = &leak["go_timers"];
        assert_eq!(group["period_ns"], 100_000_000);
        // They fire, and nobody receives: most channels are full, ticks were seen.
        let full = group["channel_full"].as_u64().unwrap();
        assert!(full * 2 > leak["count"].as_u64().unwrap(), "{group}");
        assert!(group["lifecycle"]["fired"].as_u64().unwrap() >= 100);
    } else {
        no_timer_candidate(&report, &format!("{dir} (Go {go})"));
    }
    no_timer_candidate(&trace(dir, go, true), &format!("{dir} -fixed (Go {go})"));
}

fn blocking_callback(go: &str) {
    let dir = "t4_blocking_callback";
    let report = trace(dir, go, false);
    let leaks = timer_leaks(&report);
    assert_eq!(leaks.len(), 1, "{:#?}", candidates(&report));
    let leak = leaks[0];
    // Reported once, as a timer whose callback never finished, not also as a goroutine leak.
    assert!(
        !candidates(&report)
            .iter()
            .any(|c| c["kind"] == "goroutine_leak"),
        "{:#?}",
        candidates(&report)
    );
    let count = leak["count"].as_u64().unwrap();
    assert!(count >= 200, "only {count}");
    assert_eq!(leak["grew"], true);
    assert_eq!(leak["wait_reason"], "chan receive");
    assert_frame_at(
        &leak["blocking_stack"],
        "main.handle.func1",
        "main.go",
        line_of("go/t4_blocking_callback/main.go", "<-done // LEAK"),
    );
    assert_eq!(leak["creation_stack"][0]["function"], "time.goFunc");
    let group = &leak["go_timers"];
    assert_eq!(group["kind"], "func");
    assert_eq!(group["callback_goroutines"]["count"], count);
    assert!(group["callback"]
        .as_str()
        .unwrap()
        .starts_with("main.handle.func1"));
    let fixed = trace(dir, go, true);
    assert!(
        candidates(&fixed)
            .iter()
            .all(|c| c["kind"] != "go_timer" && c["kind"] != "goroutine_leak"),
        "{:#?}",
        candidates(&fixed)
    );
}

mod go_1_22 {
    #[test]
    fn t1_afterfunc() {
        super::after_func("1.22");
    }
    #[test]
    fn t2_timer_loop() {
        super::timer_loop("1.22");
    }
    #[test]
    fn t3_ticker() {
        super::ticker("1.22");
    }
    #[test]
    fn t4_blocking_callback() {
        super::blocking_callback("1.22");
    }
}

mod go_1_27 {
    #[test]
    fn t1_afterfunc() {
        super::after_func("1.27");
    }
    #[test]
    fn t2_timer_loop() {
        super::timer_loop("1.27");
    }
    #[test]
    fn t3_ticker() {
        super::ticker("1.27");
    }
    #[test]
    fn t4_blocking_callback() {
        super::blocking_callback("1.27");
    }
}

/// Go 1.19 (the oldest supported) has the old timers too.
#[test]
fn t1_afterfunc_on_go_1_19() {
    let dir = "t1_afterfunc";
    require_root();
    let binary = build_go(dir, "1.19", &[]);
    let fixture = Fixture::start(&binary, &[]);
    std::thread::sleep(std::time::Duration::from_millis(700));
    let report = trace_pid(fixture.pid(), "3s", &[]);
    assert_eq!(report["go_timers"]["implementation"], "go1.22-");
    one_growing_leak(&report, dir, "1.19", "func");
}

/// A stripped binary: the timer heaps cannot be found; said in a note, goroutines still read.
#[test]
fn a_stripped_binary_says_why_timers_are_not_analysed() {
    require_root();
    let binary = build_go("t1_afterfunc", "1.27", &["-ldflags=-s -w"]);
    let fixture = Fixture::start(&binary, &[]);
    let report = trace_pid(fixture.pid(), "1500ms", &[]);
    assert!(report.get("go_timers").is_none());
    let notes = report["tracer"]["notes"].to_string();
    assert!(notes.contains("Go timers are not analysed"), "{notes}");
    assert!(report["goroutines"]["snapshots"].as_u64().unwrap() >= 1);
}
