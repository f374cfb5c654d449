//! Wire types shared by the kernel half (`tracer-ebpf`) and the collector (`tracer-user`).
//!
//! Everything here is plain old data with a fixed `#[repr(C)]` layout: the kernel writes these
//! bytes into maps and the ring buffer, userspace reads them back. Changing a field changes both
//! halves at once, which is why they live in one crate.
#![no_std]

/// Names of the maps and globals, so that both halves agree on them.
pub mod names {
    pub const GO_STACK_BUDGET: &str = "GO_STACK_BUDGET";
    pub const GO_LAYOUT: &str = "GO_LAYOUT";
    pub const GO_NEWPROC: &str = "go_newproc";
    pub const GO_TIMER_START: &str = "go_timer_start";
    pub const PENDING_WAITS: &str = "PENDING_WAITS";
    pub const WATCHED_ADDRS: &str = "WATCHED_ADDRS";
    pub const STACKS: &str = "STACKS";
    pub const EVENTS: &str = "EVENTS";
    pub const COUNTERS: &str = "COUNTERS";
    pub const WAIT_HISTOGRAM: &str = "WAIT_HISTOGRAM";
    pub const TARGET_TGID: &str = "TARGET_TGID";
    pub const LONG_WAIT_NS: &str = "LONG_WAIT_NS";
    pub const CREATIONS_AT_NEWTASK: &str = "CREATIONS_AT_NEWTASK";
    pub const CREATION_BUDGET: &str = "CREATION_BUDGET";
    pub const CREATION_CALLER_SLOTS: &str = "CREATION_CALLER_SLOTS";
    pub const DEBUG_PROBES: &str = "DEBUG_PROBES";
    pub const PENDING_CALLS: &str = "PENDING_CALLS";
    pub const TRACKED_FDS: &str = "TRACKED_FDS";
    pub const EPOLL_STATS: &str = "EPOLL_STATS";
    pub const WINDOW_GROUPS: &str = "WINDOW_GROUPS";
    pub const RAW_SYS_ENTER: &str = "raw_sys_enter";
    pub const RAW_SYS_EXIT: &str = "raw_sys_exit";
}

/// Per-thread slots of calls in progress (futex waits, tracked epoll/timerfd calls): thread
/// `tid` uses slot `tid % THREAD_SLOTS`. An array indexed by tid costs a few nanoseconds where a
/// hash map keyed by tid costs hundreds on every futex call (see README, "Hot path"); two live
/// threads of the target whose tids collide modulo this share a slot, and the second one's call
/// is counted as untracked rather than tracked wrongly.
pub const THREAD_SLOTS: u32 = 65_536;

/// The slot of thread `tid`.
pub const fn thread_slot(tid: u32) -> u32 {
    tid & (THREAD_SLOTS - 1)
}

/// A call in progress of thread `tid`; `active` is 0 once the call returned (or the thread
/// exited).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ThreadSlot<T> {
    pub value: T,
    pub tid: u32,
    pub active: u32,
}

impl<T: Copy> ThreadSlot<T> {
    /// The call of thread `tid`, if this slot holds one.
    pub fn of(&self, tid: u32) -> Option<T> {
        (self.active != 0 && self.tid == tid).then_some(self.value)
    }
}
/// Capacity of the map of futex addresses whose wakes userspace asked the kernel to count.
pub const MAX_WATCHED_ADDRS: u32 = 16_384;
/// Capacity of the stack-trace map (user and kernel stacks of long waits and first wakers).
pub const MAX_STACKS: u32 = 16_384;
/// Ring buffer size in bytes (a power of two, a multiple of the page size).
pub const EVENTS_BYTES: u32 = 16 << 20;
/// log2 buckets of the in-kernel histogram of every completed wait: bucket i holds waits with
/// duration in [2^i, 2^(i+1)) ns; bucket 0 also takes 0 ns.
pub const WAIT_HISTOGRAM_BUCKETS: u32 = 40;

