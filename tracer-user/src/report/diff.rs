//! `leaktrace diff OLD.json NEW.json`: what changed between two JSON reports, by fingerprint
//! (see `analyze::fingerprint`): candidates and goroutine groups that are new, grown, shrunk,
//! resolved or unchanged. Reads the JSON only, so it compares reports of different runs,
//! machines and restarts of the target.
//!
//! Exit status, like diff(1)'s so that CI can gate on it: 0 when no candidate is new or grown
//! (suppressed ones aside), 1 when one is ([`Worse`]), 2 when the reports cannot be compared.
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
    /// What the output calls it while it is no candidate: `goroutine_group:HASH`, or
    /// `go_runtime_goroutines:HASH` for the Go runtime's own; a candidate is called by its
    /// fingerprint (`goroutine_leak:HASH` would name a leak where the report saw none).
    pub label: String,
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
    /// The fingerprint when a candidate in either report, else the group's label.
    pub label: String,
    /// Suppressed by an `--ignore` rule in the new report (in the old one when resolved).
    pub suppressed: bool,
}

impl Changed {
    /// A candidate of the new report that is new or grew and no rule suppresses: what makes
    /// `diff` exit 1.
    pub fn is_worse(&self) -> bool {
        matches!(self.change, Change::New | Change::Grown) && self.new_candidate && !self.suppressed
    }
}

/// `leaktrace diff`'s output for `--format json`: the changes by kind, each list in the text's
/// order, and the warning when the reports are of different programs.
#[derive(Debug, Serialize)]
pub struct DiffJson<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warning: Option<&'a str>,
    pub new: Vec<&'a Changed>,
    pub grown: Vec<&'a Changed>,
    pub shrunk: Vec<&'a Changed>,
    pub resolved: Vec<&'a Changed>,
    pub unchanged: Vec<&'a Changed>,
}

/// The error `leaktrace diff` ends with when a candidate is new or grown, after its output:
/// main exits 1 on it, printing nothing more (the output said which).
#[derive(Debug)]
pub struct Worse;

impl std::fmt::Display for Worse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a candidate is new or grown")
    }
}

impl std::error::Error for Worse {}

/// A comparison of two reports.
#[derive(Debug)]
pub struct Diff {
    /// When the reports are of different programs (see [`different_programs`]).
    pub warning: Option<String>,
    /// As [`compare`] orders them.
    pub changes: Vec<Changed>,
}

impl Diff {
    /// Whether a candidate is new or grown ([`Changed::is_worse`]).
    pub fn is_worse(&self) -> bool {
        self.changes.iter().any(Changed::is_worse)
    }

    /// The text: the warning first, then [`render`].
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        if let Some(warning) = &self.warning {
            let _ = writeln!(out, "{warning}");
        }
        out.push_str(&render(&self.changes));
        out
    }

    /// One JSON object ([`DiffJson`]), pretty-printed.
    pub fn to_json(&self) -> String {
        let of = |change| self.changes.iter().filter(|c| c.change == change).collect();
        let json = DiffJson {
            warning: self.warning.as_deref(),
            new: of(Change::New),
            grown: of(Change::Grown),
            shrunk: of(Change::Shrunk),
            resolved: of(Change::Resolved),
            unchanged: of(Change::Unchanged),
        };
        // Plain data serializes.
        serde_json::to_string_pretty(&json).expect("the diff serializes") + "\n"
    }
}

/// Reads both reports and compares them; the warning, when they are reports of different
/// programs, also goes to stderr.
pub fn run(old: &Path, new: &Path) -> Result<Diff> {
    let (old_report, new_report) = (read(old)?, read(new)?);
    let old_entries = entries(&old_report).with_context(|| format!("in {}", old.display()))?;
    let new_entries = entries(&new_report).with_context(|| format!("in {}", new.display()))?;
    let warning = different_programs(&old_report, &new_report);
    if let Some(warning) = &warning {
        eprintln!("leaktrace: {warning}");
    }
    Ok(Diff {
        warning,
        changes: compare(&old_entries, &new_entries),
    })
}

