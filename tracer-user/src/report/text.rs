//! The report as text for people: worst candidates first, stacks as `function (file:line)`.
use std::fmt::Write as _;

use super::{frame_text, human_ns, native, timers, Report};
use crate::analyze::goroutines::{GoroutineGroup, GoroutineOverview};
use crate::analyze::{Detail, Finding, FindingKind};
use crate::model::goroutines::is_runtime_frame;
use crate::model::Frame;

impl Report {
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
        let _ = writeln!(out, "{}", self.tracer.detail_line());
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

pub(super) fn write_candidate(out: &mut String, rank: usize, c: &Finding) {
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
    // A timerfd blocks nothing: its percentiles are the timerfds' ages since creation
    // (analyze/timerfd.rs), which "blocked" would misname.
    let (label, at_least) = match (c.kind(), c.blocked_ns.at_least) {
        (FindingKind::Timerfd, true) => ("age", " (at least: some open since before tracing)"),
        (FindingKind::Timerfd, false) => ("age", ""),
        // Before tracing started, or (in the low mode) before the /proc scan that found it.
        (_, true) => (
            "blocked",
            " (at least: blocked since before leaktrace first saw it)",
        ),
        (_, false) => ("blocked", ""),
    };
    // Pending timers block nothing: their deadlines are shown instead.
    if c.kind() != FindingKind::GoTimer || c.blocked_ns.max > 0 {
        let _ = writeln!(
            out,
            "   {label}: p50 {}  p90 {}  p99 {}  max {}{at_least}",
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

pub(super) fn write_stack(out: &mut String, stack: &[Frame], indent: &str) {
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