/// The futex entry point a thread was in.
pub mod syscall {
    pub const FUTEX: u32 = 0;
    pub const FUTEX_WAIT: u32 = 1;
    pub const FUTEX_WAITV: u32 = 2;
}

/// `PendingWait::flags` bits.
pub mod wait_flags {
    /// The wait has a timeout (it ends by itself).
    pub const HAS_TIMEOUT: u32 = 1;
    /// The timeout is an absolute deadline rather than a relative duration.
    pub const ABSOLUTE_TIMEOUT: u32 = 2;
}

/// Indices into the per-CPU `COUNTERS` array. Each is summed over CPUs by userspace and shown in
/// every report: nothing is dropped without being counted.
pub mod counter {
    /// Futex waits that entered in the target.
    pub const WAITS_STARTED: u32 = 0;
    /// Futex waits that returned in the target (and were seen entering).
    pub const WAITS_FINISHED: u32 = 1;
    /// Wake calls on a watched address.
    pub const WATCHED_WAKES: u32 = 2;
    /// Events sent on the ring buffer.
    pub const EVENTS_SENT: u32 = 3;
    /// Events lost because the ring buffer was full.
    pub const EVENTS_LOST: u32 = 4;
    /// Waits not tracked because the pending map was full.
    pub const PENDING_MAP_FULL: u32 = 5;
    /// Stack captures that failed (stack map full or collision, or unreadable stack).
    pub const STACK_ERRORS: u32 = 6;
    // Threads, epoll and timerfd (native I/O). Indices from 16 leave room for other subsystems.
    /// Thread creations (clone, clone3, fork, vfork) seen returning in the creator.
    pub const THREADS_CREATED: u32 = 16;
    /// Thread exits (sched_process_exit) in the target.
    pub const THREADS_EXITED: u32 = 17;
    /// Calls not tracked because the pending-call map was full.
    pub const PENDING_CALLS_FULL: u32 = 18;
    /// Timerfds/epoll fds not tracked because their fd number is beyond the tracked-fd array
    /// (their reads and closes are then not seen).
    pub const TRACKED_FDS_FULL: u32 = 19;
    /// epoll_wait returns not counted because the per-set statistics map was full.
    pub const EPOLL_STATS_FULL: u32 = 20;
    /// epoll waits that returned (any result).
    pub const EPOLL_WAITS: u32 = 21;
    /// Reads of tracked timerfds.
    pub const TIMERFD_READS: u32 = 22;
    /// Goroutine creations (`runtime.newproc`) seen while the creation probe was attached.
    pub const GO_CREATIONS: u32 = 24;
    /// ... of which had their creator's stack taken (the rest were over the window's budget).
    pub const GO_CREATION_STACKS: u32 = 25;
    /// Go timers started (`time.newTimer` / `runtime.addtimer`) while their probe was attached.
    pub const GO_TIMER_STARTS: u32 = 26;
    /// ... of which had their creator's stack taken.
    pub const GO_TIMER_STACKS: u32 = 27;
    /// Thread creations sent without the creator's stack in `--detail low`: their creation
    /// site had spent its [`super::CREATION_STACKS_PER_SITE_PER_S`] for that second.
    pub const CREATION_STACKS_SKIPPED: u32 = 28;
    /// The target's syscalls while a `--detail low` probe window was attached (each ran both
    /// window programs past their tgid compare on the traced slow path): what a window costs
    /// the target, which userspace holds against [`super::STORM_CALLS_PER_S`].
    pub const WINDOW_CALLS: u32 = 29;
    pub const COUNT: u32 = 32;
}

/// The target's syscalls a second in a `--detail low` probe window beyond which the window is
/// a storm and closes at once (`collect::windows`): each costs the target ~0.3-0.6 µs while the
/// window programs are attached (`cargo xtask bench`: +1.6 µs an epoll round of 3 syscalls), so
/// 30,000 a second is ~1-2% of a CPU, more than the low mode's whole budget. A busy event loop
/// or server is watched in windows cut at their first check and spaced out (up to a minute).
pub const STORM_CALLS_PER_S: u64 = 30_000;

