//! The status of each candidate group from one interval to the next: `new`, `growing`, `stable`
//! or `resolved`, by the group's fingerprint (kind + creation site + blocking site, see
//! `analyze::fingerprint`). A pure function of the previous interval's groups and the current
//! ones, so it is tested without a target.

use serde::Serialize;

/// Where a group stands compared with the previous interval.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// First interval it appears in (or again, after it was resolved).
    New,
    /// More members than in the previous interval.
    Growing,
    /// As many members as in the previous interval, or fewer.
    Stable,
    /// A candidate in the previous interval, gone in this one: published for this one interval
    /// (size 0), then dropped.
    Resolved,
}

impl Status {
    pub const ALL: [Status; 4] = [
        Status::New,
        Status::Growing,
        Status::Stable,
        Status::Resolved,
    ];

    /// The value of the `status` label.
    pub fn name(self) -> &'static str {
        match self {
            Status::New => "new",
            Status::Growing => "growing",
            Status::Stable => "stable",
            Status::Resolved => "resolved",
        }
    }
}

/// One candidate group as the metrics show it (labels and values of one interval).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Group {
    /// `KIND:HASH` (the report's `fingerprint`).
    pub fingerprint: String,
    /// The kind's JSON name (`thread_leak`, ...).
    pub kind: &'static str,
    /// Go wait reason (`chan receive`, ...); empty for kinds without one.
    pub wait_reason: String,
    /// Where the members wait, in the program's own code; empty when unknown.
    pub blocking_function: String,
    /// Where the members were created (`go` statement, `pthread_create` caller, timer starter);
    /// empty when unknown.
    pub creation_function: String,
    /// Members: goroutines, threads, fds or timers.
    pub size: u64,
    /// Members gained per second over the interval (negative when shrinking; see
    /// `metrics::groups_of` for each kind); None when the interval cannot tell (a goroutine
    /// group seen in fewer than 2 snapshots), so that no series says 0 for "unknown".
    pub growth_per_second: Option<f64>,
    pub score: f64,
}

/// A group with its status.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Tracked {
    pub group: Group,
    pub status: Status,
}

/// The statuses of this interval's groups, given the previous interval's result: `current`
/// in its order, then the groups of `previous` that are gone (resolved, with size and growth
/// 0). Groups already resolved in `previous` and still gone are dropped; one that comes back is
/// new again. Two current groups with one fingerprint are one group (sizes added).
pub fn transition(previous: &[Tracked], current: Vec<Group>) -> Vec<Tracked> {
    let mut merged: Vec<Group> = Vec::with_capacity(current.len());
    for group in current {
        match merged
            .iter_mut()
            .find(|g| g.fingerprint == group.fingerprint)
        {
            Some(same) => {
                same.size += group.size;
                // Unknown for either part leaves the sum unknown.
                same.growth_per_second = same
                    .growth_per_second
                    .zip(group.growth_per_second)
                    .map(|(a, b)| a + b);
                same.score = same.score.max(group.score);
            }
            None => merged.push(group),
        }
    }
    let before = |fingerprint: &str| {
        previous
            .iter()
            .find(|t| t.group.fingerprint == fingerprint && t.status != Status::Resolved)
    };
    let mut out: Vec<Tracked> = merged
        .into_iter()
        .map(|group| {
            let status = match before(&group.fingerprint) {
                None => Status::New,
                Some(old) if group.size > old.group.size => Status::Growing,
                Some(_) => Status::Stable,
            };
            Tracked { group, status }
        })
        .collect();
    for old in previous {
        if old.status == Status::Resolved
            || out
                .iter()
                .any(|t| t.group.fingerprint == old.group.fingerprint)
        {
            continue;
        }
        out.push(Tracked {
            group: Group {
                size: 0,
                growth_per_second: Some(0.0),
                ..old.group.clone()
            },
            status: Status::Resolved,
        });
    }
    out
}

/// Writes the statuses into the report: each candidate's, and the fingerprints resolved.
pub fn annotate(report: &mut crate::report::Report, tracked: &[Tracked]) {
    for candidate in &mut report.candidates {
        candidate.status = tracked
            .iter()
            .find(|t| t.group.fingerprint == candidate.fingerprint && t.status != Status::Resolved)
            .map(|t| t.status.name());
    }
    report.resolved = tracked
        .iter()
        .filter(|t| t.status == Status::Resolved)
        .map(|t| t.group.fingerprint.clone())
        .collect();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(fingerprint: &str, size: u64) -> Group {
        Group {
            fingerprint: fingerprint.into(),
            kind: "thread_leak",
            wait_reason: String::new(),
            blocking_function: "wait_for_reply".into(),
            creation_function: "spawn_leaky_task".into(),
            size,
            growth_per_second: Some(1.0),
            score: 80.0,
        }
    }

    fn statuses(tracked: &[Tracked]) -> Vec<(&str, Status, u64)> {
        tracked
            .iter()
            .map(|t| (t.group.fingerprint.as_str(), t.status, t.group.size))
            .collect()
    }

    #[test]
    fn a_group_is_new_then_growing_then_stable_then_resolved_then_dropped() {
        let first = transition(&[], vec![group("a", 10)]);
        assert_eq!(statuses(&first), [("a", Status::New, 10)]);
        let second = transition(&first, vec![group("a", 20)]);
        assert_eq!(statuses(&second), [("a", Status::Growing, 20)]);
        let third = transition(&second, vec![group("a", 20)]);
        assert_eq!(statuses(&third), [("a", Status::Stable, 20)]);
        let shrunk = transition(&third, vec![group("a", 5)]);
        assert_eq!(statuses(&shrunk), [("a", Status::Stable, 5)]);
        let gone = transition(&shrunk, vec![]);
        assert_eq!(statuses(&gone), [("a", Status::Resolved, 0)]);
        assert_eq!(gone[0].group.growth_per_second, Some(0.0));
        assert_eq!(gone[0].group.creation_function, "spawn_leaky_task");
        assert!(transition(&gone, vec![]).is_empty());
    }

    #[test]
    fn a_group_that_comes_back_after_being_resolved_is_new() {
        let gone = transition(&transition(&[], vec![group("a", 3)]), vec![]);
        let back = transition(&gone, vec![group("a", 3)]);
        assert_eq!(statuses(&back), [("a", Status::New, 3)]);
    }

    #[test]
    fn groups_are_told_apart_by_fingerprint_only() {
        let first = transition(&[], vec![group("a", 4), group("b", 4)]);
        let second = transition(&first, vec![group("b", 5), group("c", 1)]);
        assert_eq!(
            statuses(&second),
            [
                ("b", Status::Growing, 5),
                ("c", Status::New, 1),
                ("a", Status::Resolved, 0)
            ]
        );
    }

    #[test]
    fn one_fingerprint_twice_in_an_interval_is_one_group() {
        let first = transition(&[], vec![group("a", 4), group("a", 2)]);
        assert_eq!(statuses(&first), [("a", Status::New, 6)]);
        let second = transition(&first, vec![group("a", 6)]);
        assert_eq!(statuses(&second), [("a", Status::Stable, 6)]);
    }
}
