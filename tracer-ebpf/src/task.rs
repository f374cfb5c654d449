//! Thread lifecycle: creation (clone, clone3, fork, vfork) with the creator's user stack, exit,
//! and name changes.
//!
//! The creation stack is taken at the syscall's exit in the creator (its user stack is the same
//! as at entry), only when a child was created: creations are rare, so ~1.3 us each is fine.
//! `sched_process_fork` is not needed: the creator's `sys_exit_clone*` already names the child
//! (Go's raw clone included), and tells thread from process by the clone flags.
use aya_ebpf::{
    helpers::bpf_probe_read_user,
    macros::{map, tracepoint, uprobe},
    maps::{HashMap, LruHashMap},
    programs::{ProbeContext, TracePointContext},
};
use tracer_common::{
    counter, native_call, EventKind, ThreadExit, ThreadRename, CREATION_BUDGET_SITES,
    CREATION_STACKS_PER_SITE_PER_S,
};

use crate::calls::{begin, finish, now_ns, send, user_stack};
use crate::syscall::Syscall;
use crate::{count, emit, slots, target_thread};

/// `struct clone_args` starts with `u64 flags`.
#[inline(always)]
fn clone3_flags(uargs: u64) -> u64 {
    // SAFETY: bpf_probe_read_user validates the user pointer.
    unsafe { bpf_probe_read_user(uargs as *const u64) }.unwrap_or(0)
}

#[inline(always)]
pub fn enter(call: u32, flags: u64) -> u32 {
    let Some((tgid, tid)) = target_thread() else {
        return 0;
    };
    begin(tgid, tid, call, [flags, 0, 0, 0]);
    0
}

/// Creation stacks taken by the pthread_create uprobe, by tid, for the clone that follows.
#[map(name = "CREATE_SITES")]
static CREATE_SITES: HashMap<u32, i32> = HashMap::with_max_entries(4096, 0);

/// Entry of libc's `pthread_create`. glibc itself is built without frame pointers, so the
/// kernel's frame-pointer walk from inside `clone3` yields garbage beyond the first frame; here,
/// at the entry, the walk starts from the caller's frame pointer. The one frame it skips (the
/// caller itself, whose return address is at the stack pointer) is recovered by userspace from
/// the stack top sent with every user stack.
#[uprobe]
pub fn pthread_create_entry(ctx: ProbeContext) -> u32 {
    let Some((_, tid)) = target_thread() else {
        return 0;
    };
    let stack = user_stack(&ctx);
    let _ = CREATE_SITES.insert(tid, stack, 0);
    0
}

/// The child each creator's clone made, by creator tid, as leaktrace numbers it: clone returns
/// the child's id in the creator's pid namespace (kernel/fork.c `kernel_clone`: `pid_vnr`), which
/// in a container is not the id its events carry.
#[map(name = "NEW_TASKS")]
static NEW_TASKS: HashMap<u32, u32> = HashMap::with_max_entries(4096, 0);

/// Where, above the user stack pointer at a creating syscall, the return address into the code
/// that called the C library's creating function lies, by the user ip after that syscall (one
/// entry per syscall site: pthread_create's clone3, fork, ...), in bytes. Userspace learns it
/// from the first creation stack it unwinds at that site (`collect::creation_slots`): the C
/// library's frames between that caller and the syscall have fixed sizes.
#[map(name = "CREATION_CALLER_SLOTS")]
static CREATION_CALLER_SLOTS: HashMap<u64, u64> = HashMap::with_max_entries(256, 0);

/// Creator stacks taken this second per creation site (`--detail low`): the value is the second
/// (CLOCK_MONOTONIC) in the high 32 bits and the stacks taken in it in the low 32 bits.
#[map(name = "CREATION_BUDGET")]
static CREATION_BUDGET: LruHashMap<u64, u64> =
    LruHashMap::with_max_entries(CREATION_BUDGET_SITES, 0);

