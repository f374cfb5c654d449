//! Renders an analysis as text for people or JSON for machines. Nothing here reads the system.
pub mod diff;
pub mod folded;
pub mod goroutines;
pub mod html;
pub mod ignore;
mod native;
pub mod pprof;
mod timers;

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::analyze::goroutines::{GoroutineGroup, GoroutineOverview};
use crate::analyze::{Analysis, Detail, Finding, FindingKind};
use crate::model::goroutines::is_runtime_frame;
use crate::model::{Frame, KernelCounters, Model};

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct TargetInfo {
    pub pid: u32,
    pub comm: String,
    /// Its executable's path as the target sees it (in its own mount namespace).
    pub exe: String,
    /// How its container names it, when it is in another mount or pid namespace.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container: Option<crate::procfs::root::ContainerView>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct TracerInfo {
    /// Peak resident memory of the tracer itself.
    pub max_rss_kb: u64,
    /// CPU time (user + system, ns) the tracer itself used, start-up and report included.
    pub cpu_ns: u64,
    /// Tracepoints attached.
    pub probes: Vec<String>,
    /// Anything the user should know about how complete this trace is.
    pub notes: Vec<String>,
    /// Go targets: the slowest read of all goroutines (the target is never paused for it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slowest_goroutine_read: Option<GoroutineRead>,
    /// `--detail`: "low" (syscall tracepoints in probe windows) or "full" (all the time).
    /// Recordings made before the field existed were full.
    #[serde(default)]
    pub detail: crate::attach::Detail,
    /// Low detail: how many probe windows, and how much of the trace they covered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub windows: Option<crate::collect::WindowSummary>,
}

#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
pub struct GoroutineRead {
    pub elapsed_ns: u64,
    pub goroutines: usize,
}

/// The whole report. Later versions add fields; they never remove or rename these.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub target: TargetInfo,
    pub duration_ns: u64,
    /// Events the kernel could not deliver or track (ring buffer full, pending-wait map full).
    pub lost_events: u64,
    pub target_exited: bool,
    pub min_blocked_ns: u64,
    pub waits_seen: u64,
    pub counters: KernelCounters,
    pub tracer: TracerInfo,
    /// Worst first; candidates suppressed by `--ignore` rules come after the others.
    pub candidates: Vec<ReportedCandidate>,
    pub wait_sites: Vec<crate::analyze::WaitSiteSummary>,
    /// Threads blocked past the threshold that are not candidates, with the reason.
    pub blocked_but_healthy: Vec<crate::analyze::BlockedButHealthy>,
    /// Go targets only: goroutine counts over the trace, and the groups that are not candidates.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub goroutines: Option<crate::analyze::goroutines::GoroutineOverview>,
    /// Go targets only: pending runtime timers (totals by kind; created/fired/stopped as far as
    /// snapshots tell) and the timer groups that are not candidates.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub go_timers: Option<crate::analyze::timers::GoTimerOverview>,
    /// Threads, epoll sets and timerfds seen during the trace.
    pub native_io: native::NativeSummary,
    /// Set by the agent: fingerprints of the candidates of the target's previous interval that
    /// are gone in this one.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub resolved: Vec<String>,
    /// Go targets: the last goroutine snapshot, for the `goroutines` dump and pprof's groups
    /// that are not candidates (not in the JSON; see [`Report::keep_goroutine_snapshot`]).
    #[serde(skip)]
    pub goroutine_snapshot: Option<goroutines::Snapshot>,
}

/// A candidate as reported: the analysis' candidate plus its stable fingerprint and, when an
/// `--ignore` rule matched it, that rule. Dereferences to the candidate.
#[derive(Clone, Debug, Serialize)]
pub struct ReportedCandidate {
    #[serde(flatten)]
    pub candidate: Finding,
    /// `KIND:HASH`, stable across runs and restarts (see `analyze::fingerprint`).
    pub fingerprint: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub suppressed_by: Option<ignore::Suppression>,
    /// Set by the agent (`leaktrace agent`): `new`, `growing` or `stable` compared with the
    /// target's previous interval, by fingerprint.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<&'static str>,
}

