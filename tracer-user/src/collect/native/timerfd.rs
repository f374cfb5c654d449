//! timerfds: at each scan the state of every open one (/proc/PID/fdinfo), and in low mode the
//! ones opened and closed between probe windows.
use super::Native;
use crate::attach::{Detail, Probes};
use crate::model::epoll::FdKind;
use crate::model::timerfd::TimerfdEvent;
use crate::model::{Event, Model};
use crate::procfs::fds;

impl Native {
    pub(super) fn timerfd_snapshot(&mut self, probes: &Probes, model: &mut Model, now: u64) {
        if probes.detail() == Detail::Low && !probes.window_is_open() {
            self.timerfds_between_windows(model, now);
        }
        let fds: Vec<_> = model
            .timerfds
            .open
            .keys()
            .filter_map(|&fd| Some((fd, fds::timerfd_state(self.pid, fd)?)))
            .collect();
        model.apply(&Event::Timerfd(TimerfdEvent::Snapshot { at_ns: now, fds }));
    }

    /// Low mode: timerfds opened and closed between windows, from the fd table. One that
    /// appeared is described like one open before the trace (its creation was not seen); one
    /// the model holds that is no longer a timerfd was closed.
    fn timerfds_between_windows(&mut self, model: &mut Model, now: u64) {
        let links = fds::links(self.pid);
        let is_timerfd = |fd: &i32| {
            links
                .get(fd)
                .is_some_and(|l| fds::kind(l) == FdKind::Timerfd)
        };
        let closed: Vec<i32> = model
            .timerfds
            .open
            .keys()
            .copied()
            .filter(|fd| !is_timerfd(fd))
            .collect();
        for fd in closed {
            model.apply(&Event::Timerfd(TimerfdEvent::Closed { at_ns: now, fd }));
        }
        for &fd in links.keys().filter(|fd| is_timerfd(fd)) {
            if model.timerfds.open.contains_key(&fd) {
                continue;
            }
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
