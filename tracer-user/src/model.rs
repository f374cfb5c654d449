//! The trace as pure state: fed with [`Event`]s, never touches the system.
//!
//! Everything the edges (collect, procfs, symbolize) learn about the target reaches the model as
//! an event with stacks already symbolized, so the model and the analysis can be tested with
//! synthetic streams and a recorded stream can be analysed again later.
pub mod epoll;
pub mod futex;
pub mod goroutines;
pub mod threads;
pub mod timerfd;
pub mod timers;

pub use futex::BlockedThread;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// One symbolized stack frame. `addr` is the address as the process sees it; for frames below
/// the innermost it is a return address.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Frame {
    pub function: Option<String>,
    pub file: Option<String>,
    pub line: Option<u32>,
    pub module: Option<String>,
    #[serde(with = "hex_addr")]
    pub addr: u64,
    /// True when this function was inlined into the next frame (same address).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub inlined: bool,
}

impl Frame {
    pub fn unknown(addr: u64) -> Self {
        Frame {
            function: None,
            file: None,
            line: None,
            module: None,
            addr,
            inlined: false,
        }
    }

    pub fn function_contains(&self, needle: &str) -> bool {
        self.function.as_deref().is_some_and(|f| f.contains(needle))
    }
}

/// Addresses serialize as "0x..." strings: JSON numbers lose precision above 2^53.
pub mod hex_addr {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(addr: &u64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{addr:#x}"))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        let text = String::deserialize(d)?;
        u64::from_str_radix(text.trim_start_matches("0x"), 16).map_err(serde::de::Error::custom)
    }
}

/// Since when a thread has been blocked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum BlockedSince {
    /// Seen entering the wait at this time (CLOCK_MONOTONIC ns).
    Exact(u64),
    /// Already blocked when tracing started: the true start is unknown and earlier.
    BeforeTrace,
    /// Found blocked by a /proc scan at this time (CLOCK_MONOTONIC ns) in a wait whose start
    /// no probe saw (it began between probe windows, or raced the attach), and not woken since
    /// (its context switch counts have not moved): the true start is unknown and earlier. The
    /// same evidence as [`BlockedSince::BeforeTrace`], from a later first look.
    SeenAt(u64),
}

/// What the edges observed, in time order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Event {
    /// Tracing started (probes attached) at this time.
    TraceStarted { at_ns: u64 },
    /// The target was started by leaktrace (`-- CMD`), held before exec until the probes were
    /// attached: nothing in it predates the trace.
    TargetStartedByTrace,
    /// A futex wait returned.
    WaitDone {
        tid: u32,
        futex_addr: u64,
        op: u32,
        start_ns: u64,
        duration_ns: u64,
        ret: i64,
        /// Present for waits long enough to have their stacks taken.
        user_stack: Option<Vec<Frame>>,
        kernel_stack: Option<Vec<String>>,
    },
    /// The threads blocked in futex at `at_ns` (replaces the previous snapshot).
    Blocked {
        at_ns: u64,
        threads: Vec<BlockedThread>,
    },
    /// Cumulative wakes seen on a futex word since it was watched.
    Wakes {
        futex_addr: u64,
        wakes: u64,
        first_waker_tid: Option<u32>,
    },
    /// The target process exited.
    TargetExited { at_ns: u64 },
    /// The target is a Go program of this version.
    GoRuntime { version: String },
    /// Which semantics the target's channel timers have (runtime version and GODEBUG).
    GoTimerChannels(crate::goruntime::godebug::TimerChannels),
    /// A `go` statement ran (seen by the creation probe): its PC (the new goroutine's `gopc`)
    /// and the creator's stack, innermost first, from the `go` statement out.
    GoroutineCreated {
        go_pc: u64,
        creator_stack: Vec<Frame>,
        /// The creating goroutine's id and its own `go` statement PC (0: unknown).
        #[serde(default)]
        creator_goid: u64,
        #[serde(default)]
        creator_gopc: u64,
    },
    /// A Go timer was started (seen by the timer-start probe): its key as the timer snapshot
    /// sees it (`GoTimer::start_key`) and the starter's stack from the call out; for an
    /// `AfterFunc` timer, the callback function's name.
    GoTimerStarted {
        key: u64,
        starter_stack: Vec<Frame>,
        #[serde(default)]
        callback: Option<String>,
    },
    /// All live goroutines of a Go target at `at_ns` (replaces the previous snapshot).
    Goroutines {
        at_ns: u64,
        goroutines: Vec<goroutines::Goroutine>,
        /// Goroutines that could not be read consistently (the target changed them meanwhile).
        unreadable: usize,
    },
    /// Every timer in the Go runtime's P heaps at `at_ns` (see [`timers`]).
    GoTimers {
        at_ns: u64,
        timers: Vec<timers::GoTimer>,
        /// Heap entries that could not be read consistently.
        unreadable: usize,
    },
    /// Counters kept by the kernel side (cumulative).
    KernelCounters(KernelCounters),
    /// Thread lifecycle (see [`threads`]).
    Thread(threads::ThreadEvent),
    /// epoll sets and waiters (see [`epoll`]).
    Epoll(epoll::EpollEvent),
    /// timerfds (see [`timerfd`]).
    Timerfd(timerfd::TimerfdEvent),
}

