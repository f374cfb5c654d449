//! From the model to leak findings: pure, deterministic, explained.
//!
//! Each kind has a detector, `detect(model or its part, &Context) -> Findings`, in its own
//! module (futex, deadlock, threads, epoll, timerfd, goroutines, timers). What one kind's
//! verdict changes in another's is a named step below ([`analyze`] runs them in order): chains
//! of waits, folding futex groups into the thread leak they belong to, and Go timers taking the
//! goroutine groups that are AfterFunc callbacks. Healthy activity never becomes a candidate;
//! it is summarised (completed futex waits per word, groups that are not candidates) or listed
//! with the reason (`blocked_but_healthy`).
pub mod ancestry;
pub mod chains;
pub mod deadlock;
pub mod epoll;
pub mod finding;
pub mod fingerprint;
pub mod futex;
pub mod goroutines;
pub mod native_io;
pub mod threads;
pub mod timerfd;
pub mod timers;

use std::collections::{BTreeMap, BTreeSet};

use hdrhistogram::Histogram;
use serde::Serialize;

pub use deadlock::CycleEdge;
pub use finding::{Detail, Finding, FindingKind};
pub use futex::{StuckThread, WaitSiteSummary};

use crate::model::{Frame, KernelCounters, Model};

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Percentiles {
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub max: u64,
    /// Some durations are lower bounds (the wait began before tracing started, or before the
    /// /proc scan that first found it).
    pub at_least: bool,
}

impl Percentiles {
    /// hdrhistogram answers with bucket upper edges; `max` is the exact largest value, and no
    /// percentile is shown above it.
    pub fn of(histogram: &Histogram<u64>, max: u64, at_least: bool) -> Self {
        let at = |q: f64| histogram.value_at_quantile(q).min(max);
        Percentiles {
            p50: at(0.50),
            p90: at(0.90),
            p99: at(0.99),
            max,
            at_least,
        }
    }
}

/// A thread blocked past the threshold that is not a leak candidate, and why: shown, not dropped.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct BlockedButHealthy {
    pub tid: u32,
    pub name: String,
    pub blocked_ns: u64,
    pub why: String,
    /// Where it waits, innermost first, when its stack was taken.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub user_stack: Vec<Frame>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Analysis {
    pub candidates: Vec<Finding>,
    pub wait_sites: Vec<WaitSiteSummary>,
    pub blocked_but_healthy: Vec<BlockedButHealthy>,
    /// Go targets: the goroutine count over the trace and the groups that are not candidates.
    pub goroutines: Option<goroutines::GoroutineOverview>,
    /// Go targets: pending runtime timers by kind and the groups that are not candidates.
    pub go_timers: Option<timers::GoTimerOverview>,
    /// Threads, epoll sets and timerfds seen during the trace.
    pub native_io: native_io::NativeSummary,
    /// Futex waits seen completing.
    pub waits_seen: u64,
    /// The kernel side's counters at the end (what was seen and what was lost).
    pub counters: KernelCounters,
}

/// What every detector is given besides its part of the model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Context {
    /// The end of the observation: the target's exit, or now (CLOCK_MONOTONIC ns).
    pub end_ns: u64,
    /// When tracing started (`end_ns` if it never did).
    pub started_ns: u64,
    /// A wait is stuck from this long (ns).
    pub min_blocked_ns: u64,
    /// Completed-wait sites listed (futex words, most total time first).
    pub max_sites: usize,
}

/// What a detector found: its candidates (unsorted; [`analyze`] orders them all), the
/// threads blocked past the threshold that it judged healthy (with why), and what its kind
/// reports besides (`()` for kinds with nothing more).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Findings<O = ()> {
    pub candidates: Vec<Finding>,
    pub healthy: Vec<BlockedButHealthy>,
    pub overview: O,
}

