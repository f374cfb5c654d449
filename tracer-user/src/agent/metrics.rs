//! What the agent publishes at /metrics: the series of every watched target, made from its last
//! interval's report, and the agent's own, encoded by the `prometheus-client` crate in the
//! Prometheus text exposition format (version 0.0.4).
//!
//! Names and labels are the agent's interface (README "Agent"). Label cardinality is bounded:
//! per target at most [`MAX_GROUPS`] candidate groups (highest score first), the members of the
//! rest summed in `leaktrace_candidate_overflow`; function labels at most [`MAX_LABEL_CHARS`]
//! characters; a group is identified by its fingerprint, so a leak keeps one series however
//! long it grows; series of gone targets and of groups resolved an interval ago are dropped.
//! The series are made at each scrape from the agent's state (a collector, not registered
//! metric families), so nothing stale stays behind.
use std::collections::BTreeMap;
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use super::status::{Group, Status, Tracked};
use crate::analyze::{innermost_own_function, Detail, FindingKind};
use crate::report::Report;

/// Candidate groups published per target; the rest go to `leaktrace_candidate_overflow`.
pub const MAX_GROUPS: usize = 20;
/// Function labels are cut to this many characters (Go generics and C++ templates make names
/// of thousands).
pub const MAX_LABEL_CHARS: usize = 120;

/// Every kind, so that `leaktrace_leak_candidates{kind=...}` has a series (0) for each.
pub const KINDS: [FindingKind; 7] = [
    FindingKind::Deadlock,
    FindingKind::FutexWait,
    FindingKind::ThreadLeak,
    FindingKind::EpollWait,
    FindingKind::Timerfd,
    FindingKind::GoroutineLeak,
    FindingKind::GoTimer,
];

/// One watched target's series.
#[derive(Clone, Debug, Default)]
pub struct TargetSeries {
    pub pid: u32,
    pub comm: String,
    pub exe: String,
    /// The selector that picked it (`comm=server`, ...).
    pub selector: String,
    /// Its cgroup path when it runs in a container (other mount or pid namespace), else "".
    pub container: String,
    pub intervals: u64,
    /// Ring-buffer records (and map slots) lost since its probes were loaded.
    pub lost_events: u64,
    /// Probe windows opened since its probes were loaded.
    pub probe_windows: u64,
    /// From the last finished interval; None before the first one ends.
    pub last: Option<IntervalSeries>,
}

/// A target's series from one interval's report.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct IntervalSeries {
    /// Live goroutines at the last snapshot (Go targets only).
    pub goroutines: Option<u64>,
    /// Live threads at the interval's end.
    pub threads: u64,
    /// Candidates (not suppressed by --ignore) per kind name, every kind present.
    pub candidates: BTreeMap<&'static str, u64>,
    /// At most [`MAX_GROUPS`], highest score first, resolved ones last.
    pub groups: Vec<Tracked>,
    /// Members of the candidate groups left out of `groups`.
    pub overflow: u64,
    /// Pending Go timers by kind (`AfterFunc`, `ticker`, ...; Go targets only).
    pub go_timers_pending: BTreeMap<String, u64>,
}

/// Everything /metrics shows, taken from the agent's state at a scrape.
#[derive(Clone, Debug, Default)]
pub struct AgentSeries {
    pub targets: Vec<Arc<TargetSeries>>,
    /// By selector: a followed process replaced by a new one.
    pub restarts: BTreeMap<String, u64>,
    /// By reason: traces that failed.
    pub errors: BTreeMap<String, u64>,
    pub cpu_seconds: f64,
    pub resident_memory_bytes: u64,
}

