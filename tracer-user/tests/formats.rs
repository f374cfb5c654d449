//! Every report format, produced by tracing real fixtures (root, real probes) and checked with
//! the tool its users open it with: `go tool pprof` for pprof, the target's own SIGQUIT dump for
//! the goroutine dump, headless Chromium for HTML; plus folded stacks, the flame graph, `diff`
//! and `--ignore`.
mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

const GO: &str = "1.27";
const TIMEOUT: Duration = Duration::from_secs(120);

fn out_dir(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("leaktrace-formats-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create the output directory");
    dir
}

/// Traces `pid` for `duration` writing `-o file` (format from its extension, or `extra`).
fn trace_to(pid: u32, duration: &str, file: &Path, extra: &[&str]) {
    let pid = pid.to_string();
    let file_arg = file.to_str().unwrap();
    let mut args = vec!["--pid", &pid, "--duration", duration, "-o", file_arg];
    args.extend_from_slice(extra);
    let output = run_leaktrace(&args, TIMEOUT);
    assert!(
        output.status.success(),
        "leaktrace {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn go_tool_pprof(args: &[&str], file: &Path) -> String {
    let cache = workspace_root().join(".cache");
    let output = Command::new(go_toolchain(GO))
        .args(["tool", "pprof"])
        .args(args)
        .arg(file)
        .env("GOTOOLCHAIN", "local")
        .env("GOCACHE", cache.join("go-build"))
        .env("GOPATH", cache.join("gopath"))
        .env("PPROF_TMPDIR", std::env::temp_dir())
        .env_remove("GOROOT")
        .output()
        .expect("run go tool pprof");
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    assert!(
        output.status.success(),
        "go tool pprof {args:?} failed: {}\n{stdout}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// `go tool pprof -raw` samples: (values, label text) per sample.
fn raw_samples(raw: &str) -> Vec<(Vec<i64>, String)> {
    let mut samples: Vec<(Vec<i64>, String)> = Vec::new();
    let mut in_samples = false;
    for line in raw.lines() {
        if line.starts_with("Samples:") {
            in_samples = true;
            continue;
        }
        if line.starts_with("Locations") || line.starts_with("Mappings") {
            in_samples = false;
        }
        if !in_samples {
            continue;
        }
        if let Some((values, _locations)) = line.split_once(':').filter(|(v, _)| {
            !v.trim().is_empty() && v.split_whitespace().all(|n| n.parse::<i64>().is_ok())
        }) {
            let values = values
                .split_whitespace()
                .map(|n| n.parse().unwrap())
                .collect();
            samples.push((values, String::new()));
        } else if let Some(last) = samples.last_mut() {
            last.1.push_str(line.trim());
            last.1.push(' ');
        }
    }
    samples
}

#[test]
fn pprof_reads_in_go_tool_pprof_with_counts_functions_and_labels() {
    require_root();
    let binary = build_go("g01_chan_recv", GO, &[]);
    let leaking = Fixture::start(&binary, &[]);
    let fixed = Fixture::start(&binary, &["-fixed"]);
    let deadlock = Fixture::start(&build_c("abba_deadlock"), &[]);
    let dir = out_dir("pprof");
    let (leak_file, fixed_file) = (dir.join("leak.pb.gz"), dir.join("fixed.pb.gz"));
    let c_file = dir.join("abba.pb.gz");
    std::thread::scope(|s| {
        s.spawn(|| trace_to(fixed.pid(), "3s", &fixed_file, &[]));
        s.spawn(|| trace_to(deadlock.pid(), "2s", &c_file, &[]));
        trace_to(leaking.pid(), "3s", &leak_file, &[]);
    });

    // A C program's deadlock: one sample of 2 threads, both threads' functions in it.
    let c_raw = go_tool_pprof(&["-raw"], &c_file);
    println!("{c_raw}");
    let c_samples = raw_samples(&c_raw);
    let deadlocks: Vec<_> = c_samples
        .iter()
        .filter(|(_, labels)| labels.contains("kind:[deadlock]"))
        .collect();
    assert_eq!(deadlocks.len(), 1, "{c_samples:?}");
    assert_eq!(deadlocks[0].0[0], 2, "two threads");
    assert!(
        deadlocks[0].0[1] >= 2_000_000_000,
        "two threads blocked >= 1 s each"
    );
    let c_top = go_tool_pprof(&["-top"], &c_file);
    assert!(
        c_top.contains("transfer_a_to_b") || c_top.contains("transfer_b_to_a"),
        "{c_top}"
    );
    let bytes = std::fs::read(&leak_file).unwrap();
    assert_eq!(&bytes[..2], b"\x1f\x8b", "pprof files are gzip");

    let raw = go_tool_pprof(&["-raw"], &leak_file);
    println!("{raw}");
    assert!(raw.contains("goroutine/count blocked/nanoseconds"), "{raw}");
    let samples = raw_samples(&raw);
    let leak: Vec<_> = samples
        .iter()
        .filter(|(_, labels)| labels.contains("kind:[goroutine_leak]"))
        .collect();
    assert_eq!(leak.len(), 1, "one goroutine_leak sample: {samples:?}");
    let (values, labels) = leak[0];
    // 100 leaked goroutines a second for 3 s: far more than a handful.
    assert!(values[0] >= 100, "goroutine count {values:?}");
    assert!(values[1] > 0, "blocked time {values:?}");
    for label in [
        "verdict:[candidate]",
        "wait_reason:[chan receive]",
        "creation_site:[main.handle (main.go:",
        "fingerprint:[goroutine_leak:",
        "score:[",
    ] {
        assert!(labels.contains(label), "{label} missing from {labels}");
    }
    let line = line_of("go/g01_chan_recv/main.go", "<-ch // LEAK");
    assert!(
        raw.contains("main.wait") && raw.contains(&format!("main.go:{line}")),
        "main.wait at main.go:{line} missing:\n{raw}"
    );
    let top = go_tool_pprof(&["-top", "-sample_index=goroutine"], &leak_file);
    println!("{top}");
    assert!(top.contains("main.wait"), "{top}");
    assert!(top.contains("runtime.gopark"), "{top}");

    let fixed_raw = go_tool_pprof(&["-raw"], &fixed_file);
    assert!(
        !raw_samples(&fixed_raw)
            .iter()
            .any(|(_, labels)| labels.contains("verdict:[candidate]")),
        "the fixed twin has no candidate:\n{fixed_raw}"
    );
}

/// A traceback dump parsed: goroutine id -> (state, [(function, file:line)], created by).
type Dump = HashMap<u64, (String, Vec<(String, String)>, Option<String>)>;

fn parse_dump(text: &str) -> Dump {
    let mut dump = Dump::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let Some(header) = line.strip_prefix("goroutine ") else {
            continue;
        };
        // Go 1.23+ SIGQUIT dumps add `gp=0x... m=... mp=...` between the id and the state.
        let Some((_, rest)) = header.split_once(" [") else {
            continue;
        };
        let id = header.split(' ').next().unwrap_or("");
        let Ok(goid) = id.parse::<u64>() else {
            continue;
        };
        // "chan receive, 2 minutes]:" -> "chan receive"; Go may add ", locked to thread".
        let state = rest.split([',', ']']).next().unwrap_or("").to_string();
        let mut frames = Vec::new();
        let mut created_by = None;
        while let Some(&next) = lines.peek() {
            if next.is_empty() || next.starts_with("goroutine ") {
                break;
            }
            let function_line = lines.next().unwrap();
            let location = lines
                .next_if(|l| l.starts_with('\t'))
                .map(|l| l.trim().split(" +0x").next().unwrap_or("").to_string())
                .unwrap_or_default();
            if let Some(creator) = function_line.strip_prefix("created by ") {
                created_by = Some(format!("{creator} {location}"));
            } else if function_line.starts_with("runtime.goexit(") {
                // Shown at GOTRACEBACK=system and above (a SIGQUIT dump), not in debug=2 dumps.
            } else if let Some(open) = function_line.rfind('(') {
                frames.push((function_line[..open].to_string(), location));
            }
        }
        dump.insert(goid, (state, frames, created_by));
    }
    dump
}

#[test]
fn the_goroutine_dump_agrees_with_the_targets_own_sigquit_dump() {
    require_root();
    let binary = build_go("g01_chan_recv", GO, &[]);
    let dir = out_dir("goroutines");
    let stderr_path = dir.join("sigquit.txt");
    let stderr = std::fs::File::create(&stderr_path).unwrap();
    // Low rate: few goroutines change between leaktrace's last read and the SIGQUIT.
    let mut child = Command::new(&binary)
        .args(["-rate", "20"])
        .env("GOTRACEBACK", "all")
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .expect("start the fixture");
    let pid = child.id();
    std::thread::sleep(Duration::from_millis(500));
    let dump_path = dir.join("dump.txt");
    let output = run_leaktrace(
        &[
            "--pid",
            &pid.to_string(),
            "--duration",
            "2s",
            "--format",
            "goroutines",
            "-o",
            dump_path.to_str().unwrap(),
        ],
        TIMEOUT,
    );
    // SAFETY: signalling the fixture this test started; Go dumps all goroutines and exits.
    unsafe { libc::kill(pid as i32, libc::SIGQUIT) };
    let _ = child.wait();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let ours_text = std::fs::read_to_string(&dump_path).unwrap();
    let theirs_text = std::fs::read_to_string(&stderr_path).unwrap();
    let (ours, theirs) = (parse_dump(&ours_text), parse_dump(&theirs_text));
    println!(
        "leaktrace: {} goroutines, SIGQUIT: {}",
        ours.len(),
        theirs.len()
    );

    let line = line_of("go/g01_chan_recv/main.go", "<-ch // LEAK");
    let leaked = |dump: &Dump| -> Vec<u64> {
        let mut ids: Vec<u64> = dump
            .iter()
            .filter(|(_, (_, frames, _))| {
                frames
                    .iter()
                    .any(|(f, at)| f == "main.wait" && at.ends_with(&format!("main.go:{line}")))
            })
            .map(|(id, _)| *id)
            .collect();
        ids.sort();
        ids
    };
    let (our_leaked, their_leaked) = (leaked(&ours), leaked(&theirs));
    // ~40 leaked by then (20 a second); the ones leaked after leaktrace's last read are extra.
    assert!(our_leaked.len() >= 30, "{ours_text}");
    let missing: Vec<_> = our_leaked
        .iter()
        .filter(|id| !their_leaked.contains(id))
        .collect();
    assert!(
        missing.is_empty(),
        "leaked goroutines not in Go's dump: {missing:?}"
    );

    let (mut agree, mut compared) = (0, 0);
    for (id, (state, frames, created_by)) in &ours {
        let Some((their_state, their_frames, their_created_by)) = theirs.get(id) else {
            continue;
        };
        if state == "running" || their_state == "running" || state != their_state {
            continue; // it moved between the two reads
        }
        compared += 1;
        if frames == their_frames && created_by == their_created_by {
            agree += 1;
        } else {
            println!("goroutine {id} differs:\n ours   {frames:?} {created_by:?}\n theirs {their_frames:?} {their_created_by:?}");
        }
    }
    println!("{agree} of {compared} parked goroutines agree");
    assert!(compared >= 30, "compared {compared}");
    assert!(agree * 10 >= compared * 9, "{agree} of {compared} agree");
    for id in &our_leaked {
        let (state, _, created_by) = &ours[id];
        assert_eq!(state, "chan receive");
        assert!(
            created_by
                .as_deref()
                .is_some_and(|c| c.starts_with("main.handle in goroutine 1")),
            "{created_by:?}"
        );
        assert_eq!(ours[id], theirs[id], "leaked goroutine {id}");
    }
}

#[test]
fn folded_stacks_of_a_deadlock_and_a_flame_graph_of_a_go_leak() {
    require_root();
    let dir = out_dir("folded");
    let c_fixture = Fixture::start(&build_c("abba_deadlock"), &[]);
    let go_fixture = Fixture::start(&build_go("g01_chan_recv", GO, &[]), &[]);
    let (folded, svg) = (dir.join("abba.folded"), dir.join("g01.svg"));
    std::thread::scope(|s| {
        s.spawn(|| trace_to(c_fixture.pid(), "2s", &folded, &[]));
        trace_to(go_fixture.pid(), "3s", &svg, &[]);
    });
    let text = std::fs::read_to_string(&folded).unwrap();
    println!("{text}");
    let deadlock: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("deadlock;"))
        .collect();
    assert_eq!(deadlock.len(), 2, "one line per deadlocked thread:\n{text}");
    for (line, function) in deadlock.iter().zip(["transfer_a_to_b", "transfer_b_to_a"]) {
        let (stack, count) = line.rsplit_once(' ').unwrap();
        assert_eq!(count, "1");
        let frames: Vec<&str> = stack.split(';').collect();
        let at = frames.iter().position(|f| *f == function);
        assert!(at.is_some(), "{function} in {stack}");
        // Root first: the thread's start is before the function that blocks.
        let start = frames.iter().position(|f| f.starts_with("teller_"));
        assert!(start < at, "root first: {stack}");
    }
    // A goroutine dump of a program that has no goroutines: a clear error, not an empty file.
    let output = run_leaktrace(
        &[
            "--pid",
            &c_fixture.pid().to_string(),
            "--duration",
            "500ms",
            "--format",
            "goroutines",
        ],
        TIMEOUT,
    );
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("not a Go program"), "{stderr}");
    // Refused once the target is known, before the trace is spent on it.
    assert!(!stderr.contains("tracing pid"), "{stderr}");

    let svg = std::fs::read_to_string(&svg).unwrap();
    assert!(
        svg.starts_with("<?xml") && svg.contains("<svg"),
        "{}",
        &svg[..200.min(svg.len())]
    );
    assert!(
        svg.contains("main.wait"),
        "the leaked goroutines' frame is drawn"
    );
    assert!(svg.contains("goroutine_leak"));
}

