//! The x86_64 system calls threads block in, by number (arch/x86/entry/syscalls/syscall_64.tbl),
//! as /proc/PID/task/TID/syscall shows them.

pub const SYS_EPOLL_WAIT: i64 = 232;
pub const SYS_EPOLL_PWAIT: i64 = 281;
pub const SYS_EPOLL_PWAIT2: i64 = 441;
pub const SYS_FUTEX_WAITV: i64 = 449;
pub const SYS_FUTEX_WAIT: i64 = 455;

/// epoll_wait, epoll_pwait or epoll_pwait2: the first argument is the epoll fd.
pub fn is_epoll_wait(nr: i64) -> bool {
    matches!(nr, SYS_EPOLL_WAIT | SYS_EPOLL_PWAIT | SYS_EPOLL_PWAIT2)
}

/// A futex2 call (futex_waitv since Linux 5.16, futex_wait since 6.7): its tracepoints are
/// only worth a probe window once a thread of the target was seen in one.
pub fn is_futex2_wait(nr: i64) -> bool {
    matches!(nr, SYS_FUTEX_WAITV | SYS_FUTEX_WAIT)
}

/// The name of the calls threads usually block in; `syscall N` for others.
pub fn syscall_name(nr: i64) -> String {
    let name = match nr {
        0 => "read",
        1 => "write",
        7 => "poll",
        23 => "select",
        34 => "pause",
        35 => "nanosleep",
        43 => "accept",
        45 => "recvfrom",
        47 => "recvmsg",
        61 => "wait4",
        128 => "rt_sigtimedwait",
        130 => "rt_sigsuspend",
        202 => "futex",
        230 => "clock_nanosleep",
        SYS_EPOLL_WAIT => "epoll_wait",
        270 => "pselect6",
        271 => "ppoll",
        SYS_EPOLL_PWAIT => "epoll_pwait",
        288 => "accept4",
        426 => "io_uring_enter",
        SYS_EPOLL_PWAIT2 => "epoll_pwait2",
        SYS_FUTEX_WAITV => "futex_waitv",
        SYS_FUTEX_WAIT => "futex_wait",
        _ => return format!("syscall {nr}"),
    };
    name.to_string()
}

/// The timeout of an epoll wait no probe saw begin, from its registers: None for none (wait
/// for an event), in ns. epoll_wait/epoll_pwait take milliseconds in the fourth argument (-1:
/// none); epoll_pwait2 a `struct timespec *` there (NULL: none), which is not read, so any
/// timeout it has shows as 0.
pub fn epoll_timeout_from_registers(nr: i64, args: &[u64; 6]) -> Option<u64> {
    match nr {
        SYS_EPOLL_PWAIT2 => (args[3] != 0).then_some(0),
        _ => {
            let ms = args[3] as i32;
            (ms >= 0).then(|| ms as u64 * 1_000_000)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_libc_numbers() {
        for (nr, name) in [
            (libc::SYS_read, "read"),
            (libc::SYS_futex, "futex"),
            (libc::SYS_clock_nanosleep, "clock_nanosleep"),
            (libc::SYS_epoll_wait, "epoll_wait"),
            (libc::SYS_epoll_pwait, "epoll_pwait"),
            (libc::SYS_epoll_pwait2, "epoll_pwait2"),
            (libc::SYS_futex_waitv, "futex_waitv"),
            (libc::SYS_io_uring_enter, "io_uring_enter"),
            (libc::SYS_accept4, "accept4"),
        ] {
            assert_eq!(syscall_name(nr), name);
        }
        assert_eq!(syscall_name(9999), "syscall 9999");
        assert!(is_epoll_wait(libc::SYS_epoll_pwait2) && !is_epoll_wait(libc::SYS_futex));
        assert!(is_futex2_wait(libc::SYS_futex_waitv) && !is_futex2_wait(libc::SYS_futex));
    }

    #[test]
    fn epoll_timeouts_read_from_registers() {
        let args = |a3: u64| [5, 0, 16, a3, 0, 0];
        assert_eq!(
            epoll_timeout_from_registers(SYS_EPOLL_WAIT, &args(u64::MAX)),
            None
        );
        assert_eq!(
            epoll_timeout_from_registers(SYS_EPOLL_WAIT, &args(250)),
            Some(250_000_000)
        );
        assert_eq!(
            epoll_timeout_from_registers(SYS_EPOLL_PWAIT2, &args(0)),
            None
        );
        assert_eq!(
            epoll_timeout_from_registers(SYS_EPOLL_PWAIT2, &args(0x7ffd_0000)),
            Some(0)
        );
    }
}