/// Whether this creation may take the creator's stack: each creation site (the syscall's user
/// ip and, once userspace has learned where it lies, the caller of the C library's creating
/// function) has [`CREATION_STACKS_PER_SITE_PER_S`]. A stack with its stack top costs ~1-2 us
/// here plus the userspace unwind; a site creating thousands of threads a second pays that a
/// few times a second, and a site leaking a thread now and then keeps every stack. The
/// per-site key, not one global bucket, is what keeps a leak's stacks under a storm elsewhere:
/// a global bucket would give the leak a share proportional to its (small) rate.
#[inline(always)]
fn creation_stack_allowed() -> bool {
    let Some((ip, sp)) = crate::stacktop::user_ip_sp() else {
        return true;
    };
    let mut site = ip;
    // SAFETY: the value is copied out at once.
    if let Some(&slot) = unsafe { CREATION_CALLER_SLOTS.get(ip) } {
        // SAFETY: bpf_probe_read_user validates the user pointer.
        let caller = unsafe { bpf_probe_read_user(sp.wrapping_add(slot) as *const u64) };
        site = ip ^ caller.unwrap_or(0).rotate_left(17);
    }
    let second = now_ns() / 1_000_000_000;
    match CREATION_BUDGET.get_ptr_mut(site) {
        // SAFETY: the map value stays valid for the program's run; racing creators of one site
        // may lose an update, which at worst lets a second take a stack or two more.
        Some(entry) => unsafe {
            if *entry >> 32 != second {
                *entry = (second << 32) | 1;
                return true;
            }
            if *entry & 0xffff_ffff >= CREATION_STACKS_PER_SITE_PER_S {
                return false;
            }
            *entry += 1;
            true
        },
        None => {
            let _ = CREATION_BUDGET.insert(site, (second << 32) | 1, 0);
            true
        }
    }
}

/// Fires in the creator inside clone/fork (kernel/fork.c `copy_process`), with the child's id in
/// the initial pid namespace. In the low-cost mode it sends the creation itself.
#[tracepoint(category = "task", name = "task_newtask")]
pub fn task_newtask(ctx: TracePointContext) -> u32 {
    let Some((tgid, tid)) = target_thread() else {
        return 0;
    };
    // task_newtask: pid at 8, comm[16] at 12, clone_flags at 32.
    // SAFETY: reading a fixed slot of the tracepoint record.
    let child = unsafe { ctx.read_at::<i32>(8) }.unwrap_or(0);
    if child <= 0 {
        return 0;
    }
    if !crate::creations_at_newtask() {
        let _ = NEW_TASKS.insert(tid, child as u32, 0);
        return 0;
    }
    // The creation itself, sent from here: this runs in the creator (copy_process, inside its
    // clone/fork), so the user stack is the creating thread's, as at the syscall's exit; the
    // child is the initial namespace's id already.
    // SAFETY: reading a fixed slot of the tracepoint record.
    let flags = unsafe { ctx.read_at::<u64>(32) }.unwrap_or(0);
    let pending = tracer_common::PendingCall {
        start_ns: now_ns(),
        args: [flags, 0, 0, 0],
        tgid,
        call: native_call::CLONE,
    };
    count(counter::THREADS_CREATED);
    // SAFETY: the value is copied out before the entry is removed.
    match unsafe { CREATE_SITES.get(tid) }.copied() {
        Some(stack) => {
            let _ = CREATE_SITES.remove(tid);
            send(tid, pending, i64::from(child), 0, stack);
        }
        None if creation_stack_allowed() => {
            let stack = user_stack(&ctx);
            // From clone3 up to pthread_create's caller is more than one top (see
            // STACK_TOP_WORDS): the next 512 bytes follow.
            crate::stacktop::send_from(stack, tracer_common::STACK_TOP_WORDS);
            send(tid, pending, i64::from(child), 0, stack)
        }
        // Over the site's budget: the creation still counts and is sent, without a stack.
        None => {
            count(counter::CREATION_STACKS_SKIPPED);
            send(tid, pending, i64::from(child), 0, -1)
        }
    }
    0
}

#[inline(always)]
pub fn exit<S: Syscall>(s: &S, call: u32) -> u32 {
    let Some((_, tid)) = target_thread() else {
        return 0;
    };
    // The new thread also returns from clone (with 0) and has no pending entry.
    let Some(pending) = finish(tid, call) else {
        return 0;
    };
    // SAFETY: the value is copied out before the entry is removed.
    let global_child = unsafe { NEW_TASKS.get(tid) }.copied();
    if global_child.is_some() {
        let _ = NEW_TASKS.remove(tid);
    }
    let child = s.ret();
    if child <= 0 {
        return 0;
    }
    // Without task_newtask (not attached), the namespace's id is all there is.
    let child = global_child.map_or(child, i64::from);
    count(counter::THREADS_CREATED);
    // SAFETY: the value is copied out before the entry is removed.
    match unsafe { CREATE_SITES.get(tid) }.copied() {
        Some(stack) => {
            let _ = CREATE_SITES.remove(tid);
            send(tid, pending, child, 0, stack);
        }
        None => send(tid, pending, child, 0, user_stack(s.ctx())),
    }
    0
}

