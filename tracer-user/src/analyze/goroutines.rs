//! Goroutine leak candidates from the goroutine model: pure and explained.
//!
//! Goroutines are grouped by the `go` statement that created them, the place in the program's
//! own code where they sit and their wait reason. A group is judged only when its goroutines
//! stay: enough of the *same* goroutines have sat at the same place (the same wait; the same
//! function for one on a CPU, so a spinning loop stays) for `--min-blocked`. Age is not
//! evidence (a busy process has old goroutines that keep moving), nor is the last count being
//! above the first (a busy group's size jumps around).
//!
//! A group that stays becomes a candidate on evidence, each piece named in the reasons: it grew
//! as a trend over the whole trace through goroutines created while tracing that stayed; it can
//! never be woken (`select {}`, a nil channel); it is large; its members were created over time
//! (their ids are spread out) rather than together as a pool; they wait where a pool does not
//! idle (a send, a mutex, a WaitGroup, a Cond); each waits alone on its own channel (leaked
//! requests) rather than all on one shared channel (a pool's job queue). The last three let a
//! leak that ended before leaktrace attached be found from the target's memory alone. A quiet
//! pool of workers parked on one channel is not a leak and is listed among the other groups,
//! with why.
use std::collections::{BTreeSet, HashMap};

use serde::Serialize;

use crate::analyze::{Context, Detail, Finding, Findings, Percentiles};
use crate::model::goroutines::{place_of, CountAt, GoStatus, Goroutine, GoroutineModel, GroupKey};
use crate::model::{new_histogram, record, Frame};
use crate::units::human_ns;

/// Wait reasons that nothing can ever end.
const NEVER_WAKES: &[&str] = &[
    "select (no cases)",
    "chan receive (nil chan)",
    "chan send (nil chan)",
];

/// Wait reasons of goroutines the runtime owns for itself.
const RUNTIME_REASONS: &[&str] = &[
    "GC worker (idle)",
    "GC worker (active)",
    "force gc (idle)",
    "finalizer wait",
    "GC sweep wait",
    "GC scavenge wait",
    "cleanup wait",
    "trace reader (blocked)",
    "wait for GC cycle",
    "GC assist wait",
    "debug call",
];

const SCORE_LONG_LIVED: f64 = 40.0;
const SCORE_GREW: f64 = 40.0;
const SCORE_NEVER_WAKES: f64 = 40.0;
const SCORE_MANY: f64 = 10.0;
const SCORE_VERY_MANY: f64 = 20.0;
const SCORE_SPREAD: f64 = 20.0;
const SCORE_NOT_IDLE_WAIT: f64 = 20.0;
const SCORE_OWN_CHANNELS: f64 = 20.0;
/// Wait reasons (runtime2.go `waitReasonStrings`, Go 1.19-1.27) of waits a worker pool does not
/// idle in: an idle worker receives or selects on its job channel. "semacquire" is what runtimes
/// before 1.20 say for the sync waits.
const NOT_IDLE_WAITS: &[&str] = &[
    "chan send",
    "sync.Mutex.Lock",
    "sync.RWMutex.Lock",
    "sync.RWMutex.RLock",
    "sync.WaitGroup.Wait",
    "sync.Cond.Wait",
    "semacquire",
];
/// A group is a candidate from this score on: long-lived members plus at least one more piece
/// of evidence that is not just "there are a few of them".
const CANDIDATE_SCORE: f64 = 60.0;
const MANY: usize = 10;
const VERY_MANY: usize = 100;
/// Members' ids spread over this many times their count: created over time, not as one batch.
const SPREAD_FACTOR: u64 = 4;
/// A group's goroutines stay when at least one in this many has lived past the threshold.
const STAYERS_SHARE: usize = 5;
/// Goroutine ids listed per group.
const SAMPLE_GOIDS: usize = 10;

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct GoroutineGroup {
    /// `function (file:line)` of the `go` statement.
    pub created_at: String,
    /// Where they sit in the program's own code.
    pub sits_at: String,
    /// Wait reason, or `running` / `syscall` for goroutines not parked.
    pub state: String,
    pub count: usize,
    /// Size at the first snapshot of the trace, and largest seen.
    pub count_at_start: usize,
    pub count_max: usize,
    /// Members created during the trace (ids above every id of the first snapshot).
    pub created_during_trace: usize,
    pub growth_per_s: f64,
    /// How long they have existed: lower bounds for those older than the trace.
    pub age_ns: Percentiles,
    pub sample_goids: Vec<u64>,
    /// Group size over the trace.
    pub history: Vec<CountAt>,
    /// Why this group is not a candidate (for groups listed outside the candidates).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_a_candidate: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct GoroutineOverview {
    pub go_version: Option<String>,
    pub snapshots: u64,
    /// Live goroutines at the last snapshot, and over the trace.
    pub count: usize,
    pub count_at_start: usize,
    pub count_max: usize,
    pub history: Vec<CountAt>,
    /// Goroutines skipped because the target changed them while they were read.
    pub unreadable: u64,
    /// The other groups (runtime-owned, idle pools, busy ones), largest first.
    pub other_groups: Vec<GoroutineGroup>,
    /// How far apart the reads were spaced for leaktrace's CPU budget (live traces only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub read_spacing: Option<crate::model::goroutines::ReadSpacing>,
}

