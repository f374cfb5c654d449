//! Goroutines over the trace: pure state fed with snapshots of the Go runtime's goroutines.
//!
//! A leaked goroutine costs no kernel wait, so the edges read the runtime's goroutine table from
//! the target's memory every few hundred milliseconds and hand the model a symbolized snapshot.
//! The model keeps the latest snapshot, when each goroutine was first seen and since when it has
//! sat at its current place, and the size of each group over time (for growth).
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::model::Frame;

/// A goroutine's scheduling state as leaktrace groups it, from the runtime's `g.atomicstatus`
/// (runtime/runtime2.go: `_Gwaiting`, `_Grunnable`, ...). Serialized (in recordings) and
/// printed as its lowercase name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GoStatus {
    /// Parked (`_Gwaiting`, and Go 1.26's `_Gleaked`): it has a wait reason.
    Waiting,
    /// On a CPU or ready for one (`_Grunning`, `_Grunnable`, `_Gpreempted`): the same place for
    /// grouping, whichever it was caught in.
    Running,
    /// In a system call (`_Gsyscall`).
    Syscall,
    /// Its stack being moved (`_Gcopystack`).
    Copystack,
    /// Any other state (idle, dead, unknown values).
    Other,
}

impl GoStatus {
    /// The name the report prints (`waiting`, `running`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            GoStatus::Waiting => "waiting",
            GoStatus::Running => "running",
            GoStatus::Syscall => "syscall",
            GoStatus::Copystack => "copystack",
            GoStatus::Other => "other",
        }
    }
}

impl std::fmt::Display for GoStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One goroutine in a snapshot, with its stack symbolized.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Goroutine {
    pub goid: u64,
    pub status: GoStatus,
    /// Why it is parked, in the runtime's words ("chan receive", "select", "sleep", ...).
    pub wait_reason: Option<String>,
    /// The `go` statement that created it (the runtime records its PC in every goroutine).
    /// Shared by the goroutines of one statement: a million goroutines are a handful of them.
    pub go_statement: Arc<Frame>,
    /// The function the goroutine runs.
    pub start_function: Option<String>,
    /// The goroutine that ran the `go` statement (Go 1.21+).
    pub parent_goid: Option<u64>,
    /// Where it is now, innermost first (empty for a goroutine on a CPU: its saved registers
    /// are stale while it runs). Shared by the goroutines parked at the same raw stack.
    pub stack: Arc<[Frame]>,
    /// `g.trackingSeq`, which moves each time it leaves a CPU (None when unreadable).
    #[serde(default)]
    pub tracking_seq: Option<u8>,
    /// `g.waitsince` (CLOCK_MONOTONIC ns, like the snapshot times) when the runtime has filled
    /// it in: the start of a GC that found it parked, so it has been parked at least since then.
    /// None when 0: the runtime sets it only during a GC's stack scans (runtime/mgcmark.go) and
    /// clears it whenever the goroutine runs (runtime/proc.go `execute`).
    #[serde(default)]
    pub waitsince_ns: Option<u64>,
    /// The channels it is parked on (`g.waiting` -> `sudog.c`; one per select case): empty for
    /// other waits and when unreadable.
    #[serde(default)]
    pub waits_on: Vec<u64>,
}

/// What makes goroutines "the same" for the report: created by the same `go` statement, parked
/// at the same place for the same reason.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct GroupKey {
    /// `function (file:line)` of the `go` statement.
    pub created_at: String,
    /// `function (file:line)` of the innermost frame of the program's own code (not the
    /// runtime's) where it sits now; for a goroutine on a CPU, its function.
    pub sits_at: String,
    /// The wait reason, or the status when it is not waiting.
    pub state: String,
}

