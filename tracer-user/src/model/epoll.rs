//! epoll sets and the threads waiting on them, as pure state.
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{BlockedSince, Frame};

/// What an fd is, from its /proc/PID/fd link: `pipe:[INODE]`, `socket:[INODE]`,
/// `anon_inode:[eventfd]` (the kernel's anon inode names, fs/anon_inodes.c callers), a path.
/// Serialized as the short name ("pipe", "eventpoll", "file", ...), the JSON report's `kind`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub enum FdKind {
    Pipe,
    Socket,
    Eventfd,
    Timerfd,
    /// An epoll set (`anon_inode:[eventpoll]`).
    Eventpoll,
    Signalfd,
    /// A path in the filesystem (`/dev/null`, a regular file).
    File,
    /// Any other link, by the name it shows (`net`, `memfd:...`, `pidfd`, ...).
    Other(String),
}

impl FdKind {
    pub fn name(&self) -> &str {
        match self {
            FdKind::Pipe => "pipe",
            FdKind::Socket => "socket",
            FdKind::Eventfd => "eventfd",
            FdKind::Timerfd => "timerfd",
            FdKind::Eventpoll => "eventpoll",
            FdKind::Signalfd => "signalfd",
            FdKind::File => "file",
            FdKind::Other(name) => name,
        }
    }
}

impl From<String> for FdKind {
    fn from(name: String) -> Self {
        match name.as_str() {
            "pipe" => FdKind::Pipe,
            "socket" => FdKind::Socket,
            "eventfd" => FdKind::Eventfd,
            "timerfd" => FdKind::Timerfd,
            "eventpoll" => FdKind::Eventpoll,
            "signalfd" => FdKind::Signalfd,
            "file" => FdKind::File,
            _ => FdKind::Other(name),
        }
    }
}

impl From<FdKind> for String {
    fn from(kind: FdKind) -> Self {
        kind.name().to_string()
    }
}

impl std::fmt::Display for FdKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Why an fd in an epoll set can never become ready: the fact the collector found, worded by
/// `analyze::epoll::dead_end_text`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "DeadEndForm")]
pub enum DeadEnd {
    /// The read end of a pipe whose write ends (these fds) only this process holds: only a
    /// thread of the target could write to it.
    PipeWrittenOnlyHere { writers: Vec<i32> },
    /// An eventfd no other process holds.
    EventfdHeldOnlyHere,
    /// A timerfd neither armed nor holding an expiration: it can never fire.
    TimerfdDisarmed,
}

/// [`DeadEnd`] as recordings hold it: typed, or the English text recordings made before the
/// verdict moved to analyze held (`tests/recordings/epoll_stuck.jsonl.gz`).
#[derive(Deserialize)]
#[serde(untagged)]
enum DeadEndForm {
    Typed(DeadEndTyped),
    Text(String),
}

/// The derived form of [`DeadEnd`] (the same variants).
#[derive(Deserialize)]
enum DeadEndTyped {
    PipeWrittenOnlyHere { writers: Vec<i32> },
    EventfdHeldOnlyHere,
    TimerfdDisarmed,
}

impl TryFrom<DeadEndForm> for DeadEnd {
    type Error = String;

    fn try_from(form: DeadEndForm) -> Result<Self, String> {
        Ok(match form {
            DeadEndForm::Typed(DeadEndTyped::PipeWrittenOnlyHere { writers }) => {
                DeadEnd::PipeWrittenOnlyHere { writers }
            }
            DeadEndForm::Typed(DeadEndTyped::EventfdHeldOnlyHere) => DeadEnd::EventfdHeldOnlyHere,
            DeadEndForm::Typed(DeadEndTyped::TimerfdDisarmed) => DeadEnd::TimerfdDisarmed,
            DeadEndForm::Text(text) => match text.as_str() {
                "eventfd held only by this process" => DeadEnd::EventfdHeldOnlyHere,
                "timerfd that is not armed: it can never fire" => DeadEnd::TimerfdDisarmed,
                _ => {
                    let writers = text
                        .strip_prefix("pipe whose write end (fd ")
                        .and_then(|rest| rest.strip_suffix(") is held only by this process"))
                        .ok_or_else(|| format!("unknown dead end {text:?}"))?;
                    DeadEnd::PipeWrittenOnlyHere {
                        writers: writers
                            .split(", ")
                            .map(|fd| fd.parse().map_err(|_| format!("bad fd in {text:?}")))
                            .collect::<Result<_, _>>()?,
                    }
                }
            },
        })
    }
}

