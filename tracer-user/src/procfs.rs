//! What /proc says about the target: its threads, what each is blocked in, kernel stacks, and the
//! words of memory that name a lock's owner. Read-only: nothing here writes to or stops the
//! target.
pub mod fds;
pub mod root;

use std::path::PathBuf;

use ::procfs::process::{Process, Status};
use ::procfs::FromRead as _;
use anyhow::{bail, Result};
use tracer_common::futex_op;

use crate::memory::Memory;
use crate::model::Frame;
use crate::unwind::{parse_syscall_line, SyscallState};

const SYS_FUTEX: i64 = libc::SYS_futex;
const SYS_FUTEX_WAITV: i64 = 449;
const SYS_FUTEX_WAIT: i64 = 455;
/// The owner tid bits of a PI futex word (linux/futex.h FUTEX_TID_MASK).
const FUTEX_TID_MASK: u32 = 0x3fff_ffff;
/// Offset of `__owner` in glibc's `struct __pthread_mutex_s` on x86_64 (after `__lock` and
/// `__count`), stable since glibc 2.x: the futex word a mutex waiter sleeps on is `__lock`.
const GLIBC_MUTEX_OWNER_OFFSET: u64 = 8;

fn proc_path(pid: u32) -> PathBuf {
    PathBuf::from(format!("/proc/{pid}"))
}

/// The `procfs` crate's view of process `pid`.
fn process(pid: u32) -> Option<Process> {
    Process::new(i32::try_from(pid).ok()?).ok()
}

/// Single-letter process state from /proc/PID/stat, or None when the process is gone.
fn state(pid: u32) -> Option<char> {
    Some(process(pid)?.stat().ok()?.state)
}

/// True when the process no longer runs: gone, or a zombie waiting to be reaped.
pub fn is_gone(pid: u32) -> bool {
    !matches!(state(pid), Some(s) if s != 'Z' && s != 'X')
}

pub fn check_exists(pid: u32) -> Result<()> {
    if is_gone(pid) {
        bail!("PID {pid} does not exist (or has already exited)");
    }
    Ok(())
}

/// Own read rather than the crate's: its `stat().comm` parses the whole stat line for it.
pub fn comm(pid: u32) -> String {
    read_trimmed(proc_path(pid).join("comm"))
}

pub fn exe(pid: u32) -> String {
    process(pid)
        .and_then(|p| p.exe().ok())
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Own read: the crate reads a task's comm only through its whole stat line.
pub fn thread_name(pid: u32, tid: u32) -> String {
    read_trimmed(proc_path(pid).join(format!("task/{tid}/comm")))
}

fn read_trimmed(path: PathBuf) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim_end().to_string())
        .unwrap_or_default()
}

/// The target's thread ids, sorted. Own read of /proc/PID/task: the crate's `tasks()` opens a
/// directory per task, and a scan (every 500 ms, thousands of threads in a leak) needs only ids.
pub fn threads(pid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir(proc_path(pid).join("task")) else {
        return Vec::new();
    };
    let mut tids: Vec<u32> = entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    tids.sort_unstable();
    tids
}

/// What thread `tid` is blocked in, from /proc/PID/task/TID/syscall (the crate does not read it).
pub fn syscall_state(pid: u32, tid: u32) -> Option<SyscallState> {
    let line = std::fs::read_to_string(proc_path(pid).join(format!("task/{tid}/syscall"))).ok()?;
    parse_syscall_line(&line)
}

/// How many times the thread has left a CPU: `voluntary_ctxt_switches` +
/// `nonvoluntary_ctxt_switches` of /proc/PID/task/TID/status (fs/proc/array.c
/// `task_context_switch_counts`, counted in kernel/sched/core.c `__schedule`). A thread seen in
/// the same syscall at two looks with the same count did not run in between: nothing woke it.
///
/// The crate's `Status` parser on the file directly: `Process::task_from_tid` would first open
/// /proc/PID and the task's directory, and this runs for every thread in a syscall at every
/// scan (the parse alone already costs about 1.5x the old line search: ~80 vs ~50 µs a call
/// measured on a loaded 2-core machine).
pub fn context_switches(pid: u32, tid: u32) -> Option<u64> {
    let status = Status::from_file(proc_path(pid).join(format!("task/{tid}/status"))).ok()?;
    status
        .voluntary_ctxt_switches?
        .checked_add(status.nonvoluntary_ctxt_switches?)
}

/// Kernel functions of a blocked thread, innermost first, from /proc/PID/task/TID/stack
/// (lines like `[<0>] futex_wait_queue+0x6c/0xb0`; the crate does not read it).
pub fn kernel_stack(pid: u32, tid: u32) -> Vec<String> {
    std::fs::read_to_string(proc_path(pid).join(format!("task/{tid}/stack")))
        .unwrap_or_default()
        .lines()
        .filter_map(|line| line.split_once("] ").map(|(_, f)| f.to_string()))
        .collect()
}

/// A futex wait found by looking at a thread's current syscall.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FutexWaitState {
    pub futex_addr: u64,
    pub op: u32,
    pub has_timeout: bool,
    pub regs: SyscallState,
}