/// Goroutine-leak candidates, and the overview (None: not a Go target, or no snapshot read).
pub fn detect(model: &GoroutineModel, cx: &Context) -> Findings<Option<GoroutineOverview>> {
    let (candidates, overview) = analyze(model, cx.started_ns, cx.min_blocked_ns);
    Findings {
        candidates,
        healthy: Vec::new(),
        overview,
    }
}

pub(super) fn analyze(
    model: &GoroutineModel,
    trace_started_ns: u64,
    min_blocked_ns: u64,
) -> (Vec<Finding>, Option<GoroutineOverview>) {
    if model.snapshots == 0 {
        return (Vec::new(), None);
    }
    let now = model.last_snapshot_ns;
    let trace_s = (now.saturating_sub(trace_started_ns) as f64 / 1e9).max(1e-3);
    let mut candidates = Vec::new();
    let mut others = Vec::new();
    // How many goroutines of the whole process are parked on each channel.
    let mut waiters: HashMap<u64, usize> = HashMap::new();
    for goroutine in &model.latest {
        for &chan in &goroutine.waits_on {
            *waiters.entry(chan).or_default() += 1;
        }
    }
    let mut children: HashMap<u64, Vec<&Goroutine>> = HashMap::new();
    for goroutine in &model.latest {
        if let Some(parent) = goroutine.parent_goid {
            children.entry(parent).or_default().push(goroutine);
        }
    }
    let judge = Judge {
        model,
        waiters: &waiters,
        children: &children,
        now,
        trace_s,
        min_blocked_ns,
    };
    for (key, history) in &model.groups {
        let members: Vec<&Goroutine> = model
            .latest
            .iter()
            .filter(|g| model.seen.get(&g.goid).is_some_and(|s| *s.key == *key))
            .collect();
        if members.is_empty() {
            continue;
        }
        let (group, evidence) = judge.describe(key, history, &members);
        if let Some(why) = runtime_owned(key) {
            others.push(GoroutineGroup {
                not_a_candidate: Some(why),
                ..group
            });
            continue;
        }
        // Whether its goroutines stay: a share of them has sat at this place past the threshold.
        // Not a share of all (most members of a fast-growing leak are young by nature), and not
        // their age (a busy goroutine is old but moves).
        let stayers = evidence.stayers;
        let long_lived = stayers >= (members.len() / STAYERS_SHARE).max(1);
        // On a CPU or ready for one is not blocked: goroutines seen at one place in running
        // state across reads are a loop that never parks, or were starved of CPU on an
        // overloaded machine (runnable, not run, between two reads: the same g each time).
        // Only growth tells a spinning leak from a fixed set of busy or starved goroutines.
        let starved_or_busy = key.state == GoStatus::Running.as_str() && !evidence.grew;
        let score = if long_lived && !starved_or_busy {
            evidence.score
        } else {
            0.0
        };
        if score >= CANDIDATE_SCORE {
            candidates.push(candidate(model, key, group, &members, evidence, now));
        } else {
            let why = if long_lived && starved_or_busy {
                format!(
                    "running, not blocked: {stayers} of them were seen at this place for {} or \
                     more without parking (a loop that never parks, or ready to run and waiting \
                     for a CPU), and the group did not grow ({})",
                    human_ns(min_blocked_ns),
                    evidence.missing.join("; ")
                )
            } else if long_lived {
                format!(
                    "no evidence of a leak: {} (score {score:.0} < {CANDIDATE_SCORE:.0})",
                    evidence.missing.join("; ")
                )
            } else {
                format!(
                    "busy, not stuck: {stayers} of them ({} needed) stayed at this place for {}{}",
                    (members.len() / STAYERS_SHARE).max(1),
                    human_ns(min_blocked_ns),
                    if evidence.missing.is_empty() {
                        String::new()
                    } else {
                        format!(" ({})", evidence.missing.join("; "))
                    }
                )
            };
            others.push(GoroutineGroup {
                not_a_candidate: Some(why),
                ..group
            });
        }
    }
    others.sort_by(|a, b| b.count.cmp(&a.count).then(a.created_at.cmp(&b.created_at)));
    let counts = || model.total.iter().map(|c| c.count);
    let overview = GoroutineOverview {
        go_version: model.go_version.clone(),
        snapshots: model.snapshots,
        count: model.latest.len(),
        count_at_start: model.total.first().map_or(0, |c| c.count),
        count_max: counts().max().unwrap_or(0),
        history: model.total.clone(),
        unreadable: model.unreadable,
        other_groups: others,
        read_spacing: model.read_spacing,
    };
    (candidates, Some(overview))
}

struct Evidence {
    score: f64,
    reasons: Vec<String>,
    /// What a candidate would need and this group lacks (for groups that are not candidates).
    missing: Vec<String>,
    grew: bool,
    /// Members that have sat at this place for `--min-blocked` or more.
    stayers: usize,
}

/// What the judgement of every group needs.
struct Judge<'a> {
    model: &'a GoroutineModel,
    /// Goroutines of the whole process parked on each channel.
    waiters: &'a HashMap<u64, usize>,
    /// Live goroutines by the goroutine that created them (Go 1.21+ records it).
    children: &'a HashMap<u64, Vec<&'a Goroutine>>,
    now: u64,
    trace_s: f64,
    min_blocked_ns: u64,
}

