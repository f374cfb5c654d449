//! Probe windows of the low-cost mode (`--detail low`): when the syscall tracepoints are
//! attached.
//!
//! An attached syscall tracepoint costs every process of the host (see `attach::Detail`), so
//! in the low mode the window programs (raw `sys_enter` and `sys_exit`, dispatching on the
//! syscall number: tracer-ebpf `raw.rs`) are attached only for:
//! - a first window of [`FIRST_WINDOW`] when the trace starts: the set-up of event loops and
//!   timers, a first sample of completed waits and wakes;
//! - then [`WINDOW`] every [`PERIOD`] (a 5% duty cycle): completed waits, wakes on watched
//!   futex words, epoll and timerfd activity, as samples;
//! - a window of [`WINDOW`] narrowed to the syscalls in question when a /proc scan finds a new
//!   suspect: a thread blocked past the threshold in a wait no window has seen (its futex word
//!   is watched, so the window counts who wakes it), at most one every [`PERIOD`].
//!
//! What a window watches (futex only for a suspect; epoll, timerfd, reads and closes only when
//! the target has such fds) is a bit mask in a map, not a set of attachments. Attaching and
//! detaching the two programs takes ~0.2-0.4 ms each way here (measured with
//! `LEAKTRACE_WINDOW_LOG=1`; the per-syscall tracepoints this replaced took ~45-80 ms each to
//! detach under the kernel's `event_mutex`, ~1-2 s for a Go server's window). Detaching still
//! happens on a thread of its own, and a window lasts until it is done; to keep the duty cycle
//! at [`DUTY_CYCLE`] whatever that takes, the next window opens no sooner than the time the last
//! one was attached times (1 / [`DUTY_CYCLE`] - 1) after it closed.
//!
//! A window that brings more than [`STORM_RECORDS_PER_S`] records a second (a futex or I/O
//! storm), or in which the target makes more than [`STORM_CALLS_PER_S`] syscalls a second (a
//! busy event loop or server: each of its syscalls pays for the window programs), closes at
//! once, and the next ones come twice as rarely, up to [`MAX_PERIOD`]; a window without a
//! storm brings the period back to [`PERIOD`]. Everything between windows comes from state: /proc (which syscall a thread is
//! blocked in, its arguments, its context switch counts, fdinfo) and the target's memory.
use std::time::Duration;

use tokio::time::Instant;

use crate::attach::Group;

pub const FIRST_WINDOW: Duration = Duration::from_secs(2);
pub const WINDOW: Duration = Duration::from_millis(250);
pub const PERIOD: Duration = Duration::from_secs(5);
pub const MAX_PERIOD: Duration = Duration::from_secs(60);
/// A window is not judged a storm before this long (the first records of a window include the
/// waits that were already in progress).
pub const MIN_WINDOW: Duration = Duration::from_millis(50);
/// Records a second (sent or lost) beyond which a window is a storm: 10,000 a second is ~3 µs
/// of the target's time per ms in probes alone, more than the whole budget of the low mode.
pub const STORM_RECORDS_PER_S: u64 = 10_000;
/// The target's syscalls a second beyond which a window is a storm (see
/// [`tracer_common::STORM_CALLS_PER_S`] for why this many).
pub const STORM_CALLS_PER_S: u64 = tracer_common::STORM_CALLS_PER_S;
/// The share of the trace the syscall tracepoints may be attached after the first window.
pub const DUTY_CYCLE: f64 = 0.05;
/// What detaching one window program takes, with margin (measured here: 0.2-0.3 ms for both
/// raw tracepoints, see the module doc).
pub const DETACH_EACH: Duration = Duration::from_millis(5);
/// How often an open window checks for a storm.
pub const CHECK_EVERY: Duration = Duration::from_millis(25);

/// What the kernel counted so far (cumulative), against which an open window is judged.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Load {
    /// Records sent or lost.
    pub records: u64,
    /// The target's syscalls while a window was attached (`counter::WINDOW_CALLS`).
    pub calls: u64,
}

/// What the schedule wants done now.
#[derive(Debug, PartialEq, Eq)]
pub enum Change {
    /// Open a window: `Some` for a suspect's syscalls, None for the periodic window (the
    /// collector picks what the target needs).
    Open(Option<Vec<Group>>),
    Close,
}