/// In `--detail low`, the creator stacks taken per creation site (and per syscall site when
/// the caller is not known yet) per second of `CLOCK_MONOTONIC`: a site creating threads all
/// the time pays for this many stacks a second and no more, while a site creating a few threads a
/// second (a leak) keeps all of its stacks. Creations over it are still sent, without a stack.
pub const CREATION_STACKS_PER_SITE_PER_S: u64 = 10;

/// Entries of the per-site stack budget (an LRU map: sites not seen for long are forgotten).
pub const CREATION_BUDGET_SITES: u32 = 1024;

/// Ring buffer record kinds: the first `u32` of every record, each the `kind` field of one
/// record type (written as `EventKind::X as u32`).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// [`WaitDone`].
    WaitDone = 1,
    /// [`UserStackTop`]: sent right before the record that carries the same stack id.
    UserStackTop = 8,
    /// [`CallDone`]: a tracked thread/epoll/timerfd call returned (or a close).
    CallDone = 16,
    /// [`ThreadExit`].
    ThreadExit = 17,
    /// [`ThreadRename`].
    ThreadRename = 18,
    /// [`GoCreation`].
    GoCreation = 24,
    /// [`GoTimerStart`].
    GoTimerStart = 25,
}

impl EventKind {
    /// Every kind, for tests and tables.
    pub const ALL: [EventKind; 7] = [
        EventKind::WaitDone,
        EventKind::UserStackTop,
        EventKind::CallDone,
        EventKind::ThreadExit,
        EventKind::ThreadRename,
        EventKind::GoCreation,
        EventKind::GoTimerStart,
    ];

    /// The size of this kind's record (its struct, which the kernel half sends whole).
    pub const fn record_size(self) -> usize {
        match self {
            EventKind::WaitDone => size_of::<WaitDone>(),
            EventKind::UserStackTop => size_of::<UserStackTop>(),
            EventKind::CallDone => size_of::<CallDone>(),
            EventKind::ThreadExit => size_of::<ThreadExit>(),
            EventKind::ThreadRename => size_of::<ThreadRename>(),
            EventKind::GoCreation => size_of::<GoCreation>(),
            EventKind::GoTimerStart => size_of::<GoTimerStart>(),
        }
    }
}

impl TryFrom<u32> for EventKind {
    /// The unknown value.
    type Error = u32;

    fn try_from(value: u32) -> Result<Self, u32> {
        Ok(match value {
            1 => EventKind::WaitDone,
            8 => EventKind::UserStackTop,
            16 => EventKind::CallDone,
            17 => EventKind::ThreadExit,
            18 => EventKind::ThreadRename,
            24 => EventKind::GoCreation,
            25 => EventKind::GoTimerStart,
            other => return Err(other),
        })
    }
}

// The record layouts both halves compile: a field added, removed or reordered changes a size
// here first, and the build says so, instead of the collector misreading records.
const _: () = assert!(size_of::<PendingWait>() == 40);
const _: () = assert!(size_of::<WaitDone>() == 72);
const _: () = assert!(size_of::<PendingCall>() == 48);
const _: () = assert!(size_of::<CallDone>() == 88);
const _: () = assert!(size_of::<ThreadExit>() == 24);
const _: () = assert!(size_of::<ThreadRename>() == 32);
const _: () = assert!(size_of::<UserStackTop>() == 32 + 8 * STACK_TOP_WORDS);
const _: () = assert!(size_of::<GoCreation>() == 40);
const _: () = assert!(size_of::<GoTimerStart>() == 56);