/// Where a goroutine sits: its own-code frame, the reason, and since when we have seen it there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seen {
    pub first_seen_ns: u64,
    /// Whether it already existed when tracing started (its age is a lower bound).
    pub before_trace: bool,
    /// Shared by the goroutines of one group (one allocation per group, not per goroutine).
    pub key: Arc<GroupKey>,
    /// Since when it has been in `key` without leaving it between snapshots.
    pub at_key_since_ns: u64,
    /// Since when it has stayed at the same place: for a parked goroutine, in `key` (or longer,
    /// when `g.waitsince` says it has been parked since earlier); for one on a CPU or ready for
    /// it, in the same function whatever the line (a spinning loop stays in its loop).
    pub at_place_since_ns: u64,
    /// Since when it has been parked without running (its `g.trackingSeq` did not move), when
    /// that is known.
    pub parked_since_ns: Option<u64>,
    /// `parked_since_ns`/`at_place_since_ns` come from the runtime's `g.waitsince`.
    pub since_from_waitsince: bool,
    /// Its `g.trackingSeq` at the last snapshot.
    pub tracking_seq: Option<u8>,
}

impl Seen {
    /// `g.waitsince` is a lower bound of how long a parked goroutine has been parked (set to
    /// the start of a GC that found it parked, cleared when it runs): it moves the times back
    /// when it is earlier than what the snapshots showed.
    fn refine_with_waitsince(&mut self, goroutine: &Goroutine) {
        let Some(since) = goroutine
            .waitsince_ns
            .filter(|_| goroutine.status == GoStatus::Waiting)
        else {
            return;
        };
        if since < self.at_place_since_ns {
            self.at_place_since_ns = since;
            self.since_from_waitsince = true;
        }
        if let Some(parked) = self.parked_since_ns.as_mut() {
            *parked = (*parked).min(since);
        } else {
            self.parked_since_ns = Some(since);
        }
    }
}

/// The function of a `function (file:line)` place.
fn function_of(place: &str) -> &str {
    place.split(" (").next().unwrap_or(place)
}

/// Where a goroutine of this group sits, as dwell counts it: the group for parked goroutines;
/// the `go` statement and the function (any line) for goroutines on a CPU or ready for one.
pub fn place_of(key: &GroupKey) -> String {
    if is_parked_key(key) {
        format!("{} | {} | {}", key.created_at, key.sits_at, key.state)
    } else {
        format!(
            "{} | {} | running",
            key.created_at,
            function_of(&key.sits_at)
        )
    }
}

/// Whether a group key is that of parked goroutines (its state is a wait reason).
fn is_parked_key(key: &GroupKey) -> bool {
    !matches!(
        key.state.as_str(),
        "running" | "runnable" | "syscall" | "copystack" | "other"
    )
}

/// How many goroutines a group had at one snapshot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct CountAt {
    pub at_ns: u64,
    pub count: usize,
}

/// At most this many points of a count's history are kept; older points are thinned to every
/// other one, so a long trace keeps its shape in bounded memory.
const MAX_HISTORY: usize = 512;

pub(crate) fn push_history(history: &mut Vec<CountAt>, point: CountAt) {
    if history.len() >= MAX_HISTORY {
        let mut keep = false;
        // Keep the first point, then every other one.
        history.retain(|_| {
            keep = !keep;
            keep
        });
    }
    history.push(point);
}

