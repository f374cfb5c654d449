//! Collection for threads, epoll and timerfds: turns their decoded ring-buffer records into
//! model events, reads what existed before attach from /proc, and snapshots what threads are
//! blocked in, who waits on epoll, and the state of every open timerfd.
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use tracer_common::{fd_kind, native_call, CallDone, FdKey, ThreadExit, ThreadRename};

use crate::attach::{Detail, Group, Probes};
use crate::model::epoll::{EpollEvent, EpollWaiter, WatchedFd};
use crate::model::threads::{ThreadEvent, ThreadState};
use crate::model::timerfd::{TimerfdEvent, TFD_TIMER_ABSTIME};
use crate::model::{BlockedSince, Event, Frame, Model};
use crate::procfs::{self, fds};
use crate::symbolize::Symbolizer;
use crate::unwind::{RemoteUnwinder, SyscallState};

use super::stacktop::UserStacks;

const SYS_EPOLL_WAIT: i64 = 232;
const SYS_EPOLL_PWAIT: i64 = 281;
const SYS_EPOLL_PWAIT2: i64 = 441;
const SYS_FUTEX_WAITV: i64 = 449;
const SYS_FUTEX_WAIT: i64 = 455;
/// Threads unwound per creation site at the final snapshot: enough to show where a group is
/// blocked without unwinding thousands of leaked threads.
const STACKS_PER_SITE: usize = 3;

/// x86_64 syscall names for the calls threads usually block in.
pub fn syscall_name(nr: i64) -> String {
    let name = match nr {
        0 => "read",
        1 => "write",
        7 => "poll",
        23 => "select",
        34 => "pause",
        35 => "nanosleep",
        43 => "accept",
        45 => "recvfrom",
        47 => "recvmsg",
        61 => "wait4",
        128 => "rt_sigtimedwait",
        130 => "rt_sigsuspend",
        202 => "futex",
        230 => "clock_nanosleep",
        232 => "epoll_wait",
        270 => "pselect6",
        271 => "ppoll",
        281 => "epoll_pwait",
        288 => "accept4",
        426 => "io_uring_enter",
        441 => "epoll_pwait2",
        449 => "futex_waitv",
        455 => "futex_wait",
        _ => return format!("syscall {nr}"),
    };
    name.to_string()
}

/// (syscall, args, sp, pc, context switches): a thread showing the same key at two scans is in
/// the same call and did not run in between (a loop re-entering the same call with the same
/// arguments moves its context switch count).
type CallKey = (i64, [u64; 6], u64, u64, u64);

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
    /// CLOCK_REALTIME - CLOCK_MONOTONIC, to turn absolute realtime deadlines into monotonic.
    realtime_offset_ns: i128,
    pub notes: Vec<String>,
}

fn clock_ns(clock: libc::clockid_t) -> i128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the struct.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as i128 * 1_000_000_000 + ts.tv_nsec as i128
}

impl Native {
    pub fn new(pid: u32) -> Self {
        Native {
            pid,
            realtime_offset_ns: clock_ns(libc::CLOCK_REALTIME) - clock_ns(libc::CLOCK_MONOTONIC),
            ..Default::default()
        }
    }

    /// What existed before the probes: threads, timerfds, epoll sets and their waiters. Their
    /// fds are added to the kernel's tracked set so that reads and closes of them are seen.
    pub fn attach(&mut self, probes: &mut Probes, model: &mut Model, now: u64) {
        for tid in procfs::threads(self.pid) {
            model.apply(&Event::Thread(ThreadEvent::Existing {
                at_ns: now,
                tid,
                name: procfs::thread_name(self.pid, tid),
            }));
            if let Some(regs) = procfs::syscall_state(self.pid, tid) {
                if matches!(regs.nr, SYS_EPOLL_WAIT | SYS_EPOLL_PWAIT | SYS_EPOLL_PWAIT2) {
                    if let Some(switches) = procfs::context_switches(self.pid, tid) {
                        let key = (regs.nr, regs.args, regs.sp, regs.pc, switches);
                        self.waiting_before.insert(tid, key);
                        self.in_call.insert(tid, (key, now));
                    }
                }
            }
        }
        for (fd, link) in fds::links(self.pid) {
            let kind = match fds::kind(&link).as_str() {
                "timerfd" => fd_kind::TIMERFD,
                "eventpoll" => fd_kind::EPOLL,
                _ => continue,
            };
            let key = FdKey {
                tgid: self.pid,
                fd: fd as u32,
            };
            if let Err(err) = probes.track_fd(key, kind) {
                self.note(format!("{err:#}: reads and closes of fd {fd} are not seen"));
            }
            if kind == fd_kind::TIMERFD {
                if let Some(state) = fds::timerfd_state(self.pid, fd) {
                    model.apply(&Event::Timerfd(TimerfdEvent::Existing {
                        at_ns: now,
                        fd,
                        state,
                    }));
                }
            }
        }
    }