/// Calls tracked for threads, epoll and timerfds (`PendingCall::call`).
pub mod native_call {
    pub const CLONE: u32 = 1;
    pub const CLONE3: u32 = 2;
    pub const FORK: u32 = 3;
    pub const VFORK: u32 = 4;
    pub const EPOLL_CREATE: u32 = 5;
    pub const EPOLL_CTL: u32 = 6;
    /// epoll_wait, epoll_pwait and epoll_pwait2 (`args[3]` says which, see [`epoll_variant`]).
    pub const EPOLL_WAIT: u32 = 7;
    pub const TIMERFD_CREATE: u32 = 8;
    pub const TIMERFD_SETTIME: u32 = 9;
    pub const TIMERFD_GETTIME: u32 = 10;
    /// A `read` on a tracked timerfd (consumes its expirations).
    pub const TIMERFD_READ: u32 = 11;
    /// A `close` of a tracked fd (timerfd or epoll set); sent at entry.
    pub const CLOSE: u32 = 12;
}

pub mod epoll_variant {
    pub const EPOLL_WAIT: u64 = 0;
    pub const EPOLL_PWAIT: u64 = 1;
    pub const EPOLL_PWAIT2: u64 = 2;
}

/// Which syscalls the raw `sys_enter`/`sys_exit` programs of a probe window (`--detail low`)
/// hand to their handlers: bits of the one-entry `WINDOW_GROUPS` array, set by userspace when a
/// window opens, so that narrowing a window is a map update and not an attach.
pub mod window_group {
    /// futex(2).
    pub const FUTEX: u32 = 1 << 0;
    /// futex_wait, futex_waitv, futex_wake, futex_requeue (Linux 6.7+).
    pub const FUTEX2: u32 = 1 << 1;
    /// clone, clone3, fork, vfork (only without `task:task_newtask`).
    pub const THREADS: u32 = 1 << 2;
    /// epoll_create, epoll_create1, epoll_ctl, epoll_wait, epoll_pwait, epoll_pwait2.
    pub const EPOLL: u32 = 1 << 3;
    /// timerfd_create, timerfd_settime, timerfd_gettime, and read and close of tracked fds.
    pub const FDS: u32 = 1 << 4;
}

/// What a tracked fd is (`TRACKED_FDS` value).
pub mod fd_kind {
    pub const TIMERFD: u32 = 1;
    pub const EPOLL: u32 = 2;
}

/// Entries of the tracked-fd array (the kind of each of the target's fds that is a timerfd or an
/// epoll set, indexed by fd): an array lookup costs every `read` and `close` of the target a few
/// nanoseconds where a hash lookup cost ~100. fds at or above this are not tracked (counted).
pub const TRACKED_FD_SLOTS: u32 = 1 << 20;
/// Capacity of the per-epoll-set statistics map.
pub const MAX_EPOLL_SETS: u32 = 16_384;

/// A thread inside a tracked call, keyed by tid in `PENDING_CALLS`. For epoll waits this is also
/// "who is waiting now": userspace reads it like `PENDING_WAITS`.
///
/// `args` by call: clone/clone3/fork/vfork `[flags, 0, 0, 0]`; epoll_create `[flags]`;
/// epoll_ctl `[epfd, op, fd, events]`; epoll_wait `[epfd, maxevents, timeout_ns or u64::MAX
/// for none, variant]`; timerfd_create `[clockid, flags]`; timerfd_settime `[fd, flags,
/// interval_ns, value_ns]`; timerfd_gettime `[fd]`; timerfd read `[fd, buf]`; close `[fd,
/// kind]`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PendingCall {
    pub start_ns: u64,
    pub args: [u64; 4],
    pub tgid: u32,
    /// One of [`native_call`].
    pub call: u32,
}

/// Ring buffer record: a tracked call returned.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CallDone {
    /// [`EventKind::CallDone`].
    pub kind: u32,
    pub tid: u32,
    pub call: PendingCall,
    pub end_ns: u64,
    pub ret: i64,
    /// For a timerfd read: the expiration count read (0 when the read failed).
    pub value: u64,
    /// The caller's user stack (creations and arms only); negative: none.
    pub user_stack_id: i32,
    pub _pad: u32,
}

/// Ring buffer record: a thread of the target exited.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ThreadExit {
    /// [`EventKind::ThreadExit`].
    pub kind: u32,
    pub tid: u32,
    pub at_ns: u64,
    /// The whole process is exiting (last thread).
    pub group_dead: u32,
    pub _pad: u32,
}

