//! Deadlocks: wait-for cycles among stuck threads ("thread waits for a lock held by thread",
//! or joins it), from the owners read from the futex words themselves.
use std::collections::{BTreeSet, HashMap};

use serde::Serialize;

use super::futex::{durations, stuck_threads, wakes_on, StuckThread};
use super::{Context, Detail, Finding, Findings};
use crate::model::Model;

/// One edge of a wait-for cycle: `tid` waits for the lock at `waits_for`, held by `held_by`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CycleEdge {
    pub tid: u32,
    #[serde(with = "crate::model::hex_addr")]
    pub waits_for: u64,
    pub held_by: u32,
}

/// Score of a deadlock (plus one per thread): above any other kind, since none of its threads
/// can ever proceed.
const SCORE_DEADLOCK: f64 = 100.0;

/// One candidate per wait-for cycle among the stuck threads.
pub fn detect(model: &Model, cx: &Context) -> Findings {
    let stuck = stuck_threads(model, cx);
    Findings {
        candidates: wait_for_cycles(&stuck)
            .into_iter()
            .map(|cycle| deadlock_candidate(model, &stuck, cycle))
            .collect(),
        ..Findings::default()
    }
}

/// The tids of the stuck threads that are in a wait-for cycle.
pub(super) fn members(stuck: &[StuckThread]) -> BTreeSet<u32> {
    wait_for_cycles(stuck)
        .iter()
        .flatten()
        .map(|edge| edge.tid)
        .collect()
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