impl std::ops::Deref for ReportedCandidate {
    type Target = Finding;
    fn deref(&self) -> &Finding {
        &self.candidate
    }
}

impl Report {
    pub fn new(
        target: TargetInfo,
        tracer: TracerInfo,
        analysis: Analysis,
        model: &Model,
        duration_ns: u64,
        target_exited: bool,
        min_blocked_ns: u64,
    ) -> Self {
        let counters = model.counters;
        Report {
            target,
            duration_ns,
            lost_events: counters.events_lost
                + counters.pending_map_full
                + counters.pending_calls_full
                + counters.tracked_fds_full
                + counters.epoll_stats_full,
            target_exited,
            min_blocked_ns,
            waits_seen: model.futex.waits_seen,
            counters,
            tracer,
            candidates: analysis
                .candidates
                .into_iter()
                .map(|candidate| ReportedCandidate {
                    fingerprint: crate::analyze::fingerprint::of(&candidate),
                    candidate,
                    suppressed_by: None,
                    status: None,
                })
                .collect(),
            wait_sites: analysis.wait_sites,
            blocked_but_healthy: analysis.blocked_but_healthy,
            goroutines: analysis.goroutines,
            go_timers: analysis.go_timers,
            native_io: native::NativeSummary::of(model),
            resolved: Vec::new(),
            goroutine_snapshot: None,
        }
    }

    /// Keeps the last goroutine snapshot for the formats that show every goroutine (a copy of
    /// up to 100k goroutines' stacks, so only taken for them).
    pub fn keep_goroutine_snapshot(&mut self, model: &Model) {
        self.goroutine_snapshot = goroutines::Snapshot::of(&model.goroutines);
    }

    /// Marks the candidates the rules match, and moves them after the others (order kept).
    pub fn apply_ignore_rules(&mut self, rules: &ignore::IgnoreRules) {
        for candidate in &mut self.candidates {
            candidate.suppressed_by = rules.matching(&candidate.candidate);
        }
        self.candidates.sort_by_key(|c| c.suppressed_by.is_some());
        let used: Vec<_> = self
            .candidates
            .iter()
            .filter_map(|c| c.suppressed_by.as_ref())
            .collect();
        let unused = rules.unused(&used);
        self.tracer.notes.extend(unused);
    }

    /// The report in one of the formats (bytes: pprof is gzip).
    pub fn render(&self, format: crate::cli::Format) -> anyhow::Result<Vec<u8>> {
        use crate::cli::Format;
        Ok(match format {
            Format::Text => self.to_text().into_bytes(),
            Format::Json => self.to_json().into_bytes(),
            Format::Pprof => pprof::render(self)?,
            Format::Goroutines => match &self.goroutine_snapshot {
                Some(snapshot) => goroutines::render(snapshot).into_bytes(),
                None => anyhow::bail!(
                    "no goroutine dump: pid {} is not a Go program leaktrace could read (see the notes of --format text)",
                    self.target.pid
                ),
            },
            Format::Folded => folded::render(self).into_bytes(),
            Format::Flamegraph => folded::flamegraph(self)?.into_bytes(),
            Format::Html => html::render(self, &folded::flamegraph(self)?)?.into_bytes(),
        })
    }

