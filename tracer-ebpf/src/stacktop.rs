//! The top of the user stack, sent alongside every user stack the kernel takes, so that
//! userspace can recover the frame the kernel's frame-pointer walk skips (see
//! `tracer_common::UserStackTop`).
//!
//! The user registers come from the task's saved `pt_regs` (`bpf_task_pt_regs`, Linux 5.15+),
//! which hold the user state both at a syscall tracepoint and in a uprobe. Only paths that take a
//! user stack call this: the futex hot path pays nothing for short waits.
use aya_ebpf::helpers::{
    bpf_get_current_pid_tgid,
    generated::{
        bpf_get_current_task_btf, bpf_probe_read_kernel, bpf_probe_read_user, bpf_task_pt_regs,
    },
};
use core::ffi::c_void;
use tracer_common::{counter, EventKind, UserStackTop, STACK_TOP_CHUNK_WORDS, STACK_TOP_WORDS};

use crate::{count, EVENTS};

/// Offsets of `bp` and `sp` in x86_64 `struct pt_regs` (arch/x86/include/uapi/asm/ptrace.h:
/// r15 r14 r13 r12 bp bx r11 r10 r9 r8 ax cx dx si di orig_ax ip cs flags sp ss).
const PT_REGS_BP: usize = 4 * 8;
const PT_REGS_SP: usize = 19 * 8;
const PT_REGS_IP: usize = 16 * 8;

/// Reads one u64 of kernel memory at `addr`; 0 when it cannot.
#[inline(always)]
fn kernel_u64(addr: usize) -> u64 {
    let mut value = 0u64;
    // SAFETY: bpf_probe_read_kernel validates the address and writes 8 bytes into `value`.
    let err = unsafe {
        bpf_probe_read_kernel(
            (&mut value as *mut u64).cast::<c_void>(),
            8,
            addr as *const c_void,
        )
    };
    if err != 0 {
        0
    } else {
        value
    }
}

/// The current thread's user ip and sp (at a syscall: the instruction after it and the stack
/// pointer there), or None when the registers cannot be had.
#[inline(always)]
pub fn user_ip_sp() -> Option<(u64, u64)> {
    // SAFETY: as in `send`.
    let regs = unsafe { bpf_task_pt_regs(bpf_get_current_task_btf()) } as usize;
    if regs == 0 {
        return None;
    }
    Some((kernel_u64(regs + PT_REGS_IP), kernel_u64(regs + PT_REGS_SP)))
}

/// Sends the current thread's user sp, bp and the words above sp for user stack `stack_id`.
#[inline(always)]
pub fn send(stack_id: i32) {
    send_from(stack_id, 0);
}

/// As [`send`], the words from `skip` words above sp (the record's `sp` is where they start):
/// with `skip` [`STACK_TOP_WORDS`], the continuation of a top sent just before.
#[inline(always)]
pub fn send_from(stack_id: i32, skip: usize) {
    if stack_id < 0 {
        return;
    }
    // SAFETY: helpers without preconditions; bpf_task_pt_regs takes the BTF task pointer that
    // bpf_get_current_task_btf returns.
    let regs = unsafe { bpf_task_pt_regs(bpf_get_current_task_btf()) } as usize;
    if regs == 0 {
        count(counter::STACK_ERRORS);
        return;
    }
    let sp = kernel_u64(regs + PT_REGS_SP).wrapping_add(skip as u64 * 8);
    let bp = kernel_u64(regs + PT_REGS_BP);
    let Some(mut entry) = EVENTS.reserve::<UserStackTop>(0) else {
        count(counter::EVENTS_LOST);
        return;
    };
    let top = entry.as_mut_ptr();
    let mut words_read = 0u32;
    // SAFETY: `top` points at the reserved record, which we own until submit; every field is
    // written before submit (words by the reads, which zero their destination on failure).
    unsafe {
        (*top).kind = EventKind::UserStackTop as u32;
        (*top).tid = bpf_get_current_pid_tgid() as u32;
        (*top).stack_id = stack_id;
        (*top).sp = sp;
        (*top).bp = bp;
        let words = (*top).words.as_mut_ptr();
        // One read of the whole top when it lies inside the stack mapping (the usual case); by
        // chunks only when that fails, near the mapping's end.
        if bpf_probe_read_user(
            words.cast::<c_void>(),
            (STACK_TOP_WORDS * 8) as u32,
            sp as usize as *const c_void,
        ) == 0
        {
            words_read = STACK_TOP_WORDS as u32;
        } else {
            let mut chunk = 0;
            let mut ok = true;
            while chunk < STACK_TOP_WORDS / STACK_TOP_CHUNK_WORDS {
                let offset = chunk * STACK_TOP_CHUNK_WORDS;
                let dst = words.add(offset).cast::<c_void>();
                let src = (sp as usize + offset * 8) as *const c_void;
                let size = (STACK_TOP_CHUNK_WORDS * 8) as u32;
                // A failed read zeroes its destination: past the end of the stack mapping the
                // rest stays zero, and only the chunks before the first failure count.
                ok &= bpf_probe_read_user(dst, size, src) == 0;
                if ok {
                    words_read += STACK_TOP_CHUNK_WORDS as u32;
                }
                chunk += 1;
            }
        }
        (*top).words_read = words_read;
    }
    entry.submit(aya_ebpf::bindings::BPF_RB_NO_WAKEUP as u64);
    count(counter::EVENTS_SENT);
}