#[derive(Clone, Debug, Default)]
pub struct GoroutineModel {
    /// The Go version of the target, once recognised.
    pub go_version: Option<String>,
    pub snapshots: u64,
    pub first_snapshot_ns: Option<u64>,
    pub last_snapshot_ns: u64,
    /// The highest goroutine id of the first snapshot: goroutine ids only grow, so any higher id
    /// was created during the trace.
    pub max_goid_at_start: u64,
    /// The target was started by leaktrace: every goroutine was created during the trace.
    pub target_started_by_trace: bool,
    pub latest: Vec<Goroutine>,
    /// By goid. foldhash: every goroutine of every snapshot is looked up and inserted (100k a
    /// read), where SipHash was a tenth of a read's CPU (perf, 100k parked goroutines).
    pub seen: foldhash::HashMap<u64, Seen>,
    /// Total live goroutines per snapshot.
    pub total: Vec<CountAt>,
    /// Group sizes per snapshot (a group absent from a snapshot had 0).
    pub groups: BTreeMap<GroupKey, Vec<CountAt>>,
    /// Goroutines the reader skipped (torn reads while the target ran), summed over snapshots.
    pub unreadable: u64,
    /// Creator stacks seen by the creation probe, by `go` statement PC (the goroutines' gopc).
    pub creations: HashMap<u64, ObservedCreation>,
    /// Goroutines seen to exit during the trace, by their `go` statement
    /// ([`GroupKey::created_at`]): how long goroutines of that statement live and still finish.
    pub exits: HashMap<String, Exits>,
    /// Goroutines seen to leave a place ([`place_of`]) during the trace (moved on or exited):
    /// how long that place holds goroutines it lets go.
    pub released: HashMap<String, Exits>,
    /// How far apart the reads were spaced to keep their cost within budget; set by the
    /// collector, not recorded (a replay has none).
    pub read_spacing: Option<ReadSpacing>,
}

/// How the collector spaced its reads of all goroutines: a read costing more than
/// `budget_percent` of one core over the time to the next read pushes the next one out (never
/// sooner than 1 s, never later than a cap), so a target with 100k goroutines is read less
/// often instead of losing a core's share to leaktrace.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ReadSpacing {
    /// The interval after the last read (ns): the one in use when the trace ended.
    pub interval_ns: u64,
    /// The longest interval used during the trace (ns).
    pub longest_interval_ns: u64,
    /// leaktrace's CPU time (ns, its thread's) for the last read: copying the gs and the stacks
    /// that changed, walking and symbolizing them, and the model's update.
    pub last_read_cpu_ns: u64,
    /// The share of one core the reads may take (2: 2%).
    pub budget_percent: u64,
    /// Goroutines of the last read whose stack was reused from the read before (they had not
    /// moved: goruntime::incremental), and whose stack was read and walked.
    pub last_read_reused: usize,
    pub last_read_walked: usize,
}

/// Goroutines seen to exit (by `go` statement) or to leave (by place).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Exits {
    pub count: u64,
    /// The longest any of them was seen alive (exits: first to last snapshot, from the trace's
    /// start for those older than the trace) or at the place (releases), in ns.
    pub longest_life_ns: u64,
}

impl Exits {
    fn add(&mut self, ns: u64) {
        self.count += 1;
        self.longest_life_ns = self.longest_life_ns.max(ns);
    }
}

/// What the creation probe saw of one `go` statement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObservedCreation {
    pub times: u64,
    /// The creator's stack the last time it was seen, from the `go` statement out.
    pub creator_stack: Vec<Frame>,
    /// The creator goroutine's own `go` statement PC (its gopc) in the same sample, 0 when
    /// unknown: the key of the creator's own creation in `GoroutineModel::creations`.
    pub creator_gopc: u64,
}

impl GoroutineModel {
    pub fn creation_seen(&mut self, go_pc: u64, creator_stack: &[Frame]) {
        let seen = self
            .creations
            .entry(go_pc)
            .or_insert_with(|| ObservedCreation {
                times: 0,
                creator_stack: Vec::new(),
                creator_gopc: 0,
            });
        seen.times += 1;
        if !creator_stack.is_empty() {
            seen.creator_stack = creator_stack.to_vec();
        }
    }

    /// The creation probe saw the `go` statement at `go_pc` run in a goroutine that was itself
    /// created at `creator_gopc` (0: unknown, ignored).
    pub fn creator_seen(&mut self, go_pc: u64, creator_gopc: u64) {
        if creator_gopc == 0 {
            return;
        }
        if let Some(seen) = self.creations.get_mut(&go_pc) {
            seen.creator_gopc = creator_gopc;
        }
    }

    pub fn apply_snapshot(
        &mut self,
        at_ns: u64,
        goroutines: &[Goroutine],
        unreadable: usize,
        trace_started_ns: u64,
    ) {
        self.apply_owned_snapshot(at_ns, goroutines.to_vec(), unreadable, trace_started_ns);
    }

