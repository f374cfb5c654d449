//! The traced process: an existing PID, or a command leaktrace starts itself.
//!
//! A started command is forked and held before `exec` until the probes are attached, so that
//! nothing it does escapes the trace. It is the only process leaktrace ever signals: it is
//! leaktrace's own child, and it is ended when the trace ends.
use std::ffi::CString;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};

use crate::procfs;

pub struct Target {
    pub pid: u32,
    child: Option<HeldChild>,
}

struct HeldChild {
    /// Writing a byte (or closing) lets the child exec.
    release_fd: libc::c_int,
    /// Becomes readable with the child's errno if exec fails; EOF when exec succeeds.
    exec_error_fd: libc::c_int,
    program: String,
    reaped: bool,
}

impl Target {
    pub fn existing(pid: u32) -> Result<Self> {
        if pid == std::process::id() {
            bail!("refusing to trace leaktrace itself (PID {pid})");
        }
        procfs::check_exists(pid)?;
        Ok(Target { pid, child: None })
    }

    /// Forks `command` and holds it before exec until [`Target::release`].
    pub fn start(command: &[String]) -> Result<Self> {
        let program = command
            .first()
            .ok_or_else(|| anyhow!("no command given after --"))?;
        let argv: Vec<CString> = command
            .iter()
            .map(|a| {
                CString::new(a.as_bytes())
                    .with_context(|| format!("argument {a:?} contains a NUL byte"))
            })
            .collect::<Result<_>>()?;
        let mut argv_ptrs: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
        argv_ptrs.push(std::ptr::null());

        let release = pipe(0)?;
        let exec_error = pipe(libc::O_CLOEXEC)?;
        // SAFETY: after fork the child only calls async-signal-safe functions (read, close,
        // write, execvp, _exit) on data prepared before the fork.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            bail!("fork failed: {}", std::io::Error::last_os_error());
        }
        if pid == 0 {
            // SAFETY: in the child, as above: async-signal-safe calls on the pipes' fds and the
            // argv pointers built before the fork, which outlive the exec.
            unsafe {
                libc::close(release[1]);
                libc::close(exec_error[0]);
                let mut byte = 0u8;
                let _ = libc::read(release[0], (&mut byte as *mut u8).cast(), 1);
                libc::close(release[0]);
                libc::execvp(argv_ptrs[0], argv_ptrs.as_ptr());
                let errno = *libc::__errno_location();
                let _ = libc::write(exec_error[1], (&errno as *const i32).cast(), 4);
                libc::_exit(127);
            }
        }
        // SAFETY: closing the child's ends of the pipes in the parent.
        unsafe {
            libc::close(release[0]);
            libc::close(exec_error[1]);
        }
        Ok(Target {
            pid: pid as u32,
            child: Some(HeldChild {
                release_fd: release[1],
                exec_error_fd: exec_error[0],
                program: program.clone(),
                reaped: false,
            }),
        })
    }

    /// Lets a held command exec; reports an exec failure (e.g. command not found).
    /// Whether leaktrace started this target (`-- CMD`) rather than attaching to it.
    pub fn was_started(&self) -> bool {
        self.child.is_some()
    }

    pub fn release(&mut self) -> Result<()> {
        let Some(child) = self.child.as_mut() else {
            return Ok(());
        };
        if child.release_fd < 0 {
            return Ok(());
        }
        // SAFETY: fds owned by HeldChild; each is closed exactly once (set to -1 after).
        unsafe {
            let _ = libc::write(child.release_fd, [1u8].as_ptr().cast(), 1);
            libc::close(child.release_fd);
            child.release_fd = -1;
            let mut errno = 0i32;
            let n = libc::read(child.exec_error_fd, (&mut errno as *mut i32).cast(), 4);
            libc::close(child.exec_error_fd);
            child.exec_error_fd = -1;
            if n == 4 {
                let err = std::io::Error::from_raw_os_error(errno);
                bail!("cannot run {}: {err}", child.program);
            }
        }
        Ok(())
    }

    /// True once the target has exited (a started child is reaped here).
    pub fn has_exited(&mut self) -> bool {
        if let Some(child) = self.child.as_mut() {
            if child.reaped {
                return true;
            }
            let mut status = 0;
            // SAFETY: waiting for our own child without blocking.
            let r = unsafe { libc::waitpid(self.pid as i32, &mut status, libc::WNOHANG) };
            if r == self.pid as i32 || r < 0 {
                child.reaped = true;
                return true;
            }
            return false;
        }
        procfs::is_gone(self.pid)
    }

    /// Ends a command that leaktrace started: SIGTERM, then SIGKILL after a grace period.
    pub fn stop_started_command(&mut self) {
        if self.child.is_none() || self.has_exited() {
            return;
        }
        let grace = Duration::from_secs(2);
        // SAFETY: signalling our own, not yet reaped, child.
        unsafe { libc::kill(self.pid as i32, libc::SIGTERM) };
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if self.has_exited() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // SAFETY: kill has no memory preconditions; the pid is our own unreaped child.
        unsafe { libc::kill(self.pid as i32, libc::SIGKILL) };
        while !self.has_exited() {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        // A command that never got released (tracing failed to start) must not linger.
        if let Some(child) = self.child.as_ref() {
            if child.release_fd >= 0 {
                // SAFETY: kill has no memory preconditions; the pid is our own unreaped child.
                unsafe { libc::kill(self.pid as i32, libc::SIGKILL) };
            }
        }
        self.stop_started_command();
        if let Some(child) = self.child.as_ref() {
            for fd in [child.release_fd, child.exec_error_fd] {
                if fd >= 0 {
                    // SAFETY: fds this Target opened and owns; closed once, here.
                    unsafe { libc::close(fd) };
                }
            }
        }
    }
}

fn pipe(flags: libc::c_int) -> Result<[libc::c_int; 2]> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two fds into the array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), flags) } != 0 {
        bail!("pipe failed: {}", std::io::Error::last_os_error());
    }
    Ok(fds)
}

/// What cannot be traced because of the target's architecture, read from its executable's ELF
/// header (`/proc/PID/exe`), or None for an x86_64 program (or an unreadable one).
///
/// A 32-bit x86 program makes its system calls through the kernel's compat entry
/// (`int 0x80`/`sysenter`), and the kernel does not run syscall tracepoints for compat calls
/// (`arch_trace_is_compat_syscall`, kernel/trace/trace_syscalls.c): none of its futex, epoll or
/// timerfd calls reach the probes.
pub fn architecture_note(pid: u32) -> Option<String> {
    use std::io::Read as _;
    let mut header = [0u8; 20];
    std::fs::File::open(format!("/proc/{pid}/exe"))
        .and_then(|mut exe| exe.read_exact(&mut header))
        .ok()?;
    if &header[..4] != b"\x7fELF" {
        return None;
    }
    const EM_X86_64: u16 = 62;
    let class = header[4];
    let machine = u16::from_le_bytes([header[18], header[19]]);
    match (class, machine) {
        (2, EM_X86_64) => None,
        (1, _) => Some(format!(
            "PID {pid} is a 32-bit program (ELF machine {machine}): its system calls go through \
             the kernel's compat entry, which syscall tracepoints do not see, so no futex, epoll, \
             timerfd or thread-creation event of it is traced; threads blocked at the end are \
             still read from /proc, without user stacks. leaktrace traces x86_64 programs"
        )),
        _ => Some(format!(
            "PID {pid} is not an x86_64 program (ELF machine {machine}): system call arguments \
             and stacks are read as x86_64's and may be wrong"
        )),
    }
}
