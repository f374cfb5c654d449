//! The Go runtime's pending timers, read from process memory like the goroutines: no probes, no
//! cost to the target. Every P keeps its timers in a heap; leaktrace walks `runtime.allp`, each
//! P's heap and each timer.
//!
//! Two implementations, both laid out from the binary's DWARF (never guessed):
//! - Go 1.19-1.22: `p.timers []*timer`; `timer.status` (timerWaiting, timerDeleted, ...) and
//!   `timer.nextwhen` for timers modified but not yet moved in the heap.
//! - Go 1.23+: `p.timers` is a `runtime.timers` whose `heap []timerWhen` holds `{timer, when}`;
//!   `timer.astate` bits (heaped, modified, zombie = stopped but still in the heap),
//!   `timer.isChan`. A channel timer is in a heap only while a goroutine is blocked on its
//!   channel; unstopped, unreferenced ones are collected by the GC.
//!
//! What each timer is follows from `timer.f`: `time.goFunc` (AfterFunc, whose `arg` is the
//! user's func), `time.sendTime` (NewTimer/After, or a Ticker when `period > 0`; `arg` is the
//! channel), `runtime.goroutineReady` (time.Sleep), others (network deadlines, ...).
use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};
use serde::{Deserialize, Serialize};

use super::binary::StructLayout;
use super::memory::{u32_at, u64_at};
use super::GoProcess;

/// More timers than this in all P heaps together means we read garbage.
const MAX_TIMERS_PER_P: u64 = 50_000_000;
/// More Ps than this means we read garbage.
const MAX_PS: u64 = 1 << 16;
/// Timers closer than this are read in one copy.
const TIMER_MERGE_GAP: u64 = 64;

/// Go 1.19-1.22 `timer.status` values.
mod status {
    pub const DELETED: u32 = 3;
    pub const REMOVING: u32 = 4;
    pub const REMOVED: u32 = 5;
    pub const MODIFIED_EARLIER: u32 = 7;
    pub const MODIFIED_LATER: u32 = 8;
    pub const MOVING: u32 = 9;
}
/// Go 1.23+ `timer.state` bit: stopped, still in the heap until cleaned.
const TIMER_ZOMBIE: u8 = 4;

/// Where the timer fields are, from DWARF.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimerLayout {
    /// Offset of the timer heap's slice header inside `runtime.p` (`p.timers` before 1.23,
    /// `p.timers.heap` since).
    pub p_heap: u64,
    /// Size of one heap entry and where its timer pointer is (8 and 0 before 1.23: `*timer`;
    /// 16 and `timerWhen.timer` since).
    pub entry_size: u64,
    pub entry_timer: u64,
    pub when: u64,
    pub period: u64,
    pub f: u64,
    pub arg: u64,
    pub implementation: TimerImplementation,
    /// `hchan.qcount` and `hchan.dataqsiz`: whether a timer's channel is full (nobody took the
    /// last value).
    pub hchan_qcount: u64,
    pub hchan_dataqsiz: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimerImplementation {
    /// Go 1.19-1.22.
    Status { status: u64, nextwhen: u64 },
    /// Go 1.23+.
    State {
        state: u64,
        is_chan: u64,
        blocked: u64,
    },
}

