//! Futex waits and wakes.
//!
//! Hot path budget: a futex call costs ~170 ns and a user stack capture ~1.3 us, so entry only
//! records a timestamp (one hash insert), exit sends one small ring-buffer record without waking
//! the reader, and stacks are taken only for waits that turned out long. Threads that never
//! return are found by userspace in `PENDING_WAITS` and unwound from /proc.
use aya_ebpf::{
    bindings::BPF_F_USER_STACK,
    helpers::{bpf_ktime_get_ns, bpf_probe_read_user},
    macros::{map, tracepoint},
    maps::{Array, HashMap},
    programs::{tracing::StackIdContext, TracePointContext},
};

use crate::syscall::Syscall;
use tracer_common::{
    counter, futex_op, syscall, wait_flags, EventKind, FutexKey, PendingWait, ThreadSlot, WaitDone,
    WakeStats, MAX_WATCHED_ADDRS, THREAD_SLOTS,
};

use crate::{count, emit, long_wait_ns, slots, target_thread, STACKS};

/// The futex wait each thread of the target is in, by thread slot. What is still active at
/// report time is still blocked.
#[map(name = "PENDING_WAITS")]
pub static PENDING_WAITS: Array<ThreadSlot<PendingWait>> = Array::with_max_entries(THREAD_SLOTS, 0);

/// Futex words that some thread has been waiting on for long; userspace fills it so that wakes
/// are counted only where they matter (a lookup miss is far cheaper than counting every wake).
#[map(name = "WATCHED_ADDRS")]
static WATCHED_ADDRS: HashMap<FutexKey, WakeStats> =
    HashMap::with_max_entries(MAX_WATCHED_ADDRS, 0);

/// `struct futex_waitv { u64 val; u64 uaddr; u32 flags; u32 reserved; }`
const FUTEX_WAITV_UADDR: usize = 8;

#[repr(C)]
struct KernelTimespec {
    sec: i64,
    nsec: i64,
}

#[inline(always)]
fn timeout_ns(ptr: u64) -> Option<u64> {
    if ptr == 0 {
        return None;
    }
    // SAFETY: bpf_probe_read_user validates the user pointer.
    let ts = unsafe { bpf_probe_read_user(ptr as *const KernelTimespec) }.ok()?;
    Some(
        (ts.sec as u64)
            .wrapping_mul(1_000_000_000)
            .wrapping_add(ts.nsec as u64),
    )
}

#[inline(always)]
fn begin_wait(
    tgid: u32,
    tid: u32,
    uaddr: u64,
    op: u32,
    syscall: u32,
    timeout: Option<u64>,
    absolute: bool,
) {
    let mut flags = 0;
    if timeout.is_some() {
        flags |= wait_flags::HAS_TIMEOUT;
        if absolute {
            flags |= wait_flags::ABSOLUTE_TIMEOUT;
        }
    }
    let wait = PendingWait {
        // SAFETY: helper without preconditions.
        start_ns: unsafe { bpf_ktime_get_ns() },
        uaddr,
        timeout_ns: timeout.unwrap_or(0),
        tgid,
        op,
        syscall,
        flags,
    };
    if !slots::put(&PENDING_WAITS, tid, wait) {
        count(counter::PENDING_MAP_FULL);
        return;
    }
    count(counter::WAITS_STARTED);
}

#[inline(always)]
fn note_wake<S: Syscall>(s: &S, tgid: u32, tid: u32, uaddr: u64) {
    let key = FutexKey {
        uaddr,
        tgid,
        _pad: 0,
    };
    let Some(stats) = WATCHED_ADDRS.get_ptr_mut(key) else {
        return;
    };
    count(counter::WATCHED_WAKES);
    // SAFETY: the map value stays valid for the program's run; concurrent wakers may race on
    // these plain counters, which at worst undercounts a wake that another CPU counted too.
    unsafe {
        if (*stats).wakes == 0 {
            (*stats).first_waker_tid = tid;
            (*stats).first_waker_stack_id =
                match s.ctx().get_stackid(&STACKS, BPF_F_USER_STACK as u64) {
                    Ok(id) => id as i32,
                    Err(_) => {
                        count(counter::STACK_ERRORS);
                        -1
                    }
                };
        }
        (*stats).wakes += 1;
        (*stats).last_wake_ns = bpf_ktime_get_ns();
    }
}

#[tracepoint(category = "syscalls", name = "sys_enter_futex")]
pub fn sys_enter_futex(ctx: TracePointContext) -> u32 {
    enter_futex(&ctx)
}

#[inline(always)]
pub fn enter_futex<S: Syscall>(s: &S) -> u32 {
    let Some((tgid, tid)) = target_thread() else {
        return 0;
    };
    let uaddr = s.arg(0);
    let cmd = s.arg(1) as u32 & futex_op::CMD_MASK;
    if futex_op::is_wait(cmd) {
        let timeout = timeout_ns(s.arg(3));
        begin_wait(
            tgid,
            tid,
            uaddr,
            cmd,
            syscall::FUTEX,
            timeout,
            futex_op::has_absolute_timeout(cmd),
        );
    } else if futex_op::is_wake(cmd) {
        note_wake(s, tgid, tid, uaddr);
        if cmd == futex_op::WAKE_OP {
            note_wake(s, tgid, tid, s.arg(4));
        }
    }
    0
}

