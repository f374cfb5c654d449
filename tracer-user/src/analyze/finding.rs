//! The one shape of a leak finding: a head every kind has (count, summary, score, reasons,
//! stacks, blocked-time percentiles) and one detail variant per kind with that kind's own
//! fields. The kind is derived from the detail, so the two cannot disagree.
use serde::{Serialize, Serializer};

use super::epoll::EpollDetail;
use super::goroutines::GoroutineGroup;
use super::threads::ThreadGroup;
use super::timerfd::TimerfdDetail;
use super::timers::GoTimerGroup;
use super::{CycleEdge, Percentiles, StuckThread};
use crate::model::Frame;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FindingKind {
    /// Threads waiting for each other's locks: none can ever proceed.
    Deadlock,
    /// Threads blocked in a futex wait for at least the threshold.
    FutexWait,
    /// Goroutines of a Go program that stay parked (or loop) and pile up.
    GoroutineLeak,
    /// Threads created at one site that keep growing in number while blocked (N3).
    ThreadLeak,
    /// Event loops in epoll_wait that nothing can wake (N4).
    EpollWait,
    /// timerfds never armed, never firing, fired but unread, or leaked (N5, N6).
    Timerfd,
    /// Go runtime timers never stopped, tickers nobody reads, AfterFunc callbacks that never
    /// finish (T1-T4).
    GoTimer,
}

impl FindingKind {
    /// The kind's JSON name (`goroutine_leak`, ...), for the formats that print it as text.
    pub fn name(self) -> &'static str {
        match self {
            FindingKind::Deadlock => "deadlock",
            FindingKind::FutexWait => "futex_wait",
            FindingKind::GoroutineLeak => "goroutine_leak",
            FindingKind::ThreadLeak => "thread_leak",
            FindingKind::EpollWait => "epoll_wait",
            FindingKind::Timerfd => "timerfd",
            FindingKind::GoTimer => "go_timer",
        }
    }
}

/// What only one kind of finding knows.
#[derive(Clone, Debug, PartialEq)]
pub enum Detail {
    /// A wait-for cycle: its threads, its edges from the lowest tid, and the wakes seen on the
    /// futex words they wait on.
    Deadlock {
        threads: Vec<StuckThread>,
        cycle: Vec<CycleEdge>,
        wakes: u64,
    },
    /// Threads blocked at one place (same return addresses), and the wakes seen on their words.
    FutexWait {
        threads: Vec<StuckThread>,
        wakes: u64,
    },
    /// A goroutine group; `wait_reason` as the Go runtime names it (None for goroutines not
    /// parked).
    GoroutineLeak {
        group: GoroutineGroup,
        wait_reason: Option<String>,
    },
    ThreadLeak(ThreadGroup),
    /// Its counter is the set's `events_during_trace`.
    EpollWait(EpollDetail),
    /// `expirations_read`: expirations read from all the group's timerfds during the trace
    /// (the detail lists only some of them).
    Timerfd {
        detail: TimerfdDetail,
        expirations_read: u64,
    },
    /// A timer group; for AfterFunc callbacks that never finish (T4), the callback goroutines'
    /// wait reason.
    GoTimer {
        group: GoTimerGroup,
        callback_wait_reason: Option<String>,
    },
}

impl Detail {
    pub fn kind(&self) -> FindingKind {
        match self {
            Detail::Deadlock { .. } => FindingKind::Deadlock,
            Detail::FutexWait { .. } => FindingKind::FutexWait,
            Detail::GoroutineLeak { .. } => FindingKind::GoroutineLeak,
            Detail::ThreadLeak(_) => FindingKind::ThreadLeak,
            Detail::EpollWait(_) => FindingKind::EpollWait,
            Detail::Timerfd { .. } => FindingKind::Timerfd,
            Detail::GoTimer { .. } => FindingKind::GoTimer,
        }
    }
}