impl TimerLayout {
    pub(crate) fn from_dwarf(structs: &HashMap<String, StructLayout>) -> Result<TimerLayout> {
        let field = |ty: &str, member: &str| -> Result<u64> {
            structs
                .get(ty)
                .and_then(|layout| layout.members.get(member))
                .copied()
                .ok_or_else(|| anyhow!("no {ty}.{member} in the binary's DWARF"))
        };
        let p_timers = field("runtime.p", "timers")?;
        let new = structs
            .get("runtime.timers")
            .is_some_and(|t| t.members.contains_key("heap"));
        let (p_heap, entry_size, entry_timer, implementation) = if new {
            let entry = structs
                .get("runtime.timerWhen")
                .ok_or_else(|| anyhow!("no runtime.timerWhen in the binary's DWARF"))?;
            (
                p_timers + field("runtime.timers", "heap")?,
                entry.size.unwrap_or(16),
                field("runtime.timerWhen", "timer")?,
                TimerImplementation::State {
                    // astate is the copy published at each unlock: consistent without the lock.
                    state: field("runtime.timer", "astate")
                        .or_else(|_| field("runtime.timer", "state"))?,
                    is_chan: field("runtime.timer", "isChan")?,
                    blocked: field("runtime.timer", "blocked")?,
                },
            )
        } else {
            (
                p_timers,
                8,
                0,
                TimerImplementation::Status {
                    status: field("runtime.timer", "status")?,
                    nextwhen: field("runtime.timer", "nextwhen")?,
                },
            )
        };
        Ok(TimerLayout {
            p_heap,
            entry_size,
            entry_timer,
            when: field("runtime.timer", "when")?,
            period: field("runtime.timer", "period")?,
            f: field("runtime.timer", "f")?,
            arg: field("runtime.timer", "arg")?,
            implementation,
            hchan_qcount: field("runtime.hchan", "qcount")?,
            hchan_dataqsiz: field("runtime.hchan", "dataqsiz")?,
        })
    }

    fn read_len(&self) -> usize {
        let extra = match self.implementation {
            TimerImplementation::Status { status, nextwhen } => status.max(nextwhen),
            TimerImplementation::State {
                state,
                is_chan,
                blocked,
            } => state.max(is_chan).max(blocked),
        };
        // arg is an interface: two words.
        let last = [self.when, self.period, self.f, self.arg + 8, extra]
            .into_iter()
            .max()
            .unwrap_or(0);
        last as usize + 8
    }
}

/// One timer in a P's heap, as read from the target's memory.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimerState {
    /// Address of the `runtime.timer`.
    pub addr: u64,
    /// Index of the P whose heap holds it.
    pub p: usize,
    /// When it fires next: `nanotime()` (CLOCK_MONOTONIC ns).
    pub when_ns: i64,
    /// Period of a ticker, 0 for one-shot timers.
    pub period_ns: i64,
    /// The function the runtime calls when it fires (`time.goFunc`, `time.sendTime`, ...).
    pub func: Option<String>,
    /// For AfterFunc timers: the entry of the user's function.
    pub callback_pc: Option<u64>,
    /// The data word of the timer's `arg` (AfterFunc: the user's func value; channel timers:
    /// the channel): what the timer-start probe sees on Go 1.23+.
    pub arg_data: u64,
    /// For timers that send on a channel: whether its buffer is full (the last value was never
    /// received).
    pub chan_full: Option<bool>,
    /// Go 1.23+: goroutines blocked on the timer's channel.
    pub blocked: Option<u32>,
    /// Go 1.23+: the timer has a channel (NewTimer, After, NewTicker).
    pub is_chan: Option<bool>,
    /// Stopped (deleted / zombie) but not yet removed from the heap: not pending.
    pub stopped: bool,
}

/// All timers in all P heaps at one moment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimerSnapshot {
    pub timers: Vec<TimerState>,
    /// Ps walked.
    pub ps: usize,
    /// Entries skipped because what was read did not hold together (the target changed them
    /// while we read).
    pub torn: usize,
    pub taken_at_ns: u64,
    pub elapsed: Duration,
}

impl GoProcess {
    /// Why timers cannot be read, if they cannot.
    pub fn timers_unreadable(&self) -> Option<String> {
        match (&self.timer_layout, self.allp) {
            (Err(e), _) => Some(e.clone()),
            (_, None) => Some(
                "no runtime.allp in the symbol table (stripped binary): the P timer heaps \
                 cannot be found"
                    .into(),
            ),
            _ => None,
        }
    }