/// Ring buffer record: a thread of the target changed its name.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ThreadRename {
    /// [`EventKind::ThreadRename`].
    pub kind: u32,
    pub tid: u32,
    pub at_ns: u64,
    pub comm: [u8; 16],
}

/// Key of `TRACKED_FDS` and `EPOLL_STATS`: an fd in one process.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FdKey {
    pub tgid: u32,
    pub fd: u32,
}

/// What the waits on one epoll set returned since tracing started. The model keeps it as it is.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(serde::Serialize, serde::Deserialize))]
pub struct EpollStats {
    pub waits: u64,
    /// Waits that returned at least one event.
    pub returned_events: u64,
    /// Events returned in total.
    pub events: u64,
    /// Waits that returned 0 (timed out).
    pub timeouts: u64,
    /// Waits that failed (EINTR, ...).
    pub errors: u64,
    pub last_event_ns: u64,
}

/// A thread inside a futex wait, keyed by tid in `PENDING_WAITS`. Removed when the wait returns,
/// so whatever is left at report time is still blocked.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PendingWait {
    /// `bpf_ktime_get_ns` (CLOCK_MONOTONIC) at entry.
    pub start_ns: u64,
    /// The futex word waited on (for `futex_waitv`, the first of the vector).
    pub uaddr: u64,
    /// Timeout in ns when `HAS_TIMEOUT` is set (relative or absolute, see the flags).
    pub timeout_ns: u64,
    /// The thread group (process) id.
    pub tgid: u32,
    /// The futex command (`op & FUTEX_CMD_MASK`) for `futex`; 0 (WAIT) for `futex_wait(v)`.
    pub op: u32,
    /// One of [`syscall`].
    pub syscall: u32,
    /// [`wait_flags`] bits.
    pub flags: u32,
}

/// Key of `WATCHED_ADDRS`: a futex word in one process.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FutexKey {
    pub uaddr: u64,
    pub tgid: u32,
    pub _pad: u32,
}

/// Wakes seen on a watched futex word since userspace started watching it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WakeStats {
    pub wakes: u64,
    pub last_wake_ns: u64,
    /// The first waker seen: its tid and user stack id (-1: none taken).
    pub first_waker_tid: u32,
    pub first_waker_stack_id: i32,
}

/// Ring buffer record: a futex wait in the target returned.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WaitDone {
    /// [`EventKind::WaitDone`].
    pub kind: u32,
    pub tid: u32,
    pub wait: PendingWait,
    pub duration_ns: u64,
    /// The syscall's return value (0 woken, -ETIMEDOUT, -EAGAIN value changed, -EINTR ...).
    pub ret: i64,
    /// Stack ids in `STACKS`, taken only for waits of at least `LONG_WAIT_NS`; negative: none.
    pub user_stack_id: i32,
    pub kernel_stack_id: i32,
}

/// Words of the user stack copied from the stack pointer up in a [`UserStackTop`]: 512 bytes,
/// deeper than the frames of the libc functions that make syscalls (glibc's
/// `__futex_abstimed_wait_common` and `pthread_cond_wait` take under 200 bytes). From clone3
/// up to the caller of `pthread_create` (whose own frame is 336 bytes in glibc 2.36) takes
/// about 600: `--detail low`, which unwinds creations from the clone3 syscall without the
/// pthread_create uprobe, sends a second top, the next 512 bytes, right after the first
/// (its `sp` is the first's plus 512; userspace joins them).
pub const STACK_TOP_WORDS: usize = 64;
/// The copy is made in chunks of this many words, so that a stack top near the end of its
/// mapping still yields the chunks below the end.
pub const STACK_TOP_CHUNK_WORDS: usize = 8;

