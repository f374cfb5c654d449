//! Every goroutine of a Go target as the Go runtime's own traceback text: the format of
//! `/debug/pprof/goroutine?debug=2` and of a SIGQUIT dump (runtime/traceback.go,
//! `goroutineheader`, `traceback1`, `printcreatedby1`; Go 1.21+), which panicparse,
//! goroutine-inspect and similar tools read:
//!
//! ```text
//! goroutine 18 [chan receive, 3 minutes]:
//! runtime.gopark(...)
//! \t/usr/lib/go/src/runtime/proc.go:425
//! main.worker(...)
//! \t/src/app/main.go:12
//! created by main.start in goroutine 1
//! \t/src/app/main.go:20
//! ```
//!
//! It comes from leaktrace's last read of the goroutines (made from outside, without stopping
//! the world), so it differs from Go's own in three ways: arguments are not read and print as
//! `(...)` (as Go prints inlined frames), the `+0x..` PC offset is left out (parsers treat it as
//! optional), and the minutes come from the runtime's `g.waitsince` where the runtime has set it
//! (as Go's own dump does, runtime/traceback.go `goroutineheader`), else from how long leaktrace
//! saw the goroutine at the same place: a lower bound for goroutines parked before the trace.
use std::fmt::Write as _;

use crate::model::goroutines::{GoStatus, Goroutine, GoroutineModel};
use crate::model::Frame;

/// The last goroutine snapshot of a trace.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub go_version: Option<String>,
    /// Each goroutine, and since when (ns, trace clock) it has been at its current place.
    pub goroutines: Vec<(Goroutine, u64)>,
    /// When the snapshot was taken (ns, trace clock).
    pub at_ns: u64,
}

impl Snapshot {
    /// None when no goroutine was ever read (not a Go target).
    pub fn of(model: &GoroutineModel) -> Option<Self> {
        if model.snapshots == 0 {
            return None;
        }
        let mut goroutines: Vec<(Goroutine, u64)> = model
            .latest
            .iter()
            .map(|g| {
                let since = model
                    .seen
                    .get(&g.goid)
                    .map_or(model.last_snapshot_ns, |s| s.at_place_since_ns);
                (g.clone(), since)
            })
            .collect();
        goroutines.sort_by_key(|(g, _)| g.goid);
        Some(Snapshot {
            go_version: model.go_version.clone(),
            goroutines,
            at_ns: model.last_snapshot_ns,
        })
    }
}

/// Whether Go's own dumps hide this goroutine: runtime-owned goroutines are shown only with
/// GOTRACEBACK=system (runtime/traceback.go `isSystemGoroutine`: started in a `runtime.`
/// function other than `runtime.main` and `runtime.handleAsyncEvent`).
pub fn is_system_goroutine(g: &Goroutine) -> bool {
    g.start_function.as_deref().is_some_and(|f| {
        f.starts_with("runtime.")
            && !matches!(
                f,
                "runtime.main" | "runtime.handleAsyncEvent" | "runtime.corostart"
            )
    })
}

/// Why a report has no goroutine dump: the trace's notes about the Go runtime when it has
/// any (a Go program whose goroutines could not be read says why there: an unsupported
/// version, an unreadable runtime, failed reads), else that the program is not Go (a live run
/// refuses that before tracing; a recording of one gets here).
pub fn no_dump(report: &super::Report) -> String {
    let t = &report.target;
    let go_notes: Vec<&str> = report
        .tracer
        .notes
        .iter()
        .filter(|note| note.contains("goroutine"))
        .map(String::as_str)
        .collect();
    if go_notes.is_empty() {
        format!(
            "no goroutine dump: pid {} ({}, {}) is not a Go program (no goroutines were read); \
             use --format text, json or another format",
            t.pid, t.comm, t.exe
        )
    } else {
        format!(
            "no goroutine dump: the goroutines of pid {} ({}, {}) were never read: {}",
            t.pid,
            t.comm,
            t.exe,
            go_notes.join("; ")
        )
    }
}

/// The dump: user goroutines in id order, each block ending with an empty line, as Go does.
pub fn render(snapshot: &Snapshot) -> String {
    let mut out = String::new();
    for (g, since_ns) in &snapshot.goroutines {
        if is_system_goroutine(g) {
            continue;
        }
        write_goroutine(&mut out, g, snapshot.at_ns.saturating_sub(*since_ns));
        out.push('\n');
    }
    out
}