    /// [`GoroutineModel::apply_snapshot`] without a copy of the goroutines: the snapshot becomes
    /// `latest`. Per goroutine the model keeps only the snapshot's own record and a [`Seen`]
    /// whose group key is shared by the group: group keys and places are computed once per
    /// distinct (stack, `go` statement, state), not once per goroutine.
    pub fn apply_owned_snapshot(
        &mut self,
        at_ns: u64,
        goroutines: Vec<Goroutine>,
        unreadable: usize,
        trace_started_ns: u64,
    ) {
        let first = self.first_snapshot_ns.is_none();
        let previous_snapshot_ns = self.last_snapshot_ns;
        if first {
            self.first_snapshot_ns = Some(at_ns);
            self.max_goid_at_start = if self.target_started_by_trace {
                0
            } else {
                goroutines.iter().map(|g| g.goid).max().unwrap_or(0)
            };
        }
        self.snapshots += 1;
        self.last_snapshot_ns = at_ns;
        self.unreadable += unreadable as u64;

        let mut keys = KeyInterner::default();
        // The previous snapshot's keys: a goroutine that stays in its group keeps the same Arc.
        for seen in self.seen.values() {
            if !keys.by_value.contains_key(&*seen.key) {
                keys.by_value.insert((*seen.key).clone(), seen.key.clone());
            }
        }
        let mut counts: foldhash::HashMap<*const GroupKey, (Arc<GroupKey>, usize)> =
            foldhash::HashMap::default();
        let mut seen =
            foldhash::HashMap::with_capacity_and_hasher(goroutines.len(), Default::default());
        for goroutine in &goroutines {
            let key = keys.key_of(goroutine);
            counts
                .entry(Arc::as_ptr(&key))
                .or_insert_with(|| (key.clone(), 0))
                .1 += 1;
            let parked = goroutine.status == GoStatus::Waiting;
            let entry = match self.seen.remove(&goroutine.goid) {
                Some(mut previous) => {
                    let stayed = Arc::ptr_eq(&previous.key, &key) || {
                        let before = keys.place_of(&previous.key).to_string();
                        before == keys.place_of(&key)
                    };
                    if !stayed {
                        let place = keys.place_of(&previous.key).to_string();
                        self.released
                            .entry(place)
                            .or_default()
                            .add(previous_snapshot_ns.saturating_sub(previous.at_place_since_ns));
                        previous.at_place_since_ns = at_ns;
                        previous.since_from_waitsince = false;
                    }
                    let still = parked
                        && stayed
                        && previous.parked_since_ns.is_some()
                        && goroutine.tracking_seq.is_some()
                        && previous.tracking_seq == goroutine.tracking_seq;
                    if !still {
                        // It ran. Back at the same place, it is a loop that keeps coming back
                        // (a poll, a ticker): the place did not let it go.
                        previous.parked_since_ns =
                            (parked && goroutine.tracking_seq.is_some()).then_some(at_ns);
                    }
                    previous.tracking_seq = goroutine.tracking_seq;
                    if previous.key != key {
                        previous.key = key;
                        previous.at_key_since_ns = at_ns;
                    }
                    previous.refine_with_waitsince(goroutine);
                    previous
                }
                None => {
                    // In the first snapshot, or an id from before the trace that we had not
                    // seen (it was dead-and-reused or unreadable): it existed before tracing.
                    let before_trace = !self.target_started_by_trace
                        && (first || goroutine.goid <= self.max_goid_at_start);
                    let since = if before_trace {
                        trace_started_ns.min(at_ns)
                    } else {
                        at_ns
                    };
                    let mut seen = Seen {
                        first_seen_ns: since,
                        before_trace,
                        key,
                        at_key_since_ns: since,
                        at_place_since_ns: since,
                        parked_since_ns: (parked && goroutine.tracking_seq.is_some())
                            .then_some(since),
                        since_from_waitsince: false,
                        tracking_seq: goroutine.tracking_seq,
                    };
                    seen.refine_with_waitsince(goroutine);
                    seen
                }
            };
            seen.insert(goroutine.goid, entry);
        }
        // Goroutines that exited are forgotten (the report is about what is alive), except how
        // long they had lived: goroutines of the same `go` statement that live that long still
        // finish.
        for gone in std::mem::take(&mut self.seen).into_values() {
            let lived = previous_snapshot_ns.saturating_sub(gone.first_seen_ns);
            match self.exits.get_mut(&gone.key.created_at) {
                Some(exits) => exits.add(lived),
                None => self
                    .exits
                    .entry(gone.key.created_at.clone())
                    .or_default()
                    .add(lived),
            }
            let at_place = previous_snapshot_ns.saturating_sub(gone.at_place_since_ns);
            let place = keys.place_of(&gone.key);
            match self.released.get_mut(place) {
                Some(released) => released.add(at_place),
                None => self
                    .released
                    .entry(place.to_string())
                    .or_default()
                    .add(at_place),
            }
        }
        self.seen = seen;
        let total = goroutines.len();
        // The previous snapshot is freed before the next one is read.
        self.latest = goroutines;

        push_history(
            &mut self.total,
            CountAt {
                at_ns,
                count: total,
            },
        );
        let counts: BTreeMap<GroupKey, usize> = counts
            .into_values()
            .map(|(key, count)| ((*key).clone(), count))
            .collect();
        for (key, history) in self.groups.iter_mut() {
            if !counts.contains_key(key) {
                push_history(history, CountAt { at_ns, count: 0 });
            }
        }
        for (key, count) in counts {
            let history = self.groups.entry(key).or_default();
            push_history(history, CountAt { at_ns, count });
        }
    }
}

