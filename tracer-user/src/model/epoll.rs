//! epoll sets and the threads waiting on them, as pure state.
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{BlockedSince, Frame};

/// One fd in an epoll set, with what /proc says it is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchedFd {
    pub fd: i32,
    /// The event mask it is registered for (EPOLLIN = 0x1, ...).
    pub events: u32,
    /// "pipe", "socket", "eventfd", "timerfd", "eventpoll", "signalfd", "file", ...
    pub kind: String,
    /// The /proc/PID/fd link ("pipe:[1234]", "socket:[99]", "/dev/null").
    pub link: String,
    /// Why this fd can never become ready, when the collector found a reason ("the write end
    /// of this pipe is held by no other process and no thread of the target writes to it").
    pub dead_end: Option<String>,
    /// A listening socket: an idle server loop waiting on it is normal.
    #[serde(default)]
    pub listening: bool,
}

/// A thread inside epoll_wait/epoll_pwait/epoll_pwait2 at a snapshot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EpollWaiter {
    pub tid: u32,
    pub name: String,
    pub epfd: i32,
    pub syscall: String,
    /// None: waits until an event (timeout -1 / NULL).
    pub timeout_ns: Option<u64>,
    pub since: BlockedSince,
    pub user_stack: Vec<Frame>,
    /// The set's fds now (from /proc/PID/fdinfo/EPFD).
    pub fds: Vec<WatchedFd>,
}

/// Cumulative results of the waits on one set since attach, as the kernel's EPOLL_STATS keeps
/// them.
pub type SetStats = tracer_common::EpollStats;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum EpollEvent {
    Created {
        at_ns: u64,
        tid: u32,
        epfd: i32,
        stack: Vec<Frame>,
    },
    /// epoll_ctl returned (`op`: 1 add, 2 del, 3 mod).
    Ctl {
        at_ns: u64,
        tid: u32,
        epfd: i32,
        op: u32,
        fd: i32,
        events: u32,
        ret: i64,
    },
    Closed {
        at_ns: u64,
        epfd: i32,
    },
    /// Cumulative per-set wait results.
    Stats {
        epfd: i32,
        stats: SetStats,
    },
    /// The threads waiting on epoll now (replaces the previous snapshot).
    Waiting {
        at_ns: u64,
        waiters: Vec<EpollWaiter>,
    },
}

/// An epoll set seen created during the trace.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct EpollSet {
    pub epfd: i32,
    pub created_ns: Option<u64>,
    pub creation_stack: Vec<Frame>,
    pub adds: u64,
    pub mods: u64,
    pub dels: u64,
    pub failed_ctls: u64,
    pub closed_ns: Option<u64>,
}

#[derive(Clone, Debug, Default)]
pub struct EpollModel {
    /// Sets created during the trace, by epfd (a reused epfd replaces the closed set).
    pub sets: BTreeMap<i32, EpollSet>,
    pub stats: BTreeMap<i32, SetStats>,
    pub waiters: Vec<EpollWaiter>,
    pub waiting_at_ns: u64,
    pub sets_created: u64,
    pub sets_closed: u64,
}

pub const EPOLL_CTL_ADD: u32 = 1;
pub const EPOLL_CTL_DEL: u32 = 2;
pub const EPOLL_CTL_MOD: u32 = 3;

impl EpollModel {
    pub fn apply(&mut self, event: &EpollEvent) {
        match event {
            EpollEvent::Created {
                at_ns, epfd, stack, ..
            } => {
                self.sets_created += 1;
                self.stats.remove(epfd);
                self.sets.insert(
                    *epfd,
                    EpollSet {
                        epfd: *epfd,
                        created_ns: Some(*at_ns),
                        creation_stack: stack.clone(),
                        ..Default::default()
                    },
                );
            }
            EpollEvent::Ctl { epfd, op, ret, .. } => {
                let set = self.sets.entry(*epfd).or_insert_with(|| EpollSet {
                    epfd: *epfd,
                    ..Default::default()
                });
                if *ret != 0 {
                    set.failed_ctls += 1;
                    return;
                }
                match *op {
                    EPOLL_CTL_ADD => set.adds += 1,
                    EPOLL_CTL_DEL => set.dels += 1,
                    EPOLL_CTL_MOD => set.mods += 1,
                    _ => {}
                }
            }
            EpollEvent::Closed { at_ns, epfd } => {
                self.sets_closed += 1;
                if let Some(set) = self.sets.get_mut(epfd) {
                    set.closed_ns = Some(*at_ns);
                }
            }
            EpollEvent::Stats { epfd, stats } => {
                self.stats.insert(*epfd, *stats);
            }
            EpollEvent::Waiting { at_ns, waiters } => {
                self.waiting_at_ns = *at_ns;
                self.waiters = waiters.clone();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ctl_counts_and_snapshots_replace() {
        let mut m = EpollModel::default();
        m.apply(&EpollEvent::Created {
            at_ns: 1,
            tid: 1,
            epfd: 5,
            stack: vec![],
        });
        for (op, ret) in [(EPOLL_CTL_ADD, 0), (EPOLL_CTL_ADD, -17), (EPOLL_CTL_DEL, 0)] {
            m.apply(&EpollEvent::Ctl {
                at_ns: 2,
                tid: 1,
                epfd: 5,
                op,
                fd: 7,
                events: 1,
                ret,
            });
        }
        let set = &m.sets[&5];
        assert_eq!((set.adds, set.dels, set.failed_ctls), (1, 1, 1));
        m.apply(&EpollEvent::Closed { at_ns: 3, epfd: 5 });
        assert_eq!(m.sets[&5].closed_ns, Some(3));
    }
}
