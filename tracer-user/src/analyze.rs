//! From the model to leak candidates: pure, deterministic, explained.
//!
//! A candidate is a group of threads stuck at the same place (or in one wait-for cycle) for at
//! least the threshold. Healthy activity (waits that completed) never becomes a candidate; it is
//! summarised per futex word instead.
pub mod ancestry;
pub mod chains;
pub mod epoll;
pub mod finding;
pub mod fingerprint;
pub mod goroutines;
pub mod threads;
pub mod timerfd;
pub mod timers;

use std::collections::{BTreeMap, BTreeSet, HashMap};

use hdrhistogram::Histogram;
use serde::Serialize;

pub use finding::{Detail, Finding, FindingKind};

use crate::model::{new_histogram, record, BlockedThread, Frame, Model, OTHER_SITE};

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

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct StuckThread {
    pub tid: u32,
    pub name: String,
    #[serde(with = "crate::model::hex_addr")]
    pub futex_addr: u64,
    pub futex_op: &'static str,
    pub blocked_ns: u64,
    pub blocked_at_least: bool,
    pub has_timeout: bool,
    pub owner_tid: Option<u32>,
    /// The thread whose exit this one waits for (pthread_join).
    pub joining_tid: Option<u32>,
    pub blocking_stack: Vec<Frame>,
    pub kernel_stack: Vec<String>,
    /// When this thread waits for another (join, lock owner) that is stuck: the chain of waits,
    /// first link from this thread.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub waits_on: Vec<chains::WaitLink>,
    /// ... and the stuck thread at its end, with the candidate that explains it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stuck_behind: Option<chains::StuckTarget>,
}

/// One edge of a wait-for cycle: `tid` waits for the lock at `waits_for`, held by `held_by`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CycleEdge {
    pub tid: u32,
    #[serde(with = "crate::model::hex_addr")]
    pub waits_for: u64,
    pub held_by: u32,
}

/// Completed waits on one futex word: healthy activity, for context.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct WaitSiteSummary {
    /// The futex word, or "other" for the sites folded together past the site limit.
    pub futex_addr: String,
    pub futex_op: &'static str,
    pub waits: u64,
    pub timeouts: u64,
    pub total_ns: u64,
    pub wait_ns: Percentiles,
    /// The stacks of the longest wait that was long enough to have its stacks taken.
    pub longest_wait_stack: Option<Vec<Frame>>,
    pub longest_wait_kernel_stack: Option<Vec<String>>,
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
}

impl StuckThread {
    /// The other thread that has to act for this wait to end, if the wait names one.
    fn waits_for_thread(&self) -> Option<u32> {
        self.owner_tid.or(self.joining_tid)
    }
}

/// Score components (documented in the report's reasons).
const SCORE_DEADLOCK: f64 = 100.0;
const SCORE_BLOCKED: f64 = 50.0;
const SCORE_NEVER_WOKEN: f64 = 20.0;
const SCORE_NO_TIMEOUT: f64 = 10.0;
const SCORE_WHOLE_TRACE: f64 = 10.0;
const SCORE_PER_EXTRA_THREAD: f64 = 2.0;
const SCORE_MAX_EXTRA_THREADS: f64 = 20.0;