/// Cumulative kernel-side counters: what was seen and what was lost.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelCounters {
    pub waits_started: u64,
    pub waits_finished: u64,
    pub watched_wakes: u64,
    pub events_sent: u64,
    pub events_lost: u64,
    pub pending_map_full: u64,
    pub stack_errors: u64,
    // Threads, epoll and timerfds.
    #[serde(default)]
    pub threads_created: u64,
    #[serde(default)]
    pub threads_exited: u64,
    #[serde(default)]
    pub pending_calls_full: u64,
    /// Goroutine creations seen by the creation probe, and creator stacks it took.
    pub go_creations: u64,
    pub go_creation_stacks: u64,
    /// Go timer starts seen by the timer-start probe, and starter stacks it took.
    pub go_timer_starts: u64,
    pub go_timer_stacks: u64,
    /// `--detail low`: thread creations sent without their creator's stack (the site's
    /// stack budget for that second was spent).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub creation_stacks_skipped: u64,
    #[serde(default)]
    pub tracked_fds_full: u64,
    #[serde(default)]
    pub epoll_stats_full: u64,
    #[serde(default)]
    pub epoll_waits: u64,
    #[serde(default)]
    pub timerfd_reads: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// A histogram that grows to whatever range it is fed.
pub fn new_histogram(significant_figures: u8) -> Histogram<u64> {
    Histogram::new(significant_figures).expect("1 to 5 significant figures is a valid precision")
}

/// Records into an auto-resizing histogram. `saturating_record` would clamp at the current
/// range instead of growing it.
pub fn record(histogram: &mut Histogram<u64>, value: u64) {
    if histogram.record(value).is_err() {
        // Only values beyond what any histogram can hold (> 2^63) fail; clamp those.
        histogram.saturating_record(value);
    }
}
#[derive(Clone, Debug, Default)]
pub struct Model {
    pub started_ns: Option<u64>,
    pub last_seen_ns: u64,
    pub exited_ns: Option<u64>,
    /// Futex waits: blocked threads, completed waits per word, wakes (see [`futex`]).
    pub futex: futex::FutexModel,
    pub counters: KernelCounters,
    pub goroutines: goroutines::GoroutineModel,
    pub threads: threads::Threads,
    pub epoll: epoll::EpollModel,
    pub timerfds: timerfd::Timerfds,
    pub go_timers: timers::TimerModel,
    /// Where a recording takes every event the model applies (`leaktrace record`); none by
    /// default.
    pub tap: Tap,
}

/// What sees the model's input, in the order it is applied: the one place a recording is taken
/// (`crate::replay`), so that replaying it feeds a new model exactly what this one was fed.
pub trait EventSink: Send {
    fn event(&mut self, event: &Event);
    /// [`Event::Goroutines`], given by reference: the model takes the snapshot without a copy.
    fn goroutines(&mut self, at_ns: u64, goroutines: &[goroutines::Goroutine], unreadable: usize);
}

/// A model's [`EventSink`], if any. Clones share the sink.
#[derive(Clone, Default)]
pub struct Tap(Option<std::sync::Arc<std::sync::Mutex<dyn EventSink>>>);

impl Tap {
    pub fn new(sink: std::sync::Arc<std::sync::Mutex<dyn EventSink>>) -> Self {
        Tap(Some(sink))
    }

    fn with(&self, f: impl FnOnce(&mut dyn EventSink)) {
        if let Some(sink) = &self.0 {
            // A sink that panicked mid-write has nothing left worth protecting: keep going.
            let mut sink = sink.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            f(&mut *sink);
        }
    }
}

impl std::fmt::Debug for Tap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "Tap(recording)"
        } else {
            "Tap(none)"
        })
    }
}

impl Model {
    pub fn new() -> Self {
        Self::default()
    }

    /// [`Event::Goroutines`] without copying the snapshot: with a million goroutines a copy
    /// would double leaktrace's memory for a moment.
    pub fn apply_goroutines(
        &mut self,
        at_ns: u64,
        goroutines: Vec<goroutines::Goroutine>,
        unreadable: usize,
    ) {
        self.tap
            .with(|sink| sink.goroutines(at_ns, &goroutines, unreadable));
        self.take_goroutines(at_ns, goroutines, unreadable);
    }

