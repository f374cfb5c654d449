//! The native-I/O overview: how many threads, epoll sets and timerfds the trace saw (the
//! report's `native_io`), candidates or not.
use serde::Serialize;

use crate::model::Model;

/// Threads, epoll sets and timerfds seen during the trace.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct NativeSummary {
    pub threads_alive: u64,
    pub threads_existing_at_start: u64,
    pub threads_created: u64,
    pub threads_exited: u64,
    pub processes_forked: u64,
    pub epoll_sets_created: u64,
    pub epoll_sets_closed: u64,
    pub epoll_waiters: u64,
    pub timerfds_open: u64,
    pub timerfds_created: u64,
    pub timerfds_closed: u64,
}

impl NativeSummary {
    /// From the thread, epoll and timerfd models at the end of the trace.
    pub fn of(model: &Model) -> Self {
        let t = &model.threads;
        let sum = |f: fn(&crate::model::threads::CreationSite) -> u64| t.sites.iter().map(f).sum();
        let timer_sum = |f: fn(&crate::model::timerfd::TimerSite) -> u64| {
            model.timerfds.sites.iter().map(f).sum()
        };
        NativeSummary {
            threads_alive: t.alive.len() as u64,
            threads_existing_at_start: sum(|s| s.existing),
            threads_created: sum(|s| s.created),
            threads_exited: sum(|s| s.exited),
            processes_forked: t.processes_forked,
            epoll_sets_created: model.epoll.sets_created,
            epoll_sets_closed: model.epoll.sets_closed,
            epoll_waiters: model.epoll.waiters.len() as u64,
            timerfds_open: model.timerfds.open.len() as u64,
            timerfds_created: timer_sum(|s| s.created),
            timerfds_closed: timer_sum(|s| s.closed),
        }
    }
}