/// Runs every detector, then the cross-kind steps in this order, then orders the candidates
/// worst first (score, then longest blocked).
pub fn analyze(model: &Model, now_ns: u64, min_blocked_ns: u64, max_sites: usize) -> Analysis {
    let end_ns = model.end_ns(now_ns);
    let cx = Context {
        end_ns,
        started_ns: model.started_ns.unwrap_or(end_ns),
        min_blocked_ns,
        max_sites,
    };
    let deadlocks = deadlock::detect(model, &cx);
    let mut futex = futex::detect(model, &cx);
    let mut thread_leaks = threads::detect(model, &cx);
    let epoll = epoll::detect(model, &cx);
    let timerfd = timerfd::detect(model, &cx);
    let mut goroutines = goroutines::detect(&model.goroutines, &cx);
    let mut go_timers = timers::detect(&model.go_timers, &cx);

    chains_of_waits(
        model,
        &cx,
        &mut futex,
        &deadlocks,
        &thread_leaks,
        &epoll,
        &timerfd,
    );
    fold_into_thread_leaks(
        &mut futex.candidates,
        &thread_leaks.overview,
        &mut thread_leaks.candidates,
        &threads::created_without_stack(model),
    );
    timers::take_callbacks(
        &mut goroutines.candidates,
        &mut go_timers.candidates,
        &model.go_timers,
    );

    let mut candidates = Vec::new();
    let mut blocked_but_healthy = Vec::new();
    for findings in [
        deadlocks,
        Findings {
            candidates: futex.candidates,
            healthy: futex.healthy,
            overview: (),
        },
        Findings {
            candidates: thread_leaks.candidates,
            healthy: thread_leaks.healthy,
            overview: (),
        },
        epoll,
        timerfd,
        Findings {
            candidates: goroutines.candidates,
            healthy: goroutines.healthy,
            overview: (),
        },
        Findings {
            candidates: go_timers.candidates,
            healthy: go_timers.healthy,
            overview: (),
        },
    ] {
        candidates.extend(findings.candidates);
        blocked_but_healthy.extend(findings.healthy);
    }
    candidates.sort_by(|a, b| {
        b.score
            .total_cmp(&a.score)
            .then(b.blocked_ns.max.cmp(&a.blocked_ns.max))
    });
    Analysis {
        candidates,
        wait_sites: futex.overview.wait_sites,
        blocked_but_healthy,
        goroutines: goroutines.overview,
        go_timers: go_timers.overview,
        native_io: native_io::NativeSummary::of(model),
        waits_seen: model.futex.waits_seen,
        counters: model.counters,
    }
}

/// Chains of waits (cross-kind step): a thread waiting for another (lock owner, joined thread)
/// that some candidate holds is stuck behind it, whatever that candidate's kind. A lock waiter
/// is a candidate on its own evidence, and says behind whom; a joiner takes the joined thread's
/// verdict: a futex candidate when it is stuck, healthy when not.
fn chains_of_waits(
    model: &Model,
    cx: &Context,
    futex: &mut Findings<futex::FutexOverview>,
    deadlocks: &Findings,
    thread_leaks: &Findings<BTreeSet<u32>>,
    epoll: &Findings,
    timerfd: &Findings,
) {
    let mut stuck_targets = chains::stuck_threads(
        &deadlocks
            .candidates
            .iter()
            .chain(&futex.candidates)
            .chain(&thread_leaks.candidates)
            .chain(&epoll.candidates)
            .collect::<Vec<_>>(),
        &thread_leaks.overview,
    );
    chains::add_timerfd_readers(&mut stuck_targets, &timerfd.candidates, model);
    let waiting: BTreeMap<u32, &StuckThread> = futex
        .overview
        .waiting
        .iter()
        .map(|(&k, v)| (k, v))
        .collect();
    for candidate in &mut futex.candidates {
        let Detail::FutexWait { threads, .. } = &mut candidate.detail else {
            continue;
        };
        let mut chain_reason = None;
        for thread in threads.iter_mut().filter(|t| t.owner_tid.is_some()) {
            if let Some(chains::Resolution::Stuck(links, target)) =
                chains::resolve(thread, &waiting, &stuck_targets)
            {
                chain_reason.get_or_insert_with(|| {
                    format!(
                        "waiting for a lock held by thread {}, which is stuck itself: {}",
                        links[0].waits_for,
                        chains::describe(&links, &target)
                    )
                });
                thread.waits_on = links;
                thread.stuck_behind = Some(target);
            }
        }
        if let Some(reason) = chain_reason {
            candidate.reasons.insert(0, reason);
        }
    }
    let mut chained: BTreeMap<Vec<u64>, Vec<StuckThread>> = BTreeMap::new();
    for mut thread in std::mem::take(&mut futex.overview.joiners) {
        match chains::resolve(&thread, &waiting, &stuck_targets) {
            Some(chains::Resolution::Stuck(links, target)) => {
                thread.waits_on = links;
                thread.stuck_behind = Some(target);
                let key = thread.blocking_stack.iter().map(|f| f.addr).collect();
                chained.entry(key).or_default().push(thread);
            }
            _ => futex.healthy.push(BlockedButHealthy {
                tid: thread.tid,
                name: thread.name,
                blocked_ns: thread.blocked_ns,
                why: format!(
                    "joining thread {}, which is not stuck",
                    thread.joining_tid.unwrap_or_default()
                ),
                user_stack: thread.blocking_stack,
            }),
        }
    }
    futex.candidates.extend(
        chained
            .into_values()
            .map(|threads| futex::wait_candidate(model, cx, threads)),
    );
}

