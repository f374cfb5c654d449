//! `leaktrace diff OLD.json NEW.json`: what changed between two JSON reports, by fingerprint
//! (see `analyze::fingerprint`): candidates and goroutine groups that are new, grown, shrunk,
//! resolved or unchanged. Reads the JSON only, so it compares reports of different runs,
//! machines and restarts of the target.
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::{bail, Context as _, Result};
use serde::Serialize;
use serde_json::Value;

use crate::analyze::fingerprint::goroutine_group;

/// One candidate or group as far as a diff is concerned.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Entry {
    pub fingerprint: String,
    pub summary: String,
    pub count: u64,
    /// Whether the report listed it as a leak candidate (else a goroutine group that is not).
    pub candidate: bool,
    pub suppressed: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    New,
    Grown,
    Shrunk,
    Resolved,
    Unchanged,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Changed {
    pub change: Change,
    pub fingerprint: String,
    pub summary: String,
    pub old_count: u64,
    pub new_count: u64,
    /// Candidate in the old / new report (false: a non-candidate group, or absent).
    pub old_candidate: bool,
    pub new_candidate: bool,
}

/// Reads both reports and renders the comparison as text.
pub fn run(old: &Path, new: &Path) -> Result<String> {
    let old_entries = entries(&read(old)?).with_context(|| format!("in {}", old.display()))?;
    let new_entries = entries(&read(new)?).with_context(|| format!("in {}", new.display()))?;
    Ok(render(&compare(&old_entries, &new_entries)))
}

fn read(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the report {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| {
        format!(
            "{} is not a JSON report (make one with --format json)",
            path.display()
        )
    })
}

/// Candidates and goroutine groups of one JSON report.
pub fn entries(report: &Value) -> Result<Vec<Entry>> {
    let Some(candidates) = report.get("candidates").and_then(Value::as_array) else {
        bail!("not a leaktrace JSON report: no `candidates` list");
    };
    let mut out = Vec::new();
    for (i, c) in candidates.iter().enumerate() {
        let Some(fingerprint) = c.get("fingerprint").and_then(Value::as_str) else {
            bail!("candidate {i} has no `fingerprint` (the report is from an older leaktrace: trace again)");
        };
        out.push(Entry {
            fingerprint: fingerprint.to_string(),
            summary: c["summary"].as_str().unwrap_or("").to_string(),
            count: c["count"].as_u64().unwrap_or(0),
            candidate: true,
            suppressed: c.get("suppressed_by").is_some(),
        });
    }
    let groups = report
        .pointer("/goroutines/other_groups")
        .and_then(Value::as_array);
    for g in groups.into_iter().flatten() {
        let field = |name: &str| g[name].as_str().unwrap_or("").to_string();
        let (created_at, sits_at, state) = (field("created_at"), field("sits_at"), field("state"));
        out.push(Entry {
            fingerprint: goroutine_group(&created_at, &sits_at, &state),
            summary: format!("goroutines {state} at {sits_at}, created at {created_at}"),
            count: g["count"].as_u64().unwrap_or(0),
            candidate: false,
            suppressed: false,
        });
    }
    Ok(out)
}