/// Group keys of one snapshot, each computed once per distinct input and shared by value, and
/// their places ([`place_of`]). The inputs are identified by address: the collector shares one
/// stack and one `go` statement among the goroutines that have the same raw ones, and every
/// goroutine of the snapshot is alive while it is applied, so an address is not reused.
#[derive(Default)]
struct KeyInterner<'a> {
    by_inputs: foldhash::HashMap<KeyInputs<'a>, Arc<GroupKey>>,
    by_value: HashMap<GroupKey, Arc<GroupKey>>,
    places: HashMap<*const GroupKey, String>,
}

/// What [`group_key`] reads of a goroutine: its stack and `go` statement by address, its state.
type KeyInputs<'a> = (
    *const Frame,
    *const Frame,
    GoStatus,
    Option<&'a str>,
    Option<&'a str>,
);

impl<'a> KeyInterner<'a> {
    fn key_of(&mut self, goroutine: &'a Goroutine) -> Arc<GroupKey> {
        let inputs: KeyInputs<'a> = (
            goroutine.stack.as_ptr(),
            Arc::as_ptr(&goroutine.go_statement),
            goroutine.status,
            goroutine.wait_reason.as_deref(),
            goroutine.start_function.as_deref(),
        );
        if let Some(key) = self.by_inputs.get(&inputs) {
            return key.clone();
        }
        let key = group_key(goroutine);
        let key = self
            .by_value
            .entry(key.clone())
            .or_insert_with(|| Arc::new(key))
            .clone();
        self.by_inputs.insert(inputs, key.clone());
        key
    }

    fn place_of(&mut self, key: &Arc<GroupKey>) -> &str {
        self.places
            .entry(Arc::as_ptr(key))
            .or_insert_with(|| place_of(key))
    }
}

/// Frames of the runtime and of the standard library's blocking primitives: a goroutine parked
/// in a channel receive is "in" the user function that received, not in `runtime.gopark`.
pub fn is_runtime_frame(frame: &Frame) -> bool {
    const PREFIXES: &[&str] = &[
        "runtime.",
        "runtime/internal/",
        "internal/",
        "sync.",
        "sync/atomic.",
        "time.",
        "context.",
    ];
    frame
        .function
        .as_deref()
        .is_none_or(|f| PREFIXES.iter().any(|p| f.starts_with(p)))
}