    fn take_goroutines(
        &mut self,
        at_ns: u64,
        goroutines: Vec<goroutines::Goroutine>,
        unreadable: usize,
    ) {
        self.note_time(at_ns);
        let started = self.started_ns.unwrap_or(at_ns);
        self.goroutines
            .apply_owned_snapshot(at_ns, goroutines, unreadable, started);
    }

    pub fn apply(&mut self, event: &Event) {
        self.tap.with(|sink| sink.event(event));
        match event {
            Event::TraceStarted { at_ns } => {
                self.started_ns = Some(*at_ns);
                self.note_time(*at_ns);
            }
            Event::WaitDone {
                futex_addr,
                op,
                start_ns,
                duration_ns,
                ret,
                user_stack,
                kernel_stack,
                ..
            } => {
                self.note_time(start_ns.saturating_add(*duration_ns));
                self.futex.wait_done(
                    *futex_addr,
                    *op,
                    *duration_ns,
                    *ret,
                    user_stack.as_ref(),
                    kernel_stack.as_ref(),
                );
            }
            Event::Blocked { at_ns, threads } => {
                self.note_time(*at_ns);
                let alive = &self.threads.alive;
                self.futex
                    .blocked(*at_ns, threads, |tid| alive.contains_key(&tid));
            }
            Event::Wakes {
                futex_addr, wakes, ..
            } => self.futex.wakes(*futex_addr, *wakes),
            Event::TargetExited { at_ns } => {
                self.note_time(*at_ns);
                self.exited_ns = Some(*at_ns);
            }
            Event::KernelCounters(counters) => self.counters = *counters,
            Event::GoroutineCreated {
                go_pc,
                creator_stack,
                creator_gopc,
                ..
            } => {
                self.goroutines.creation_seen(*go_pc, creator_stack);
                self.goroutines.creator_seen(*go_pc, *creator_gopc);
            }
            Event::GoTimerStarted {
                key,
                starter_stack,
                callback,
            } => {
                self.go_timers.start_seen(*key, starter_stack);
                if let Some(callback) = callback {
                    self.go_timers.callback_start_seen(callback, starter_stack);
                }
            }
            Event::GoRuntime { version } => {
                self.goroutines.go_version = Some(version.clone());
                self.go_timers.go_1_23_or_later = crate::goruntime::GoVersion::parse(version)
                    .is_some_and(|v| (v.major, v.minor) >= (1, 23));
            }
            Event::TargetStartedByTrace => self.goroutines.target_started_by_trace = true,
            Event::GoTimerChannels(channels) => self.go_timers.channels = Some(channels.clone()),
            Event::GoTimers {
                at_ns,
                timers,
                unreadable,
            } => {
                self.note_time(*at_ns);
                let started = self.started_ns.unwrap_or(*at_ns);
                self.go_timers
                    .apply_snapshot(*at_ns, timers, *unreadable, started);
            }
            Event::Goroutines {
                at_ns,
                goroutines,
                unreadable,
            } => self.take_goroutines(*at_ns, goroutines.to_vec(), *unreadable),
            Event::Thread(event) => self.threads.apply(event),
            Event::Epoll(event) => self.epoll.apply(event),
            Event::Timerfd(event) => self.timerfds.apply(event),
        }
    }

    fn note_time(&mut self, ns: u64) {
        self.last_seen_ns = self.last_seen_ns.max(ns);
    }

    /// How long the thread has been blocked as of `now_ns`, and whether that is a lower bound.
    pub fn blocked_for(&self, thread: &BlockedThread, now_ns: u64) -> (u64, bool) {
        match thread.since {
            BlockedSince::Exact(start) => (now_ns.saturating_sub(start), false),
            BlockedSince::BeforeTrace => {
                let start = self.started_ns.unwrap_or(now_ns);
                (now_ns.saturating_sub(start), true)
            }
            BlockedSince::SeenAt(seen) => (now_ns.saturating_sub(seen), true),
        }
    }

    /// The end of the observation: the target's exit, or `now_ns` while it runs.
    pub fn end_ns(&self, now_ns: u64) -> u64 {
        self.exited_ns.unwrap_or(now_ns)
    }
}

#[cfg(test)]
pub mod tests {
    use super::futex::{MAX_WAIT_SITES, OTHER_SITE};
    use super::*;

    pub fn frame(function: &str) -> Frame {
        Frame {
            function: Some(function.to_string()),
            file: Some("fixture.c".to_string()),
            line: Some(1),
            module: None,
            addr: function.len() as u64,
            inlined: false,
        }
    }

    pub fn blocked(
        tid: u32,
        futex_addr: u64,
        since: BlockedSince,
        stack: &[&str],
    ) -> BlockedThread {
        BlockedThread {
            tid,
            name: format!("t{tid}"),
            futex_addr,
            op: 0,
            since,
            has_timeout: false,
            owner_tid: None,
            joining_tid: None,
            user_stack: stack.iter().map(|f| frame(f)).collect(),
            kernel_stack: vec![],
        }
    }

