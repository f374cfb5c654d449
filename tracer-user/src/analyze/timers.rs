//! Go timer leak candidates (catalogue T1-T4) from the timer model and the goroutine analysis:
//! pure and explained.
//!
//! - T1 `AfterFunc` never stopped, T2 `NewTimer`/`After` never stopped (Go 1.22 and older), T3
//!   tickers never stopped (Go 1.22 and older): a group of pending timers that grows during the
//!   trace, with deadlines far away (or a ticker whose channel stays full: it fires with nobody
//!   receiving).
//! - T4 AfterFunc callbacks that never finish: the goroutine analysis finds goroutines started
//!   by `time.goFunc` (the runtime's AfterFunc trampoline) that stay parked; they are reported
//!   here as fired timers whose callback is stuck.
//!
//! On Go 1.23 and later a channel timer (NewTimer, After, NewTicker) is in a P's heap only while
//! a goroutine waits on its channel, and an unstopped, unreferenced one is collected by the GC:
//! that is not a leak, and such groups are never candidates.
use std::collections::BTreeMap;

use serde::Serialize;

use crate::analyze::goroutines::GoroutineGroup;
use crate::analyze::{Context, Detail, Finding, FindingKind, Findings, Percentiles};
use crate::model::goroutines::CountAt;
use crate::model::timers::{GoTimer, Lifecycle, TimerGroupKey, TimerKind, TimerModel};
use crate::model::Frame;
use crate::model::{new_histogram, record};
use crate::units::human_ns;

const SCORE_PENDING: f64 = 30.0;
const SCORE_GREW: f64 = 40.0;
const SCORE_FAR: f64 = 20.0;
const SCORE_UNREAD: f64 = 20.0;
const SCORE_MANY: f64 = 10.0;
const SCORE_VERY_MANY: f64 = 20.0;
const CANDIDATE_SCORE: f64 = 80.0;
const MANY: usize = 10;
const VERY_MANY: usize = 100;
/// Deadlines this far away (or beyond the trace's length, if longer) count as "far".
const FAR_NS: u64 = 10_000_000_000;

