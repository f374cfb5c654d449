//! Storms: targets far busier than a test fixture usually is, sized for a 2-core, 24 GB
//! machine. The assertions are bounds and accounting identities, never timings: leaktrace
//! finishes and reports, its peak RSS (the report's `tracer.max_rss_kb`) stays under
//! [`RSS_BOUND_KB`], counts are right, and whatever could not be followed is counted, not
//! dropped. Each test prints its figures (peak RSS, lost events, time to report).
mod common;

use std::io::{BufRead as _, BufReader, Read as _};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// leaktrace's peak RSS bound under every storm but the million goroutines (README,
/// "Reliability").
const RSS_BOUND_KB: u64 = 300 * 1024;

/// A fixture whose stdout lines arrive on a channel (READY already consumed).
struct Lines {
    child: Child,
    lines: Receiver<String>,
}

impl Lines {
    fn start(binary: &Path, args: &[&str]) -> Lines {
        let mut child = Command::new(binary)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let fixture = Lines { child, lines };
        fixture.expect("READY", Duration::from_secs(30));
        fixture
    }

    /// Waits for a line starting with `prefix` and returns it.
    fn expect(&self, prefix: &str, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            let line = self
                .lines
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .unwrap_or_else(|_| panic!("the fixture never printed {prefix} within {within:?}"));
            if line.starts_with(prefix) {
                return line;
            }
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Lines {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A running leaktrace (JSON report on stdout).
struct Tracer {
    child: Child,
    started: Instant,
}

impl Tracer {
    fn start(pid: u32, extra: &[&str]) -> Tracer {
        let child = leaktrace()
            .args(["--pid", &pid.to_string(), "--format", "json"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start leaktrace");
        Tracer {
            child,
            started: Instant::now(),
        }
    }

    fn interrupt(&self) {
        // SAFETY: signalling the leaktrace this test started.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
    }

    /// Waits (at most `within`) for the report; returns it and how long after the end of the
    /// trace (the signal, or `since`) it came.
    fn report(mut self, within: Duration, since: Instant) -> (Value, Duration) {
        let mut stdout = self.child.stdout.take().expect("stdout");
        let mut stderr = self.child.stderr.take().expect("stderr");
        let out = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = stdout.read_to_string(&mut text);
            text
        });
        let err = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text);
            text
        });
        let deadline = Instant::now() + within;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                break status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("leaktrace did not report within {within:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let to_report = since.elapsed();
        let total = self.started.elapsed();
        let (stdout, stderr) = (out.join().unwrap(), err.join().unwrap());
        assert!(status.success(), "leaktrace failed ({status}):\n{stderr}");
        let report: Value = serde_json::from_str(&stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}):\n{stdout}\n{stderr}"));
        let traced = Duration::from_nanos(report["duration_ns"].as_u64().unwrap_or(0));
        println!(
            "figures: peak RSS {} MiB, lost events {}, traced {:.1} s, leaktrace ran {:.1} s \
             (start, attach, trace, report)",
            report["tracer"]["max_rss_kb"].as_u64().unwrap_or(0) / 1024,
            report["lost_events"],
            traced.as_secs_f64(),
            total.as_secs_f64()
        );
        (report, to_report)
    }
}

fn rss_kb(report: &Value) -> u64 {
    report["tracer"]["max_rss_kb"]
        .as_u64()
        .expect("tracer.max_rss_kb")
}

/// leaktrace's peak RSS stayed under the storm bound.
fn assert_rss_bounded(report: &Value) {
    assert!(
        rss_kb(report) <= RSS_BOUND_KB,
        "peak RSS {} KiB",
        rss_kb(report)
    );
}

/// Calls whose per-thread slot was taken by another thread (tids colliding modulo the slots).
fn slot_collisions(report: &Value) -> u64 {
    counter(report, "pending_map_full") + counter(report, "pending_calls_full")
}

fn counter(report: &Value, name: &str) -> u64 {
    report["counters"][name]
        .as_u64()
        .unwrap_or_else(|| panic!("counters.{name} missing: {}", report["counters"]))
}