    /// Reads every timer in every P's heap. Fails when the list of Ps cannot be read (the
    /// process is gone) or timers are not readable in this binary.
    pub fn timers(&self) -> Result<TimerSnapshot> {
        let started = Instant::now();
        let taken_at_ns = super::monotonic_ns();
        let (layout, allp) = match (&self.timer_layout, self.allp) {
            (Ok(layout), Some(allp)) => (layout, allp),
            _ => bail!(
                "{}",
                self.timers_unreadable()
                    .unwrap_or_else(|| "no timer layout".into())
            ),
        };
        let context = || {
            format!(
                "cannot read the Go runtime's Ps of PID {} (has it exited?)",
                self.pid
            )
        };
        let allp = allp.wrapping_add(self.bias);
        let ptr = self.memory.read_u64(allp).with_context(context)?;
        let len = self.memory.read_u64(allp + 8).with_context(context)?;
        if len == 0 || len > MAX_PS || ptr == 0 {
            bail!(
                "PID {}: runtime.allp reads as {len} Ps at {ptr:#x}: not a Go runtime leaktrace \
                 understands",
                self.pid
            );
        }
        let ps = self
            .memory
            .read_vec(ptr, len as usize * 8)
            .with_context(context)?;
        let ps: Vec<u64> = ps
            .chunks_exact(8)
            .map(|w| u64::from_le_bytes(w.try_into().expect("8 bytes")))
            .collect();
        // Each P's heap slice header.
        let headers: Vec<(u64, usize)> = ps
            .iter()
            .map(|&p| match p.checked_add(layout.p_heap) {
                // A P pointer that wraps is garbage: read nothing for it.
                Some(header) if p != 0 => (header, 16),
                _ => (0, 0),
            })
            .collect();
        let (header_buf, header_at) = self.memory.read_ranges(&headers);
        let mut torn = 0;
        let mut heaps = Vec::with_capacity(ps.len());
        // All heaps are read into one buffer: their sum is what must stay bounded, not each.
        let mut entries_total: u64 = 0;
        for (i, at) in header_at.iter().enumerate() {
            let Some(at) = *at else { continue };
            if headers[i].1 == 0 {
                continue;
            }
            let (Some(heap), Some(count)) = (u64_at(&header_buf, at), u64_at(&header_buf, at + 8))
            else {
                continue;
            };
            if count == 0 {
                continue;
            }
            if heap == 0 || count > MAX_TIMERS_PER_P - entries_total {
                torn += 1;
                continue;
            }
            entries_total += count;
            heaps.push((i, heap, (count * layout.entry_size) as usize));
        }
        let heap_ranges: Vec<(u64, usize)> = heaps.iter().map(|&(_, a, l)| (a, l)).collect();
        let (heap_buf, heap_at) = self.memory.read_ranges(&heap_ranges);
        let mut entries: Vec<(usize, u64)> = Vec::new();
        for (&(p, _, len), at) in heaps.iter().zip(heap_at) {
            let Some(at) = at else {
                torn += 1;
                continue;
            };
            for entry in heap_buf[at..at + len].chunks_exact(layout.entry_size as usize) {
                match u64_at(entry, layout.entry_timer as usize) {
                    Some(t) if t != 0 && t.is_multiple_of(8) => entries.push((p, t)),
                    _ => torn += 1,
                }
            }
        }
        let t_len = layout.read_len();
        let ranges: Vec<(u64, usize)> = entries.iter().map(|&(_, t)| (t, t_len)).collect();
        let (t_buf, t_at) = self.memory.read_coalesced(&ranges, TIMER_MERGE_GAP);
        let mut timers = Vec::with_capacity(entries.len());
        // Second round: what f and arg point to.
        let mut f_values = Vec::new();
        let mut arg_data = Vec::new();
        for (&(p, addr), at) in entries.iter().zip(t_at) {
            let Some(at) = at else {
                torn += 1;
                continue;
            };
            let buf = &t_buf[at..at + t_len];
            let word = |o: u64| u64_at(buf, o as usize);
            let (Some(when), Some(period), Some(f), Some(data)) = (
                word(layout.when),
                word(layout.period),
                word(layout.f),
                word(layout.arg + 8),
            ) else {
                torn += 1;
                continue;
            };
            let (mut when, period) = (when as i64, period as i64);
            let mut state = TimerState {
                addr,
                p,
                when_ns: when,
                period_ns: period,
                func: None,
                callback_pc: None,
                arg_data: 0,
                chan_full: None,
                blocked: None,
                is_chan: None,
                stopped: false,
            };
            match layout.implementation {
                TimerImplementation::Status { status, nextwhen } => {
                    let status = u32_at(buf, status as usize).unwrap_or(0);
                    state.stopped =
                        matches!(status, status::DELETED | status::REMOVING | status::REMOVED);
                    if matches!(status, status::MODIFIED_EARLIER | status::MODIFIED_LATER) {
                        when = word(nextwhen).unwrap_or(0) as i64;
                    }
                    if status == 0 || status > status::MOVING {
                        // timerNoStatus in a heap, or not a status at all: torn.
                        torn += 1;
                        continue;
                    }
                }
                TimerImplementation::State {
                    state: state_at,
                    is_chan,
                    blocked,
                } => {
                    let bits = buf.get(state_at as usize).copied().unwrap_or(0);
                    state.stopped = bits & TIMER_ZOMBIE != 0;
                    state.is_chan = buf.get(is_chan as usize).map(|&b| b != 0);
                    state.blocked = u32_at(buf, blocked as usize);
                }
            }
            if when <= 0 {
                state.stopped = true;
            }
            if period < 0 || f == 0 {
                torn += 1;
                continue;
            }
            state.when_ns = when;
            state.arg_data = data;
            f_values.push(f);
            arg_data.push(data);
            timers.push(state);
        }
        // f is a func value: a pointer to a funcval whose first word is the code. There are few
        // distinct ones (time.goFunc, time.sendTime, ...).
        let mut distinct_f: Vec<u64> = f_values.clone();
        distinct_f.sort_unstable();
        distinct_f.dedup();
        let f_ranges: Vec<(u64, usize)> = distinct_f.iter().map(|&f| (f, 8)).collect();
        let (f_buf, f_at) = self.memory.read_ranges(&f_ranges);
        let f_names: HashMap<u64, Option<String>> = distinct_f
            .iter()
            .zip(f_at)
            .map(|(&f, at)| {
                let name = at
                    .and_then(|at| u64_at(&f_buf, at))
                    .and_then(|pc| self.function_at(pc));
                (f, name)
            })
            .collect();
        // The arg's data word: for AfterFunc the user's funcval, for channel timers the hchan.
        let mut arg_ranges = Vec::with_capacity(timers.len());
        for (timer, (&f, &data)) in timers.iter_mut().zip(f_values.iter().zip(&arg_data)) {
            timer.func = f_names.get(&f).cloned().flatten();
            let range = match timer.func.as_deref() {
                Some("time.goFunc") if data != 0 => (data, 8),
                Some("time.sendTime") if data != 0 => (
                    data,
                    (layout.hchan_qcount.max(layout.hchan_dataqsiz) + 8) as usize,
                ),
                _ => (0, 0),
            };
            arg_ranges.push(range);
        }
        let (arg_buf, arg_at) = self.memory.read_coalesced(&arg_ranges, 0);
        for ((timer, at), &(_, len)) in timers.iter_mut().zip(arg_at).zip(&arg_ranges) {
            let (Some(at), true) = (at, len > 0) else {
                continue;
            };
            let buf = &arg_buf[at..at + len];
            match timer.func.as_deref() {
                Some("time.goFunc") => timer.callback_pc = u64_at(buf, 0).filter(|&pc| pc != 0),
                _ => {
                    let count = u64_at(buf, layout.hchan_qcount as usize);
                    let size = u64_at(buf, layout.hchan_dataqsiz as usize);
                    if let (Some(count), Some(size)) = (count, size) {
                        timer.chan_full = Some(size > 0 && count >= size);
                    }
                }
            }
        }
        Ok(TimerSnapshot {
            timers,
            ps: ps.len(),
            torn,
            taken_at_ns,
            elapsed: started.elapsed(),
        })
    }
}