    #[test]
    fn completed_waits_build_per_address_histograms() {
        let mut model = Model::new();
        model.apply(&Event::TraceStarted { at_ns: 0 });
        for (i, d) in [10u64, 20, 30, 5_000_000].iter().enumerate() {
            model.apply(&Event::WaitDone {
                tid: 7,
                futex_addr: 0x1000,
                op: 0,
                start_ns: i as u64 * 100,
                duration_ns: *d,
                ret: if i == 3 { -(libc::ETIMEDOUT as i64) } else { 0 },
                user_stack: (i == 3).then(|| vec![frame("worker")]),
                kernel_stack: None,
            });
        }
        let site = &model.futex.wait_sites[&0x1000];
        assert_eq!(site.waits, 4);
        assert_eq!(site.timeouts, 1);
        assert_eq!(site.total_ns, 5_000_060);
        assert_eq!(site.max_ns, 5_000_000);
        assert_eq!(site.longest_stack.as_ref().unwrap().0, 5_000_000);
        assert_eq!(model.futex.waits_seen, 4);
    }

    #[test]
    fn wait_sites_are_bounded() {
        let mut model = Model::new();
        for addr in 0..(MAX_WAIT_SITES as u64 + 10) {
            model.apply(&Event::WaitDone {
                tid: 1,
                futex_addr: addr,
                op: 0,
                start_ns: 0,
                duration_ns: 1,
                ret: 0,
                user_stack: None,
                kernel_stack: None,
            });
        }
        assert_eq!(model.futex.wait_sites.len(), MAX_WAIT_SITES + 1);
        assert_eq!(model.futex.wait_sites[&OTHER_SITE].waits, 10);
    }

    #[test]
    fn waits_seen_ending_between_scans_are_counted_per_word() {
        use threads::ThreadEvent;
        let mut model = Model::new();
        model.apply(&Event::TraceStarted { at_ns: 0 });
        for tid in [1, 2, 3] {
            model.apply(&Event::Thread(ThreadEvent::Existing {
                at_ns: 0,
                tid,
                name: String::new(),
            }));
        }
        model.apply(&Event::Blocked {
            at_ns: 1,
            threads: vec![
                blocked(1, 0x10, BlockedSince::BeforeTrace, &[]),
                blocked(2, 0x10, BlockedSince::SeenAt(1), &[]),
                blocked(3, 0x20, BlockedSince::SeenAt(1), &[]),
            ],
        });
        // 1 stays; 2 woke and waits again (a new first look); 3 is out of its wait.
        model.apply(&Event::Blocked {
            at_ns: 2,
            threads: vec![
                blocked(1, 0x10, BlockedSince::BeforeTrace, &[]),
                blocked(2, 0x10, BlockedSince::SeenAt(2), &[]),
            ],
        });
        assert_eq!(model.futex.waits_ended_between_scans.get(&0x10), Some(&1));
        assert_eq!(model.futex.waits_ended_between_scans.get(&0x20), Some(&1));
        // A thread that exited did not see its wait end.
        model.apply(&Event::Thread(ThreadEvent::Exited { at_ns: 3, tid: 1 }));
        model.apply(&Event::Blocked {
            at_ns: 3,
            threads: vec![blocked(2, 0x10, BlockedSince::SeenAt(2), &[])],
        });
        assert_eq!(model.futex.waits_ended_between_scans.get(&0x10), Some(&1));
        assert_eq!(
            model.blocked_for(&model.futex.blocked[0], 10),
            (8, true),
            "a later first look is a lower bound too"
        );
    }

    #[test]
    fn a_snapshot_replaces_the_previous_one_and_exit_freezes_time() {
        let mut model = Model::new();
        model.apply(&Event::TraceStarted { at_ns: 1_000 });
        model.apply(&Event::Blocked {
            at_ns: 2_000,
            threads: vec![blocked(1, 0x10, BlockedSince::BeforeTrace, &["a"])],
        });
        model.apply(&Event::Blocked {
            at_ns: 3_000,
            threads: vec![blocked(2, 0x20, BlockedSince::Exact(2_500), &["b"])],
        });
        assert_eq!(model.futex.blocked.len(), 1);
        assert_eq!(model.futex.blocked[0].tid, 2);
        model.apply(&Event::TargetExited { at_ns: 4_000 });
        let end = model.end_ns(9_999);
        assert_eq!(end, 4_000);
        assert_eq!(
            model.blocked_for(&model.futex.blocked[0], end),
            (1_500, false)
        );
        let before = blocked(3, 0x30, BlockedSince::BeforeTrace, &[]);
        assert_eq!(model.blocked_for(&before, end), (3_000, true));
    }
}
