//! The tracing loop: turns what the kernel and /proc show into model events, while the target
//! runs, until the duration ends, the user interrupts, or the target exits.
mod creation_slots;
pub mod decode;
mod gocreation;
mod native;
mod stacktop;
mod timers;
mod windows;

use std::collections::HashMap;
use std::io::{IsTerminal as _, Write as _};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use tokio::signal::unix::{signal, SignalKind};
use tokio::time::{interval, sleep_until, Instant, MissedTickBehavior};
use tracer_common::{go_budget, names, FutexKey};

use self::decode::{Record, Undecodable};

use crate::attach::{Detail, Group, Probes};
use crate::clock::monotonic_ns;
use crate::goruntime::{self, GStatus, GoProcess, GoroutineState};
use crate::memory::Memory;
use crate::model::goroutines::{GoStatus, Goroutine};
use crate::model::{BlockedSince, BlockedThread, Event, Frame, Model};
use crate::procfs::{self, FutexWaitState};
use crate::report::human_ns;
use crate::symbolize::Symbolizer;
use crate::target::Target;
use crate::unwind::RemoteUnwinder;

pub struct Settings {
    pub duration: Option<Duration>,
    pub min_blocked_ns: u64,
    pub max_frames: usize,
    /// Takes every event the model applies (`leaktrace record`).
    pub tap: crate::model::Tap,
    /// Show the live status line when stderr is a terminal (a one-shot trace; the agent's
    /// concurrent traces would overwrite each other's line).
    pub status_line: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum EndReason {
    Duration,
    Interrupted,
    TargetExited,
}

pub struct Outcome {
    pub model: Model,
    /// The probe windows of the low mode (None: `--detail full`, probes attached throughout).
    pub windows: Option<WindowSummary>,
    /// The slowest read of all goroutines: how long it took and how many there were.
    pub slowest_goroutine_read: Option<(Duration, usize)>,
    /// Go targets: what reads of goroutines need once, done at attach before the first read
    /// (the binary's runtime layout and line table, and the symbolizer's load of its symbols).
    pub goroutine_read_setup: Option<Duration>,
    pub end: EndReason,
    pub started_ns: u64,
    pub ended_ns: u64,
}

/// How much of the trace the syscall tracepoints were attached in the low mode.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct WindowSummary {
    /// Windows opened (the first one at attach included).
    pub count: u64,
    /// Of those, opened for a new suspect (narrowed to its syscalls).
    pub suspect: u64,
    /// Of those, closed early by a storm (of records, or of the target's syscalls).
    pub storms: u64,
    /// Time the windows covered, and the trace's length (ns).
    pub covered_ns: u64,
    pub trace_ns: u64,
}

/// A wait found by a /proc scan (at attach, or later for a wait no probe saw begin), and the
/// thread's context switch count then: while the count stays, the thread was not woken and it
/// is the same wait.
#[derive(Clone, Copy, Debug)]
struct SeenWait {
    futex_addr: u64,
    op: u32,
    switches: u64,
    since: BlockedSince,
}

/// Records decoded and applied at a time while draining.
const DRAIN_BATCH: usize = 4096;
/// How often the ring buffer is drained (the kernel does not wake us per record).
const DRAIN_EVERY: Duration = Duration::from_millis(100);
/// Every this many drains: watch long waits, snapshot blocked threads, read counters.
const SCAN_EVERY_TICKS: u32 = 5;
/// A wait this old gets its futex word watched for wakes (or half the threshold, if less).
const WATCH_AFTER_NS: u64 = 100_000_000;
/// A read of all goroutines starts at most this often: reading and symbolizing 100k goroutines
/// takes tens of milliseconds of leaktrace's time in a release build (none of the target's).
const GOROUTINES_EVERY: Duration = Duration::from_secs(1);
/// The reads of all goroutines may cost at most this share of one core (in percent): a read
/// that took C of leaktrace's CPU is followed by the next no sooner than C * 100 / this after
/// it started. leaktrace shares the target's cores, so its CPU is the target's loss: with
/// 100k goroutines, reading every second cost a Go service 22-24% of its throughput on 2 cores
/// (`cargo xtask bench compare`, README). 2% of one core is at most 1% of a 2-core machine,
/// the bound for a busy target; a few hundred goroutines cost well under it and are
/// still read every [`GOROUTINES_EVERY`].
const GOROUTINE_READ_BUDGET_PERCENT: u64 = 2;
/// The part of a read's CPU the budget does not count: a read costing less is done every
/// [`GOROUTINES_EVERY`]. Growth is a trend over the reads, so a target of a few hundred
/// goroutines must keep being read every second: such a read costs a few ms in a release build,
/// but 20-50 ms in the debug build the tests run on a loaded 2-core machine, where spacing
/// those reads out left a 3 s trace too few reads to see a leak grow (tests/goroutines.rs). A
/// read of 100k goroutines (~200 ms) is spaced out all the same.
const GOROUTINE_READ_FREE: Duration = Duration::from_millis(50);
/// Reads are never spaced further apart than this, however costly: a group is judged by
/// goroutines seen staying between reads, so a trace of a few tens of seconds (the usual; the
/// million-goroutine test traces 30 s while they grow) needs several reads after the growth.
/// Past ~300k goroutines (a read then costs more than 200 ms of CPU) this cap, not the
/// budget, sets the interval: a million parked goroutines cost 10-20% of a core.
const GOROUTINES_AT_LEAST_EVERY: Duration = Duration::from_secs(10);
/// A read of all goroutines (a million take seconds) goes on for at most this long a tick
/// ([`DRAIN_EVERY`]), plus the batch in progress: the rest of the tick is for the loop's other
/// work (draining the ring buffer, the Go uprobe windows, signals, the deadline).
const GOROUTINE_READ_SLICE: Duration = Duration::from_millis(70);

