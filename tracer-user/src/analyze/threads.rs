//! Thread leaks (N3): threads grouped by creation stack, a group that keeps growing while its
//! members stay blocked. A pool whose size is steady is not a leak.
use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::{innermost_own_function, Context, Detail, Finding, Findings, Percentiles};
use crate::model::threads::{ThreadState, UNKNOWN_SITE};
use crate::model::{new_histogram, record, Frame, Model};
use crate::units::human_ns;

/// A group must have gained at least this many threads during the trace to be a leak.
pub const MIN_GROWTH: u64 = 3;
/// ... and those still alive must have been created over at least this long (or a third of the
/// trace, if shorter): a leak keeps creating threads.
pub const MIN_CREATION_SPREAD_NS: u64 = 1_000_000_000;
/// Members listed in the JSON per group.
const LISTED_MEMBERS: usize = 50;

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BlockedIn {
    /// The syscall ("futex", "epoll_wait", ...) or "running".
    pub state: String,
    pub threads: usize,
    pub example_tid: u32,
    /// The example thread's user stack (empty when not unwound).
    pub user_stack: Vec<Frame>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct GroupMember {
    pub tid: u32,
    pub name: String,
    pub state: String,
    /// None: existed before the trace.
    pub age_ns: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ThreadGroup {
    /// False for threads that existed before tracing started: their creation stack is unknown.
    pub creation_known: bool,
    pub alive: u64,
    pub created_during_trace: u64,
    pub exited_during_trace: u64,
    /// Net threads gained per second over the trace.
    pub growth_per_s: f64,
    pub grew: bool,
    /// Threads alive before tracing started (creation not seen) blocked where the leak's
    /// members are blocked: counted with the leak (in `alive`), since they are most likely its
    /// older members, rather than reported again as a separate futex group.
    pub existed_before_trace: u64,
    /// Threads created during the trace without their creator's stack (`--detail low`: their
    /// site's stack budget of that second was spent) blocked where the leak's members are
    /// blocked: counted with the leak (in `alive`) like `existed_before_trace`.
    #[serde(skip_serializing_if = "is_zero")]
    pub created_without_stack: u64,
    /// Where the alive members are now, most common first.
    pub blocked_in: Vec<BlockedIn>,
    pub members: Vec<GroupMember>,
}

/// Thread-leak candidates; the overview holds the tids of all their members (the candidates
/// list only some), so that the same threads are not listed again as unrelated futex waits.
pub fn detect(model: &Model, cx: &Context) -> Findings<BTreeSet<u32>> {
    let (candidates, members) = candidates(model, cx.end_ns);
    Findings {
        candidates,
        healthy: Vec::new(),
        overview: members,
    }
}

fn candidates(model: &Model, end_ns: u64) -> (Vec<Finding>, BTreeSet<u32>) {
    let threads = &model.threads;
    let trace_s =
        (end_ns.saturating_sub(model.started_ns.unwrap_or(end_ns)) as f64 / 1e9).max(1e-3);
    let mut out = Vec::new();
    let mut member_tids = BTreeSet::new();
    let states: BTreeMap<u32, &ThreadState> = threads.snapshot.iter().map(|s| (s.tid, s)).collect();
    for (site_id, site) in threads.sites.iter().enumerate() {
        if site_id == UNKNOWN_SITE {
            continue;
        }
        let net = site.created.saturating_sub(site.exited);
        let mut members: Vec<_> = threads
            .alive
            .values()
            .filter(|t| t.site == site_id)
            .collect();
        if net < MIN_GROWTH || (members.len() as u64) < MIN_GROWTH {
            continue;
        }
        // Growth means creation over time: a pool started in one burst (as every pool of a
        // program traced from its start is) and then idle is steady, not leaking.
        let created: Vec<u64> = members.iter().filter_map(|m| m.created_ns).collect();
        let created_over = match (created.iter().min(), created.iter().max()) {
            (Some(first), Some(last)) => last - first,
            _ => 0,
        };
        let trace_ns = end_ns.saturating_sub(model.started_ns.unwrap_or(end_ns));
        if created_over < MIN_CREATION_SPREAD_NS.min(trace_ns / 3) {
            continue;
        }
        // Threads created during the trace without a creation stack (`--detail low`, over the
        // site's stack budget) blocked in the same call on the same first argument (futex
        // word, fd) as a member are this leak's members whose stacks were not sampled.
        let place = |tid: u32| {
            states
                .get(&tid)
                .filter(|s| s.state != "running")
                .map(|s| (s.state.as_str(), s.args.first().copied()))
        };
        let places: BTreeSet<_> = members.iter().filter_map(|m| place(m.tid)).collect();
        let unsampled: Vec<_> = threads
            .alive
            .values()
            .filter(|t| t.site == UNKNOWN_SITE && t.created_ns.is_some())
            .filter(|t| place(t.tid).is_some_and(|p| places.contains(&p)))
            .collect();
        let without_stack = unsampled.len();
        members.extend(unsampled);
        // Where are they now?
        let mut by_state: BTreeMap<String, Vec<u32>> = BTreeMap::new();
        let mut histogram = new_histogram(3);
        let mut max = 0;
        for member in &members {
            let state = threads.state_of(member.tid);
            let name = state.map_or("unknown".to_string(), |s| s.state.clone());
            by_state.entry(name).or_default().push(member.tid);
            if let Some(since) = state.and_then(|s| s.in_state_since_ns) {
                // In the same call since first seen there: a lower bound, and never longer than
                // the thread has lived.
                let lived = member
                    .created_ns
                    .map_or(u64::MAX, |c| end_ns.saturating_sub(c));
                let blocked = end_ns.saturating_sub(since).min(lived);
                record(&mut histogram, blocked);
                max = max.max(blocked);
            }
        }
        let blocked_members: usize = by_state
            .iter()
            .filter(|(state, _)| *state != "running" && *state != "unknown")
            .map(|(_, tids)| tids.len())
            .sum();
        // A growing group whose members are mostly running is busy, not stuck.
        if blocked_members * 2 < members.len() {
            continue;
        }
        let mut blocked_in: Vec<BlockedIn> = by_state
            .into_iter()
            .map(|(state, tids)| {
                let with_stack = tids
                    .iter()
                    .find_map(|&tid| threads.state_of(tid).filter(|s| !s.user_stack.is_empty()));
                BlockedIn {
                    state,
                    threads: tids.len(),
                    example_tid: with_stack.map_or(tids[0], |s| s.tid),
                    user_stack: with_stack.map(|s| s.user_stack.clone()).unwrap_or_default(),
                }
            })
            .collect();
        blocked_in.sort_by(|a, b| b.threads.cmp(&a.threads).then(a.state.cmp(&b.state)));
        let growth_per_s = net as f64 / trace_s;
        member_tids.extend(members.iter().map(|m| m.tid));
        let main = &blocked_in[0];
        let alive = members.len();
        let creator = innermost_own_function(&site.stack);
        let blocked_site = innermost_own_function(&main.user_stack);
        let mut reasons = vec![
            format!(
                "{} thread(s) created at this site during the trace, {} exited: +{net} ({growth_per_s:.1}/s)",
                site.created, site.exited
            ),
            format!(
                "created one after another over {}, not as one pool",
                human_ns(created_over)
            ),
            format!(
                "{} of {} alive thread(s) are blocked in {} ({}), none of them exits",
                main.threads,
                members.len(),
                main.state,
                blocked_site
            ),
        ];
        if max > 0 {
            reasons.push(format!("blocked for up to {} now", human_ns(max)));
        }
        if without_stack > 0 {
            reasons.push(format!(
                "{without_stack} of them were created during the trace without their creator's \
                 stack (creation stacks are a sample) and are blocked in the same call on the \
                 same futex word or fd as the others: counted with this site"
            ));
        }
        let score = 60.0
            + (net as f64).min(20.0)
            + if blocked_members == members.len() {
                10.0
            } else {
                0.0
            };
        let mut listed: Vec<GroupMember> = members
            .iter()
            .map(|m| GroupMember {
                tid: m.tid,
                name: m.name.clone(),
                state: threads
                    .state_of(m.tid)
                    .map_or("unknown".to_string(), |s| s.state.clone()),
                age_ns: m.created_ns.map(|c| end_ns.saturating_sub(c)),
            })
            .collect();
        listed.truncate(LISTED_MEMBERS);
        out.push(Finding {
            count: alive,
            summary: format!(
                "{alive} thread(s) created in {creator} and blocked in {} in {blocked_site}: +{net} during the trace",
                main.state
            ),
            score,
            reasons,
            blocking_stack: main.user_stack.clone(),
            creation_stack: Some(site.stack.clone()),
            blocked_ns: Percentiles::of(&histogram, max, false),
            // Only growing groups are thread-leak candidates.
            grew: Some(true),
            detail: Detail::ThreadLeak(ThreadGroup {
                creation_known: true,
                alive: alive as u64,
                created_during_trace: site.created,
                exited_during_trace: site.exited,
                growth_per_s,
                grew: true,
                existed_before_trace: 0,
                created_without_stack: without_stack as u64,
                blocked_in,
                members: listed,
            }),
        });
    }
    (out, member_tids)
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Alive threads whose creation this trace saw without the creator's stack (`--detail low`
/// over a site's stack budget): at the unknown creation site with a creation time.
pub fn created_without_stack(model: &Model) -> BTreeSet<u32> {
    model
        .threads
        .alive
        .values()
        .filter(|t| t.site == UNKNOWN_SITE && t.created_ns.is_some())
        .map(|t| t.tid)
        .collect()
}

/// Counts `older` (threads stuck exactly where `leak`'s members are whose creation stack is
/// not known: alive before tracing started, or created without a stack, those in
/// `created_without_stack`) with the leak: they are most likely its members, and reporting
/// them again as a separate group would count the same leak twice.
pub fn absorb_older(
    leak: &mut Finding,
    older: &[(u32, String)],
    created_without_stack: &BTreeSet<u32>,
) {
    let Detail::ThreadLeak(group) = &mut leak.detail else {
        return;
    };
    if older.is_empty() {
        return;
    }
    let unsampled = older
        .iter()
        .filter(|(tid, _)| created_without_stack.contains(tid))
        .count();
    let before_trace = older.len() - unsampled;
    group.alive += older.len() as u64;
    group.existed_before_trace += before_trace as u64;
    group.created_without_stack += unsampled as u64;
    let room = LISTED_MEMBERS.saturating_sub(group.members.len());
    group
        .members
        .extend(older.iter().take(room).map(|(tid, name)| GroupMember {
            tid: *tid,
            name: name.clone(),
            state: "futex".to_string(),
            age_ns: None,
        }));
    let before = leak.count;
    leak.count += older.len();
    if let Some(rest) = leak.summary.strip_prefix(&format!("{before} thread(s)")) {
        leak.summary = format!("{} thread(s){rest}", leak.count);
    }
    if before_trace > 0 {
        leak.reasons.push(format!(
            "{before_trace} more thread(s) blocked at the same place were alive before tracing \
             started (their creation was not seen): counted with this leak"
        ));
    }
    if unsampled > 0 {
        leak.reasons.push(format!(
            "{unsampled} more thread(s) blocked at the same place were created during the trace \
             without their creator's stack (creation stacks are a sample): counted with this leak"
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::tests::frame;
    use crate::model::threads::{ThreadEvent, ThreadState, CLONE_THREAD};
    use crate::model::Event;

    const S: u64 = 1_000_000_000;

    /// Ten threads created `spacing` apart in a 2 s trace, each exiting at once or blocking.
    fn run(exit_each: bool, spacing: u64) -> Vec<Finding> {
        let mut model = Model::new();
        model.apply(&Event::TraceStarted { at_ns: 0 });
        let stack = vec![frame("pthread_create"), frame("spawn_task")];
        let mut states = Vec::new();
        for tid in 100..110 {
            model.apply(&Event::Thread(ThreadEvent::Created {
                at_ns: (tid as u64 - 100) * spacing,
                creator: 1,
                tid,
                flags: CLONE_THREAD,
                stack: stack.clone(),
            }));
            if exit_each {
                model.apply(&Event::Thread(ThreadEvent::Exited {
                    at_ns: (tid as u64 - 100) * spacing + 1000,
                    tid,
                }));
            } else {
                states.push(ThreadState {
                    tid,
                    name: "w".into(),
                    state: "futex".into(),
                    args: vec![],
                    in_state_since_ns: Some(S),
                    user_stack: vec![frame("__futex_wait"), frame("wait_for_reply")],
                });
            }
        }
        model.apply(&Event::Thread(ThreadEvent::Snapshot {
            at_ns: 2 * S,
            threads: states,
        }));
        candidates(&model, 2 * S).0
    }

    #[test]
    fn a_growing_blocked_group_is_a_leak_and_joined_threads_are_not() {
        let leak = run(false, S / 10);
        assert_eq!(leak.len(), 1);
        assert_eq!(leak[0].kind(), crate::analyze::FindingKind::ThreadLeak);
        assert_eq!(leak[0].count, 10);
        assert!(
            leak[0].summary.contains("spawn_task"),
            "{}",
            leak[0].summary
        );
        assert!(
            leak[0].summary.contains("wait_for_reply"),
            "{}",
            leak[0].summary
        );
        assert!(run(true, S / 10).is_empty());
    }

    #[test]
    fn threads_created_without_a_stack_join_the_site_blocked_on_the_same_word() {
        let mut model = Model::new();
        model.apply(&Event::TraceStarted { at_ns: 0 });
        let blocked = |tid: u32, word: u64| ThreadState {
            tid,
            name: "w".into(),
            state: "futex".into(),
            args: vec![word, 0],
            in_state_since_ns: Some(S),
            user_stack: vec![],
        };
        let mut states = Vec::new();
        // 5 with the site's stack, 7 without (over the budget) on the same futex word, 2
        // without on another word: those are not the leak's.
        for tid in 100..114u32 {
            let stack = if tid < 105 {
                vec![frame("pthread_create"), frame("spawn_task")]
            } else {
                vec![]
            };
            model.apply(&Event::Thread(ThreadEvent::Created {
                at_ns: u64::from(tid - 100) * S / 4,
                creator: 1,
                tid,
                flags: CLONE_THREAD,
                stack,
            }));
            states.push(blocked(tid, if tid < 112 { 0x1000 } else { 0x2000 }));
        }
        model.apply(&Event::Thread(ThreadEvent::Snapshot {
            at_ns: 4 * S,
            threads: states,
        }));
        let leaks = candidates(&model, 4 * S).0;
        assert_eq!(leaks.len(), 1);
        assert_eq!(leaks[0].count, 12);
        let Detail::ThreadLeak(group) = &leaks[0].detail else {
            panic!("a thread group");
        };
        assert_eq!(group.created_without_stack, 7);
        assert!(leaks[0]
            .reasons
            .iter()
            .any(|r| r.contains("without their creator's stack")));
    }

    #[test]
    fn older_threads_absorbed_by_a_leak_count_with_it_once() {
        let mut leak = run(false, S / 10).remove(0);
        absorb_older(
            &mut leak,
            &[(50, "w".into()), (51, "w".into())],
            &BTreeSet::new(),
        );
        assert_eq!(leak.count, 12);
        assert!(
            leak.summary
                .starts_with("12 thread(s) created in spawn_task"),
            "{}",
            leak.summary
        );
        let Detail::ThreadLeak(group) = &leak.detail else {
            panic!("a thread group");
        };
        assert_eq!((group.alive, group.existed_before_trace), (12, 2));
        assert!(group
            .members
            .iter()
            .any(|m| m.tid == 50 && m.age_ns.is_none()));
        assert!(leak.reasons.last().unwrap().starts_with("2 more thread(s)"));
    }

    #[test]
    fn a_pool_started_in_one_burst_is_not_a_leak() {
        assert!(run(false, 1_000).is_empty());
    }
}
