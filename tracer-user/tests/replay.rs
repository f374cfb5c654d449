//! Recorded traces of fixtures (`tests/recordings/`, made by `cargo xtask record-fixtures` with
//! the real probes) analysed again: model + analysis + report without root, against the report
//! each recording gave when it was made (`NAME.json`, byte for byte) and the facts of its leak.
//!
//! The expected reports must not change in a refactor: a difference here is a change of
//! behaviour. Re-record (and review the diff of the expected JSON) only when the recording
//! format changes.
mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{functions, leaktrace, of_kind, run_leaktrace};
use serde_json::Value;
use tracer_user::cli::Format;

fn recording(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/recordings/{name}.jsonl.gz"))
}

/// Replays `name`, checks the JSON is the checked-in one byte for byte, and returns it.
fn replayed(name: &str) -> Value {
    let rendered = tracer_user::app::render_recording(&recording(name), Format::Json, None)
        .unwrap_or_else(|e| panic!("{name}: {e:#}"));
    let expected_path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/recordings/{name}.json"));
    let expected = std::fs::read(&expected_path).expect("the expected report");
    if rendered != expected {
        let got = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}.replayed.json"));
        std::fs::write(&got, &rendered).unwrap();
        panic!(
            "{name}: the replay differs from {}: see `diff {} {}`",
            expected_path.display(),
            expected_path.display(),
            got.display()
        );
    }
    let report: Value = serde_json::from_slice(&rendered).expect("JSON");
    // Every other format renders from the same analysis (a goroutine dump only for Go).
    for format in [
        Format::Text,
        Format::Pprof,
        Format::Goroutines,
        Format::Folded,
        Format::Flamegraph,
        Format::Html,
    ] {
        let rendered = tracer_user::app::render_recording(&recording(name), format, None);
        if format == Format::Goroutines && report["goroutines"].is_null() {
            let error = format!(
                "{:#}",
                rendered.expect_err("no dump of a program without goroutines")
            );
            assert!(error.contains("not a Go program"), "{error}");
            continue;
        }
        let bytes = rendered.unwrap_or_else(|e| panic!("{name} as {format:?}: {e:#}"));
        assert!(!bytes.is_empty(), "{name} as {format:?}");
    }
    report
}

/// The one candidate of `kind`.
fn the_one<'a>(report: &'a Value, kind: &str) -> &'a Value {
    let found = of_kind(report, kind);
    assert_eq!(found.len(), 1, "one {kind}: {:#?}", report["candidates"]);
    found[0]
}

fn has(stack: &Value, function: &str) -> bool {
    functions(stack).iter().any(|f| f == function)
}

#[test]
fn an_abba_deadlock_replays_as_one_deadlock_and_its_joiner() {
    let report = replayed("abba_deadlock");
    let deadlock = the_one(&report, "deadlock");
    assert_eq!(deadlock["count"], 2);
    let threads = deadlock["threads"].as_array().unwrap();
    assert!(threads
        .iter()
        .any(|t| has(&t["blocking_stack"], "transfer_a_to_b")));
    assert!(threads
        .iter()
        .any(|t| has(&t["blocking_stack"], "transfer_b_to_a")));
    assert_eq!(deadlock["cycle"].as_array().unwrap().len(), 2);
    let joiner = the_one(&report, "futex_wait");
    assert_eq!(joiner["count"], 1);
    assert!(has(&joiner["blocking_stack"], "main"));
    assert_eq!(report["candidates"].as_array().unwrap().len(), 2);
}

#[test]
fn waiters_on_a_condvar_nobody_signals_replay_as_one_group() {
    let report = replayed("condvar_never_signalled");
    let group = the_one(&report, "futex_wait");
    assert_eq!(group["count"], 3);
    assert!(has(&group["blocking_stack"], "wait_for_job"));
    assert_eq!(group["wakes_during_trace"], 0);
    assert_eq!(report["candidates"].as_array().unwrap().len(), 1);
}

#[test]
fn a_thread_leak_replays_as_a_growing_leak_with_its_creation() {
    let report = replayed("thread_leak");
    let leak = the_one(&report, "thread_leak");
    assert!(leak["count"].as_u64().unwrap() >= 20, "{leak:#}");
    assert!(has(&leak["blocking_stack"], "wait_for_reply"));
    assert!(has(&leak["creation_stack"], "spawn_leaky_task"));
    assert!(leak["thread_group"]["growth_per_s"].as_f64().unwrap() > 5.0);
    // Reported once: the leaked threads alive before the trace (creation unseen) are blocked
    // where its members are, and count with it, not as a second futex group. All but main.
    assert_eq!(
        report["candidates"].as_array().unwrap().len(),
        1,
        "{report:#}"
    );
    let alive = report["native_io"]["threads_alive"].as_u64().unwrap();
    assert_eq!(leak["count"].as_u64().unwrap(), alive - 1, "{leak:#}");
    assert!(
        leak["thread_group"]["existed_before_trace"]
            .as_u64()
            .unwrap()
            > 0
    );
}

