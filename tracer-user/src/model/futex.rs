//! Futex waits as pure state: the threads blocked in a futex wait (from the /proc scans and the
//! wait probes), completed waits per futex word, and wakes on the watched words.
use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use super::{new_histogram, record, BlockedSince, Frame};

/// A thread found inside a futex wait.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockedThread {
    pub tid: u32,
    pub name: String,
    pub futex_addr: u64,
    /// The futex command (`tracer_common::futex_op`).
    pub op: u32,
    pub since: BlockedSince,
    pub has_timeout: bool,
    /// The thread holding the lock this one waits for, where the lock records it (glibc
    /// mutexes, PI futexes).
    pub owner_tid: Option<u32>,
    /// The thread whose exit this one waits for (pthread_join).
    pub joining_tid: Option<u32>,
    pub user_stack: Vec<Frame>,
    /// Kernel functions, innermost first.
    pub kernel_stack: Vec<String>,
}

/// Completed waits on one futex word.
#[derive(Clone, Debug)]
pub struct WaitSite {
    pub futex_addr: u64,
    pub op: u32,
    pub waits: u64,
    pub total_ns: u64,
    pub max_ns: u64,
    pub timeouts: u64,
    pub durations: Histogram<u64>,
    /// The longest wait that had its stacks taken: duration, user and kernel stack.
    pub longest_stack: Option<(u64, Vec<Frame>, Vec<String>)>,
}

/// Beyond this many distinct futex words, completed waits are folded into one "other" site so
/// that a process churning through addresses cannot grow the collector without bound (each
/// site's histogram is a few tens of KiB at most).
pub const MAX_WAIT_SITES: usize = 1024;
/// Significant figures of the per-site histograms: 1% resolution is plenty for a profile and
/// keeps each histogram small.
const SITE_PRECISION: u8 = 2;

/// The futex address used for the folded site.
pub const OTHER_SITE: u64 = u64::MAX;

/// The futex part of the model. Fed by [`super::Model::apply`] (which keeps the trace's clock).
#[derive(Clone, Debug, Default)]
pub struct FutexModel {
    /// The threads blocked in a futex wait at the last scan (`blocked_at_ns`).
    pub blocked: Vec<BlockedThread>,
    pub blocked_at_ns: u64,
    /// Cumulative wakes per watched futex word.
    pub wakes: BTreeMap<u64, u64>,
    /// Waits on each futex word seen ending by the /proc scans: a thread of one snapshot of
    /// [`super::Event::Blocked`] that, alive, is out of that wait (or in a new one) at the
    /// next. The state's evidence that a word is woken and its waits complete, where the probes
    /// were not attached to see it (between probe windows, or waits begun before the trace).
    pub waits_ended_between_scans: BTreeMap<u64, u64>,
    /// Completed waits per futex word, at most [`MAX_WAIT_SITES`] words and [`OTHER_SITE`].
    pub wait_sites: BTreeMap<u64, WaitSite>,
    pub waits_seen: u64,
}

impl FutexModel {
    /// [`super::Event::WaitDone`]: a wait on `futex_addr` returned `ret` after `duration_ns`.
    pub fn wait_done(
        &mut self,
        futex_addr: u64,
        op: u32,
        duration_ns: u64,
        ret: i64,
        user_stack: Option<&Vec<Frame>>,
        kernel_stack: Option<&Vec<String>>,
    ) {
        self.waits_seen += 1;
        let site = self.site_for(futex_addr, op);
        site.waits += 1;
        site.total_ns = site.total_ns.saturating_add(duration_ns);
        site.max_ns = site.max_ns.max(duration_ns);
        if ret == -(libc::ETIMEDOUT as i64) {
            site.timeouts += 1;
        }
        record(&mut site.durations, duration_ns);
        if let Some(stack) = user_stack {
            let longer = site
                .longest_stack
                .as_ref()
                .is_none_or(|(longest, _, _)| duration_ns > *longest);
            if longer {
                let kernel = kernel_stack.cloned().unwrap_or_default();
                site.longest_stack = Some((duration_ns, stack.clone(), kernel));
            }
        }
    }

    /// [`super::Event::Blocked`]: the threads blocked at `at_ns` replace the previous scan's;
    /// a thread of that scan that is `alive` and no longer in the same wait ended its wait.
    pub fn blocked(&mut self, at_ns: u64, threads: &[BlockedThread], alive: impl Fn(u32) -> bool) {
        for old in &self.blocked {
            let same_wait = threads.iter().any(|t| {
                t.tid == old.tid && t.since == old.since && t.futex_addr == old.futex_addr
            });
            if !same_wait && alive(old.tid) {
                *self
                    .waits_ended_between_scans
                    .entry(old.futex_addr)
                    .or_default() += 1;
            }
        }
        self.blocked_at_ns = at_ns;
        self.blocked = threads.to_vec();
    }

    /// [`super::Event::Wakes`]: cumulative wakes on a watched word.
    pub fn wakes(&mut self, futex_addr: u64, wakes: u64) {
        self.wakes.insert(futex_addr, wakes);
    }

    fn site_for(&mut self, futex_addr: u64, op: u32) -> &mut WaitSite {
        let key = if self.wait_sites.contains_key(&futex_addr)
            || self.wait_sites.len() < MAX_WAIT_SITES
        {
            futex_addr
        } else {
            OTHER_SITE
        };
        self.wait_sites.entry(key).or_insert_with(|| WaitSite {
            futex_addr: key,
            op,
            waits: 0,
            total_ns: 0,
            max_ns: 0,
            timeouts: 0,
            durations: new_histogram(SITE_PRECISION),
            longest_stack: None,
        })
    }
}
