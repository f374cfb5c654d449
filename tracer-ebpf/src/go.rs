//! Goroutine creation and timer starts: uprobes in `runtime.newproc` (every `go` statement) and
//! in `time.newTimer` (Go 1.23+) or `runtime.addtimer` (before).
//!
//! Placed by userspace after the stack-check prologue (`cmp rsp, [r14+16]; jbe`), never on the
//! entry instruction (single-stepping it costs ~11 us a hit) and never as a uretprobe (Go's stack
//! copying cannot cope with a rewritten return address). At that point `[rsp]` is the return
//! address into the function that ran the `go` statement and rbp is still that function's frame
//! pointer. Userspace attaches it only in short windows, and each window has a budget of stack
//! captures: a spawn storm pays the trap for a fraction of the time and no stacks beyond the
//! budget.
use aya_ebpf::{
    bindings::BPF_F_USER_STACK,
    helpers::bpf_probe_read_user,
    macros::{map, uprobe},
    maps::Array,
    programs::{tracing::StackIdContext, ProbeContext},
};
use tracer_common::{counter, go_budget, go_layout, EventKind, GoCreation, GoTimerStart};

use crate::{count, emit, log, target_thread, STACKS};

/// Stack captures left in the current window (userspace refills it when a window opens).
#[map(name = "GO_STACK_BUDGET")]
static GO_STACK_BUDGET: Array<u64> = Array::with_max_entries(go_budget::COUNT, 0);

/// Offsets the probes read at ([`go_layout`]); userspace fills them in before the first window.
#[map(name = "GO_LAYOUT")]
static GO_LAYOUT: Array<u64> = Array::with_max_entries(go_layout::COUNT, 0);

#[inline(always)]
fn layout(slot: u32) -> u64 {
    GO_LAYOUT.get(slot).copied().unwrap_or(0)
}

/// The u64 at `base + offset` in the target's memory, 0 when `base` or `offset` is 0 or the read
/// fails (a torn or swapped-out page: the record goes out without the link, never the probe's
/// target harmed).
#[inline(always)]
fn word_at(base: u64, offset: u64) -> u64 {
    if base == 0 {
        return 0;
    }
    // SAFETY: bpf_probe_read_user validates the user pointer.
    unsafe { bpf_probe_read_user((base.wrapping_add(offset)) as *const u64) }.unwrap_or(0)
}

/// The u64 at `base + offset` when the layout knows `offset` (non-zero).
#[inline(always)]
fn field(base: u64, offset: u64) -> u64 {
    if offset == 0 {
        return 0;
    }
    word_at(base, offset)
}

/// Takes one stack capture from budget `slot`; false when the window's budget is spent.
/// `what` names the probe's hits for the log line said when the budget runs out.
#[inline(always)]
fn spend(slot: u32, what: &str) -> bool {
    let Some(budget) = GO_STACK_BUDGET.get_ptr_mut(slot) else {
        return false;
    };
    // SAFETY: the array element stays valid for the program's run. Concurrent callers may
    // race on the decrement, which at worst lets a window take a few stacks more.
    unsafe {
        if *budget == 0 {
            return false;
        }
        *budget -= 1;
        if *budget == 0 && log::enabled() {
            log::info!(
                &(),
                "Go probe window: the stack budget for {} is spent after {} hits of the window; \
                 the rest of the window's hits are counted without a stack",
                what,
                window_hits()
            );
        }
    }
    true
}

/// Hits of both Go probes in the open window (counted only with `--debug-probes`).
#[inline(always)]
fn window_hits() -> u64 {
    GO_STACK_BUDGET
        .get(go_budget::WINDOW_HITS)
        .copied()
        .unwrap_or(0)
}

