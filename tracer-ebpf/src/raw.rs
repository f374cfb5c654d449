//! The probe windows of the low-cost mode (`--detail low`): two raw tracepoint programs on
//! `sys_enter` and `sys_exit` instead of ~23 per-syscall tracepoints.
//!
//! Why: detaching a per-syscall tracepoint's perf event takes the global `event_mutex` and waits
//! for RCU grace periods (kernel/trace/trace_event_perf.c `perf_trace_destroy`), ~45-80 ms each,
//! one after the other; a raw tracepoint link is released with `tracepoint_probe_unregister`
//! alone (kernel/bpf/syscall.c `bpf_raw_tp_link_release`), whose grace periods are waited for
//! asynchronously. The price: while attached these programs run for every syscall of every
//! process of the host, so the tgid compare comes first and nothing else runs for other
//! processes.
//!
//! Dispatch is a `match` on the syscall number, not tail calls through a `ProgramArray`: the
//! handlers are small and inlined, the verifier takes the whole program at once, and a match
//! needs no map of programs to fill and keep in step; only the target's own syscalls get past
//! the tgid compare to reach it. What the window watches is the `WINDOW_GROUPS` bit mask
//! (`tracer_common::window_group`), set by userspace: narrowing a window is a map update.
//!
//! Syscall numbers: x86_64 (arch/x86/entry/syscalls/syscall_64.tbl); 32-bit (compat) callers
//! have other numbers and are not dispatched, as the per-syscall tracepoints skip them too.
use aya_ebpf::{
    macros::{map, raw_tracepoint},
    maps::Array,
    programs::RawTracePointContext,
};
use tracer_common::{counter, native_call, window_group};

use crate::syscall::{Raw, Syscall as _};
use crate::{count, epoll, futex, target_thread, task, timerfd};

#[map(name = "WINDOW_GROUPS")]
static WINDOW_GROUPS: Array<u32> = Array::with_max_entries(1, 0);

const READ: i64 = 0;
const CLOSE: i64 = 3;
const CLONE: i64 = 56;
const FORK: i64 = 57;
const VFORK: i64 = 58;
const FUTEX: i64 = 202;
const EPOLL_CREATE: i64 = 213;
const EPOLL_WAIT: i64 = 232;
const EPOLL_CTL: i64 = 233;
const EPOLL_PWAIT: i64 = 281;
const TIMERFD_CREATE: i64 = 283;
const TIMERFD_SETTIME: i64 = 286;
const TIMERFD_GETTIME: i64 = 287;
const EPOLL_CREATE1: i64 = 291;
const CLONE3: i64 = 435;
const EPOLL_PWAIT2: i64 = 441;
const FUTEX_WAITV: i64 = 449;
const FUTEX_WAKE: i64 = 454;
const FUTEX_WAIT: i64 = 455;
const FUTEX_REQUEUE: i64 = 456;

/// The group of a syscall number (0: none of leaktrace's).
#[inline(always)]
fn group_of(nr: i64) -> u32 {
    match nr {
        FUTEX => window_group::FUTEX,
        FUTEX_WAIT | FUTEX_WAITV | FUTEX_WAKE | FUTEX_REQUEUE => window_group::FUTEX2,
        CLONE | CLONE3 | FORK | VFORK => window_group::THREADS,
        EPOLL_CREATE | EPOLL_CREATE1 | EPOLL_CTL | EPOLL_WAIT | EPOLL_PWAIT | EPOLL_PWAIT2 => {
            window_group::EPOLL
        }
        TIMERFD_CREATE | TIMERFD_SETTIME | TIMERFD_GETTIME | READ | CLOSE => window_group::FDS,
        _ => 0,
    }
}

/// Whether the open window watches syscall `nr`.
#[inline(always)]
fn watched(nr: i64) -> bool {
    let group = group_of(nr);
    group != 0 && WINDOW_GROUPS.get(0).is_some_and(|&mask| mask & group != 0)
}

#[raw_tracepoint(tracepoint = "sys_enter")]
pub fn raw_sys_enter(ctx: RawTracePointContext) -> u32 {
    if target_thread().is_none() {
        return 0;
    }
    // Every syscall of the target pays for the window, watched or not: counted so that a
    // window on a busy target closes as a storm (userspace, `collect::windows`).
    count(counter::WINDOW_CALLS);
    let (s, nr) = Raw::enter(ctx);
    if !watched(nr) {
        return 0;
    }
    match nr {
        FUTEX => futex::enter_futex(&s),
        FUTEX_WAIT => futex::enter_futex_wait(&s),
        FUTEX_WAITV => futex::enter_futex_waitv(&s),
        FUTEX_WAKE => futex::enter_futex_wake(&s),
        FUTEX_REQUEUE => futex::enter_futex_requeue(&s),
        CLONE => task::enter(native_call::CLONE, s.arg(0)),
        CLONE3 => task::enter_clone3(&s),
        FORK => task::enter(native_call::FORK, 0),
        VFORK => task::enter(native_call::VFORK, 0),
        EPOLL_CREATE => epoll::create_enter(0),
        EPOLL_CREATE1 => epoll::create_enter(s.arg(0)),
        EPOLL_CTL => epoll::ctl_enter(&s),
        EPOLL_WAIT => epoll::enter_epoll_wait(&s),
        EPOLL_PWAIT => epoll::enter_epoll_pwait(&s),
        EPOLL_PWAIT2 => epoll::enter_epoll_pwait2(&s),
        TIMERFD_CREATE => timerfd::create_enter(&s),
        TIMERFD_SETTIME => timerfd::settime_enter(&s),
        TIMERFD_GETTIME => timerfd::gettime_enter(&s),
        READ => timerfd::read_enter(&s),
        CLOSE => timerfd::close_enter(&s),
        _ => 0,
    }
}

#[raw_tracepoint(tracepoint = "sys_exit")]
pub fn raw_sys_exit(ctx: RawTracePointContext) -> u32 {
    if target_thread().is_none() {
        return 0;
    }
    let (s, nr) = Raw::exit(ctx);
    if !watched(nr) {
        return 0;
    }
    match nr {
        FUTEX | FUTEX_WAIT | FUTEX_WAITV => futex::end_wait(&s),
        CLONE => task::exit(&s, native_call::CLONE),
        CLONE3 => task::exit(&s, native_call::CLONE3),
        FORK => task::exit(&s, native_call::FORK),
        VFORK => task::exit(&s, native_call::VFORK),
        EPOLL_CREATE | EPOLL_CREATE1 => epoll::create_exit(&s),
        EPOLL_CTL => epoll::ctl_exit(&s),
        EPOLL_WAIT | EPOLL_PWAIT | EPOLL_PWAIT2 => epoll::wait_exit(&s),
        TIMERFD_CREATE => timerfd::create_exit(&s),
        TIMERFD_SETTIME => timerfd::settime_exit(&s),
        TIMERFD_GETTIME => timerfd::gettime_exit(&s),
        READ => timerfd::read_exit(&s),
        _ => 0,
    }
}