#[tracepoint(category = "syscalls", name = "sys_enter_futex_wait")]
pub fn sys_enter_futex_wait(ctx: TracePointContext) -> u32 {
    enter_futex_wait(&ctx)
}

#[inline(always)]
pub fn enter_futex_wait<S: Syscall>(s: &S) -> u32 {
    let Some((tgid, tid)) = target_thread() else {
        return 0;
    };
    // futex2 timeouts are always absolute.
    let timeout = timeout_ns(s.arg(4));
    begin_wait(
        tgid,
        tid,
        s.arg(0),
        futex_op::WAIT,
        syscall::FUTEX_WAIT,
        timeout,
        true,
    );
    0
}

#[tracepoint(category = "syscalls", name = "sys_enter_futex_waitv")]
pub fn sys_enter_futex_waitv(ctx: TracePointContext) -> u32 {
    enter_futex_waitv(&ctx)
}

#[inline(always)]
pub fn enter_futex_waitv<S: Syscall>(s: &S) -> u32 {
    let Some((tgid, tid)) = target_thread() else {
        return 0;
    };
    let waiters = s.arg(0);
    // SAFETY: bpf_probe_read_user validates the user pointer.
    let uaddr =
        unsafe { bpf_probe_read_user((waiters as usize + FUTEX_WAITV_UADDR) as *const u64) }
            .unwrap_or(0);
    let timeout = timeout_ns(s.arg(3));
    begin_wait(
        tgid,
        tid,
        uaddr,
        futex_op::WAIT,
        syscall::FUTEX_WAITV,
        timeout,
        true,
    );
    0
}

#[tracepoint(category = "syscalls", name = "sys_enter_futex_wake")]
pub fn sys_enter_futex_wake(ctx: TracePointContext) -> u32 {
    enter_futex_wake(&ctx)
}

#[inline(always)]
pub fn enter_futex_wake<S: Syscall>(s: &S) -> u32 {
    let Some((tgid, tid)) = target_thread() else {
        return 0;
    };
    note_wake(s, tgid, tid, s.arg(0));
    0
}

#[tracepoint(category = "syscalls", name = "sys_enter_futex_requeue")]
pub fn sys_enter_futex_requeue(ctx: TracePointContext) -> u32 {
    enter_futex_requeue(&ctx)
}

#[inline(always)]
pub fn enter_futex_requeue<S: Syscall>(s: &S) -> u32 {
    let Some((tgid, tid)) = target_thread() else {
        return 0;
    };
    let waiters = s.arg(0);
    // SAFETY: bpf_probe_read_user validates the user pointer.
    let uaddr =
        unsafe { bpf_probe_read_user((waiters as usize + FUTEX_WAITV_UADDR) as *const u64) }
            .unwrap_or(0);
    note_wake(s, tgid, tid, uaddr);
    0
}

/// One exit handler for every futex entry point that can wait.
#[inline(always)]
pub fn end_wait<S: Syscall>(s: &S) -> u32 {
    let Some((_, tid)) = target_thread() else {
        return 0;
    };
    let Some(wait) = slots::take(&PENDING_WAITS, tid, |_| true) else {
        // A wake, or a wait that began before tracing started.
        return 0;
    };
    count(counter::WAITS_FINISHED);

    // SAFETY: helper without preconditions.
    let duration_ns = unsafe { bpf_ktime_get_ns() }.saturating_sub(wait.start_ns);
    let (user_stack_id, kernel_stack_id) = if duration_ns >= long_wait_ns() {
        // The user stack at exit is the one at entry: nothing ran in user space in between.
        let user = s.ctx().get_stackid(&STACKS, BPF_F_USER_STACK as u64);
        let kernel = s.ctx().get_stackid(&STACKS, 0);
        if user.is_err() || kernel.is_err() {
            count(counter::STACK_ERRORS);
        }
        if let Ok(id) = user {
            crate::stacktop::send(id as i32);
        }
        (
            user.map_or(-1, |id| id as i32),
            kernel.map_or(-1, |id| id as i32),
        )
    } else {
        (-1, -1)
    };

    emit(WaitDone {
        kind: EventKind::WaitDone as u32,
        tid,
        wait,
        duration_ns,
        ret: s.ret(),
        user_stack_id,
        kernel_stack_id,
    });
    0
}

#[tracepoint(category = "syscalls", name = "sys_exit_futex")]
pub fn sys_exit_futex(ctx: TracePointContext) -> u32 {
    end_wait(&ctx)
}

#[tracepoint(category = "syscalls", name = "sys_exit_futex_wait")]
pub fn sys_exit_futex_wait(ctx: TracePointContext) -> u32 {
    end_wait(&ctx)
}

#[tracepoint(category = "syscalls", name = "sys_exit_futex_waitv")]
pub fn sys_exit_futex_waitv(ctx: TracePointContext) -> u32 {
    end_wait(&ctx)
}
