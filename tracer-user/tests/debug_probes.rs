//! Issue 14: `--debug-probes`. The probes log (aya-log) what a counter cannot say, here why a Go
//! probe window closes under a goroutine spawn storm (`spawn_storm`: 100,000 `go` statements a
//! second, far more than the 2,000 hits a window allows itself). Without the flag nothing is
//! logged, the same probes are attached, and the logging code is gone from the programs the
//! kernel runs (the verifier drops it: its switch is a read-only global). Real probes (root).
mod common;

use std::collections::BTreeMap;
use std::process::{Output, Stdio};
use std::time::Duration;

use common::*;

/// Programs whose size is compared (the kernel keeps 15 bytes of a name, so no name here may
/// be the start of another's: sys_enter_futex_wait would pass for sys_enter_futex).
const COMPARED: [&str; 2] = ["go_newproc", "raw_sys_exit"];

/// A trace of `pid` (6 s, JSON) with `extra` options: its output, and the size of the
/// [`COMPARED`] programs it loaded as the kernel runs them (bytes of translated instructions,
/// by name), read once the first Go probe window has loaded the Go probe.
fn trace(pid: u32, extra: &[&str]) -> (Output, BTreeMap<String, u32>) {
    let pid = pid.to_string();
    let child = leaktrace()
        .args(["--pid", &pid, "--duration", "6s", "--format", "json"])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start leaktrace");
    let mut sizes = BTreeMap::new();
    // The Go probe is loaded once leaktrace has read the runtime (slower on a loaded host).
    for _ in 0..50 {
        std::thread::sleep(Duration::from_millis(100));
        let (held, _) = held_ids(child.id());
        for info in aya::programs::loaded_programs().flatten() {
            let name = info.name_as_str().unwrap_or_default().to_string();
            if held.contains(&u64::from(info.id())) && COMPARED.contains(&name.as_str()) {
                sizes.insert(name, info.size_translated().unwrap_or(0));
            }
        }
        if sizes.len() == COMPARED.len() {
            break;
        }
    }
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let output = rx
        .recv_timeout(Duration::from_secs(120))
        .expect("leaktrace finishes")
        .expect("wait for leaktrace");
    (output, sizes)
}

fn probe_log_lines(output: &Output) -> Vec<String> {
    String::from_utf8_lossy(&output.stderr)
        .lines()
        .filter(|line| line.starts_with("leaktrace: probe log"))
        .map(str::to_string)
        .collect()
}

#[test]
fn a_spawn_storm_closes_the_go_probe_window_and_only_debug_probes_says_why() {
    require_root();
    let binary = build_go("spawn_storm", "1.22", &[]);
    let fixture = Fixture::start(&binary, &[]);
    let prefix = format!("leaktrace: probe log (pid {}): ", fixture.pid());

    let (logged, on_sizes) = trace(fixture.pid(), &["--debug-probes"]);
    let on_report = json_report(&logged);
    let lines = probe_log_lines(&logged);
    println!("{}", lines.join("\n"));
    assert!(
        lines.iter().all(|line| line.starts_with(&prefix)),
        "every probe line names the traced pid: {lines:#?}"
    );
    assert!(
        lines.iter().any(
            |line| line.contains("Go probe window: 2001 hits in this window")
                && line.contains("more than 2000: a storm")
        ),
        "the window-closing line, with the numbers: {lines:#?}"
    );
    assert!(
        lines
            .iter()
            .any(|line| line.contains("the stack budget for goroutine creations is spent after")),
        "the spent budget's line: {lines:#?}"
    );
    // The storm the line spoke of is the one the collector acted on.
    let notes = on_report["tracer"]["notes"].to_string();
    assert!(
        notes.contains("closed early because the target created more than 20000"),
        "{notes}"
    );

    let (quiet, off_sizes) = trace(fixture.pid(), &[]);
    let off_report = json_report(&quiet);
    assert_eq!(
        probe_log_lines(&quiet),
        Vec::<String>::new(),
        "nothing is logged without --debug-probes"
    );
    assert_eq!(
        off_report["tracer"]["probes"], on_report["tracer"]["probes"],
        "the same probes are loaded and attached either way"
    );

    println!("translated bytes, --debug-probes: {on_sizes:?}; without: {off_sizes:?}");
    for name in COMPARED {
        let (on, off) = (on_sizes.get(name), off_sizes.get(name));
        let (Some(&on), Some(&off)) = (on, off) else {
            panic!("{name} was not loaded in both traces: {on_sizes:?} {off_sizes:?}");
        };
        // The logging code is kilobytes of instructions with the flag (most of go_newproc; a
        // third of raw_sys_exit, which holds every windowed syscall's handler); without it the
        // verifier has dropped it (all that is left of it is the load of the switch).
        assert!(
            on >= off + 4096,
            "{name}: {off} bytes without --debug-probes, {on} with: the logging code was not dropped"
        );
    }
}
