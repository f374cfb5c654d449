//! Futex waits: threads blocked in a futex wait for at least the threshold, grouped by where
//! they block (same return addresses), unless the word they wait on is seen woken and its
//! waits complete (they wait their turn). Threads in a wait-for cycle are the deadlock
//! detector's ([`super::deadlock`]); threads joining another are decided by the chains step
//! ([`super::chains`]), once every other verdict is known.
use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::{
    chains, deadlock, innermost_own_function, is_go_scheduler_thread, BlockedButHealthy, Context,
    Detail, Finding, Findings, Percentiles,
};
use crate::model::futex::OTHER_SITE;
use crate::model::{new_histogram, record, BlockedThread, Frame, Model};

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

/// What the futex detector leaves to the report and to the cross-kind steps.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FutexOverview {
    /// Completed waits per futex word (healthy activity), most total time first.
    pub wait_sites: Vec<WaitSiteSummary>,
    /// Stuck threads joining another thread (pthread_join): their verdict is the joined
    /// thread's, given by the chains step.
    pub joiners: Vec<StuckThread>,
    /// Every stuck thread that waits for another (lock owner or joined thread), by tid: the
    /// links the chains step follows.
    pub waiting: BTreeMap<u32, StuckThread>,
}

impl StuckThread {
    /// The other thread that has to act for this wait to end, if the wait names one.
    pub(super) fn waits_for_thread(&self) -> Option<u32> {
        self.owner_tid.or(self.joining_tid)
    }
}

/// Score components (documented in the report's reasons).
const SCORE_BLOCKED: f64 = 50.0;
const SCORE_NEVER_WOKEN: f64 = 20.0;
const SCORE_NO_TIMEOUT: f64 = 10.0;
const SCORE_WHOLE_TRACE: f64 = 10.0;
const SCORE_PER_EXTRA_THREAD: f64 = 2.0;
const SCORE_MAX_EXTRA_THREADS: f64 = 20.0;

/// The threads blocked in a futex wait for at least `cx.min_blocked_ns`, as of `cx.end_ns`.
pub(super) fn stuck_threads(model: &Model, cx: &Context) -> Vec<StuckThread> {
    model
        .futex
        .blocked
        .iter()
        .filter_map(|thread| {
            let (blocked_ns, at_least) = model.blocked_for(thread, cx.end_ns);
            (blocked_ns >= cx.min_blocked_ns).then(|| stuck_thread(thread, blocked_ns, at_least))
        })
        .collect()
}

/// Futex-wait candidates: stuck threads outside wait-for cycles, grouped by where they block;
/// the Go runtime's parked threads and threads waiting their turn are healthy; joiners wait in
/// the overview for the chains step.
pub fn detect(model: &Model, cx: &Context) -> Findings<FutexOverview> {
    let stuck = stuck_threads(model, cx);
    let in_cycle = deadlock::members(&stuck);
    let mut groups: BTreeMap<Vec<u64>, Vec<StuckThread>> = BTreeMap::new();
    let mut healthy = Vec::new();
    let mut joiners = Vec::new();
    let waiting: BTreeMap<u32, StuckThread> = stuck
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
            healthy.push(BlockedButHealthy {
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
    let mut candidates = Vec::new();
    for threads in groups.into_values() {
        match taking_turns(model, &threads) {
            Some(why) => healthy.extend(threads.into_iter().map(|thread| BlockedButHealthy {
                tid: thread.tid,
                name: thread.name,
                blocked_ns: thread.blocked_ns,
                why: why.clone(),
                user_stack: thread.blocking_stack,
            })),
            None => candidates.push(wait_candidate(model, cx, threads)),
        }
    }
    Findings {
        candidates,
        healthy,
        overview: FutexOverview {
            wait_sites: wait_sites(model, cx.max_sites),
            joiners,
            waiting,
        },
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

pub(super) fn durations<'a>(threads: impl Iterator<Item = &'a StuckThread>) -> Percentiles {
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

pub(super) fn wakes_on(model: &Model, addrs: impl Iterator<Item = u64>) -> u64 {
    addrs
        .collect::<BTreeSet<_>>()
        .into_iter()
        .filter_map(|addr| model.futex.wakes.get(&addr))
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
        .filter_map(|addr| model.futex.wait_sites.get(addr))
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
        .filter_map(|addr| model.futex.waits_ended_between_scans.get(addr))
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

/// A futex-wait candidate of `threads` (blocked at one place), scored on its evidence.
pub(super) fn wait_candidate(model: &Model, cx: &Context, threads: Vec<StuckThread>) -> Finding {
    let (end_ns, min_blocked_ns) = (cx.end_ns, cx.min_blocked_ns);
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
        crate::units::human_ns(threads.iter().map(|t| t.blocked_ns).min().unwrap_or(0)),
        crate::units::human_ns(min_blocked_ns)
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
            crate::units::human_ns(trace_ns)
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

fn wait_sites(model: &Model, max_sites: usize) -> Vec<WaitSiteSummary> {
    let mut sites: Vec<_> = model.futex.wait_sites.values().collect();
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