/// The candidate groups of a report as metrics see them: candidates not suppressed by
/// `--ignore`, with their fingerprint, function labels, size, growth and score.
pub fn groups_of(report: &Report) -> Vec<Group> {
    report
        .candidates
        .iter()
        .filter(|c| c.suppressed_by.is_none())
        .map(|c| {
            let own = |stack: &[crate::model::Frame]| {
                let f = innermost_own_function(stack);
                if f == "unknown" {
                    String::new()
                } else {
                    f
                }
            };
            let mut blocking_function = own(&c.blocking_stack);
            let mut creation_function = c.creation_stack.as_deref().map(own).unwrap_or_default();
            let mut wait_reason = c.wait_reason().unwrap_or_default().to_string();
            let growth_per_second = match &c.detail {
                Detail::ThreadLeak(g) => Some(g.growth_per_s),
                Detail::Timerfd { detail: t, .. } => Some(t.growth_per_s),
                Detail::GoroutineLeak { group: g, .. } => {
                    creation_function = function_of(&g.created_at);
                    blocking_function = function_of(&g.sits_at);
                    if wait_reason.is_empty() {
                        wait_reason = g.state.clone();
                    }
                    goroutine_growth(&g.history)
                }
                Detail::GoTimer { group: t, .. } => {
                    blocking_function = function_of(&t.callback);
                    creation_function = t
                        .starter_stack
                        .as_deref()
                        .and_then(crate::model::goroutines::own_frame)
                        .and_then(|f| f.function.clone())
                        .unwrap_or_default();
                    Some(t.growth_per_s)
                }
                Detail::EpollWait(_) | Detail::Deadlock { .. } | Detail::FutexWait { .. } => {
                    Some(0.0)
                }
            };
            Group {
                fingerprint: c.fingerprint.clone(),
                kind: c.kind().name(),
                wait_reason: truncate(wait_reason),
                blocking_function: truncate(blocking_function),
                creation_function: truncate(creation_function),
                size: c.count as u64,
                growth_per_second,
                score: c.score,
            }
        })
        .collect()
}

/// Goroutines a group gained per second between the first and the last snapshot of the
/// interval that saw it (its `history`, one point a snapshot, about one a second); None with
/// fewer than 2 points. The report's `growth_per_s` divides the change since the trace's first
/// snapshot by the whole trace, which in a short interval with one snapshot of the group is 0
/// whatever the group does.
fn goroutine_growth(history: &[crate::model::goroutines::CountAt]) -> Option<f64> {
    let (first, last) = (history.first()?, history.last()?);
    let span_ns = last.at_ns.checked_sub(first.at_ns).filter(|&ns| ns > 0)?;
    Some((last.count as f64 - first.count as f64) / (span_ns as f64 / 1e9))
}

/// The series of one interval: `tracked` are the report's groups with their status
/// ([`super::status::transition`]), `threads` the target's live threads now.
pub fn interval_series(report: &Report, tracked: &[Tracked], threads: u64) -> IntervalSeries {
    let mut candidates: BTreeMap<&'static str, u64> = KINDS.iter().map(|k| (k.name(), 0)).collect();
    for c in report
        .candidates
        .iter()
        .filter(|c| c.suppressed_by.is_none())
    {
        *candidates.entry(c.kind().name()).or_default() += 1;
    }
    let mut groups = tracked.to_vec();
    groups.sort_by(|a, b| {
        (a.status == Status::Resolved)
            .cmp(&(b.status == Status::Resolved))
            .then(b.group.score.total_cmp(&a.group.score))
    });
    let overflow = groups.iter().skip(MAX_GROUPS).map(|t| t.group.size).sum();
    groups.truncate(MAX_GROUPS);
    IntervalSeries {
        goroutines: report.goroutines.as_ref().map(|g| g.count as u64),
        threads,
        candidates,
        groups,
        overflow,
        go_timers_pending: report
            .go_timers
            .as_ref()
            .map(|t| {
                t.by_kind
                    .iter()
                    .map(|(kind, totals)| (kind.to_string(), totals.pending as u64))
                    .collect()
            })
            .unwrap_or_default(),
    }
}

/// `function (file:line)` → `function`.
fn function_of(place: &str) -> String {
    place
        .rsplit_once(" (")
        .map_or(place, |(function, _)| function)
        .to_string()
}