#[tracepoint(category = "syscalls", name = "sys_enter_clone")]
pub fn sys_enter_clone(ctx: TracePointContext) -> u32 {
    enter(native_call::CLONE, ctx.arg(0))
}

#[tracepoint(category = "syscalls", name = "sys_exit_clone")]
pub fn sys_exit_clone(ctx: TracePointContext) -> u32 {
    exit(&ctx, native_call::CLONE)
}

#[tracepoint(category = "syscalls", name = "sys_enter_clone3")]
pub fn sys_enter_clone3(ctx: TracePointContext) -> u32 {
    enter_clone3(&ctx)
}

#[inline(always)]
pub fn enter_clone3<S: Syscall>(s: &S) -> u32 {
    if target_thread().is_none() {
        return 0;
    }
    enter(native_call::CLONE3, clone3_flags(s.arg(0)))
}

#[tracepoint(category = "syscalls", name = "sys_exit_clone3")]
pub fn sys_exit_clone3(ctx: TracePointContext) -> u32 {
    exit(&ctx, native_call::CLONE3)
}

#[tracepoint(category = "syscalls", name = "sys_enter_fork")]
pub fn sys_enter_fork(_ctx: TracePointContext) -> u32 {
    enter(native_call::FORK, 0)
}

#[tracepoint(category = "syscalls", name = "sys_exit_fork")]
pub fn sys_exit_fork(ctx: TracePointContext) -> u32 {
    exit(&ctx, native_call::FORK)
}

#[tracepoint(category = "syscalls", name = "sys_enter_vfork")]
pub fn sys_enter_vfork(_ctx: TracePointContext) -> u32 {
    enter(native_call::VFORK, 0)
}

#[tracepoint(category = "syscalls", name = "sys_exit_vfork")]
pub fn sys_exit_vfork(ctx: TracePointContext) -> u32 {
    exit(&ctx, native_call::VFORK)
}

/// Fires in the exiting thread itself, once per thread.
#[tracepoint(category = "sched", name = "sched_process_exit")]
pub fn sched_process_exit(ctx: TracePointContext) -> u32 {
    let Some((_, tid)) = target_thread() else {
        return 0;
    };
    count(counter::THREADS_EXITED);
    // A thread that exits inside a call (killed in a futex wait) never returns from it.
    slots::release(&crate::futex::PENDING_WAITS, tid);
    slots::release(&crate::calls::PENDING_CALLS, tid);
    // sched_process_exit: comm[16] at 8, pid at 24, prio at 28, group_dead (bool) at 32.
    // SAFETY: reading a fixed slot of the tracepoint record.
    let group_dead = unsafe { ctx.read_at::<u8>(32) }.unwrap_or(0) as u32;
    emit(ThreadExit {
        kind: EventKind::ThreadExit as u32,
        tid,
        at_ns: now_ns(),
        group_dead,
        _pad: 0,
    });
    0
}

/// prctl(PR_SET_NAME) and writes to /proc/self/task/TID/comm (pthread_setname_np).
#[tracepoint(category = "task", name = "task_rename")]
pub fn task_rename(ctx: TracePointContext) -> u32 {
    if target_thread().is_none() {
        return 0;
    }
    // task_rename: pid at 8, oldcomm[16] at 12, newcomm[16] at 28.
    // SAFETY: reading fixed slots of the tracepoint record.
    let (tid, comm) = unsafe {
        (
            ctx.read_at::<i32>(8).unwrap_or(0) as u32,
            ctx.read_at::<[u8; 16]>(28).unwrap_or([0; 16]),
        )
    };
    emit(ThreadRename {
        kind: EventKind::ThreadRename as u32,
        tid,
        at_ns: now_ns(),
        comm,
    });
    0
}
