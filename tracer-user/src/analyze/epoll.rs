//! Event loops that never wake (N4): threads in epoll_wait for at least the threshold, ranked by
//! evidence that nothing can ever wake them. An idle server loop on a listening socket is normal
//! and goes to "blocked but healthy" instead.
use std::collections::BTreeMap;

use serde::Serialize;

use super::{
    innermost_own_function, BlockedButHealthy, Context, Detail, Finding, Findings, Percentiles,
};
use crate::model::epoll::{DeadEnd, EpollWaiter, FdKind, SetStats, WatchedFd};
use crate::model::{new_histogram, record, BlockedSince, Frame, Model};
use crate::units::human_ns;

/// Why an fd can never become ready, in words (the JSON report's `dead_end`).
pub fn dead_end_text(dead_end: &DeadEnd) -> String {
    match dead_end {
        DeadEnd::PipeWrittenOnlyHere { writers } => format!(
            "pipe whose write end (fd {}) is held only by this process",
            writers
                .iter()
                .map(|w| w.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
        DeadEnd::EventfdHeldOnlyHere => "eventfd held only by this process".to_string(),
        DeadEnd::TimerfdDisarmed => "timerfd that is not armed: it can never fire".to_string(),
    }
}

/// An fd of a waiting loop's set as reported: what the collector found, its dead end worded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct EpollFd {
    pub fd: i32,
    /// The event mask it is registered for (EPOLLIN = 0x1, ...).
    pub events: u32,
    pub kind: FdKind,
    /// The /proc/PID/fd link ("pipe:[1234]", "socket:[99]", "/dev/null").
    pub link: String,
    /// Why this fd can never become ready, when the collector found a reason.
    pub dead_end: Option<String>,
    /// A listening socket: an idle server loop waiting on it is normal.
    pub listening: bool,
}

impl EpollFd {
    fn of(fd: &WatchedFd) -> Self {
        EpollFd {
            fd: fd.fd,
            events: fd.events,
            kind: fd.kind.clone(),
            link: fd.link.clone(),
            dead_end: fd.dead_end.as_ref().map(dead_end_text),
            listening: fd.listening,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct EpollLoop {
    pub tid: u32,
    pub name: String,
    pub epfd: i32,
    pub syscall: String,
    /// None: no timeout.
    pub timeout_ns: Option<u64>,
    pub blocked_ns: u64,
    pub blocked_at_least: bool,
    pub fds: Vec<EpollFd>,
    /// What the waits on this set returned during the trace (None: no wait on it returned).
    pub set_stats: Option<SetStats>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct EpollDetail {
    pub loops: Vec<EpollLoop>,
    /// Where the set was created, when that was traced.
    pub set_creation_stack: Option<Vec<Frame>>,
    pub events_during_trace: u64,
}

/// Event loops nobody can wake; the loops that wait but are healthy (idle ones, the Go
/// runtime's poller) with why.
pub fn detect(model: &Model, cx: &Context) -> Findings {
    let (candidates, healthy) = candidates(model, cx.end_ns, cx.min_blocked_ns);
    Findings {
        candidates,
        healthy,
        overview: (),
    }
}

fn candidates(
    model: &Model,
    end_ns: u64,
    min_blocked_ns: u64,
) -> (Vec<Finding>, Vec<BlockedButHealthy>) {
    let mut groups: BTreeMap<Vec<u64>, Vec<(EpollLoop, &EpollWaiter)>> = BTreeMap::new();
    let mut healthy = Vec::new();
    for waiter in &model.epoll.waiters {
        let (blocked_ns, at_least) = match waiter.since {
            BlockedSince::Exact(start) => (end_ns.saturating_sub(start), false),
            BlockedSince::BeforeTrace => (
                end_ns.saturating_sub(model.started_ns.unwrap_or(end_ns)),
                true,
            ),
            BlockedSince::SeenAt(seen) => (end_ns.saturating_sub(seen), true),
        };
        if blocked_ns < min_blocked_ns {
            continue;
        }
        let stats = model.epoll.stats.get(&waiter.epfd).copied();
        let looped = EpollLoop {
            tid: waiter.tid,
            name: waiter.name.clone(),
            epfd: waiter.epfd,
            syscall: waiter.syscall.clone(),
            timeout_ns: waiter.timeout_ns,
            blocked_ns,
            blocked_at_least: at_least,
            fds: waiter.fds.iter().map(EpollFd::of).collect(),
            set_stats: stats,
        };
        if super::is_go_scheduler_thread(&waiter.user_stack) {
            healthy.push(BlockedButHealthy {
                tid: waiter.tid,
                name: waiter.name.clone(),
                blocked_ns,
                why: format!(
                    "the Go runtime's network poller, idle in {} on epoll fd {}",
                    waiter.syscall, waiter.epfd
                ),
                user_stack: waiter.user_stack.clone(),
            });
            continue;
        }
        let listening = waiter.fds.iter().any(|f| f.listening);
        let all_dead = !waiter.fds.is_empty() && waiter.fds.iter().all(|f| f.dead_end.is_some());
        let any_socket = waiter.fds.iter().any(|f| f.kind == FdKind::Socket);
        // A wait with a timeout wakes up by itself: only a set that nothing can ever make ready
        // (empty, or every fd a dead end) shows it stuck, waking for nothing.
        let evidence =
            waiter.fds.is_empty() || all_dead || (!any_socket && waiter.timeout_ns.is_none());
        if (listening && !waiter.fds.is_empty()) || !evidence {
            healthy.push(BlockedButHealthy {
                tid: waiter.tid,
                name: waiter.name.clone(),
                blocked_ns,
                why: match waiter.timeout_ns {
                    Some(timeout) if !listening && !any_socket => format!(
                        "event loop in {} on epoll fd {} watching {} fd(s) that can still fire, with a timeout of {}: it wakes up by itself",
                        waiter.syscall,
                        waiter.epfd,
                        waiter.fds.len(),
                        human_ns(timeout)
                    ),
                    _ => format!(
                        "idle event loop in {} on epoll fd {} watching {} ({}): waiting for clients is normal",
                        waiter.syscall,
                        waiter.epfd,
                        waiter.fds.len(),
                        if listening { "a listening socket" } else { "sockets" }
                    ),
                },
                user_stack: waiter.user_stack.clone(),
            });
            continue;
        }
        let key = waiter.user_stack.iter().map(|f| f.addr).collect();
        groups.entry(key).or_default().push((looped, waiter));
    }
    let trace_ns = end_ns.saturating_sub(model.started_ns.unwrap_or(end_ns));
    let candidates = groups
        .into_values()
        .map(|members| candidate(model, members, trace_ns))
        .collect();
    (candidates, healthy)
}

fn candidate(model: &Model, members: Vec<(EpollLoop, &EpollWaiter)>, trace_ns: u64) -> Finding {
    let (first, waiter) = &members[0];
    let mut score = 50.0;
    let mut reasons = Vec::new();
    let mut histogram = new_histogram(3);
    let mut max = 0;
    for (l, _) in &members {
        record(&mut histogram, l.blocked_ns);
        max = max.max(l.blocked_ns);
    }
    let at_least = members.iter().any(|(l, _)| l.blocked_at_least);
    // A lower bound from a later first look (a wait begun between probe windows) is not "since
    // before the trace".
    let before_trace = members
        .iter()
        .any(|(l, _)| l.blocked_at_least && l.blocked_ns >= trace_ns);
    let events: u64 = members
        .iter()
        .filter_map(|(l, _)| l.set_stats.map(|s| s.events))
        .sum();
    reasons.push(format!(
        "{} thread(s) waiting in {} on epoll fd {} for {}{}",
        members.len(),
        first.syscall,
        first.epfd,
        human_ns(max),
        match (at_least, before_trace) {
            (true, true) => " or more (since before the trace)",
            (true, false) => " or more (first seen waiting then, not woken since)",
            _ => "",
        }
    ));
    if events == 0 {
        score += 20.0;
        reasons.push("the set returned no events during the trace".to_string());
    }
    match first.timeout_ns {
        None => {
            score += 10.0;
            reasons.push("no timeout: only an event can end the wait".to_string());
        }
        Some(t) => reasons.push(format!(
            "timeout {}: it wakes up by itself, but to a set that cannot fire (below)",
            human_ns(t)
        )),
    }
    if first.fds.is_empty() {
        score += 30.0;
        reasons.push("the epoll set is empty: nothing can ever wake it".to_string());
    } else {
        let described: Vec<String> = first
            .fds
            .iter()
            .map(|f| match &f.dead_end {
                Some(why) => format!("fd {} ({}): {why}", f.fd, f.kind),
                None => format!("fd {} ({})", f.fd, f.kind),
            })
            .collect();
        if first.fds.iter().all(|f| f.dead_end.is_some()) {
            score += 15.0;
            reasons.push(format!(
                "every fd in the set is a dead end: {}",
                described.join("; ")
            ));
        } else {
            reasons.push(format!("the set watches {}", described.join("; ")));
        }
    }
    if first.blocked_at_least && first.blocked_ns >= trace_ns && trace_ns > 0 {
        score += 10.0;
        reasons.push("already waiting when tracing started and for all of it".to_string());
    }
    if members.len() > 1 {
        score += (2.0 * (members.len() - 1) as f64).min(20.0);
        reasons.push(format!(
            "{} event loops stuck at the same place",
            members.len()
        ));
    }
    let site = innermost_own_function(&waiter.user_stack);
    let set = model.epoll.sets.get(&first.epfd);
    Finding {
        count: members.len(),
        summary: format!(
            "{} event loop(s) in {} {} in {site} (epoll fd {}, {} fd(s): {})",
            members.len(),
            first.syscall,
            match first.timeout_ns {
                None => "never woken".to_string(),
                Some(t) => format!(
                    "woken only by its {} timeout, on a set nothing can make ready",
                    human_ns(t)
                ),
            },
            first.epfd,
            first.fds.len(),
            first
                .fds
                .iter()
                .map(|f| f.kind.name())
                .collect::<Vec<_>>()
                .join(", ")
        ),
        score,
        reasons,
        blocking_stack: waiter.user_stack.clone(),
        creation_stack: None,
        blocked_ns: Percentiles::of(&histogram, max, at_least),
        grew: None,
        detail: Detail::EpollWait(EpollDetail {
            set_creation_stack: set
                .map(|s| s.creation_stack.clone())
                .filter(|s| !s.is_empty()),
            events_during_trace: events,
            loops: members.into_iter().map(|(l, _)| l).collect(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::epoll::EpollEvent;
    use crate::model::tests::frame;
    use crate::model::Event;

    const S: u64 = 1_000_000_000;

    fn fd(kind: &str, dead: bool, listening: bool) -> WatchedFd {
        WatchedFd {
            fd: 4,
            events: 1,
            kind: kind.to_string().into(),
            link: format!("{kind}:[1]"),
            dead_end: dead.then_some(DeadEnd::EventfdHeldOnlyHere),
            listening,
        }
    }

    fn run(fds: Vec<WatchedFd>) -> (Vec<Finding>, Vec<BlockedButHealthy>) {
        run_with(
            fds,
            None,
            vec![frame("__epoll_wait"), frame("run_event_loop")],
        )
    }

    fn run_with(
        fds: Vec<WatchedFd>,
        timeout_ns: Option<u64>,
        user_stack: Vec<Frame>,
    ) -> (Vec<Finding>, Vec<BlockedButHealthy>) {
        let mut model = Model::new();
        model.apply(&Event::TraceStarted { at_ns: 0 });
        model.apply(&Event::Epoll(EpollEvent::Waiting {
            at_ns: 3 * S,
            waiters: vec![EpollWaiter {
                tid: 7,
                name: "loop".into(),
                epfd: 3,
                syscall: "epoll_wait".into(),
                timeout_ns,
                since: BlockedSince::BeforeTrace,
                user_stack,
                fds,
            }],
        }));
        candidates(&model, 3 * S, S)
    }

    #[test]
    fn dead_ends_are_worded_as_reports_have_them() {
        assert_eq!(
            dead_end_text(&DeadEnd::PipeWrittenOnlyHere { writers: vec![4] }),
            "pipe whose write end (fd 4) is held only by this process"
        );
        assert_eq!(
            dead_end_text(&DeadEnd::PipeWrittenOnlyHere {
                writers: vec![4, 7]
            }),
            "pipe whose write end (fd 4, 7) is held only by this process"
        );
        assert_eq!(
            dead_end_text(&DeadEnd::EventfdHeldOnlyHere),
            "eventfd held only by this process"
        );
        assert_eq!(
            dead_end_text(&DeadEnd::TimerfdDisarmed),
            "timerfd that is not armed: it can never fire"
        );
        // The reasons of a candidate carry the words, and the reported fd its fields.
        let (dead, _) = run(vec![fd("pipe", true, false)]);
        let reasons = dead[0].reasons.join("\n");
        assert!(
            reasons.contains("fd 4 (pipe): eventfd held only by this process"),
            "{reasons}"
        );
        let crate::analyze::Detail::EpollWait(detail) = &dead[0].detail else {
            panic!("{:?}", dead[0].detail)
        };
        let reported = serde_json::to_value(&detail.loops[0].fds[0]).unwrap();
        assert_eq!(
            reported,
            serde_json::json!({"fd": 4, "events": 1, "kind": "pipe", "link": "pipe:[1]",
                "dead_end": "eventfd held only by this process", "listening": false})
        );
    }

    #[test]
    fn dead_end_and_empty_sets_are_candidates_and_listening_loops_are_not() {
        let (dead, _) = run(vec![fd("pipe", true, false)]);
        assert_eq!(dead.len(), 1);
        assert_eq!(dead[0].kind(), crate::analyze::FindingKind::EpollWait);
        assert!(dead[0].summary.contains("run_event_loop"));
        let (empty, _) = run(vec![]);
        assert!(empty[0].score > dead[0].score);
        let (server, healthy) = run(vec![fd("socket", false, true)]);
        assert!(server.is_empty());
        assert_eq!(healthy.len(), 1);
    }

    #[test]
    fn a_wait_with_a_timeout_is_never_woken_only_on_a_set_that_cannot_fire() {
        let stack = || vec![frame("__epoll_wait"), frame("run_event_loop")];
        // A pipe another thread of the process may write: it wakes by itself, healthy.
        let (none, healthy) = run_with(vec![fd("pipe", false, false)], Some(60 * S), stack());
        assert!(none.is_empty(), "{none:#?}");
        assert!(healthy[0].why.contains("wakes up by itself"));
        // Every fd a dead end: stuck, and the summary says why despite the timeout.
        let (dead, _) = run_with(vec![fd("pipe", true, false)], Some(60 * S), stack());
        assert_eq!(dead.len(), 1);
        assert!(
            !dead[0].summary.contains("never woken"),
            "{}",
            dead[0].summary
        );
        assert!(dead[0].summary.contains("nothing can make ready"));
    }

    #[test]
    fn the_go_poller_is_healthy_wherever_netpoll_is_in_its_stack() {
        // Go 1.22 names the stub runtime/internal/syscall, 1.23+ internal/runtime/syscall; both
        // reach runtime.netpoll through one or two EpollWait frames.
        for stub in [
            "runtime/internal/syscall.Syscall6",
            "internal/runtime/syscall/linux.Syscall6",
        ] {
            let stack = vec![
                frame(stub),
                frame("internal/runtime/syscall/linux.EpollWait"),
                frame("runtime/internal/syscall.EpollWait"),
                frame("runtime.netpoll"),
                frame("runtime.findRunnable"),
            ];
            let (none, healthy) = run_with(vec![fd("pipe", false, false)], None, stack);
            assert!(none.is_empty(), "{stub}: {none:#?}");
            assert!(healthy[0].why.contains("network poller"), "{stub}");
        }
        // A program's own loop through the same stub is not the runtime's.
        let own = vec![
            frame("runtime/internal/syscall.Syscall6"),
            frame("syscall.EpollWait"),
            frame("main.loop"),
            frame("runtime.netpoll"),
        ];
        let (stuck, _) = run_with(vec![fd("pipe", true, false)], None, own);
        assert_eq!(stuck.len(), 1);
    }
}