/// Threads that belong to a leaking thread group are explained by it, so that each stuck thread
/// is reported once, under the most telling explanation: a futex group stuck exactly where a
/// leak's members are (same return addresses) is the leak, its threads whose creation was not
/// seen counted as the leak's older members; another futex group made only of leak members
/// goes; one that only partly is says so. Deadlocks stay: a cycle says more.
fn fold_into_thread_leaks(
    candidates: &mut Vec<Finding>,
    leaked: &BTreeSet<u32>,
    leaks: &mut [Finding],
    created_without_stack: &BTreeSet<u32>,
) {
    let place = |c: &Finding| c.blocking_stack.iter().map(|f| f.addr).collect::<Vec<_>>();
    candidates.retain_mut(|candidate| {
        if candidate.kind() != FindingKind::FutexWait {
            return true;
        }
        let here = place(candidate);
        if let Some(leak) = leaks
            .iter_mut()
            .find(|leak| !here.is_empty() && place(leak) == here)
        {
            let older: Vec<(u32, String)> = candidate
                .threads()
                .iter()
                .filter(|t| !leaked.contains(&t.tid))
                .map(|t| (t.tid, t.name.clone()))
                .collect();
            threads::absorb_older(leak, &older, created_without_stack);
            return false;
        }
        let in_leak = candidate
            .threads()
            .iter()
            .filter(|t| leaked.contains(&t.tid))
            .count();
        if in_leak == candidate.threads().len() {
            return false;
        }
        if in_leak > 0 {
            candidate.reasons.push(format!(
                "{in_leak} of these threads belong to a growing thread leak (reported on its own)"
            ));
        }
        true
    });
}

