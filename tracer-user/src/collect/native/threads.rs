//! Threads: those alive at attach, exits and renames, and at each scan what every thread is
//! blocked in (/proc/PID/task/TID/syscall) and since when.
use std::collections::{BTreeSet, HashMap};

use tracer_common::{native_call, ThreadExit, ThreadRename};

use super::syscalls::{is_epoll_wait, is_futex2_wait, syscall_name};
use super::{Native, Scan};
use crate::model::epoll::EpollWaiter;
use crate::model::threads::{ThreadEvent, ThreadState};
use crate::model::{Event, Model};
use crate::procfs;

/// Threads unwound per creation site at the final snapshot: enough to show where a group is
/// blocked without unwinding thousands of leaked threads.
const STACKS_PER_SITE: usize = 3;

/// (syscall, args, sp, pc, context switches): a thread showing the same key at two scans is in
/// the same call and did not run in between (a loop re-entering the same call with the same
/// arguments moves its context switch count).
pub(super) type CallKey = (i64, [u64; 6], u64, u64, u64);

impl Native {
    /// The threads alive at attach, and the epoll waits they are already in.
    pub(super) fn existing_threads(&mut self, model: &mut Model, now: u64) {
        for tid in procfs::threads(self.pid) {
            model.apply(&Event::Thread(ThreadEvent::Existing {
                at_ns: now,
                tid,
                name: procfs::thread_name(self.pid, tid),
            }));
            if let Some(regs) = procfs::syscall_state(self.pid, tid) {
                if is_epoll_wait(regs.nr) {
                    if let Some(switches) = procfs::context_switches(self.pid, tid) {
                        let key = (regs.nr, regs.args, regs.sp, regs.pc, switches);
                        self.waiting_before.insert(tid, key);
                        self.in_call.insert(tid, (key, now));
                    }
                }
            }
        }
    }

    /// Every thread's state now, and the threads among them waiting on epoll.
    pub(super) fn threads_and_waiters(
        &mut self,
        scan: &mut Scan,
        model: &Model,
    ) -> (Vec<ThreadState>, Vec<EpollWaiter>) {
        let tids = procfs::threads(self.pid);
        let pending: HashMap<u32, _> = scan
            .probes
            .pending_calls(&tids)
            .into_iter()
            .filter(|(tid, call)| {
                scan.held.contains(tid)
                    && call.tgid == self.pid
                    && call.call == native_call::EPOLL_WAIT
            })
            .collect();
        let mut states = Vec::new();
        let mut waiters = Vec::new();
        let mut fd_table = super::epoll::FdTable::new(self.pid);
        let mut per_site: HashMap<usize, usize> = HashMap::new();
        let alive: BTreeSet<u32> = tids.iter().copied().collect();
        self.in_call.retain(|tid, _| alive.contains(tid));
        let now = scan.now;
        for &tid in &tids {
            let name = procfs::thread_name(self.pid, tid);
            let regs = procfs::syscall_state(self.pid, tid);
            let switches = regs.and_then(|_| procfs::context_switches(self.pid, tid));
            let since = regs.map(|r| {
                let key: CallKey = (r.nr, r.args, r.sp, r.pc, switches.unwrap_or(u64::MAX));
                match self.in_call.get(&tid) {
                    Some((previous, since)) if *previous == key => *since,
                    _ => {
                        self.in_call.insert(tid, (key, now));
                        now
                    }
                }
            });
            if let Some(r) = regs {
                self.uses_futex2 |= is_futex2_wait(r.nr);
                if is_epoll_wait(r.nr) {
                    let waiter = self.waiter(scan, tid, &name, &r, &pending, &mut fd_table);
                    waiters.extend(waiter);
                }
            }
            let site = model.threads.alive.get(&tid).map(|t| t.site);
            let taken = site.map(|s| per_site.entry(s).or_default());
            let user_stack = match (scan.last, regs, taken) {
                (true, Some(r), Some(taken)) if *taken < STACKS_PER_SITE => {
                    *taken += 1;
                    scan.blocked_stack(&r)
                }
                _ => Vec::new(),
            };
            states.push(ThreadState {
                tid,
                name,
                state: regs.map_or("running".to_string(), |r| syscall_name(r.nr)),
                args: regs.map(|r| r.args.to_vec()).unwrap_or_default(),
                in_state_since_ns: since,
                user_stack,
            });
        }
        (states, waiters)
    }
}

pub(super) fn snapshot(model: &mut Model, at_ns: u64, threads: Vec<ThreadState>) {
    model.apply(&Event::Thread(ThreadEvent::Snapshot { at_ns, threads }));
}

pub(super) fn exited(exit: &ThreadExit, model: &mut Model) {
    model.apply(&Event::Thread(ThreadEvent::Exited {
        at_ns: exit.at_ns,
        tid: exit.tid,
    }));
}

pub(super) fn renamed(rename: &ThreadRename, model: &mut Model) {
    model.apply(&Event::Thread(ThreadEvent::Renamed {
        tid: rename.tid,
        name: comm_name(&rename.comm),
    }));
}

/// A task's comm as the kernel holds it: up to 16 bytes, NUL-terminated when shorter.
fn comm_name(comm: &[u8]) -> String {
    let end = comm.iter().position(|&b| b == 0).unwrap_or(comm.len());
    String::from_utf8_lossy(&comm[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comm_stops_at_the_nul_or_the_end() {
        let mut comm = [0u8; 16];
        comm[..6].copy_from_slice(b"worker");
        assert_eq!(comm_name(&comm), "worker");
        assert_eq!(comm_name(b"sixteen-bytes-xx"), "sixteen-bytes-xx");
    }
}