/// Entries matched by fingerprint (counts of repeated fingerprints add up), in the order
/// new, grown, shrunk, resolved, unchanged, largest change first.
pub fn compare(old: &[Entry], new: &[Entry]) -> Vec<Changed> {
    let index = |entries: &[Entry]| {
        let mut map: BTreeMap<String, Entry> = BTreeMap::new();
        for e in entries {
            map.entry(e.fingerprint.clone())
                .and_modify(|m| {
                    m.count += e.count;
                    m.candidate |= e.candidate;
                })
                .or_insert_with(|| e.clone());
        }
        map
    };
    let (old, new) = (index(old), index(new));
    let mut out = Vec::new();
    for fingerprint in old
        .keys()
        .chain(new.keys().filter(|k| !old.contains_key(*k)))
    {
        let (o, n) = (old.get(fingerprint), new.get(fingerprint));
        let old_count = o.map_or(0, |e| e.count);
        let new_count = n.map_or(0, |e| e.count);
        let change = match (o, n) {
            (None, _) => Change::New,
            (_, None) => Change::Resolved,
            _ if new_count > old_count => Change::Grown,
            _ if new_count < old_count => Change::Shrunk,
            _ => Change::Unchanged,
        };
        out.push(Changed {
            change,
            fingerprint: fingerprint.clone(),
            summary: n.or(o).map(|e| e.summary.clone()).unwrap_or_default(),
            old_count,
            new_count,
            old_candidate: o.is_some_and(|e| e.candidate),
            new_candidate: n.is_some_and(|e| e.candidate),
        });
    }
    out.sort_by_key(|c| {
        (
            c.change,
            std::cmp::Reverse(c.new_count.abs_diff(c.old_count)),
        )
    });
    out
}

pub fn render(changes: &[Changed]) -> String {
    let mut out = String::new();
    let count = |change| changes.iter().filter(|c| c.change == change).count();
    let _ = writeln!(
        out,
        "{} new, {} grown, {} shrunk, {} resolved, {} unchanged",
        count(Change::New),
        count(Change::Grown),
        count(Change::Shrunk),
        count(Change::Resolved),
        count(Change::Unchanged)
    );
    for c in changes {
        let word = match c.change {
            Change::New => "NEW",
            Change::Grown => "GROWN",
            Change::Shrunk => "SHRUNK",
            Change::Resolved => "RESOLVED",
            Change::Unchanged => "UNCHANGED",
        };
        let role = match (c.old_candidate, c.new_candidate) {
            (false, true) if c.old_count > 0 => " (now a candidate)",
            (true, false) if c.new_count > 0 => " (no longer a candidate)",
            (_, true) | (true, _) => " (candidate)",
            _ => "",
        };
        let _ = writeln!(
            out,
            "{word:<9} {} -> {}{role}  {}  [{}]",
            c.old_count, c.new_count, c.summary, c.fingerprint
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn report(leak: u64, pool: u64, stuck: Option<u64>) -> Value {
        let mut candidates = vec![json!({
            "kind": "goroutine_leak", "count": leak, "summary": "leak",
            "fingerprint": goroutine_group("main.leak (m.go:1)", "main.w (m.go:2)", "chan receive"),
        })];
        if let Some(n) = stuck {
            candidates.push(json!({"kind": "futex_wait", "count": n, "summary": "stuck", "fingerprint": "futex_wait:1"}));
        }
        json!({
            "candidates": candidates,
            "goroutines": {"other_groups": [
                {"created_at": "main.pool (m.go:5)", "sits_at": "main.p (m.go:6)", "state": "select", "count": pool},
            ]},
        })
    }

    #[test]
    fn changes_are_matched_by_fingerprint() {
        let old = entries(&report(10, 4, Some(2))).unwrap();
        let new = entries(&report(25, 4, None)).unwrap();
        let changes = compare(&old, &new);
        let kinds: Vec<Change> = changes.iter().map(|c| c.change).collect();
        assert_eq!(kinds, [Change::Grown, Change::Resolved, Change::Unchanged]);
        assert_eq!((changes[0].old_count, changes[0].new_count), (10, 25));
        let back = compare(&new, &old);
        assert_eq!(back[0].change, Change::New);
        assert_eq!(back[0].summary, "stuck");
        assert_eq!(back[1].change, Change::Shrunk);
        let text = render(&changes);
        assert!(
            text.starts_with("0 new, 1 grown, 0 shrunk, 1 resolved, 1 unchanged\n"),
            "{text}"
        );
    }

    #[test]
    fn reports_without_fingerprints_are_refused() {
        let err = entries(&json!({"candidates": [{"kind": "deadlock"}]})).unwrap_err();
        assert!(err.to_string().contains("fingerprint"), "{err}");
        assert!(entries(&json!({"x": 1})).is_err());
    }
}
