//! The target's file descriptors: what each is (/proc/PID/fd links), what an epoll set watches
//! and what a timerfd is set to (/proc/PID/fdinfo), listening sockets, and who else holds the
//! other end of a pipe. Read-only.
use std::collections::{BTreeMap, BTreeSet};

use crate::model::epoll::FdKind;
use crate::model::timerfd::TimerfdState;

/// fd -> link text ("pipe:[123]", "anon_inode:[timerfd]", "/dev/null"). Own read: the crate's
/// `FDTarget` parses the link into variants, and the report shows the kernel's text, by which
/// the two ends of a pipe are also matched.
pub fn links(pid: u32) -> BTreeMap<i32, String> {
    let Ok(entries) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return BTreeMap::new();
    };
    entries
        .filter_map(|e| {
            let e = e.ok()?;
            let fd: i32 = e.file_name().to_str()?.parse().ok()?;
            let link = std::fs::read_link(e.path()).ok()?;
            Some((fd, link.to_string_lossy().into_owned()))
        })
        .collect()
}

/// What a link names: pipe, socket, eventfd, timerfd, eventpoll, signalfd, file, ...
pub fn kind(link: &str) -> FdKind {
    let name = if let Some(rest) = link.strip_prefix("anon_inode:") {
        rest.trim_matches(|c| c == '[' || c == ']')
    } else {
        match link.split_once(":[") {
            Some((kind, _)) => kind,
            None if link.starts_with('/') => "file",
            None => link,
        }
    };
    FdKind::from(name.to_string())
}

/// The inode in "pipe:[123]" / "socket:[123]".
pub fn inode(link: &str) -> Option<u64> {
    link.split_once(":[")?.1.strip_suffix(']')?.parse().ok()
}

/// /proc/PID/fdinfo/FD: the crate does not read fdinfo (flags, epoll `tfd:` lines, timerfd
/// state), so this module parses it.
fn fdinfo(pid: u32, fd: i32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}")).ok()
}

/// The open flags of an fd (octal in fdinfo).
pub fn flags(pid: u32, fd: i32) -> Option<u32> {
    parse_flags(&fdinfo(pid, fd)?)
}

fn parse_flags(text: &str) -> Option<u32> {
    let value = text.lines().find_map(|l| l.strip_prefix("flags:"))?;
    u32::from_str_radix(value.trim(), 8).ok()
}

/// The (fd, event mask) pairs an epoll set watches: `tfd:` lines of its fdinfo.
pub fn epoll_set(pid: u32, epfd: i32) -> Option<Vec<(i32, u32)>> {
    Some(parse_epoll_fdinfo(&fdinfo(pid, epfd)?))
}

pub fn parse_epoll_fdinfo(text: &str) -> Vec<(i32, u32)> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            if words.next()? != "tfd:" {
                return None;
            }
            let fd = words.next()?.parse().ok()?;
            if words.next()? != "events:" {
                return None;
            }
            let events = u32::from_str_radix(words.next()?, 16).ok()?;
            Some((fd, events))
        })
        .collect()
}

/// A timerfd's clock, pending expirations and remaining time, from its fdinfo.
pub fn timerfd_state(pid: u32, fd: i32) -> Option<TimerfdState> {
    parse_timerfd_fdinfo(&fdinfo(pid, fd)?)
}

pub fn parse_timerfd_fdinfo(text: &str) -> Option<TimerfdState> {
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .map(str::trim)
    };
    // "it_value: (0, 999742887)"
    let timespec = |name: &str| -> Option<u64> {
        let inner = field(name)?.trim_start_matches('(').trim_end_matches(')');
        let (sec, nsec) = inner.split_once(',')?;
        // Saturating: fdinfo text is the kernel's, but a value past u64 ns is "never" anyway.
        let sec = sec.trim().parse::<u64>().ok()?;
        let nsec = nsec.trim().parse::<u64>().ok()?;
        Some(sec.saturating_mul(1_000_000_000).saturating_add(nsec))
    };
    Some(TimerfdState {
        clockid: field("clockid:")?.parse().ok()?,
        ticks: field("ticks:")?.parse().ok()?,
        it_value_ns: timespec("it_value:")?,
        it_interval_ns: timespec("it_interval:")?,
    })
}