#[test]
fn ten_thousand_threads_are_reported_right_and_bounded() {
    require_root();
    let fixture = Lines::start(&build_c("storm"), &["1500", "threads", "10000", "4000"]);
    let tracer = Tracer::start(fixture.pid(), &["--duration", "10s"]);
    fixture.expect("CREATED", Duration::from_secs(60));
    let (report, _) = tracer.report(Duration::from_secs(180), Instant::now());
    let native = &report["native_io"];
    assert_eq!(native["threads_alive"], 10_001, "{native}");
    let leaks = of_kind(&report, "thread_leak");
    assert_eq!(leaks.len(), 1, "{:#?}", candidates(&report));
    let count = leaks[0]["count"].as_u64().unwrap();
    assert!(
        (9_000..=10_000).contains(&count),
        "the leak holds the threads created while traced: {count}"
    );
    // Threads whose tids collide modulo the slot count are counted, not mixed up.
    let collisions = slot_collisions(&report);
    println!("slot collisions: {collisions}");
    assert_rss_bounded(&report);
}

#[test]
fn a_hundred_thousand_short_lived_threads_leave_a_bounded_report() {
    require_root();
    let fixture = Lines::start(&build_c("storm"), &["1500", "churn", "100000"]);
    let tracer = Tracer::start(fixture.pid(), &[]);
    fixture.expect("CREATED", Duration::from_secs(300));
    let ended = Instant::now();
    tracer.interrupt();
    let (report, _) = tracer.report(Duration::from_secs(120), ended);
    // Every creation was seen by the kernel side (the clones are counted as they happen).
    let created = counter(&report, "threads_created");
    assert!(
        created >= 100_000,
        "{created} thread creations counted of 100000"
    );
    assert!(
        of_kind(&report, "thread_leak").is_empty(),
        "all were joined"
    );
    assert!(report["native_io"]["threads_alive"].as_u64().unwrap() <= 2);
    let collisions = slot_collisions(&report);
    println!("slot collisions: {collisions}");
    assert_rss_bounded(&report);
}

/// `--detail low` budgets creator stacks per creation site: a site creating threads all the
/// time gets a few stacks a second, the leak's site, creating one thread every 100 ms, keeps
/// its stacks; every creation is still counted, and the report says the stacks were a sample.
#[test]
fn a_thread_leak_under_a_creation_storm_is_found_with_its_site_in_the_low_mode() {
    require_root();
    let fixture = Lines::start(&build_c("storm"), &["1500", "leakstorm", "6000"]);
    let tracer = Tracer::start(fixture.pid(), &["--detail", "low", "--duration", "5s"]);
    let (report, _) = tracer.report(Duration::from_secs(120), Instant::now());
    let created = counter(&report, "threads_created");
    let skipped = counter(&report, "creation_stacks_skipped");
    println!("{created} creations, {skipped} without a stack");
    assert!(created >= 5_000, "no storm happened: {created} creations");
    assert!(
        skipped * 2 > created,
        "the storm's site kept its stacks: {skipped} of {created} skipped"
    );
    let leaks = of_kind(&report, "thread_leak");
    assert_eq!(leaks.len(), 1, "{:#?}", candidates(&report));
    let site = functions(&leaks[0]["creation_stack"]);
    assert!(
        site.iter().any(|f| f == "leak_one"),
        "creation stack {site:?}"
    );
    assert!(
        !site.iter().any(|f| f == "churn_batch"),
        "creation stack {site:?}"
    );
    // About 10 leaked a second during the 5 s trace, all still blocked.
    let count = leaks[0]["count"].as_u64().unwrap();
    assert!((20..=120).contains(&count), "leak count {count}");
    for candidate in candidates(&report) {
        let text = candidate.to_string();
        assert!(
            !text.contains("churn_batch") && !text.contains("short_lived"),
            "the joined storm is reported: {candidate:#}"
        );
    }
    let notes = report["tracer"]["notes"].as_array().expect("tracer.notes");
    assert!(
        notes.iter().any(|n| n
            .as_str()
            .unwrap_or("")
            .contains("creation stacks are a sample")),
        "{notes:#?}"
    );
    assert_rss_bounded(&report);
}

