//! Collection for threads, epoll and timerfds: turns their decoded ring-buffer records into
//! model events, reads what existed before attach from /proc, and snapshots what threads are
//! blocked in, who waits on epoll, and the state of every open timerfd.
//!
//! One file per part: the syscall table (`syscalls`), timerfd deadline arithmetic
//! (`deadline`), returned calls as events (`calls`), the fd table (`fds`), and each
//! subsystem's state read from /proc (`threads`, `epoll`, `timerfd`). The model gets facts
//! only; what they mean is worded in `analyze`.
mod calls;
mod deadline;
mod epoll;
mod fds;
mod syscalls;
mod threads;
mod timerfd;

use std::collections::{HashMap, HashSet};

use tracer_common::{CallDone, ThreadExit, ThreadRename};

use crate::attach::Probes;
use crate::model::{BlockedSince, Frame, Model};
use crate::symbolize::Symbolizer;
use crate::unwind::{RemoteUnwinder, SyscallState};

use self::deadline::Deadlines;
use self::threads::CallKey;
use super::stacktop::UserStacks;

#[derive(Default)]
pub struct Native {
    pid: u32,
    /// Thread -> the call it was in at the previous scan, and since when it has been seen in it.
    in_call: HashMap<u32, (CallKey, u64)>,
    /// Epoll waits threads were already in when tracing started: tid -> the call at attach
    /// (the same wait as long as the thread shows the same [`CallKey`]).
    waiting_before: HashMap<u32, CallKey>,
    /// User stacks of epoll waiters, per wait (tid, since, epfd).
    stacks: HashMap<(u32, BlockedSince, i32), Vec<Frame>>,
    /// A thread was seen in a futex2 call (futex_wait, futex_waitv).
    uses_futex2: bool,
    deadlines: Deadlines,
    pub notes: Vec<String>,
}

/// What a scan borrows from the collector, and when and how it looks.
pub struct Scan<'a> {
    pub probes: &'a Probes,
    /// Threads whose kernel-side slot is still held (their pending calls are to be believed).
    pub held: &'a HashSet<u32>,
    pub symbolizer: &'a mut Symbolizer,
    pub unwinder: &'a mut Option<RemoteUnwinder>,
    /// CLOCK_MONOTONIC ns of the scan.
    pub now: u64,
    pub min_blocked_ns: u64,
    pub max_frames: usize,
    /// The final scan, for the report: everything blocked at all, and a few stacks per site.
    pub last: bool,
}

impl Scan<'_> {
    /// The symbolized user stack of a thread blocked in a syscall with these registers.
    fn blocked_stack(&mut self, regs: &SyscallState) -> Vec<Frame> {
        let ips = self
            .unwinder
            .as_mut()
            .map(|u| u.unwind_blocked(regs.pc, regs.sp, self.max_frames))
            .unwrap_or_default();
        self.symbolizer.user_stack(&ips)
    }
}

impl Native {
    pub fn new(pid: u32) -> Self {
        Native {
            pid,
            deadlines: Deadlines::now(),
            ..Default::default()
        }
    }

    /// What existed before the probes: threads, timerfds, epoll sets and their waiters. Their
    /// fds are added to the kernel's tracked set so that reads and closes of them are seen.
    pub fn attach(&mut self, probes: &mut Probes, model: &mut Model, now: u64) {
        self.existing_threads(model, now);
        self.existing_fds(probes, model, now);
    }

    fn note(&mut self, note: String) {
        if !self.notes.contains(&note) {
            self.notes.push(note);
        }
    }

    /// A tracked call returned: its event, with the caller's stack where one was taken.
    pub fn call_done(
        &mut self,
        done: &CallDone,
        stacks: &mut UserStacks,
        symbolizer: &mut Symbolizer,
        model: &mut Model,
    ) {
        let stack = stacks
            .get(done.tid, done.user_stack_id)
            .map(|ips| symbolizer.user_stack(&ips))
            .unwrap_or_default();
        if let Some(event) = calls::call_event(done, stack, &self.deadlines) {
            model.apply(&event);
        }
    }

    pub fn thread_exit(&mut self, exit: &ThreadExit, model: &mut Model) {
        self.in_call.remove(&exit.tid);
        threads::exited(exit, model);
    }

    pub fn thread_rename(&mut self, rename: &ThreadRename, model: &mut Model) {
        threads::renamed(rename, model);
    }

    /// Snapshots threads, epoll waiters, epoll statistics and timerfd states. `last` also
    /// unwinds a few threads of every creation site for the report.
    pub fn scan(&mut self, scan: &mut Scan, model: &mut Model) {
        self.epoll_stats(scan.probes, model);
        let (threads, waiters) = self.threads_and_waiters(scan, model);
        threads::snapshot(model, scan.now, threads);
        epoll::snapshot(model, scan.now, waiters);
        self.timerfd_snapshot(scan.probes, model, scan.now);
    }
}