/// The report's note on the windows: how much of the trace they covered, and what that means
/// for the event-based evidence. `attached` is `Probes::attached`: on a kernel without
/// `task:task_newtask` thread creations are seen only in the windows (the clone/fork exits),
/// and the note must say so rather than claim them throughout.
fn window_note(summary: &WindowSummary, windows: &windows::Windows, attached: &[String]) -> String {
    let has = |probe: &str| attached.iter().any(|a| a == probe);
    let creations = if has("task:task_newtask") {
        "thread creations from task_newtask throughout"
    } else {
        "thread creations only in the windows (the clone/fork exits: this kernel has no task:task_newtask)"
    };
    let exits = if has("sched:sched_process_exit") {
        "exits from sched_process_exit throughout"
    } else {
        "no thread exit events (this kernel has no sched:sched_process_exit)"
    };
    format!(
        "low detail: syscall tracepoints attached in {} probe window(s) ({} for new suspects, {} closed early by a storm of records or of the target's syscalls; period now {} s) covering {} of {} ({:.1}%): completed-wait histograms, wake counts, epoll and timerfd activity are samples from the windows; blocked threads, their waits, wake-ups (context switch counts), epoll sets and timerfd states come from /proc scans every 500 ms, goroutines and Go timers from the target's memory, {creations}, {exits} (--detail full attaches everything for the whole trace)",
        summary.count,
        summary.suspect,
        summary.storms,
        windows.period().as_secs(),
        human_ns(summary.covered_ns),
        human_ns(summary.trace_ns),
        summary.covered_ns as f64 * 100.0 / summary.trace_ns.max(1) as f64,
    )
}

/// One wait of one thread: (tid, since when, futex word).
type WaitIdentity = (u32, BlockedSince, u64);
/// User frames and kernel functions.
type WaitStacks = (Vec<Frame>, Vec<String>);

struct Collector<'a> {
    pid: u32,
    probes: &'a mut Probes,
    settings: &'a Settings,
    symbolizer: Symbolizer,
    unwinder: Option<RemoteUnwinder>,
    memory: Option<Memory>,
    /// Thread ids the target's memory names, as ours (its pid namespace's may differ).
    namespace_tids: procfs::root::NamespaceTids,
    /// Futex waits found by /proc scans whose start no probe saw: at attach (before the trace)
    /// and, in the low mode, between windows.
    seen_waits: HashMap<u32, SeenWait>,
    /// Low mode: the probe windows.
    windows: Option<windows::Windows>,
    /// Low mode, between windows: threads whose slot held a call in progress when the last
    /// window closed, with their context switch count then. A slot is trusted while the count
    /// stays (the call has not returned unseen).
    held_slots: HashMap<u32, u64>,
    /// A wait's stacks cannot change while it lasts: taken once per wait.
    stacks: HashMap<WaitIdentity, WaitStacks>,
    model: Model,
    notes: Vec<String>,
    /// The Go runtime of a Go target, when it can be read.
    go: Option<GoProcess>,
    /// The windows of the Go uprobes (goroutine creation, timer starts), for a Go target.
    go_probes: Option<gocreation::GoProbes>,
    /// The timer-start probe's key is `arg`'s data word (Go 1.23+), else the timer's address.
    timer_key_is_arg: bool,
    /// The timer-start probe reads the started timer's functions (AfterFunc callbacks).
    timer_funcs_known: bool,
    /// The slowest goroutine snapshot: how long reading took, and how many goroutines.
    slowest_snapshot: Option<(Duration, usize)>,
    /// How long the one-time setup of goroutine reads took at attach.
    goroutine_read_setup: Option<Duration>,
    /// When the next read of the goroutines may start.
    next_goroutine_read: Instant,
    /// The read of the goroutines in progress, done a slice a tick.
    goroutine_read: Option<GoroutineRead>,
    /// Threads, epoll and timerfds.
    native: native::Native,
    /// Stack tops of user stacks taken in the kernel, until their records come.
    stack_tops: stacktop::StackTops,
    creation_slots: creation_slots::CreationSlots,
    /// The Go runtime's timers.
    go_timers: timers::TimerReads,
    /// The last goroutine snapshot's symbolized stacks and `go` statements, reused by the next.
    shared_frames: SharedLookups,
    /// The last read's walked stacks, by g, reused by the next for goroutines that sat still.
    stack_cache: goruntime::StackCache,
    /// Ring-buffer records that could not be decoded.
    undecodable: Undecodable,
}

