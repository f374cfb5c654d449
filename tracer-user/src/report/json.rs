//! The report as data: the [`Report`] every format renders, and its JSON serialization (the
//! JSON is a contract: later versions add fields, never remove or rename them).
use serde::{Deserialize, Serialize};

use super::{goroutines, ignore};
use crate::analyze::{Analysis, Finding};
use crate::model::KernelCounters;

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct TargetInfo {
    pub pid: u32,
    pub comm: String,
    /// Its executable's path as the target sees it (in its own mount namespace).
    pub exe: String,
    /// How its container names it, when it is in another mount or pid namespace.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container: Option<crate::procfs::root::ContainerView>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct TracerInfo {
    /// Peak resident memory of the tracer itself.
    pub max_rss_kb: u64,
    /// CPU time (user + system, ns) the tracer itself used, start-up and report included.
    pub cpu_ns: u64,
    /// Tracepoints attached.
    pub probes: Vec<String>,
    /// Anything the user should know about how complete this trace is.
    pub notes: Vec<String>,
    /// Go targets: the slowest read of all goroutines (the target is never paused for it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slowest_goroutine_read: Option<GoroutineRead>,
    /// Go targets: wall ns of what goroutine reads need once, done at attach before the first
    /// read and not counted in `slowest_goroutine_read` (the runtime layout and `.gopclntab`
    /// from the executable, and the symbolizer's load of its symbols and DWARF).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub goroutine_read_setup_ns: Option<u64>,
    /// `--detail`: "low" (syscall tracepoints in probe windows) or "full" (all the time).
    /// Recordings made before the field existed were full (not the CLI's default, low); None
    /// (the field absent) only for a recording cut short before its trailer, where it is
    /// unknown.
    #[serde(
        default = "crate::attach::Detail::before_the_field_existed",
        skip_serializing_if = "Option::is_none"
    )]
    pub detail: Option<crate::attach::Detail>,
    /// Low detail: how many probe windows, and how much of the trace they covered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub windows: Option<crate::collect::WindowSummary>,
}

impl TracerInfo {
    /// One line on how long the syscall probes were attached (`--detail`), for the text and
    /// HTML reports.
    pub fn detail_line(&self) -> String {
        use crate::attach::Detail;
        use crate::units::human_ns;
        match (self.detail, &self.windows) {
            (Some(Detail::Low), Some(w)) => format!(
                "detail low: syscall probes attached in {} window(s) covering {} of {} ({:.1}%); the rest from /proc and the target's memory",
                w.count,
                human_ns(w.covered_ns),
                human_ns(w.trace_ns),
                w.covered_ns as f64 * 100.0 / w.trace_ns.max(1) as f64
            ),
            (Some(Detail::Low), None) => {
                "detail low: syscall probes in windows (their coverage was not recorded); the rest from /proc and the target's memory".into()
            }
            (Some(Detail::Full), _) => "detail full: every probe attached for the whole trace".into(),
            (None, _) => "detail unknown: the recording was cut short before its trailer".into(),
        }
    }
}

#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
pub struct GoroutineRead {
    pub elapsed_ns: u64,
    pub goroutines: usize,
}

/// The whole report. Later versions add fields; they never remove or rename these.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub target: TargetInfo,
    pub duration_ns: u64,
    /// Events the kernel could not deliver or track (ring buffer full, pending-wait map full).
    pub lost_events: u64,
    pub target_exited: bool,
    pub min_blocked_ns: u64,
    pub waits_seen: u64,
    pub counters: KernelCounters,
    pub tracer: TracerInfo,
    /// Worst first; candidates suppressed by `--ignore` rules come after the others.
    pub candidates: Vec<ReportedCandidate>,
    pub wait_sites: Vec<crate::analyze::WaitSiteSummary>,
    /// Threads blocked past the threshold that are not candidates, with the reason.
    pub blocked_but_healthy: Vec<crate::analyze::BlockedButHealthy>,
    /// Go targets only: goroutine counts over the trace, and the groups that are not candidates.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub goroutines: Option<crate::analyze::goroutines::GoroutineOverview>,
    /// Go targets only: pending runtime timers (totals by kind; created/fired/stopped as far as
    /// snapshots tell) and the timer groups that are not candidates.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub go_timers: Option<crate::analyze::timers::GoTimerOverview>,
    /// Threads, epoll sets and timerfds seen during the trace.
    pub native_io: crate::analyze::native_io::NativeSummary,
    /// Set by the agent: fingerprints of the candidates of the target's previous interval that
    /// are gone in this one.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub resolved: Vec<String>,
    /// When the trace started, wall clock (ns since the Unix epoch), where known (a recording
    /// made before its trailer held it: not). Not in the JSON, whose `duration_ns` says how long.
    #[serde(skip)]
    pub started_unix_ns: Option<u64>,
    /// Go targets: the last goroutine snapshot, for the `goroutines` dump and pprof's groups
    /// that are not candidates (not in the JSON; see [`Report::keep_goroutine_snapshot`]).
    #[serde(skip)]
    pub goroutine_snapshot: Option<goroutines::Snapshot>,
}

/// A candidate as reported: the analysis' candidate plus its stable fingerprint and, when an
/// `--ignore` rule matched it, that rule. Dereferences to the candidate.
#[derive(Clone, Debug, Serialize)]
pub struct ReportedCandidate {
    #[serde(flatten)]
    pub candidate: Finding,
    /// `KIND:HASH`, stable across runs and restarts (see `analyze::fingerprint`).
    pub fingerprint: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub suppressed_by: Option<ignore::Suppression>,
    /// Set by the agent (`leaktrace agent`): `new`, `growing` or `stable` compared with the
    /// target's previous interval, by fingerprint.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<&'static str>,
}

impl std::ops::Deref for ReportedCandidate {
    type Target = Finding;
    fn deref(&self) -> &Finding {
        &self.candidate
    }
}

impl Report {
    pub fn new(
        target: TargetInfo,
        tracer: TracerInfo,
        analysis: Analysis,
        duration_ns: u64,
        target_exited: bool,
        min_blocked_ns: u64,
    ) -> Self {
        let counters = analysis.counters;
        Report {
            target,
            duration_ns,
            lost_events: counters.events_lost
                + counters.pending_map_full
                + counters.pending_calls_full
                + counters.tracked_fds_full
                + counters.epoll_stats_full,
            target_exited,
            min_blocked_ns,
            waits_seen: analysis.waits_seen,
            counters,
            tracer,
            candidates: analysis
                .candidates
                .into_iter()
                .map(|candidate| ReportedCandidate {
                    fingerprint: crate::analyze::fingerprint::of(&candidate),
                    candidate,
                    suppressed_by: None,
                    status: None,
                })
                .collect(),
            wait_sites: analysis.wait_sites,
            blocked_but_healthy: analysis.blocked_but_healthy,
            goroutines: analysis.goroutines,
            go_timers: analysis.go_timers,
            native_io: analysis.native_io,
            resolved: Vec::new(),
            started_unix_ns: None,
            goroutine_snapshot: None,
        }
    }

    pub fn to_json(&self) -> String {
        // Serializing plain data structures cannot fail.
        serde_json::to_string_pretty(self).expect("report serializes") + "\n"
    }
}
