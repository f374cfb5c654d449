//! Who created goroutines and started timers: uprobes in `runtime.newproc` (every `go`
//! statement) and in `time.newTimer` / `runtime.addtimer` (every timer start), attached in short
//! windows.
//!
//! A `go` statement or a timer start is cheap (a few hundred ns); a uprobe hit costs about half a
//! microsecond even on an emulated instruction, and a user stack capture more. A spawn storm or a
//! timer-heavy server traced all the time would run several times slower, so the probes are
//! attached for `WINDOW` of every `PERIOD` and take at most `STACKS_PER_WINDOW` stacks each a
//! window: creator stacks are a sample. Every goroutine still carries its `go` statement (the
//! runtime records it); a timer whose start was not seen keeps "creator unknown".
use std::time::{Duration, Instant};

use tracer_common::{GoCreation, GoTimerStart};

use crate::attach::Probes;
use crate::model::{Event, Frame};
use crate::symbolize::Symbolizer;

pub const WINDOW: Duration = Duration::from_millis(100);
pub const PERIOD: Duration = Duration::from_secs(1);
pub const STACKS_PER_WINDOW: u64 = 256;
/// How often the probes are looked after while a window is open.
pub const CHECK_EVERY: Duration = Duration::from_millis(10);
/// More hits than this in one window (20,000 a second) is a storm: the window closes at once and
/// the next ones come four times less often (up to `MAX_PERIOD`), so that a spawn storm pays the
/// trap for a few milliseconds, not for a tenth of its run.
pub const MAX_HITS_PER_WINDOW: u64 = tracer_common::go_budget::STORM_HITS;
pub const MAX_PERIOD: Duration = Duration::from_secs(60);

/// One Go uprobe: its program, where it goes in the executable, and its stack budget slot.
pub struct ProbePoint {
    pub program: &'static str,
    pub offset: u64,
    pub slot: u32,
    /// What it sees, for notes ("goroutine creations", "timer starts").
    pub what: &'static str,
}

pub struct GoProbes {
    pid: u32,
    points: Vec<ProbePoint>,
    open_since: Option<Instant>,
    /// The probes' hit count when the window opened.
    hits_at_open: u64,
    next_open: Instant,
    period: Duration,
    pub windows: u64,
    /// Windows closed early because the target created goroutines or timers too fast.
    pub storms: u64,
}

impl GoProbes {
    pub fn new(pid: u32, points: Vec<ProbePoint>) -> Self {
        GoProbes {
            pid,
            points,
            open_since: None,
            hits_at_open: 0,
            next_open: Instant::now(),
            period: PERIOD,
            windows: 0,
            storms: 0,
        }
    }

    /// The period between windows now (longer after storms).
    pub fn period(&self) -> Duration {
        self.period
    }

    /// Opens or closes the window as the schedule and the hit rate say. Called every
    /// `CHECK_EVERY`. A probe that cannot be attached is dropped, with a note; the others go on.
    pub fn tick(&mut self, probes: &mut Probes, notes: &mut Vec<String>) {
        let now = Instant::now();
        match self.open_since {
            Some(since) => {
                let hits = probes.go_probe_hits().saturating_sub(self.hits_at_open);
                let storm = hits > MAX_HITS_PER_WINDOW;
                if storm || now.duration_since(since) >= WINDOW {
                    probes.close_go_probes();
                    self.open_since = None;
                    if storm {
                        self.storms += 1;
                        self.period = (self.period * 4).min(MAX_PERIOD);
                    }
                    self.next_open = since + self.period;
                }
            }
            None if !self.points.is_empty() && now >= self.next_open => {
                let pid = self.pid;
                self.hits_at_open = probes.go_probe_hits();
                self.points.retain(|point| {
                    let opened = probes.open_go_probe(
                        point.program,
                        pid,
                        point.offset,
                        point.slot,
                        STACKS_PER_WINDOW,
                    );
                    if let Err(err) = &opened {
                        notes.push(format!(
                            "{err:#}: no creator stacks for {} from now on",
                            point.what
                        ));
                    }
                    opened.is_ok()
                });
                self.open_since = Some(now);
                self.windows += 1;
            }
            None => {}
        }
    }

    /// Whether a window is open (the target pays a trap per hit until it closes).
    pub fn is_open(&self) -> bool {
        self.open_since.is_some()
    }

    pub fn close(&mut self, probes: &mut Probes) {
        probes.close_go_probes();
        self.open_since = None;
    }
}

/// The stack of whoever called the probed function, innermost first, starting at the call:
/// the captured stack's first frame is inside the probed function and its second is the
/// caller's caller (the probed function had not pushed its frame yet), so the call itself
/// comes from the record; newer kernels add it themselves (then it is the second frame).
fn caller_stack(
    caller_pc: u64,
    stack_id: i32,
    probes: &Probes,
    symbolizer: &mut Symbolizer,
) -> Vec<Frame> {
    let mut return_addresses = vec![caller_pc];
    if let Some(ips) = probes.stack(stack_id) {
        let skip = if ips.get(1) == Some(&caller_pc) { 2 } else { 1 };
        return_addresses.extend(ips.into_iter().skip(skip));
    }
    symbolizer.return_addresses(&return_addresses)
}

/// A `go` statement ran: the creator's stack from the `go` statement out.
pub fn creation_event(
    creation: &GoCreation,
    probes: &Probes,
    symbolizer: &mut Symbolizer,
) -> Event {
    Event::GoroutineCreated {
        go_pc: creation.go_pc,
        creator_stack: caller_stack(creation.go_pc, creation.stack_id, probes, symbolizer),
        creator_goid: creation.creator_goid,
        creator_gopc: creation.creator_gopc,
    }
}

/// A timer was started: the starter's stack from the call out (`time.AfterFunc`, then the
/// program's code), keyed as the timer snapshot sees the timer (`key_is_arg`: its `arg` data
/// word on Go 1.23+, else its address). `funcs_known`: the probe could read the timer's
/// functions (Go 1.23+ registers, or the timer layout before); then an `AfterFunc` timer
/// (it runs `time.goFunc`) names its callback.
pub fn timer_start_event(
    start: &GoTimerStart,
    key_is_arg: bool,
    funcs_known: bool,
    probes: &Probes,
    symbolizer: &mut Symbolizer,
) -> Event {
    let after_func = funcs_known
        && start.func_pc != 0
        && symbolizer.function_at(start.func_pc).as_deref() == Some("time.goFunc");
    Event::GoTimerStarted {
        key: if key_is_arg { start.rsi } else { start.rax },
        starter_stack: caller_stack(start.caller_pc, start.stack_id, probes, symbolizer),
        callback: (after_func && start.arg_pc != 0)
            .then(|| symbolizer.function_at(start.arg_pc))
            .flatten(),
    }
}