pub async fn trace(
    probes: &mut Probes,
    target: &mut Target,
    settings: &Settings,
) -> Result<(Outcome, Vec<String>)> {
    let pid = target.pid;
    let started_ns = monotonic_ns();
    let mut collector = Collector {
        pid,
        probes,
        settings,
        symbolizer: Symbolizer::new(pid),
        unwinder: None,
        memory: None,
        namespace_tids: Default::default(),
        seen_waits: HashMap::new(),
        windows: None,
        held_slots: HashMap::new(),
        stacks: HashMap::new(),
        model: Model {
            tap: settings.tap.clone(),
            ..Model::new()
        },
        notes: Vec::new(),
        go: None,
        go_probes: None,
        timer_key_is_arg: false,
        timer_funcs_known: false,
        slowest_snapshot: None,
        goroutine_read_setup: None,
        next_goroutine_read: Instant::now(),
        goroutine_read: None,
        native: native::Native::new(pid),
        stack_tops: stacktop::StackTops::default(),
        creation_slots: creation_slots::CreationSlots::default(),
        go_timers: timers::TimerReads::default(),
        shared_frames: SharedLookups::default(),
        stack_cache: goruntime::StackCache::default(),
        undecodable: Undecodable::default(),
    };
    collector
        .model
        .apply(&Event::TraceStarted { at_ns: started_ns });
    if target.was_started() {
        collector.model.apply(&Event::TargetStartedByTrace);
    }
    collector.open_process();
    // The probes are attached: whatever is blocked now began before them.
    collector.find_blocked_before();
    collector
        .native
        .attach(collector.probes, &mut collector.model, started_ns);
    if collector.probes.detail() == Detail::Low {
        // The first window was opened when the probes were attached.
        let records = collector.window_load();
        let mut windows = windows::Windows::started(Instant::now(), started_ns, records);
        windows.attached(collector.probes.window_tracepoints());
        collector.windows = Some(windows);
    }

    let mut ticker = interval(DRAIN_EVERY);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let deadline = settings.duration.map(|d| Instant::now() + d);
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;
    let status = settings.status_line && std::io::stderr().is_terminal();
    let mut ticks: u32 = 0;

    // The Go uprobes' windows are looked after more often than the ring buffer is drained, so
    // that a creation storm is noticed within milliseconds.
    let mut go_probe_ticker = interval(gocreation::CHECK_EVERY);
    go_probe_ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let end = loop {
        tokio::select! {
            _ = go_probe_ticker.tick(), if collector.go_probes.is_some() => {
                if let Some(go_probes) = collector.go_probes.as_mut() {
                    // Attaching a uprobe takes the kernel's event_mutex, which detaching a probe
                    // window's tracepoints holds across RCU grace periods (see
                    // `Probes::close_window`): the loop would wait seconds for it.
                    if go_probes.is_open() || !collector.probes.window_closing() {
                        go_probes.tick(collector.probes, &mut collector.notes);
                    }
                }
                // This branch comes every 10 ms and restarts the select, and with it the probe
                // window's sleep below: without this, a Go target's first window was looked at
                // once in a 3 s trace and stayed attached to its end.
                if collector.windows.is_some() {
                    collector.window_tick(deadline);
                }
                continue;
            }
            _ = async {
                    let windows = collector.windows.as_ref().expect("guarded");
                    sleep_until(windows.next_check(Instant::now())).await
                }, if collector.windows.is_some() => {
                collector.window_tick(deadline);
                continue;
            }
            _ = ticker.tick() => {}
            _ = sigint.recv() => break EndReason::Interrupted,
            _ = sigterm.recv() => break EndReason::Interrupted,
            _ = async { sleep_until(deadline.expect("guarded")).await }, if deadline.is_some() => break EndReason::Duration,
        }
        collector.drain();
        if target.has_exited() {
            break EndReason::TargetExited;
        }
        // Not while a Go uprobe window is open: the target pays a trap per hit until the
        // window closes, and the window's ticks wait for the read.
        if !collector.go_probes.as_ref().is_some_and(|p| p.is_open()) {
            collector.read_goroutines(Some(GOROUTINE_READ_SLICE));
        }
        ticks += 1;
        if ticks.is_multiple_of(SCAN_EVERY_TICKS) {
            collector.scan(false);
            if status {
                collector.status_line(started_ns);
            }
        }
    };

    if let Some(go_probes) = collector.go_probes.as_mut() {
        go_probes.close(collector.probes);
    }
    collector.drain();
    collector.close_window();
    let ended_ns = monotonic_ns();
    if end == EndReason::TargetExited {
        collector.finish_interrupted_read();
        collector
            .model
            .apply(&Event::TargetExited { at_ns: ended_ns });
        collector.notes.push(
            "the target exited during the trace; blocked threads are reported as last seen".into(),
        );
    } else {
        collector.scan(true);
    }
    collector.read_counters();
    let skipped = collector.model.counters.creation_stacks_skipped;
    if skipped > 0 {
        collector.notes.push(format!(
            "thread creation stacks are a sample: {skipped} of {} thread creations were recorded \
             without their creator's stack (their site had taken its {} stacks of that second); \
             they are counted at the unknown creation site, and those still blocked where a \
             leak's members are blocked are counted with that leak",
            collector.model.counters.threads_created,
            tracer_common::CREATION_STACKS_PER_SITE_PER_S,
        ));
    }
    if let Some(go_probes) = collector.go_probes.as_ref() {
        let counters = collector.model.counters;
        collector.notes.push(format!(
            "creator stacks of goroutines and timers are sampled: uprobes in the Go runtime attached {} ms of every {} s ({} window(s)), at most {} stacks each a window: {} goroutine creations seen ({} stacks), {} timer starts seen ({} stacks){}",
            gocreation::WINDOW.as_millis(),
            gocreation::PERIOD.as_secs(),
            go_probes.windows,
            gocreation::STACKS_PER_WINDOW,
            counters.go_creations,
            counters.go_creation_stacks,
            counters.go_timer_starts,
            counters.go_timer_stacks,
            if go_probes.storms > 0 {
                format!(
                    "; {} window(s) closed early because the target created more than {} goroutines or timers a second, so windows now open every {} s to spare it",
                    go_probes.storms,
                    gocreation::MAX_HITS_PER_WINDOW * 10,
                    go_probes.period().as_secs()
                )
            } else {
                String::new()
            },
        ));
    }
    collector.notes.extend(collector.undecodable.note());
    if let Some((elapsed, count)) = collector.slowest_snapshot {
        let spacing = collector
            .model
            .goroutines
            .read_spacing
            .map(|s| {
                format!(
                    "; reads start at most every {:.1} s (longest {:.1} s) to keep them within {}% of one core (the last cost {:.1} ms of CPU; it reused the stacks of {} goroutines that had not moved and walked {})",
                    s.interval_ns as f64 / 1e9,
                    s.longest_interval_ns as f64 / 1e9,
                    s.budget_percent,
                    s.last_read_cpu_ns as f64 / 1e6,
                    s.last_read_reused,
                    s.last_read_walked,
                )
            })
            .unwrap_or_default();
        collector.notes.push(format!(
            "goroutines read {} times; the slowest read took {:.1} ms for {count} goroutines (the target is not paused){spacing}",
            collector.model.goroutines.snapshots,
            elapsed.as_secs_f64() * 1e3
        ));
    }
    if status {
        eprint!("\r\x1b[K");
    }
    let windows = collector.windows.as_ref().map(|w| WindowSummary {
        count: w.count,
        suspect: w.suspect_windows,
        storms: w.storms,
        covered_ns: w.covered_ns,
        trace_ns: ended_ns.saturating_sub(started_ns),
    });
    if let Some(summary) = &windows {
        collector.notes.push(window_note(
            summary,
            collector.windows.as_ref().expect("some"),
            &collector.probes.attached,
        ));
    }
    let Collector {
        model,
        mut notes,
        native,
        slowest_snapshot,
        goroutine_read_setup,
        go_timers,
        ..
    } = collector;
    notes.extend(native.notes);
    go_timers.finish(&mut notes);
    Ok((
        Outcome {
            model,
            windows,
            slowest_goroutine_read: slowest_snapshot,
            goroutine_read_setup,
            end,
            started_ns,
            ended_ns,
        },
        notes,
    ))
}