/// Inodes of the target's listening sockets (TCP, TCP6 and Unix stream sockets), in its
/// network namespace. TCP through the crate; Unix sockets read here, since the crate's
/// `UnixNetEntry` leaves out the Flags column that marks a listening one.
pub fn listening_sockets(pid: u32) -> BTreeSet<u64> {
    let mut inodes = BTreeSet::new();
    if let Some(process) = i32::try_from(pid)
        .ok()
        .and_then(|pid| ::procfs::process::Process::new(pid).ok())
    {
        for table in [process.tcp(), process.tcp6()] {
            inodes.extend(
                table
                    .unwrap_or_default()
                    .iter()
                    .filter(|entry| entry.state == ::procfs::net::TcpState::Listen)
                    .map(|entry| entry.inode),
            );
        }
    }
    let text = std::fs::read_to_string(format!("/proc/{pid}/net/unix")).unwrap_or_default();
    inodes.extend(listening_unix_sockets(&text));
    inodes
}

/// The inodes of /proc/net/unix lines with Flags 00010000 (`__SO_ACCEPTCON`, net/unix/af_unix.c
/// `unix_seq_show`: a listening socket).
fn listening_unix_sockets(text: &str) -> Vec<u64> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            // Num RefCount Protocol Flags Type St Inode Path
            (cols.get(3) == Some(&"00010000"))
                .then(|| cols.get(6)?.parse().ok())
                .flatten()
        })
        .collect()
}

/// Own walk of /proc/*/fd (the crate's would parse every fd of every process into an `FDInfo`).
/// Processes other than `pid` holding an fd with this exact link (e.g. the other end of a pipe).
/// Stops at the first few: the answer only needs "anybody else?".
pub fn other_holders(pid: u32, link: &str) -> Vec<u32> {
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut holders = Vec::new();
    for entry in procs.flatten() {
        let Some(other) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if other == pid {
            continue;
        }
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        if fds
            .flatten()
            .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|l| l.to_string_lossy() == link))
        {
            holders.push(other);
            if holders.len() >= 4 {
                break;
            }
        }
    }
    holders
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fdinfo_of_epoll_and_timerfd_parses() {
        let epoll = "pos:\t0\nflags:\t02000002\nmnt_id:\t16\nino:\t1057\n\
            tfd:        5 events:       19 data:                5  pos:0 ino:2a1b sdev:e\n\
            tfd:        7 events:        1 data:                7  pos:0 ino:2a1c sdev:e\n";
        assert_eq!(parse_epoll_fdinfo(epoll), vec![(5, 0x19), (7, 1)]);
        assert_eq!(parse_flags(epoll), Some(0o2000002));
        let timer = "pos:\t0\nflags:\t02\nmnt_id:\t16\nino:\t1057\nclockid: 1\nticks: 3\n\
            settime flags: 00\nit_value: (0, 999742887)\nit_interval: (2, 5)\n";
        assert_eq!(
            parse_timerfd_fdinfo(timer),
            Some(TimerfdState {
                clockid: 1,
                ticks: 3,
                it_value_ns: 999_742_887,
                it_interval_ns: 2_000_000_005,
            })
        );
    }

    #[test]
    fn listening_sockets_are_found() {
        let unix = "Num       RefCount Protocol Flags    Type St Inode Path\n\
            0000000000000000: 00000002 00000000 00010000 0001 01 20931 /run/a.sock\n\
            0000000000000000: 00000003 00000000 00000000 0001 03 20932 /run/a.sock\n";
        assert_eq!(listening_unix_sockets(unix), vec![20931]);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let inode = links(std::process::id())
            .values()
            .filter_map(|l| inode(l))
            .find(|&i| listening_sockets(std::process::id()).contains(&i));
        assert!(inode.is_some(), "our listener is not found listening");
        drop(listener);
    }

    #[test]
    fn links_name_their_kind() {
        assert_eq!(kind("pipe:[123]"), FdKind::Pipe);
        assert_eq!(kind("anon_inode:[timerfd]"), FdKind::Timerfd);
        assert_eq!(kind("anon_inode:[eventpoll]"), FdKind::Eventpoll);
        assert_eq!(kind("/dev/null"), FdKind::File);
        assert_eq!(kind("net:[4026531840]"), FdKind::Other("net".into()));
        assert_eq!(inode("socket:[99]"), Some(99));
        // Our own process has stdin/stdout/stderr or at least /proc/self/fd itself.
        assert!(!links(std::process::id()).is_empty());
    }
}