/// One fd in an epoll set, with what /proc says it is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchedFd {
    pub fd: i32,
    /// The event mask it is registered for (EPOLLIN = 0x1, ...).
    pub events: u32,
    pub kind: FdKind,
    /// The /proc/PID/fd link ("pipe:[1234]", "socket:[99]", "/dev/null").
    pub link: String,
    /// Why this fd can never become ready, when the collector found a reason.
    pub dead_end: Option<DeadEnd>,
    /// A listening socket: an idle server loop waiting on it is normal.
    #[serde(default)]
    pub listening: bool,
}

/// A thread inside epoll_wait/epoll_pwait/epoll_pwait2 at a snapshot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EpollWaiter {
    pub tid: u32,
    pub name: String,
    pub epfd: i32,
    pub syscall: String,
    /// None: waits until an event (timeout -1 / NULL).
    pub timeout_ns: Option<u64>,
    pub since: BlockedSince,
    pub user_stack: Vec<Frame>,
    /// The set's fds now (from /proc/PID/fdinfo/EPFD).
    pub fds: Vec<WatchedFd>,
}

/// Cumulative results of the waits on one set since attach, as the kernel's EPOLL_STATS keeps
/// them.
pub type SetStats = tracer_common::EpollStats;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum EpollEvent {
    Created {
        at_ns: u64,
        tid: u32,
        epfd: i32,
        stack: Vec<Frame>,
    },
    /// epoll_ctl returned (`op`: 1 add, 2 del, 3 mod).
    Ctl {
        at_ns: u64,
        tid: u32,
        epfd: i32,
        op: u32,
        fd: i32,
        events: u32,
        ret: i64,
    },
    Closed {
        at_ns: u64,
        epfd: i32,
    },
    /// Cumulative per-set wait results.
    Stats {
        epfd: i32,
        stats: SetStats,
    },
    /// The threads waiting on epoll now (replaces the previous snapshot).
    Waiting {
        at_ns: u64,
        waiters: Vec<EpollWaiter>,
    },
}

/// An epoll set seen created during the trace.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct EpollSet {
    pub epfd: i32,
    pub created_ns: Option<u64>,
    pub creation_stack: Vec<Frame>,
    pub adds: u64,
    pub mods: u64,
    pub dels: u64,
    pub failed_ctls: u64,
    pub closed_ns: Option<u64>,
}

#[derive(Clone, Debug, Default)]
pub struct EpollModel {
    /// Sets created during the trace, by epfd (a reused epfd replaces the closed set).
    pub sets: BTreeMap<i32, EpollSet>,
    pub stats: BTreeMap<i32, SetStats>,
    pub waiters: Vec<EpollWaiter>,
    pub waiting_at_ns: u64,
    pub sets_created: u64,
    pub sets_closed: u64,
}

pub const EPOLL_CTL_ADD: u32 = 1;
pub const EPOLL_CTL_DEL: u32 = 2;
pub const EPOLL_CTL_MOD: u32 = 3;