/// Kendall's tau-a of a history against time, in [-1, 1]: the share of pairs of snapshots in
/// which the later one has more goroutines, minus the share in which it has fewer. A leak's count
/// rises steadily (near 1); a busy group's jumps up and down; a pool's is flat (0).
pub fn trend(history: &[CountAt]) -> f64 {
    let n = history.len();
    if n < 2 {
        return 0.0;
    }
    let mut sum: i64 = 0;
    for (i, a) in history.iter().enumerate() {
        for b in &history[i + 1..] {
            sum += (b.count as i64 - a.count as i64).signum();
        }
    }
    sum as f64 / (n * (n - 1) / 2) as f64
}

/// A group's count rises as a trend from this tau on.
const GROWING_TREND: f64 = 0.5;

impl Judge<'_> {
    fn dwell(&self, goroutine: &Goroutine) -> u64 {
        self.now
            .saturating_sub(self.model.seen[&goroutine.goid].at_place_since_ns)
    }

    /// Whether a goroutine it created is alive and working (on a CPU, ready for one, or parked
    /// only briefly): its wait is likely for that work, which is in progress, so it takes that
    /// goroutine's verdict rather than being stuck by itself.
    fn waits_for_busy_child(&self, goroutine: &Goroutine) -> bool {
        self.children.get(&goroutine.goid).is_some_and(|children| {
            children.iter().any(|c| {
                c.status != crate::model::goroutines::GoStatus::Waiting
                    || self.parked_for(c) < self.min_blocked_ns
            })
        })
    }

    /// How long it has been parked without running; its dwell when that is unknown (no
    /// `g.trackingSeq`).
    fn parked_for(&self, goroutine: &Goroutine) -> u64 {
        match self.model.seen[&goroutine.goid].parked_since_ns {
            Some(since) => self.now.saturating_sub(since),
            None => self.dwell(goroutine),
        }
    }

    fn describe(
        &self,
        key: &GroupKey,
        history: &[CountAt],
        members: &[&Goroutine],
    ) -> (GoroutineGroup, Evidence) {
        let model = self.model;
        let now = self.now;
        let count = members.len();
        // The history starts when the group first appeared: before that it had none.
        let count_at_start = match history.first() {
            Some(first) if Some(first.at_ns) == model.first_snapshot_ns => first.count,
            _ => 0,
        };
        let count_max = history.iter().map(|c| c.count).max().unwrap_or(count);
        let created_during_trace = members
            .iter()
            .filter(|g| g.goid > model.max_goid_at_start)
            .count();
        let mut ages = new_histogram(2);
        let mut max_age = 0;
        let mut at_least = false;
        let mut dwells = new_histogram(2);
        let mut max_dwell = 0;
        for goroutine in members {
            let seen = &model.seen[&goroutine.goid];
            let age = now.saturating_sub(seen.first_seen_ns);
            record(&mut ages, age);
            max_age = max_age.max(age);
            at_least |= seen.before_trace;
            let dwell = self.dwell(goroutine);
            record(&mut dwells, dwell);
            max_dwell = max_dwell.max(dwell);
        }
        // When goroutines of this `go` statement were seen to finish after living a while (slow
        // requests of a busy process, sampled once a second, can be caught in the same function
        // twice), sitting at one place for less than that is no evidence of being stuck.
        // Likewise a place that lets goroutines go after a while (a client waiting for its
        // slow request): only longer than that there is evidence.
        let exits = model
            .exits
            .get(&key.created_at)
            .copied()
            .unwrap_or_default();
        let released = model
            .released
            .get(&place_of(key))
            .copied()
            .unwrap_or_default();
        let threshold = self
            .min_blocked_ns
            .max(exits.longest_life_ns + 1)
            .max(released.longest_life_ns + 1);
        let stuck: Vec<&Goroutine> = members
            .iter()
            .copied()
            .filter(|g| self.dwell(g) >= threshold)
            .collect();
        let mut goids: Vec<u64> = members.iter().map(|g| g.goid).collect();
        goids.sort_unstable();
        let growth = count as f64 - count_at_start as f64;
        let group = GoroutineGroup {
            created_at: key.created_at.clone(),
            sits_at: key.sits_at.clone(),
            state: key.state.clone(),
            count,
            count_at_start,
            count_max,
            created_during_trace,
            growth_per_s: growth / self.trace_s,
            age_ns: Percentiles::of(&ages, max_age, at_least),
            sample_goids: goids.iter().copied().take(SAMPLE_GOIDS).collect(),
            history: history.to_vec(),
            not_a_candidate: None,
        };
        let dwell = Percentiles::of(&dwells, max_dwell, at_least);

        let mut evidence = Evidence {
            score: SCORE_LONG_LIVED,
            reasons: vec![format!(
                "{count} goroutine(s) created at {}, {} at {}: {} of them there for {} or more \
                 without leaving (p50 {}{})",
                key.created_at,
                key.state,
                key.sits_at,
                stuck.len(),
                human_ns(self.min_blocked_ns),
                human_ns(dwell.p50),
                if at_least { " or more" } else { "" },
            )],
            missing: Vec::new(),
            grew: false,
            stayers: stuck.len(),
        };
        if threshold > self.min_blocked_ns {
            // Only the side that raised the bar is named (a count of 0 says nothing).
            let seen = [
                (
                    exits.count,
                    exits.longest_life_ns,
                    "goroutines of this go statement finished",
                ),
                (
                    released.count,
                    released.longest_life_ns,
                    "this place let goroutines go",
                ),
            ]
            .into_iter()
            .filter(|(count, _, _)| *count > 0)
            .map(|(count, ns, what)| format!("{what} after up to {} ({count} seen)", human_ns(ns)))
            .collect::<Vec<_>>()
            .join(" and ");
            evidence
                .missing
                .push(format!("{seen}: only staying longer counts as stuck"));
        }
        // Growth: a rising trend over the whole history, through goroutines created while we
        // watched that stay, and not in one burst (a pool started once, as every pool of a
        // program traced from its start is, is steady): the new ones were first seen in two
        // snapshots or more.
        let creation_snapshots: BTreeSet<u64> = members
            .iter()
            .filter(|g| g.goid > model.max_goid_at_start)
            .map(|g| model.seen[&g.goid].first_seen_ns)
            .collect();
        // New ones that stay: seen at this place in two snapshots or more (with snapshots once a
        // second, a short trace cannot show a new goroutine sitting --min-blocked), and longer
        // than goroutines of this place and go statement that moved on or finished.
        let bar = exits.longest_life_ns.max(released.longest_life_ns);
        let new_stayers = members
            .iter()
            .filter(|g| g.goid > model.max_goid_at_start)
            .filter(|g| {
                let dwell = self.dwell(g);
                dwell > 0 && dwell > bar
            })
            .count();
        let tau = trend(history);
        if created_during_trace >= 2
            && creation_snapshots.len() >= 2
            && new_stayers >= 1
            && tau >= GROWING_TREND
        {
            evidence.grew = true;
            evidence.score += SCORE_GREW;
            evidence.reasons.push(format!(
                "grew from {count_at_start} to {count} during the trace (+{:.1}/s, trend {tau:.2}), \
                 {created_during_trace} created while tracing and still there",
                group.growth_per_s
            ));
        } else if created_during_trace >= 2 && creation_snapshots.len() < 2 {
            evidence
                .missing
                .push("created in one burst during the trace, not over time".into());
        } else if created_during_trace >= 2 && tau >= GROWING_TREND {
            evidence.missing.push(format!(
                "none of the {created_during_trace} created while tracing stayed {}",
                human_ns(self.min_blocked_ns)
            ));
        } else {
            evidence.missing.push(format!(
                "did not grow during the trace (trend {tau:.2} over {} snapshots)",
                history.len()
            ));
        }
        if NEVER_WAKES.contains(&key.state.as_str()) {
            evidence.score += SCORE_NEVER_WAKES;
            evidence
                .reasons
                .push(format!("{}: nothing can ever wake them", key.state));
        }
        if count >= VERY_MANY {
            evidence.score += SCORE_VERY_MANY;
            evidence
                .reasons
                .push(format!("{count} goroutines at the same place"));
        } else if count >= MANY {
            evidence.score += SCORE_MANY;
            evidence
                .reasons
                .push(format!("{count} goroutines at the same place"));
        } else {
            evidence.missing.push(format!("only {count}"));
        }
        if let (Some(&lowest), Some(&highest)) = (goids.first(), goids.last()) {
            let span = highest - lowest + 1;
            if count >= MANY && span >= SPREAD_FACTOR * count as u64 {
                evidence.score += SCORE_SPREAD;
                evidence.reasons.push(format!(
                    "created over time, not as one pool: their ids span {lowest}..{highest}"
                ));
            } else if count >= MANY {
                evidence.missing.push(format!(
                    "created together (ids {lowest}..{highest}), like a pool"
                ));
            }
        }
        // Where they wait, for those that stayed parked without running: what a pool does not
        // do. (One that keeps coming back to the same wait is busy there, not idle.)
        let parked: Vec<&Goroutine> = stuck
            .iter()
            .copied()
            .filter(|g| self.parked_for(g) >= threshold)
            .collect();
        let waiting_for_work = parked
            .iter()
            .filter(|g| self.waits_for_busy_child(g))
            .count();
        let parked: Vec<&Goroutine> = parked
            .into_iter()
            .filter(|g| !self.waits_for_busy_child(g))
            .collect();
        if waiting_for_work > 0 {
            evidence.missing.push(format!(
                "{waiting_for_work} of them wait while a goroutine each created is still working"
            ));
        }
        // Many of them: a few goroutines waiting a while on a WaitGroup or a lock may be waiting
        // for others that are busy (a client waiting for its slow requests).
        if parked.len() >= MANY && NOT_IDLE_WAITS.contains(&key.state.as_str()) {
            evidence.score += SCORE_NOT_IDLE_WAIT;
            evidence.reasons.push(format!(
                "{} of them have waited {} or more in {:?} without running: a pool idles on a \
                 receive or a select, not there",
                parked.len(),
                human_ns(threshold),
                key.state
            ));
        }
        self.channel_evidence(&parked, &mut evidence);
        (group, evidence)
    }

    /// Each alone on its own channel (leaked requests), or many on one (a pool's job queue).
    fn channel_evidence(&self, stuck: &[&Goroutine], evidence: &mut Evidence) {
        let on_channels: Vec<&&Goroutine> =
            stuck.iter().filter(|g| !g.waits_on.is_empty()).collect();
        if on_channels.len() < 2 {
            return;
        }
        let alone = on_channels
            .iter()
            .filter(|g| g.waits_on.iter().all(|c| self.waiters.get(c) == Some(&1)))
            .count();
        if alone == on_channels.len() {
            evidence.score += SCORE_OWN_CHANNELS;
            evidence.reasons.push(format!(
                "each of the {alone} waits alone on its own channel ({alone} channels), with \
                 no other goroutine on it: not workers sharing a job queue"
            ));
            return;
        }
        let mut shares: HashMap<u64, usize> = HashMap::new();
        for goroutine in &on_channels {
            for &chan in &goroutine.waits_on {
                *shares.entry(chan).or_default() += 1;
            }
        }
        if let Some((chan, shared)) = shares.into_iter().max_by_key(|&(c, n)| (n, c)) {
            if shared >= 2 {
                evidence.missing.push(format!(
                    "{shared} of them wait on one shared channel ({chan:#x}), like a pool's \
                     job queue"
                ));
            }
        }
    }
}