/// The innermost frame of the program's own code, or the innermost named frame.
pub fn own_frame(stack: &[Frame]) -> Option<&Frame> {
    stack
        .iter()
        .find(|f| !is_runtime_frame(f))
        .or_else(|| stack.iter().find(|f| f.function.is_some()))
}

pub fn place(frame: &Frame) -> String {
    let function = frame.function.as_deref().unwrap_or("??");
    match (&frame.file, frame.line) {
        (Some(file), Some(line)) => {
            format!(
                "{function} ({}:{line})",
                file.rsplit('/').next().unwrap_or(file)
            )
        }
        _ => function.to_string(),
    }
}

/// What the main goroutine (goid 1) is "created at": it has no `go` statement (the runtime's
/// start-up code calls `runtime.newproc` for `runtime.main`, which shows as
/// `runtime.newproc (<autogenerated>:1)`), and Go's own tracebacks print no "created by" for it
/// (`printcreatedby`, runtime/traceback.go, Go 1.21+).
pub const MAIN_GOROUTINE: &str = "the program's start (main goroutine)";

pub fn group_key(goroutine: &Goroutine) -> GroupKey {
    // A goroutine on a CPU or ready for one is in a function, not at a line: it moves between
    // snapshots, and one caught running has no stack (only its start function) at all.
    let on_cpu = goroutine.status != GoStatus::Waiting;
    let sits_at = own_frame(&goroutine.stack)
        .map(|frame| match (&frame.function, on_cpu) {
            (Some(function), true) => function.clone(),
            _ => place(frame),
        })
        .or_else(|| goroutine.start_function.clone())
        .unwrap_or_else(|| "unknown".to_string());
    GroupKey {
        // goid 1 made by the runtime's start-up code: the main goroutine.
        created_at: if goroutine.goid == 1
            && goroutine
                .go_statement
                .function
                .as_deref()
                .is_some_and(|f| f.starts_with("runtime."))
        {
            MAIN_GOROUTINE.to_string()
        } else {
            place(&goroutine.go_statement)
        },
        sits_at,
        state: goroutine
            .wait_reason
            .clone()
            .unwrap_or_else(|| goroutine.status.to_string()),
    }
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use crate::model::tests::frame;

    pub fn goroutine(goid: u64, created_by: &str, stack: &[&str], reason: &str) -> Goroutine {
        Goroutine {
            goid,
            status: GoStatus::Waiting,
            wait_reason: Some(reason.into()),
            go_statement: Arc::new(frame(created_by)),
            start_function: None,
            parent_goid: None,
            stack: stack.iter().map(|f| frame(f)).collect(),
            tracking_seq: None,
            waitsince_ns: None,
            waits_on: Vec::new(),
        }
    }

    #[test]
    fn groups_by_go_statement_own_frame_and_reason() {
        let g = goroutine(
            7,
            "main.handle",
            &["runtime.gopark", "runtime.chanrecv1", "main.handle.func1"],
            "chan receive",
        );
        let key = group_key(&g);
        assert_eq!(key.created_at, "main.handle (fixture.c:1)");
        assert_eq!(key.sits_at, "main.handle.func1 (fixture.c:1)");
        assert_eq!(key.state, "chan receive");
    }

    #[test]
    fn the_main_goroutine_is_created_by_no_go_statement() {
        let stack = ["runtime.gopark", "time.Sleep", "main.main"];
        let main = goroutine(1, "runtime.newproc", &stack, "sleep");
        assert_eq!(group_key(&main).created_at, MAIN_GOROUTINE);
        // Only goid 1 is the main goroutine; others the runtime creates keep their site.
        let sweeper = goroutine(3, "runtime.gcenable", &["runtime.bgsweep"], "GC sweep wait");
        assert_eq!(
            group_key(&sweeper).created_at,
            "runtime.gcenable (fixture.c:1)"
        );
    }

    #[test]
    fn nothing_predates_a_trace_that_started_the_target() {
        let s = 1_000_000_000;
        let mut model = GoroutineModel {
            target_started_by_trace: true,
            ..Default::default()
        };
        let snapshot = vec![goroutine(1, "main.serve", &["main.worker"], "chan receive")];
        model.apply_snapshot(2 * s, &snapshot, 0, s);
        assert!(!model.seen[&1].before_trace);
        assert_eq!(model.seen[&1].first_seen_ns, 2 * s);
    }

    #[test]
    fn counts_grow_and_ages_follow_goroutine_ids() {
        let s = 1_000_000_000;
        let mut model = GoroutineModel::default();
        let stack = ["runtime.gopark", "main.worker"];
        let mut snapshot: Vec<Goroutine> = (1..=3)
            .map(|id| goroutine(id, "main.serve", &stack, "chan receive"))
            .collect();
        model.apply_snapshot(2 * s, &snapshot, 0, s);
        snapshot.push(goroutine(10, "main.serve", &stack, "chan receive"));
        model.apply_snapshot(3 * s, &snapshot, 1, s);
        let key = group_key(&snapshot[0]);
        let history = &model.groups[&key];
        assert_eq!(
            history.iter().map(|c| c.count).collect::<Vec<_>>(),
            vec![3, 4]
        );
        assert!(model.seen[&1].before_trace);
        assert_eq!(model.seen[&1].first_seen_ns, s);
        assert!(!model.seen[&10].before_trace);
        assert_eq!(model.seen[&10].first_seen_ns, 3 * s);
        assert_eq!(model.unreadable, 1);
        // A goroutine that moves resets its time at the place; one that exits is forgotten.
        snapshot[1] = goroutine(2, "main.serve", &["main.other"], "select");
        snapshot.remove(0);
        model.apply_snapshot(4 * s, &snapshot, 0, s);
        assert_eq!(model.seen[&2].at_key_since_ns, 4 * s);
        assert_eq!(model.seen[&3].at_key_since_ns, s);
        assert!(!model.seen.contains_key(&1));
        assert_eq!(model.groups[&key].last().unwrap().count, 2);
    }

    #[test]
    fn history_stays_bounded() {
        let mut history = Vec::new();
        for i in 0..10_000 {
            push_history(&mut history, CountAt { at_ns: i, count: 1 });
        }
        assert!(history.len() <= MAX_HISTORY);
        assert_eq!(history[0].at_ns, 0);
        assert_eq!(history.last().unwrap().at_ns, 9_999);
    }

    #[test]
    fn waitsince_and_tracking_seq_date_a_wait() {
        let s = 1_000_000_000;
        let mut model = GoroutineModel::default();
        let mut g = goroutine(5, "main.serve", &["main.wait"], "chan receive");
        g.tracking_seq = Some(9);
        // The runtime saw it parked at a GC 20 s before the trace.
        g.waitsince_ns = Some(10 * s);
        model.apply_snapshot(30 * s, &[g.clone()], 0, 30 * s);
        let seen = &model.seen[&5];
        assert_eq!(seen.at_place_since_ns, 10 * s);
        assert_eq!(seen.parked_since_ns, Some(10 * s));
        assert!(seen.since_from_waitsince);
        // It ran (trackingSeq moved) and parked at the same place again: still there (a loop
        // that keeps coming back), but the wait is new.
        g.tracking_seq = Some(10);
        g.waitsince_ns = None;
        model.apply_snapshot(31 * s, &[g.clone()], 0, 30 * s);
        let seen = &model.seen[&5];
        assert_eq!(seen.at_place_since_ns, 10 * s);
        assert_eq!(seen.parked_since_ns, Some(31 * s));
        let place = place_of(&seen.key);
        assert!(!model.released.contains_key(&place));
        // It exits: its go statement's goroutines live that long and finish, and its place
        // let it go after 21 s there.
        model.apply_snapshot(32 * s, &[], 0, 30 * s);
        assert_eq!(model.exits["main.serve (fixture.c:1)"].count, 1);
        assert_eq!(model.released[&place].longest_life_ns, 21 * s);
    }
}
