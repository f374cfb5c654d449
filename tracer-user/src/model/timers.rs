//! Go runtime timers over the trace: pure state fed with snapshots of every P's timer heap.
//!
//! Timers do not record who created them, so they are grouped by what they are: their kind
//! (AfterFunc, channel timer, ticker, sleep, other), the function they run (for AfterFunc the
//! user's callback), and the ticker period. Between snapshots the model follows each timer by
//! address: new ones were created (or reset) during the trace, ones gone after their deadline
//! fired, ones gone before it were stopped (or, on Go 1.23+, a channel timer whose receiver
//! stopped waiting left the heap), and a ticker whose deadline moved on fired.
use std::collections::{BTreeMap, HashMap, HashSet};

use serde::{Deserialize, Serialize};

use crate::model::goroutines::CountAt;
use crate::model::Frame;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimerKind {
    /// `time.AfterFunc`: the runtime starts the callback in a new goroutine when it fires.
    Func,
    /// `time.NewTimer` / `time.After`: sends the time on a channel.
    Chan,
    /// `time.NewTicker` / `time.Tick`: sends on a channel every period.
    Ticker,
    /// `time.Sleep` (and the runtime's own sleeps): wakes one goroutine.
    Sleep,
    /// Network deadlines and other runtime timers.
    Other,
}

impl TimerKind {
    /// From the function the timer runs and its period.
    pub fn of(func: Option<&str>, period_ns: i64) -> TimerKind {
        match func {
            Some("time.goFunc") => TimerKind::Func,
            Some("time.sendTime") if period_ns > 0 => TimerKind::Ticker,
            Some("time.sendTime") => TimerKind::Chan,
            Some("runtime.goroutineReady") | Some("runtime.resetForSleep") => TimerKind::Sleep,
            _ => TimerKind::Other,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            TimerKind::Func => "AfterFunc",
            TimerKind::Chan => "channel timer",
            TimerKind::Ticker => "ticker",
            TimerKind::Sleep => "sleep",
            TimerKind::Other => "runtime timer",
        }
    }
}

/// One pending (or stopped, not yet removed) timer in a snapshot, symbolized.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GoTimer {
    pub addr: u64,
    pub kind: TimerKind,
    /// The function the runtime calls when it fires.
    pub func: Option<String>,
    /// AfterFunc: the user's callback (its entry: file and line of its declaration).
    pub callback: Option<Frame>,
    /// `nanotime()` when it fires next (CLOCK_MONOTONIC ns).
    pub when_ns: i64,
    pub period_ns: i64,
    /// Channel timers: the channel's buffer is full (nobody received the last value).
    pub chan_full: Option<bool>,
    /// Go 1.23+: goroutines blocked on its channel.
    pub blocked: Option<u32>,
    /// Stopped but still in the heap.
    pub stopped: bool,
    /// What the timer-start probe saw of this timer (its address before Go 1.23, its `arg`
    /// data word after), to find who started it.
    #[serde(default)]
    pub start_key: u64,
}

/// What makes timers "the same" for the report.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TimerGroupKey {
    pub kind: TimerKind,
    /// AfterFunc: `function (file:line)` of the callback; others: the runtime function.
    pub callback: String,
    pub period_ns: i64,
}

pub fn group_key(timer: &GoTimer) -> TimerGroupKey {
    let callback = match (&timer.callback, &timer.func) {
        (Some(frame), _) => crate::model::goroutines::place(frame),
        (None, Some(func)) => func.clone(),
        (None, None) => "unknown".into(),
    };
    TimerGroupKey {
        kind: timer.kind,
        callback,
        period_ns: timer.period_ns,
    }
}

/// Lifecycle counts of a group, as far as snapshots one second apart can tell.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Lifecycle {
    /// Timers seen for the first time after the first snapshot.
    pub created: u64,
    /// Gone after their deadline, or a ticker's deadline moved on: fired (ticker: each period
    /// counted).
    pub fired: u64,
    /// Gone before their deadline, or marked stopped: stopped (Go 1.23+ channel timers also
    /// leave the heap when their receiver stops waiting).
    pub stopped: u64,
}

/// A timer followed across snapshots.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeenTimer {
    pub first_seen_ns: u64,
    pub before_trace: bool,
    pub key: TimerGroupKey,
    pub when_ns: i64,
}