#[test]
fn a_futex_storm_loses_nothing_silently() {
    require_root();
    // Four threads call FUTEX_WAIT (returning at once) for 10 s, then stop; the trace outlasts
    // the storm so that every finished wait is either received or counted lost.
    let fixture = Lines::start(&build_c("storm"), &["1500", "futex", "4", "10000"]);
    // Every finished wait counted is what only `--detail full` gives: the low mode's windows
    // see a sample (and close at once on a storm like this one).
    let tracer = Tracer::start(fixture.pid(), &["--detail", "full", "--duration", "14s"]);
    let calls: u64 = fixture
        .expect("CALLS", Duration::from_secs(60))
        .trim_start_matches("CALLS ")
        .parse()
        .expect("a count");
    let (report, _) = tracer.report(Duration::from_secs(180), Instant::now());
    let finished = counter(&report, "waits_finished");
    let lost = counter(&report, "events_lost");
    let seen = report["waits_seen"].as_u64().expect("waits_seen");
    println!(
        "futex storm: {calls} calls ({:.0}/s), {finished} finished waits, {seen} received, {lost} lost",
        calls as f64 / 10.0
    );
    assert!(calls >= 100_000, "no storm happened: {calls} calls");
    assert!(
        finished + 1_000 >= calls,
        "the kernel side missed waits: {finished} of {calls}"
    );
    assert!(seen <= finished);
    assert!(
        finished - seen <= lost,
        "{} finished waits neither received nor counted lost",
        finished - seen - lost
    );
    assert_eq!(
        report["lost_events"].as_u64().unwrap(),
        lost + slot_collisions(&report),
        "lost events are shown in the report's total"
    );
    assert_rss_bounded(&report);
}

#[test]
fn a_target_that_forks_and_execs_children_and_exits_mid_trace() {
    require_root();
    let fixture = Lines::start(&build_c("storm"), &["1500", "forkexec", "3000"]);
    let tracer = Tracer::start(fixture.pid(), &[]);
    let (report, _) = tracer.report(Duration::from_secs(120), Instant::now());
    assert_eq!(report["target_exited"], true);
    assert!(
        report["native_io"]["processes_forked"]
            .as_u64()
            .unwrap_or(0)
            > 0,
        "{}",
        report["native_io"]
    );
}

#[test]
fn a_target_that_execs_another_program_mid_trace() {
    require_root();
    let fixture = Lines::start(&build_c("storm"), &["1500", "exec", "1000"]);
    let tracer = Tracer::start(fixture.pid(), &[]);
    // It becomes `sleep 3`, which exits: the trace ends with it.
    let (report, _) = tracer.report(Duration::from_secs(120), Instant::now());
    assert_eq!(report["target_exited"], true);
    assert!(report["duration_ns"].as_u64().unwrap() > 2_000_000_000);
}

#[test]
fn go_stacks_that_move_while_read_are_counted_not_fatal() {
    require_root();
    let binary = build_go("grow", "1.27", &[]);
    // 2000 goroutines grow their stacks (copied by the runtime) and park, over and over, next
    // to a leak of 20000 that grows while traced.
    let fixture = Lines::start(
        &binary,
        &[
            "-wait", "1500ms", "-churn", "2000", "-n", "20000", "-steps", "20", "-over", "4s",
        ],
    );
    let tracer = Tracer::start(fixture.pid(), &["--duration", "8s"]);
    let (report, _) = tracer.report(Duration::from_secs(180), Instant::now());
    let go = &report["goroutines"];
    assert!(go["snapshots"].as_u64().unwrap() >= 3, "{go}");
    let unreadable = go["unreadable"].as_u64().expect("goroutines.unreadable");
    println!("goroutines unreadable while moving: {unreadable}");
    let summaries: Vec<String> = candidates(&report)
        .iter()
        .map(|c| format!("{} {}: {}", c["kind"], c["count"], c["summary"]))
        .collect();
    println!("candidates: {summaries:#?}");
    // The leak, and nothing else: the movers keep running and parking, busy but not stuck.
    assert_eq!(summaries.len(), 1, "{summaries:#?}");
    let leaks: Vec<&Value> = of_kind(&report, "goroutine_leak")
        .into_iter()
        .filter(|c| c["blocking_stack"].to_string().contains("main.leak"))
        .collect();
    assert_eq!(leaks.len(), 1, "{summaries:#?}");
    let count = leaks[0]["count"].as_u64().unwrap();
    assert!(
        (19_000..=20_000).contains(&count),
        "the leak's count: {count}"
    );
    assert_rss_bounded(&report);
}