/// Counts a hit of the open window (only with `--debug-probes`) and says when the window's hits
/// pass the storm bound, at which userspace closes it (`collect::gocreation`).
#[inline(always)]
fn window_hit(what: &str) {
    let Some(hits) = GO_STACK_BUDGET.get_ptr_mut(go_budget::WINDOW_HITS) else {
        return;
    };
    // SAFETY: as in `spend`. Racing CPUs may lose an increment or both see the bound passed
    // (the line said twice); the count that decides is userspace's, from the counters.
    let hits = unsafe {
        *hits += 1;
        *hits
    };
    if hits == go_budget::STORM_HITS + 1 {
        log::info!(
            &(),
            "Go probe window: {} hits in this window ({} at the last), more than {}: a storm; \
             leaktrace closes the window and opens the next ones less often",
            hits,
            what,
            go_budget::STORM_HITS
        );
    }
}

/// The caller's return address (at [rsp]: the probe is before the callee pushes its frame)
/// and the user stack id.
#[inline(always)]
fn caller_and_stack(ctx: &ProbeContext) -> Option<(u64, i32)> {
    // SAFETY: ctx.regs points at the probed thread's saved registers for this program's run.
    let sp = unsafe { (*ctx.regs).rsp };
    // SAFETY: bpf_probe_read_user validates the user pointer; a bad one is an error, not a fault.
    let caller_pc = unsafe { bpf_probe_read_user(sp as *const u64) }.ok()?;
    let stack_id = match ctx.get_stackid(&STACKS, BPF_F_USER_STACK as u64) {
        Ok(id) => id as i32,
        Err(_) => {
            count(counter::STACK_ERRORS);
            -1
        }
    };
    Some((caller_pc, stack_id))
}

#[uprobe]
pub fn go_timer_start(ctx: ProbeContext) -> u32 {
    let Some((_, tid)) = target_thread() else {
        return 0;
    };
    count(counter::GO_TIMER_STARTS);
    if log::enabled() {
        window_hit("timer starts");
    }
    if !spend(go_budget::TIMERS, "timer starts") {
        return 0;
    }
    let Some((caller_pc, stack_id)) = caller_and_stack(&ctx) else {
        return 0;
    };
    // SAFETY: the registers of the probed thread.
    let (rax, rcx, rsi) = unsafe { ((*ctx.regs).rax, (*ctx.regs).rcx, (*ctx.regs).rsi) };
    // Go 1.23+ `newTimer(when, period, f, arg, c)`: f in RCX, arg's data word in RSI (Go's
    // register ABI: RAX, RBX, RCX, RDI, RSI, ...). Before: `addtimer(t)`, t in RAX, f and arg
    // inside the timer.
    let (f, arg_data) = match layout(go_layout::TIMER_F) {
        0 => (rcx, rsi),
        f_offset => (
            word_at(rax, f_offset),
            field(rax, layout(go_layout::TIMER_ARG_DATA)),
        ),
    };
    let sent = emit(GoTimerStart {
        kind: EventKind::GoTimerStart as u32,
        tid,
        caller_pc,
        rax,
        rsi,
        stack_id,
        _pad: 0,
        func_pc: word_at(f, 0),
        arg_pc: word_at(arg_data, 0),
    });
    if sent {
        count(counter::GO_TIMER_STACKS);
    }
    0
}

#[uprobe]
pub fn go_newproc(ctx: ProbeContext) -> u32 {
    let Some((_, tid)) = target_thread() else {
        return 0;
    };
    count(counter::GO_CREATIONS);
    if log::enabled() {
        window_hit("goroutine creations");
    }
    if !spend(go_budget::GOROUTINES, "goroutine creations") {
        return 0;
    }
    let Some((go_pc, stack_id)) = caller_and_stack(&ctx) else {
        return 0;
    };
    // The creator's own g: Go's register ABI keeps the current g in R14, and the probe sits
    // after newproc's stack check, which just used it.
    // SAFETY: the registers of the probed thread.
    let g = unsafe { (*ctx.regs).r14 };
    let sent = emit(GoCreation {
        kind: EventKind::GoCreation as u32,
        tid,
        go_pc,
        stack_id,
        _pad: 0,
        creator_goid: field(g, layout(go_layout::G_GOID)),
        creator_gopc: field(g, layout(go_layout::G_GOPC)),
    });
    if sent {
        count(counter::GO_CREATION_STACKS);
    }
    0
}