fn truncate(mut label: String) -> String {
    if let Some((cut, _)) = label.char_indices().nth(MAX_LABEL_CHARS) {
        label.truncate(cut);
    }
    label
}

/// The exposition of `series` (Prometheus text format 0.0.4, [`CONTENT_TYPE`]).
pub fn encode(series: AgentSeries) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Exposition(series)));
    let mut out = String::new();
    prometheus_client::encoding::prometheus_text::encode(&mut out, &registry)
        .expect("writing to a String cannot fail");
    out
}

/// The `Content-Type` of [`encode`]'s output.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

#[derive(Debug)]
struct Exposition(AgentSeries);

type Labels = Vec<(&'static str, String)>;

/// One gauge family: its samples, each a label set and a value (none: no family at all).
fn family<V>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    samples: impl IntoIterator<Item = (Labels, V)>,
    metric: fn(V) -> Box<dyn EncodeMetric>,
) -> Result<(), std::fmt::Error> {
    of_type(encoder, MetricType::Gauge, name, help, samples, metric)
}

/// One counter family, named without `_total`: the encoder appends it.
fn counter<V>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    samples: impl IntoIterator<Item = (Labels, V)>,
    metric: fn(V) -> Box<dyn EncodeMetric>,
) -> Result<(), std::fmt::Error> {
    of_type(encoder, MetricType::Counter, name, help, samples, metric)
}

fn of_type<V>(
    encoder: &mut DescriptorEncoder,
    kind: MetricType,
    name: &str,
    help: &str,
    samples: impl IntoIterator<Item = (Labels, V)>,
    metric: fn(V) -> Box<dyn EncodeMetric>,
) -> Result<(), std::fmt::Error> {
    let samples: Vec<(Labels, V)> = samples.into_iter().collect();
    if samples.is_empty() {
        return Ok(());
    }
    let mut family = encoder.encode_descriptor(name, help, None, kind)?;
    for (labels, value) in samples {
        let sample = family.encode_family(&labels)?;
        metric(value).encode(sample)?;
    }
    Ok(())
}

fn gauge_f64(value: f64) -> Box<dyn EncodeMetric> {
    Box::new(ConstGauge::new(value))
}

fn gauge_u64(value: u64) -> Box<dyn EncodeMetric> {
    Box::new(ConstGauge::new(value))
}

fn counter_u64(value: u64) -> Box<dyn EncodeMetric> {
    Box::new(ConstCounter::new(value))
}

fn counter_f64(value: f64) -> Box<dyn EncodeMetric> {
    Box::new(ConstCounter::new(value))
}

