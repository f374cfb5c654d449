//! Text rendering of thread-leak, epoll and timerfd candidates, and of the native-I/O summary.
use std::fmt::Write as _;

use super::human_ns;
use super::text::write_stack;
use crate::analyze::native_io::NativeSummary;
use crate::analyze::timerfd::TimerfdPattern;
use crate::analyze::{Detail, Finding};
use crate::model::KernelCounters;

pub fn write_detail(out: &mut String, c: &Finding) {
    match &c.detail {
        Detail::ThreadLeak(g) => {
            let _ = writeln!(
                out,
                "   alive {} · created {} · exited {} during the trace · {:.1}/s",
                g.alive, g.created_during_trace, g.exited_during_trace, g.growth_per_s
            );
            for b in &g.blocked_in {
                let _ = writeln!(
                    out,
                    "   {} thread(s) in {} (e.g. thread {})",
                    b.threads, b.state, b.example_tid
                );
            }
            let _ = writeln!(out, "   blocked at:");
            write_stack(out, &c.blocking_stack, "      ");
        }
        Detail::EpollWait(e) => {
            for l in &e.loops {
                let timeout = l.timeout_ns.map_or("none".to_string(), human_ns);
                let _ = writeln!(
                    out,
                    "   thread {} \"{}\": {} on epoll fd {} (timeout {timeout}), waiting {}{}",
                    l.tid,
                    l.name,
                    l.syscall,
                    l.epfd,
                    human_ns(l.blocked_ns),
                    if l.blocked_at_least { "+" } else { "" }
                );
            }
            if let Some(l) = e.loops.first() {
                if l.fds.is_empty() {
                    let _ = writeln!(out, "   the set is empty");
                }
                for f in &l.fds {
                    let _ = writeln!(
                        out,
                        "   fd {} {} events {:#x}{}",
                        f.fd,
                        f.link,
                        f.events,
                        f.dead_end
                            .as_ref()
                            .map(|d| format!(": {d}"))
                            .unwrap_or_default()
                    );
                }
            }
            let _ = writeln!(out, "   waiting at:");
            write_stack(out, &c.blocking_stack, "      ");
        }
        Detail::Timerfd { detail: d, .. } => {
            // A rate only for the one pattern that is a growing group; the others are about
            // single timers (one that never fires grows nothing).
            let rate = if d.pattern == TimerfdPattern::FdLeak {
                format!(" · {:.1}/s", d.growth_per_s)
            } else {
                String::new()
            };
            let _ = writeln!(
                out,
                "   open {} · created {} · closed {} during the trace{rate}",
                d.open, d.created_during_trace, d.closed_during_trace
            );
            if d.open_before_trace > 0 {
                let _ = writeln!(
                    out,
                    "   + {} open since before tracing (seen at attach only)",
                    d.open_before_trace
                );
            }
            for timer in d.timers.iter().take(5) {
                if timer.seen_at_attach && timer.arms == 0 && timer.reads == 0 {
                    let _ = writeln!(
                        out,
                        "   fd {}: open before tracing, {} when tracing started, unused during the trace",
                        timer.fd,
                        timer.next_expiry_ns.map_or("disarmed".to_string(), |ns| format!("armed ({} to go)", human_ns(ns))),
                    );
                    continue;
                }
                let _ = writeln!(
                    out,
                    "   fd {}: armed {} time(s) (pushed back {}), fired {}, read {} time(s), pending {}, next {}, {}",
                    timer.fd,
                    timer.arms,
                    timer.pushed_back,
                    timer.fired,
                    timer.reads,
                    timer.pending_expirations,
                    timer.next_expiry_ns.map_or("disarmed".to_string(), human_ns),
                    // it_interval 0 (timerfd_settime(2)): it fires once per arming.
                    match (timer.interval_ns, timer.arms) {
                        (0, 0) => "no interval".to_string(),
                        (0, _) => "one-shot".to_string(),
                        (ns, _) => format!("interval {}", human_ns(ns)),
                    },
                );
            }
            if d.timers.len() > 5 {
                let _ = writeln!(out, "   ... {} more in the JSON report", d.timers.len() - 5);
            }
            if !c.blocking_stack.is_empty() {
                let _ = writeln!(out, "   armed at:");
                write_stack(out, &c.blocking_stack, "      ");
            }
        }
        _ => {}
    }
    match &c.creation_stack {
        Some(stack) => {
            let _ = writeln!(out, "   created at:");
            write_stack(out, stack, "      ");
        }
        None if matches!(c.detail, Detail::ThreadLeak(_) | Detail::Timerfd { .. }) => {
            let _ = writeln!(
                out,
                "   created before tracing started: creation stack unknown"
            );
        }
        None => {}
    }
}

