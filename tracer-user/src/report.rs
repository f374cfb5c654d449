//! Renders an analysis in the formats people and tools read: one module per format (`text`,
//! `json`, `html`, `pprof`, `folded`, `goroutines`), sharing the [`Report`] (in `json`, with its
//! serialization) and what is here. Nothing here reads the system.
pub mod diff;
pub mod folded;
pub mod goroutines;
pub mod html;
pub mod ignore;
mod json;
mod native;
pub mod pprof;
mod text;
mod timers;

/// For the formats and the collector's status line; the analysis takes it from [`crate::units`].
pub use crate::units::human_ns;
pub use json::{GoroutineRead, Report, ReportedCandidate, TargetInfo, TracerInfo};

use crate::model::{Frame, Model};

impl Report {
    /// Keeps the last goroutine snapshot for the formats that show every goroutine (a copy of
    /// up to 100k goroutines' stacks, so only taken for them).
    pub fn keep_goroutine_snapshot(&mut self, model: &Model) {
        self.goroutine_snapshot = goroutines::Snapshot::of(&model.goroutines);
    }

    /// Marks the candidates the rules match, and moves them after the others (order kept).
    pub fn apply_ignore_rules(&mut self, rules: &ignore::IgnoreRules) {
        for candidate in &mut self.candidates {
            candidate.suppressed_by = rules.matching(&candidate.candidate);
        }
        self.candidates.sort_by_key(|c| c.suppressed_by.is_some());
        let used: Vec<_> = self
            .candidates
            .iter()
            .filter_map(|c| c.suppressed_by.as_ref())
            .collect();
        let unused = rules.unused(&used);
        self.tracer.notes.extend(unused);
    }

    /// The report in one of the formats (bytes: pprof is gzip).
    pub fn render(&self, format: crate::cli::Format) -> anyhow::Result<Vec<u8>> {
        use crate::cli::Format;
        Ok(match format {
            Format::Text => self.to_text().into_bytes(),
            Format::Json => self.to_json().into_bytes(),
            Format::Pprof => pprof::render(self)?,
            Format::Goroutines => match &self.goroutine_snapshot {
                Some(snapshot) => goroutines::render(snapshot).into_bytes(),
                None => anyhow::bail!("{}", goroutines::no_dump(self)),
            },
            Format::Folded => folded::render(self).into_bytes(),
            Format::Flamegraph => folded::flamegraph(self)?.into_bytes(),
            Format::Html => html::render(self, &folded::flamegraph(self)?)?.into_bytes(),
        })
    }
}

pub fn frame_text(frame: &Frame) -> String {
    let function = frame.function.as_deref().unwrap_or("??");
    let location = match (&frame.file, frame.line) {
        (Some(file), Some(line)) => format!(" ({}:{line})", short_path(file)),
        (Some(file), None) => format!(" ({})", short_path(file)),
        _ => String::new(),
    };
    let module = frame
        .module
        .as_deref()
        .filter(|_| frame.file.is_none())
        .map(|m| format!(" [{}]", short_path(m)))
        .unwrap_or_default();
    let inlined = if frame.inlined { " (inlined)" } else { "" };
    format!("{function}{location}{module}{inlined} {:#x}", frame.addr)
}

fn short_path(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::analyze::analyze;
    use crate::model::tests::blocked;
    use crate::model::{BlockedSince, Event, Model};

    pub(crate) fn report() -> Report {
        let mut model = Model::new();
        model.apply(&Event::TraceStarted { at_ns: 0 });
        let mut a = blocked(
            11,
            0xa0,
            BlockedSince::BeforeTrace,
            &["lock_a_then_b", "worker_one"],
        );
        a.owner_tid = Some(12);
        let mut b = blocked(
            12,
            0xb0,
            BlockedSince::BeforeTrace,
            &["lock_b_then_a", "worker_two"],
        );
        b.owner_tid = Some(11);
        model.apply(&Event::Blocked {
            at_ns: 2_000_000_000,
            threads: vec![a, b],
        });
        let analysis = analyze(&model, 2_000_000_000, 500_000_000, 5);
        Report::new(
            TargetInfo {
                pid: 10,
                comm: "abba".into(),
                exe: "/tmp/abba".into(),
                container: None,
            },
            TracerInfo::default(),
            analysis,
            2_000_000_000,
            false,
            500_000_000,
        )
    }

    #[test]
    fn json_keeps_the_contract_fields() {
        let json: serde_json::Value = serde_json::from_str(&report().to_json()).unwrap();
        for key in [
            "target",
            "duration_ns",
            "lost_events",
            "candidates",
            "wait_sites",
        ] {
            assert!(json.get(key).is_some(), "missing {key}");
        }
        let candidate = &json["candidates"][0];
        assert_eq!(candidate["kind"], "deadlock");
        assert_eq!(candidate["count"], 2);
        for key in ["p50", "p90", "p99", "max"] {
            assert!(candidate["blocked_ns"][key].is_u64(), "blocked_ns.{key}");
        }
        let frame = &candidate["blocking_stack"][0];
        for key in ["function", "file", "line", "module", "addr"] {
            assert!(frame.get(key).is_some(), "frame.{key}");
        }
        assert!(frame["addr"].as_str().unwrap().starts_with("0x"));
        assert_eq!(candidate["cycle"][0]["waits_for"], "0xa0");
    }

    #[test]
    fn text_names_the_deadlock_threads_and_their_functions() {
        let text = report().to_text();
        assert!(text.contains("#1 DEADLOCK"), "{text}");
        assert!(text.contains("thread 11 \"t11\""), "{text}");
        assert!(text.contains("held by thread 12"), "{text}");
        assert!(text.contains("lock_b_then_a (fixture.c:1)"), "{text}");
    }

    #[test]
    fn suppressed_candidates_stay_listed_with_their_rule_and_fingerprint() {
        let mut report = report();
        let fingerprint = report.candidates[0].fingerprint.clone();
        assert!(fingerprint.starts_with("deadlock:"), "{fingerprint}");
        let rules =
            ignore::IgnoreRules::parse("known.txt", "# ok\nfunction lock_b_then_a").unwrap();
        report.apply_ignore_rules(&rules);
        let text = report.to_text();
        assert!(
            text.contains("SUPPRESSED by known.txt:2 `function lock_b_then_a`"),
            "{text}"
        );
        assert!(text.contains("#1 DEADLOCK"), "still listed: {text}");
        let json: serde_json::Value = serde_json::from_str(&report.to_json()).unwrap();
        let candidate = &json["candidates"][0];
        assert_eq!(candidate["fingerprint"], fingerprint.as_str());
        assert_eq!(candidate["suppressed_by"]["line"], 2);
        assert_eq!(
            candidate["kind"], "deadlock",
            "the candidate's own fields stay"
        );
    }

    #[test]
    fn a_target_in_a_container_is_named_as_its_container_sees_it() {
        let mut report = report();
        assert!(!report.to_text().contains("in a container"));
        assert!(report.to_json().find("\"container\"").is_none());
        report.target.container = Some(crate::procfs::root::ContainerView {
            cgroup: Some("/system.slice/docker-1f2e.scope".into()),
            namespace_pid: Some(1),
            other_mount_namespace: true,
            other_pid_namespace: true,
        });
        let text = report.to_text();
        assert!(
            text.contains("in a container: cgroup /system.slice/docker-1f2e.scope, pid 1 in its pid namespace"),
            "{text}"
        );
        let json: serde_json::Value = serde_json::from_str(&report.to_json()).unwrap();
        assert_eq!(json["target"]["container"]["namespace_pid"], 1);
    }
}