/// Ring buffer record: the user registers and top of the user stack at the moment the kernel took
/// user stack `stack_id` of thread `tid` with its frame-pointer walk (`perf_callchain_user`,
/// arch/x86/events/core.c). The walk starts at `bp`, so it skips the caller of an innermost
/// function that has not pushed a frame (a libc syscall wrapper, a function at a uprobe on its
/// first instruction); userspace finds that caller with the CFI at the innermost pc and these
/// words. Sent only when a user stack is taken, before the record that carries the stack id.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UserStackTop {
    /// [`EventKind::UserStackTop`].
    pub kind: u32,
    pub tid: u32,
    /// The stack id in `STACKS` these registers belong to.
    pub stack_id: i32,
    /// How many of `words` were read (whole chunks of [`STACK_TOP_CHUNK_WORDS`]).
    pub words_read: u32,
    /// User rsp and rbp (`struct pt_regs` of the task, arch/x86/include/asm/ptrace.h).
    pub sp: u64,
    pub bp: u64,
    /// `words[i]` is the 8 bytes at `sp + 8 * i`.
    pub words: [u64; STACK_TOP_WORDS],
}

/// Ring buffer record: a goroutine was created (a `go` statement ran) and its creator's stack
/// was taken.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GoCreation {
    /// [`EventKind::GoCreation`].
    pub kind: u32,
    pub tid: u32,
    /// The return address of the call to `runtime.newproc`: the `go` statement, and the same
    /// PC the runtime records as the new goroutine's `gopc`.
    pub go_pc: u64,
    /// The creator's user stack in `STACKS`; its first frame is inside `runtime.newproc` and
    /// its second is the creator's caller (the creator has not pushed its frame yet).
    pub stack_id: i32,
    pub _pad: u32,
    /// The creating goroutine's own `goid` and `gopc` (the `go` statement that started it), read
    /// from the current g (R14 in Go's register ABI); 0 when the layout is unknown or the read
    /// failed. Links this creation to the sample of the creator's own creation.
    pub creator_goid: u64,
    pub creator_gopc: u64,
}

/// Slots of `GO_LAYOUT`: offsets the Go probes read at, set by userspace once it knows the
/// target's Go version and layout (before the first probe window opens). 0 means unknown.
pub mod go_layout {
    /// `runtime.g.goid`.
    pub const G_GOID: u32 = 0;
    /// `runtime.g.gopc`.
    pub const G_GOPC: u32 = 1;
    /// Before Go 1.23 (`runtime.addtimer(t *timer)`): `timer.f` and the data word of
    /// `timer.arg`. 0 on Go 1.23+, where `time.newTimer`'s registers hold them (RCX, RSI).
    pub const TIMER_F: u32 = 2;
    pub const TIMER_ARG_DATA: u32 = 3;
    pub const COUNT: u32 = 4;
}

/// Slots of `GO_STACK_BUDGET`: stack captures left in the current probe window.
pub mod go_budget {
    pub const GOROUTINES: u32 = 0;
    pub const TIMERS: u32 = 1;
    /// Not a budget: hits of both Go probes in the open window, counted only with
    /// `--debug-probes` (for its log lines); zeroed when a window opens.
    pub const WINDOW_HITS: u32 = 2;
    pub const COUNT: u32 = 3;
    /// More hits than this in one window (20,000 a second) is a storm: userspace closes the
    /// window at once (`collect::gocreation`), and the probe says so with `--debug-probes`.
    pub const STORM_HITS: u64 = 2_000;
}