impl EpollModel {
    pub fn apply(&mut self, event: &EpollEvent) {
        match event {
            EpollEvent::Created {
                at_ns, epfd, stack, ..
            } => {
                self.sets_created += 1;
                self.stats.remove(epfd);
                self.sets.insert(
                    *epfd,
                    EpollSet {
                        epfd: *epfd,
                        created_ns: Some(*at_ns),
                        creation_stack: stack.clone(),
                        ..Default::default()
                    },
                );
            }
            EpollEvent::Ctl { epfd, op, ret, .. } => {
                let set = self.sets.entry(*epfd).or_insert_with(|| EpollSet {
                    epfd: *epfd,
                    ..Default::default()
                });
                if *ret != 0 {
                    set.failed_ctls += 1;
                    return;
                }
                match *op {
                    EPOLL_CTL_ADD => set.adds += 1,
                    EPOLL_CTL_DEL => set.dels += 1,
                    EPOLL_CTL_MOD => set.mods += 1,
                    _ => {}
                }
            }
            EpollEvent::Closed { at_ns, epfd } => {
                self.sets_closed += 1;
                if let Some(set) = self.sets.get_mut(epfd) {
                    set.closed_ns = Some(*at_ns);
                }
            }
            EpollEvent::Stats { epfd, stats } => {
                self.stats.insert(*epfd, *stats);
            }
            EpollEvent::Waiting { at_ns, waiters } => {
                self.waiting_at_ns = *at_ns;
                self.waiters = waiters.clone();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ctl_counts_and_snapshots_replace() {
        let mut m = EpollModel::default();
        m.apply(&EpollEvent::Created {
            at_ns: 1,
            tid: 1,
            epfd: 5,
            stack: vec![],
        });
        for (op, ret) in [(EPOLL_CTL_ADD, 0), (EPOLL_CTL_ADD, -17), (EPOLL_CTL_DEL, 0)] {
            m.apply(&EpollEvent::Ctl {
                at_ns: 2,
                tid: 1,
                epfd: 5,
                op,
                fd: 7,
                events: 1,
                ret,
            });
        }
        let set = &m.sets[&5];
        assert_eq!((set.adds, set.dels, set.failed_ctls), (1, 1, 1));
        m.apply(&EpollEvent::Closed { at_ns: 3, epfd: 5 });
        assert_eq!(m.sets[&5].closed_ns, Some(3));
    }

    #[test]
    fn dead_ends_load_typed_and_as_the_text_older_recordings_hold() {
        let pipe = DeadEnd::PipeWrittenOnlyHere {
            writers: vec![4, 9],
        };
        let json = serde_json::to_string(&pipe).unwrap();
        assert_eq!(serde_json::from_str::<DeadEnd>(&json).unwrap(), pipe);
        let typed: DeadEnd = serde_json::from_str("\"TimerfdDisarmed\"").unwrap();
        assert_eq!(typed, DeadEnd::TimerfdDisarmed);
        let old = |text: &str| serde_json::from_value::<DeadEnd>(serde_json::json!(text));
        assert_eq!(
            old("pipe whose write end (fd 4, 9) is held only by this process").unwrap(),
            pipe
        );
        assert_eq!(
            old("eventfd held only by this process").unwrap(),
            DeadEnd::EventfdHeldOnlyHere
        );
        assert_eq!(
            old("timerfd that is not armed: it can never fire").unwrap(),
            DeadEnd::TimerfdDisarmed
        );
        assert!(old("pipe whose write end (fd x) is held only by this process").is_err());
        assert!(old("something else").is_err());
    }

    #[test]
    fn fd_kinds_serialize_as_their_names() {
        for name in [
            "pipe",
            "socket",
            "eventfd",
            "timerfd",
            "eventpoll",
            "signalfd",
            "file",
            "net",
        ] {
            let kind = FdKind::from(name.to_string());
            assert_eq!(
                serde_json::to_value(&kind).unwrap(),
                serde_json::json!(name)
            );
            assert_eq!(kind.name(), name);
        }
        assert_eq!(FdKind::from("net".to_string()), FdKind::Other("net".into()));
    }
}
