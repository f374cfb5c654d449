//! epoll: set creation, `epoll_ctl` changes, and waits.
//!
//! A wait records its start in `PENDING_CALLS` (userspace reads it to see who is waiting now and
//! since when); its return updates per-set statistics in `EPOLL_STATS` instead of sending a
//! record, because busy event loops return from epoll_wait very often and userspace needs only
//! "did this set ever return events, how many, when last".
use aya_ebpf::{
    helpers::bpf_probe_read_user, macros::map, macros::tracepoint, maps::HashMap,
    programs::TracePointContext,
};
use tracer_common::{
    counter, epoll_variant, fd_kind, native_call, EpollStats, FdKey, MAX_EPOLL_SETS,
};

use crate::calls::{begin, finish, now_ns, send, track_fd, user_stack};
use crate::syscall::Syscall;
use crate::{count, target_thread};

#[map(name = "EPOLL_STATS")]
static EPOLL_STATS: HashMap<FdKey, EpollStats> = HashMap::with_max_entries(MAX_EPOLL_SETS, 0);

/// Timeout "none" in `args[2]` of a pending epoll wait.
const NO_TIMEOUT: u64 = u64::MAX;

#[repr(C)]
struct KernelTimespec {
    sec: i64,
    nsec: i64,
}

#[inline(always)]
pub fn create_enter(flags: u64) -> u32 {
    let Some((tgid, tid)) = target_thread() else {
        return 0;
    };
    begin(tgid, tid, native_call::EPOLL_CREATE, [flags, 0, 0, 0]);
    0
}

#[inline(always)]
pub fn create_exit<S: Syscall>(s: &S) -> u32 {
    let Some((_, tid)) = target_thread() else {
        return 0;
    };
    let Some(pending) = finish(tid, native_call::EPOLL_CREATE) else {
        return 0;
    };
    let fd = s.ret();
    if fd >= 0 {
        track_fd(fd as u32, fd_kind::EPOLL);
        send(tid, pending, fd, 0, user_stack(s.ctx()));
    }
    0
}

#[tracepoint(category = "syscalls", name = "sys_enter_epoll_create")]
pub fn sys_enter_epoll_create(_ctx: TracePointContext) -> u32 {
    create_enter(0)
}

#[tracepoint(category = "syscalls", name = "sys_exit_epoll_create")]
pub fn sys_exit_epoll_create(ctx: TracePointContext) -> u32 {
    create_exit(&ctx)
}

#[tracepoint(category = "syscalls", name = "sys_enter_epoll_create1")]
pub fn sys_enter_epoll_create1(ctx: TracePointContext) -> u32 {
    create_enter(ctx.arg(0))
}

#[tracepoint(category = "syscalls", name = "sys_exit_epoll_create1")]
pub fn sys_exit_epoll_create1(ctx: TracePointContext) -> u32 {
    create_exit(&ctx)
}

#[tracepoint(category = "syscalls", name = "sys_enter_epoll_ctl")]
pub fn sys_enter_epoll_ctl(ctx: TracePointContext) -> u32 {
    ctl_enter(&ctx)
}

#[inline(always)]
pub fn ctl_enter<S: Syscall>(s: &S) -> u32 {
    let Some((tgid, tid)) = target_thread() else {
        return 0;
    };
    let event = s.arg(3);
    // struct epoll_event { u32 events; u64 data; } (packed on x86_64): events first.
    let events = if event == 0 {
        0
    } else {
        // SAFETY: bpf_probe_read_user validates the user pointer.
        unsafe { bpf_probe_read_user(event as *const u32) }.unwrap_or(0) as u64
    };
    begin(
        tgid,
        tid,
        native_call::EPOLL_CTL,
        [s.arg(0), s.arg(1), s.arg(2), events],
    );
    0
}

#[tracepoint(category = "syscalls", name = "sys_exit_epoll_ctl")]
pub fn sys_exit_epoll_ctl(ctx: TracePointContext) -> u32 {
    ctl_exit(&ctx)
}

#[inline(always)]
pub fn ctl_exit<S: Syscall>(s: &S) -> u32 {
    let Some((_, tid)) = target_thread() else {
        return 0;
    };
    if let Some(pending) = finish(tid, native_call::EPOLL_CTL) {
        send(tid, pending, s.ret(), 0, -1);
    }
    0
}