fn write_goroutine(out: &mut String, g: &Goroutine, at_place_ns: u64) {
    let state = match (g.status, &g.wait_reason) {
        (GoStatus::Waiting, Some(reason)) => reason.clone(),
        (status, _) => status.to_string(),
    };
    let minutes = at_place_ns / 60_000_000_000;
    let minutes = if g.status == GoStatus::Waiting && minutes >= 1 {
        format!(", {minutes} minutes")
    } else {
        String::new()
    };
    let _ = writeln!(out, "goroutine {} [{state}{minutes}]:", g.goid);
    if g.stack.is_empty() {
        // What Go prints for a goroutine on another CPU.
        let _ = writeln!(
            out,
            "\tgoroutine running on other thread; stack unavailable"
        );
    }
    for frame in g.stack.iter() {
        if frame.function.as_deref() == Some("runtime.goexit") {
            continue;
        }
        write_frame(out, frame, "", "(...)");
    }
    if g.go_statement.function.is_some() && g.goid != 1 {
        let parent = g
            .parent_goid
            .filter(|&p| p != 0)
            .map(|p| format!(" in goroutine {p}"))
            .unwrap_or_default();
        write_frame(out, &g.go_statement, "created by ", &parent);
    }
}

fn write_frame(out: &mut String, frame: &Frame, prefix: &str, suffix: &str) {
    let function = frame.function.as_deref().unwrap_or("?");
    let _ = writeln!(out, "{prefix}{function}{suffix}");
    match (&frame.file, frame.line) {
        (Some(file), Some(line)) => {
            let _ = writeln!(out, "\t{file}:{line}");
        }
        _ => {
            let _ = writeln!(out, "\t?:0 pc={:#x}", frame.addr);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_dump_says_why_from_what_the_trace_knows() {
        // A C program's report: no notes about goroutines, and none to point to.
        let mut report = crate::report::tests::report();
        let error = format!(
            "{:#}",
            report.render(crate::cli::Format::Goroutines).unwrap_err()
        );
        assert!(
            error.contains("pid 10 (abba, /tmp/abba) is not a Go program"),
            "{error}"
        );
        assert!(!error.contains("notes"), "{error}");
        // A Go program leaktrace could not read: the notes that say why, in the error itself.
        report.tracer.notes = vec![
            "cannot read lock owners: permission denied".into(),
            "goroutines are not analysed: Go 1.99 is newer than leaktrace knows; threads are"
                .into(),
        ];
        let error = no_dump(&report);
        assert!(error.contains("the goroutines of pid 10 (abba, /tmp/abba) were never read: goroutines are not analysed: Go 1.99"), "{error}");
        assert!(!error.contains("lock owners"), "{error}");
        assert!(!error.contains("not a Go program"), "{error}");
    }

    fn frame(function: &str, file: &str, line: u32) -> Frame {
        Frame {
            function: Some(function.into()),
            file: Some(file.into()),
            line: Some(line),
            ..Frame::unknown(0x4000)
        }
    }

    #[test]
    fn renders_the_runtime_traceback_format() {
        // Built on the model's own test helper, so fields added to `Goroutine` need no edit here.
        let mut worker =
            crate::model::goroutines::tests::goroutine(18, "main.start", &[], "chan receive");
        worker.go_statement = frame("main.start", "/src/main.go", 20).into();
        worker.start_function = Some("main.worker".into());
        worker.parent_goid = Some(1);
        worker.stack = vec![
            frame("runtime.gopark", "/go/src/runtime/proc.go", 425),
            frame("main.worker", "/src/main.go", 12),
            frame("runtime.goexit", "/go/src/runtime/asm_amd64.s", 1700),
        ]
        .into();
        let gc = Goroutine {
            goid: 2,
            start_function: Some("runtime.forcegchelper".into()),
            ..worker.clone()
        };
        let running = Goroutine {
            goid: 1,
            status: GoStatus::Running,
            wait_reason: None,
            start_function: Some("runtime.main".into()),
            stack: Default::default(),
            ..worker.clone()
        };
        let snapshot = Snapshot {
            go_version: Some("go1.27.3".into()),
            goroutines: vec![(running, 0), (gc, 0), (worker, 0)],
            at_ns: 185_000_000_000,
        };
        assert_eq!(
            render(&snapshot),
            "goroutine 1 [running]:\n\tgoroutine running on other thread; stack unavailable\n\n\
             goroutine 18 [chan receive, 3 minutes]:\n\
             runtime.gopark(...)\n\t/go/src/runtime/proc.go:425\n\
             main.worker(...)\n\t/src/main.go:12\n\
             created by main.start in goroutine 1\n\t/src/main.go:20\n\n"
        );
    }
}
