//! timerfd: creation, arming, gettime, reads (consumption of expirations) and close.
//!
//! `read` and `close` fire for every fd of the target: they first look the fd up in
//! `TRACKED_FDS` (a miss costs one lookup), and only tracked timerfds go further.
//!
//! Expiry is not traced in the kernel. The hrtimer tracepoints (`timer:hrtimer_start`,
//! `hrtimer_expire_entry`) fire for every hrtimer on the machine, and `hrtimer_expire_entry` runs
//! in interrupt context where the target filter cannot apply, so every expiry system-wide would
//! pay a hash lookup. Instead userspace computes the deadline from the armed value (settime
//! records) and reads `/proc/PID/fdinfo/FD` (`ticks`: expirations not yet read, `it_value`: time
//! to the next expiry) at every scan — see tracer-user's timerfd analysis.
use aya_ebpf::{helpers::bpf_probe_read_user, macros::tracepoint, programs::TracePointContext};
use tracer_common::{counter, fd_kind, native_call};

use crate::calls::{begin, finish, send, track_fd, tracked, untrack, user_stack};
use crate::syscall::Syscall;
use crate::{count, target_thread};

/// `struct __kernel_itimerspec { timespec it_interval; timespec it_value; }`
#[repr(C)]
struct KernelItimerspec {
    interval_sec: i64,
    interval_nsec: i64,
    value_sec: i64,
    value_nsec: i64,
}

#[inline(always)]
fn ns(sec: i64, nsec: i64) -> u64 {
    (sec as u64)
        .wrapping_mul(1_000_000_000)
        .wrapping_add(nsec as u64)
}

#[tracepoint(category = "syscalls", name = "sys_enter_timerfd_create")]
pub fn sys_enter_timerfd_create(ctx: TracePointContext) -> u32 {
    create_enter(&ctx)
}

#[inline(always)]
pub fn create_enter<S: Syscall>(s: &S) -> u32 {
    let Some((tgid, tid)) = target_thread() else {
        return 0;
    };
    begin(
        tgid,
        tid,
        native_call::TIMERFD_CREATE,
        [s.arg(0), s.arg(1), 0, 0],
    );
    0
}

#[tracepoint(category = "syscalls", name = "sys_exit_timerfd_create")]
pub fn sys_exit_timerfd_create(ctx: TracePointContext) -> u32 {
    create_exit(&ctx)
}

#[inline(always)]
pub fn create_exit<S: Syscall>(s: &S) -> u32 {
    let Some((_, tid)) = target_thread() else {
        return 0;
    };
    let Some(pending) = finish(tid, native_call::TIMERFD_CREATE) else {
        return 0;
    };
    let fd = s.ret();
    if fd >= 0 {
        track_fd(fd as u32, fd_kind::TIMERFD);
        send(tid, pending, fd, 0, user_stack(s.ctx()));
    }
    0
}

#[tracepoint(category = "syscalls", name = "sys_enter_timerfd_settime")]
pub fn sys_enter_timerfd_settime(ctx: TracePointContext) -> u32 {
    settime_enter(&ctx)
}

#[inline(always)]
pub fn settime_enter<S: Syscall>(s: &S) -> u32 {
    let Some((tgid, tid)) = target_thread() else {
        return 0;
    };
    let ptr = s.arg(2);
    // SAFETY: bpf_probe_read_user validates the user pointer.
    let (interval, value) = match unsafe { bpf_probe_read_user(ptr as *const KernelItimerspec) } {
        Ok(t) => (
            ns(t.interval_sec, t.interval_nsec),
            ns(t.value_sec, t.value_nsec),
        ),
        Err(_) => (0, 0),
    };
    begin(
        tgid,
        tid,
        native_call::TIMERFD_SETTIME,
        [s.arg(0), s.arg(1), interval, value],
    );
    0
}

#[tracepoint(category = "syscalls", name = "sys_exit_timerfd_settime")]
pub fn sys_exit_timerfd_settime(ctx: TracePointContext) -> u32 {
    settime_exit(&ctx)
}