impl Collector<'_> {
    fn open_process(&mut self) {
        match RemoteUnwinder::new(self.pid) {
            Ok(unwinder) => self.unwinder = Some(unwinder),
            Err(err) => self
                .notes
                .push(format!("cannot unwind stacks of blocked threads: {err:#}")),
        }
        match Memory::open(self.pid) {
            Ok(memory) => {
                self.memory = Some(memory);
                self.namespace_tids = procfs::root::NamespaceTids::new(self.pid);
            }
            Err(err) => self.notes.push(format!("cannot read lock owners: {err:#}")),
        }
        let go_setup = Instant::now();
        match goruntime::inspect(self.pid) {
            Ok(Some(mut go)) => {
                go.set_max_frames(self.settings.max_frames);
                let (_, offsets) = go.offsets();
                self.notes.push(format!(
                    "Go {} program: goroutines are read from its runtime (runtime.g layout from {})",
                    go.version_string(),
                    match offsets {
                        goruntime::OffsetsSource::Dwarf => "its DWARF",
                        goruntime::OffsetsSource::VersionTable => "leaktrace's table for its Go version (no DWARF)",
                    }
                ));
                self.model.apply(&Event::GoRuntime {
                    version: go.version_string().to_string(),
                });
                let env = goruntime::godebug::environ_godebug(self.pid).unwrap_or_else(|err| {
                    self.notes.push(format!(
                        "cannot read /proc/{}/environ ({err}): its GODEBUG is assumed unset",
                        self.pid
                    ));
                    None
                });
                self.model
                    .apply(&Event::GoTimerChannels(goruntime::godebug::timer_channels(
                        go.version(),
                        go.default_godebug(),
                        env.as_deref(),
                    )));
                self.set_go_layout(&go);
                self.go_probes = Some(self.go_probe_points(&go));
                self.timer_key_is_arg = go.timer_start_key_is_arg();
                self.timer_funcs_known =
                    go.timer_start_key_is_arg() || go.timer_start_fields().is_some();
                // Stripped binaries: blazesym finds no symbols; .gopclntab still names frames.
                match go.line_table() {
                    Some(table) => {
                        if let Some(unwinder) = self.unwinder.as_mut() {
                            unwinder.set_go_line_table(table.clone(), go.load_bias());
                        }
                        self.symbolizer.set_go_line_table(
                            table,
                            go.load_bias(),
                            go.exe().to_string_lossy().into_owned(),
                        )
                    }
                    None => self.notes.push(
                        "the Go executable's .gopclntab is unreadable: frames without symbols stay unnamed"
                            .into(),
                    ),
                }
                // The symbolizer loads the executable's symbols and DWARF (blazesym: inflating
                // and parsing them, 17-36 ms for a 2 MB Go binary, release build) at its first
                // lookup there. Done now, so that the first goroutine read is a read and this
                // one-time cost is reported on its own (`goroutine_read_setup`).
                if let Some(table) = go.line_table() {
                    self.symbolizer
                        .function_at(table.text_range().start.wrapping_add(go.load_bias()));
                }
                self.goroutine_read_setup = Some(go_setup.elapsed());
                self.go = Some(go);
            }
            Ok(None) => {}
            Err(err) => self
                .notes
                .push(format!("goroutines are not analysed: {err:#}; threads are")),
        }
    }

    /// Where the Go uprobes read the creator's goid and gopc and a started timer's functions.
    fn set_go_layout(&mut self, go: &GoProcess) {
        use tracer_common::go_layout;
        let (offsets, _) = go.offsets();
        let (timer_f, timer_arg) = go.timer_start_fields().unwrap_or((0, 0));
        if let Err(err) = self.probes.set_go_layout(&[
            (go_layout::G_GOID, offsets.goid),
            (go_layout::G_GOPC, offsets.gopc),
            (go_layout::TIMER_F, timer_f),
            (go_layout::TIMER_ARG_DATA, timer_arg),
        ]) {
            self.notes.push(format!(
                "{err:#}: creation chains and AfterFunc callers are not linked"
            ));
        }
    }

    /// The Go uprobes this target's binary allows (each one missing says why in the notes).
    fn go_probe_points(&mut self, go: &GoProcess) -> gocreation::GoProbes {
        let mut points = Vec::new();
        let mut add = |offset: Result<u64, String>, program, slot, what| match offset {
            Ok(offset) => points.push(gocreation::ProbePoint {
                program,
                offset,
                slot,
                what,
            }),
            Err(why) => self
                .notes
                .push(format!("no creator stacks for {what}: {why}")),
        };
        add(
            go.creation_probe(),
            names::GO_NEWPROC,
            go_budget::GOROUTINES,
            "goroutine creations (candidates show the go statement only)",
        );
        add(
            go.timer_start_probe(),
            names::GO_TIMER_START,
            go_budget::TIMERS,
            "timer starts",
        );
        gocreation::GoProbes::new(self.pid, points)
    }

    /// Reads the goroutines of a Go target for at most `budget` (None: to the end), starting
    /// a read when one is due, and hands the model the symbolized snapshot when a read is
    /// complete. A read of a million goroutines takes seconds: done in slices between the
    /// loop's other work, it never holds the ring buffer, a Go uprobe window, a signal or the
    /// deadline for longer than a slice (and one batch of [`goruntime`] reading).
    fn read_goroutines(&mut self, budget: Option<Duration>) {
        let Some(go) = self.go.as_ref() else {
            return;
        };
        let started = Instant::now();
        let cpu_started = thread_cpu();
        let read = match self.goroutine_read.as_mut() {
            Some(read) => read,
            None => {
                if budget.is_some() && started < self.next_goroutine_read {
                    return;
                }
                let read = match go.start_snapshot_after(std::mem::take(&mut self.stack_cache)) {
                    Ok(read) => read,
                    Err(err) => {
                        let note = format!("reading goroutines failed: {err:#}");
                        if !self.notes.contains(&note) {
                            self.notes.push(note);
                        }
                        self.next_goroutine_read = started + GOROUTINES_EVERY;
                        return;
                    }
                };
                // Room for all at once: growing a vector of a million by doubling would
                // hold the old and the new one for a moment.
                let capacity = read.progress().1;
                self.goroutine_read.insert(GoroutineRead {
                    started,
                    cpu: Duration::ZERO,
                    read,
                    goroutines: Vec::with_capacity(capacity),
                    // What the last snapshot symbolized is reused.
                    frames: SharedFrames {
                        previous: std::mem::take(&mut self.shared_frames),
                        ..SharedFrames::default()
                    },
                })
            }
        };
        // Each goroutine is symbolized as it is read: the raw snapshot is never whole in
        // memory, only the model's compact one.
        loop {
            let GoroutineRead {
                read,
                goroutines,
                frames,
                cpu,
                ..
            } = &mut *read;
            let symbolizer = &mut self.symbolizer;
            if go.continue_snapshot(read, |g| goroutines.push(frames.goroutine(symbolizer, g))) {
                break;
            }
            if budget.is_some_and(|budget| started.elapsed() >= budget) {
                *cpu += thread_cpu().saturating_sub(cpu_started);
                return;
            }
        }
        let GoroutineRead {
            started: read_started,
            cpu,
            read,
            goroutines,
            frames,
        } = self.goroutine_read.take().expect("a read in progress");
        self.shared_frames = frames.current;
        let (snapshot, cache) = read.finish_keeping();
        self.stack_cache = cache;
        let count = goroutines.len();
        if self
            .slowest_snapshot
            .is_none_or(|(slowest, _)| snapshot.elapsed > slowest)
        {
            self.slowest_snapshot = Some((snapshot.elapsed, count));
        }
        self.model
            .apply_goroutines(snapshot.taken_at_ns, goroutines, snapshot.torn);
        self.go_timers
            .snapshot(go, &mut self.symbolizer, &mut self.model);
        let cost = cpu + thread_cpu().saturating_sub(cpu_started);
        // The first read pays once for what later ones reuse (every stack's first walk and
        // symbolization; the binary's symbols are loaded at attach: ~1 s for 100 goroutines in
        // a debug build, against 3 ms for the next): it does not set the pace, the second does.
        let interval = if self.model.goroutines.snapshots <= 1 {
            GOROUTINES_EVERY
        } else {
            read_interval_within(cost, self.settings.duration)
        };
        self.next_goroutine_read = read_started + interval;
        let spacing = self.model.goroutines.read_spacing.get_or_insert_default();
        spacing.interval_ns = interval.as_nanos() as u64;
        spacing.longest_interval_ns = spacing.longest_interval_ns.max(spacing.interval_ns);
        spacing.last_read_cpu_ns = cost.as_nanos() as u64;
        spacing.budget_percent = GOROUTINE_READ_BUDGET_PERCENT;
        spacing.last_read_reused = snapshot.reused;
        spacing.last_read_walked = snapshot.walked;
    }

    /// The target exited in the middle of a read of its goroutines: what was read is its last
    /// snapshot, and the goroutines not read yet are counted unreadable (a partial snapshot,
    /// said as such in `goroutines.unreadable`).
    fn finish_interrupted_read(&mut self) {
        let Some(GoroutineRead {
            read, goroutines, ..
        }) = self.goroutine_read.take()
        else {
            return;
        };
        let (done, all) = read.progress();
        let snapshot = read.finish();
        self.notes.push(format!(
            "the target exited while its goroutines were read: the last snapshot has {} of {all} (dead ones included); the rest are counted unreadable",
            goroutines.len()
        ));
        self.model.apply_goroutines(
            snapshot.taken_at_ns,
            goroutines,
            snapshot.torn + (all - done),
        );
    }

    fn find_blocked_before(&mut self) {
        for tid in procfs::threads(self.pid) {
            if let Some(wait) = procfs::futex_wait_state(self.pid, tid, self.memory.as_ref()) {
                let Some(switches) = procfs::context_switches(self.pid, tid) else {
                    continue;
                };
                self.watch(wait.futex_addr);
                self.seen_waits.insert(
                    tid,
                    SeenWait {
                        futex_addr: wait.futex_addr,
                        op: wait.op,
                        switches,
                        since: BlockedSince::BeforeTrace,
                    },
                );
            }
        }
    }

    /// What the kernel counted so far that an open window is judged by: records sent or lost,
    /// and the target's syscalls while windows were attached.
    fn window_load(&self) -> windows::Load {
        windows::Load {
            records: self.probes.records(),
            calls: self.probes.window_calls(),
        }
    }

    /// Opens or closes a probe window as the schedule says (low mode).
    fn window_tick(&mut self, ends: Option<Instant>) {
        let Some(windows) = self.windows.as_ref() else {
            return;
        };
        if windows.is_closing() {
            if self.probes.window_closed() {
                self.window_closed();
            }
            return;
        }
        // Nor the other way round: a Go uprobe window (100 ms) closes first, else closing it
        // would wait for the whole detaching.
        if self.go_probes.as_ref().is_some_and(|p| p.is_open()) {
            return;
        }
        let records = self.window_load();
        let windows = self.windows.as_mut().expect("checked");
        match windows.change(Instant::now(), records, ends) {
            Some(windows::Change::Close) => self.probes.close_window(),
            Some(windows::Change::Open(groups)) => {
                let groups = groups.unwrap_or_else(|| self.native.window_groups());
                self.open_window(&groups)
            }
            None => {}
        }
    }

    /// Frees the slots of calls that returned while no window was open (their exits were not
    /// seen; a slot left behind would date a later call of the thread from the old one), keeps
    /// those still in progress (their exits in this window give their exact durations), brings
    /// the kernel's tracked fds up to date, and attaches the syscall tracepoints of `groups`.
    /// The target's threads holding a futex-wait or call slot (a call whose entry a probe saw).
    fn threads_holding_slots(&self) -> Vec<u32> {
        let tids = procfs::threads(self.pid);
        let waits = self
            .probes
            .pending_waits(&tids)
            .into_iter()
            .map(|(tid, _)| tid);
        let calls = self
            .probes
            .pending_calls(&tids)
            .into_iter()
            .map(|(tid, _)| tid);
        waits.chain(calls).collect()
    }

    fn open_window(&mut self, groups: &[Group]) {
        let mut with_slots = self.threads_holding_slots();
        with_slots.sort_unstable();
        with_slots.dedup();
        let stale: Vec<u32> = with_slots
            .into_iter()
            .filter(|&tid| !self.slot_still_held(tid))
            .collect();
        self.probes.clear_slots(&stale);
        self.held_slots.clear();
        self.native.resync_tracked_fds(self.probes);
        let records = self.window_load();
        match self.probes.open_window(groups) {
            Ok(()) => {
                if let Some(windows) = self.windows.as_mut() {
                    windows.opened(Instant::now(), monotonic_ns(), records);
                    windows.attached(self.probes.window_tracepoints());
                }
            }
            Err(err) => {
                self.probes.close_window();
                let note = format!("{err:#}: a probe window could not open");
                if !self.notes.contains(&note) {
                    self.notes.push(note);
                }
                if let Some(windows) = self.windows.as_mut() {
                    // Counted as a window of no length, so that the schedule moves on.
                    windows.opened(Instant::now(), monotonic_ns(), records);
                    windows.close();
                    windows.closed(Instant::now(), monotonic_ns());
                }
            }
        }
    }

    /// Ends the window in progress at the end of the trace: its detaching starts, and is
    /// waited for when the probes are dropped (after the trace: `--duration` holds). Counted
    /// as covered until now.
    fn close_window(&mut self) {
        let Some(windows) = self.windows.as_mut() else {
            return;
        };
        if !windows.is_open() {
            return;
        }
        if !windows.is_closing() {
            windows.close();
            self.probes.close_window();
        }
        windows.closed(Instant::now(), monotonic_ns());
    }

    /// The window's tracepoints are all detached: takes its last records, and notes the calls
    /// still in progress with their threads' context switch counts.
    fn window_closed(&mut self) {
        if let Some(windows) = self.windows.as_mut() {
            windows.closed(Instant::now(), monotonic_ns());
        }
        self.drain();
        let held = self.threads_holding_slots();
        self.held_slots = held
            .into_iter()
            .filter_map(|tid| Some((tid, procfs::context_switches(self.pid, tid)?)))
            .collect();
    }

    /// Whether thread `tid`'s slot (a call seen entering) can be trusted now: always while the
    /// probes are attached; between windows only while the thread has not run since the last
    /// window closed (else the call may have returned unseen).
    fn slot_still_held(&self, tid: u32) -> bool {
        if self.probes.window_is_open() {
            return true;
        }
        self.held_slots
            .get(&tid)
            .is_some_and(|&held| procfs::context_switches(self.pid, tid) == Some(held))
    }

    fn watch(&mut self, futex_addr: u64) {
        let key = FutexKey {
            uaddr: futex_addr,
            tgid: self.pid,
            _pad: 0,
        };
        if let Err(err) = self.probes.watch(key) {
            let note = format!("{err:#}: wakes on some futex words are not counted");
            if !self.notes.contains(&note) {
                self.notes.push(note);
            }
        }
    }

    /// Decodes what the ring buffer holds and applies it in arrival order.
    fn drain(&mut self) {
        // In batches: a full ring buffer holds ~250k records, and holding them all decoded at
        // once would add tens of MB to leaktrace's peak RSS in a storm.
        let mut records = Vec::with_capacity(DRAIN_BATCH);
        loop {
            let undecodable = &mut self.undecodable;
            let more = self
                .probes
                .drain(DRAIN_BATCH, |bytes| match decode::decode(bytes) {
                    Ok(record) => records.push(record),
                    Err(err) => undecodable.add(err),
                });
            self.apply_records(records.drain(..));
            if !more {
                return;
            }
        }
    }

    /// Applies decoded records in arrival order.
    fn apply_records(&mut self, records: impl Iterator<Item = Record>) {
        let mut stacks = stacktop::UserStacks {
            probes: self.probes,
            tops: &mut self.stack_tops,
            unwinder: self.unwinder.as_mut(),
            max_frames: self.settings.max_frames,
        };
        for record in records {
            match record {
                // Kept until the record with its stack id comes (this drain or a later one).
                Record::UserStackTop(top) => stacks.tops.keep(*top),
                Record::WaitDone(wait) => {
                    let user_stack = stacks
                        .get(wait.tid, wait.user_stack_id)
                        .map(|ips| self.symbolizer.user_stack(&ips));
                    let kernel_stack = self
                        .probes
                        .stack(wait.kernel_stack_id)
                        .map(|ips| self.symbolizer.kernel_stack(&ips));
                    self.model.apply(&Event::WaitDone {
                        tid: wait.tid,
                        futex_addr: wait.wait.uaddr,
                        op: wait.wait.op,
                        start_ns: wait.wait.start_ns,
                        duration_ns: wait.duration_ns,
                        ret: wait.ret,
                        user_stack,
                        kernel_stack,
                    });
                }
                Record::GoCreation(creation) => {
                    let event =
                        gocreation::creation_event(&creation, self.probes, &mut self.symbolizer);
                    self.model.apply(&event);
                }
                Record::GoTimerStart(start) => {
                    let event = gocreation::timer_start_event(
                        &start,
                        self.timer_key_is_arg,
                        self.timer_funcs_known,
                        self.probes,
                        &mut self.symbolizer,
                    );
                    self.model.apply(&event);
                }
                Record::CallDone(done) => {
                    self.creation_slots.observe(&done, &mut stacks);
                    self.native
                        .call_done(&done, &mut stacks, &mut self.symbolizer, &mut self.model)
                }
                Record::ThreadExit(exit) => self.native.thread_exit(&exit, &mut self.model),
                Record::ThreadRename(rename) => self.native.thread_rename(&rename, &mut self.model),
            }
        }
        self.creation_slots.flush(self.probes);
    }

    /// Watches long waits, snapshots the threads blocked long enough to matter, and reads wake
    /// counts and kernel counters. `last` takes everything blocked at all, for the report.
    fn scan(&mut self, last: bool) {
        if last {
            // The report is as of the end: a fresh read, to the end, after the trace.
            if let Some(read) = self.goroutine_read.take() {
                self.shared_frames = read.frames.previous;
                self.stack_cache = read.read.abandon();
            }
            self.read_goroutines(None);
        }
        let now = monotonic_ns();
        let watch_after = WATCH_AFTER_NS.min(self.settings.min_blocked_ns / 2);
        let snapshot_after = if last {
            0
        } else {
            self.settings.min_blocked_ns / 2
        };
        let threads = procfs::threads(self.pid);
        let pending: HashMap<u32, _> = self
            .probes
            .pending_waits(&threads)
            .into_iter()
            .filter(|&(tid, _)| self.slot_still_held(tid))
            .collect();
        for wait in pending.values() {
            if now.saturating_sub(wait.start_ns) >= watch_after {
                self.watch(wait.uaddr);
            }
        }

        let mut blocked = Vec::new();
        for &tid in &threads {
            let Some(state) = procfs::futex_wait_state(self.pid, tid, self.memory.as_ref()) else {
                continue;
            };
            let since = match pending.get(&tid) {
                Some(wait) if wait.uaddr == state.futex_addr => {
                    if now.saturating_sub(wait.start_ns) < snapshot_after {
                        continue;
                    }
                    BlockedSince::Exact(wait.start_ns)
                }
                Some(_) => continue,
                None => match self.seen_wait(tid, &state, now) {
                    Some(since) => since,
                    None => continue,
                },
            };
            blocked.push(self.blocked_thread(tid, since, &state, &threads));
        }
        self.seen_waits
            .retain(|tid, _| threads.binary_search(tid).is_ok());
        self.suspects(&blocked, now);
        self.model.apply(&Event::Blocked {
            at_ns: now,
            threads: blocked,
        });
        let held: std::collections::HashSet<u32> = threads
            .iter()
            .copied()
            .filter(|&tid| self.slot_still_held(tid))
            .collect();
        let mut scan = native::Scan {
            probes: &*self.probes,
            held: &held,
            symbolizer: &mut self.symbolizer,
            unwinder: &mut self.unwinder,
            now,
            min_blocked_ns: self.settings.min_blocked_ns,
            max_frames: self.settings.max_frames,
            last,
        };
        self.native.scan(&mut scan, &mut self.model);

        for (key, stats) in self.probes.watched() {
            self.model.apply(&Event::Wakes {
                futex_addr: key.uaddr,
                wakes: stats.wakes,
                first_waker_tid: (stats.wakes > 0).then_some(stats.first_waker_tid),
            });
        }
        self.read_counters();
    }

    /// Since when thread `tid` has been in the futex wait `state`, which no probe saw begin:
    /// the first look that found it in this wait, as long as its context switch count has not
    /// moved since (a wake, even one followed by a new wait on the same word, moves it). The
    /// look at attach dates it [`BlockedSince::BeforeTrace`]; a later one (a wait begun between
    /// probe windows, or racing the attach) [`BlockedSince::SeenAt`].
    fn seen_wait(&mut self, tid: u32, state: &FutexWaitState, now: u64) -> Option<BlockedSince> {
        let switches = procfs::context_switches(self.pid, tid)?;
        if let Some(seen) = self.seen_waits.get(&tid) {
            if seen.futex_addr == state.futex_addr
                && seen.op == state.op
                && seen.switches == switches
            {
                return Some(seen.since);
            }
        }
        self.watch(state.futex_addr);
        self.seen_waits.insert(
            tid,
            SeenWait {
                futex_addr: state.futex_addr,
                op: state.op,
                switches,
                since: BlockedSince::SeenAt(now),
            },
        );
        Some(BlockedSince::SeenAt(now))
    }

    /// Low mode: a thread blocked past the threshold in a wait that began after the last window
    /// closed has been seen by no probe: a window narrowed to futex calls counts who wakes its
    /// word and which waits on it complete.
    fn suspects(&mut self, blocked: &[BlockedThread], now: u64) {
        let Some(windows) = self.windows.as_mut() else {
            return;
        };
        let min_blocked = self.settings.min_blocked_ns;
        let unseen = blocked.iter().any(|t| match t.since {
            BlockedSince::SeenAt(seen) => {
                seen >= windows.last_closed_ns && now.saturating_sub(seen) >= min_blocked
            }
            _ => false,
        });
        if unseen {
            windows.suspect(vec![Group::Futex], Instant::now());
        }
    }

    fn blocked_thread(
        &mut self,
        tid: u32,
        since: BlockedSince,
        state: &FutexWaitState,
        threads: &[u32],
    ) -> BlockedThread {
        let key = (tid, since, state.futex_addr);
        if !self.stacks.contains_key(&key) {
            let ips = self
                .unwinder
                .as_mut()
                .map(|u| u.unwind_blocked(state.regs.pc, state.regs.sp, self.settings.max_frames))
                .unwrap_or_default();
            let user = self.symbolizer.user_stack(&ips);
            let kernel = procfs::kernel_stack(self.pid, tid);
            self.stacks.insert(key, (user, kernel));
        }
        let (user_stack, kernel_stack) = self.stacks[&key].clone();
        let waits_on = self
            .memory
            .as_ref()
            .map(|memory| {
                procfs::waits_on(
                    memory,
                    &mut self.namespace_tids,
                    tid,
                    state.futex_addr,
                    state.op,
                    &user_stack,
                    threads,
                )
            })
            .unwrap_or_default();
        BlockedThread {
            tid,
            name: procfs::thread_name(self.pid, tid),
            futex_addr: state.futex_addr,
            op: state.op,
            since,
            has_timeout: state.has_timeout,
            owner_tid: waits_on.lock_owner,
            joining_tid: waits_on.joined,
            user_stack,
            kernel_stack,
        }
    }

    fn read_counters(&mut self) {
        self.model
            .apply(&Event::KernelCounters(self.probes.counters()));
    }

    fn status_line(&self, started_ns: u64) {
        let counters = self.model.counters;
        let stuck = self
            .model
            .futex
            .blocked
            .iter()
            .filter(|t| self.model.blocked_for(t, monotonic_ns()).0 >= self.settings.min_blocked_ns)
            .count();
        eprint!(
            "\r\x1b[Kleaktrace: pid {} · {} probes · {} waits · {} lost · {} thread(s) blocked ≥ {} · {}",
            self.pid,
            self.probes.attached.len(),
            counters.waits_finished,
            counters.events_lost + counters.pending_map_full,
            stuck,
            human_ns(self.settings.min_blocked_ns),
            human_ns(monotonic_ns().saturating_sub(started_ns)),
        );
        let _ = std::io::stderr().flush();
    }
}

