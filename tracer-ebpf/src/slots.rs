//! Per-thread slots for calls in progress: an array indexed by `tid % THREAD_SLOTS`.
//!
//! A thread only ever writes its own slot (at the call's entry and exit, and at its own exit),
//! so no lock is needed. Two live threads whose tids collide share a slot: while one holds it,
//! the other's calls are not tracked, and the caller counts that.
use aya_ebpf::maps::Array;
use tracer_common::{thread_slot, ThreadSlot};

/// Stores `value` as thread `tid`'s call in progress. False when the slot is held by another
/// thread's call.
#[inline(always)]
pub fn put<T: Copy>(slots: &Array<ThreadSlot<T>>, tid: u32, value: T) -> bool {
    let Some(slot) = slots.get_ptr_mut(thread_slot(tid)) else {
        return false;
    };
    // SAFETY: an array element stays valid for the program's run.
    unsafe {
        if (*slot).active != 0 && (*slot).tid != tid {
            if crate::log::enabled() {
                crate::log::slot_collision(thread_slot(tid), tid, (*slot).tid);
            }
            return false;
        }
        (*slot).value = value;
        (*slot).tid = tid;
        (*slot).active = 1;
    }
    true
}

/// Thread `tid`'s call in progress, if `matches` accepts it; the slot is freed.
#[inline(always)]
pub fn take<T: Copy>(
    slots: &Array<ThreadSlot<T>>,
    tid: u32,
    matches: impl Fn(&T) -> bool,
) -> Option<T> {
    let slot = slots.get_ptr_mut(thread_slot(tid))?;
    // SAFETY: as in `put`.
    unsafe {
        if (*slot).active == 0 || (*slot).tid != tid || !matches(&(*slot).value) {
            return None;
        }
        (*slot).active = 0;
        Some((*slot).value)
    }
}

/// Frees thread `tid`'s slot: it exited, possibly inside a call that will never return.
#[inline(always)]
pub fn release<T>(slots: &Array<ThreadSlot<T>>, tid: u32) {
    if let Some(slot) = slots.get_ptr_mut(thread_slot(tid)) {
        // SAFETY: as in `put`.
        unsafe {
            if (*slot).tid == tid {
                (*slot).active = 0;
            }
        }
    }
}