    pub fn to_json(&self) -> String {
        // Serializing plain data structures cannot fail.
        serde_json::to_string_pretty(self).expect("report serializes") + "\n"
    }

    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let t = &self.target;
        let _ = writeln!(
            out,
            "leaktrace report for pid {} ({}) {}",
            t.pid, t.comm, t.exe
        );
        if let Some(c) = &t.container {
            let _ = writeln!(
                out,
                "in a container: cgroup {}, pid {} in its pid namespace{}",
                c.cgroup.as_deref().unwrap_or("unknown"),
                c.namespace_pid
                    .map_or_else(|| "unknown".to_string(), |p| p.to_string()),
                if c.other_mount_namespace {
                    "; its files read through /proc/PID/root"
                } else {
                    ""
                }
            );
        }
        let _ = writeln!(
            out,
            "traced {}{}; {} futex waits completed; {} events lost; stuck threshold {}",
            human_ns(self.duration_ns),
            if self.target_exited {
                " until the target exited"
            } else {
                ""
            },
            self.waits_seen,
            self.lost_events,
            human_ns(self.min_blocked_ns),
        );
        let _ = match &self.tracer.windows {
            Some(w) => writeln!(
                out,
                "detail low: syscall probes attached in {} window(s) covering {} of {} ({:.1}%); the rest from /proc and the target's memory",
                w.count,
                human_ns(w.covered_ns),
                human_ns(w.trace_ns),
                w.covered_ns as f64 * 100.0 / w.trace_ns.max(1) as f64
            ),
            None => writeln!(out, "detail full: every probe attached for the whole trace"),
        };
        for note in &self.tracer.notes {
            let _ = writeln!(out, "note: {note}");
        }
        let _ = writeln!(out);
        let suppressed = self
            .candidates
            .iter()
            .filter(|c| c.suppressed_by.is_some())
            .count();
        if self.candidates.is_empty() {
            let _ = writeln!(
                out,
                "No leak candidates: no thread stayed blocked for {} or more, no thread group or timerfd count grew, no timer misbehaved.",
                human_ns(self.min_blocked_ns)
            );
        } else if self.candidates.len() == suppressed {
            let _ = writeln!(
                out,
                "No leak candidates but the {suppressed} suppressed by --ignore rules, listed below."
            );
        } else {
            let _ = writeln!(
                out,
                "{} leak candidate(s), worst first:",
                self.candidates.len() - suppressed
            );
        }
        for (i, candidate) in self.candidates.iter().enumerate() {
            let _ = writeln!(out);
            if let Some(rule) = &candidate.suppressed_by {
                let _ = writeln!(
                    out,
                    "SUPPRESSED by {}:{} `{}`:",
                    rule.file, rule.line, rule.rule
                );
            }
            if let Some(status) = candidate.status {
                let _ = writeln!(
                    out,
                    "{} since the previous interval:",
                    status.to_uppercase()
                );
            }
            write_candidate(&mut out, i + 1, candidate);
        }
        if !self.resolved.is_empty() {
            let _ = writeln!(out);
            let _ = writeln!(
                out,
                "Resolved since the previous interval: {}",
                self.resolved.join(", ")
            );
        }
        if !self.blocked_but_healthy.is_empty() {
            let _ = writeln!(out);
            let _ = writeln!(out, "Blocked past the threshold but not leaks:");
            for thread in &self.blocked_but_healthy {
                let _ = writeln!(
                    out,
                    "  thread {} \"{}\" blocked {}: {}",
                    thread.tid,
                    thread.name,
                    human_ns(thread.blocked_ns),
                    thread.why
                );
            }
        }
        if let Some(go) = &self.goroutines {
            write_goroutine_overview(&mut out, go);
        }
        if let Some(go_timers) = &self.go_timers {
            timers::write_overview(&mut out, go_timers);
        }
        if !self.wait_sites.is_empty() {
            let _ = writeln!(out);
            let _ = writeln!(
                out,
                "Futex waits that completed (healthy activity), by total time waited:"
            );
            for site in self.wait_sites.iter().take(5) {
                let _ = writeln!(
                    out,
                    "  {} {}: {} waits, p50 {} p99 {} max {}{}",
                    site.futex_addr,
                    site.futex_op,
                    site.waits,
                    human_ns(site.wait_ns.p50),
                    human_ns(site.wait_ns.p99),
                    human_ns(site.wait_ns.max),
                    site.longest_wait_stack
                        .as_deref()
                        .map(|s| format!(
                            " (longest in {})",
                            crate::analyze::innermost_own_function(s)
                        ))
                        .unwrap_or_default(),
                );
            }
        }
        let c = &self.counters;
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "kernel: {} waits started, {} finished, {} wakes on watched words, {} events sent, {} lost (ring buffer full), {} untracked (pending map full), {} stack capture errors",
            c.waits_started, c.waits_finished, c.watched_wakes, c.events_sent, c.events_lost, c.pending_map_full, c.stack_errors
        );
        native::write_counters(&mut out, c, &self.native_io);
        out
    }
}