/// A read of all goroutines in progress.
struct GoroutineRead {
    started: Instant,
    /// leaktrace's CPU time spent on it so far (its slices, not the time between them).
    cpu: Duration,
    read: goruntime::SnapshotRead,
    /// The goroutines read so far, symbolized.
    goroutines: Vec<Goroutine>,
    frames: SharedFrames,
}

/// How long after a read that cost `cost` of leaktrace's CPU the next one may start: the
/// reads' share of one core beyond [`GOROUTINE_READ_FREE`] a read stays within
/// [`GOROUTINE_READ_BUDGET_PERCENT`], between [`GOROUTINES_EVERY`] and
/// [`GOROUTINES_AT_LEAST_EVERY`] apart.
fn read_interval(cost: Duration) -> Duration {
    (cost.saturating_sub(GOROUTINE_READ_FREE) * (100 / GOROUTINE_READ_BUDGET_PERCENT) as u32)
        .clamp(GOROUTINES_EVERY, GOROUTINES_AT_LEAST_EVERY)
}

/// Reads a trace of `duration` takes at the least, whatever they cost: a group is judged by
/// goroutines seen staying between reads, so a short trace spaced to the budget (an 8 s trace
/// of a costly target read at 0 s, 1 s and its end) could not see a leak that began after its
/// second read stay anywhere. A trace with a duration (a one-shot `--duration`, an agent's
/// interval) is bounded, and this many reads over it cost what they cost; a trace until Ctrl-C
/// keeps to the budget alone. With 100k goroutines (~200-400 ms of CPU a read) an agent
/// interval of 30 s is read every 7.5 s, where the budget alone would say 7.5-10 s.
const GOROUTINE_READS_PER_TRACE: u32 = 4;