#[test]
fn an_event_loop_nobody_wakes_replays_as_stuck() {
    let report = replayed("epoll_stuck");
    let stuck = the_one(&report, "epoll_wait");
    assert_eq!(stuck["count"], 1);
    assert!(has(&stuck["blocking_stack"], "run_event_loop"));
    assert_eq!(stuck["epoll"]["loops"][0]["fds"][0]["kind"], "pipe");
    assert_eq!(stuck["epoll"]["events_during_trace"], 0);
    assert_eq!(report["candidates"].as_array().unwrap().len(), 1);
}

#[test]
fn timerfds_never_closed_replay_as_an_fd_leak() {
    let report = replayed("timerfd_per_request");
    let leak = the_one(&report, "timerfd");
    assert_eq!(leak["timerfd"]["pattern"], "fd_leak");
    assert!(leak["count"].as_u64().unwrap() >= 40, "{leak:#}");
    assert!(has(&leak["creation_stack"], "make_timer"));
    assert_eq!(report["candidates"].as_array().unwrap().len(), 1);
}

#[test]
fn leaked_goroutines_replay_as_one_leak_at_their_receive() {
    let report = replayed("go_chan_recv");
    let leak = the_one(&report, "goroutine_leak");
    assert_eq!(leak["wait_reason"], "chan receive");
    assert!(leak["count"].as_u64().unwrap() >= 50, "{}", leak["count"]);
    assert!(has(&leak["blocking_stack"], "main.wait"));
    assert!(has(&leak["creation_stack"], "main.handle"));
    assert_eq!(report["candidates"].as_array().unwrap().len(), 1);
}