fn write_candidate(out: &mut String, rank: usize, c: &Finding) {
    let kind = match c.kind() {
        FindingKind::Deadlock => "DEADLOCK",
        FindingKind::FutexWait => "STUCK",
        FindingKind::GoroutineLeak => "GOROUTINE LEAK",
        FindingKind::ThreadLeak => "THREAD LEAK",
        FindingKind::EpollWait => "EPOLL NEVER WAKES",
        FindingKind::Timerfd => "TIMERFD",
        FindingKind::GoTimer => "GO TIMER",
    };
    let _ = writeln!(out, "#{rank} {kind}: {} (score {:.0})", c.summary, c.score);
    let at_least = if c.blocked_ns.at_least {
        // Before tracing started, or (in the low mode) before the /proc scan that found it.
        " (at least: blocked since before leaktrace first saw it)"
    } else {
        ""
    };
    // Pending timers block nothing: their deadlines are shown instead.
    if c.kind() != FindingKind::GoTimer || c.blocked_ns.max > 0 {
        let _ = writeln!(
            out,
            "   blocked: p50 {}  p90 {}  p99 {}  max {}{at_least}",
            human_ns(c.blocked_ns.p50),
            human_ns(c.blocked_ns.p90),
            human_ns(c.blocked_ns.p99),
            human_ns(c.blocked_ns.max),
        );
    }
    for reason in &c.reasons {
        let _ = writeln!(out, "   - {reason}");
    }
    let threads = match &c.detail {
        Detail::GoroutineLeak { group, .. } => {
            write_goroutine_group(out, c, group);
            return;
        }
        Detail::GoTimer { group, .. } => {
            timers::write_group(out, group);
            if let Some(goroutines) = &group.callback_goroutines {
                write_goroutine_group(out, c, goroutines);
            }
            return;
        }
        Detail::ThreadLeak(_) | Detail::EpollWait(_) | Detail::Timerfd { .. } => {
            native::write_detail(out, c);
            return;
        }
        Detail::Deadlock { threads, .. } | Detail::FutexWait { threads, .. } => threads,
    };
    let shared_stack = c.kind() == FindingKind::FutexWait;
    for thread in threads {
        let owner = match (thread.owner_tid, thread.joining_tid) {
            (Some(owner), _) => format!(", held by thread {owner}"),
            (None, Some(joined)) => format!(", joining thread {joined}"),
            (None, None) => String::new(),
        };
        let _ = writeln!(
            out,
            "   thread {} \"{}\": {} on {:#x}{owner}, blocked {}{}",
            thread.tid,
            thread.name,
            thread.futex_op,
            thread.futex_addr,
            human_ns(thread.blocked_ns),
            if thread.blocked_at_least { "+" } else { "" },
        );
        if !shared_stack {
            write_stack(out, &thread.blocking_stack, "      ");
        }
    }
    if shared_stack {
        let _ = writeln!(out, "   blocking stack:");
        write_stack(out, &c.blocking_stack, "      ");
    }
}

fn write_goroutine_group(out: &mut String, c: &Finding, group: &GoroutineGroup) {
    let _ = writeln!(
        out,
        "   count: {} now, {} at the start, {} at most; age p50 {} max {}{}",
        group.count,
        group.count_at_start,
        group.count_max,
        human_ns(group.age_ns.p50),
        human_ns(group.age_ns.max),
        if group.age_ns.at_least {
            " (or more)"
        } else {
            ""
        },
    );
    let _ = writeln!(
        out,
        "   goroutine ids: {}{}",
        group
            .sample_goids
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(", "),
        if group.count > group.sample_goids.len() {
            ", ..."
        } else {
            ""
        }
    );
    if let Some(creation) = &c.creation_stack {
        let _ = writeln!(out, "   created by:");
        write_stack(out, creation, "      ");
    }
    let _ = writeln!(out, "   sits at:");
    write_go_stack(out, &c.blocking_stack, "      ");
}