/// Ring buffer record: a Go timer was started (`time.newTimer` on Go 1.23+, `runtime.addtimer`
/// before), with the starter's stack.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GoTimerStart {
    /// [`EventKind::GoTimerStart`].
    pub kind: u32,
    pub tid: u32,
    /// The return address into the caller (`time.AfterFunc`, `time.NewTimer`, ...).
    pub caller_pc: u64,
    /// The first two integer argument registers that can identify the timer: RAX (`addtimer`'s
    /// `*timer`) and RSI (`newTimer`'s `arg` data word, which the timer keeps in `arg`).
    /// Userspace knows which one applies to the target's Go version.
    pub rax: u64,
    pub rsi: u64,
    /// As in [`GoCreation::stack_id`].
    pub stack_id: i32,
    pub _pad: u32,
    /// The code PC of the function the timer runs (`time.goFunc` for `AfterFunc`,
    /// `time.sendTime` for channel timers): the first word of the `f` func value.
    pub func_pc: u64,
    /// The first word behind `arg`'s data pointer: for an `AfterFunc` timer (`arg` is the
    /// user's `func()`), the callback's code PC; meaningless for other timers. 0 when unread.
    pub arg_pc: u64,
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all of these are repr(C) structs of integers with explicit padding fields, so every
    // bit pattern is valid and there is no uninitialised padding.
    unsafe impl aya::Pod for super::PendingWait {}
    // SAFETY: both values are 8-byte aligned with sizes that are multiples of 8, and the two
    // u32s after them fill 8 bytes: no padding.
    unsafe impl aya::Pod for super::ThreadSlot<super::PendingWait> {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::ThreadSlot<super::PendingCall> {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::FutexKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::WakeStats {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::WaitDone {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::UserStackTop {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::GoCreation {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::GoTimerStart {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::PendingCall {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::CallDone {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::ThreadExit {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::ThreadRename {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::FdKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::EpollStats {}
}

/// Futex commands (`op & FUTEX_CMD_MASK`), from linux/futex.h.
pub mod futex_op {
    pub const WAIT: u32 = 0;
    pub const WAKE: u32 = 1;
    pub const REQUEUE: u32 = 3;
    pub const CMP_REQUEUE: u32 = 4;
    pub const WAKE_OP: u32 = 5;
    pub const LOCK_PI: u32 = 6;
    pub const UNLOCK_PI: u32 = 7;
    pub const WAIT_BITSET: u32 = 9;
    pub const WAKE_BITSET: u32 = 10;
    pub const WAIT_REQUEUE_PI: u32 = 11;
    pub const CMP_REQUEUE_PI: u32 = 12;
    pub const LOCK_PI2: u32 = 13;
    pub const PRIVATE_FLAG: u32 = 128;
    pub const CLOCK_REALTIME: u32 = 256;
    pub const CMD_MASK: u32 = !(PRIVATE_FLAG | CLOCK_REALTIME);

    /// Commands that can put the caller to sleep on `uaddr`.
    pub const fn is_wait(cmd: u32) -> bool {
        matches!(
            cmd,
            WAIT | LOCK_PI | WAIT_BITSET | WAIT_REQUEUE_PI | LOCK_PI2
        )
    }

    /// Commands that wake (or hand over) waiters of `uaddr`.
    pub const fn is_wake(cmd: u32) -> bool {
        matches!(
            cmd,
            WAKE | REQUEUE | CMP_REQUEUE | WAKE_OP | UNLOCK_PI | WAKE_BITSET | CMP_REQUEUE_PI
        )
    }

    /// The timeout of these commands is an absolute deadline; FUTEX_WAIT's is relative.
    pub const fn has_absolute_timeout(cmd: u32) -> bool {
        matches!(cmd, WAIT_BITSET | LOCK_PI | LOCK_PI2 | WAIT_REQUEUE_PI)
    }

    pub const fn name(cmd: u32) -> &'static str {
        match cmd {
            WAIT => "FUTEX_WAIT",
            WAKE => "FUTEX_WAKE",
            REQUEUE => "FUTEX_REQUEUE",
            CMP_REQUEUE => "FUTEX_CMP_REQUEUE",
            WAKE_OP => "FUTEX_WAKE_OP",
            LOCK_PI => "FUTEX_LOCK_PI",
            UNLOCK_PI => "FUTEX_UNLOCK_PI",
            WAIT_BITSET => "FUTEX_WAIT_BITSET",
            WAKE_BITSET => "FUTEX_WAKE_BITSET",
            WAIT_REQUEUE_PI => "FUTEX_WAIT_REQUEUE_PI",
            CMP_REQUEUE_PI => "FUTEX_CMP_REQUEUE_PI",
            LOCK_PI2 => "FUTEX_LOCK_PI2",
            _ => "FUTEX_?",
        }
    }
}
