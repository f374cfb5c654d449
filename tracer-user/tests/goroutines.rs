//! Goroutine leaks (catalogue G1-G13) found from the outside in unmodified, running Go programs,
//! on the oldest and newest supported Go versions and a stripped PIE binary, each with its fixed
//! twin that must stay unreported. Real processes, real probes, real symbolization (root).
mod common;

use common::*;

struct Pattern {
    /// The fixture directory under tests/fixtures/go.
    dir: &'static str,
    /// Wait reasons the runtime may give (older runtimes say "semacquire" for sync waits).
    wait_reasons: &'static [&'static str],
    /// Where the leaked goroutines sit: function, and a marker on the line.
    sits_in: &'static str,
    sits_at: &'static str,
    /// The `go` statement: function, and a marker on its line (None: it is in the standard
    /// library, whose line depends on the Go version).
    created_in: &'static str,
    created_at: Option<&'static str>,
}

const SYNC_WAIT: &[&str] = &["sync.WaitGroup.Wait", "semacquire"];
const MUTEX_WAIT: &[&str] = &["sync.Mutex.Lock", "semacquire"];

const PATTERNS: &[Pattern] = &[
    Pattern {
        dir: "g01_chan_recv",
        wait_reasons: &["chan receive"],
        sits_in: "main.wait",
        sits_at: "<-ch // LEAK",
        created_in: "main.handle",
        created_at: Some("go wait(ch)"),
    },
    Pattern {
        dir: "g02_chan_send",
        wait_reasons: &["chan send"],
        sits_in: "main.compute",
        sits_at: "result <- 42",
        created_in: "main.handle",
        created_at: Some("go compute(result)"),
    },
    Pattern {
        dir: "g03_range",
        wait_reasons: &["chan receive"],
        sits_in: "main.consume",
        sits_at: "for v := range ch {",
        created_in: "main.handle",
        created_at: Some("go consume(ch)"),
    },
    Pattern {
        dir: "g04_background_ctx",
        wait_reasons: &["sleep"],
        sits_in: "main.poll",
        sits_at: "time.Sleep(100 * time.Millisecond)",
        created_in: "main.handle",
        created_at: Some("go poll(context.Background())"),
    },
    Pattern {
        dir: "g05_waitgroup",
        wait_reasons: SYNC_WAIT,
        sits_in: "main.waitAll",
        sits_at: "wg.Wait()",
        created_in: "main.handle",
        created_at: Some("go waitAll(&wg)"),
    },
    Pattern {
        dir: "g06_once",
        wait_reasons: MUTEX_WAIT,
        sits_in: "main.useConfig",
        sits_at: "once.Do(func()",
        created_in: "main.handle",
        created_at: Some("go useConfig(fixed)"),
    },
    Pattern {
        dir: "g07_mutex",
        wait_reasons: MUTEX_WAIT,
        sits_in: "main.update",
        sits_at: "mu.Lock() // LEAK",
        created_in: "main.handle",
        created_at: Some("go update(fixed)"),
    },
    Pattern {
        dir: "g08_select_nil",
        wait_reasons: &["select (no cases)"],
        sits_in: "main.serve",
        sits_at: "select {} //",
        created_in: "main.handle",
        created_at: Some("go serve(done, fixed)"),
    },
    Pattern {
        dir: "g09_break_select",
        wait_reasons: &["select"],
        sits_in: "main.consumeLoop",
        sits_at: "select { // parks here",
        created_in: "main.handle",
        created_at: Some("go consumeLoop(msgs, done, fixed)"),
    },
    Pattern {
        dir: "g10_go_in_defer",
        wait_reasons: &["chan receive"],
        sits_in: "main.drain",
        sits_at: "for r := range results",
        created_in: "main.handle.func1",
        created_at: Some("go drain(results)"),
    },
    Pattern {
        dir: "g11_ticker",
        wait_reasons: &["chan receive"],
        sits_in: "main.watch",
        sits_at: "for range ticker.C",
        created_in: "main.handle",
        created_at: Some("go watch()"),
    },
    Pattern {
        dir: "g12_timeout_handler",
        wait_reasons: &["chan send"],
        sits_in: "main.slowHandler.func1",
        sits_at: "audit <- r.URL.Path // LEAK",
        created_in: "timeoutHandler",
        created_at: None,
    },
    Pattern {
        dir: "g13_consumer",
        wait_reasons: &["chan receive"],
        sits_in: "main.consume",
        sits_at: "m := <-msgs",
        created_in: "main.handle",
        created_at: Some("go consume(msgs, fixed)"),
    },
];

fn pattern(dir: &str) -> &'static Pattern {
    PATTERNS
        .iter()
        .find(|p| p.dir == dir)
        .expect("a pattern of the table")
}