#[test]
fn a_go_target_that_exits_while_its_goroutines_are_read() {
    require_root();
    let binary = build_go("grow", "1.27", &[]);
    // 200,000 goroutines: one read of them takes seconds in a debug build, so the target is
    // killed in the middle of one.
    let mut fixture = Lines::start(
        &binary,
        &["-wait", "0s", "-n", "200000", "-steps", "1", "-over", "1ms"],
    );
    fixture.expect("GROWN", Duration::from_secs(60));
    let tracer = Tracer::start(fixture.pid(), &[]);
    std::thread::sleep(Duration::from_secs(6));
    let _ = fixture.child.kill();
    let _ = fixture.child.wait();
    let (report, _) = tracer.report(Duration::from_secs(300), Instant::now());
    assert_eq!(report["target_exited"], true);
    let notes = report["tracer"]["notes"].to_string();
    println!("notes: {notes}");
    assert!(report["goroutines"].is_object(), "{notes}");
}

/// leaktrace's peak RSS bound while tracing a million goroutines (680-930 MiB measured in a debug
/// build, down from 4.9-5.6 GiB; the issue aims at 300 MiB): while a read is in progress the
/// model's last snapshot and the new one are both held, about 300 bytes a goroutine each
/// (frames, group keys and read buffers are shared or batched). README, "Reliability".
const MILLION_RSS_BOUND_KB: u64 = 1280 * 1024;
/// The trace of a million goroutines: long enough for the fixture to grow them all.
const MILLION_TRACE: Duration = Duration::from_secs(30);

#[test]
fn a_million_goroutines_growing_while_traced() {
    require_root();
    let binary = build_go("grow", "1.27", &[]);
    let fixture = Lines::start(
        &binary,
        &[
            "-wait", "2s", "-n", "1000000", "-steps", "50", "-over", "5s",
        ],
    );
    let tracer = Tracer::start(
        fixture.pid(),
        &["--duration", &format!("{}s", MILLION_TRACE.as_secs())],
    );
    // All of them exist before the trace ends, so the read after it sees them all.
    fixture.expect("GROWN", MILLION_TRACE - Duration::from_secs(5));
    let (report, _) = tracer.report(Duration::from_secs(600), Instant::now());
    let go = &report["goroutines"];
    assert!(go["count_max"].as_u64().unwrap() >= 1_000_000, "{go}");
    // Reads of a million goroutines take seconds, but are done in slices between the loop's
    // other work: the trace ends on time. The margin is for the model's update with a finished
    // read, which is not sliced (1-2 s for a million in a debug build on a loaded machine); a
    // read that blocked the loop made a 12 s trace last 73 s.
    let traced = Duration::from_nanos(report["duration_ns"].as_u64().unwrap());
    assert!(
        traced <= MILLION_TRACE + Duration::from_secs(5),
        "--duration {MILLION_TRACE:?} traced for {traced:?}"
    );
    let unreadable = go["unreadable"]
        .as_u64()
        .expect("partial reads are counted");
    let leaks: Vec<&Value> = of_kind(&report, "goroutine_leak")
        .into_iter()
        .filter(|c| c["blocking_stack"].to_string().contains("main.leak"))
        .collect();
    assert_eq!(leaks.len(), 1, "{:#?}", candidates(&report));
    let count = leaks[0]["count"].as_u64().unwrap();
    println!(
        "million: leak count {count}, unreadable {unreadable}, slowest read {}",
        report["tracer"]["slowest_goroutine_read"]
    );
    // Goroutines that moved or were torn while read are the only ones allowed missing.
    assert!(
        count + unreadable >= 1_000_000 && count <= 1_000_000,
        "the leak's count: {count} (+{unreadable} unreadable)"
    );
    assert!(
        rss_kb(&report) <= MILLION_RSS_BOUND_KB,
        "peak RSS {} KiB",
        rss_kb(&report)
    );
}
