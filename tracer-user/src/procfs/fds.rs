//! The target's file descriptors: what each is (/proc/PID/fd links), what an epoll set watches
//! and what a timerfd is set to (/proc/PID/fdinfo), listening sockets, and who else holds the
//! other end of a pipe. Read-only.
use std::collections::{BTreeMap, BTreeSet};

use crate::model::epoll::FdKind;
use crate::model::timerfd::TimerfdState;

/// fd -> link text ("pipe:[123]", "anon_inode:[timerfd]", "/dev/null").
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

/// Inodes of the target's listening sockets (TCP, TCP6 and Unix stream sockets).
pub fn listening_sockets(pid: u32) -> BTreeSet<u64> {
    let mut inodes = BTreeSet::new();
    for table in ["tcp", "tcp6"] {
        let text = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")).unwrap_or_default();
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            // st (column 3) 0A = LISTEN; inode is column 9.
            if cols.get(3) == Some(&"0A") {
                if let Some(inode) = cols.get(9).and_then(|s| s.parse().ok()) {
                    inodes.insert(inode);
                }
            }
        }
    }
    let text = std::fs::read_to_string(format!("/proc/{pid}/net/unix")).unwrap_or_default();
    for line in text.lines().skip(1) {
        let cols: Vec<&str> = line.split_whitespace().collect();
        // Flags 00010000 = __SO_ACCEPTCON (listening); inode is column 6.
        if cols.get(3) == Some(&"00010000") {
            if let Some(inode) = cols.get(6).and_then(|s| s.parse().ok()) {
                inodes.insert(inode);
            }
        }
    }
    inodes
}

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
