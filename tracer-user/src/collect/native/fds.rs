//! The target's fd table (/proc/PID/fd) and the kernel's set of tracked fds: which fds are
//! timerfds and epoll sets, so that the probes follow their reads and closes, and which
//! syscall groups a probe window needs.
use tracer_common::{fd_kind, FdKey};

use super::Native;
use crate::attach::{Group, Probes};
use crate::model::epoll::FdKind;
use crate::model::timerfd::TimerfdEvent;
use crate::model::{Event, Model};
use crate::procfs::fds;

/// The kernel side's kind of an fd it tracks (0: not tracked).
fn tracked_kind(kind: &FdKind) -> u32 {
    match kind {
        FdKind::Timerfd => fd_kind::TIMERFD,
        FdKind::Eventpoll => fd_kind::EPOLL,
        _ => 0,
    }
}

impl Native {
    /// Timerfds and epoll sets open at attach: tracked, and the timerfds' state at attach.
    pub(super) fn existing_fds(&mut self, probes: &mut Probes, model: &mut Model, now: u64) {
        for (fd, link) in fds::links(self.pid) {
            let kind = tracked_kind(&fds::kind(&link));
            if kind == 0 {
                continue;
            }
            let key = FdKey {
                tgid: self.pid,
                fd: fd as u32,
            };
            if let Err(err) = probes.track_fd(key, kind) {
                self.note(format!("{err:#}: reads and closes of fd {fd} are not seen"));
            }
            if kind == fd_kind::TIMERFD {
                if let Some(state) = fds::timerfd_state(self.pid, fd) {
                    model.apply(&Event::Timerfd(TimerfdEvent::Existing {
                        at_ns: now,
                        fd,
                        state,
                    }));
                }
            }
        }
    }

    /// Before a probe window opens (low mode): the kernel's kinds of the target's open fds
    /// made right, since fds created, closed and reused between windows were not seen.
    pub fn resync_tracked_fds(&mut self, probes: &mut Probes) {
        for (fd, link) in fds::links(self.pid) {
            let kind = tracked_kind(&fds::kind(&link));
            let Ok(index) = u32::try_from(fd) else {
                continue;
            };
            if probes.tracked_fd_kind(index) != kind {
                let key = FdKey {
                    tgid: self.pid,
                    fd: index,
                };
                if let Err(err) = probes.track_fd(key, kind) {
                    self.note(format!("{err:#}: reads and closes of fd {fd} are not seen"));
                }
            }
        }
    }

    /// The syscall tracepoints a periodic window needs for this target (each one attached
    /// costs the host ~45-80 ms of detaching when the window closes, see `attach::close_window`):
    /// futex(2) always; futex2 once a thread was seen in it; epoll when the target has an epoll
    /// set; timerfd calls, reads and closes when it has a timerfd or an epoll set (reads and
    /// closes are only followed on those). What is created between windows shows in the fd
    /// table at the next scan, and the window after that includes it.
    /// The syscalls a periodic window watches for this target (a bit mask for the window
    /// programs: every syscall outside it costs the target's calls a map lookup and no more),
    /// see [`window_groups_for`].
    pub fn window_groups(&self) -> Vec<Group> {
        let links = fds::links(self.pid);
        window_groups_for(self.uses_futex2, links.values().map(|l| fds::kind(l)))
    }
}

/// The groups a periodic window watches, from whether a thread was seen in a futex2 call and the
/// kinds of the target's fds: futex(2) always; futex2 once seen; epoll when the target has an
/// epoll set; timerfd calls, reads and closes when it has a timerfd or an epoll set (reads and
/// closes are only followed on those). Threads is asked for always and watched only on kernels
/// without `task_newtask`. What is created between windows shows in the fd table at the next
/// scan, and the window after that includes it.
pub fn window_groups_for(uses_futex2: bool, fd_kinds: impl Iterator<Item = FdKind>) -> Vec<Group> {
    let mut groups = vec![Group::Futex, Group::Threads];
    if uses_futex2 {
        groups.push(Group::Futex2);
    }
    let (mut epoll, mut timerfd) = (false, false);
    for kind in fd_kinds {
        epoll |= kind == FdKind::Eventpoll;
        timerfd |= kind == FdKind::Timerfd;
    }
    if epoll {
        groups.push(Group::Epoll);
    }
    if epoll || timerfd {
        groups.push(Group::Fds);
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_watches_epoll_and_fds_only_when_the_target_has_them() {
        use Group::*;
        let of = |futex2, kinds: &[FdKind]| window_groups_for(futex2, kinds.iter().cloned());
        assert_eq!(of(false, &[]), vec![Futex, Threads]);
        assert_eq!(
            of(false, &[FdKind::Socket, FdKind::Pipe]),
            vec![Futex, Threads]
        );
        assert_eq!(of(true, &[]), vec![Futex, Threads, Futex2]);
        assert_eq!(of(false, &[FdKind::Timerfd]), vec![Futex, Threads, Fds]);
        assert_eq!(
            of(false, &[FdKind::Socket, FdKind::Eventpoll]),
            vec![Futex, Threads, Epoll, Fds]
        );
    }

    #[test]
    fn only_timerfds_and_epoll_sets_are_tracked() {
        assert_eq!(tracked_kind(&FdKind::Timerfd), fd_kind::TIMERFD);
        assert_eq!(tracked_kind(&FdKind::Eventpoll), fd_kind::EPOLL);
        assert_eq!(tracked_kind(&FdKind::Pipe), 0);
        assert_eq!(tracked_kind(&FdKind::Other("net".into())), 0);
    }
}
