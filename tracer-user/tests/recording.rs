//! `leaktrace record` on a live fixture (real eBPF probes, so root): the recording replays to
//! the report the live run gave, apart from the run-specific fields
//! (`tracer_user::replay::RUN_SPECIFIC_FIELDS`).
mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use serde_json::Value;

/// The report without the fields that belong to the run (the tracer's CPU time and peak RSS).
fn without_run_specific(mut report: Value) -> Value {
    for field in tracer_user::replay::RUN_SPECIFIC_FIELDS {
        let (object, key) = field.split_once('.').expect("object.key");
        report[object]
            .as_object_mut()
            .expect("the field's object")
            .remove(key)
            .unwrap_or_else(|| panic!("{field} is in the report"));
    }
    report
}

#[test]
fn a_live_run_and_the_replay_of_its_recording_give_the_same_report() {
    require_root();
    let fixture = Fixture::start(&build_c("abba_deadlock"), &[]);
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let recording = dir.join(format!("abba-{}.jsonl.gz", std::process::id()));
    let live = dir.join(format!("abba-{}.live.json", std::process::id()));
    let pid = fixture.pid().to_string();
    let output = run_leaktrace(
        &[
            "record",
            "-o",
            recording.to_str().unwrap(),
            "--report",
            live.to_str().unwrap(),
            "--pid",
            &pid,
            "--duration",
            "2s",
        ],
        Duration::from_secs(120),
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let live: Value = serde_json::from_slice(&std::fs::read(&live).unwrap()).unwrap();
    let replayed = json_report(&run_leaktrace(
        &["report", recording.to_str().unwrap(), "--format", "json"],
        Duration::from_secs(60),
    ));
    // What was traced is there to compare: the deadlock and the thread joining it.
    assert_eq!(of_kind(&live, "deadlock").len(), 1, "{live:#}");
    assert_eq!(of_kind(&live, "futex_wait").len(), 1, "{live:#}");
    assert_eq!(without_run_specific(live), without_run_specific(replayed));
}
