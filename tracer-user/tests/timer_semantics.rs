//! Issue 13 item 2: Go timer semantics come from the program's GODEBUG, not from its runtime
//! version alone. One program (`fixtures/go/tick_async`: `<-time.Tick(50ms)` in a loop, a new
//! unstopped ticker every round) built in a module of its own with a chosen `go` line:
//! - Go 1.26, `go 1.22`: the build info's DefaultGODEBUG has `asynctimerchan=1`, the tickers
//!   stay in the heap firing forever: a leak;
//! - Go 1.26, `go 1.23`: collected by the GC, no candidate; with `GODEBUG=asynctimerchan=1` in
//!   the environment: a leak again;
//! - Go 1.27, `go 1.22`: Go 1.27 removed the setting, no candidate.
//!
//! The fixed twin (`-fixed`: the ticker is stopped) is never a candidate. Real processes, root.
mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use serde_json::Value;

/// Builds `fixtures/go/tick_async` with Go `go` in a fresh module whose go.mod says
/// `go <go_line>`.
fn build(go: &str, go_line: &str) -> PathBuf {
    let module = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "tick_async-go{go}-line{go_line}-{}",
        std::process::id()
    ));
    std::fs::create_dir_all(&module).expect("create the module directory");
    std::fs::copy(
        fixtures().join("go/tick_async/main.go"),
        module.join("main.go"),
    )
    .expect("copy the fixture");
    std::fs::write(
        module.join("go.mod"),
        format!("module ticks\n\ngo {go_line}\n"),
    )
    .expect("write go.mod");
    let binary = module.join("ticks");
    let cache = workspace_root().join(".cache");
    let output = Command::new(go_toolchain(go))
        .args(["build", "-o"])
        .arg(&binary)
        .arg(".")
        .current_dir(&module)
        .env("GOTOOLCHAIN", "local")
        .env("GOFLAGS", "-mod=mod")
        .env("GOCACHE", cache.join("go-build"))
        .env("GOPATH", cache.join("gopath"))
        .env_remove("GOROOT")
        .env_remove("GODEBUG")
        .output()
        .expect("run go build");
    assert!(
        output.status.success(),
        "building tick_async with Go {go} (go {go_line}) failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    binary
}

/// Runs the program (with `GODEBUG` set to `godebug` when given) a little, traces it 3 s.
fn trace(binary: &Path, fixed: bool, godebug: Option<&str>) -> Value {
    require_root();
    let mut args: Vec<String> = Vec::new();
    // env(1) execs the program: the fixture's pid is the program's.
    let program = match godebug {
        Some(value) => {
            args.push(format!("GODEBUG={value}"));
            args.push(binary.display().to_string());
            PathBuf::from("/usr/bin/env")
        }
        None => binary.to_path_buf(),
    };
    if fixed {
        args.push("-fixed".into());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let fixture = Fixture::start(&program, &args);
    std::thread::sleep(std::time::Duration::from_millis(700));
    let report = trace_pid(fixture.pid(), "3s", &[]);
    assert!(
        report["go_timers"]["snapshots"].as_u64().unwrap_or(0) >= 2,
        "timers were not read: {:?}",
        report["tracer"]["notes"]
    );
    report
}

fn timer_leaks(report: &Value) -> Vec<&Value> {
    of_kind(report, "go_timer")
}

/// The overview says which semantics apply, and why (the why contains `because`).
fn assert_semantics(report: &Value, semantics: &str, because: &str) {
    let timers = &report["go_timers"];
    assert_eq!(timers["channel_semantics"], semantics, "{timers}");
    let why = timers["channel_semantics_why"].as_str().unwrap();
    assert!(why.contains(because), "{why}");
}

/// The leak: one candidate, the growing tickers every 50 ms firing into full channels.
fn assert_ticker_leak(report: &Value) {
    let leaks = timer_leaks(report);
    assert_eq!(
        leaks.len(),
        1,
        "one ticker leak expected: {:#?}",
        candidates(report)
    );
    let leak = leaks[0];
    let group = &leak["go_timers"];
    assert_eq!(group["kind"], "ticker", "{group}");
    assert_eq!(group["period_ns"], 50_000_000);
    assert_eq!(leak["grew"], true, "{:?}", leak["reasons"]);
    // 20 new tickers a second: dozens after 3.7 s, most with a full channel.
    let count = leak["count"].as_u64().unwrap();
    assert!(count >= 40, "only {count}");
    assert!(
        group["channel_full"].as_u64().unwrap() * 2 > count,
        "{group}"
    );
}

fn no_timer_leak(report: &Value, what: &str) {
    assert!(
        timer_leaks(report).is_empty(),
        "{what}: {:#?}",
        timer_leaks(report)
    );
}

#[test]
fn go_1_22_module_on_go_1_26_keeps_the_old_timers() {
    let binary = build("1.26", "1.22");
    let report = trace(&binary, false, None);
    // The runtime has the new implementation; its GODEBUG default keeps the old semantics.
    assert_eq!(report["go_timers"]["implementation"], "go1.23+");
    assert_semantics(&report, "go1.22-", "DefaultGODEBUG");
    assert_ticker_leak(&report);
    let fixed = trace(&binary, true, None);
    assert_semantics(&fixed, "go1.22-", "DefaultGODEBUG");
    no_timer_leak(&fixed, "go 1.22 on Go 1.26, fixed");
}

#[test]
fn go_1_23_module_on_go_1_26_collects_them() {
    let binary = build("1.26", "1.23");
    let report = trace(&binary, false, None);
    assert_semantics(&report, "go1.23+", "no asynctimerchan setting");
    no_timer_leak(&report, "go 1.23 on Go 1.26");
}

#[test]
fn godebug_in_the_environment_overrides_the_default() {
    let binary = build("1.26", "1.23");
    let report = trace(&binary, false, Some("asynctimerchan=1"));
    assert_semantics(&report, "go1.22-", "environment");
    assert_ticker_leak(&report);
    // And the other way: a go 1.22 module whose environment says asynctimerchan=0.
    let old_module = build("1.26", "1.22");
    let report = trace(&old_module, false, Some("http2client=0,asynctimerchan=0"));
    assert_semantics(&report, "go1.23+", "environment");
    no_timer_leak(&report, "go 1.22 on Go 1.26 with GODEBUG=asynctimerchan=0");
}

#[test]
fn go_1_27_dropped_the_setting() {
    let binary = build("1.27", "1.22");
    let report = trace(&binary, false, None);
    assert_semantics(&report, "go1.23+", "removed");
    no_timer_leak(&report, "go 1.22 on Go 1.27");
}