pub fn analyze(model: &Model, now_ns: u64, min_blocked_ns: u64, max_sites: usize) -> Analysis {
    let end_ns = model.end_ns(now_ns);
    let stuck: Vec<StuckThread> = model
        .blocked
        .iter()
        .filter_map(|thread| {
            let (blocked_ns, at_least) = model.blocked_for(thread, end_ns);
            (blocked_ns >= min_blocked_ns).then(|| stuck_thread(thread, blocked_ns, at_least))
        })
        .collect();

    let cycles = wait_for_cycles(&stuck);
    let in_cycle: BTreeSet<u32> = cycles.iter().flatten().map(|edge| edge.tid).collect();

    let mut candidates: Vec<Finding> = cycles
        .into_iter()
        .map(|cycle| deadlock_candidate(model, &stuck, cycle))
        .collect();

    // Threads outside cycles, grouped by where they block (same code path = same addresses).
    // A join waits for another thread: it takes that thread's verdict, once all are known.
    let mut groups: BTreeMap<Vec<u64>, Vec<StuckThread>> = BTreeMap::new();
    let mut blocked_but_healthy = Vec::new();
    let mut joiners = Vec::new();
    let all_waiting: BTreeMap<u32, StuckThread> = stuck
        .iter()
        .filter(|t| t.waits_for_thread().is_some())
        .map(|t| (t.tid, t.clone()))
        .collect();
    for thread in stuck.into_iter().filter(|t| !in_cycle.contains(&t.tid)) {
        if thread.owner_tid.is_none() && thread.joining_tid.is_some() {
            joiners.push(thread);
            continue;
        }
        if is_go_scheduler_thread(&thread.blocking_stack) {
            blocked_but_healthy.push(BlockedButHealthy {
                tid: thread.tid,
                name: thread.name,
                blocked_ns: thread.blocked_ns,
                why: "a Go runtime thread parked by the scheduler while it has nothing to run \
                      (goroutines are analysed on their own)"
                    .to_string(),
                user_stack: thread.blocking_stack,
            });
            continue;
        }
        let key = thread.blocking_stack.iter().map(|f| f.addr).collect();
        groups.entry(key).or_default().push(thread);
    }
    for threads in groups.into_values() {
        match taking_turns(model, &threads) {
            Some(why) => {
                blocked_but_healthy.extend(threads.into_iter().map(|thread| BlockedButHealthy {
                    tid: thread.tid,
                    name: thread.name,
                    blocked_ns: thread.blocked_ns,
                    why: why.clone(),
                    user_stack: thread.blocking_stack,
                }))
            }
            None => candidates.push(wait_candidate(model, threads, end_ns, min_blocked_ns)),
        }
    }
    let (mut thread_leaks, leaked_tids) = threads::candidates(model, end_ns);
    let (epoll_candidates, idle_loops) = epoll::candidates(model, end_ns, min_blocked_ns);
    let timerfd_candidates = timerfd::candidates(model, end_ns, min_blocked_ns);
    let mut stuck_targets = chains::stuck_threads(
        &candidates
            .iter()
            .chain(&thread_leaks)
            .chain(&epoll_candidates)
            .collect::<Vec<_>>(),
        &leaked_tids,
    );
    chains::add_timerfd_readers(&mut stuck_targets, &timerfd_candidates, model);
    let waiting: BTreeMap<u32, &StuckThread> = all_waiting.iter().map(|(&k, v)| (k, v)).collect();
    // A lock waiter is a candidate on its own evidence; when the owner is stuck, it says behind
    // whom.
    for candidate in &mut candidates {
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
    for mut thread in joiners {
        match chains::resolve(&thread, &waiting, &stuck_targets) {
            Some(chains::Resolution::Stuck(links, target)) => {
                thread.waits_on = links;
                thread.stuck_behind = Some(target);
                let key = thread.blocking_stack.iter().map(|f| f.addr).collect();
                chained.entry(key).or_default().push(thread);
            }
            _ => blocked_but_healthy.push(BlockedButHealthy {
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
    candidates.extend(
        chained
            .into_values()
            .map(|threads| wait_candidate(model, threads, end_ns, min_blocked_ns)),
    );
    fold_into_thread_leaks(&mut candidates, &leaked_tids, &mut thread_leaks);
    candidates.extend(thread_leaks);
    candidates.extend(epoll_candidates);
    blocked_but_healthy.extend(idle_loops);
    candidates.extend(timerfd_candidates);
    let (mut goroutine_candidates, goroutines) = goroutines::analyze(
        &model.goroutines,
        model.started_ns.unwrap_or(end_ns),
        min_blocked_ns,
    );
    let (timer_candidates, go_timers) = timers::analyze(
        &model.go_timers,
        &mut goroutine_candidates,
        model.started_ns.unwrap_or(end_ns),
    );
    candidates.extend(goroutine_candidates);
    candidates.extend(timer_candidates);
    candidates.sort_by(|a, b| {
        b.score
            .total_cmp(&a.score)
            .then(b.blocked_ns.max.cmp(&a.blocked_ns.max))
    });

    Analysis {
        candidates,
        wait_sites: wait_sites(model, max_sites),
        blocked_but_healthy,
        goroutines,
        go_timers,
    }
}

fn stuck_thread(thread: &BlockedThread, blocked_ns: u64, at_least: bool) -> StuckThread {
    StuckThread {
        tid: thread.tid,
        name: thread.name.clone(),
        futex_addr: thread.futex_addr,
        futex_op: tracer_common::futex_op::name(thread.op),
        blocked_ns,
        blocked_at_least: at_least,
        has_timeout: thread.has_timeout,
        owner_tid: thread.owner_tid,
        joining_tid: thread.joining_tid,
        blocking_stack: thread.user_stack.clone(),
        kernel_stack: thread.kernel_stack.clone(),
        waits_on: Vec::new(),
        stuck_behind: None,
    }
}

/// Cycles in the graph "thread waits for a lock held by thread", each as its edges starting
/// from the lowest tid (so the output does not depend on map order).
fn wait_for_cycles(stuck: &[StuckThread]) -> Vec<Vec<CycleEdge>> {
    let waits_for: HashMap<u32, (u64, u32)> = stuck
        .iter()
        .filter_map(|t| {
            t.waits_for_thread()
                .map(|other| (t.tid, (t.futex_addr, other)))
        })
        .collect();
    let mut seen = BTreeSet::new();
    let mut cycles = Vec::new();
    let mut starts: Vec<u32> = waits_for.keys().copied().collect();
    starts.sort_unstable();
    for start in starts {
        if seen.contains(&start) {
            continue;
        }
        // Follow the chain until it ends, repeats, or reaches an already-explored thread.
        let mut path: Vec<u32> = Vec::new();
        let mut current = start;
        while let Some(&(_, owner)) = waits_for.get(&current) {
            if seen.contains(&current) {
                break;
            }
            seen.insert(current);
            path.push(current);
            if let Some(pos) = path.iter().position(|&t| t == owner) {
                let members = &path[pos..];
                let lowest = members
                    .iter()
                    .enumerate()
                    .min_by_key(|(_, t)| **t)
                    .map(|(i, _)| i);
                let mut edges: Vec<CycleEdge> = members
                    .iter()
                    .map(|&tid| {
                        let (lock, held_by) = waits_for[&tid];
                        CycleEdge {
                            tid,
                            waits_for: lock,
                            held_by,
                        }
                    })
                    .collect();
                edges.rotate_left(lowest.unwrap_or(0));
                cycles.push(edges);
                break;
            }
            current = owner;
        }
    }
    cycles
}

fn durations<'a>(threads: impl Iterator<Item = &'a StuckThread>) -> Percentiles {
    let mut histogram = new_histogram(3);
    let mut at_least = false;
    let mut max = 0;
    for thread in threads {
        record(&mut histogram, thread.blocked_ns);
        at_least |= thread.blocked_at_least;
        max = max.max(thread.blocked_ns);
    }
    Percentiles::of(&histogram, max, at_least)
}

fn wakes_on(model: &Model, addrs: impl Iterator<Item = u64>) -> u64 {
    addrs
        .collect::<BTreeSet<_>>()
        .into_iter()
        .filter_map(|addr| model.wakes.get(&addr))
        .sum()
}

/// Why threads blocked on futex words that others were woken from during the trace are not
/// stuck: the words are woken (counted on the watched words) and waits on them completed, so the
/// condition is signalled or the lock handed on, and these threads wait their turn: an idle pool
/// on its job condition, or a contended lock that moves. None when that was not seen: a word
/// nobody wakes is the stuck case (catalogue N2), and a wait on a stuck owner is not served.
fn taking_turns(model: &Model, threads: &[StuckThread]) -> Option<String> {
    if threads.iter().any(|t| t.stuck_behind.is_some()) {
        return None;
    }
    let words: BTreeSet<u64> = threads.iter().map(|t| t.futex_addr).collect();
    let wakes = wakes_on(model, words.iter().copied());
    let completed: u64 = words
        .iter()
        .filter_map(|addr| model.wait_sites.get(addr))
        .map(|site| site.waits.saturating_sub(site.timeouts))
        .sum();
    if wakes > 0 && completed > 0 {
        return Some(format!(
            "waits its turn: the futex word it waits on was woken {wakes} time(s) during the \
             trace and {completed} wait(s) on it completed (an idle pool on its job condition, \
             or a lock that is handed on)"
        ));
    }
    // Where the probes did not see it (between probe windows, or waits begun before the
    // trace), the scans did: other threads' waits on the word ended while these stay.
    let ended: u64 = words
        .iter()
        .filter_map(|addr| model.waits_ended_between_scans.get(addr))
        .sum();
    (ended > 0).then(|| {
        format!(
            "waits its turn: {ended} other wait(s) on the futex word it waits on were seen \
             ending during the trace (woken, by the /proc scans: a thread out of the wait, or in \
             a new one, at the next scan) while this one stays (an idle pool on its job \
             condition, or a lock that is handed on)"
        )
    })
}

fn deadlock_candidate(model: &Model, stuck: &[StuckThread], cycle: Vec<CycleEdge>) -> Finding {
    let threads: Vec<StuckThread> = cycle
        .iter()
        .filter_map(|edge| stuck.iter().find(|t| t.tid == edge.tid).cloned())
        .collect();
    let description = cycle
        .iter()
        .map(|edge| {
            format!(
                "thread {} waits for {:#x} held by thread {}",
                edge.tid, edge.waits_for, edge.held_by
            )
        })
        .collect::<Vec<_>>()
        .join("; ");
    Finding {
        count: threads.len(),
        summary: format!("{} threads wait for each other's locks", threads.len()),
        score: SCORE_DEADLOCK + threads.len() as f64,
        reasons: vec![
            format!("wait-for cycle: {description}"),
            "who holds what is read from the futex words themselves (glibc mutex owner, PI futex word, joined thread id)".to_string(),
        ],
        blocking_stack: threads.first().map(|t| t.blocking_stack.clone()).unwrap_or_default(),
        creation_stack: None,
        blocked_ns: durations(threads.iter()),
        grew: None,
        detail: Detail::Deadlock {
            wakes: wakes_on(model, threads.iter().map(|t| t.futex_addr)),
            threads,
            cycle,
        },
    }
}

fn wait_candidate(
    model: &Model,
    threads: Vec<StuckThread>,
    end_ns: u64,
    min_blocked_ns: u64,
) -> Finding {
    let blocked = durations(threads.iter());
    let wakes = wakes_on(model, threads.iter().map(|t| t.futex_addr));
    let any_timeout = threads.iter().any(|t| t.has_timeout);
    let trace_ns = end_ns.saturating_sub(model.started_ns.unwrap_or(end_ns));
    // A lower bound from a later first look (a wait begun between probe windows) is not the
    // whole trace.
    let whole_trace = threads
        .iter()
        .all(|t| t.blocked_at_least && t.blocked_ns >= trace_ns);

    let mut score = SCORE_BLOCKED;
    let mut reasons = Vec::new();
    if let Some(thread) = threads.iter().find(|t| t.owner_tid.is_none()) {
        if let (Some(joined), Some(target)) = (thread.joining_tid, &thread.stuck_behind) {
            reasons.push(format!(
                "joining thread {joined}, which is stuck itself: {}",
                chains::describe(&thread.waits_on, target)
            ));
        }
    }
    reasons.push(format!(
        "{} thread(s) blocked in futex wait for {} or more (threshold {})",
        threads.len(),
        crate::report::human_ns(threads.iter().map(|t| t.blocked_ns).min().unwrap_or(0)),
        crate::report::human_ns(min_blocked_ns)
    ));
    if wakes == 0 {
        score += SCORE_NEVER_WOKEN;
        reasons.push("nobody woke the futex word(s) they wait on during the trace".to_string());
    } else {
        reasons.push(format!(
            "{wakes} wake(s) on their futex word(s) during the trace, yet they stay blocked"
        ));
    }
    if any_timeout {
        reasons.push("the wait has a timeout, so it ends by itself (lower score)".to_string());
    } else {
        score += SCORE_NO_TIMEOUT;
        reasons.push("no timeout: only a wake can end the wait".to_string());
    }
    if whole_trace {
        score += SCORE_WHOLE_TRACE;
        reasons.push(format!(
            "already blocked when tracing started and for all of it ({})",
            crate::report::human_ns(trace_ns)
        ));
    }
    if threads.len() > 1 {
        score += (SCORE_PER_EXTRA_THREAD * (threads.len() - 1) as f64).min(SCORE_MAX_EXTRA_THREADS);
        reasons.push(format!("{} threads stuck at the same place", threads.len()));
    }
    let site = threads
        .first()
        .map(|t| innermost_own_function(&t.blocking_stack))
        .unwrap_or_else(|| "unknown".to_string());
    Finding {
        count: threads.len(),
        summary: format!(
            "{} thread(s) stuck in futex wait in {site}{}",
            threads.len(),
            threads
                .first()
                .filter(|t| t.stuck_behind.is_some() && t.owner_tid.is_none())
                .and_then(|t| t.joining_tid)
                .map(|joined| format!(", joining stuck thread {joined}"))
                .unwrap_or_default()
        ),
        score,
        reasons,
        blocking_stack: threads
            .first()
            .map(|t| t.blocking_stack.clone())
            .unwrap_or_default(),
        creation_stack: None,
        blocked_ns: blocked,
        grew: None,
        detail: Detail::FutexWait { threads, wakes },
    }
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
            threads::absorb_older(leak, &older);
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

fn wait_sites(model: &Model, max_sites: usize) -> Vec<WaitSiteSummary> {
    let mut sites: Vec<_> = model.wait_sites.values().collect();
    sites.sort_by(|a, b| {
        b.total_ns
            .cmp(&a.total_ns)
            .then(a.futex_addr.cmp(&b.futex_addr))
    });
    sites
        .into_iter()
        .take(max_sites)
        .map(|site| WaitSiteSummary {
            futex_addr: if site.futex_addr == OTHER_SITE {
                "other".to_string()
            } else {
                format!("{:#x}", site.futex_addr)
            },
            futex_op: tracer_common::futex_op::name(site.op),
            waits: site.waits,
            timeouts: site.timeouts,
            total_ns: site.total_ns,
            wait_ns: Percentiles::of(&site.durations, site.max_ns, false),
            longest_wait_stack: site.longest_stack.as_ref().map(|(_, s, _)| s.clone()),
            longest_wait_kernel_stack: site.longest_stack.as_ref().map(|(_, _, k)| k.clone()),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::tests::blocked;
    use crate::model::{BlockedSince, Event};

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
        fold_into_thread_leaks(&mut candidates, &BTreeSet::from([1]), &mut []);
        assert_eq!(candidates.len(), 2);
        let group = candidates.iter().find(|c| c.count == 2).unwrap();
        assert!(group.reasons.iter().any(|r| r.contains("thread leak")));
        // Wholly leaked: reported with the leak only.
        fold_into_thread_leaks(&mut candidates, &BTreeSet::from([1, 2]), &mut []);
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