/// [`read_interval`], no longer than a trace of `duration` allows for
/// [`GOROUTINE_READS_PER_TRACE`] reads (and never under [`GOROUTINES_EVERY`]).
fn read_interval_within(cost: Duration, duration: Option<Duration>) -> Duration {
    let budgeted = read_interval(cost);
    match duration {
        Some(duration) => {
            budgeted.min((duration / GOROUTINE_READS_PER_TRACE).max(GOROUTINES_EVERY))
        }
        None => budgeted,
    }
}

#[cfg(test)]
mod read_interval_tests {
    use super::*;

    #[test]
    fn cheap_reads_go_every_second_and_costly_ones_are_spaced_to_the_budget() {
        let ms = Duration::from_millis;
        assert_eq!(read_interval(ms(3)), GOROUTINES_EVERY);
        assert_eq!(read_interval(ms(50)), GOROUTINES_EVERY);
        // 150 ms over the free part at 2%: 7.5 s.
        assert_eq!(read_interval(ms(200)), ms(7500));
        assert_eq!(read_interval(ms(2000)), GOROUTINES_AT_LEAST_EVERY);
    }

    #[test]
    fn a_bounded_trace_gets_its_reads_whatever_they_cost() {
        let ms = Duration::from_millis;
        let s = Duration::from_secs;
        // 8 s: every 2 s at the most; 3 s: every second; 60 s or unbounded: the budget.
        assert_eq!(read_interval_within(ms(2000), Some(s(8))), s(2));
        assert_eq!(read_interval_within(ms(2000), Some(s(3))), GOROUTINES_EVERY);
        assert_eq!(read_interval_within(ms(200), Some(s(60))), ms(7500));
        assert_eq!(
            read_interval_within(ms(2000), None),
            GOROUTINES_AT_LEAST_EVERY
        );
        assert_eq!(read_interval_within(ms(3), Some(s(60))), GOROUTINES_EVERY);
    }
}