struct Open {
    /// Closing: its tracepoints are being detached.
    closing: bool,
    /// How long detaching its tracepoints will take (estimated).
    detach: Duration,
    since: Instant,
    since_ns: u64,
    length: Duration,
    at_open: Load,
}

pub struct Windows {
    open: Option<Open>,
    next_open: Instant,
    period: Duration,
    /// A suspect window asked for, with its groups.
    suspect: Option<Vec<Group>>,
    next_suspect: Instant,
    /// No window of any kind before this: the duty cycle.
    duty_ready: Instant,
    /// Windows opened, windows closed early by a storm, suspect windows.
    pub count: u64,
    pub storms: u64,
    pub suspect_windows: u64,
    /// Time covered by closed windows (ns).
    pub covered_ns: u64,
    /// CLOCK_MONOTONIC ns of the last close (0: none yet).
    pub last_closed_ns: u64,
}

impl Windows {
    /// The schedule of a trace whose first window was opened at attach (`Probes::load_with`).
    /// `load`: what the kernel had counted when the window opened.
    pub fn started(now: Instant, now_ns: u64, load: Load) -> Self {
        Windows {
            open: Some(Open {
                closing: false,
                detach: Duration::ZERO,
                since: now,
                since_ns: now_ns,
                length: FIRST_WINDOW,
                at_open: load,
            }),
            next_open: now + PERIOD,
            period: PERIOD,
            suspect: None,
            next_suspect: now,
            duty_ready: now,
            count: 1,
            storms: 0,
            suspect_windows: 0,
            covered_ns: 0,
            last_closed_ns: 0,
        }
    }

    /// Open or closing: syscall tracepoints may be attached.
    pub fn is_open(&self) -> bool {
        self.open.is_some()
    }

    /// Its tracepoints are being detached ([`Change::Close`] was returned).
    pub fn is_closing(&self) -> bool {
        self.open.as_ref().is_some_and(|open| open.closing)
    }

    /// When [`Windows::change`] should be asked next.
    pub fn next_check(&self, now: Instant) -> Instant {
        match &self.open {
            Some(open) if open.closing => now + CHECK_EVERY,
            // Past its length but kept open (the trace ends first): checked as often as ever.
            Some(open) => (open.since + open.length)
                .max(now)
                .min(now + CHECK_EVERY)
                .max(now + Duration::from_millis(1)),
            None if self.suspect.is_some() => self.duty_ready.max(now),
            None => self.next_open,
        }
    }

    /// Asks for a window narrowed to `groups` for a new suspect (ignored when one was opened
    /// less than a period ago or a window is open: that one sees it).
    pub fn suspect(&mut self, groups: Vec<Group>, now: Instant) {
        if self.open.is_none() && now >= self.next_suspect && self.suspect.is_none() {
            self.suspect = Some(groups);
        }
    }

    /// The open window has `tracepoints` programs attached: detaching them takes about
    /// [`DETACH_EACH`] each.
    pub fn attached(&mut self, tracepoints: usize) {
        if let Some(open) = self.open.as_mut() {
            open.detach = DETACH_EACH * tracepoints as u32;
        }
    }

    /// What to do now, given what the kernel counted so far (cumulative), and when the trace
    /// ends (a window whose detaching would not finish before then stays open: closing it would
    /// spare the host nothing).
    pub fn change(&mut self, now: Instant, load: Load, ends: Option<Instant>) -> Option<Change> {
        match &mut self.open {
            Some(open) if open.closing => None,
            Some(open) => {
                let elapsed = now.duration_since(open.since);
                let over = |seen: u64, at_open: u64, per_s: u64| {
                    seen.saturating_sub(at_open) as f64 > per_s as f64 * elapsed.as_secs_f64()
                };
                let storm = elapsed >= MIN_WINDOW
                    && (over(load.records, open.at_open.records, STORM_RECORDS_PER_S)
                        || over(load.calls, open.at_open.calls, STORM_CALLS_PER_S));
                let ends_first = ends.is_some_and(|end| end <= now + open.detach);
                if storm || (elapsed >= open.length && !ends_first) {
                    if storm {
                        self.storms += 1;
                        self.period = (self.period * 2).min(MAX_PERIOD);
                    } else {
                        self.period = PERIOD;
                    }
                    self.next_open = open.since + self.period;
                    open.closing = true;
                    return Some(Change::Close);
                }
                None
            }
            None => {
                if now < self.duty_ready {
                    return None;
                }
                if let Some(groups) = self.suspect.take() {
                    self.suspect_windows += 1;
                    self.next_suspect = now + PERIOD;
                    return Some(Change::Open(Some(groups)));
                }
                (now >= self.next_open).then_some(Change::Open(None))
            }
        }
    }