/// A thread the Go runtime parked for its own reasons: an idle M sleeping on its note
/// (`runtime.stopm` → `mPark` → `notesleep` → `futex`), the network poller in
/// `runtime.netpoll`'s epoll wait (from `findRunnable`), `sysmon` or the template thread between
/// rounds. Go code never blocks a thread in these for its own reasons (a parked goroutine holds
/// no thread), so they are healthy; goroutine leaks are analysed on their own.
///
/// The wait is the runtime's when every named frame from the innermost one up to a scheduler
/// function is runtime code, wherever in the stack that function is (Go 1.22 calls the poller's
/// syscall `runtime/internal/syscall.Syscall6`, 1.23+ `internal/runtime/syscall/linux.Syscall6`,
/// with one or two `EpollWait` frames between; runtime/proc.go, runtime/netpoll_epoll.go).
/// `runtime.futex` innermost is always the runtime's (`sync` blocks goroutines, not threads).
pub fn is_go_scheduler_thread(stack: &[Frame]) -> bool {
    const SCHEDULER: &[&str] = &[
        "runtime.netpoll",
        "runtime.findRunnable",
        "runtime.findrunnable",
        "runtime.stopm",
        "runtime.mPark",
        "runtime.sysmon",
        "runtime.templateThread",
        "runtime.notesleep",
        "runtime.notetsleep",
    ];
    let is_runtime = |f: &str| {
        f.starts_with("runtime.")
            || f.starts_with("runtime/internal/")
            || f.starts_with("internal/runtime/")
    };
    let mut named = stack.iter().filter_map(|f| f.function.as_deref());
    if named.clone().next() == Some("runtime.futex") {
        return true;
    }
    for function in named.by_ref() {
        if SCHEDULER.contains(&function) {
            return true;
        }
        if !is_runtime(function) {
            return false;
        }
    }
    false
}