/// CPU time of the calling thread (the trace loop's): what a goroutine read cost leaktrace,
/// not the wall time it spent waiting for the CPU on a loaded machine.
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the struct.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Symbolized stacks, `go` statements and start functions by raw address(es).
/// foldhash: looked up once per goroutine per read (100k a read), where SipHash was a tenth of
/// a read's CPU (perf, 100k parked goroutines).
#[derive(Default)]
struct SharedLookups {
    stacks: foldhash::HashMap<Vec<u64>, Arc<[Frame]>>,
    statements: foldhash::HashMap<u64, Arc<Frame>>,
    functions: foldhash::HashMap<u64, Option<String>>,
}

/// Symbolizes a goroutine snapshot once per distinct raw stack, `go` statement PC and start PC,
/// not once per goroutine: a million leaked goroutines are a few distinct stacks, and each
/// goroutine then holds shared frames (two pointers) instead of owned strings. What the
/// previous snapshot symbolized is reused, so only a snapshot's own lookups stay in memory.
#[derive(Default)]
struct SharedFrames {
    current: SharedLookups,
    previous: SharedLookups,
}

impl SharedFrames {
    /// A goroutine as the model sees it: its stack and `go` statement symbolized.
    fn goroutine(&mut self, symbolizer: &mut Symbolizer, g: GoroutineState) -> Goroutine {
        let status = match g.status {
            GStatus::Waiting | GStatus::Leaked => GoStatus::Waiting,
            // On a CPU or ready for one: the same place for grouping, whichever it was caught in.
            GStatus::Runnable | GStatus::Running | GStatus::Preempted => GoStatus::Running,
            GStatus::Syscall => GoStatus::Syscall,
            GStatus::CopyStack => GoStatus::Copystack,
            _ => GoStatus::Other,
        };
        Goroutine {
            goid: g.goid,
            status,
            wait_reason: g.wait_reason,
            go_statement: self.statement(symbolizer, g.gopc),
            start_function: self.function(symbolizer, g.startpc),
            parent_goid: g.parent_goid,
            stack: self.stack(symbolizer, g.stack),
            tracking_seq: g.tracking_seq,
            waitsince_ns: u64::try_from(g.waitsince_ns).ok().filter(|&ns| ns > 0),
            waits_on: g.waits_on,
        }
    }