    /// The window was opened (after [`Change::Open`]).
    pub fn opened(&mut self, now: Instant, now_ns: u64, load: Load) {
        self.count += 1;
        if log_windows() {
            eprintln!("leaktrace: window {} open at {now_ns} ns", self.count);
        }
        self.open = Some(Open {
            closing: false,
            detach: Duration::ZERO,
            since: now,
            since_ns: now_ns,
            length: WINDOW,
            at_open: load,
        });
    }

    /// Marks the open window closing out of the schedule (the trace ends, or it failed to
    /// open).
    pub fn close(&mut self) {
        if let Some(open) = self.open.as_mut() {
            open.closing = true;
        }
    }

    /// The window's tracepoints are all detached (after [`Change::Close`], or at the end of
    /// the trace).
    pub fn closed(&mut self, now: Instant, now_ns: u64) {
        if let Some(open) = self.open.take() {
            let attached_ns = now_ns.saturating_sub(open.since_ns);
            if log_windows() {
                eprintln!(
                    "leaktrace: window {} closed at {now_ns} ns after {} ms attached",
                    self.count,
                    attached_ns / 1_000_000
                );
            }
            self.covered_ns += attached_ns;
            self.last_closed_ns = now_ns;
            // The first window's 2 s are the trace's start-up sample, not held against the
            // cycle; its detaching is.
            let held = if open.length == FIRST_WINDOW {
                attached_ns.saturating_sub(FIRST_WINDOW.as_nanos() as u64)
            } else {
                attached_ns
            };
            let rest = Duration::from_nanos(held).mul_f64(1.0 / DUTY_CYCLE - 1.0);
            self.next_open = self.next_open.max(now + rest);
            self.duty_ready = now + rest;
        }
    }

    /// The period between windows now (longer after storms).
    pub fn period(&self) -> Duration {
        self.period
    }
}