impl Collector for Exposition {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = &self.0;
        let target = |t: &TargetSeries| -> Labels {
            vec![("pid", t.pid.to_string()), ("comm", t.comm.clone())]
        };
        let with = |t: &TargetSeries, more: &[(&'static str, &str)]| -> Labels {
            let mut labels = target(t);
            labels.extend(more.iter().map(|(k, v)| (*k, v.to_string())));
            labels
        };
        let last = || {
            s.targets
                .iter()
                .filter_map(|t| t.last.as_ref().map(|l| (t.as_ref(), l)))
        };
        family(
            &mut encoder,
            "leaktrace_target_info",
            "A watched process: 1 per target, with its executable, the selector that picked it and its container's cgroup (\"\" outside containers).",
            s.targets.iter().map(|t| {
                (
                    with(
                        t,
                        &[
                            ("exe", &t.exe),
                            ("selector", &t.selector),
                            ("container", &t.container),
                        ],
                    ),
                    1u64,
                )
            }),
            gauge_u64,
        )?;
        family(
            &mut encoder,
            "leaktrace_goroutines",
            "Live goroutines at the last snapshot of the last interval (Go targets).",
            last().filter_map(|(t, l)| Some((target(t), l.goroutines?))),
            gauge_u64,
        )?;
        family(
            &mut encoder,
            "leaktrace_threads",
            "Live threads at the end of the last interval.",
            last().map(|(t, l)| (target(t), l.threads)),
            gauge_u64,
        )?;
        family(
            &mut encoder,
            "leaktrace_leak_candidates",
            "Leak candidates of the last interval by kind (every kind, 0 included; --ignore'd ones left out).",
            last().flat_map(|(t, l)| {
                l.candidates
                    .iter()
                    .map(move |(kind, n)| (with(t, &[("kind", kind)]), *n))
            }),
            gauge_u64,
        )?;
        let group_labels = |t: &TargetSeries, g: &Group| {
            with(
                t,
                &[
                    ("kind", g.kind),
                    ("fingerprint", &g.fingerprint),
                    ("wait_reason", &g.wait_reason),
                    ("blocking_function", &g.blocking_function),
                    ("creation_function", &g.creation_function),
                ],
            )
        };
        let groups = || last().flat_map(|(t, l)| l.groups.iter().map(move |g| (t, g)));
        family(
            &mut encoder,
            "leaktrace_candidate_size",
            "Members of a candidate group (goroutines, threads, fds or timers) at the end of the last interval; 0 once resolved.",
            groups().map(|(t, g)| (group_labels(t, &g.group), g.group.size)),
            gauge_u64,
        )?;
        family(
            &mut encoder,
            "leaktrace_candidate_growth_per_second",
            "Members a candidate group gained per second over the last interval (0 for kinds that do not grow; no series for a goroutine group seen in fewer than 2 snapshots of it).",
            groups().filter_map(|(t, g)| {
                g.group
                    .growth_per_second
                    .map(|growth| (group_labels(t, &g.group), growth))
            }),
            gauge_f64,
        )?;
        family(
            &mut encoder,
            "leaktrace_candidate_score",
            "A candidate group's score (the report's reasons say how it was made).",
            groups().map(|(t, g)| (group_labels(t, &g.group), g.group.score)),
            gauge_f64,
        )?;
        family(
            &mut encoder,
            "leaktrace_candidate_status",
            "1 for a candidate group's status: new (first interval), growing (bigger than the interval before), stable, resolved (gone; shown one interval).",
            groups().flat_map(|(t, g)| {
                Status::ALL.iter().map(move |status| {
                    let mut labels = group_labels(t, &g.group);
                    labels.push(("status", status.name().to_string()));
                    (labels, u64::from(*status == g.status))
                })
            }),
            gauge_u64,
        )?;
        family(
            &mut encoder,
            "leaktrace_candidate_overflow",
            format!("Members of the candidate groups beyond the {MAX_GROUPS} of highest score, which have no series of their own.").as_str(),
            last().map(|(t, l)| (target(t), l.overflow)),
            gauge_u64,
        )?;
        family(
            &mut encoder,
            "leaktrace_go_timers_pending",
            "Pending Go runtime timers by kind at the last snapshot (Go targets).",
            last().flat_map(|(t, l)| {
                l.go_timers_pending
                    .iter()
                    .map(move |(kind, n)| (with(t, &[("kind", kind)]), *n))
            }),
            gauge_u64,
        )?;
        counter(
            &mut encoder,
            "leaktrace_intervals",
            "Trace intervals of the target finished.",
            s.targets.iter().map(|t| (target(t), t.intervals)),
            counter_u64,
        )?;
        counter(
            &mut encoder,
            "leaktrace_lost_events",
            "Ring-buffer records and map slots the kernel side lost for the target.",
            s.targets.iter().map(|t| (target(t), t.lost_events)),
            counter_u64,
        )?;
        counter(
            &mut encoder,
            "leaktrace_probe_windows",
            "Probe windows opened for the target.",
            s.targets.iter().map(|t| (target(t), t.probe_windows)),
            counter_u64,
        )?;
        family(
            &mut encoder,
            "leaktrace_targets",
            "Processes watched now.",
            [(Labels::new(), s.targets.len() as u64)],
            gauge_u64,
        )?;
        counter(
            &mut encoder,
            "leaktrace_target_restarts",
            "A followed selector's process was replaced by a new one.",
            s.restarts
                .iter()
                .map(|(selector, n)| (vec![("selector", selector.clone())], *n)),
            counter_u64,
        )?;
        counter(
            &mut encoder,
            "leaktrace_target_errors",
            "Targets the agent could not trace, by reason (the agent stays up; stderr says more).",
            s.errors
                .iter()
                .map(|(reason, n)| (vec![("reason", reason.clone())], *n)),
            counter_u64,
        )?;
        counter(
            &mut encoder,
            "leaktrace_agent_cpu_seconds",
            "CPU time (user + system) the agent used (getrusage).",
            [(Labels::new(), s.cpu_seconds)],
            counter_f64,
        )?;
        family(
            &mut encoder,
            "leaktrace_agent_resident_memory_bytes",
            "The agent's resident memory (VmRSS of /proc/self/status).",
            [(Labels::new(), s.resident_memory_bytes)],
            gauge_u64,
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::status::transition;
    use crate::analyze::threads::ThreadGroup;
    use crate::analyze::{Analysis, Finding, Percentiles};
    use crate::model::Frame;
    use crate::report::{TargetInfo, TracerInfo};

    fn frame(function: &str) -> Frame {
        Frame {
            function: Some(function.into()),
            ..Frame::unknown(0x1000)
        }
    }

    /// A finding of `kind` (thread leak or futex wait) with an empty detail.
    fn candidate(kind: FindingKind, blocking: &str, count: usize, score: f64) -> Finding {
        let detail = match kind {
            FindingKind::ThreadLeak => Detail::ThreadLeak(ThreadGroup {
                creation_known: true,
                alive: 0,
                created_during_trace: 0,
                exited_during_trace: 0,
                growth_per_s: 0.0,
                grew: false,
                existed_before_trace: 0,
                created_without_stack: 0,
                blocked_in: Vec::new(),
                members: Vec::new(),
            }),
            _ => {
                assert_eq!(kind, FindingKind::FutexWait, "no test finding of this kind");
                Detail::FutexWait {
                    threads: Vec::new(),
                    wakes: 0,
                }
            }
        };
        Finding {
            count,
            summary: String::new(),
            score,
            reasons: Vec::new(),
            blocking_stack: vec![frame("__futex_abstimed_wait_common"), frame(blocking)],
            creation_stack: Some(vec![frame("pthread_create"), frame("spawn_task")]),
            blocked_ns: Percentiles::default(),
            grew: None,
            detail,
        }
    }

    fn report(candidates: Vec<Finding>) -> Report {
        Report::new(
            TargetInfo {
                pid: 42,
                comm: "srv".into(),
                exe: "/usr/bin/srv".into(),
                container: None,
            },
            TracerInfo::default(),
            Analysis {
                candidates,
                wait_sites: Vec::new(),
                blocked_but_healthy: Vec::new(),
                goroutines: None,
                go_timers: None,
                native_io: Default::default(),
                waits_seen: 0,
                counters: Default::default(),
            },
            1_000_000_000,
            false,
            1_000_000_000,
        )
    }

    fn exposition(report: &Report) -> String {
        exposition_of(report, groups_of(report))
    }

    /// The exposition of `report` with `groups` as its candidate groups.
    fn exposition_of(report: &Report, groups: Vec<Group>) -> String {
        let tracked = transition(&[], groups);
        let target = TargetSeries {
            pid: 42,
            comm: "srv".into(),
            exe: "/usr/bin/srv".into(),
            selector: "comm=srv".into(),
            container: String::new(),
            intervals: 3,
            lost_events: 0,
            probe_windows: 0,
            last: Some(interval_series(report, &tracked, 7)),
        };
        encode(AgentSeries {
            targets: vec![Arc::new(target)],
            restarts: [("comm=srv".to_string(), 1)].into(),
            errors: BTreeMap::new(),
            cpu_seconds: 1.5,
            resident_memory_bytes: 1 << 20,
        })
    }

    fn lines<'a>(text: &'a str, name: &str) -> Vec<&'a str> {
        text.lines()
            .filter(|l| {
                l.strip_prefix(name)
                    .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
            })
            .collect()
    }

