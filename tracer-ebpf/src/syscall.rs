//! A syscall's arguments and result, whichever kind of program sees it: a per-syscall
//! tracepoint (`syscalls:sys_enter_*`/`sys_exit_*`, the full mode) reads them from its record,
//! the raw `sys_enter`/`sys_exit` programs of the probe windows (`raw.rs`) from the task's saved
//! user registers. The handlers (futex.rs, epoll.rs, timerfd.rs, task.rs) are written once
//! against [`Syscall`].
use aya_ebpf::{
    helpers::bpf_probe_read_kernel,
    programs::{tracing::StackIdContext, RawTracePointContext, TracePointContext},
};

pub trait Syscall {
    /// The context that stacks are taken from.
    type Ctx: StackIdContext;
    /// Argument `i` (0-5) at entry; 0 when it cannot be read.
    fn arg(&self, i: usize) -> u64;
    /// The return value at exit.
    fn ret(&self) -> i64;
    fn ctx(&self) -> &Self::Ctx;
}

/// The records of `sys_enter_*`: 8 bytes of common header, the syscall number, then one 8-byte
/// slot per argument; of `sys_exit_*`: the header, the number, the return value
/// (/sys/kernel/tracing/events/syscalls/*/format).
impl Syscall for TracePointContext {
    type Ctx = Self;

    #[inline(always)]
    fn arg(&self, i: usize) -> u64 {
        // SAFETY: reading a fixed slot of the tracepoint record; failure reads as 0.
        unsafe { self.read_at::<u64>(16 + 8 * i) }.unwrap_or(0)
    }

    #[inline(always)]
    fn ret(&self) -> i64 {
        // SAFETY: as in `arg`.
        unsafe { self.read_at::<i64>(16) }.unwrap_or(0)
    }

    #[inline(always)]
    fn ctx(&self) -> &Self {
        self
    }
}

/// Offsets in x86_64's `struct pt_regs` (arch/x86/include/asm/ptrace.h) of the syscall
/// arguments (di, si, dx, r10, r8, r9: arch/x86/entry/entry_64.S) and of `orig_ax` (the syscall
/// number, kept there for the exit while `ax` gets the result).
const PT_REGS_ARGS: [usize; 6] = [112, 104, 96, 56, 72, 64];
const PT_REGS_ORIG_AX: usize = 120;

/// A syscall seen by the raw `sys_enter`/`sys_exit` tracepoints (include/trace/events/syscalls.h:
/// `TP_PROTO(struct pt_regs *regs, long id)` and `(struct pt_regs *regs, long ret)`).
pub struct Raw {
    ctx: RawTracePointContext,
    regs: u64,
    ret: i64,
}

impl Raw {
    /// The call entering, and its number.
    #[inline(always)]
    pub fn enter(ctx: RawTracePointContext) -> (Self, i64) {
        let regs: u64 = ctx.arg(0);
        let nr: i64 = ctx.arg(1);
        (Raw { ctx, regs, ret: 0 }, nr)
    }

    /// The call returning, and its number (`orig_ax`: the exit tracepoint is not given it).
    #[inline(always)]
    pub fn exit(ctx: RawTracePointContext) -> (Self, i64) {
        let regs: u64 = ctx.arg(0);
        let ret: i64 = ctx.arg(1);
        let nr = read_reg(regs, PT_REGS_ORIG_AX) as i64;
        (Raw { ctx, regs, ret }, nr)
    }
}

#[inline(always)]
fn read_reg(regs: u64, offset: usize) -> u64 {
    // SAFETY: bpf_probe_read_kernel checks the address; `regs` is the task's own pt_regs.
    unsafe { bpf_probe_read_kernel((regs as usize + offset) as *const u64) }.unwrap_or(0)
}

impl Syscall for Raw {
    type Ctx = RawTracePointContext;

    #[inline(always)]
    fn arg(&self, i: usize) -> u64 {
        match PT_REGS_ARGS.get(i) {
            Some(&offset) => read_reg(self.regs, offset),
            None => 0,
        }
    }

    #[inline(always)]
    fn ret(&self) -> i64 {
        self.ret
    }

    #[inline(always)]
    fn ctx(&self) -> &RawTracePointContext {
        &self.ctx
    }
}