/// A warning when the reports' targets are different programs (`comm` or `exe` differ; an
/// executable replaced since it started, `exe` ending ` (deleted)`, is the same program):
/// their groups then match only by chance. None when they agree or a report does not say.
pub fn different_programs(old: &Value, new: &Value) -> Option<String> {
    fn program(report: &Value) -> Option<(&str, &str)> {
        let field = |name: &str| report.pointer(&format!("/target/{name}"))?.as_str();
        let exe = field("exe")?;
        Some((
            field("comm")?,
            exe.strip_suffix(" (deleted)").unwrap_or(exe),
        ))
    }
    let ((old_comm, old_exe), (new_comm, new_exe)) = (program(old)?, program(new)?);
    (old_comm != new_comm || old_exe != new_exe).then(|| {
        format!(
            "warning: the reports are of different programs ({old_comm}, {old_exe} and \
             {new_comm}, {new_exe}): the same fingerprint in both is unlikely, so expect \
             everything new or resolved"
        )
    })
}

fn read(path: &Path) -> Result<Value> {
    let bytes = std::fs::read(path)
        .with_context(|| format!("cannot read the report {}", path.display()))?;
    // A recording is the likeliest wrong file (both come out of leaktrace), as a JSON report is
    // for `leaktrace report` (replay.rs).
    if crate::replay::looks_like_recording(&bytes[..]) {
        bail!(
            "{} is a leaktrace recording, not a JSON report: `leaktrace diff` compares JSON \
             reports; make one from it with `leaktrace report {} -o REPORT.json` first",
            path.display(),
            path.display()
        );
    }
    serde_json::from_slice(&bytes).with_context(|| {
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
            label: fingerprint.to_string(),
        });
    }
    let groups = report
        .pointer("/goroutines/other_groups")
        .and_then(Value::as_array);
    for g in groups.into_iter().flatten() {
        let field = |name: &str| g[name].as_str().unwrap_or("").to_string();
        let (created_at, sits_at, state) = (field("created_at"), field("sits_at"), field("state"));
        let fingerprint = goroutine_group(&created_at, &sits_at, &state);
        // The reason analyze/goroutines.rs (`runtime_owned`) gives the runtime's own groups.
        let runtime = g["not_a_candidate"].as_str().is_some_and(|why| {
            why.starts_with("owned by the Go runtime")
                || why.starts_with("created by the Go runtime")
        });
        let (what, name) = if runtime {
            ("Go runtime goroutines", "go_runtime_goroutines")
        } else {
            ("goroutines", "goroutine_group")
        };
        let hash = fingerprint.rsplit(':').next().unwrap_or_default();
        out.push(Entry {
            label: format!("{name}:{hash}"),
            fingerprint,
            summary: format!("{what} {state} at {sits_at}, created at {created_at}"),
            count: g["count"].as_u64().unwrap_or(0),
            candidate: false,
            suppressed: false,
        });
    }
    Ok(out)
}