#[test]
fn the_html_report_renders_in_headless_chromium_without_script_errors() {
    require_root();
    let dir = out_dir("html");
    let fixture = Fixture::start(&build_go("g01_chan_recv", GO, &[]), &[]);
    let html = dir.join("report.html");
    trace_to(fixture.pid(), "3s", &html, &[]);
    let page = std::fs::read_to_string(&html).unwrap();
    // Self-contained: nothing is loaded from anywhere when the page is viewed.
    for attr in ["src=\"http", "href=\"http", "src=\"//", "@import"] {
        assert!(!page.contains(attr), "{attr} in the page");
    }

    let chromium = |args: &[&str]| {
        let profile = dir.join(format!("profile-{}", args.len()));
        let output = Command::new("chromium")
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .args(args)
            .arg(format!("file://{}", html.display()))
            .stdin(Stdio::null())
            .output()
            .expect("chromium (scripts/setup-chromium.sh installs it)");
        assert!(
            output.status.success(),
            "chromium: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).to_string()
    };
    let dom = chromium(&["--dump-dom", "--virtual-time-budget=5000"]);
    let shot = dir.join("report.png");
    chromium(&[
        &format!("--screenshot={}", shot.display()),
        "--window-size=1200,2400",
    ]);
    println!("screenshot: {}", shot.display());
    assert!(std::fs::metadata(&shot)
        .map(|m| m.len() > 10_000)
        .unwrap_or(false));

    let errors = dom
        .split("id=\"script-errors\">")
        .nth(1)
        .and_then(|rest| rest.split("</div>").next())
        .expect("the error box");
    assert_eq!(errors, "", "script errors");
    let candidates = page.matches("<div class=\"candidate").count();
    assert!(candidates >= 1);
    assert!(
        dom.contains(&format!("data-rendered=\"{candidates} candidates\"")),
        "the script ran to its end over {candidates} candidates"
    );
    // Charts were drawn (one polyline each) and every candidate is shown with its stack.
    assert!(dom.matches("<polyline").count() >= 2, "charts drawn");
    assert!(dom.contains("goroutine_leak") && dom.contains("main.wait"));
    assert_eq!(dom.matches("data-fingerprint=").count(), candidates);
}

#[test]
fn diff_of_two_reports_and_ignore_rules() {
    require_root();
    let dir = out_dir("diff");
    let fixture = Fixture::start(&build_go("g01_chan_recv", GO, &[]), &[]);
    let (before, after) = (dir.join("before.json"), dir.join("after.json"));
    let rules = dir.join("ignore.txt");
    std::fs::write(
        &rules,
        "# known: the g01 fixture's leak\nkind goroutine_leak & top-function main.wait & wait-reason chan receive\n",
    )
    .unwrap();
    trace_to(fixture.pid(), "2s", &before, &[]);
    trace_to(
        fixture.pid(),
        "2s",
        &after,
        &["--ignore", rules.to_str().unwrap()],
    );

    let after_json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&after).unwrap()).unwrap();
    let leak = of_kind(&after_json, "goroutine_leak");
    assert_eq!(leak.len(), 1, "suppressed, not dropped");
    assert_eq!(leak[0]["suppressed_by"]["line"], 2);
    assert!(leak[0]["fingerprint"]
        .as_str()
        .unwrap()
        .starts_with("goroutine_leak:"));

    let output = run_leaktrace(
        &["diff", before.to_str().unwrap(), after.to_str().unwrap()],
        TIMEOUT,
    );
    let text = String::from_utf8_lossy(&output.stdout);
    println!("{text}");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let grown = text
        .lines()
        .find(|l| l.contains(leak[0]["fingerprint"].as_str().unwrap()))
        .expect("the leak is in the diff");
    // The same leak in both (same fingerprint across two runs), bigger the second time.
    assert!(grown.starts_with("GROWN"), "{grown}");
    assert!(
        !text.contains("NEW ") && !text.contains("RESOLVED"),
        "{text}"
    );

    // Bad input: clear errors, non-zero exit, before any tracing.
    std::fs::write(&rules, "kind goroutine_leak\nwait-reasn chan receive\n").unwrap();
    let pid = fixture.pid().to_string();
    let output = run_leaktrace(
        &[
            "--pid",
            &pid,
            "--duration",
            "1s",
            "--ignore",
            rules.to_str().unwrap(),
        ],
        TIMEOUT,
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("ignore.txt:2") && stderr.contains("wait-reasn"),
        "{stderr}"
    );
    let output = run_leaktrace(
        &["diff", rules.to_str().unwrap(), after.to_str().unwrap()],
        TIMEOUT,
    );
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("is not a JSON report"));
}