/// A goroutine stack without its leading runtime frames (gopark, chanrecv, ...), which say
/// nothing the wait reason does not; the JSON keeps them.
fn write_go_stack(out: &mut String, stack: &[Frame], indent: &str) {
    let runtime = stack.iter().take_while(|f| is_runtime_frame(f)).count();
    if runtime > 0 && runtime < stack.len() {
        let _ = writeln!(
            out,
            "{indent}({runtime} runtime frame(s): {} ... {})",
            stack[0].function.as_deref().unwrap_or("??"),
            stack[runtime - 1].function.as_deref().unwrap_or("??"),
        );
        write_stack(out, &stack[runtime..], indent);
    } else {
        write_stack(out, stack, indent);
    }
}

fn write_goroutine_overview(out: &mut String, go: &GoroutineOverview) {
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "Goroutines (Go {}): {} now, {} at the start, {} at most, over {} snapshot(s){}",
        go.go_version.as_deref().unwrap_or("?"),
        go.count,
        go.count_at_start,
        go.count_max,
        go.snapshots,
        if go.unreadable > 0 {
            format!(
                "; {} read(s) skipped because the goroutine changed while read",
                go.unreadable
            )
        } else {
            String::new()
        }
    );
    let shown = 8;
    if !go.other_groups.is_empty() {
        let _ = writeln!(out, "  groups that are not leak candidates, largest first:");
    }
    for group in go.other_groups.iter().take(shown) {
        let _ = writeln!(
            out,
            "  {:>6} {} at {}, created at {}: {}",
            group.count,
            group.state,
            group.sits_at,
            group.created_at,
            group.not_a_candidate.as_deref().unwrap_or("")
        );
    }
    if go.other_groups.len() > shown {
        let _ = writeln!(
            out,
            "  ... {} more group(s) in the JSON report",
            go.other_groups.len() - shown
        );
    }
}

/// Frames a person reads, innermost first; the JSON keeps all of them.
const TEXT_FRAMES: usize = 16;

fn write_stack(out: &mut String, stack: &[Frame], indent: &str) {
    if stack.is_empty() {
        let _ = writeln!(out, "{indent}(stack unavailable)");
        return;
    }
    for frame in stack.iter().take(TEXT_FRAMES) {
        let _ = writeln!(out, "{indent}{}", frame_text(frame));
    }
    if stack.len() > TEXT_FRAMES {
        let _ = writeln!(
            out,
            "{indent}... {} more frames in the JSON report",
            stack.len() - TEXT_FRAMES
        );
    }
}

pub fn frame_text(frame: &Frame) -> String {
    let function = frame.function.as_deref().unwrap_or("??");
    let location = match (&frame.file, frame.line) {
        (Some(file), Some(line)) => format!(" ({}:{line})", short_path(file)),
        (Some(file), None) => format!(" ({})", short_path(file)),
        _ => String::new(),
    };
    let module = frame
        .module
        .as_deref()
        .filter(|_| frame.file.is_none())
        .map(|m| format!(" [{}]", short_path(m)))
        .unwrap_or_default();
    let inlined = if frame.inlined { " (inlined)" } else { "" };
    format!("{function}{location}{module}{inlined} {:#x}", frame.addr)
}

