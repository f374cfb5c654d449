//! timerfds as pure state: created, armed (and re-armed), read, closed, and what
//! /proc/PID/fdinfo says about each at the last snapshot.
//!
//! Expiry is inferred, not traced (see tracer-ebpf/src/timerfd.rs): a re-arm before the previous
//! deadline pushed the timer back without it firing; a re-arm, read or snapshot after the
//! deadline means it fired; fdinfo's `ticks` are expirations nobody has read yet.
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::Frame;

/// What /proc/PID/fdinfo/FD says about a timerfd.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimerfdState {
    pub clockid: i32,
    /// Expirations since the last read.
    pub ticks: u64,
    /// Time until the next expiry; 0: disarmed.
    pub it_value_ns: u64,
    pub it_interval_ns: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum TimerfdEvent {
    /// A timerfd open when tracing started (its creation was not seen).
    Existing {
        at_ns: u64,
        fd: i32,
        state: TimerfdState,
    },
    Created {
        at_ns: u64,
        tid: u32,
        fd: i32,
        clockid: i32,
        flags: u32,
        stack: Vec<Frame>,
    },
    /// timerfd_settime returned. `deadline_ns` is the first expiry on CLOCK_MONOTONIC (the
    /// collector converts absolute and realtime values); None when disarmed or failed.
    Set {
        at_ns: u64,
        tid: u32,
        fd: i32,
        flags: u32,
        value_ns: u64,
        interval_ns: u64,
        deadline_ns: Option<u64>,
        ret: i64,
        stack: Vec<Frame>,
    },
    Gettime {
        at_ns: u64,
        fd: i32,
    },
    /// A read returned `expirations` (0 when it failed, e.g. EAGAIN: nothing fired).
    Read {
        at_ns: u64,
        tid: u32,
        fd: i32,
        ret: i64,
        expirations: u64,
    },
    Closed {
        at_ns: u64,
        fd: i32,
    },
    /// fdinfo of every open timerfd now.
    Snapshot {
        at_ns: u64,
        fds: Vec<(i32, TimerfdState)>,
    },
}