    /// Before a probe window opens (low mode): the kernel's kinds of the target's open fds
    /// made right, since fds created, closed and reused between windows were not seen.
    pub fn resync_tracked_fds(&mut self, probes: &mut Probes) {
        for (fd, link) in fds::links(self.pid) {
            let kind = match fds::kind(&link).as_str() {
                "timerfd" => fd_kind::TIMERFD,
                "eventpoll" => fd_kind::EPOLL,
                _ => 0,
            };
            let Ok(index) = u32::try_from(fd) else {
                continue;
            };
            if probes.tracked_fd_kind(index) != kind {
                let key = FdKey {
                    tgid: self.pid,
                    fd: index,
                };
                if let Err(err) = probes.track_fd(key, kind) {
                    self.note(format!("{err:#}: reads and closes of fd {fd} are not seen"));
                }
            }
        }
    }

    /// The syscalls a periodic window watches for this target (a bit mask for the window
    /// programs: every syscall outside it costs the target's calls a map lookup and no more),
    /// see [`window_groups_for`].
    pub fn window_groups(&self) -> Vec<Group> {
        let links = fds::links(self.pid);
        let kinds: Vec<String> = links.values().map(|l| fds::kind(l)).collect();
        window_groups_for(self.uses_futex2, kinds.iter().map(String::as_str))
    }

    /// Low mode: timerfds opened and closed between windows, from the fd table. One that
    /// appeared is described like one open before the trace (its creation was not seen); one
    /// the model holds that is no longer a timerfd was closed.
    fn timerfds_between_windows(&mut self, model: &mut Model, now: u64) {
        let links = fds::links(self.pid);
        let is_timerfd = |fd: &i32| links.get(fd).is_some_and(|l| fds::kind(l) == "timerfd");
        let closed: Vec<i32> = model
            .timerfds
            .open
            .keys()
            .copied()
            .filter(|fd| !is_timerfd(fd))
            .collect();
        for fd in closed {
            model.apply(&Event::Timerfd(TimerfdEvent::Closed { at_ns: now, fd }));
        }
        for &fd in links.keys().filter(|fd| is_timerfd(fd)) {
            if model.timerfds.open.contains_key(&fd) {
                continue;
            }
            if let Some(state) = fds::timerfd_state(self.pid, fd) {
                model.apply(&Event::Timerfd(TimerfdEvent::Existing {
                    at_ns: now,
                    fd,
                    state,
                }));
            }
        }
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
        if let Some(event) = self.call_event(done, stack) {
            model.apply(&event);
        }
    }

    pub fn thread_exit(&mut self, exit: &ThreadExit, model: &mut Model) {
        self.in_call.remove(&exit.tid);
        model.apply(&Event::Thread(ThreadEvent::Exited {
            at_ns: exit.at_ns,
            tid: exit.tid,
        }));
    }

    pub fn thread_rename(&mut self, rename: &ThreadRename, model: &mut Model) {
        let end = rename.comm.iter().position(|&b| b == 0).unwrap_or(16);
        model.apply(&Event::Thread(ThreadEvent::Renamed {
            tid: rename.tid,
            name: String::from_utf8_lossy(&rename.comm[..end]).into_owned(),
        }));
    }