fn short_path(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// Durations as a person reads them: 950ns, 12.3us, 4.5ms, 2.00s, 3m05s.
pub fn human_ns(ns: u64) -> String {
    match ns {
        0..1_000 => format!("{ns}ns"),
        1_000..1_000_000 => format!("{:.1}us", ns as f64 / 1e3),
        1_000_000..1_000_000_000 => format!("{:.1}ms", ns as f64 / 1e6),
        1_000_000_000..60_000_000_000 => format!("{:.2}s", ns as f64 / 1e9),
        _ => {
            let secs = ns / 1_000_000_000;
            format!("{}m{:02}s", secs / 60, secs % 60)
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::analyze::analyze;
    use crate::model::tests::blocked;
    use crate::model::{BlockedSince, Event, Model};

    pub(crate) fn report() -> Report {
        let mut model = Model::new();
        model.apply(&Event::TraceStarted { at_ns: 0 });
        let mut a = blocked(
            11,
            0xa0,
            BlockedSince::BeforeTrace,
            &["lock_a_then_b", "worker_one"],
        );
        a.owner_tid = Some(12);
        let mut b = blocked(
            12,
            0xb0,
            BlockedSince::BeforeTrace,
            &["lock_b_then_a", "worker_two"],
        );
        b.owner_tid = Some(11);
        model.apply(&Event::Blocked {
            at_ns: 2_000_000_000,
            threads: vec![a, b],
        });
        let analysis = analyze(&model, 2_000_000_000, 500_000_000, 5);
        Report::new(
            TargetInfo {
                pid: 10,
                comm: "abba".into(),
                exe: "/tmp/abba".into(),
                container: None,
            },
            TracerInfo::default(),
            analysis,
            &model,
            2_000_000_000,
            false,
            500_000_000,
        )
    }

    #[test]
    fn json_keeps_the_contract_fields() {
        let json: serde_json::Value = serde_json::from_str(&report().to_json()).unwrap();
        for key in [
            "target",
            "duration_ns",
            "lost_events",
            "candidates",
            "wait_sites",
        ] {
            assert!(json.get(key).is_some(), "missing {key}");
        }
        let candidate = &json["candidates"][0];
        assert_eq!(candidate["kind"], "deadlock");
        assert_eq!(candidate["count"], 2);
        for key in ["p50", "p90", "p99", "max"] {
            assert!(candidate["blocked_ns"][key].is_u64(), "blocked_ns.{key}");
        }
        let frame = &candidate["blocking_stack"][0];
        for key in ["function", "file", "line", "module", "addr"] {
            assert!(frame.get(key).is_some(), "frame.{key}");
        }
        assert!(frame["addr"].as_str().unwrap().starts_with("0x"));
        assert_eq!(candidate["cycle"][0]["waits_for"], "0xa0");
    }

    #[test]
    fn text_names_the_deadlock_threads_and_their_functions() {
        let text = report().to_text();
        assert!(text.contains("#1 DEADLOCK"), "{text}");
        assert!(text.contains("thread 11 \"t11\""), "{text}");
        assert!(text.contains("held by thread 12"), "{text}");
        assert!(text.contains("lock_b_then_a (fixture.c:1)"), "{text}");
    }

    #[test]
    fn suppressed_candidates_stay_listed_with_their_rule_and_fingerprint() {
        let mut report = report();
        let fingerprint = report.candidates[0].fingerprint.clone();
        assert!(fingerprint.starts_with("deadlock:"), "{fingerprint}");
        let rules =
            ignore::IgnoreRules::parse("known.txt", "# ok\nfunction lock_b_then_a").unwrap();
        report.apply_ignore_rules(&rules);
        let text = report.to_text();
        assert!(
            text.contains("SUPPRESSED by known.txt:2 `function lock_b_then_a`"),
            "{text}"
        );
        assert!(text.contains("#1 DEADLOCK"), "still listed: {text}");
        let json: serde_json::Value = serde_json::from_str(&report.to_json()).unwrap();
        let candidate = &json["candidates"][0];
        assert_eq!(candidate["fingerprint"], fingerprint.as_str());
        assert_eq!(candidate["suppressed_by"]["line"], 2);
        assert_eq!(
            candidate["kind"], "deadlock",
            "the candidate's own fields stay"
        );
    }

    #[test]
    fn durations_read_naturally() {
        assert_eq!(human_ns(950), "950ns");
        assert_eq!(human_ns(12_300), "12.3us");
        assert_eq!(human_ns(2_000_000_000), "2.00s");
        assert_eq!(human_ns(185_000_000_000), "3m05s");
    }

    #[test]
    fn a_target_in_a_container_is_named_as_its_container_sees_it() {
        let mut report = report();
        assert!(!report.to_text().contains("in a container"));
        assert!(report.to_json().find("\"container\"").is_none());
        report.target.container = Some(crate::procfs::root::ContainerView {
            cgroup: Some("/system.slice/docker-1f2e.scope".into()),
            namespace_pid: Some(1),
            other_mount_namespace: true,
            other_pid_namespace: true,
        });
        let text = report.to_text();
        assert!(
            text.contains("in a container: cgroup /system.slice/docker-1f2e.scope, pid 1 in its pid namespace"),
            "{text}"
        );
        let json: serde_json::Value = serde_json::from_str(&report.to_json()).unwrap();
        assert_eq!(json["target"]["container"]["namespace_pid"], 1);
    }
}
