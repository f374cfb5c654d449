//! "Waits for another thread" relations (pthread_join, a lock's owner): a thread waiting for a
//! stuck thread is stuck too, whatever kind of stuck the other is (futex, deadlock, an event loop
//! nobody can wake, a leaked thread), and the report shows the chain that leads there.
use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::{Detail, Finding, FindingKind, StuckThread};
use crate::model::Model;

/// How a thread waits for another.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Relation {
    /// pthread_join: waits for the other thread to exit.
    Joins,
    /// Waits for a lock the other thread holds.
    WaitsForLockOwner,
}

/// One step of a chain: `tid` waits for `waits_for`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct WaitLink {
    pub tid: u32,
    pub relation: Relation,
    pub waits_for: u32,
}

/// The stuck thread a chain ends at, and the candidate that explains it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct StuckTarget {
    pub tid: u32,
    pub kind: FindingKind,
    pub summary: String,
}

/// Where a waits-for relation leads.
pub enum Resolution {
    /// To a thread some candidate holds: stuck, through these links.
    Stuck(Vec<WaitLink>, StuckTarget),
    /// To a thread no candidate holds (running, or blocked in a way that is healthy).
    NotStuck(Vec<WaitLink>),
}

/// The candidate holding each thread, from the candidates made without relations (futex waits,
/// deadlocks, epoll loops, thread leaks). `leaked` are all members of the thread-leak
/// candidates, which list only some of theirs.
pub fn stuck_threads(
    candidates: &[&Finding],
    leaked: &BTreeSet<u32>,
) -> BTreeMap<u32, StuckTarget> {
    let mut stuck = BTreeMap::new();
    let target = |tid: u32, c: &Finding| StuckTarget {
        tid,
        kind: c.kind(),
        summary: c.summary.clone(),
    };
    for candidate in candidates {
        let mut tids: Vec<u32> = candidate.threads().iter().map(|t| t.tid).collect();
        match &candidate.detail {
            Detail::EpollWait(e) => tids.extend(e.loops.iter().map(|l| l.tid)),
            Detail::ThreadLeak(g) => tids.extend(g.members.iter().map(|m| m.tid)),
            _ => {}
        }
        for tid in tids {
            stuck.entry(tid).or_insert_with(|| target(tid, candidate));
        }
    }
    if let Some(leak) = candidates
        .iter()
        .find(|c| c.kind() == FindingKind::ThreadLeak)
    {
        for &tid in leaked {
            stuck.entry(tid).or_insert_with(|| target(tid, leak));
        }
    }
    stuck
}

/// Threads blocked in `read` on a timerfd of a timerfd candidate (never armed, never firing,
/// leaked): such a read can only end when the timer fires, so the candidate explains them too.
/// From the last thread snapshot (/proc/PID/task/TID/syscall: `read`, first argument the fd).
pub fn add_timerfd_readers(
    stuck: &mut BTreeMap<u32, StuckTarget>,
    timerfd_candidates: &[Finding],
    model: &Model,
) {
    for candidate in timerfd_candidates {
        let Detail::Timerfd { detail, .. } = &candidate.detail else {
            continue;
        };
        for thread in &model.threads.snapshot {
            let reads_it = thread.state == "read"
                && thread
                    .args
                    .first()
                    .is_some_and(|&fd| detail.timers.iter().any(|t| i64::from(t.fd) == fd as i64));
            if reads_it {
                stuck.entry(thread.tid).or_insert_with(|| StuckTarget {
                    tid: thread.tid,
                    kind: candidate.kind(),
                    summary: format!(
                        "blocked in read on timerfd {}: {}",
                        thread.args[0], candidate.summary
                    ),
                });
            }
        }
    }
}

fn link(thread: &StuckThread) -> Option<WaitLink> {
    let (relation, waits_for) = match (thread.owner_tid, thread.joining_tid) {
        (Some(owner), _) => (Relation::WaitsForLockOwner, owner),
        (None, Some(joined)) => (Relation::Joins, joined),
        (None, None) => return None,
    };
    Some(WaitLink {
        tid: thread.tid,
        relation,
        waits_for,
    })
}