/// What a group says when no start of its timers was seen.
pub const CREATION_SITE_UNKNOWN: &str = "not seen: the runtime does not record who started a \
     timer, and the timer-start probe (a sample: attached 100 ms a second) saw none of these start";

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct GoTimerGroup {
    pub kind: TimerKind,
    /// AfterFunc: the user's callback `function (file:line)`; others: the runtime function the
    /// timer runs (`time.sendTime`, ...).
    pub callback: String,
    /// Ticker period (0 for one-shot timers).
    pub period_ns: i64,
    /// Pending now, at the first snapshot, at most.
    pub count: usize,
    pub count_at_start: usize,
    pub count_max: usize,
    pub growth_per_s: f64,
    /// Created, fired, stopped during the trace (as snapshots one second apart can tell).
    pub lifecycle: Lifecycle,
    /// Time until each pending timer fires.
    pub due_in_ns: Percentiles,
    /// Pending timers whose deadline has passed (the runtime has not run them yet).
    pub overdue: usize,
    /// Channel timers whose channel is full: the last value was never received.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub channel_full: Option<usize>,
    /// Who started them, as far as the timer-start probe saw.
    pub creation_site: String,
    /// The most common starter stack among them (from the call to `time.AfterFunc` /
    /// `time.NewTimer` / ... out), when the probe saw any start.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub starter_stack: Option<Vec<Frame>>,
    pub history: Vec<CountAt>,
    /// T4: the goroutines the fired timers started, still parked in the callback.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub callback_goroutines: Option<Box<GoroutineGroup>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_a_candidate: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct KindTotals {
    pub pending: usize,
    pub created: u64,
    pub fired: u64,
    pub stopped: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct GoTimerOverview {
    /// `go1.23+` or `go1.22-`: which timer implementation the target runs.
    pub implementation: &'static str,
    /// `go1.22-` (unstopped channel timers stay in the heap until they fire, tickers forever:
    /// a leak) or `go1.23+` (the GC collects unreferenced ones): on Go 1.23-1.26 the GODEBUG
    /// setting `asynctimerchan=1` (build info default or environment) keeps the old semantics.
    pub channel_semantics: &'static str,
    /// What decided `channel_semantics` (version, setting, where the setting came from).
    pub channel_semantics_why: String,
    pub snapshots: u64,
    pub pending: usize,
    pub pending_at_start: usize,
    pub pending_max: usize,
    /// Stopped timers still in the heaps at the last snapshot (the runtime removes them
    /// lazily).
    pub stopped_in_heap: usize,
    /// By kind name (`AfterFunc`, `channel timer`, `ticker`, `sleep`, `runtime timer`).
    pub by_kind: BTreeMap<&'static str, KindTotals>,
    pub history: Vec<CountAt>,
    pub unreadable: u64,
    /// Groups that are not candidates, largest first.
    pub other_groups: Vec<GoTimerGroup>,
}

/// Pending-timer candidates (T1-T3) and the overview (None: no timer snapshot was read).
pub fn detect(model: &TimerModel, cx: &Context) -> Findings<Option<GoTimerOverview>> {
    let (candidates, overview) = pending(model, cx.started_ns);
    Findings {
        candidates,
        healthy: Vec::new(),
        overview,
    }
}

/// Cross-kind step (T4): the goroutine findings that are AfterFunc callbacks (goroutines
/// started by `time.goFunc` that stay parked) leave `goroutine_candidates` and become timer
/// findings, ahead of the pending timers' own in `timer_candidates`.
pub fn take_callbacks(
    goroutine_candidates: &mut Vec<Finding>,
    timer_candidates: &mut Vec<Finding>,
    model: &TimerModel,
) {
    let mut callbacks = Vec::new();
    let mut kept = Vec::with_capacity(goroutine_candidates.len());
    for candidate in goroutine_candidates.drain(..) {
        if is_timer_callback(&candidate) {
            callbacks.push(callback_candidate(candidate, model));
            continue;
        }
        kept.push(candidate);
    }
    *goroutine_candidates = kept;
    timer_candidates.splice(0..0, callbacks);
}

fn pending(model: &TimerModel, trace_started_ns: u64) -> (Vec<Finding>, Option<GoTimerOverview>) {
    let mut candidates = Vec::new();
    if model.snapshots == 0 {
        return (candidates, None);
    }
    let now = model.last_snapshot_ns;
    let trace_ns = now.saturating_sub(trace_started_ns);
    let span = Span {
        now,
        trace_s: (trace_ns as f64 / 1e9).max(1e-3),
        far_ns: FAR_NS.max(trace_ns),
    };
    let mut by_kind: BTreeMap<&'static str, KindTotals> = BTreeMap::new();
    let mut members: BTreeMap<&TimerGroupKey, Vec<&GoTimer>> = BTreeMap::new();
    for timer in &model.latest {
        let key = &model.seen[&timer.addr].key;
        members.entry(key).or_default().push(timer);
    }
    let mut others = Vec::new();
    for (key, history) in &model.groups {
        let life = model.lifecycle.get(key).copied().unwrap_or_default();
        let totals = by_kind.entry(key.kind.name()).or_default();
        totals.created += life.created;
        totals.fired += life.fired;
        totals.stopped += life.stopped;
        let timers = members.get(key).map(Vec::as_slice).unwrap_or_default();
        totals.pending += timers.len();
        if timers.is_empty() {
            continue;
        }
        let (group, score, reasons, missing) = describe(model, key, history, life, timers, span);
        let not_candidate = match key.kind {
            TimerKind::Sleep => Some("sleep timers belong to sleeping goroutines (see the goroutines)".to_string()),
            TimerKind::Other => Some("the runtime's own timers (network deadlines, ...)".to_string()),
            TimerKind::Chan | TimerKind::Ticker if model.channel_timers_collected() => Some(
                format!("Go 1.23+ timer semantics ({}): a channel timer is in a heap only while a goroutine waits on its channel (see the goroutines), and unstopped unreferenced ones are collected by the GC: not a timer leak", channel_semantics_why(model)),
            ),
            _ if score < CANDIDATE_SCORE => Some(format!(
                "no evidence of a leak: {} (score {score:.0} < {CANDIDATE_SCORE:.0})",
                missing.join("; ")
            )),
            _ => None,
        };
        match not_candidate {
            Some(why) => others.push(GoTimerGroup {
                not_a_candidate: Some(why),
                ..group
            }),
            None => candidates.push(candidate(group, score, reasons)),
        }
    }
    others.sort_by(|a, b| b.count.cmp(&a.count).then(a.callback.cmp(&b.callback)));
    let counts = || model.total.iter().map(|c| c.count);
    let overview = GoTimerOverview {
        implementation: if model.go_1_23_or_later {
            "go1.23+"
        } else {
            "go1.22-"
        },
        channel_semantics: if model.channel_timers_collected() {
            "go1.23+"
        } else {
            "go1.22-"
        },
        channel_semantics_why: channel_semantics_why(model),
        snapshots: model.snapshots,
        pending: model.latest.len(),
        pending_at_start: model.total.first().map_or(0, |c| c.count),
        pending_max: counts().max().unwrap_or(0),
        stopped_in_heap: model.stopped_in_heap,
        by_kind,
        history: model.total.clone(),
        unreadable: model.unreadable,
        other_groups: others,
    };
    (candidates, Some(overview))
}

/// Why channel timers have the semantics they have in the target.
fn channel_semantics_why(model: &TimerModel) -> String {
    match &model.channels {
        Some(channels) => channels.why.clone(),
        None if model.go_1_23_or_later => "Go 1.23+ runtime, GODEBUG unknown".into(),
        None => "Go 1.22 or older runtime".into(),
    }
}

/// The most common starter stack among `timers` (by function names) and a sentence on it.
fn starter(model: &TimerModel, timers: &[&GoTimer]) -> (String, Option<Vec<Frame>>) {
    let mut by_functions: BTreeMap<Vec<Option<String>>, (usize, &Vec<Frame>)> = BTreeMap::new();
    for stack in timers.iter().filter_map(|t| model.starts.get(&t.start_key)) {
        let functions = stack.iter().map(|f| f.function.clone()).collect();
        by_functions.entry(functions).or_insert((0, stack)).0 += 1;
    }
    let seen: usize = by_functions.values().map(|(n, _)| n).sum();
    let Some((n, stack)) = by_functions.into_values().max_by_key(|(n, _)| *n) else {
        return (CREATION_SITE_UNKNOWN.to_string(), None);
    };
    let site = crate::model::goroutines::own_frame(stack)
        .map(crate::model::goroutines::place)
        .unwrap_or_else(|| "unknown".into());
    (
        format!(
            "at {site}: the starter's stack was seen for {seen} of {} pending timer(s), {n} of them with this stack (sampled: the timer-start probe is attached 100 ms a second)",
            timers.len()
        ),
        Some(stack.clone()),
    )
}

/// The trace's times a timer group is judged against.
#[derive(Clone, Copy)]
struct Span {
    /// The last timer snapshot (CLOCK_MONOTONIC ns).
    now: u64,
    /// The trace's length in seconds (at least 1 ms), for growth rates.
    trace_s: f64,
    /// Deadlines at least this far (ns) count as far: [`FAR_NS`], or the trace if longer.
    far_ns: u64,
}

fn describe(
    model: &TimerModel,
    key: &TimerGroupKey,
    history: &[CountAt],
    lifecycle: Lifecycle,
    timers: &[&GoTimer],
    span: Span,
) -> (GoTimerGroup, f64, Vec<String>, Vec<String>) {
    let Span {
        now,
        trace_s,
        far_ns,
    } = span;
    let count = timers.len();
    let count_at_start = match history.first() {
        Some(first) if Some(first.at_ns) == model.first_snapshot_ns => first.count,
        _ => 0,
    };
    let count_max = history.iter().map(|c| c.count).max().unwrap_or(count);
    let mut due = new_histogram(2);
    let mut max_due = 0;
    let mut overdue = 0;
    for timer in timers {
        let due_in = timer.when_ns.saturating_sub(now as i64);
        if due_in < 0 {
            overdue += 1;
        }
        let due_in = due_in.max(0) as u64;
        record(&mut due, due_in);
        max_due = max_due.max(due_in);
    }
    let full = timers.iter().filter(|t| t.chan_full == Some(true)).count();
    let has_channel = timers.iter().any(|t| t.chan_full.is_some());
    let creation_site = starter(model, timers);
    let group = GoTimerGroup {
        kind: key.kind,
        callback: key.callback.clone(),
        period_ns: key.period_ns,
        count,
        count_at_start,
        count_max,
        growth_per_s: (count as f64 - count_at_start as f64) / trace_s,
        lifecycle,
        due_in_ns: Percentiles::of(&due, max_due, false),
        overdue,
        channel_full: has_channel.then_some(full),
        creation_site: creation_site.0,
        starter_stack: creation_site.1,
        history: history.to_vec(),
        callback_goroutines: None,
        not_a_candidate: None,
    };
    let what = match key.kind {
        TimerKind::Func => format!("AfterFunc timer(s) calling {}", key.callback),
        TimerKind::Ticker => format!("ticker(s) every {}", human_ns(key.period_ns as u64)),
        kind => format!("{}(s)", kind.name()),
    };
    let mut score = SCORE_PENDING;
    let mut reasons = vec![format!(
        "{count} pending {what}, due in {} (p50) to {} (max)",
        human_ns(group.due_in_ns.p50),
        human_ns(group.due_in_ns.max)
    )];
    let mut missing = Vec::new();
    let grew = count > count_at_start && lifecycle.created >= 2;
    if grew {
        score += SCORE_GREW;
        reasons.push(format!(
            "grew from {count_at_start} to {count} during the trace (+{:.1}/s): {} created, {} fired, {} stopped",
            group.growth_per_s, lifecycle.created, lifecycle.fired, lifecycle.stopped
        ));
    } else {
        missing.push("did not grow during the trace".into());
    }
    // A leak needs timers that outlive the trace: deadlines far away, or tickers that keep
    // firing into channels nobody reads. Growth alone could be a burst of short timeouts.
    let far = group.due_in_ns.p50 >= far_ns;
    let unread = has_channel && full * 2 > count;
    if far {
        score += SCORE_FAR;
        reasons.push(format!(
            "half of them fire only in {} or later: they pile up faster than they fire",
            human_ns(group.due_in_ns.p50)
        ));
    }
    if key.kind == TimerKind::Ticker && unread {
        score += SCORE_UNREAD;
        reasons.push(format!(
            "{full} of {count} have a full channel: they fire (every {}) with nobody receiving; {} ticks during the trace",
            human_ns(key.period_ns as u64),
            lifecycle.fired
        ));
    }
    let lasting = far || (key.kind == TimerKind::Ticker && unread);
    if !lasting {
        missing.push(format!(
            "due soon (p50 {}){}",
            human_ns(group.due_in_ns.p50),
            if key.kind == TimerKind::Ticker {
                " and their channels are being read"
            } else {
                ""
            }
        ));
    }
    if count >= VERY_MANY {
        score += SCORE_VERY_MANY;
    } else if count >= MANY {
        score += SCORE_MANY;
    } else {
        missing.push(format!("only {count}"));
    }
    match key.kind {
        TimerKind::Func => reasons.push(
            "the runtime keeps an AfterFunc timer, its callback and all the callback captures until it fires or is stopped (on every Go version): Stop it when it is no longer needed".into(),
        ),
        TimerKind::Chan | TimerKind::Ticker => reasons.push(format!(
            "Go 1.22 and older keep an unstopped timer and its channel in the runtime's heap until it fires (a ticker: forever), even when nothing references it: a leak; Stop it (Go 1.23+ collects unreferenced ones unless asynctimerchan=1). Here: {}",
            channel_semantics_why(model)
        )),
        _ => {}
    }
    let score = if grew && lasting {
        score
    } else {
        score.min(CANDIDATE_SCORE - 1.0)
    };
    (group, score, reasons, missing)
}

fn candidate(group: GoTimerGroup, score: f64, reasons: Vec<String>) -> Finding {
    let summary = match group.kind {
        TimerKind::Func => format!(
            "{} AfterFunc timer(s) pending, never stopped, calling {}",
            group.count, group.callback
        ),
        TimerKind::Ticker => format!(
            "{} ticker(s) every {} never stopped{}",
            group.count,
            human_ns(group.period_ns as u64),
            match group.channel_full {
                Some(full) if full * 2 > group.count => ", firing with nobody receiving",
                _ => "",
            }
        ),
        kind => format!("{} {}(s) pending, never stopped", group.count, kind.name()),
    };
    Finding {
        count: group.count,
        summary,
        score,
        reasons,
        blocking_stack: Vec::new(),
        creation_stack: group.starter_stack.clone(),
        blocked_ns: Percentiles::default(),
        grew: Some(group.count > group.count_at_start && group.lifecycle.created >= 2),
        detail: Detail::GoTimer {
            group,
            callback_wait_reason: None,
        },
    }
}

/// T4: a goroutine candidate whose goroutines were started by `time.goFunc` (the runtime's
/// AfterFunc trampoline) is an AfterFunc callback that never finished.
fn is_timer_callback(candidate: &Finding) -> bool {
    candidate.kind() == FindingKind::GoroutineLeak
        && candidate
            .creation_stack
            .as_ref()
            .and_then(|s| s.first())
            .is_some_and(|f| f.function.as_deref() == Some("time.goFunc"))
}

/// The callback function a `time.goFunc` goroutine runs: the outermost frame of its stack
/// below `runtime.goexit` (`go arg.(func())()` starts the goroutine in the callback itself).
fn callback_function(stack: &[Frame]) -> Option<&str> {
    stack
        .iter()
        .rev()
        .filter_map(|f| f.function.as_deref())
        .find(|f| *f != "runtime.goexit")
}

/// Who scheduled the callback: the timer-start probe's `AfterFunc` sample for the callback
/// function, as a sentence and the stack from the `time.AfterFunc` call out.
fn scheduler(model: &TimerModel, blocking_stack: &[Frame]) -> Option<(String, Vec<Frame>)> {
    let callback = callback_function(blocking_stack)?;
    let (times, stack) = model.callback_starts.get(callback)?;
    if stack.is_empty() {
        return None;
    }
    let site = crate::model::goroutines::own_frame(stack)
        .map(crate::model::goroutines::place)
        .unwrap_or_else(|| "unknown".into());
    Some((
        format!(
            "scheduled at {site}: time.AfterFunc(..., {callback}) was called there (the timer-start probe saw {times} such call(s), a sample: attached 100 ms a second); when each timer fired, time.goFunc started the callback in a goroutine"
        ),
        stack.clone(),
    ))
}

/// The goroutine finding of an AfterFunc callback that never finished, as a timer finding (its
/// group becomes the timer group's `callback_goroutines`).
fn callback_candidate(candidate: Finding, model: &TimerModel) -> Finding {
    let Finding {
        count,
        summary: _,
        score,
        mut reasons,
        blocking_stack,
        mut creation_stack,
        blocked_ns,
        grew,
        detail,
    } = candidate;
    let Detail::GoroutineLeak { group, wait_reason } = detail else {
        unreachable!("is_timer_callback takes goroutine findings only")
    };
    let state = wait_reason.clone().unwrap_or(group.state.clone());
    let scheduled = scheduler(model, &blocking_stack);
    if let Some((site, starter)) = &scheduled {
        // The creation chain: the `go` statement in time.goFunc, then who called AfterFunc.
        let mut chain = creation_stack
            .take()
            .unwrap_or_default()
            .into_iter()
            .take(1)
            .collect::<Vec<_>>();
        chain.extend(starter.iter().cloned());
        creation_stack = Some(chain);
        reasons.push(site.clone());
    }
    // The runtime's timer code starts them: no user goroutine created them.
    reasons.retain(|r| r != "created by goroutine(s) 0");
    let summary = format!(
        "{} AfterFunc callback(s) fired but never finished: {} at {}",
        group.count, state, group.sits_at
    );
    reasons.insert(
        0,
        format!(
            "the timers fired and time.goFunc started each callback in a goroutine; {} of them are still parked ({state}) in {}",
            group.count, group.sits_at
        ),
    );
    let group = GoTimerGroup {
        kind: TimerKind::Func,
        callback: group.sits_at.clone(),
        period_ns: 0,
        count: group.count,
        count_at_start: group.count_at_start,
        count_max: group.count_max,
        growth_per_s: group.growth_per_s,
        lifecycle: Lifecycle::default(),
        due_in_ns: Percentiles::default(),
        overdue: 0,
        channel_full: None,
        creation_site: match &scheduled {
            Some((site, _)) => site.clone(),
            None => format!(
                "the goroutines were started by the runtime's time.goFunc when the timers fired; who called time.AfterFunc was not seen ({CREATION_SITE_UNKNOWN})"
            ),
        },
        starter_stack: scheduled.map(|(_, stack)| stack),
        history: group.history.clone(),
        callback_goroutines: Some(Box::new(group)),
        not_a_candidate: None,
    };
    Finding {
        count,
        summary,
        score,
        reasons,
        blocking_stack,
        creation_stack,
        blocked_ns,
        grew,
        detail: Detail::GoTimer {
            group,
            callback_wait_reason: wait_reason,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::timers::tests::{after_func, ticker};

    const S: u64 = 1_000_000_000;
    const HOUR: u64 = 3600 * S;

    /// The timer detector after the callback step, as [`super::super::analyze`] runs them.
    fn analyze(
        model: &TimerModel,
        goroutine_candidates: &mut Vec<Finding>,
        trace_started_ns: u64,
    ) -> (Vec<Finding>, Option<GoTimerOverview>) {
        let (mut candidates, overview) = pending(model, trace_started_ns);
        take_callbacks(goroutine_candidates, &mut candidates, model);
        (candidates, overview)
    }

    fn traced(snapshots: &[Vec<GoTimer>], go_1_23: bool) -> TimerModel {
        let mut model = TimerModel {
            go_1_23_or_later: go_1_23,
            ..TimerModel::default()
        };
        for (i, snapshot) in snapshots.iter().enumerate() {
            model.apply_snapshot((i as u64 + 1) * S, snapshot, 0, S);
        }
        model
    }

    fn growing(make: impl Fn(u64) -> GoTimer) -> Vec<Vec<GoTimer>> {
        (1..=3)
            .map(|n| (1..=n * 50).map(|a| make(a * 0x100)).collect())
            .collect()
    }

    #[test]
    fn growing_after_func_timers_far_away_are_a_candidate() {
        let model = traced(&growing(|a| after_func(a, HOUR, "main.handle.func1")), true);
        let (candidates, overview) = analyze(&model, &mut Vec::new(), S);
        assert_eq!(candidates.len(), 1, "{candidates:?}");
        let c = &candidates[0];
        assert_eq!(c.kind(), FindingKind::GoTimer);
        assert_eq!(c.count, 150);
        assert!(c.summary.contains("main.handle.func1"), "{}", c.summary);
        let Detail::GoTimer { group, .. } = &c.detail else {
            panic!()
        };
        assert_eq!(group.lifecycle.created, 100);
        assert!(group.due_in_ns.p50 > 3000 * S);
        let overview = overview.unwrap();
        assert_eq!(overview.by_kind["AfterFunc"].pending, 150);
        assert_eq!(overview.pending_max, 150);
    }

    /// No recording holds a Go timer finding: its JSON keys (those of every kind, the JSON
    /// contract) are held here.
    #[test]
    fn a_timer_finding_keeps_the_shared_json_keys() {
        let model = traced(&growing(|a| after_func(a, HOUR, "main.handle.func1")), true);
        let (candidates, _) = analyze(&model, &mut Vec::new(), S);
        let json = serde_json::to_value(&candidates[0]).unwrap();
        // serde_json's map is sorted by key.
        let keys: Vec<&str> = json
            .as_object()
            .unwrap()
            .keys()
            .map(|k| k.as_str())
            .collect();
        assert_eq!(
            keys,
            [
                "blocked_ns",
                "blocking_stack",
                "count",
                "creation_stack",
                "go_timers",
                "grew",
                "kind",
                "reasons",
                "score",
                "summary",
                "threads",
                "wakes_during_trace"
            ]
        );
        assert_eq!(json["kind"], "go_timer");
        assert_eq!(json["wakes_during_trace"], 0);
        assert_eq!(json["threads"], serde_json::json!([]));
        assert_eq!(
            json["go_timers"]["callback"],
            "main.handle.func1 (fixture.c:1)"
        );
    }

    #[test]
    fn stable_or_soon_timers_are_not_candidates() {
        let few = vec![after_func(0x10, 2 * S, "main.cb"); 1];
        let model = traced(&[few.clone(), few.clone(), few], false);
        let (candidates, overview) = analyze(&model, &mut Vec::new(), S);
        assert!(candidates.is_empty());
        assert!(overview.unwrap().other_groups[0]
            .not_a_candidate
            .as_deref()
            .unwrap()
            .contains("did not grow"));
    }

    #[test]
    fn a_growing_burst_of_short_timeouts_is_not_a_candidate() {
        let snapshots = growing(|a| {
            let mut t = after_func(a, 4 * S, "main.cb");
            t.kind = TimerKind::Chan;
            t.callback = None;
            t.func = Some("time.sendTime".into());
            t
        });
        let (candidates, overview) = analyze(&traced(&snapshots, false), &mut Vec::new(), S);
        assert!(candidates.is_empty(), "{candidates:?}");
        let why = overview.unwrap().other_groups[0]
            .not_a_candidate
            .clone()
            .unwrap();
        assert!(why.contains("due soon"), "{why}");
    }

    #[test]
    fn unread_tickers_leak_before_go_1_23_only() {
        let snapshots = growing(|a| ticker(a, 3 * S, S / 10, true));
        let (old, _) = analyze(&traced(&snapshots, false), &mut Vec::new(), S);
        assert_eq!(old.len(), 1);
        assert!(old[0]
            .reasons
            .iter()
            .any(|r| r.contains("nobody receiving")));
        assert!(old[0].reasons.iter().any(|r| r.contains("Go 1.22")));
        let (new, overview) = analyze(&traced(&snapshots, true), &mut Vec::new(), S);
        assert!(new.is_empty());
        assert!(overview.unwrap().other_groups[0]
            .not_a_candidate
            .as_deref()
            .unwrap()
            .contains("collected by the GC"));
    }

    #[test]
    fn parked_after_func_callbacks_become_one_timer_candidate() {
        use crate::model::goroutines::{tests::goroutine, GoroutineModel};
        let callbacks = |ids: std::ops::RangeInclusive<u64>| -> Vec<_> {
            ids.map(|id| {
                goroutine(
                    id,
                    "time.goFunc",
                    &["runtime.gopark", "main.handle.func1"],
                    "chan receive",
                )
            })
            .collect()
        };
        let mut goroutines = GoroutineModel::default();
        for (i, last) in [20, 60, 100].into_iter().enumerate() {
            goroutines.apply_snapshot((i as u64 + 2) * S, &callbacks(1..=last), 0, S);
        }
        let (mut from_goroutines, _) = crate::analyze::goroutines::analyze(&goroutines, S, S);
        assert_eq!(from_goroutines.len(), 1);
        let (candidates, _) = analyze(&TimerModel::default(), &mut from_goroutines, S);
        assert!(from_goroutines.is_empty(), "moved, not duplicated");
        assert_eq!(candidates.len(), 1);
        let c = &candidates[0];
        assert_eq!(c.kind(), FindingKind::GoTimer);
        assert!(
            c.summary.contains("fired but never finished"),
            "{}",
            c.summary
        );
        let Detail::GoTimer { group, .. } = &c.detail else {
            panic!()
        };
        assert_eq!(group.callback_goroutines.as_ref().unwrap().count, 100);
        assert!(group.callback.starts_with("main.handle.func1"));
    }

    #[test]
    fn a_callback_candidate_names_who_called_after_func() {
        use crate::model::goroutines::{tests::goroutine, GoroutineModel};
        use crate::model::tests::frame;
        let mut goroutines = GoroutineModel::default();
        for (i, last) in [20, 60, 100].into_iter().enumerate() {
            let snapshot: Vec<_> = (1..=last)
                .map(|id| {
                    goroutine(
                        id,
                        "time.goFunc",
                        &["runtime.gopark", "sync.(*Mutex).Lock", "main.handle.func1"],
                        "sync.Mutex.Lock",
                    )
                })
                .collect();
            goroutines.apply_snapshot((i as u64 + 2) * S, &snapshot, 0, S);
        }
        let (mut from_goroutines, _) = crate::analyze::goroutines::analyze(&goroutines, S, S);
        let mut timers = TimerModel::default();
        let starter: Vec<Frame> = ["time.AfterFunc", "main.handle", "main.serve"]
            .iter()
            .map(|f| frame(f))
            .collect();
        timers.callback_start_seen("main.other", &[frame("main.elsewhere")]);
        timers.callback_start_seen("main.handle.func1", &starter);
        let (candidates, _) = analyze(&timers, &mut from_goroutines, S);
        let c = &candidates[0];
        let functions: Vec<_> = c
            .creation_stack
            .as_ref()
            .unwrap()
            .iter()
            .map(|f| f.function.clone().unwrap())
            .collect();
        assert_eq!(
            functions,
            ["time.goFunc", "time.AfterFunc", "main.handle", "main.serve"]
        );
        let Detail::GoTimer { group, .. } = &c.detail else {
            panic!()
        };
        assert!(
            group.creation_site.starts_with("scheduled at main.handle"),
            "{}",
            group.creation_site
        );
        assert_eq!(group.starter_stack.as_ref(), Some(&starter));
    }
}