/// Entries matched by fingerprint (counts of repeated fingerprints add up), in the order
/// new, grown, shrunk, resolved, unchanged, largest change first, then largest count, then by
/// summary (where it sits, what created it) and fingerprint: the fingerprints' hashes alone
/// would list equal changes, all the unchanged ones, in an order that reads as random.
pub fn compare(old: &[Entry], new: &[Entry]) -> Vec<Changed> {
    let index = |entries: &[Entry]| {
        let mut map: BTreeMap<String, Entry> = BTreeMap::new();
        for e in entries {
            map.entry(e.fingerprint.clone())
                .and_modify(|m| {
                    m.count += e.count;
                    m.candidate |= e.candidate;
                    m.suppressed &= e.suppressed;
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
            label: match n.or(o) {
                Some(e) if !o.is_some_and(|e| e.candidate) && !n.is_some_and(|e| e.candidate) => {
                    e.label.clone()
                }
                _ => fingerprint.clone(),
            },
            suppressed: n.or(o).is_some_and(|e| e.suppressed),
        });
    }
    out.sort_by(|a, b| {
        let key = |c: &Changed| {
            (
                c.change,
                std::cmp::Reverse(c.new_count.abs_diff(c.old_count)),
                std::cmp::Reverse(c.new_count.max(c.old_count)),
            )
        };
        key(a)
            .cmp(&key(b))
            .then_with(|| a.summary.cmp(&b.summary))
            .then_with(|| a.fingerprint.cmp(&b.fingerprint))
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
            c.old_count, c.new_count, c.summary, c.label
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
    fn groups_that_are_no_candidate_are_not_labelled_as_leaks() {
        let mut old = report(10, 4, None);
        old["goroutines"]["other_groups"]
            .as_array_mut()
            .unwrap()
            .push(json!({
                "created_at": "runtime.gcenable (mgc.go:203)", "sits_at": "runtime.bgsweep (mgcsweep.go:279)",
                "state": "GC sweep wait", "count": 1,
                "not_a_candidate": "owned by the Go runtime (GC sweep wait)",
            }));
        let text = render(&compare(&entries(&old).unwrap(), &entries(&old).unwrap()));
        let line = |needle: &str| {
            text.lines()
                .find(|l| l.contains(needle))
                .unwrap_or_else(|| panic!("no {needle} in {text}"))
                .to_string()
        };
        assert!(line("(candidate)").contains("[goroutine_leak:"), "{text}");
        let pool = line("main.pool");
        assert!(pool.contains("[goroutine_group:"), "{pool}");
        assert!(!pool.contains("goroutine_leak"), "{pool}");
        let sweep = line("runtime.bgsweep");
        assert!(
            sweep.contains("Go runtime goroutines GC sweep wait"),
            "{sweep}"
        );
        assert!(sweep.contains("[go_runtime_goroutines:"), "{sweep}");
        // A group that becomes a candidate keeps its identity and is then called a leak.
        let pool_fingerprint = goroutine_group("main.pool (m.go:5)", "main.p (m.go:6)", "select");
        let mut new = report(10, 0, None);
        new["candidates"].as_array_mut().unwrap().push(json!({
            "kind": "goroutine_leak", "count": 9, "summary": "pool leaks", "fingerprint": pool_fingerprint,
        }));
        let text = render(&compare(&entries(&old).unwrap(), &entries(&new).unwrap()));
        assert!(
            text.contains(&format!(
                "GROWN     4 -> 9 (now a candidate)  pool leaks  [{pool_fingerprint}]"
            )),
            "{text}"
        );
    }

    #[test]
    fn reports_of_different_programs_are_warned_about() {
        let with_target = |comm: &str, exe: &str| {
            let mut r = report(1, 1, None);
            r["target"] = json!({"pid": 7, "comm": comm, "exe": exe});
            r
        };
        let server = with_target("server", "/srv/server");
        assert_eq!(different_programs(&server, &server), None);
        let replaced = with_target("server", "/srv/server (deleted)");
        assert_eq!(different_programs(&server, &replaced), None);
        let other = with_target("worker", "/srv/worker");
        let warning = different_programs(&server, &other).expect("different programs");
        assert!(warning.contains("different programs"), "{warning}");
        assert!(
            warning.contains("server, /srv/server and worker, /srv/worker"),
            "{warning}"
        );
        assert!(different_programs(&server, &with_target("server", "/opt/server")).is_some());
        assert_eq!(different_programs(&server, &report(1, 1, None)), None);

        let dir = std::env::temp_dir().join(format!("leaktrace-diff-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (a, b) = (dir.join("a.json"), dir.join("b.json"));
        std::fs::write(&a, server.to_string()).unwrap();
        std::fs::write(&b, other.to_string()).unwrap();
        let text = run(&a, &b).unwrap().to_text();
        assert!(
            text.starts_with("warning: the reports are of different programs"),
            "{text}"
        );
        std::fs::write(&b, server.to_string()).unwrap();
        assert!(run(&a, &b).unwrap().to_text().starts_with("0 new, 0 grown"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn equal_changes_are_listed_by_count_then_by_what_they_are() {
        let group = |sits: &str, count: u64| json!({"created_at": "main.pool (m.go:5)", "sits_at": sits, "state": "select", "count": count});
        let mut r = report(10, 4, None);
        r["goroutines"]["other_groups"] = json!([
            group("main.b (m.go:1)", 2),
            group("main.c (m.go:1)", 7),
            group("main.a (m.go:1)", 2),
            group("main.d (m.go:1)", 30),
        ]);
        let entries = entries(&r).unwrap();
        let order = |changes: &[Changed]| -> Vec<String> {
            changes
                .iter()
                .filter(|c| c.change == Change::Unchanged)
                .map(|c| {
                    let at = c
                        .summary
                        .split_whitespace()
                        .find(|w| w.starts_with("main."));
                    format!("{} {}", c.new_count, at.unwrap_or(&c.summary))
                })
                .collect()
        };
        let expected = ["30 main.d", "10 leak", "7 main.c", "2 main.a", "2 main.b"];
        assert_eq!(order(&compare(&entries, &entries)), expected);
        // Whatever order the report lists them in.
        let mut reversed = entries.clone();
        reversed.reverse();
        assert_eq!(order(&compare(&reversed, &reversed)), expected);
    }

    #[test]
    fn only_a_new_or_grown_candidate_no_rule_suppresses_makes_it_worse() {
        let diff = |old: &Value, new: &Value| Diff {
            warning: None,
            changes: compare(&entries(old).unwrap(), &entries(new).unwrap()),
        };
        let base = report(10, 4, None);
        assert!(!diff(&base, &base).is_worse(), "unchanged");
        assert!(diff(&base, &report(11, 4, None)).is_worse(), "grown");
        assert!(diff(&base, &report(10, 4, Some(1))).is_worse(), "new");
        assert!(!diff(&report(10, 4, Some(1)), &base).is_worse(), "resolved");
        assert!(!diff(&report(12, 4, None), &base).is_worse(), "shrunk");
        assert!(
            !diff(&base, &report(10, 40, None)).is_worse(),
            "a group that is no candidate"
        );
        let mut suppressed = report(30, 4, None);
        suppressed["candidates"][0]["suppressed_by"] =
            json!({"line": 1, "rule": "kind goroutine_leak"});
        let grown = diff(&base, &suppressed);
        assert!(!grown.is_worse(), "{:?}", grown.changes);
        assert!(grown.changes[0].suppressed && grown.changes[0].change == Change::Grown);
    }

    #[test]
    fn the_json_output_lists_each_kind_of_change() {
        let diff = Diff {
            warning: Some("warning: different".into()),
            changes: compare(
                &entries(&report(10, 4, Some(2))).unwrap(),
                &entries(&report(25, 4, None)).unwrap(),
            ),
        };
        let json: Value = serde_json::from_str(&diff.to_json()).unwrap();
        assert_eq!(json["warning"], "warning: different");
        assert_eq!(json["new"], json!([]));
        assert_eq!(json["shrunk"], json!([]));
        let grown = &json["grown"][0];
        assert_eq!(grown["change"], "grown");
        assert_eq!(
            (grown["old_count"].as_u64(), grown["new_count"].as_u64()),
            (Some(10), Some(25))
        );
        assert_eq!(grown["new_candidate"], true);
        assert!(grown["fingerprint"]
            .as_str()
            .unwrap()
            .starts_with("goroutine_leak:"));
        assert_eq!(json["resolved"][0]["fingerprint"], "futex_wait:1");
        assert_eq!(json["unchanged"].as_array().unwrap().len(), 1);
        let none = Diff {
            warning: None,
            ..diff
        };
        let json: Value = serde_json::from_str(&none.to_json()).unwrap();
        assert!(json.get("warning").is_none(), "{json}");
    }

    #[test]
    fn a_recording_is_named_as_one_with_the_command_that_makes_its_report() {
        let dir = std::env::temp_dir().join(format!("leaktrace-diff-rec-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (recording, report_file) = (dir.join("trace.jsonl.gz"), dir.join("r.json"));
        std::fs::copy(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/recordings/epoll_stuck.jsonl.gz"),
            &recording,
        )
        .unwrap();
        std::fs::write(&report_file, report(1, 1, None).to_string()).unwrap();
        for (old, new) in [(&recording, &report_file), (&report_file, &recording)] {
            let err = format!("{:#}", run(old, new).unwrap_err());
            assert!(
                err.contains("trace.jsonl.gz is a leaktrace recording, not a JSON report"),
                "{err}"
            );
            assert!(
                err.contains(&format!(
                    "leaktrace report {} -o REPORT.json",
                    recording.display()
                )),
                "{err}"
            );
        }
        // Text that is no JSON is still only "not a JSON report".
        std::fs::write(&recording, "kind goroutine_leak\n").unwrap();
        let err = format!("{:#}", run(&recording, &report_file).unwrap_err());
        assert!(err.contains("is not a JSON report"), "{err}");
        assert!(!err.contains("recording"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn reports_without_fingerprints_are_refused() {
        let err = entries(&json!({"candidates": [{"kind": "deadlock"}]})).unwrap_err();
        assert!(err.to_string().contains("fingerprint"), "{err}");
        assert!(entries(&json!({"x": 1})).is_err());
    }
}
