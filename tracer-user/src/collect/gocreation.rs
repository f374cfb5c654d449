//! Creator stacks of goroutines: a uprobe in `runtime.newproc`, attached in short windows.
//!
//! A `go` statement is cheap (a few hundred ns); a uprobe hit costs about half a microsecond
//! even on an emulated instruction, and a user stack capture more. A spawn storm traced all the
//! time would run several times slower, so the probe is attached for `WINDOW` of every `PERIOD`
//! and takes at most `STACKS_PER_WINDOW` stacks a window: the creator stacks are a sample, and
//! every goroutine still carries its `go` statement, which the runtime records itself.
use std::time::{Duration, Instant};

use tracer_common::GoCreation;

use crate::attach::Probes;
use crate::model::Event;
use crate::symbolize::Symbolizer;

pub const WINDOW: Duration = Duration::from_millis(100);
pub const PERIOD: Duration = Duration::from_secs(1);
pub const STACKS_PER_WINDOW: u64 = 256;

pub struct CreationProbe {
    pid: u32,
    /// File offset of the probe in the target's executable.
    offset: u64,
    open_since: Option<Instant>,
    next_open: Instant,
    pub windows: u64,
    /// Set when attaching failed: not tried again.
    failed: bool,
}

impl CreationProbe {
    pub fn new(pid: u32, offset: u64) -> Self {
        CreationProbe {
            pid,
            offset,
            open_since: None,
            next_open: Instant::now(),
            windows: 0,
            failed: false,
        }
    }

    /// Opens or closes the window as the schedule says. Called on every drain tick.
    pub fn tick(&mut self, probes: &mut Probes, notes: &mut Vec<String>) {
        let now = Instant::now();
        match self.open_since {
            Some(since) if now.duration_since(since) >= WINDOW => {
                probes.close_go_creation_window();
                self.open_since = None;
                self.next_open = since + PERIOD;
            }
            None if !self.failed && now >= self.next_open => {
                match probes.open_go_creation_window(self.pid, self.offset, STACKS_PER_WINDOW) {
                    Ok(()) => {
                        self.open_since = Some(now);
                        self.windows += 1;
                    }
                    Err(err) => {
                        self.failed = true;
                        notes.push(format!(
                            "{err:#}: goroutine candidates show the go statement only, not the creator's stack"
                        ));
                    }
                }
            }
            _ => {}
        }
    }

    pub fn close(&mut self, probes: &mut Probes) {
        probes.close_go_creation_window();
        self.open_since = None;
    }
}

/// The model event for a creation record: the creator's stack, innermost first, starting at
/// the `go` statement. The captured stack's first frame is inside `runtime.newproc` and its
/// second is the creator's caller (the creator had not pushed its frame yet when the probe
/// fired), so the `go` statement itself comes from the record, unless the kernel added it.
pub fn creation_event(
    creation: &GoCreation,
    probes: &Probes,
    symbolizer: &mut Symbolizer,
) -> Event {
    let mut return_addresses = vec![creation.go_pc];
    if let Some(ips) = probes.stack(creation.stack_id) {
        // Newer kernels add the return address at [sp] themselves for a uprobe in a prologue
        // (it is then the second frame); older ones do not.
        let skip = if ips.get(1) == Some(&creation.go_pc) {
            2
        } else {
            1
        };
        return_addresses.extend(ips.into_iter().skip(skip));
    }
    Event::GoroutineCreated {
        go_pc: creation.go_pc,
        creator_stack: symbolizer.return_addresses(&return_addresses),
    }
}