/// The futex wait a thread is in right now, if any.
pub(crate) fn futex_wait_state(
    pid: u32,
    tid: u32,
    memory: Option<&Memory>,
) -> Option<FutexWaitState> {
    let regs = syscall_state(pid, tid)?;
    let (futex_addr, op, has_timeout) = match regs.nr {
        SYS_FUTEX => {
            let cmd = regs.args[1] as u32 & futex_op::CMD_MASK;
            if !futex_op::is_wait(cmd) {
                return None;
            }
            (regs.args[0], cmd, regs.args[3] != 0)
        }
        SYS_FUTEX_WAIT => (regs.args[0], futex_op::WAIT, regs.args[4] != 0),
        SYS_FUTEX_WAITV => {
            // struct futex_waitv { u64 val; u64 uaddr; ... }: the first word waited on.
            let uaddr = memory?.read_u64(regs.args[0].wrapping_add(8)).ok()?;
            (uaddr, futex_op::WAIT, regs.args[3] != 0)
        }
        _ => return None,
    };
    Some(FutexWaitState {
        futex_addr,
        op,
        has_timeout,
        regs,
    })
}

/// Which other thread a blocked thread depends on, read from the futex word's memory.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WaitsOn {
    /// Holds the lock: a PI futex word holds its owner's tid; a glibc mutex keeps `__owner`
    /// next to its futex word.
    pub lock_owner: Option<u32>,
    /// Is being joined: glibc's pthread_join waits on the joined thread's tid word, which the
    /// kernel clears when that thread exits.
    pub joined: Option<u32>,
}

/// Other futexes (condition variables, Rust's std locks, Go's runtime) name no thread.
pub(crate) fn waits_on(
    memory: &Memory,
    tids: &mut root::NamespaceTids,
    waiter: u32,
    futex_addr: u64,
    op: u32,
    stack: &[Frame],
    target_threads: &[u32],
) -> WaitsOn {
    let is_other_thread =
        |tid: u32| tid != 0 && tid != waiter && target_threads.binary_search(&tid).is_ok();
    let mut read = |addr: u64, mask: u32| {
        let mut word = [0u8; 4];
        memory.read(addr, &mut word).ok()?;
        Some(u32::from_ne_bytes(word) & mask)
            .filter(|&t| t != 0)
            .and_then(|t| tids.host_tid(t))
            .filter(|&t| is_other_thread(t))
    };
    let in_stack = |names: &[&str]| {
        stack
            .iter()
            .take(6)
            .any(|f| names.iter().any(|n| f.function_contains(n)))
    };
    let mut waits = WaitsOn::default();
    if matches!(
        op,
        futex_op::LOCK_PI | futex_op::LOCK_PI2 | futex_op::WAIT_REQUEUE_PI
    ) {
        waits.lock_owner = read(futex_addr, FUTEX_TID_MASK);
    } else if in_stack(&[
        "__lll_lock_wait",
        "pthread_mutex_lock",
        "pthread_mutex_timedlock",
        "pthread_mutex_clocklock",
    ]) {
        waits.lock_owner = read(futex_addr + GLIBC_MUTEX_OWNER_OFFSET, u32::MAX);
    } else if in_stack(&["pthread_join", "pthread_clockjoin", "pthread_timedjoin"]) {
        waits.joined = read(futex_addr, u32::MAX);
    }
    waits
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_switches_of_a_thread_move_when_it_sleeps() {
        let me = std::process::id();
        // SAFETY: gettid has no preconditions.
        let this_thread = unsafe { libc::gettid() } as u32;
        let before = context_switches(me, this_thread).expect("our own count");
        std::thread::sleep(std::time::Duration::from_millis(5));
        let after = context_switches(me, this_thread).expect("our own count");
        assert!(after > before, "{before} -> {after}");
        assert_eq!(context_switches(me, u32::MAX - 1), None);
    }

    #[test]
    fn our_own_process_is_not_gone_and_has_threads() {
        let pid = std::process::id();
        assert!(!is_gone(pid));
        assert!(threads(pid).contains(&pid));
        assert!(check_exists(u32::MAX - 1).is_err());
    }

    #[test]
    fn memory_of_our_own_process_reads_back() {
        let word: u32 = 0xfeed_beef;
        let memory = Memory::open(std::process::id()).unwrap();
        let mut read = [0u8; 4];
        memory.read(&word as *const u32 as u64, &mut read).unwrap();
        assert_eq!(u32::from_ne_bytes(read), 0xfeed_beef);
    }

    #[test]
    fn glibc_mutex_owner_is_read_next_to_the_futex_word() {
        // A fake pthread_mutex_t: __lock = 2 (locked, waiters), __count = 0, __owner = our tid.
        let me = std::process::id();
        let mutex: [u32; 4] = [2, 0, me, 0];
        let memory = Memory::open(me).unwrap();
        let mut tids = root::NamespaceTids::new(me);
        let named = |name: &str| {
            let mut frame = Frame::unknown(1);
            frame.function = Some(name.into());
            frame
        };
        let addr = mutex.as_ptr() as u64;
        let lock = [named("__lll_lock_wait")];
        assert_eq!(
            waits_on(&memory, &mut tids, 1, addr, 0, &lock, &[me]).lock_owner,
            Some(me)
        );
        // Not a mutex wait: no owner is guessed.
        assert_eq!(
            waits_on(&memory, &mut tids, 1, addr, 0, &[Frame::unknown(1)], &[me]),
            WaitsOn::default()
        );
        // An owner that is not a thread of the target is not believed.
        assert_eq!(
            waits_on(&memory, &mut tids, 1, addr, 0, &lock, &[me + 1]).lock_owner,
            None
        );
        // A join waits on the joined thread's tid word.
        let tid_word: u32 = me;
        let join = [
            named("__futex_abstimed_wait_common"),
            named("__pthread_clockjoin_ex"),
        ];
        let joined = waits_on(
            &memory,
            &mut tids,
            1,
            &tid_word as *const u32 as u64,
            0,
            &join,
            &[me],
        );
        assert_eq!(
            joined,
            WaitsOn {
                lock_owner: None,
                joined: Some(me)
            }
        );
    }
}
