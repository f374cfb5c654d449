//! Thread lifecycle as pure state: which threads exist, where each was created, which exited,
//! and what each alive thread is doing at the last snapshot.
use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};

use super::Frame;

/// `CLONE_THREAD`: the new task shares the creator's thread group (a thread, not a process).
pub const CLONE_THREAD: u64 = 0x0001_0000;

/// What an alive thread is doing, as /proc showed it at a snapshot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThreadState {
    pub tid: u32,
    pub name: String,
    /// The syscall it is blocked in ("futex", "epoll_wait", "read", ...), or "running".
    pub state: String,
    /// Its arguments (as /proc/PID/task/TID/syscall shows them).
    pub args: Vec<u64>,
    /// When it was first seen in this same call (same syscall, arguments, stack and pc): it has
    /// been in it at least since then. None: not in a syscall.
    pub in_state_since_ns: Option<u64>,
    /// Its user stack (unwound from /proc/PID/mem), when taken; innermost first.
    pub user_stack: Vec<Frame>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ThreadEvent {
    /// A thread alive when tracing started: its creation was not seen.
    Existing {
        at_ns: u64,
        tid: u32,
        name: String,
    },
    /// `creator` made `tid` (clone/clone3/fork/vfork returned in the creator).
    Created {
        at_ns: u64,
        creator: u32,
        tid: u32,
        flags: u64,
        /// The creator's user stack at the clone; empty when it could not be taken.
        stack: Vec<Frame>,
    },
    Exited {
        at_ns: u64,
        tid: u32,
    },
    Renamed {
        tid: u32,
        name: String,
    },
    /// Every alive thread and what it is doing (replaces the previous snapshot).
    Snapshot {
        at_ns: u64,
        threads: Vec<ThreadState>,
    },
}

/// Index into [`Threads::sites`]: one creation stack.
pub type SiteId = usize;

/// Threads made at one creation site (one user stack), counted over the trace.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct CreationSite {
    /// The creator's stack; empty for threads that existed before the trace.
    pub stack: Vec<Frame>,
    /// Threads that existed before tracing started: at the "unknown creation" site, and at a
    /// known one for threads an earlier trace of the same process saw created
    /// ([`Threads::adopt`]).
    pub existing: u64,
    pub created: u64,
    pub exited: u64,
    pub first_created_ns: Option<u64>,
    pub last_created_ns: Option<u64>,
    /// (time, alive threads of this site) after every change: the growth curve.
    pub alive_curve: Vec<(u64, u64)>,
}