/// Follows `thread`'s waits-for relation through other waiting threads (`waiting`, by tid) to
/// the first thread that is not waiting for another one. None when `thread` names none. Cycles
/// are deadlocks, found before this; a chain that loops back ends as not stuck here.
pub fn resolve(
    thread: &StuckThread,
    waiting: &BTreeMap<u32, &StuckThread>,
    stuck: &BTreeMap<u32, StuckTarget>,
) -> Option<Resolution> {
    let mut links = vec![link(thread)?];
    let mut seen = BTreeSet::from([thread.tid]);
    loop {
        let next = links.last()?.waits_for;
        if let Some(target) = stuck.get(&next) {
            return Some(Resolution::Stuck(links, target.clone()));
        }
        let Some(step) = waiting
            .get(&next)
            .filter(|_| seen.insert(next))
            .and_then(|t| link(t))
        else {
            return Some(Resolution::NotStuck(links));
        };
        links.push(step);
    }
}

/// "1 → 2 → event loop(s) ... never woken": the chain for a reason line.
pub fn describe(links: &[WaitLink], target: &StuckTarget) -> String {
    let mut text = String::new();
    for link in links {
        let verb = match link.relation {
            Relation::Joins => "joins",
            Relation::WaitsForLockOwner => "waits for a lock held by",
        };
        text.push_str(&format!(
            "thread {} {verb} thread {} → ",
            link.tid, link.waits_for
        ));
    }
    text.push_str(&format!(
        "thread {} is stuck ({}: {})",
        target.tid,
        target.kind.name(),
        target.summary
    ));
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn thread(tid: u32, owner: Option<u32>, joined: Option<u32>) -> StuckThread {
        StuckThread {
            tid,
            name: format!("t{tid}"),
            futex_addr: 0x10,
            futex_op: "FUTEX_WAIT",
            blocked_ns: 1,
            blocked_at_least: false,
            has_timeout: false,
            owner_tid: owner,
            joining_tid: joined,
            blocking_stack: Vec::new(),
            kernel_stack: Vec::new(),
            waits_on: Vec::new(),
            stuck_behind: None,
        }
    }

    #[test]
    fn a_chain_of_waits_takes_the_verdict_of_its_end_whatever_its_kind() {
        // 1 joins 2, 2 waits for a lock held by 3, 3 is an event loop nobody can wake.
        let one = thread(1, None, Some(2));
        let two = thread(2, Some(3), None);
        let waiting = BTreeMap::from([(1, &one), (2, &two)]);
        let target = StuckTarget {
            tid: 3,
            kind: FindingKind::EpollWait,
            summary: "event loop never woken".to_string(),
        };
        let stuck = BTreeMap::from([(3, target.clone())]);
        let Some(Resolution::Stuck(links, end)) = resolve(&one, &waiting, &stuck) else {
            panic!("1 is stuck behind 3");
        };
        assert_eq!(end, target);
        assert_eq!(
            links
                .iter()
                .map(|l| (l.tid, l.relation, l.waits_for))
                .collect::<Vec<_>>(),
            vec![(1, Relation::Joins, 2), (2, Relation::WaitsForLockOwner, 3)]
        );
        assert!(describe(&links, &end).contains("epoll_wait"));
        // The same chain ending at a thread nobody holds is not stuck.
        assert!(matches!(
            resolve(&one, &waiting, &BTreeMap::new()),
            Some(Resolution::NotStuck(_))
        ));
        // A loop of joins (not a lock cycle) ends too.
        let a = thread(5, None, Some(6));
        let b = thread(6, None, Some(5));
        let waiting = BTreeMap::from([(5, &a), (6, &b)]);
        assert!(matches!(
            resolve(&a, &waiting, &BTreeMap::new()),
            Some(Resolution::NotStuck(_))
        ));
    }
}