/// One leak finding (a "candidate" in the report: a group worth a look, with the evidence).
#[derive(Clone, Debug, PartialEq)]
pub struct Finding {
    /// Threads, goroutines, event loops, timerfds or timers in the group.
    pub count: usize,
    pub summary: String,
    pub score: f64,
    /// Why it scored as it did, most important first.
    pub reasons: Vec<String>,
    pub blocking_stack: Vec<Frame>,
    /// Where the group was created; None where creation was not traced.
    pub creation_stack: Option<Vec<Frame>>,
    /// How long members have been blocked (ns); a timerfd's age; zero for Go timers.
    pub blocked_ns: Percentiles,
    /// Whether the group grew during the trace (None where growth is not tracked).
    pub grew: Option<bool>,
    pub detail: Detail,
}

impl Finding {
    pub fn kind(&self) -> FindingKind {
        self.detail.kind()
    }

    /// The stuck threads of a futex wait or deadlock (empty for the other kinds).
    pub fn threads(&self) -> &[StuckThread] {
        match &self.detail {
            Detail::Deadlock { threads, .. } | Detail::FutexWait { threads, .. } => threads,
            _ => &[],
        }
    }

    /// The Go wait reason of a goroutine group or of an AfterFunc callback's goroutines.
    pub fn wait_reason(&self) -> Option<&str> {
        match &self.detail {
            Detail::GoroutineLeak { wait_reason, .. }
            | Detail::GoTimer {
                callback_wait_reason: wait_reason,
                ..
            } => wait_reason.as_deref(),
            _ => None,
        }
    }
}

/// The JSON shape of a finding, as it was when every kind shared one struct: the JSON is a
/// contract (`report/json.rs`: fields are added, never removed or renamed; `tests/replay.rs`
/// holds it byte for byte), so every kind still prints `wakes_during_trace` (futex wakes, epoll
/// events or timerfd expirations read, by kind; 0 where the kind counts none) and `threads`
/// (empty but for futex waits and deadlocks), and its detail as one key named after the old
/// detail variant (`thread_group`, `epoll`, `timerfd`, `goroutines`, `go_timers`).
#[derive(Serialize)]
struct Wire<'a> {
    kind: FindingKind,
    count: usize,
    summary: &'a str,
    score: f64,
    reasons: &'a [String],
    blocking_stack: &'a [Frame],
    creation_stack: &'a Option<Vec<Frame>>,
    blocked_ns: &'a Percentiles,
    wakes_during_trace: u64,
    threads: &'a [StuckThread],
    #[serde(skip_serializing_if = "<[CycleEdge]>::is_empty")]
    cycle: &'a [CycleEdge],
    #[serde(skip_serializing_if = "Option::is_none")]
    wait_reason: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    grew: Option<bool>,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    detail: Option<WireDetail<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "snake_case")]
enum WireDetail<'a> {
    ThreadGroup(&'a ThreadGroup),
    Epoll(&'a EpollDetail),
    Timerfd(&'a TimerfdDetail),
    Goroutines(&'a GoroutineGroup),
    GoTimers(&'a GoTimerGroup),
}

impl Serialize for Finding {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let (wakes_during_trace, cycle, detail): (u64, &[CycleEdge], _) = match &self.detail {
            Detail::Deadlock { cycle, wakes, .. } => (*wakes, cycle, None),
            Detail::FutexWait { wakes, .. } => (*wakes, &[], None),
            Detail::GoroutineLeak { group, .. } => (0, &[], Some(WireDetail::Goroutines(group))),
            Detail::ThreadLeak(group) => (0, &[], Some(WireDetail::ThreadGroup(group))),
            Detail::EpollWait(epoll) => (
                epoll.events_during_trace,
                &[],
                Some(WireDetail::Epoll(epoll)),
            ),
            Detail::Timerfd {
                detail,
                expirations_read,
            } => (*expirations_read, &[], Some(WireDetail::Timerfd(detail))),
            Detail::GoTimer { group, .. } => (0, &[], Some(WireDetail::GoTimers(group))),
        };
        Wire {
            kind: self.kind(),
            count: self.count,
            summary: &self.summary,
            score: self.score,
            reasons: &self.reasons,
            blocking_stack: &self.blocking_stack,
            creation_stack: &self.creation_stack,
            blocked_ns: &self.blocked_ns,
            wakes_during_trace,
            threads: self.threads(),
            cycle,
            wait_reason: self.wait_reason(),
            grew: self.grew,
            detail,
        }
        .serialize(serializer)
    }
}