    fn call_event(&self, done: &CallDone, stack: Vec<Frame>) -> Option<Event> {
        let call = &done.call;
        let a = call.args;
        let at_ns = done.end_ns;
        let tid = done.tid;
        Some(match call.call {
            native_call::CLONE | native_call::CLONE3 | native_call::FORK | native_call::VFORK => {
                Event::Thread(ThreadEvent::Created {
                    at_ns,
                    creator: tid,
                    tid: u32::try_from(done.ret).ok()?,
                    flags: a[0],
                    stack,
                })
            }
            native_call::EPOLL_CREATE => Event::Epoll(EpollEvent::Created {
                at_ns,
                tid,
                epfd: done.ret as i32,
                stack,
            }),
            native_call::EPOLL_CTL => Event::Epoll(EpollEvent::Ctl {
                at_ns,
                tid,
                epfd: a[0] as i32,
                op: a[1] as u32,
                fd: a[2] as i32,
                events: a[3] as u32,
                ret: done.ret,
            }),
            native_call::TIMERFD_CREATE => Event::Timerfd(TimerfdEvent::Created {
                at_ns,
                tid,
                fd: done.ret as i32,
                clockid: a[0] as i32,
                flags: a[1] as u32,
                stack,
            }),
            native_call::TIMERFD_SETTIME => {
                let flags = a[1] as u32;
                let (interval_ns, value_ns) = (a[2], a[3]);
                let deadline_ns = (done.ret == 0 && value_ns != 0).then(|| {
                    if flags & TFD_TIMER_ABSTIME == 0 {
                        call.start_ns.saturating_add(value_ns)
                    } else {
                        self.absolute_to_monotonic(a[0] as i32, value_ns)
                    }
                });
                Event::Timerfd(TimerfdEvent::Set {
                    at_ns: call.start_ns,
                    tid,
                    fd: a[0] as i32,
                    flags,
                    value_ns,
                    interval_ns,
                    deadline_ns,
                    ret: done.ret,
                    stack,
                })
            }
            native_call::TIMERFD_GETTIME => Event::Timerfd(TimerfdEvent::Gettime {
                at_ns,
                fd: a[0] as i32,
            }),
            native_call::TIMERFD_READ => Event::Timerfd(TimerfdEvent::Read {
                at_ns,
                tid,
                fd: a[0] as i32,
                ret: done.ret,
                expirations: done.value,
            }),
            native_call::CLOSE if a[1] == fd_kind::TIMERFD as u64 => {
                Event::Timerfd(TimerfdEvent::Closed {
                    at_ns,
                    fd: a[0] as i32,
                })
            }
            native_call::CLOSE => Event::Epoll(EpollEvent::Closed {
                at_ns,
                epfd: a[0] as i32,
            }),
            _ => return None,
        })
    }

    /// Absolute timerfd values are on the timer's clock; the model keeps CLOCK_MONOTONIC.
    /// CLOCK_BOOTTIME is treated as monotonic (they differ only by time spent suspended).
    fn absolute_to_monotonic(&self, _fd: i32, value_ns: u64) -> u64 {
        // The clock is not in the settime record; a realtime deadline is recognisable by its
        // size (after 2001 in realtime, decades of uptime in monotonic).
        const REALTIME_THRESHOLD_NS: u64 = 1_000_000_000 * 1_000_000_000;
        if value_ns >= REALTIME_THRESHOLD_NS {
            (value_ns as i128 - self.realtime_offset_ns).max(0) as u64
        } else {
            value_ns
        }
    }