#[test]
fn the_report_command_replays_a_recording_and_applies_ignore_rules() {
    let file = recording("epoll_stuck");
    let file = file.to_str().unwrap();
    let output = run_leaktrace(
        &["report", file, "--format", "json"],
        Duration::from_secs(60),
    );
    let report = common::json_report(&output);
    let expected: Value = serde_json::from_slice(
        &std::fs::read(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/recordings/epoll_stuck.json"),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(report, expected);

    let rules = Path::new(env!("CARGO_TARGET_TMPDIR")).join("replay-ignore.txt");
    std::fs::write(&rules, "kind epoll_wait & function run_event_loop\n").unwrap();
    let output = run_leaktrace(
        &[
            "report",
            file,
            "--format",
            "json",
            "--ignore",
            rules.to_str().unwrap(),
        ],
        Duration::from_secs(60),
    );
    let report = common::json_report(&output);
    assert_eq!(report["candidates"][0]["suppressed_by"]["line"], 1);
}

#[test]
fn what_is_not_a_recording_is_refused_with_an_error_not_a_panic() {
    let report = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/recordings/epoll_stuck.json");
    let bytes = std::fs::read(recording("epoll_stuck")).unwrap();
    let truncated = Path::new(env!("CARGO_TARGET_TMPDIR")).join("truncated.jsonl.gz");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    for (path, says) in [
        (report.as_path(), "not a leaktrace recording"),
        (truncated.as_path(), "was cut short"),
        (
            Path::new("/nonexistent/recording"),
            "cannot read the recording",
        ),
    ] {
        let output = leaktrace()
            .arg("report")
            .arg(path)
            .output()
            .expect("run leaktrace");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(
            output.status.code(),
            Some(1),
            "{}: {stderr}",
            path.display()
        );
        assert!(stderr.contains(says), "{}: {stderr}", path.display());
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    // Cut short: the report of what was there on stdout, saying so, and the exit status too.
    let output = leaktrace().arg("report").arg(&truncated).output().unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stdout.starts_with("leaktrace report for pid "), "{stdout}");
    let note = stdout
        .lines()
        .find(|l| l.starts_with("note: the recording was cut short"))
        .unwrap_or_else(|| panic!("no note in {stdout}"));
    assert!(note.contains("it cannot be read past line "), "{note}");
    assert!(note.contains("this report covers its first "), "{note}");
    assert!(
        stderr.contains("truncated.jsonl.gz: the recording was cut short"),
        "{stderr}"
    );
    // --detail was in the lost trailer: unknown, not the CLI's default.
    assert!(
        stdout.contains("\ndetail unknown: the recording was cut short"),
        "{stdout}"
    );
    let json = leaktrace()
        .args(["report", "--format", "json"])
        .arg(&truncated)
        .output()
        .unwrap();
    let cut: Value = serde_json::from_slice(&json.stdout).expect("a JSON report");
    assert!(cut["tracer"].get("detail").is_none(), "{}", cut["tracer"]);
    // A JSON report is the likeliest wrong file: named as one, with the commands for it.
    let output = leaktrace().arg("report").arg(&report).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("is a leaktrace JSON report"), "{stderr}");
    assert!(stderr.contains("leaktrace diff OLD NEW"), "{stderr}");
}

#[test]
fn the_diff_command_exits_like_diff_1_and_names_a_recording() {
    let report = |name: &str| {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join(format!("tests/recordings/{name}.json"))
            .to_str()
            .unwrap()
            .to_string()
    };
    let (epoll, leak) = (report("epoll_stuck"), report("thread_leak"));
    let diff = |args: &[&str]| {
        let output = run_leaktrace(&[&["diff"][..], args].concat(), Duration::from_secs(60));
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        assert!(!stderr.contains("panicked"), "{stderr}");
        (output.status.code(), stdout, stderr)
    };
    // The same report: nothing new or grown.
    let (code, stdout, stderr) = diff(&[&leak, &leak]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stdout.starts_with("0 new, 0 grown, 0 shrunk, 0 resolved, 1 unchanged"),
        "{stdout}"
    );
    // Another program's report: its candidates are new.
    let (code, stdout, _) = diff(&[&epoll, &leak]);
    assert_eq!(code, Some(1), "{stdout}");
    assert!(stdout.contains("NEW "), "{stdout}");
    // The other way round, for CI: one JSON object, the change lists by kind.
    let (code, stdout, _) = diff(&[&leak, &epoll, "--format", "json"]);
    assert_eq!(code, Some(1), "the epoll loop is new: {stdout}");
    let json: Value = serde_json::from_str(&stdout).expect("one JSON object");
    assert!(json["warning"]
        .as_str()
        .unwrap()
        .contains("different programs"));
    assert_eq!(
        json["new"][0]["fingerprint"]
            .as_str()
            .unwrap()
            .split(':')
            .next(),
        Some("epoll_wait")
    );
    assert_eq!(
        json["resolved"][0]["fingerprint"]
            .as_str()
            .unwrap()
            .split(':')
            .next(),
        Some("thread_leak")
    );
    // A recording where a report belongs: named, with the command that makes its report; 2 as
    // for any trouble.
    let file = recording("epoll_stuck");
    let (code, _, stderr) = diff(&[file.to_str().unwrap(), &leak]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("epoll_stuck.jsonl.gz is a leaktrace recording, not a JSON report"),
        "{stderr}"
    );
    assert!(stderr.contains("leaktrace report "), "{stderr}");
    let (code, _, stderr) = diff(&[&leak, "/nonexistent/report.json"]);
    assert_eq!(code, Some(2), "{stderr}");
}

#[test]
fn timerfd_ages_and_one_shot_timers_are_worded_as_what_they_are() {
    let render = |name: &str, format: Format| {
        String::from_utf8(
            tracer_user::app::render_recording(&recording(name), format, None).unwrap(),
        )
        .unwrap()
    };
    let text = render("timerfd_per_request", Format::Text);
    assert!(text.contains("\n   age: p50 "), "{text}");
    assert!(!text.contains("blocked: p50"), "{text}");
    assert!(text.contains("next 59m5"), "{text}");
    assert!(text.contains(", one-shot\n"), "{text}");
    assert!(!text.contains("interval 0ns"), "{text}");
    let html = render("timerfd_per_request", Format::Html);
    assert!(
        html.contains("data-label=\"age\""),
        "timerfd ages are no blocked time"
    );
    // Threads do block.
    assert!(render("abba_deadlock", Format::Text).contains("\n   blocked: p50 "));
    assert!(render("abba_deadlock", Format::Html).contains("data-label=\"blocked time\""));
}

#[test]
fn the_html_report_shows_every_thread_of_a_deadlock_and_the_detail_mode() {
    let html = String::from_utf8(
        tracer_user::app::render_recording(&recording("abba_deadlock"), Format::Html, None)
            .unwrap(),
    )
    .unwrap();
    // Both tellers, each at its own place, as in the text report.
    for function in ["transfer_a_to_b", "transfer_b_to_a"] {
        assert!(html.contains(function), "{function} missing from the HTML");
    }
    assert_eq!(html.matches("waits on futex 0x").count(), 2, "{html}");
    // Recorded before --detail existed: full.
    assert!(
        html.contains("detail full: every probe attached for the whole trace"),
        "the HTML says which mode traced"
    );
}
