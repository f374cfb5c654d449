//! Shared plumbing for the rare calls tracked for threads, epoll and timerfds: remember the
//! arguments at entry (in the thread's slot), send one record with the result at exit.
use aya_ebpf::{
    bindings::BPF_F_USER_STACK, helpers::bpf_ktime_get_ns, macros::map, maps::Array,
    programs::tracing::StackIdContext,
};
use tracer_common::{
    counter, CallDone, EventKind, PendingCall, ThreadSlot, THREAD_SLOTS, TRACKED_FD_SLOTS,
};

use crate::{count, emit, slots, STACKS};

/// The tracked call each thread of the target is in, by thread slot.
#[map(name = "PENDING_CALLS")]
pub static PENDING_CALLS: Array<ThreadSlot<PendingCall>> = Array::with_max_entries(THREAD_SLOTS, 0);

/// The kind (`fd_kind`, 0: not tracked) of each fd of the target, so that `read` and `close` on
/// any other fd cost one array lookup. Filled here on creation and by userspace for fds that
/// existed before attach. Indexed by fd: every program acts for the one target process only.
#[map(name = "TRACKED_FDS")]
pub static TRACKED_FDS: Array<u32> = Array::with_max_entries(TRACKED_FD_SLOTS, 0);

#[inline(always)]
pub fn now_ns() -> u64 {
    // SAFETY: helper without preconditions.
    unsafe { bpf_ktime_get_ns() }
}

#[inline(always)]
pub fn begin(tgid: u32, tid: u32, call: u32, args: [u64; 4]) {
    let pending = PendingCall {
        start_ns: now_ns(),
        args,
        tgid,
        call,
    };
    if !slots::put(&PENDING_CALLS, tid, pending) {
        count(counter::PENDING_CALLS_FULL);
    }
}

/// The call `tid` entered, if it is `call`; frees its slot.
#[inline(always)]
pub fn finish(tid: u32, call: u32) -> Option<PendingCall> {
    slots::take(&PENDING_CALLS, tid, |pending| pending.call == call)
}

/// The caller's user stack id, or -1 (counted) when it cannot be taken. The top of the stack
/// goes to userspace with it (see `stacktop`).
#[inline(always)]
pub fn user_stack<C: StackIdContext>(ctx: &C) -> i32 {
    match ctx.get_stackid(&STACKS, BPF_F_USER_STACK as u64) {
        Ok(id) => {
            crate::stacktop::send(id as i32);
            id as i32
        }
        Err(_) => {
            count(counter::STACK_ERRORS);
            -1
        }
    }
}

#[inline(always)]
pub fn send(tid: u32, call: PendingCall, ret: i64, value: u64, user_stack_id: i32) {
    emit(CallDone {
        kind: EventKind::CallDone as u32,
        tid,
        call,
        end_ns: now_ns(),
        ret,
        value,
        user_stack_id,
        _pad: 0,
    });
}

/// Starts tracking a new timerfd or epoll fd of the target.
#[inline(always)]
pub fn track_fd(fd: u32, kind: u32) {
    match TRACKED_FDS.get_ptr_mut(fd) {
        // SAFETY: an array element stays valid for the program's run.
        Some(slot) => unsafe { *slot = kind },
        None => count(counter::TRACKED_FDS_FULL),
    }
}

/// The kind of a tracked fd of the target, if it is one.
#[inline(always)]
pub fn tracked(fd: u64) -> Option<u32> {
    let fd = u32::try_from(fd).ok()?;
    TRACKED_FDS.get(fd).copied().filter(|&kind| kind != 0)
}

/// Stops tracking a closed fd (its number will be reused for something else).
#[inline(always)]
pub fn untrack(fd: u64) {
    if let Some(slot) = u32::try_from(fd)
        .ok()
        .and_then(|fd| TRACKED_FDS.get_ptr_mut(fd))
    {
        // SAFETY: as in `track_fd`.
        unsafe { *slot = 0 };
    }
}