    fn statement(&mut self, symbolizer: &mut Symbolizer, gopc: u64) -> Arc<Frame> {
        if let Some(frame) = self.current.statements.get(&gopc) {
            return frame.clone();
        }
        let frame = match self.previous.statements.get(&gopc) {
            Some(frame) => frame.clone(),
            None => Arc::new(symbolizer.call_site(gopc)),
        };
        self.current.statements.insert(gopc, frame.clone());
        frame
    }

    fn function(&mut self, symbolizer: &mut Symbolizer, startpc: u64) -> Option<String> {
        if let Some(function) = self.current.functions.get(&startpc) {
            return function.clone();
        }
        let function = match self.previous.functions.get(&startpc) {
            Some(function) => function.clone(),
            None => symbolizer.function_at(startpc),
        };
        self.current.functions.insert(startpc, function.clone());
        function
    }

    fn stack(&mut self, symbolizer: &mut Symbolizer, pcs: Vec<u64>) -> Arc<[Frame]> {
        if let Some(frames) = self.current.stacks.get(&pcs) {
            return frames.clone();
        }
        let frames = match self.previous.stacks.get(&pcs) {
            Some(frames) => frames.clone(),
            None => goroutine_stack(symbolizer, &pcs).into(),
        };
        self.current.stacks.insert(pcs, frames.clone());
        frames
    }
}

/// A goroutine's saved `sched.pc` is a return address too (mcall/gosave saved it after a call),
/// so it is looked up one byte earlier like the rest, as the runtime's own traceback does
/// (runtime/traceback.go `symPC`; otherwise gopark shows the line after its mcall) — except
/// when it is a function's entry (a goroutine that has not run yet), where `symPC` does not
/// subtract either.
fn goroutine_stack(symbolizer: &mut Symbolizer, pcs: &[u64]) -> Vec<Frame> {
    match pcs.first() {
        Some(&pc) if pc == 0 || symbolizer.function_at(pc) != symbolizer.function_at(pc - 1) => {
            symbolizer.user_stack(pcs)
        }
        _ => symbolizer.return_addresses(pcs),
    }
}