impl CreationSite {
    pub fn alive(&self) -> u64 {
        (self.existing + self.created).saturating_sub(self.exited)
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AliveThread {
    pub tid: u32,
    pub name: String,
    pub site: SiteId,
    pub creator: Option<u32>,
    /// None: existed before tracing started.
    pub created_ns: Option<u64>,
}

/// A thread alive at the end of a trace and where it was created (see [`Threads::adopt`]).
#[derive(Clone, Debug, PartialEq)]
pub struct KnownCreation {
    pub tid: u32,
    pub creator: Option<u32>,
    /// CLOCK_MONOTONIC ns, as the events' times.
    pub created_ns: u64,
    pub stack: Vec<Frame>,
}

/// Beyond this many points, the alive curve of a site keeps every other point (bounded memory).
const MAX_CURVE_POINTS: usize = 4096;

#[derive(Clone, Debug, Default)]
pub struct Threads {
    /// Site 0 is "existed before the trace: creation unknown".
    pub sites: Vec<CreationSite>,
    site_by_stack: BTreeMap<Vec<u64>, SiteId>,
    pub alive: BTreeMap<u32, AliveThread>,
    /// Child processes the target forked (not threads: they are not counted as thread leaks).
    pub processes_forked: u64,
    pub snapshot: Vec<ThreadState>,
    pub snapshot_at_ns: u64,
    /// Threads whose exit arrived before their creation: a short-lived child can run and exit on
    /// another CPU before its creator's clone returns, and the ring buffer keeps the order in
    /// which the records were made. Oldest first, at most [`MAX_EARLY_EXITS`].
    early_exits: VecDeque<u32>,
}

/// Exits of unknown threads remembered for a creation that may still come. A creation arrives
/// within a drain or two of its child's exit, and is taken out then, so only a few are ever
/// waiting; the bound covers creations lost by the kernel side (counted as lost events).
const MAX_EARLY_EXITS: usize = 4096;

/// The site of threads whose creation was not seen.
pub const UNKNOWN_SITE: SiteId = 0;

impl Threads {
    fn site(&mut self, stack: &[Frame]) -> SiteId {
        if self.sites.is_empty() {
            self.sites.push(CreationSite::default());
        }
        if stack.is_empty() {
            return UNKNOWN_SITE;
        }
        let key: Vec<u64> = stack.iter().map(|f| f.addr).collect();
        if let Some(&id) = self.site_by_stack.get(&key) {
            return id;
        }
        self.sites.push(CreationSite {
            stack: stack.to_vec(),
            ..Default::default()
        });
        let id = self.sites.len() - 1;
        self.site_by_stack.insert(key, id);
        id
    }

    fn note_alive(&mut self, site: SiteId, at_ns: u64) {
        let s = &mut self.sites[site];
        let alive = s.alive();
        s.alive_curve.push((at_ns, alive));
        if s.alive_curve.len() > MAX_CURVE_POINTS {
            let kept: Vec<_> = s.alive_curve.iter().copied().step_by(2).collect();
            s.alive_curve = kept;
        }
    }

    pub fn apply(&mut self, event: &ThreadEvent) {
        match event {
            ThreadEvent::Existing { at_ns, tid, name } => {
                let site = self.site(&[]);
                if self.alive.contains_key(tid) {
                    return;
                }
                self.sites[site].existing += 1;
                self.alive.insert(
                    *tid,
                    AliveThread {
                        tid: *tid,
                        name: name.clone(),
                        site,
                        creator: None,
                        created_ns: None,
                    },
                );
                self.note_alive(site, *at_ns);
            }
            ThreadEvent::Created {
                at_ns,
                creator,
                tid,
                flags,
                stack,
            } => {
                if flags & CLONE_THREAD == 0 {
                    self.processes_forked += 1;
                    return;
                }
                let site = self.site(stack);
                if let Some(at) = self.early_exits.iter().position(|t| t == tid) {
                    // Created and already gone: counted, never alive.
                    self.early_exits.remove(at);
                    let s = &mut self.sites[site];
                    s.created += 1;
                    s.exited += 1;
                    s.first_created_ns.get_or_insert(*at_ns);
                    s.last_created_ns = Some(*at_ns);
                    return;
                }
                match self.alive.remove(tid) {
                    // Found by the scan at attach, which ran after the probes were attached: this
                    // is that thread's own creation, made in between (a started command creating
                    // its first threads), not a new thread.
                    Some(seen) if seen.created_ns.is_none() && seen.site == UNKNOWN_SITE => {
                        let existing = &mut self.sites[UNKNOWN_SITE].existing;
                        *existing = existing.saturating_sub(1);
                    }
                    // A recycled tid whose exit was missed: the old thread is gone.
                    Some(old) => self.sites[old.site].exited += 1,
                    None => {}
                }
                let name = self
                    .alive
                    .get(creator)
                    .map(|t| t.name.clone())
                    .unwrap_or_default();
                let s = &mut self.sites[site];
                s.created += 1;
                s.first_created_ns.get_or_insert(*at_ns);
                s.last_created_ns = Some(*at_ns);
                self.alive.insert(
                    *tid,
                    AliveThread {
                        tid: *tid,
                        name,
                        site,
                        creator: Some(*creator),
                        created_ns: Some(*at_ns),
                    },
                );
                self.note_alive(site, *at_ns);
            }
            ThreadEvent::Exited { at_ns, tid } => {
                if let Some(thread) = self.alive.remove(tid) {
                    self.sites[thread.site].exited += 1;
                    self.note_alive(thread.site, *at_ns);
                } else {
                    if self.early_exits.len() >= MAX_EARLY_EXITS {
                        self.early_exits.pop_front();
                    }
                    self.early_exits.push_back(*tid);
                }
            }
            ThreadEvent::Renamed { tid, name } => {
                if let Some(thread) = self.alive.get_mut(tid) {
                    thread.name = name.clone();
                }
            }
            ThreadEvent::Snapshot { at_ns, threads } => {
                self.snapshot_at_ns = *at_ns;
                self.snapshot = threads.clone();
                for state in threads {
                    if let Some(thread) = self.alive.get_mut(&state.tid) {
                        if !state.name.is_empty() {
                            thread.name = state.name.clone();
                        }
                    }
                }
            }
        }
    }

    /// The alive threads whose creation this trace saw (or adopted): what the next trace of
    /// the same process needs to keep them at their creation site ([`Threads::adopt`]). As
    /// many as threads alive, whatever the trace's length.
    pub fn known_creations(&self) -> Vec<KnownCreation> {
        self.alive
            .values()
            .filter(|t| t.site != UNKNOWN_SITE)
            .filter_map(|t| {
                Some(KnownCreation {
                    tid: t.tid,
                    creator: t.creator,
                    created_ns: t.created_ns?,
                    stack: self.sites[t.site].stack.clone(),
                })
            })
            .collect()
    }

    /// Moves threads found alive at the start of this trace (creation unknown) to the creation
    /// site an earlier trace of the same process saw them made at, as threads that existed
    /// before this trace (`existing`, not `created`): the agent traces a process in consecutive
    /// intervals, and a thread leak's size is every leaked thread alive, not only those made in
    /// the last interval. A tid recycled since is not adopted: its creation was seen in this
    /// trace, so it is not at the unknown site.
    pub fn adopt(&mut self, known: &[KnownCreation], at_ns: u64) {
        for creation in known {
            let Some(thread) = self.alive.get(&creation.tid) else {
                continue;
            };
            if thread.site != UNKNOWN_SITE
                || thread.created_ns.is_some()
                || creation.stack.is_empty()
            {
                continue;
            }
            let site = self.site(&creation.stack);
            let unknown = &mut self.sites[UNKNOWN_SITE].existing;
            *unknown = unknown.saturating_sub(1);
            self.sites[site].existing += 1;
            let thread = self.alive.get_mut(&creation.tid).expect("checked above");
            thread.site = site;
            thread.creator = creation.creator;
            thread.created_ns = Some(creation.created_ns);
            self.note_alive(site, at_ns);
        }
    }

    /// What thread `tid` was doing at the last snapshot.
    pub fn state_of(&self, tid: u32) -> Option<&ThreadState> {
        self.snapshot.iter().find(|s| s.tid == tid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::tests::frame;

    #[test]
    fn a_later_trace_adopts_the_creation_sites_an_earlier_one_saw() {
        let stack = vec![frame("clone3"), frame("spawn_worker")];
        let mut first = Threads::default();
        for tid in 10..13 {
            first.apply(&ThreadEvent::Created {
                at_ns: tid as u64,
                creator: 1,
                tid,
                flags: CLONE_THREAD,
                stack: stack.clone(),
            });
        }
        let known = first.known_creations();
        assert_eq!(known.len(), 3);

        let mut next = Threads::default();
        // 10 and 11 still alive; 12 exited and its tid was reused by a thread of another site.
        for tid in [1, 10, 11] {
            next.apply(&ThreadEvent::Existing {
                at_ns: 100,
                tid,
                name: "w".into(),
            });
        }
        next.apply(&ThreadEvent::Created {
            at_ns: 101,
            creator: 1,
            tid: 12,
            flags: CLONE_THREAD,
            stack: vec![frame("clone3"), frame("other")],
        });
        next.adopt(&known, 102);
        assert_eq!(
            next.sites[UNKNOWN_SITE].alive(),
            1,
            "the main thread stays unknown"
        );
        let site = next.alive[&10].site;
        assert_ne!(site, UNKNOWN_SITE);
        assert_eq!(next.alive[&11].site, site);
        assert_eq!(next.alive[&10].created_ns, Some(10));
        assert_eq!(
            (next.sites[site].existing, next.sites[site].created),
            (2, 0)
        );
        assert_ne!(
            next.alive[&12].site, site,
            "a recycled tid keeps its own creation"
        );
        assert_eq!(next.alive[&12].created_ns, Some(101));
    }

    #[test]
    fn sites_count_creations_and_exits_and_skip_processes() {
        let mut t = Threads::default();
        t.apply(&ThreadEvent::Existing {
            at_ns: 0,
            tid: 1,
            name: "main".into(),
        });
        let stack = vec![frame("clone3"), frame("spawn_worker")];
        for tid in 10..15 {
            t.apply(&ThreadEvent::Created {
                at_ns: tid as u64,
                creator: 1,
                tid,
                flags: CLONE_THREAD,
                stack: stack.clone(),
            });
        }
        t.apply(&ThreadEvent::Exited { at_ns: 20, tid: 10 });
        t.apply(&ThreadEvent::Created {
            at_ns: 21,
            creator: 1,
            tid: 99,
            flags: 17,
            stack: stack.clone(),
        });
        assert_eq!(t.processes_forked, 1);
        assert_eq!(t.sites.len(), 2);
        let site = &t.sites[1];
        assert_eq!((site.created, site.exited, site.alive()), (5, 1, 4));
        assert_eq!(t.alive[&11].name, "main");
        assert_eq!(t.sites[UNKNOWN_SITE].alive(), 1);
        assert_eq!(site.alive_curve.last(), Some(&(20, 4)));
    }

    #[test]
    fn a_thread_whose_exit_arrives_before_its_creation_is_not_alive() {
        let mut t = Threads::default();
        let stack = vec![frame("clone3"), frame("spawn_worker")];
        // The child ran and exited on another CPU before its creator's clone returned.
        t.apply(&ThreadEvent::Exited { at_ns: 5, tid: 42 });
        t.apply(&ThreadEvent::Created {
            at_ns: 6,
            creator: 1,
            tid: 42,
            flags: CLONE_THREAD,
            stack: stack.clone(),
        });
        let site = &t.sites[1];
        assert_eq!((site.created, site.exited, site.alive()), (1, 1, 0));
        assert!(t.alive.is_empty());
        // The tid is free again: a later thread with it is alive.
        t.apply(&ThreadEvent::Created {
            at_ns: 7,
            creator: 1,
            tid: 42,
            flags: CLONE_THREAD,
            stack,
        });
        assert_eq!(t.alive.len(), 1);
    }

    #[test]
    fn a_creation_of_a_thread_the_attach_scan_already_found_is_that_thread() {
        let mut t = Threads::default();
        // The probes were attached, the command made a worker, then the scan found both.
        for tid in [1, 2] {
            t.apply(&ThreadEvent::Existing {
                at_ns: 0,
                tid,
                name: "pool".into(),
            });
        }
        t.apply(&ThreadEvent::Created {
            at_ns: 1,
            creator: 1,
            tid: 2,
            flags: CLONE_THREAD,
            stack: vec![frame("clone3"), frame("start_worker")],
        });
        let (unknown, site) = (&t.sites[UNKNOWN_SITE], &t.sites[1]);
        assert_eq!(
            (unknown.existing, unknown.exited, unknown.alive()),
            (1, 0, 1)
        );
        assert_eq!((site.created, site.exited, site.alive()), (1, 0, 1));
        assert_eq!(t.alive.len(), 2);
    }
}