/// The first frame that is not in the C library or a runtime: where the program's own code
/// decided to wait. Falls back to the innermost named frame.
pub fn innermost_own_function(stack: &[Frame]) -> String {
    let is_runtime = |frame: &Frame| {
        frame.module.as_deref().is_some_and(|m| {
            m.contains("libc.so") || m.contains("libpthread") || m.contains("ld-linux")
        }) || frame.function.as_deref().is_some_and(|f| {
            const LIBRARY_PREFIXES: &[&str] = &[
                "std::", "<std::", "core::", "<core::", "alloc::", "runtime.", "pthread_", "__",
                "syscall",
            ];
            LIBRARY_PREFIXES.iter().any(|prefix| f.starts_with(prefix))
        })
    };
    stack
        .iter()
        .find(|f| f.function.is_some() && !is_runtime(f))
        .or_else(|| stack.iter().find(|f| f.function.is_some()))
        .and_then(|f| f.function.clone())
        .unwrap_or_else(|| "unknown".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::tests::blocked;
    use crate::model::{BlockedSince, BlockedThread, Event};

    const S: u64 = 1_000_000_000;

    fn cycle(c: &Finding) -> &[CycleEdge] {
        match &c.detail {
            Detail::Deadlock { cycle, .. } => cycle,
            _ => &[],
        }
    }

    fn wakes(c: &Finding) -> u64 {
        match &c.detail {
            Detail::Deadlock { wakes, .. } | Detail::FutexWait { wakes, .. } => *wakes,
            _ => 0,
        }
    }

    fn model_with(threads: Vec<BlockedThread>) -> Model {
        let mut model = Model::new();
        model.apply(&Event::TraceStarted { at_ns: 10 * S });
        model.apply(&Event::Blocked {
            at_ns: 12 * S,
            threads,
        });
        model
    }

    #[test]
    fn abba_is_one_deadlock_naming_both_threads_and_both_locks() {
        let mut a = blocked(101, 0xb, BlockedSince::BeforeTrace, &["lock_a_then_b"]);
        a.owner_tid = Some(102);
        let mut b = blocked(102, 0xa, BlockedSince::BeforeTrace, &["lock_b_then_a"]);
        b.owner_tid = Some(101);
        let analysis = analyze(&model_with(vec![b, a]), 13 * S, S, 10);
        assert_eq!(analysis.candidates.len(), 1);
        let deadlock = &analysis.candidates[0];
        assert_eq!(deadlock.kind(), FindingKind::Deadlock);
        assert_eq!(deadlock.count, 2);
        assert_eq!(
            cycle(deadlock),
            vec![
                CycleEdge {
                    tid: 101,
                    waits_for: 0xb,
                    held_by: 102
                },
                CycleEdge {
                    tid: 102,
                    waits_for: 0xa,
                    held_by: 101
                },
            ]
        );
        assert!(deadlock.blocked_ns.at_least);
        assert_eq!(deadlock.blocked_ns.max, 3 * S);
    }

    #[test]
    fn a_chain_into_a_cycle_reports_the_cycle_and_the_waiter_separately() {
        let mut a = blocked(1, 0x20, BlockedSince::Exact(10 * S), &["a"]);
        a.owner_tid = Some(2);
        let mut b = blocked(2, 0x30, BlockedSince::Exact(10 * S), &["b"]);
        b.owner_tid = Some(3);
        let mut c = blocked(3, 0x20, BlockedSince::Exact(10 * S), &["c"]);
        c.owner_tid = Some(2);
        let analysis = analyze(&model_with(vec![a, b, c]), 13 * S, S, 10);
        let kinds: Vec<_> = analysis
            .candidates
            .iter()
            .map(|c| (c.kind(), c.count))
            .collect();
        assert_eq!(
            kinds,
            vec![(FindingKind::Deadlock, 2), (FindingKind::FutexWait, 1)]
        );
        let members: Vec<u32> = cycle(&analysis.candidates[0])
            .iter()
            .map(|e| e.tid)
            .collect();
        assert_eq!(members, vec![2, 3]);
    }

    #[test]
    fn waiters_at_one_site_are_one_group_and_short_waits_are_not_candidates() {
        let stack = [
            "__futex_abstimed_wait_common",
            "pthread_cond_wait",
            "wait_for_signal",
        ];
        let threads = vec![
            blocked(1, 0x40, BlockedSince::Exact(10 * S), &stack),
            blocked(2, 0x40, BlockedSince::Exact(11 * S), &stack),
            blocked(3, 0x40, BlockedSince::Exact(10 * S), &stack),
            // Blocked for 0.5 s only: below the threshold.
            blocked(
                4,
                0x50,
                BlockedSince::Exact(12 * S + S / 2),
                &["other_wait"],
            ),
        ];
        let mut model = model_with(threads);
        model.apply(&Event::Wakes {
            futex_addr: 0x40,
            wakes: 0,
            first_waker_tid: None,
        });
        let analysis = analyze(&model, 13 * S, S, 10);
        assert_eq!(analysis.candidates.len(), 1);
        let group = &analysis.candidates[0];
        assert_eq!(group.kind(), FindingKind::FutexWait);
        assert_eq!(group.count, 3);
        assert_eq!(wakes(group), 0);
        assert!(!group.blocked_ns.at_least);
        assert_eq!(group.blocked_ns.max, 3 * S);
        assert!(
            group.summary.contains("wait_for_signal"),
            "{}",
            group.summary
        );
        assert!(group.reasons.iter().any(|r| r.contains("nobody woke")));
    }

    #[test]
    fn woken_and_timed_waits_score_below_silent_ones() {
        let silent = blocked(1, 0x40, BlockedSince::Exact(10 * S), &["silent"]);
        let mut timed = blocked(2, 0x50, BlockedSince::Exact(10 * S), &["timed"]);
        timed.has_timeout = true;
        let mut model = model_with(vec![timed, silent]);
        model.apply(&Event::Wakes {
            futex_addr: 0x50,
            wakes: 3,
            first_waker_tid: Some(9),
        });
        let analysis = analyze(&model, 13 * S, S, 10);
        let order: Vec<&str> = analysis
            .candidates
            .iter()
            .map(|c| c.threads()[0].name.as_str())
            .collect();
        assert_eq!(order, vec!["t1", "t2"]);
        assert_eq!(wakes(&analysis.candidates[1]), 3);
    }

    #[test]
    fn joining_a_working_thread_is_healthy_but_joining_a_stuck_one_is_not() {
        let mut joiner = blocked(1, 0x60, BlockedSince::Exact(10 * S), &["main"]);
        joiner.joining_tid = Some(2);
        // Thread 2 is running (not in the snapshot): the join is healthy.
        let analysis = analyze(&model_with(vec![joiner.clone()]), 13 * S, S, 10);
        assert!(analysis.candidates.is_empty());
        assert_eq!(analysis.blocked_but_healthy.len(), 1);
        assert!(analysis.blocked_but_healthy[0].why.contains("thread 2"));
        // Thread 2 is stuck: the joiner is stuck behind it.
        let worker = blocked(2, 0x70, BlockedSince::Exact(10 * S), &["worker"]);
        let analysis = analyze(&model_with(vec![joiner, worker]), 13 * S, S, 10);
        assert_eq!(analysis.candidates.len(), 2);
        assert!(analysis.blocked_but_healthy.is_empty());
        let main = analysis
            .candidates
            .iter()
            .find(|c| c.threads()[0].tid == 1)
            .unwrap();
        assert!(main.reasons[0].contains("joining thread 2"));
    }

    #[test]
    fn after_the_target_exits_blocked_time_stops_at_the_exit() {
        let mut model = model_with(vec![blocked(1, 0x40, BlockedSince::Exact(10 * S), &["w"])]);
        model.apply(&Event::TargetExited { at_ns: 12 * S });
        let analysis = analyze(&model, 100 * S, S, 10);
        assert_eq!(analysis.candidates[0].blocked_ns.max, 2 * S);
    }

    #[test]
    fn futex_groups_made_of_leaked_threads_fold_into_the_leak() {
        let same = |tid| blocked(tid, 0x40, BlockedSince::Exact(10 * S), &["wait_for_reply"]);
        let other = blocked(3, 0x50, BlockedSince::Exact(10 * S), &["elsewhere"]);
        let mut candidates =
            analyze(&model_with(vec![same(1), same(2), other]), 13 * S, S, 10).candidates;
        assert_eq!(candidates.len(), 2);
        // Partly leaked: kept, with a word on it.
        fold_into_thread_leaks(
            &mut candidates,
            &BTreeSet::from([1]),
            &mut [],
            &BTreeSet::new(),
        );
        assert_eq!(candidates.len(), 2);
        let group = candidates.iter().find(|c| c.count == 2).unwrap();
        assert!(group.reasons.iter().any(|r| r.contains("thread leak")));
        // Wholly leaked: reported with the leak only.
        fold_into_thread_leaks(
            &mut candidates,
            &BTreeSet::from([1, 2]),
            &mut [],
            &BTreeSet::new(),
        );
        assert_eq!(candidates.len(), 1);
        assert_eq!(candidates[0].threads()[0].tid, 3);
    }

    #[test]
    fn idle_go_runtime_threads_are_healthy() {
        let idle = blocked(
            5,
            0x80,
            BlockedSince::BeforeTrace,
            // The unwinder may run on into the goroutine that last ran on the thread.
            &[
                "runtime.futex",
                "runtime.futexsleep",
                "runtime.notesleep",
                "time.Sleep",
            ],
        );
        // A cgo call stuck on a C mutex blocks in the C library's futex wait, not the runtime's.
        let stuck_in_cgo = blocked(
            6,
            0x90,
            BlockedSince::BeforeTrace,
            &[
                "__lll_lock_wait",
                "pthread_mutex_lock",
                "lock_it",
                "runtime.asmcgocall",
            ],
        );
        let analysis = analyze(&model_with(vec![idle, stuck_in_cgo]), 13 * S, S, 10);
        assert_eq!(analysis.candidates.len(), 1);
        assert_eq!(analysis.candidates[0].threads()[0].tid, 6);
        assert!(analysis.blocked_but_healthy[0]
            .why
            .contains("Go runtime thread"));
    }

    #[test]
    fn the_own_function_skips_libc_and_runtime_frames() {
        let mut libc_frame = crate::model::tests::frame("pthread_cond_wait");
        libc_frame.module = Some("/usr/lib/x86_64-linux-gnu/libc.so.6".to_string());
        let stack = vec![
            crate::model::tests::frame("__futex_abstimed_wait_common"),
            libc_frame,
            crate::model::tests::frame("wait_for_signal"),
        ];
        assert_eq!(innermost_own_function(&stack), "wait_for_signal");
    }
}