/// Index into [`Timerfds::sites`]: one creation stack (0: created before the trace).
pub type SiteId = usize;

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Timer {
    pub fd: i32,
    pub site: SiteId,
    pub created_ns: Option<u64>,
    pub clockid: i32,
    pub arms: u64,
    pub disarms: u64,
    /// Re-armed while the previous one-shot deadline had not passed yet.
    pub pushed_back: u64,
    /// Expirations known to have happened (from reads, re-arms after the deadline, fdinfo).
    pub fired: u64,
    pub reads: u64,
    pub expirations_read: u64,
    pub gettimes: u64,
    pub deadline_ns: Option<u64>,
    pub interval_ns: u64,
    pub last_value_ns: u64,
    pub arm_stack: Vec<Frame>,
    pub state: Option<TimerfdState>,
    /// What fdinfo said when tracing started, for a timerfd that was open then (its history
    /// before that is unknown: a disarmed timer may have fired many times).
    pub state_at_attach: Option<TimerfdState>,
    /// Expirations pending (fdinfo `ticks`) at the first and the last snapshot.
    pub first_ticks: Option<u64>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct TimerSite {
    pub stack: Vec<Frame>,
    pub existing: u64,
    pub created: u64,
    pub closed: u64,
    pub first_created_ns: Option<u64>,
    pub last_created_ns: Option<u64>,
}

impl TimerSite {
    pub fn open(&self) -> u64 {
        (self.existing + self.created).saturating_sub(self.closed)
    }
}

#[derive(Clone, Debug, Default)]
pub struct Timerfds {
    pub sites: Vec<TimerSite>,
    site_by_stack: BTreeMap<Vec<u64>, SiteId>,
    /// Open timerfds by fd.
    pub open: BTreeMap<i32, Timer>,
    pub snapshot_at_ns: u64,
}

pub const TFD_TIMER_ABSTIME: u32 = 1;

impl Timerfds {
    fn site(&mut self, stack: &[Frame]) -> SiteId {
        if self.sites.is_empty() {
            self.sites.push(TimerSite::default());
        }
        if stack.is_empty() {
            return 0;
        }
        let key: Vec<u64> = stack.iter().map(|f| f.addr).collect();
        if let Some(&id) = self.site_by_stack.get(&key) {
            return id;
        }
        self.sites.push(TimerSite {
            stack: stack.to_vec(),
            ..Default::default()
        });
        let id = self.sites.len() - 1;
        self.site_by_stack.insert(key, id);
        id
    }

    fn close(&mut self, fd: i32) {
        if let Some(timer) = self.open.remove(&fd) {
            self.sites[timer.site].closed += 1;
        }
    }

    pub fn apply(&mut self, event: &TimerfdEvent) {
        match event {
            TimerfdEvent::Existing { fd, state, .. } => {
                if self.open.contains_key(fd) {
                    return;
                }
                let site = self.site(&[]);
                self.sites[site].existing += 1;
                self.open.insert(
                    *fd,
                    Timer {
                        fd: *fd,
                        site,
                        clockid: state.clockid,
                        interval_ns: state.it_interval_ns,
                        state: Some(*state),
                        state_at_attach: Some(*state),
                        first_ticks: Some(state.ticks),
                        ..Default::default()
                    },
                );
            }
            TimerfdEvent::Created {
                at_ns,
                fd,
                clockid,
                stack,
                ..
            } => {
                match self.open.get(fd) {
                    // Seen by the scan at attach, which ran after the probes were attached: this
                    // is that timerfd's own creation, made in between, not a new one.
                    Some(seen) if seen.created_ns.is_none() && seen.state_at_attach.is_some() => {
                        let site = seen.site;
                        self.open.remove(fd);
                        self.sites[site].existing = self.sites[site].existing.saturating_sub(1);
                    }
                    // A reused fd whose close was missed.
                    _ => self.close(*fd),
                }
                let site = self.site(stack);
                let s = &mut self.sites[site];
                s.created += 1;
                s.first_created_ns.get_or_insert(*at_ns);
                s.last_created_ns = Some(*at_ns);
                self.open.insert(
                    *fd,
                    Timer {
                        fd: *fd,
                        site,
                        created_ns: Some(*at_ns),
                        clockid: *clockid,
                        ..Default::default()
                    },
                );
            }
            TimerfdEvent::Set {
                at_ns,
                fd,
                value_ns,
                interval_ns,
                deadline_ns,
                ret,
                stack,
                ..
            } => {
                if *ret != 0 {
                    return;
                }
                let Some(timer) = self.open.get_mut(fd) else {
                    return;
                };
                // Settle the previous arming.
                if let Some(previous) = timer.deadline_ns {
                    if *at_ns < previous {
                        if timer.interval_ns == 0 || timer.fired == 0 {
                            timer.pushed_back += 1;
                        }
                    } else {
                        // Saturating: counts and values are the target's (timerfd_settime
                        // arguments, read() results); past u64's end means "very many".
                        timer.fired = timer.fired.saturating_add(
                            expirations_since(previous, timer.interval_ns, *at_ns)
                                .saturating_add(1),
                        );
                    }
                }
                if *value_ns == 0 {
                    timer.disarms += 1;
                    timer.deadline_ns = None;
                } else {
                    timer.arms += 1;
                    timer.deadline_ns = *deadline_ns;
                    timer.last_value_ns = *value_ns;
                    if !stack.is_empty() {
                        timer.arm_stack = stack.clone();
                    }
                }
                timer.interval_ns = *interval_ns;
            }
            TimerfdEvent::Gettime { fd, .. } => {
                if let Some(timer) = self.open.get_mut(fd) {
                    timer.gettimes += 1;
                }
            }
            TimerfdEvent::Read {
                at_ns,
                fd,
                expirations,
                ..
            } => {
                let Some(timer) = self.open.get_mut(fd) else {
                    return;
                };
                timer.reads += 1;
                timer.expirations_read = timer.expirations_read.saturating_add(*expirations);
                if *expirations > 0 {
                    timer.fired = timer.fired.max(timer.expirations_read);
                    // A one-shot timer that fired is disarmed; a periodic one moves on.
                    match (timer.deadline_ns, timer.interval_ns) {
                        (Some(_), 0) => timer.deadline_ns = None,
                        (Some(d), i) => {
                            timer.deadline_ns = Some(
                                d.saturating_add(
                                    i.saturating_mul(expirations_since(d, i, *at_ns))
                                        .saturating_add(i),
                                ),
                            )
                        }
                        _ => {}
                    }
                }
            }
            TimerfdEvent::Closed { fd, .. } => self.close(*fd),
            TimerfdEvent::Snapshot { at_ns, fds } => {
                self.snapshot_at_ns = *at_ns;
                for (fd, state) in fds {
                    if let Some(timer) = self.open.get_mut(fd) {
                        timer.state = Some(*state);
                        timer.first_ticks.get_or_insert(state.ticks);
                        if state.ticks > 0 {
                            timer.fired = timer
                                .fired
                                .max(timer.expirations_read.saturating_add(state.ticks));
                        }
                    }
                }
            }
        }
    }
}

/// Expirations of a timer with first deadline `deadline` and period `interval` between the
/// deadline (exclusive) and `now`.
fn expirations_since(deadline: u64, interval: u64, now: u64) -> u64 {
    if interval == 0 || now <= deadline {
        0
    } else {
        (now - deadline) / interval
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::tests::frame;

    fn set(at: u64, fd: i32, value: u64, interval: u64) -> TimerfdEvent {
        TimerfdEvent::Set {
            at_ns: at,
            tid: 1,
            fd,
            flags: 0,
            value_ns: value,
            interval_ns: interval,
            deadline_ns: (value > 0).then_some(at + value),
            ret: 0,
            stack: vec![frame("arm")],
        }
    }

    fn created(at: u64, fd: i32) -> TimerfdEvent {
        TimerfdEvent::Created {
            at_ns: at,
            tid: 1,
            fd,
            clockid: 1,
            flags: 0,
            stack: vec![frame("timerfd_create"), frame("make")],
        }
    }

    #[test]
    fn rearming_before_the_deadline_pushes_back_and_after_it_fires() {
        let mut t = Timerfds::default();
        t.apply(&created(0, 5));
        for i in 0..5 {
            t.apply(&set(i * 200, 5, 1000, 0));
        }
        let timer = &t.open[&5];
        assert_eq!((timer.arms, timer.pushed_back, timer.fired), (5, 4, 0));
        t.apply(&set(5000, 5, 1000, 0));
        assert_eq!(t.open[&5].fired, 1);
    }

    #[test]
    fn periodic_reads_count_expirations_and_closes_count_per_site() {
        let mut t = Timerfds::default();
        t.apply(&created(0, 5));
        t.apply(&set(0, 5, 100, 100));
        for i in 1..=10 {
            t.apply(&TimerfdEvent::Read {
                at_ns: i * 100 + 1,
                tid: 1,
                fd: 5,
                ret: 8,
                expirations: 1,
            });
        }
        assert_eq!(t.open[&5].expirations_read, 10);
        assert_eq!(t.open[&5].pushed_back, 0);
        t.apply(&TimerfdEvent::Closed { at_ns: 2000, fd: 5 });
        assert!(t.open.is_empty());
        assert_eq!((t.sites[1].created, t.sites[1].closed), (1, 1));
    }

    #[test]
    fn a_creation_of_a_timerfd_the_attach_scan_already_found_is_that_timerfd() {
        let mut t = Timerfds::default();
        // The probes were attached, the command created fd 5, then the scan found it.
        t.apply(&TimerfdEvent::Existing {
            at_ns: 0,
            fd: 5,
            state: TimerfdState {
                clockid: 1,
                ..Default::default()
            },
        });
        t.apply(&created(1, 5));
        assert_eq!(t.open.len(), 1);
        assert_eq!(t.open[&5].created_ns, Some(1));
        assert_eq!((t.sites[0].existing, t.sites[0].closed), (0, 0));
        assert_eq!((t.sites[1].created, t.sites[1].closed), (1, 0));
    }
}