#[derive(Clone, Debug, Default)]
pub struct TimerModel {
    pub snapshots: u64,
    pub first_snapshot_ns: Option<u64>,
    pub last_snapshot_ns: u64,
    /// The target runs Go 1.23+ (channel timers are in a heap only while someone waits on
    /// them, and unreferenced ones are collected).
    pub go_1_23_or_later: bool,
    /// The semantics of unstopped channel timers (GODEBUG `asynctimerchan` on Go 1.23-1.26),
    /// once known; until then they follow `go_1_23_or_later`.
    pub channels: Option<crate::goruntime::godebug::TimerChannels>,
    /// Pending timers of the last snapshot (stopped ones excluded).
    pub latest: Vec<GoTimer>,
    /// Stopped timers still in the heaps at the last snapshot.
    pub stopped_in_heap: usize,
    pub seen: HashMap<u64, SeenTimer>,
    pub total: Vec<CountAt>,
    pub groups: BTreeMap<TimerGroupKey, Vec<CountAt>>,
    pub lifecycle: BTreeMap<TimerGroupKey, Lifecycle>,
    /// Heap entries skipped (torn reads), summed over snapshots.
    pub unreadable: u64,
    /// The slowest read: how long, and how many timers.
    pub slowest_read: Option<(u64, usize)>,
    /// Starter stacks seen by the timer-start probe, by the timers' `start_key`.
    pub starts: HashMap<u64, Vec<Frame>>,
    /// `AfterFunc` starts seen by the timer-start probe, by callback function name: how many,
    /// and the last starter stack (who called `time.AfterFunc`). Fired timers leave the heaps,
    /// so this is what joins a callback goroutine (T4) to who scheduled it.
    pub callback_starts: HashMap<String, (u64, Vec<Frame>)>,
}

/// Starts remembered at most: a timer-heavy program starts millions; the oldest are forgotten
/// (their timers have mostly fired), which only makes more groups say "creator unknown".
const MAX_STARTS: usize = 65_536;

impl TimerModel {
    /// Whether unstopped, unreferenced channel timers are collected by the GC (Go 1.23+ without
    /// `asynctimerchan=1`), so that they are no leak.
    pub fn channel_timers_collected(&self) -> bool {
        self.channels
            .as_ref()
            .map_or(self.go_1_23_or_later, |c| c.collected())
    }

    /// The timer-start probe saw a timer start with this key and starter stack.
    pub fn start_seen(&mut self, key: u64, starter_stack: &[Frame]) {
        if self.starts.len() >= MAX_STARTS && !self.starts.contains_key(&key) {
            // Forget keys no pending timer has any more.
            let pending: std::collections::HashSet<u64> =
                self.latest.iter().map(|t| t.start_key).collect();
            self.starts.retain(|k, _| pending.contains(k));
            if self.starts.len() >= MAX_STARTS {
                return;
            }
        }
        self.starts.insert(key, starter_stack.to_vec());
    }

    /// The timer-start probe saw `time.AfterFunc(d, callback)` called with this starter stack.
    pub fn callback_start_seen(&mut self, callback: &str, starter_stack: &[Frame]) {
        // One entry per callback function (a program has few), not per timer.
        let entry = self
            .callback_starts
            .entry(callback.to_string())
            .or_insert_with(|| (0, Vec::new()));
        entry.0 += 1;
        if !starter_stack.is_empty() {
            entry.1 = starter_stack.to_vec();
        }
    }

    pub fn apply_snapshot(
        &mut self,
        at_ns: u64,
        timers: &[GoTimer],
        unreadable: usize,
        trace_started_ns: u64,
    ) {
        let first = self.first_snapshot_ns.is_none();
        if first {
            self.first_snapshot_ns = Some(at_ns);
        }
        self.snapshots += 1;
        self.last_snapshot_ns = at_ns;
        self.unreadable += unreadable as u64;
        let (pending, stopped): (Vec<&GoTimer>, Vec<&GoTimer>) =
            timers.iter().partition(|t| !t.stopped);
        self.stopped_in_heap = stopped.len();
        let stopped_addrs: HashSet<u64> = stopped.iter().map(|t| t.addr).collect();

        let mut counts: BTreeMap<TimerGroupKey, usize> = BTreeMap::new();
        let mut seen = HashMap::with_capacity(pending.len());
        for timer in &pending {
            let key = group_key(timer);
            *counts.entry(key.clone()).or_default() += 1;
            let entry = match self.seen.remove(&timer.addr) {
                Some(mut previous) if previous.key == key => {
                    if key.kind == TimerKind::Ticker && timer.when_ns > previous.when_ns {
                        let fired = (timer.when_ns - previous.when_ns) / key.period_ns.max(1);
                        self.lifecycle.entry(key.clone()).or_default().fired += fired as u64;
                    }
                    previous.when_ns = timer.when_ns;
                    previous
                }
                _ => {
                    if !first {
                        self.lifecycle.entry(key.clone()).or_default().created += 1;
                    }
                    let since = if first {
                        trace_started_ns.min(at_ns)
                    } else {
                        at_ns
                    };
                    SeenTimer {
                        first_seen_ns: since,
                        before_trace: first,
                        key,
                        when_ns: timer.when_ns,
                    }
                }
            };
            seen.insert(timer.addr, entry);
        }
        // Timers that left the heaps since the last snapshot.
        for (addr, gone) in self.seen.drain() {
            let life = self.lifecycle.entry(gone.key.clone()).or_default();
            if stopped_addrs.contains(&addr) || gone.when_ns > at_ns as i64 {
                life.stopped += 1;
            } else {
                life.fired += 1;
            }
        }
        self.seen = seen;
        self.latest = pending.into_iter().cloned().collect();

        super::goroutines::push_history(
            &mut self.total,
            CountAt {
                at_ns,
                count: self.latest.len(),
            },
        );
        for (key, history) in self.groups.iter_mut() {
            if !counts.contains_key(key) {
                super::goroutines::push_history(history, CountAt { at_ns, count: 0 });
            }
        }
        for (key, count) in counts {
            let history = self.groups.entry(key).or_default();
            super::goroutines::push_history(history, CountAt { at_ns, count });
        }
    }
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use crate::model::tests::frame;

