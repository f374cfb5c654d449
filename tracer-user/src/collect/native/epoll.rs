//! epoll: the kernel's per-set wait results, and at each scan the threads waiting on a set,
//! since when, and what each fd in the set is and whether anything can make it ready.
use std::collections::{BTreeMap, BTreeSet, HashMap};

use tracer_common::PendingCall;

use super::syscalls::{epoll_timeout_from_registers, syscall_name};
use super::{Native, Scan};
use crate::attach::Probes;
use crate::model::epoll::{DeadEnd, EpollEvent, EpollWaiter, FdKind, WatchedFd};
use crate::model::{BlockedSince, Event, Model};
use crate::procfs::fds;
use crate::unwind::SyscallState;

/// The target's fd table and listening sockets, read on first use in a scan and only then.
pub(super) struct FdTable {
    pid: u32,
    links: Option<BTreeMap<i32, String>>,
    listening: Option<BTreeSet<u64>>,
}

impl FdTable {
    pub(super) fn new(pid: u32) -> Self {
        FdTable {
            pid,
            links: None,
            listening: None,
        }
    }

    fn links(&mut self) -> &BTreeMap<i32, String> {
        self.links.get_or_insert_with(|| fds::links(self.pid))
    }

    fn listening(&mut self) -> &BTreeSet<u64> {
        self.listening
            .get_or_insert_with(|| fds::listening_sockets(self.pid))
    }
}

impl Native {
    pub(super) fn epoll_stats(&self, probes: &Probes, model: &mut Model) {
        for (key, stats) in probes.epoll_stats() {
            if key.tgid == self.pid {
                model.apply(&Event::Epoll(EpollEvent::Stats {
                    epfd: key.fd as i32,
                    stats,
                }));
            }
        }
    }

    /// Thread `tid`, in an epoll wait with `regs`, as a waiter: None while its wait (seen by
    /// the probes, in `pending`) is younger than half the threshold, except at the last scan.
    pub(super) fn waiter(
        &mut self,
        scan: &mut Scan,
        tid: u32,
        name: &str,
        regs: &SyscallState,
        pending: &HashMap<u32, PendingCall>,
        fd_table: &mut FdTable,
    ) -> Option<EpollWaiter> {
        let snapshot_after = if scan.last {
            0
        } else {
            scan.min_blocked_ns / 2
        };
        let epfd = regs.args[0] as i32;
        let (since, timeout_ns) = match pending.get(&tid) {
            Some(call) if call.args[0] as i32 == epfd => {
                if scan.now.saturating_sub(call.start_ns) < snapshot_after {
                    return None;
                }
                let timeout = (call.args[2] != u64::MAX).then_some(call.args[2]);
                (BlockedSince::Exact(call.start_ns), timeout)
            }
            Some(_) => return None,
            None => {
                let timeout = epoll_timeout_from_registers(regs.nr, &regs.args);
                // The same call, not woken, since the first look that found it: at attach, or
                // later for a wait no probe saw begin (between windows, or racing the attach).
                let (key, first_seen) = *self.in_call.get(&tid)?;
                let since = if self.waiting_before.get(&tid) == Some(&key) {
                    BlockedSince::BeforeTrace
                } else {
                    BlockedSince::SeenAt(first_seen)
                };
                (since, timeout)
            }
        };
        let user_stack = self
            .stacks
            .entry((tid, since, epfd))
            .or_insert_with(|| scan.blocked_stack(regs))
            .clone();
        let fds = fds::epoll_set(self.pid, epfd)
            .unwrap_or_default()
            .into_iter()
            .map(|(fd, events)| self.watched_fd(fd, events, fd_table))
            .collect();
        Some(EpollWaiter {
            tid,
            name: name.to_string(),
            epfd,
            syscall: syscall_name(regs.nr),
            timeout_ns,
            since,
            user_stack,
            fds,
        })
    }

    /// What an fd in an epoll set is, and whether it can ever become ready.
    fn watched_fd(&self, fd: i32, events: u32, table: &mut FdTable) -> WatchedFd {
        let link = table.links().get(&fd).cloned().unwrap_or_default();
        let kind = fds::kind(&link);
        let mut dead_end = None;
        let mut is_listening = false;
        match kind {
            FdKind::Pipe => {
                // The read end waits for a writer: where are the write ends?
                let writers: Vec<i32> = table
                    .links()
                    .iter()
                    .filter(|(&other, l)| {
                        other != fd
                            && **l == link
                            && fds::flags(self.pid, other)
                                .is_some_and(|f| f & 3 == libc::O_WRONLY as u32)
                    })
                    .map(|(&other, _)| other)
                    .collect();
                let others = fds::other_holders(self.pid, &link);
                if others.is_empty() && !writers.is_empty() {
                    dead_end = Some(DeadEnd::PipeWrittenOnlyHere { writers });
                }
            }
            FdKind::Eventfd if fds::other_holders(self.pid, &link).is_empty() => {
                dead_end = Some(DeadEnd::EventfdHeldOnlyHere);
            }
            FdKind::Timerfd
                if fds::timerfd_state(self.pid, fd)
                    .is_some_and(|s| s.it_value_ns == 0 && s.ticks == 0) =>
            {
                dead_end = Some(DeadEnd::TimerfdDisarmed);
            }
            FdKind::Socket => {
                is_listening = fds::inode(&link).is_some_and(|i| table.listening().contains(&i));
            }
            _ => {}
        }
        WatchedFd {
            fd,
            events,
            kind,
            link,
            dead_end,
            listening: is_listening,
        }
    }
}

pub(super) fn snapshot(model: &mut Model, at_ns: u64, waiters: Vec<EpollWaiter>) {
    model.apply(&Event::Epoll(EpollEvent::Waiting { at_ns, waiters }));
}