#[inline(always)]
pub fn settime_exit<S: Syscall>(s: &S) -> u32 {
    let Some((_, tid)) = target_thread() else {
        return 0;
    };
    let Some(pending) = finish(tid, native_call::TIMERFD_SETTIME) else {
        return 0;
    };
    let result = s.ret();
    // Disarming (value 0) needs no stack; arming does (the arm site is what the report names).
    let stack = if result == 0 && pending.args[3] != 0 {
        user_stack(s.ctx())
    } else {
        -1
    };
    send(tid, pending, result, 0, stack);
    0
}

#[tracepoint(category = "syscalls", name = "sys_enter_timerfd_gettime")]
pub fn sys_enter_timerfd_gettime(ctx: TracePointContext) -> u32 {
    gettime_enter(&ctx)
}

#[inline(always)]
pub fn gettime_enter<S: Syscall>(s: &S) -> u32 {
    let Some((tgid, tid)) = target_thread() else {
        return 0;
    };
    begin(tgid, tid, native_call::TIMERFD_GETTIME, [s.arg(0), 0, 0, 0]);
    0
}

#[tracepoint(category = "syscalls", name = "sys_exit_timerfd_gettime")]
pub fn sys_exit_timerfd_gettime(ctx: TracePointContext) -> u32 {
    gettime_exit(&ctx)
}

#[inline(always)]
pub fn gettime_exit<S: Syscall>(s: &S) -> u32 {
    let Some((_, tid)) = target_thread() else {
        return 0;
    };
    if let Some(pending) = finish(tid, native_call::TIMERFD_GETTIME) {
        send(tid, pending, s.ret(), 0, -1);
    }
    0
}

#[tracepoint(category = "syscalls", name = "sys_enter_read")]
pub fn sys_enter_read(ctx: TracePointContext) -> u32 {
    read_enter(&ctx)
}

#[inline(always)]
pub fn read_enter<S: Syscall>(s: &S) -> u32 {
    let Some((tgid, tid)) = target_thread() else {
        return 0;
    };
    let fd = s.arg(0);
    if tracked(fd) != Some(fd_kind::TIMERFD) {
        return 0;
    }
    begin(tgid, tid, native_call::TIMERFD_READ, [fd, s.arg(1), 0, 0]);
    0
}

#[tracepoint(category = "syscalls", name = "sys_exit_read")]
pub fn sys_exit_read(ctx: TracePointContext) -> u32 {
    read_exit(&ctx)
}

#[inline(always)]
pub fn read_exit<S: Syscall>(s: &S) -> u32 {
    let Some((_, tid)) = target_thread() else {
        return 0;
    };
    // Ordinary reads cost one array lookup here: only a read of a tracked timerfd took a slot.
    let Some(pending) = finish(tid, native_call::TIMERFD_READ) else {
        return 0;
    };
    count(counter::TIMERFD_READS);
    let result = s.ret();
    let value = if result == 8 {
        // SAFETY: bpf_probe_read_user validates the user pointer.
        unsafe { bpf_probe_read_user(pending.args[1] as *const u64) }.unwrap_or(0)
    } else {
        0
    };
    send(tid, pending, result, value, -1);
    0
}

/// A close of a tracked fd is sent at entry: Linux releases the fd even when close fails.
#[tracepoint(category = "syscalls", name = "sys_enter_close")]
pub fn sys_enter_close(ctx: TracePointContext) -> u32 {
    close_enter(&ctx)
}

#[inline(always)]
pub fn close_enter<S: Syscall>(s: &S) -> u32 {
    let Some((tgid, tid)) = target_thread() else {
        return 0;
    };
    let fd = s.arg(0);
    let Some(kind) = tracked(fd) else {
        return 0;
    };
    untrack(fd);
    let call = tracer_common::PendingCall {
        start_ns: crate::calls::now_ns(),
        args: [fd, kind as u64, 0, 0],
        tgid,
        call: native_call::CLOSE,
    };
    send(tid, call, 0, 0, -1);
    0
}