pub fn write_counters(out: &mut String, c: &KernelCounters, s: &NativeSummary) {
    let _ = writeln!(
        out,
        "threads: {} alive ({} at start, {} created, {} exited, {} processes forked); epoll: {} sets created, {} waits returned, {} loops waiting now; timerfds: {} open ({} created, {} closed), {} reads",
        s.threads_alive,
        s.threads_existing_at_start,
        s.threads_created,
        s.threads_exited,
        s.processes_forked,
        s.epoll_sets_created,
        c.epoll_waits,
        s.epoll_waiters,
        s.timerfds_open,
        s.timerfds_created,
        s.timerfds_closed,
        c.timerfd_reads,
    );
    let _ = writeln!(
        out,
        "kernel (native I/O): {} untracked calls (pending-call map full), {} untracked fds (fd map full), {} epoll returns uncounted (stats map full)",
        c.pending_calls_full, c.tracked_fds_full, c.epoll_stats_full
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analyze::timerfd::TimerfdDetail;
    use crate::analyze::Percentiles;

    fn timerfd(pattern: TimerfdPattern, open: u64, created: u64) -> Finding {
        Finding {
            count: open as usize,
            summary: String::new(),
            score: 50.0,
            reasons: Vec::new(),
            blocking_stack: Vec::new(),
            creation_stack: None,
            blocked_ns: Percentiles::default(),
            grew: None,
            detail: Detail::Timerfd {
                detail: TimerfdDetail {
                    pattern,
                    creation_known: true,
                    open,
                    created_during_trace: created,
                    closed_during_trace: 0,
                    growth_per_s: created as f64 / 2.0,
                    open_before_trace: 0,
                    timers: Vec::new(),
                },
                expirations_read: 0,
            },
        }
    }

    #[test]
    fn a_timerfd_without_an_interval_is_one_shot_and_its_ages_are_no_blocked_time() {
        let timer = |fd: i32, arms: u64, interval_ns: u64| crate::analyze::timerfd::TimerfdInfo {
            fd,
            clockid: 1,
            arms,
            pushed_back: 0,
            fired: 0,
            reads: 0,
            expirations_read: 0,
            pending_expirations: 0,
            next_expiry_ns: Some(3_600_000_000_000),
            interval_ns,
            armed_value_ns: 3_600_000_000_000,
            age_ns: Some(2_000_000_000),
            seen_at_attach: false,
        };
        let mut c = timerfd(TimerfdPattern::FdLeak, 3, 3);
        c.blocked_ns = Percentiles {
            p50: 1_000_000_000,
            p90: 2_000_000_000,
            p99: 2_000_000_000,
            max: 2_000_000_000,
            at_least: false,
        };
        if let Detail::Timerfd { detail, .. } = &mut c.detail {
            detail.timers = vec![timer(13, 1, 0), timer(14, 2, 500_000_000), timer(15, 0, 0)];
        }
        let mut out = String::new();
        crate::report::text::write_candidate(&mut out, 1, &c);
        assert!(out.contains("fd 13: armed 1 time(s)"), "{out}");
        assert!(out.contains("next 60m00s, one-shot\n"), "{out}");
        assert!(out.contains("next 60m00s, interval 500.0ms\n"), "{out}");
        assert!(out.contains("fd 15: armed 0 time(s) (pushed back 0), fired 0, read 0 time(s), pending 0, next 60m00s, no interval\n"), "{out}");
        assert!(!out.contains("interval 0ns"), "{out}");
        assert!(
            out.contains("   age: p50 1.00s  p90 2.00s  p99 2.00s  max 2.00s\n"),
            "{out}"
        );
        assert!(!out.contains("blocked"), "{out}");
        if let Detail::Timerfd { detail, .. } = &mut c.detail {
            detail.timers.clear();
        }
        c.blocked_ns.at_least = true;
        let mut out = String::new();
        crate::report::text::write_candidate(&mut out, 1, &c);
        assert!(
            out.contains("max 2.00s (at least: some open since before tracing)\n"),
            "{out}"
        );
    }

    #[test]
    fn only_a_growing_timerfd_group_shows_a_rate() {
        let text = |c: &Finding| {
            let mut out = String::new();
            write_detail(&mut out, c);
            out
        };
        let leak = text(&timerfd(TimerfdPattern::FdLeak, 20, 20));
        assert!(
            leak.contains("closed 0 during the trace · 10.0/s"),
            "{leak}"
        );
        for single in [
            TimerfdPattern::NeverFires,
            TimerfdPattern::UnreadExpirations,
        ] {
            let one = text(&timerfd(single, 1, 1));
            assert!(one.contains("closed 0 during the trace\n"), "{one}");
            assert!(!one.contains("/s"), "{one}");
        }
    }
}