    #[test]
    fn the_exposition_has_the_agreed_names_labels_and_every_kind() {
        let r = report(vec![candidate(
            FindingKind::ThreadLeak,
            "wait_for_reply",
            30,
            90.0,
        )]);
        let fingerprint = r.candidates[0].fingerprint.clone();
        let text = exposition(&r);
        let group = format!(
            "pid=\"42\",comm=\"srv\",kind=\"thread_leak\",fingerprint=\"{fingerprint}\",wait_reason=\"\",blocking_function=\"wait_for_reply\",creation_function=\"spawn_task\""
        );
        for expected in [
            "leaktrace_target_info{pid=\"42\",comm=\"srv\",exe=\"/usr/bin/srv\",selector=\"comm=srv\",container=\"\"} 1".to_string(),
            "leaktrace_threads{pid=\"42\",comm=\"srv\"} 7".into(),
            format!("leaktrace_candidate_size{{{group}}} 30"),
            format!("leaktrace_candidate_score{{{group}}} 90.0"),
            format!("leaktrace_candidate_status{{{group},status=\"new\"}} 1"),
            format!("leaktrace_candidate_status{{{group},status=\"growing\"}} 0"),
            "leaktrace_candidate_overflow{pid=\"42\",comm=\"srv\"} 0".into(),
            "# TYPE leaktrace_intervals_total counter".into(),
            "leaktrace_intervals_total{pid=\"42\",comm=\"srv\"} 3".into(),
            "leaktrace_lost_events_total{pid=\"42\",comm=\"srv\"} 0".into(),
            "leaktrace_probe_windows_total{pid=\"42\",comm=\"srv\"} 0".into(),
            "leaktrace_targets 1".into(),
            "leaktrace_target_restarts_total{selector=\"comm=srv\"} 1".into(),
            "leaktrace_agent_cpu_seconds_total 1.5".into(),
            "# TYPE leaktrace_agent_resident_memory_bytes gauge".into(),
            "leaktrace_agent_resident_memory_bytes 1048576".into(),
        ] {
            assert!(
                text.lines().any(|l| l == expected),
                "missing {expected:?} in:\n{text}"
            );
        }
        let kinds = lines(&text, "leaktrace_leak_candidates");
        assert_eq!(kinds.len(), 7, "{kinds:?}");
        assert!(kinds.contains(
            &"leaktrace_leak_candidates{pid=\"42\",comm=\"srv\",kind=\"thread_leak\"} 1"
        ));
        assert!(kinds
            .contains(&"leaktrace_leak_candidates{pid=\"42\",comm=\"srv\",kind=\"deadlock\"} 0"));
        // Not a Go target: no goroutine or Go timer series at all.
        assert!(lines(&text, "leaktrace_goroutines").is_empty());
        assert!(lines(&text, "leaktrace_go_timers_pending").is_empty());
        // Every family has HELP and TYPE, and every sample name is a leaktrace_ one.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            assert!(line.starts_with("leaktrace_"), "{line}");
        }
        assert_eq!(
            text.matches("# HELP ").count(),
            text.matches("# TYPE ").count()
        );
    }

    #[test]
    fn at_most_twenty_groups_per_target_the_highest_scores_and_the_rest_summed() {
        let candidates = (0..25)
            .map(|i| {
                candidate(
                    FindingKind::FutexWait,
                    &format!("wait_{i}"),
                    2,
                    f64::from(i),
                )
            })
            .collect();
        let text = exposition(&report(candidates));
        let sizes = lines(&text, "leaktrace_candidate_size");
        assert_eq!(sizes.len(), MAX_GROUPS);
        for i in 0..5 {
            assert!(!text.contains(&format!("\"wait_{i}\"")), "wait_{i} kept");
        }
        for i in 5..25 {
            assert!(text.contains(&format!("\"wait_{i}\"")), "wait_{i} dropped");
        }
        assert!(text
            .lines()
            .any(|l| l == "leaktrace_candidate_overflow{pid=\"42\",comm=\"srv\"} 10"));
        // 4 statuses per group.
        assert_eq!(
            lines(&text, "leaktrace_candidate_status").len(),
            4 * MAX_GROUPS
        );
        assert!(text
            .lines()
            .any(|l| l
                == "leaktrace_leak_candidates{pid=\"42\",comm=\"srv\",kind=\"futex_wait\"} 25"));
    }

    #[test]
    fn function_labels_are_cut_and_escaped() {
        let long = format!("ns::Tmpl<\"q\">::{}", "é".repeat(300));
        let text = exposition(&report(vec![candidate(
            FindingKind::FutexWait,
            &long,
            1,
            50.0,
        )]));
        let groups = groups_of(&report(vec![candidate(
            FindingKind::FutexWait,
            &long,
            1,
            50.0,
        )]));
        assert_eq!(groups[0].blocking_function.chars().count(), MAX_LABEL_CHARS);
        assert!(long.starts_with(&groups[0].blocking_function));
        assert!(
            text.contains("blocking_function=\"ns::Tmpl<\\\"q\\\">::é"),
            "quotes escaped:\n{text}"
        );
    }

    #[test]
    fn suppressed_candidates_are_left_out() {
        let mut r = report(vec![
            candidate(FindingKind::FutexWait, "wait_a", 1, 50.0),
            candidate(FindingKind::FutexWait, "wait_b", 1, 50.0),
        ]);
        r.candidates[1].suppressed_by = Some(crate::report::ignore::Suppression {
            rule: "function wait_b".into(),
            file: "ignore.txt".into(),
            line: 1,
        });
        let text = exposition(&r);
        assert!(text.contains("\"wait_a\"") && !text.contains("\"wait_b\""));
        assert!(text.lines().any(
            |l| l == "leaktrace_leak_candidates{pid=\"42\",comm=\"srv\",kind=\"futex_wait\"} 1"
        ));
    }

    #[test]
    fn a_place_names_its_function() {
        assert_eq!(function_of("main.leak (main.go:10)"), "main.leak");
        assert_eq!(
            function_of("main.(*T).run.func1 (t.go:3)"),
            "main.(*T).run.func1"
        );
        assert_eq!(function_of("main.worker"), "main.worker");
    }

    #[test]
    fn goroutine_growth_is_over_the_interval_snapshots_or_absent() {
        use crate::model::goroutines::CountAt;
        let at = |s: u64, count: usize| CountAt {
            at_ns: s * 1_000_000_000,
            count,
        };
        assert_eq!(goroutine_growth(&[]), None);
        assert_eq!(
            goroutine_growth(&[at(1, 40)]),
            None,
            "one snapshot says nothing"
        );
        assert_eq!(goroutine_growth(&[at(1, 40), at(3, 46)]), Some(3.0));
        assert_eq!(
            goroutine_growth(&[at(1, 40), at(2, 41), at(5, 32)]),
            Some(-2.0)
        );

        let r = report(vec![candidate(
            FindingKind::ThreadLeak,
            "wait_for_reply",
            30,
            90.0,
        )]);
        let mut groups = groups_of(&r);
        assert_eq!(groups[0].growth_per_second, Some(0.0));
        groups[0].growth_per_second = None;
        let text = exposition_of(&r, groups);
        assert!(
            lines(&text, "leaktrace_candidate_growth_per_second").is_empty(),
            "unknown growth has no series, not 0: {text}"
        );
        assert_eq!(lines(&text, "leaktrace_candidate_size").len(), 1);
    }
}