/// `LEAKTRACE_WINDOW_LOG=1`: each window's opening and closing on stderr, with
/// CLOCK_MONOTONIC times (`cargo xtask bench host` uses it to run between windows).
fn log_windows() -> bool {
    std::env::var_os("LEAKTRACE_WINDOW_LOG").is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    impl Windows {
        fn change3(&mut self, now: Instant, records: u64) -> Option<Change> {
            self.change(now, self::records(records), None)
        }
    }

    fn records(records: u64) -> Load {
        Load { records, calls: 0 }
    }

    #[test]
    fn a_window_stays_open_when_the_trace_ends_before_its_detaching_would() {
        let t0 = Instant::now();
        let mut w = Windows::started(t0, 0, Load::default());
        w.attached(20);
        // Ends before the 20 programs' detaching would be done.
        let end = t0 + FIRST_WINDOW + DETACH_EACH * 10;
        assert_eq!(
            w.change(t0 + FIRST_WINDOW, Load::default(), Some(end)),
            None
        );
        let later = t0 + Duration::from_secs(10);
        assert_eq!(
            w.change(t0 + FIRST_WINDOW, Load::default(), Some(later)),
            Some(Change::Close)
        );
    }

    #[test]
    fn the_first_window_closes_after_its_length_then_windows_come_every_period() {
        let t0 = Instant::now();
        let mut w = Windows::started(t0, 0, Load::default());
        assert!(w.is_open());
        assert_eq!(w.change3(t0 + Duration::from_secs(1), 100), None);
        assert_eq!(w.change3(t0 + FIRST_WINDOW, 200), Some(Change::Close));
        w.closed(t0 + FIRST_WINDOW, 2_000_000_000);
        assert_eq!(w.covered_ns, 2_000_000_000);
        // The first window is not held against the duty cycle.
        assert_eq!(w.change3(t0 + Duration::from_secs(4), 200), None);
        let open_at = t0 + PERIOD;
        assert!(matches!(w.change3(open_at, 200), Some(Change::Open(_))));
        w.opened(open_at, 5_000_000_000, records(200));
        assert_eq!(w.change3(open_at + WINDOW, 300), Some(Change::Close));
        assert!(w.is_closing());
        assert_eq!(w.change3(open_at + WINDOW, 300), None);
        // Detaching took 250 ms more: 500 ms attached, so 9.5 s until the next one.
        let closed_at = open_at + WINDOW * 2;
        w.closed(closed_at, 5_500_000_000);
        assert_eq!(w.covered_ns, 2_500_000_000);
        assert_eq!(w.count, 2);
        assert_eq!(
            w.next_check(closed_at),
            closed_at + Duration::from_millis(9_500)
        );
    }

    #[test]
    fn a_storm_closes_the_window_and_stretches_the_period() {
        let t0 = Instant::now();
        let mut w = Windows::started(t0, 0, Load::default());
        let at = t0 + Duration::from_millis(100);
        // 100 ms: 1,000 records allowed; 50,000 seen.
        assert_eq!(w.change3(at, 50_000), Some(Change::Close));
        w.closed(at, 100_000_000);
        assert_eq!(w.storms, 1);
        assert_eq!(w.period(), PERIOD * 2);
        let next = t0 + PERIOD * 2;
        assert_eq!(w.change3(next - Duration::from_millis(1), 50_000), None);
        assert!(matches!(w.change3(next, 50_000), Some(Change::Open(_))));
        w.opened(next, 0, records(50_000));
        // A quiet window brings the period back.
        assert_eq!(w.change3(next + WINDOW, 50_010), Some(Change::Close));
        assert_eq!(w.period(), PERIOD);
    }

    #[test]
    fn a_window_on_a_target_making_syscalls_all_the_time_is_a_storm() {
        let t0 = Instant::now();
        let mut w = Windows::started(t0, 0, Load::default());
        let at = t0 + Duration::from_millis(100);
        // 100 ms: 3,000 of the target's syscalls allowed; few records, 120,000 calls (a busy
        // epoll loop).
        let busy = Load {
            records: 10,
            calls: 120_000,
        };
        assert_eq!(w.change(at, busy, None), Some(Change::Close));
        w.closed(at, 100_000_000);
        assert_eq!((w.storms, w.period()), (1, PERIOD * 2));
        // A target making a few hundred syscalls a second keeps its window.
        let mut w = Windows::started(t0, 0, Load::default());
        let calm = Load {
            records: 10,
            calls: 500,
        };
        assert_eq!(w.change(t0 + Duration::from_secs(1), calm, None), None);
    }

    #[test]
    fn a_suspect_window_opens_at_once_but_at_most_once_a_period() {
        let t0 = Instant::now();
        let mut w = Windows::started(t0, 0, Load::default());
        assert_eq!(w.change3(t0 + FIRST_WINDOW, 0), Some(Change::Close));
        w.closed(t0 + FIRST_WINDOW, 0);
        let at = t0 + Duration::from_secs(3);
        w.suspect(vec![Group::Futex], at);
        assert_eq!(w.next_check(at), at);
        assert_eq!(
            w.change3(at, 0),
            Some(Change::Open(Some(vec![Group::Futex])))
        );
        w.opened(at, 1_000, records(0));
        assert_eq!(w.change3(at + WINDOW, 0), Some(Change::Close));
        // Attached 250 ms: no window of any kind for 19 times that.
        w.closed(at + WINDOW, 1_000 + 250_000_000);
        w.suspect(vec![Group::Futex], at + Duration::from_secs(1));
        assert_eq!(w.change3(at + Duration::from_secs(1), 0), None);
        assert_eq!(w.suspect_windows, 1);
        let later = at + WINDOW + Duration::from_millis(4_700);
        w.suspect(vec![Group::Futex], later);
        assert_eq!(w.change3(later, 0), None, "the duty cycle holds it back");
        let ready = at + Duration::from_secs(5) + Duration::from_millis(10);
        w.suspect(vec![Group::Futex], ready);
        assert!(matches!(w.change3(ready, 0), Some(Change::Open(_))));
    }
}