fn runtime_owned(key: &GroupKey) -> Option<String> {
    if key.created_at == crate::model::goroutines::MAIN_GOROUTINE {
        return Some("the main goroutine: it runs main.main for the program's life".into());
    }
    if RUNTIME_REASONS.contains(&key.state.as_str()) {
        return Some(format!("owned by the Go runtime ({})", key.state));
    }
    if key.created_at.starts_with("runtime.") || key.created_at.starts_with("??") {
        return Some("created by the Go runtime itself".into());
    }
    None
}

fn candidate(
    model: &GoroutineModel,
    key: &GroupKey,
    group: GoroutineGroup,
    members: &[&Goroutine],
    evidence: Evidence,
    now: u64,
) -> Finding {
    // How long each has sat where it is now.
    let mut blocked = new_histogram(2);
    let mut max = 0;
    let mut at_least = false;
    let mut from_waitsince = 0;
    let mut parked_throughout = 0;
    let mut any_before_trace = false;
    for goroutine in members {
        let seen = &model.seen[&goroutine.goid];
        let at_place = now.saturating_sub(seen.at_place_since_ns);
        record(&mut blocked, at_place);
        max = max.max(at_place);
        // Before the trace, or from g.waitsince (a GC's start after it parked): lower bounds.
        at_least |= seen.before_trace && seen.at_place_since_ns <= seen.first_seen_ns;
        from_waitsince += usize::from(seen.since_from_waitsince);
        any_before_trace |= seen.before_trace;
        parked_throughout += usize::from(
            seen.parked_since_ns
                .is_some_and(|since| since <= seen.first_seen_ns),
        );
    }
    // The stack of the oldest member stands for the group (they share the place).
    let representative = members
        .iter()
        .min_by_key(|g| g.goid)
        .expect("a group has members");
    let creators: BTreeSet<u64> = members.iter().filter_map(|g| g.parent_goid).collect();
    // The creator's stack from the `go` statement out, when the creation probe saw this `go`
    // statement run; otherwise the `go` statement alone (the runtime records it in every g).
    // When that statement is in the standard library, the chain goes on through the creators'
    // own creations until the program's code (issue 13 item 5).
    let observed = model.creations.get(&representative.go_statement.addr);
    let chain = super::ancestry::creation_chain(model, representative);
    let creation_stack: Vec<Frame> = chain.stack.clone();
    let wait_reason = representative.wait_reason.clone();
    let mut reasons = evidence.reasons;
    if wait_reason.is_some() {
        let seen_for = human_ns(Percentiles::of(&blocked, max, at_least).p50);
        reasons.push(if from_waitsince > 0 {
            format!(
                "the runtime's g.waitsince dates the wait of {from_waitsince} of them before \
                 the first snapshot (parked {} or more, p50)",
                human_ns(Percentiles::of(&blocked, max, true).p50)
            )
        } else if any_before_trace {
            format!(
                "g.waitsince is 0 for all of them (the runtime sets it only when a GC scans a \
                 parked goroutine): how long they were parked before tracing is unknown, at \
                 least the {seen_for} seen (p50)"
            )
        } else {
            format!("all of them were created while traced: parked {seen_for} (p50)")
        });
        if parked_throughout > 0 {
            reasons.push(format!(
                "{parked_throughout} of them did not run once while traced (g.trackingSeq \
                 unchanged)"
            ));
        }
    }
    if let Some(seen) = observed {
        reasons.push(format!(
            "the creation probe saw this go statement run {} time(s) during the trace",
            seen.times
        ));
    }
    reasons.extend(chain.describe());
    if !creators.is_empty() && creators.len() <= 3 {
        reasons.push(format!(
            "created by goroutine(s) {}",
            creators
                .iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    Finding {
        count: group.count,
        summary: format!(
            "{} goroutine(s) {} at {}, created at {}",
            group.count, key.state, key.sits_at, key.created_at
        ),
        score: evidence.score,
        reasons,
        blocking_stack: representative.stack.to_vec(),
        creation_stack: Some(creation_stack),
        blocked_ns: Percentiles::of(&blocked, max, at_least),
        grew: Some(evidence.grew),
        detail: Detail::GoroutineLeak { group, wait_reason },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::goroutines::tests::goroutine;

    const S: u64 = 1_000_000_000;

    fn traced(snapshots: &[Vec<Goroutine>]) -> GoroutineModel {
        let mut model = GoroutineModel::default();
        for (i, snapshot) in snapshots.iter().enumerate() {
            model.apply_snapshot((i as u64 + 1) * S, snapshot, 0, S);
        }
        model
    }

    fn parked(
        ids: impl Iterator<Item = u64>,
        created_by: &str,
        at: &str,
        why: &str,
    ) -> Vec<Goroutine> {
        ids.map(|id| goroutine(id, created_by, &["runtime.gopark", at], why))
            .collect()
    }

    #[test]
    fn a_growing_group_is_a_candidate_and_says_why() {
        // Two new goroutines in one snapshot, one more in the next: created over time.
        let first = parked(1..=5, "main.handle", "main.handle.func1", "chan receive");
        let grow = |snapshot: &Vec<Goroutine>, ids: &[u64]| {
            let mut next = snapshot.clone();
            next.extend(parked(
                ids.iter().copied(),
                "main.handle",
                "main.handle.func1",
                "chan receive",
            ));
            next
        };
        let second = grow(&first, &[20, 30]);
        let third = grow(&second, &[40]);
        let model = traced(&[first, second, third.clone(), third]);
        let (candidates, overview) = analyze(&model, S, S);
        assert_eq!(candidates.len(), 1);
        let leak = &candidates[0];
        assert_eq!(leak.kind(), crate::analyze::FindingKind::GoroutineLeak);
        assert_eq!(leak.count, 8);
        assert_eq!(leak.grew, Some(true));
        assert_eq!(leak.wait_reason(), Some("chan receive"));
        assert!(leak.reasons.iter().any(|r| r.contains("grew from 5 to 8")));
        let Detail::GoroutineLeak { group, .. } = &leak.detail else {
            panic!("a goroutine group")
        };
        assert_eq!(group.created_during_trace, 3);
        assert_eq!(group.count_at_start, 5);
        assert_eq!(
            leak.creation_stack.as_ref().unwrap()[0].function.as_deref(),
            Some("main.handle")
        );
        assert_eq!(overview.unwrap().count_max, 8);
    }

    #[test]
    fn an_observed_creation_gives_the_creators_stack() {
        let first = parked(1..=2, "main.handle", "main.handle.func1", "chan receive");
        let mut second = first.clone();
        second.extend(parked(
            [20].into_iter(),
            "main.handle",
            "main.handle.func1",
            "chan receive",
        ));
        let mut third = second.clone();
        third.extend(parked(
            [30].into_iter(),
            "main.handle",
            "main.handle.func1",
            "chan receive",
        ));
        let mut model = traced(&[first, second, third.clone(), third]);
        let go_pc = model.latest[0].go_statement.addr;
        let stack: Vec<Frame> = ["main.handle", "main.serve", "main.main"]
            .iter()
            .map(|f| crate::model::tests::frame(f))
            .collect();
        model.creation_seen(go_pc, &stack);
        model.creation_seen(go_pc, &stack);
        let (candidates, _) = analyze(&model, S, S);
        let creation = candidates[0].creation_stack.as_ref().unwrap();
        assert_eq!(creation.len(), 3);
        assert_eq!(creation[1].function.as_deref(), Some("main.serve"));
        assert!(candidates[0]
            .reasons
            .iter()
            .any(|r| r.contains("2 time(s)")));
    }

    #[test]
    fn a_pool_started_during_the_trace_in_one_burst_did_not_grow() {
        let before = parked(1..=1, "main.main", "main.other", "chan receive");
        let mut after = before.clone();
        after.extend(parked(10..=13, "main.main", "main.worker", "running"));
        let model = traced(&[before, after.clone(), after.clone(), after]);
        let (candidates, overview) = analyze(&model, S, S);
        assert!(candidates.is_empty(), "{candidates:?}");
        let pool = overview
            .unwrap()
            .other_groups
            .into_iter()
            .find(|g| g.count == 4)
            .unwrap();
        let why = pool.not_a_candidate.unwrap();
        assert!(why.contains("one burst"), "{why}");
    }

    #[test]
    fn a_fast_growing_leak_is_a_candidate_though_most_members_are_young() {
        let add = |snapshot: &Vec<Goroutine>, ids: std::ops::RangeInclusive<u64>| {
            let mut next = snapshot.clone();
            next.extend(parked(ids, "main.handle", "main.wait", "chan receive"));
            next
        };
        let first = parked(1..=10, "main.handle", "main.wait", "chan receive");
        let second = add(&first, 20..=24);
        let third = add(&second, 30..=59);
        // At the last snapshot 30 of the 45 were just created: the median age is 0.
        let model = traced(&[first.clone(), first, second, third]);
        let (candidates, _) = analyze(&model, S, S);
        assert_eq!(candidates.len(), 1, "{candidates:?}");
        assert_eq!(candidates[0].count, 45);
        assert_eq!(candidates[0].grew, Some(true));
    }

    #[test]
    fn an_idle_pool_from_start_up_is_not_a_candidate() {
        let pool = parked(10..=25, "main.main", "main.worker", "chan receive");
        let model = traced(&[pool.clone(), pool.clone(), pool]);
        let (candidates, overview) = analyze(&model, S, S);
        assert!(candidates.is_empty(), "{candidates:?}");
        let group = &overview.unwrap().other_groups[0];
        assert_eq!(group.count, 16);
        let why = group.not_a_candidate.as_deref().unwrap();
        assert!(
            why.contains("did not grow") && why.contains("like a pool"),
            "{why}"
        );
    }

    #[test]
    fn many_goroutines_created_over_time_are_a_candidate_even_without_growth() {
        // Attached long after the leak: 50 goroutines, ids spread out over thousands.
        let leaked = parked(
            (1..=50).map(|i| i * 97),
            "main.serve",
            "main.serve.func2",
            "chan send",
        );
        let model = traced(&[leaked.clone(), leaked]);
        let (candidates, _) = analyze(&model, S, S);
        assert_eq!(candidates.len(), 1);
        assert_eq!(candidates[0].grew, Some(false));
        assert!(candidates[0].blocked_ns.at_least);
        assert!(candidates[0]
            .reasons
            .iter()
            .any(|r| r.contains("created over time")));
    }

    #[test]
    fn select_with_no_cases_never_wakes() {
        let stuck = parked(
            [3].into_iter(),
            "main.start",
            "main.start.func1",
            "select (no cases)",
        );
        let model = traced(&[stuck.clone(), stuck]);
        let (candidates, _) = analyze(&model, S, S);
        assert_eq!(candidates.len(), 1);
        assert!(candidates[0]
            .reasons
            .iter()
            .any(|r| r.contains("nothing can ever wake")));
    }

    #[test]
    fn runtime_goroutines_and_short_lived_ones_are_not_candidates() {
        let gc = parked(
            1..=2,
            "runtime.gcBgMarkStartWorkers",
            "runtime.gcBgMarkWorker",
            "GC worker (idle)",
        );
        let model = traced(&[gc.clone(), gc]);
        let (candidates, overview) = analyze(&model, S, S);
        assert!(candidates.is_empty());
        assert!(overview.unwrap().other_groups[0]
            .not_a_candidate
            .as_deref()
            .unwrap()
            .contains("Go runtime"));
        // New goroutines every snapshot that do not stay: churn.
        let snapshots: Vec<Vec<Goroutine>> = (0..4)
            .map(|i| {
                parked(
                    (i * 100 + 1)..=(i * 100 + 20),
                    "main.handle",
                    "main.work",
                    "chan receive",
                )
            })
            .collect();
        let (candidates, _) = analyze(&traced(&snapshots), S, S);
        assert!(candidates.is_empty(), "{candidates:?}");
    }

    fn on_channels(mut goroutines: Vec<Goroutine>, chan_of: impl Fn(u64) -> u64) -> Vec<Goroutine> {
        for g in &mut goroutines {
            g.waits_on = vec![chan_of(g.goid)];
            g.tracking_seq = Some(7);
        }
        goroutines
    }

    #[test]
    fn trend_is_the_direction_of_the_whole_history() {
        let history = |counts: &[usize]| -> Vec<CountAt> {
            counts
                .iter()
                .enumerate()
                .map(|(i, &count)| CountAt {
                    at_ns: i as u64,
                    count,
                })
                .collect()
        };
        assert_eq!(trend(&history(&[1, 2, 3, 4])), 1.0);
        assert_eq!(trend(&history(&[5, 5, 5])), 0.0);
        assert_eq!(trend(&history(&[4, 3, 2])), -1.0);
        // The busy group: up more often than down, but that alone is not growth.
        let busy = trend(&history(&[1, 8, 16, 59, 17, 33, 16, 102]));
        assert!(busy > 0.5 && busy < 0.7, "{busy}");
    }

    #[test]
    fn busy_goroutines_that_keep_moving_are_not_stuck() {
        // The history (1, 8, 16, 59, 17, 33, 16, 102) at one line, new goroutines every
        // snapshot; some live on into the next snapshot, but somewhere else by then.
        let counts = [1u64, 8, 16, 59, 17, 33, 16, 102];
        let mut next_id = 100;
        let mut snapshots = Vec::new();
        let mut previous: Vec<u64> = Vec::new();
        for &count in &counts {
            let mut snapshot = Vec::new();
            // Half of the previous snapshot's goroutines are still alive, now in main.render.
            for &id in previous.iter().step_by(2) {
                snapshot.extend(parked(
                    [id].into_iter(),
                    "main.serve",
                    "main.render",
                    "running",
                ));
            }
            let ids: Vec<u64> = (next_id..next_id + count).collect();
            next_id += count * 3;
            snapshot.extend(parked(
                ids.iter().copied(),
                "main.serve",
                "main.parse",
                "running",
            ));
            previous = ids;
            snapshots.push(snapshot);
        }
        let model = traced(&snapshots);
        let (candidates, overview) = analyze(&model, S, S);
        assert!(candidates.is_empty(), "{candidates:#?}");
        let parse = overview
            .unwrap()
            .other_groups
            .into_iter()
            .find(|g| g.sits_at.starts_with("main.parse"))
            .unwrap();
        assert_eq!(parse.count, 102);
        assert!(parse
            .not_a_candidate
            .unwrap()
            .starts_with("busy, not stuck"));
    }

    #[test]
    fn goroutines_starved_of_cpu_at_one_place_are_not_stuck() {
        // 300 goroutines created over time, each caught ready to run at the same place in
        // every read (an overloaded machine: runnable, not run, between reads), none more of
        // them later: busy or starved, not a leak. Parked at that place, they would be one.
        let starved = |id: u64| {
            let mut g = goroutine(id, "main.main", &["main.mover"], "");
            g.wait_reason = None;
            g.status = GoStatus::Running;
            g
        };
        let snapshots: Vec<Vec<Goroutine>> = (0..5)
            .map(|_| (0..300u64).map(|i| starved(10 + i * 7)).collect())
            .collect();
        let model = traced(&snapshots);
        let (candidates, overview) = analyze(&model, S, S);
        assert!(candidates.is_empty(), "{candidates:#?}");
        let group = overview
            .unwrap()
            .other_groups
            .into_iter()
            .find(|g| g.sits_at.starts_with("main.mover"))
            .unwrap();
        assert!(
            group
                .not_a_candidate
                .as_deref()
                .is_some_and(|why| why.starts_with("running, not blocked")),
            "{group:#?}"
        );
    }

    #[test]
    fn a_spinning_loop_stays_a_candidate() {
        // The same goroutines in the same loop function the whole trace, caught on a CPU (no
        // stack: grouped by their start function) or preempted in it, more of them over time.
        let spinner = |id: u64, on_cpu: bool| {
            let mut g = goroutine(id, "main.handle", &["main.spin"], "");
            g.wait_reason = None;
            g.status = crate::model::goroutines::GoStatus::Running;
            g.start_function = Some("main.spin".into());
            if on_cpu {
                g.stack = Default::default();
            }
            g
        };
        let snapshots: Vec<Vec<Goroutine>> = (0..5u64)
            .map(|i| {
                (0..=i)
                    .map(|j| spinner(10 + j * 7, (i + j) % 2 == 0))
                    .collect()
            })
            .collect();
        let model = traced(&snapshots);
        let (candidates, _) = analyze(&model, S, S);
        assert_eq!(candidates.len(), 1, "{candidates:#?}");
        assert_eq!(candidates[0].grew, Some(true));
        assert_eq!(model.seen[&10].at_place_since_ns, S);
    }

    #[test]
    fn a_leak_over_before_attach_is_judged_from_memory() {
        // 50 goroutines, consecutive ids (created together), each alone on its own channel,
        // parked without running: leaked requests.
        let leaked = on_channels(
            parked(6..=55, "main.handle", "main.handle.func1", "chan receive"),
            |id| 0x1000 + id * 0x60,
        );
        let model = traced(&[leaked.clone(), leaked.clone(), leaked]);
        let (candidates, _) = analyze(&model, S, S);
        assert_eq!(candidates.len(), 1, "{candidates:#?}");
        assert_eq!(candidates[0].grew, Some(false));
        assert!(candidates[0]
            .reasons
            .iter()
            .any(|r| r.contains("each of the 50 waits alone on its own channel")));
        assert!(candidates[0]
            .reasons
            .iter()
            .any(|r| r.contains("g.waitsince is 0")));

        // 50 on a mutex: a pool does not idle there.
        let mut on_mutex = parked(
            6..=55,
            "main.handle",
            "main.handle.func2",
            "sync.Mutex.Lock",
        );
        for g in &mut on_mutex {
            g.tracking_seq = Some(3);
        }
        let model = traced(&[on_mutex.clone(), on_mutex.clone(), on_mutex]);
        let (candidates, _) = analyze(&model, S, S);
        assert_eq!(candidates.len(), 1, "{candidates:#?}");
        assert!(candidates[0]
            .reasons
            .iter()
            .any(|r| r.contains("a pool idles on a receive or a select")));
    }

    #[test]
    fn an_idle_pool_on_one_shared_channel_is_not_a_candidate() {
        let pool = on_channels(
            parked(10..=25, "main.main", "main.worker", "chan receive"),
            |_| 0x4000,
        );
        let model = traced(&[pool.clone(), pool.clone(), pool]);
        let (candidates, overview) = analyze(&model, S, S);
        assert!(candidates.is_empty(), "{candidates:#?}");
        let why = overview.unwrap().other_groups[0]
            .not_a_candidate
            .clone()
            .unwrap();
        assert!(
            why.contains("16 of them wait on one shared channel"),
            "{why}"
        );
    }

    #[test]
    fn waiting_for_a_goroutine_that_still_works_is_not_being_alone() {
        // 40 clients, each on its own reply channel, each with a request goroutine it created
        // that is working: the wait is for work in progress.
        let clients = on_channels(
            parked(1..=40, "main.main", "main.client", "chan receive"),
            |id| 0x8000 + id * 0x60,
        );
        let snapshot = |round: u64| {
            let mut all = clients.clone();
            for client in 1..=40u64 {
                let mut request =
                    goroutine(1000 * round + client, "main.client", &["main.request"], "");
                request.status = crate::model::goroutines::GoStatus::Running;
                request.wait_reason = None;
                request.parent_goid = Some(client);
                all.push(request);
            }
            all
        };
        let model = traced(&[snapshot(1), snapshot(2), snapshot(3)]);
        let (candidates, overview) = analyze(&model, S, S);
        assert!(candidates.is_empty(), "{candidates:#?}");
        let why = overview
            .unwrap()
            .other_groups
            .into_iter()
            .find(|g| g.sits_at.starts_with("main.client"))
            .and_then(|g| g.not_a_candidate)
            .unwrap();
        assert!(why.contains("created is still working"), "{why}");
    }

    #[test]
    fn a_place_that_lets_goroutines_go_raises_the_bar() {
        // Requests that sit 2 s in one place and then finish: a third one there for 2 s is
        // not stuck, though it is past --min-blocked.
        let at = |ids: std::ops::RangeInclusive<u64>| {
            parked(ids, "main.serve", "main.slow", "chan receive")
        };
        let snapshots = vec![
            at(1..=12),
            at(1..=12),
            at(1..=12),
            at(20..=31),
            at(20..=31),
            at(20..=31),
        ];
        let model = traced(&snapshots);
        let (candidates, overview) = analyze(&model, S, S);
        assert!(candidates.is_empty(), "{candidates:#?}");
        let why = overview.unwrap().other_groups[0]
            .not_a_candidate
            .clone()
            .unwrap();
        assert!(why.contains("only staying longer counts as stuck"), "{why}");
    }
}