#[inline(always)]
fn wait_enter(epfd: u64, maxevents: u64, timeout_ns: u64, variant: u64) -> u32 {
    let Some((tgid, tid)) = target_thread() else {
        return 0;
    };
    begin(
        tgid,
        tid,
        native_call::EPOLL_WAIT,
        [epfd, maxevents, timeout_ns, variant],
    );
    0
}

/// epoll_wait/epoll_pwait take milliseconds; negative means no timeout.
#[inline(always)]
fn ms_timeout(ms: u64) -> u64 {
    let ms = ms as i32;
    if ms < 0 {
        NO_TIMEOUT
    } else {
        ms as u64 * 1_000_000
    }
}

#[tracepoint(category = "syscalls", name = "sys_enter_epoll_wait")]
pub fn sys_enter_epoll_wait(ctx: TracePointContext) -> u32 {
    enter_epoll_wait(&ctx)
}

#[inline(always)]
pub fn enter_epoll_wait<S: Syscall>(s: &S) -> u32 {
    wait_enter(
        s.arg(0),
        s.arg(2),
        ms_timeout(s.arg(3)),
        epoll_variant::EPOLL_WAIT,
    )
}

#[tracepoint(category = "syscalls", name = "sys_enter_epoll_pwait")]
pub fn sys_enter_epoll_pwait(ctx: TracePointContext) -> u32 {
    enter_epoll_pwait(&ctx)
}

#[inline(always)]
pub fn enter_epoll_pwait<S: Syscall>(s: &S) -> u32 {
    wait_enter(
        s.arg(0),
        s.arg(2),
        ms_timeout(s.arg(3)),
        epoll_variant::EPOLL_PWAIT,
    )
}

#[tracepoint(category = "syscalls", name = "sys_enter_epoll_pwait2")]
pub fn sys_enter_epoll_pwait2(ctx: TracePointContext) -> u32 {
    enter_epoll_pwait2(&ctx)
}

#[inline(always)]
pub fn enter_epoll_pwait2<S: Syscall>(s: &S) -> u32 {
    if target_thread().is_none() {
        return 0;
    }
    let ptr = s.arg(3);
    let timeout = if ptr == 0 {
        NO_TIMEOUT
    } else {
        // SAFETY: bpf_probe_read_user validates the user pointer.
        match unsafe { bpf_probe_read_user(ptr as *const KernelTimespec) } {
            Ok(ts) => (ts.sec as u64)
                .wrapping_mul(1_000_000_000)
                .wrapping_add(ts.nsec as u64),
            Err(_) => NO_TIMEOUT,
        }
    };
    wait_enter(s.arg(0), s.arg(2), timeout, epoll_variant::EPOLL_PWAIT2)
}

#[inline(always)]
pub fn wait_exit<S: Syscall>(s: &S) -> u32 {
    let Some((tgid, tid)) = target_thread() else {
        return 0;
    };
    let Some(pending) = finish(tid, native_call::EPOLL_WAIT) else {
        return 0;
    };
    count(counter::EPOLL_WAITS);
    let result = s.ret();
    let key = FdKey {
        tgid,
        fd: pending.args[0] as u32,
    };
    let stats = match EPOLL_STATS.get_ptr_mut(key) {
        Some(stats) => stats,
        None => {
            if EPOLL_STATS.insert(key, EpollStats::default(), 0).is_err() {
                count(counter::EPOLL_STATS_FULL);
                return 0;
            }
            match EPOLL_STATS.get_ptr_mut(key) {
                Some(stats) => stats,
                None => return 0,
            }
        }
    };
    // SAFETY: the map value stays valid for the program's run; racing waiters of one set at
    // worst undercount.
    unsafe {
        (*stats).waits += 1;
        if result > 0 {
            (*stats).returned_events += 1;
            (*stats).events += result as u64;
            (*stats).last_event_ns = now_ns();
        } else if result == 0 {
            (*stats).timeouts += 1;
        } else {
            (*stats).errors += 1;
        }
    }
    0
}

#[tracepoint(category = "syscalls", name = "sys_exit_epoll_wait")]
pub fn sys_exit_epoll_wait(ctx: TracePointContext) -> u32 {
    wait_exit(&ctx)
}

#[tracepoint(category = "syscalls", name = "sys_exit_epoll_pwait")]
pub fn sys_exit_epoll_pwait(ctx: TracePointContext) -> u32 {
    wait_exit(&ctx)
}

#[tracepoint(category = "syscalls", name = "sys_exit_epoll_pwait2")]
pub fn sys_exit_epoll_pwait2(ctx: TracePointContext) -> u32 {
    wait_exit(&ctx)
}
