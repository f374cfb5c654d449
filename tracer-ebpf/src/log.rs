//! Log lines from the probes (aya-log), for what a counter cannot say: why a Go probe window
//! is closing (a storm of hits, its stack budget spent: the numbers), the first record of each
//! kind the ring buffer had no room for (its kind and size), the first slot collision (which
//! threads).
//!
//! Off unless asked for (`--debug-probes`): [`enabled`] reads a read-only global set at load
//! time, so the verifier knows its value and drops the logging code of every program when it
//! is off (the hot path does not even test it then); aya-log's own level (`AYA_LOG_LEVEL`) is
//! set to match.
use aya_ebpf::{macros::map, maps::Array};
pub use aya_log_ebpf::{info, warn};
use tracer_common::{EventKind, THREAD_SLOTS};

/// Non-zero: the probes log (`--debug-probes`). Set by userspace before load; read-only.
#[unsafe(no_mangle)]
static DEBUG_PROBES: u32 = 0;

/// Lines said once per load: one slot per record kind ("ring buffer full", indexed by the
/// `EventKind` value), and [`SLOT_COLLISION`].
#[map(name = "LOG_ONCE")]
static LOG_ONCE: Array<u32> = Array::with_max_entries(ONCE_SLOTS, 0);

const ONCE_SLOTS: u32 = 64;
/// Kind 0 is no record kind.
pub const SLOT_COLLISION: u32 = 0;

/// Whether the probes log.
#[inline(always)]
pub fn enabled() -> bool {
    // SAFETY: as for TARGET_TGID (main.rs).
    unsafe { core::ptr::read_volatile(&DEBUG_PROBES) != 0 }
}

/// True the first time `slot` is asked for after load. Two CPUs asking at once may both get
/// true (a line said twice): a plain read and write, as atomics that return a value need a
/// newer BPF instruction set than the one built for.
#[inline(always)]
pub fn first(slot: u32) -> bool {
    let Some(said) = LOG_ONCE.get_ptr_mut(slot) else {
        return false;
    };
    // SAFETY: an array element stays valid for the program's run.
    unsafe {
        if *said != 0 {
            return false;
        }
        *said = 1;
    }
    true
}

/// The name of a record kind (`tracer_common::EventKind`) for a log line.
#[inline(always)]
pub fn kind_name(kind: u32) -> &'static str {
    match EventKind::try_from(kind) {
        Ok(EventKind::WaitDone) => "WaitDone",
        Ok(EventKind::UserStackTop) => "UserStackTop",
        Ok(EventKind::CallDone) => "CallDone",
        Ok(EventKind::ThreadExit) => "ThreadExit",
        Ok(EventKind::ThreadRename) => "ThreadRename",
        Ok(EventKind::GoCreation) => "GoCreation",
        Ok(EventKind::GoTimerStart) => "GoTimerStart",
        Err(_) => "unknown",
    }
}

/// The ring buffer had no room for `record` (counted as lost by the caller): says so the first
/// time for its kind. Every record starts with its kind (`tracer-common`'s `kind: u32`).
#[inline(always)]
pub fn ring_buffer_full<T>(record: &T) {
    // SAFETY: every record type is `#[repr(C)]` with a leading `kind: u32`, so its first four
    // bytes are its kind.
    let kind = unsafe { core::ptr::read_unaligned((record as *const T).cast::<u32>()) };
    if first(kind) {
        warn!(
            &(),
            "ring buffer full: a {} record (kind {}, {} bytes) could not be sent; this is the \
             first of its kind, later ones are only counted as lost",
            kind_name(kind),
            kind,
            size_of::<T>() as u64
        );
    }
}

/// Thread `tid` found its slot (`slot`) held by thread `holder`'s call: said for the first
/// collision only (each is counted).
#[inline(always)]
pub fn slot_collision(slot: u32, tid: u32, holder: u32) {
    if first(SLOT_COLLISION) {
        warn!(
            &(),
            "slot collision: thread {} found slot {} held by thread {} (tids equal modulo {}); \
             its call is counted as untracked; this is the first collision, later ones are only \
             counted",
            tid,
            slot,
            holder,
            THREAD_SLOTS
        );
    }
}