    /// Snapshots threads, epoll waiters, epoll statistics and timerfd states. `last` also
    /// unwinds a few threads of every creation site for the report.
    #[allow(
        clippy::too_many_arguments,
        reason = "the collector's parts, lent; native collection is to be split by subsystem (issue 14)"
    )]
    pub fn scan(
        &mut self,
        probes: &Probes,
        held: &HashSet<u32>,
        symbolizer: &mut Symbolizer,
        unwinder: &mut Option<RemoteUnwinder>,
        model: &mut Model,
        now: u64,
        min_blocked_ns: u64,
        max_frames: usize,
        last: bool,
    ) {
        for (key, stats) in probes.epoll_stats() {
            if key.tgid == self.pid {
                model.apply(&Event::Epoll(EpollEvent::Stats {
                    epfd: key.fd as i32,
                    stats,
                }));
            }
        }
        let tids = procfs::threads(self.pid);
        let pending: HashMap<u32, _> = probes
            .pending_calls(&tids)
            .into_iter()
            .filter(|(tid, call)| {
                held.contains(tid) && call.tgid == self.pid && call.call == native_call::EPOLL_WAIT
            })
            .collect();

        let mut states = Vec::new();
        let mut waiters = Vec::new();
        let mut links: Option<BTreeMap<i32, String>> = None;
        let mut listening: Option<BTreeSet<u64>> = None;
        let mut per_site: HashMap<usize, usize> = HashMap::new();
        let alive: BTreeSet<u32> = tids.iter().copied().collect();
        self.in_call.retain(|tid, _| alive.contains(tid));
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
                self.uses_futex2 |= matches!(r.nr, SYS_FUTEX_WAITV | SYS_FUTEX_WAIT);
                if matches!(r.nr, SYS_EPOLL_WAIT | SYS_EPOLL_PWAIT | SYS_EPOLL_PWAIT2) {
                    if let Some(waiter) = self.waiter(
                        tid,
                        &name,
                        &r,
                        &pending,
                        unwinder,
                        symbolizer,
                        now,
                        if last { 0 } else { min_blocked_ns / 2 },
                        max_frames,
                        &mut links,
                        &mut listening,
                    ) {
                        waiters.push(waiter);
                    }
                }
            }
            let site = model.threads.alive.get(&tid).map(|t| t.site);
            let taken = site.map(|s| per_site.entry(s).or_default());
            let user_stack = match (last, regs, taken) {
                (true, Some(r), Some(taken)) if *taken < STACKS_PER_SITE => {
                    *taken += 1;
                    let ips = unwinder
                        .as_mut()
                        .map(|u| u.unwind_blocked(r.pc, r.sp, max_frames))
                        .unwrap_or_default();
                    symbolizer.user_stack(&ips)
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
        model.apply(&Event::Thread(ThreadEvent::Snapshot {
            at_ns: now,
            threads: states,
        }));
        model.apply(&Event::Epoll(EpollEvent::Waiting {
            at_ns: now,
            waiters,
        }));

        if probes.detail() == Detail::Low && !probes.window_is_open() {
            self.timerfds_between_windows(model, now);
        }
        let fds: Vec<_> = model
            .timerfds
            .open
            .keys()
            .filter_map(|&fd| Some((fd, fds::timerfd_state(self.pid, fd)?)))
            .collect();
        model.apply(&Event::Timerfd(TimerfdEvent::Snapshot { at_ns: now, fds }));
    }

    #[allow(
        clippy::too_many_arguments,
        reason = "the collector's parts, lent; native collection is to be split by subsystem (issue 14)"
    )]
    fn waiter(
        &mut self,
        tid: u32,
        name: &str,
        regs: &SyscallState,
        pending: &HashMap<u32, tracer_common::PendingCall>,
        unwinder: &mut Option<RemoteUnwinder>,
        symbolizer: &mut Symbolizer,
        now: u64,
        snapshot_after: u64,
        max_frames: usize,
        links: &mut Option<BTreeMap<i32, String>>,
        listening: &mut Option<BTreeSet<u64>>,
    ) -> Option<EpollWaiter> {
        let epfd = regs.args[0] as i32;
        let (since, timeout_ns) = match pending.get(&tid) {
            Some(call) if call.args[0] as i32 == epfd => {
                if now.saturating_sub(call.start_ns) < snapshot_after {
                    return None;
                }
                let timeout = (call.args[2] != u64::MAX).then_some(call.args[2]);
                (BlockedSince::Exact(call.start_ns), timeout)
            }
            Some(_) => return None,
            None => {
                let timeout = match regs.nr {
                    SYS_EPOLL_PWAIT2 => (regs.args[3] != 0).then_some(0),
                    _ => {
                        let ms = regs.args[3] as i32;
                        (ms >= 0).then(|| ms as u64 * 1_000_000)
                    }
                };
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
        let key = (tid, since, epfd);
        let user_stack = self
            .stacks
            .entry(key)
            .or_insert_with(|| {
                let ips = unwinder
                    .as_mut()
                    .map(|u| u.unwind_blocked(regs.pc, regs.sp, max_frames))
                    .unwrap_or_default();
                symbolizer.user_stack(&ips)
            })
            .clone();
        let links = links.get_or_insert_with(|| fds::links(self.pid));
        let listening = listening.get_or_insert_with(|| fds::listening_sockets(self.pid));
        let fds = fds::epoll_set(self.pid, epfd)
            .unwrap_or_default()
            .into_iter()
            .map(|(fd, events)| self.watched_fd(fd, events, links, listening))
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
    fn watched_fd(
        &self,
        fd: i32,
        events: u32,
        links: &BTreeMap<i32, String>,
        listening: &BTreeSet<u64>,
    ) -> WatchedFd {
        let link = links.get(&fd).cloned().unwrap_or_default();
        let kind = fds::kind(&link);
        let mut dead_end = None;
        let mut is_listening = false;
        match kind.as_str() {
            "pipe" => {
                // The read end waits for a writer: where are the write ends?
                let writers: Vec<i32> = links
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
                    dead_end = Some(format!(
                        "pipe whose write end (fd {}) is held only by this process",
                        writers
                            .iter()
                            .map(|w| w.to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ));
                }
            }
            "eventfd" if fds::other_holders(self.pid, &link).is_empty() => {
                dead_end = Some("eventfd held only by this process".to_string());
            }
            "timerfd"
                if fds::timerfd_state(self.pid, fd)
                    .is_some_and(|s| s.it_value_ns == 0 && s.ticks == 0) =>
            {
                dead_end = Some("timerfd that is not armed: it can never fire".to_string());
            }
            "socket" => {
                is_listening = fds::inode(&link).is_some_and(|i| listening.contains(&i));
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

/// The groups a periodic window watches, from whether a thread was seen in a futex2 call and the
/// kinds of the target's fds (`procfs::fds::kind`: "eventpoll", "timerfd", ...): futex(2)
/// always; futex2 once seen; epoll when the target has an epoll set; timerfd calls, reads and
/// closes when it has a timerfd or an epoll set (reads and closes are only followed on those).
/// Threads is asked for always and watched only on kernels without `task_newtask`. What is
/// created between windows shows in the fd table at the next scan, and the window after that
/// includes it.
pub fn window_groups_for<'a>(
    uses_futex2: bool,
    fd_kinds: impl Iterator<Item = &'a str>,
) -> Vec<Group> {
    let mut groups = vec![Group::Futex, Group::Threads];
    if uses_futex2 {
        groups.push(Group::Futex2);
    }
    let (mut epoll, mut timerfd) = (false, false);
    for kind in fd_kinds {
        epoll |= kind == "eventpoll";
        timerfd |= kind == "timerfd";
    }
    if epoll {
        groups.push(Group::Epoll);
    }
    if epoll || timerfd {
        groups.push(Group::Fds);
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_watches_epoll_and_fds_only_when_the_target_has_them() {
        use Group::*;
        let of = |futex2, kinds: &[&str]| window_groups_for(futex2, kinds.iter().copied());
        assert_eq!(of(false, &[]), vec![Futex, Threads]);
        assert_eq!(of(false, &["socket", "pipe"]), vec![Futex, Threads]);
        assert_eq!(of(true, &[]), vec![Futex, Threads, Futex2]);
        assert_eq!(of(false, &["timerfd"]), vec![Futex, Threads, Fds]);
        assert_eq!(
            of(false, &["socket", "eventpoll"]),
            vec![Futex, Threads, Epoll, Fds]
        );
    }
}
