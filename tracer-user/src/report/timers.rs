//! Text for Go runtime timers: a candidate's group and the overview.
use std::fmt::Write as _;

use super::human_ns;
use crate::analyze::timers::{GoTimerGroup, GoTimerOverview};
use crate::model::timers::TimerKind;

pub fn write_group(out: &mut String, group: &GoTimerGroup) {
    if group.callback_goroutines.is_some() {
        // T4: the goroutines tell it all.
        let _ = writeln!(out, "   callback: {}", group.callback);
        return;
    }
    let _ = writeln!(
        out,
        "   kind: {}{}; {}: {}",
        group.kind.name(),
        if group.period_ns > 0 {
            format!(" every {}", human_ns(group.period_ns as u64))
        } else {
            String::new()
        },
        if group.kind == TimerKind::Func {
            "callback"
        } else {
            "runs"
        },
        group.callback
    );
    let _ = writeln!(
        out,
        "   count: {} pending now, {} at the start, {} at most (+{:.1}/s); during the trace {} created, {} fired, {} stopped",
        group.count,
        group.count_at_start,
        group.count_max,
        group.growth_per_s,
        group.lifecycle.created,
        group.lifecycle.fired,
        group.lifecycle.stopped
    );
    let d = &group.due_in_ns;
    let _ = writeln!(
        out,
        "   fires in: p50 {}  p90 {}  p99 {}  max {}{}",
        human_ns(d.p50),
        human_ns(d.p90),
        human_ns(d.p99),
        human_ns(d.max),
        if group.overdue > 0 {
            format!(" ({} overdue)", group.overdue)
        } else {
            String::new()
        }
    );
    if let Some(full) = group.channel_full {
        let _ = writeln!(
            out,
            "   channel full (value never received): {full} of {}",
            group.count
        );
    }
    let _ = writeln!(out, "   started: {}", group.creation_site);
    if let Some(stack) = &group.starter_stack {
        super::text::write_stack(out, stack, "      ");
    }
}

pub fn write_overview(out: &mut String, timers: &GoTimerOverview) {
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "Go timers ({} implementation): {} pending now, {} at the start, {} at most, over {} snapshot(s); {} stopped awaiting removal{}",
        timers.implementation,
        timers.pending,
        timers.pending_at_start,
        timers.pending_max,
        timers.snapshots,
        timers.stopped_in_heap,
        if timers.unreadable > 0 {
            format!("; {} heap entries skipped (changed while read)", timers.unreadable)
        } else {
            String::new()
        }
    );
    if timers.channel_semantics == "go1.23+" {
        let _ = writeln!(
            out,
            "  (Go 1.23+ timer semantics: channel timers - NewTimer, After, NewTicker - are in a heap only while a goroutine waits on their channel; unstopped, unreferenced ones are collected by the GC: not leaks)"
        );
    }
    let _ = writeln!(
        out,
        "  channel timer semantics {}: {}",
        timers.channel_semantics, timers.channel_semantics_why
    );
    for (kind, totals) in &timers.by_kind {
        let _ = writeln!(
            out,
            "  {kind:>14}: {} pending; during the trace {} created, {} fired, {} stopped",
            totals.pending, totals.created, totals.fired, totals.stopped
        );
    }
    let shown = 6;
    if !timers.other_groups.is_empty() {
        let _ = writeln!(
            out,
            "  timer groups that are not leak candidates, largest first:"
        );
    }
    for group in timers.other_groups.iter().take(shown) {
        let _ = writeln!(
            out,
            "  {:>6} {} {}, fire in p50 {}: {}",
            group.count,
            group.kind.name(),
            group.callback,
            human_ns(group.due_in_ns.p50),
            group.not_a_candidate.as_deref().unwrap_or("")
        );
    }
    if timers.other_groups.len() > shown {
        let _ = writeln!(
            out,
            "  ... {} more group(s) in the JSON report",
            timers.other_groups.len() - shown
        );
    }
}
