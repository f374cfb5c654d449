//! timerfd misuse (N5, N6), by creation site: created but never armed, re-armed before expiry
//! every time (never fires), fired but never read (expirations pile up), and more and more of
//! them open (fd leak).
use std::collections::BTreeSet;

use serde::Serialize;

use super::{innermost_own_function, Context, Detail, Finding, Findings, Percentiles};
use crate::model::timerfd::{Timer, TimerSite};
use crate::model::{new_histogram, record, Model};
use crate::units::human_ns;

/// A site must have this many more timerfds open at the end than it closed to be an fd leak.
pub const MIN_LEAKED: u64 = 5;
/// Re-arms before expiry needed to call a timer "never fires".
pub const MIN_PUSHED_BACK: u64 = 3;
const LISTED_TIMERS: usize = 50;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TimerfdPattern {
    /// Created during the trace and not armed since.
    NeverArmed,
    /// Open since before tracing started, disarmed then and unused during the trace, with no
    /// growing site they look like (else they are counted with it).
    IdleSinceAttach,
    NeverFires,
    UnreadExpirations,
    FdLeak,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TimerfdInfo {
    pub fd: i32,
    pub clockid: i32,
    pub arms: u64,
    pub pushed_back: u64,
    pub fired: u64,
    pub reads: u64,
    pub expirations_read: u64,
    /// Expirations nobody has read yet (fdinfo `ticks`).
    pub pending_expirations: u64,
    /// Time to the next expiry at the end of the trace (fdinfo `it_value`); None: disarmed.
    pub next_expiry_ns: Option<u64>,
    pub interval_ns: u64,
    /// The value last armed.
    pub armed_value_ns: u64,
    pub age_ns: Option<u64>,
    /// Open since before tracing started: its state then is all that is known of its past.
    pub seen_at_attach: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TimerfdDetail {
    pub pattern: TimerfdPattern,
    /// False for timerfds that existed before tracing started (creation stack unknown).
    pub creation_known: bool,
    pub open: u64,
    pub created_during_trace: u64,
    pub closed_during_trace: u64,
    pub growth_per_s: f64,
    /// Of `open`'s timers counted here, those whose creation no probe saw (open since before
    /// tracing started, or opened between `--detail low` windows) that look like this site's
    /// (same clock and interval, armed alike, nothing pending, unused): their creation stack is
    /// unknown. The name is the JSON contract's, from before the low mode.
    pub open_before_trace: u64,
    pub timers: Vec<TimerfdInfo>,
}

fn info(timer: &Timer, end_ns: u64) -> TimerfdInfo {
    let state = timer.state.unwrap_or_default();
    TimerfdInfo {
        fd: timer.fd,
        clockid: timer.clockid,
        arms: timer.arms,
        pushed_back: timer.pushed_back,
        fired: timer.fired,
        reads: timer.reads,
        expirations_read: timer.expirations_read,
        pending_expirations: state.ticks,
        next_expiry_ns: (state.it_value_ns > 0).then_some(state.it_value_ns),
        interval_ns: state.it_interval_ns.max(timer.interval_ns),
        armed_value_ns: timer.last_value_ns,
        age_ns: timer.created_ns.map(|c| end_ns.saturating_sub(c)),
        seen_at_attach: timer.state_at_attach.is_some(),
    }
}

/// True for a timerfd open since before tracing started that was disarmed then, and that
/// nobody armed, read or saw fire during the trace: all we know is its state at attach.
fn idle_since_attach(timer: &Timer) -> bool {
    origin_unseen(timer)
        && timer.state_at_attach.as_ref().is_some_and(disarmed)
        && timer.state.as_ref().is_some_and(disarmed)
}

fn disarmed(state: &crate::model::timerfd::TimerfdState) -> bool {
    state.it_value_ns == 0 && state.ticks == 0
}

/// A timerfd whose creation no probe saw, and that no probe saw armed or read since: open
/// before the trace, or (`--detail low`) opened between probe windows and found in the fd
/// table by a scan (`collect::native::timerfd`). What made it is unknown.
fn origin_unseen(timer: &Timer) -> bool {
    timer.created_ns.is_none() && timer.arms == 0 && timer.reads == 0
}

/// Whether `other`, a timerfd of unseen origin with nothing pending, ends the way most of
/// `timers` (a growing site's) do: same clock and interval, armed or disarmed alike, nothing
/// pending. A leak that began before the trace, or went on between the low mode's windows,
/// then counts the members no probe saw being made.
fn ends_like(timers: &[&Timer], other: &Timer) -> bool {
    let state = |x: &Timer| x.state.unwrap_or_default();
    let shape = |x: &Timer| {
        (
            x.clockid,
            state(x).it_interval_ns,
            state(x).it_value_ns == 0,
            state(x).ticks == 0,
        )
    };
    if state(other).ticks != 0 {
        return false;
    }
    let like = timers.iter().filter(|x| shape(x) == shape(other)).count();
    like * 2 > timers.len()
}

/// timerfd candidates (N5, N6).
pub fn detect(model: &Model, cx: &Context) -> Findings {
    Findings {
        candidates: candidates(model, cx.end_ns, cx.min_blocked_ns),
        ..Findings::default()
    }
}

fn candidates(model: &Model, end_ns: u64, min_blocked_ns: u64) -> Vec<Finding> {
    let t = &model.timerfds;
    let started = model.started_ns.unwrap_or(end_ns);
    let mut out = Vec::new();
    // Timerfds whose creation was not seen (open since before the trace, or opened between the
    // low mode's windows) and unused since: what they were is unknown ("never armed" would be a
    // guess, and a wrong one for a leak of fired timers), so they join a growing leak they look
    // like; the disarmed ones stand on their own when there are many.
    let unseen: Vec<&Timer> = t.open.values().filter(|x| origin_unseen(x)).collect();
    let mut taken: BTreeSet<i32> = BTreeSet::new();
    let mut leaks: Vec<(usize, Vec<&Timer>)> = Vec::new();
    for (site_id, site) in t.sites.iter().enumerate() {
        let timers: Vec<&Timer> = t
            .open
            .values()
            .filter(|x| x.site == site_id && !idle_since_attach(x))
            .collect();
        if timers.is_empty() {
            continue;
        }
        let age = |x: &Timer| end_ns.saturating_sub(x.created_ns.unwrap_or(started));
        let net = site.created.saturating_sub(site.closed);
        if net >= MIN_LEAKED {
            leaks.push((site_id, timers));
            continue;
        }
        let never_fires: Vec<&Timer> = timers
            .iter()
            .copied()
            .filter(|x| x.pushed_back >= MIN_PUSHED_BACK && x.fired == 0)
            .collect();
        let unread: Vec<&Timer> = timers
            .iter()
            .copied()
            .filter(|x| {
                let ticks = x.state.map_or(0, |s| s.ticks);
                ticks > 0
                    && x.reads == 0
                    && (ticks > x.first_ticks.unwrap_or(0) || age(x) >= min_blocked_ns)
            })
            .collect();
        // Only a timerfd whose creation was seen can be known never to have been armed.
        let never_armed: Vec<&Timer> = timers
            .iter()
            .copied()
            .filter(|x| {
                x.arms == 0
                    && x.created_ns.is_some()
                    && x.state.is_some_and(|s| s.it_value_ns == 0 && s.ticks == 0)
                    && age(x) >= min_blocked_ns
            })
            .collect();
        for (pattern, group) in [
            (TimerfdPattern::NeverFires, never_fires),
            (TimerfdPattern::UnreadExpirations, unread),
            (TimerfdPattern::NeverArmed, never_armed),
        ] {
            if !group.is_empty() {
                out.push(candidate(model, site_id, site, pattern, &group, 0, end_ns));
            }
        }
    }
    // The fastest-growing leak that ends like the idle ones takes them.
    leaks.sort_by_key(|(site_id, _)| {
        let site = &t.sites[*site_id];
        std::cmp::Reverse(site.created.saturating_sub(site.closed))
    });
    for (site_id, mut timers) in leaks {
        let joining: Vec<&Timer> = unseen
            .iter()
            .copied()
            .filter(|x| !taken.contains(&x.fd) && ends_like(&timers, x))
            .collect();
        taken.extend(joining.iter().map(|x| x.fd));
        let before = joining.len();
        timers.extend(joining);
        out.push(candidate(
            model,
            site_id,
            &t.sites[site_id],
            TimerfdPattern::FdLeak,
            &timers,
            before,
            end_ns,
        ));
    }
    let idle: Vec<&Timer> = unseen
        .iter()
        .copied()
        .filter(|x| idle_since_attach(x) && !taken.contains(&x.fd))
        .collect();
    if idle.len() as u64 >= MIN_LEAKED {
        out.push(candidate(
            model,
            0,
            &t.sites[0],
            TimerfdPattern::IdleSinceAttach,
            &idle,
            idle.len(),
            end_ns,
        ));
    }
    out
}

fn candidate(
    model: &Model,
    site_id: usize,
    site: &TimerSite,
    pattern: TimerfdPattern,
    timers: &[&Timer],
    open_before_trace: usize,
    end_ns: u64,
) -> Finding {
    let started = model.started_ns.unwrap_or(end_ns);
    let trace_s = (end_ns.saturating_sub(started) as f64 / 1e9).max(1e-3);
    let creation_known = site_id != 0;
    let mut histogram = new_histogram(3);
    let mut max = 0;
    for timer in timers {
        let age = end_ns.saturating_sub(timer.created_ns.unwrap_or(started));
        record(&mut histogram, age);
        max = max.max(age);
    }
    let at_least = timers.iter().any(|x| x.created_ns.is_none());
    let net = site.created.saturating_sub(site.closed);
    let growth_per_s = net as f64 / trace_s;
    let first = timers[0];
    let arm_stack = timers
        .iter()
        .find(|x| !x.arm_stack.is_empty())
        .map(|x| x.arm_stack.clone())
        .unwrap_or_default();
    let where_ = if creation_known {
        innermost_own_function(&site.stack)
    } else {
        "code that ran before the trace".to_string()
    };
    let state = first.state.unwrap_or_default();
    let next = if state.it_value_ns > 0 {
        format!("next expiry in {}", human_ns(state.it_value_ns))
    } else {
        "disarmed".to_string()
    };
    let interval = if state.it_interval_ns > 0 {
        format!(", interval {}", human_ns(state.it_interval_ns))
    } else {
        String::new()
    };
    let (summary, mut reasons, score) = match pattern {
        TimerfdPattern::FdLeak => (
            format!(
                "{} timerfd(s) created in {where_} and never closed: +{net} during the trace ({growth_per_s:.1}/s){}",
                timers.len(),
                if open_before_trace > 0 {
                    format!(", {open_before_trace} more whose creation was not seen")
                } else {
                    String::new()
                }
            ),
            vec![
                format!(
                    "{} created and {} closed at this site during the trace; {} open now",
                    site.created, site.closed, timers.len()
                ),
                format!(
                    "armed for {} each, {}{interval}",
                    human_ns(first.last_value_ns),
                    next
                ),
            ],
            70.0 + (net as f64).min(20.0),
        ),
        TimerfdPattern::NeverFires => (
            format!(
                "{} timerfd(s) from {where_} re-armed before expiry every time: never fired",
                timers.len()
            ),
            vec![
                format!(
                    "re-armed {} time(s) during the trace, always before the previous deadline ({} each); it never fired",
                    first.pushed_back,
                    human_ns(first.last_value_ns)
                ),
                format!("{next}{interval}"),
            ],
            65.0,
        ),
        TimerfdPattern::UnreadExpirations => (
            format!(
                "{} timerfd(s) from {where_} fire but nobody reads them: {} expiration(s) pending",
                timers.len(),
                state.ticks
            ),
            vec![
                format!(
                    "{} expiration(s) not read (fdinfo ticks), no read during the trace",
                    state.ticks
                ),
                format!("{next}{interval}"),
            ],
            60.0,
        ),
        TimerfdPattern::NeverArmed => (
            format!("{} timerfd(s) from {where_} created and never armed", timers.len()),
            vec!["created during the trace and never armed since: it can never fire".to_string()],
            55.0,
        ),
        TimerfdPattern::IdleSinceAttach => (
            format!(
                "{} timerfd(s) created before tracing, disarmed when tracing started and unused during the trace",
                timers.len()
            ),
            vec![
                "open when tracing started, disarmed then, and not armed, read or closed during the trace: left open, or kept for later use".to_string(),
            ],
            35.0,
        ),
    };
    if open_before_trace > 0 && pattern == TimerfdPattern::FdLeak {
        reasons.push(format!(
            "{open_before_trace} more like these (same clock and interval, {}, nothing pending) whose creation no probe saw (open before tracing started, or opened between probe windows): counted with this site, though their creation stack is unknown",
            if timers.last().and_then(|x| x.state).is_some_and(|s| s.it_value_ns > 0) {
                "armed"
            } else {
                "disarmed"
            }
        ));
    }
    if !creation_known {
        reasons.push("created before tracing started: the creation stack is unknown".to_string());
    }
    let mut listed: Vec<TimerfdInfo> = timers.iter().map(|x| info(x, end_ns)).collect();
    listed.truncate(LISTED_TIMERS);
    Finding {
        count: timers.len(),
        summary,
        score,
        reasons,
        blocking_stack: arm_stack,
        creation_stack: creation_known.then(|| site.stack.clone()),
        blocked_ns: Percentiles::of(&histogram, max, at_least),
        grew: Some(site.created > site.closed),
        detail: Detail::Timerfd {
            expirations_read: timers.iter().map(|x| x.expirations_read).sum(),
            detail: TimerfdDetail {
                pattern,
                creation_known,
                open: site.open(),
                created_during_trace: site.created,
                closed_during_trace: site.closed,
                growth_per_s,
                open_before_trace: open_before_trace as u64,
                timers: listed,
            },
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::tests::frame;
    use crate::model::timerfd::{TimerfdEvent, TimerfdState};
    use crate::model::Event;

    const S: u64 = 1_000_000_000;
    const MS: u64 = 1_000_000;

    fn created(at: u64, fd: i32, f: &str) -> Event {
        Event::Timerfd(TimerfdEvent::Created {
            at_ns: at,
            tid: 1,
            fd,
            clockid: 1,
            flags: 0,
            stack: vec![frame("__timerfd_create"), frame(f)],
        })
    }

    fn set(at: u64, fd: i32, value: u64, interval: u64) -> Event {
        Event::Timerfd(TimerfdEvent::Set {
            at_ns: at,
            tid: 1,
            fd,
            flags: 0,
            value_ns: value,
            interval_ns: interval,
            deadline_ns: Some(at + value),
            ret: 0,
            stack: vec![frame("arm_timer")],
        })
    }

    fn model() -> Model {
        let mut m = Model::new();
        m.apply(&Event::TraceStarted { at_ns: 0 });
        m
    }

    #[test]
    fn heartbeat_pushed_back_forever_never_fires() {
        let mut m = model();
        m.apply(&created(0, 5, "heartbeat"));
        for i in 0..10 {
            m.apply(&set(i * 200 * MS, 5, S, 0));
        }
        let c = candidates(&m, 2 * S, S);
        assert_eq!(c.len(), 1);
        assert!(matches!(
            &c[0].detail,
            Detail::Timerfd { detail: d, .. } if d.pattern == TimerfdPattern::NeverFires
        ));
        assert!(c[0].summary.contains("heartbeat"));
    }

    #[test]
    fn per_request_timers_never_closed_are_an_fd_leak_and_periodic_reads_are_healthy() {
        let mut m = model();
        per_request_leak(&mut m, 10..30, "handle_request");
        m.apply(&created(0, 5, "periodic"));
        m.apply(&set(0, 5, 100 * MS, 100 * MS));
        for i in 1..20 {
            m.apply(&Event::Timerfd(TimerfdEvent::Read {
                at_ns: i * 100 * MS,
                tid: 1,
                fd: 5,
                ret: 8,
                expirations: 1,
            }));
        }
        m.apply(&Event::Timerfd(TimerfdEvent::Snapshot {
            at_ns: 2 * S,
            fds: vec![(
                5,
                TimerfdState {
                    clockid: 1,
                    ticks: 0,
                    it_value_ns: 50 * MS,
                    it_interval_ns: 100 * MS,
                },
            )],
        }));
        let c = candidates(&m, 2 * S, S);
        assert_eq!(c.len(), 1, "{c:#?}");
        assert_eq!(c[0].count, 20);
        assert!(c[0].summary.contains("handle_request"));
    }

    /// `c` is one fd leak of `count` timerfds, `open_before_trace` of them of unseen origin.
    fn assert_one_fd_leak(c: &[Finding], count: usize, open_before_trace: u64) {
        assert_eq!(c.len(), 1, "{c:#?}");
        assert_eq!(c[0].count, count);
        let Detail::Timerfd { detail: d, .. } = &c[0].detail else {
            panic!("{c:#?}");
        };
        assert_eq!(
            (d.pattern, d.open_before_trace),
            (TimerfdPattern::FdLeak, open_before_trace)
        );
    }

    /// Timerfds `fds` made at `site` every 50 ms, each armed for an hour and never closed.
    fn per_request_leak(m: &mut Model, fds: std::ops::Range<i32>, site: &str) {
        let first = fds.start;
        for fd in fds {
            let at = (fd - first) as u64 * 50 * MS;
            m.apply(&created(at, fd, site));
            m.apply(&set(at, fd, 3600 * S, 0));
        }
    }

    fn existing(fd: i32, it_value_ns: u64) -> Event {
        Event::Timerfd(TimerfdEvent::Existing {
            at_ns: 0,
            fd,
            state: TimerfdState {
                clockid: 1,
                ticks: 0,
                it_value_ns,
                it_interval_ns: 0,
            },
        })
    }

    #[test]
    fn disarmed_timers_seen_at_attach_join_the_leak_they_look_like_and_are_not_never_armed() {
        let mut m = model();
        for fd in 3..13 {
            m.apply(&existing(fd, 0));
        }
        for fd in 13..33 {
            let at = (fd as u64 - 13) * 100 * MS;
            m.apply(&created(at, fd, "make_deadline_timer"));
            m.apply(&set(at, fd, MS, 0));
            m.apply(&set(at + 2 * MS, fd, 0, 0));
        }
        let c = candidates(&m, 3 * S, S);
        assert_one_fd_leak(&c, 30, 10);
        assert!(c[0].reasons.iter().all(|r| !r.contains("never armed")));
    }

    #[test]
    fn armed_timers_found_between_windows_join_the_armed_leak_they_look_like() {
        // A per-request leak of timerfds armed for an hour: 20 seen made in a probe window,
        // then 10 more found in the fd table between windows (creation unseen), armed alike.
        let mut m = model();
        per_request_leak(&mut m, 3..23, "make_timer");
        for fd in 23..33 {
            m.apply(&existing(fd, 3590 * S));
        }
        // One found disarmed is not like them.
        m.apply(&existing(40, 0));
        // The scan's states: every one of the leak armed, nothing pending.
        let armed = |fd| {
            let it_value_ns = if fd == 40 { 0 } else { 3590 * S };
            let state = TimerfdState {
                clockid: 1,
                ticks: 0,
                it_value_ns,
                it_interval_ns: 0,
            };
            (fd, state)
        };
        m.apply(&Event::Timerfd(TimerfdEvent::Snapshot {
            at_ns: 3 * S,
            fds: (3..33).chain([40]).map(armed).collect(),
        }));
        let c = candidates(&m, 3 * S, S);
        assert_one_fd_leak(&c, 30, 10);
        assert!(
            c[0].reasons.iter().any(|r| r.contains("10 more like these")
                && r.contains("armed,")
                && r.contains("between probe windows")),
            "{:#?}",
            c[0].reasons
        );
    }

    #[test]
    fn many_idle_timers_seen_at_attach_alone_are_described_as_seen_at_attach() {
        let mut m = model();
        for fd in 3..13 {
            m.apply(&existing(fd, 0));
        }
        // An armed one is not idle, and not part of the group.
        m.apply(&existing(13, 5 * S));
        let c = candidates(&m, 3 * S, S);
        assert_eq!(c.len(), 1, "{c:#?}");
        let Detail::Timerfd { detail: d, .. } = &c[0].detail else {
            panic!("{c:#?}");
        };
        assert_eq!(d.pattern, TimerfdPattern::IdleSinceAttach);
        assert_eq!(c[0].count, 10);
        assert!(c[0].summary.contains("disarmed when tracing started"));
    }
}
