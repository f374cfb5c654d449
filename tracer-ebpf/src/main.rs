//! The kernel half of leaktrace: eBPF programs attached to syscall tracepoints (`--detail full`),
//! or to the raw `sys_enter`/`sys_exit` tracepoints in probe windows (`--detail low`, raw.rs).
//!
//! Every program first checks that the current thread belongs to the traced process and returns
//! at once otherwise: these tracepoints fire for every process on the machine.
#![no_std]
#![no_main]

mod calls;
mod epoll;
mod futex;
mod go;
mod log;
mod raw;
mod slots;
mod stacktop;
mod syscall;
mod task;
mod timerfd;

use aya_ebpf::{
    macros::map,
    maps::{PerCpuArray, RingBuf, StackTrace},
};
use tracer_common::{counter, EVENTS_BYTES, MAX_STACKS};

/// The traced process (tgid). Set by userspace before load; read-only, so the verifier and JIT
/// can treat it as a constant and the filter costs a compare.
#[unsafe(no_mangle)]
static TARGET_TGID: u32 = 0;

/// Completed waits at least this long get their user and kernel stacks captured (a stack costs
/// more than a futex call, so short waits never pay for one).
#[unsafe(no_mangle)]
static LONG_WAIT_NS: u64 = 1_000_000;

/// Non-zero: thread and process creations are sent from `task:task_newtask` (the low-cost
/// mode, where the clone/fork syscall tracepoints are not attached because any attached syscall
/// tracepoint costs every task of the host); zero: from the clone/fork exits, as always before.
#[unsafe(no_mangle)]
static CREATIONS_AT_NEWTASK: u32 = 0;

#[map(name = "EVENTS")]
static EVENTS: RingBuf = RingBuf::with_byte_size(EVENTS_BYTES, 0);

#[map(name = "STACKS")]
static STACKS: StackTrace = StackTrace::with_max_entries(MAX_STACKS, 0);

#[map(name = "COUNTERS")]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::COUNT, 0);

/// The current thread's (tgid, tid) when it belongs to the traced process.
#[inline(always)]
fn target_thread() -> Option<(u32, u32)> {
    let pid_tgid = aya_ebpf::helpers::bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    // SAFETY: a plain read of a global that the loader initialised; volatile so that the
    // compiler does not fold the default value in.
    let target = unsafe { core::ptr::read_volatile(&TARGET_TGID) };
    (tgid == target).then_some((tgid, pid_tgid as u32))
}

#[inline(always)]
fn long_wait_ns() -> u64 {
    // SAFETY: as for TARGET_TGID.
    unsafe { core::ptr::read_volatile(&LONG_WAIT_NS) }
}

#[inline(always)]
fn creations_at_newtask() -> bool {
    // SAFETY: as for TARGET_TGID.
    unsafe { core::ptr::read_volatile(&CREATIONS_AT_NEWTASK) != 0 }
}

/// Sends one record to userspace, counted as sent or as lost (ring buffer full): nothing is
/// dropped without a trace in every report. The reader drains on a timer, so the kernel is told
/// not to wake it: waking it per record would cost the target more than the record itself.
#[inline(always)]
fn emit<T: 'static>(record: T) -> bool {
    let Some(mut entry) = EVENTS.reserve::<T>(0) else {
        count(counter::EVENTS_LOST);
        if log::enabled() {
            log::ring_buffer_full(&record);
        }
        return false;
    };
    entry.write(record);
    entry.submit(aya_ebpf::bindings::BPF_RB_NO_WAKEUP as u64);
    count(counter::EVENTS_SENT);
    true
}

#[inline(always)]
fn count(index: u32) {
    if let Some(slot) = COUNTERS.get_ptr_mut(index) {
        // SAFETY: per-CPU slot, and tracepoint programs are not preempted on their CPU.
        unsafe { *slot += 1 };
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