    const S: u64 = 1_000_000_000;

    pub fn after_func(addr: u64, when_ns: u64, callback: &str) -> GoTimer {
        GoTimer {
            addr,
            kind: TimerKind::Func,
            func: Some("time.goFunc".into()),
            callback: Some(frame(callback)),
            when_ns: when_ns as i64,
            period_ns: 0,
            chan_full: None,
            blocked: None,
            stopped: false,
            start_key: addr,
        }
    }

    pub fn ticker(addr: u64, when_ns: u64, period_ns: u64, full: bool) -> GoTimer {
        GoTimer {
            addr,
            kind: TimerKind::Ticker,
            func: Some("time.sendTime".into()),
            callback: None,
            when_ns: when_ns as i64,
            period_ns: period_ns as i64,
            chan_full: Some(full),
            blocked: None,
            stopped: false,
            start_key: addr,
        }
    }

    #[test]
    fn kinds_follow_the_function_and_period() {
        assert_eq!(TimerKind::of(Some("time.goFunc"), 0), TimerKind::Func);
        assert_eq!(TimerKind::of(Some("time.sendTime"), 0), TimerKind::Chan);
        assert_eq!(TimerKind::of(Some("time.sendTime"), 5), TimerKind::Ticker);
        assert_eq!(
            TimerKind::of(Some("runtime.goroutineReady"), 0),
            TimerKind::Sleep
        );
        assert_eq!(TimerKind::of(Some("internal/poll.x"), 0), TimerKind::Other);
    }

    #[test]
    fn follows_timers_created_fired_and_stopped() {
        let mut model = TimerModel::default();
        let hour = 3600 * S;
        model.apply_snapshot(
            2 * S,
            &[
                after_func(0x10, hour, "main.cb"),
                after_func(0x20, 2 * S + S / 2, "main.cb"),
                after_func(0x30, hour, "main.cb"),
                ticker(0x40, 2 * S + S / 10, S / 10, true),
            ],
            0,
            S,
        );
        let mut stopped = after_func(0x30, hour, "main.cb");
        stopped.stopped = true;
        model.apply_snapshot(
            3 * S,
            &[
                after_func(0x10, hour, "main.cb"),
                stopped,
                after_func(0x50, hour, "main.cb"),
                after_func(0x60, hour, "main.cb"),
                ticker(0x40, 3 * S + S / 10, S / 10, true),
            ],
            2,
            S,
        );
        let key = group_key(&after_func(0, 0, "main.cb"));
        let life = model.lifecycle[&key];
        assert_eq!(life.created, 2);
        assert_eq!(life.fired, 1, "0x20 was due at 2.5 s");
        assert_eq!(life.stopped, 1, "0x30 was stopped");
        assert_eq!(
            model.groups[&key]
                .iter()
                .map(|c| c.count)
                .collect::<Vec<_>>(),
            vec![3, 3]
        );
        let ticks = model.lifecycle[&group_key(&ticker(0x40, 0, S / 10, true))];
        assert_eq!(ticks.fired, 10);
        assert_eq!(model.stopped_in_heap, 1);
        assert_eq!(model.latest.len(), 4);
        assert!(model.seen[&0x10].before_trace);
        assert_eq!(model.seen[&0x10].first_seen_ns, S);
        assert!(!model.seen[&0x50].before_trace);
        assert_eq!(model.unreadable, 2);
    }
}