/// Traces the leaky program under load (the leak grows meanwhile) and checks the candidate.
fn finds_the_leak(dir: &str, go: &str, flags: &[&str]) {
    require_root();
    let pattern = pattern(dir);
    let binary = build_go(dir, go, flags);
    // Let it run a little first: attaching to a service that is already leaking.
    let fixture = Fixture::start(&binary, &[]);
    std::thread::sleep(std::time::Duration::from_millis(700));
    let report = trace_pid(fixture.pid(), "3s", &[]);
    let leaks = of_kind(&report, "goroutine_leak");
    assert_eq!(
        leaks.len(),
        1,
        "{dir} (Go {go}): one goroutine leak expected, got {:#?}",
        candidates(&report)
    );
    let leak = leaks[0];
    let file = format!("{dir}/main.go");

    let reason = leak["wait_reason"].as_str().unwrap_or_default();
    assert!(
        pattern.wait_reasons.contains(&reason),
        "{dir}: wait reason {reason:?}, expected one of {:?}",
        pattern.wait_reasons
    );
    assert_frame_at(
        &leak["blocking_stack"],
        pattern.sits_in,
        "main.go",
        line_of(&format!("go/{file}"), pattern.sits_at),
    );
    let go_statement = &leak["creation_stack"][0];
    assert!(
        go_statement["function"]
            .as_str()
            .is_some_and(|f| f.contains(pattern.created_in)),
        "{dir}: go statement {go_statement}"
    );
    // The creation probe saw some of them being created: the creator's stack goes on from the
    // `go` statement to the fixture's request loop.
    let creation = functions(&leak["creation_stack"]);
    if pattern.created_at.is_some() {
        assert!(
            creation.iter().any(|f| f.ends_with("loop.Serve")),
            "{dir}: creation stack {creation:?}"
        );
    }
    if let Some(marker) = pattern.created_at {
        assert!(go_statement["file"].as_str().unwrap().ends_with("main.go"));
        assert_eq!(
            go_statement["line"].as_u64(),
            Some(line_of(&format!("go/{file}"), marker)),
            "{dir}: go statement {go_statement}"
        );
    }
    // 100 requests a second, each leaking one goroutine: hundreds, and growing while traced.
    let count = leak["count"].as_u64().unwrap();
    assert!(count >= 200, "{dir}: only {count} leaked goroutines");
    assert_eq!(leak["grew"], true, "{dir}: {:?}", leak["reasons"]);
    let group = &leak["goroutines"];
    assert!(group["count_at_start"].as_u64().unwrap() < count);
    assert!(group["created_during_trace"].as_u64().unwrap() >= 100);
    assert_eq!(
        report["goroutines"]["go_version"]
            .as_str()
            .map(|v| v.starts_with(&format!("go{go}"))),
        Some(true)
    );
    assert!(report["goroutines"]["count_max"].as_u64().unwrap() >= count);
}

/// The fixed twin, under the same load, must produce no candidate at all.
fn the_fix_is_not_reported(dir: &str, go: &str) {
    require_root();
    let binary = build_go(dir, go, &[]);
    let fixture = Fixture::start(&binary, &["-fixed"]);
    std::thread::sleep(std::time::Duration::from_millis(700));
    let report = trace_pid(fixture.pid(), "3s", &[]);
    assert!(
        candidates(&report).is_empty(),
        "{dir} -fixed (Go {go}) reported: {:#?}",
        candidates(&report)
    );
    // It was analysed as a Go program, not skipped.
    assert!(report["goroutines"]["snapshots"].as_u64().unwrap() >= 2);
    // A Go program without cgo has no C library and needs none: no note says it lacks one.
    let notes = report["tracer"]["notes"].to_string();
    assert!(!notes.contains("no C library"), "{dir}: {notes}");
    // The main goroutine has no go statement (Go's dumps print no "created by" for it).
    let created: Vec<&str> = report["goroutines"]["other_groups"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|g| g["created_at"].as_str())
        .collect();
    assert!(
        created.contains(&"the program's start (main goroutine)"),
        "{dir}: {created:?}"
    );
    assert!(
        !created.iter().any(|c| c.starts_with("runtime.newproc")),
        "{dir}: {created:?}"
    );
}

macro_rules! patterns {
    ($($name:ident: $dir:literal),* $(,)?) => {
        mod newest {
            $(
                #[test]
                fn $name() {
                    super::finds_the_leak($dir, "1.27", &[]);
                    super::the_fix_is_not_reported($dir, "1.27");
                }
            )*
        }
        mod oldest {
            $(
                #[test]
                fn $name() {
                    super::finds_the_leak($dir, "1.19", &[]);
                    super::the_fix_is_not_reported($dir, "1.19");
                }
            )*
        }
    };
}

patterns! {
    g01_chan_recv: "g01_chan_recv",
    g02_chan_send: "g02_chan_send",
    g03_range: "g03_range",
    g04_background_ctx: "g04_background_ctx",
    g05_waitgroup: "g05_waitgroup",
    g06_once: "g06_once",
    g07_mutex: "g07_mutex",
    g08_select_nil: "g08_select_nil",
    g09_break_select: "g09_break_select",
    g10_go_in_defer: "g10_go_in_defer",
    g11_ticker: "g11_ticker",
    g12_timeout_handler: "g12_timeout_handler",
    g13_consumer: "g13_consumer",
}

#[test]
fn a_stripped_pie_binary_is_read_through_the_version_table() {
    finds_the_leak(
        "g01_chan_recv",
        "1.27",
        &["-ldflags=-s -w", "-buildmode=pie"],
    );
    finds_the_leak("g07_mutex", "1.21", &["-ldflags=-s -w"]);
}

#[test]
fn a_non_go_program_gets_the_thread_report_without_goroutines() {
    require_root();
    let fixture = Fixture::start(&build_c("condvar_never_signalled"), &["1", "0"]);
    let report = trace_pid(fixture.pid(), "1500ms", &[]);
    assert!(report.get("goroutines").is_none());
    assert_eq!(candidates(&report).len(), 1);
    assert_eq!(candidates(&report)[0]["kind"], "futex_wait");
}
