//! A report as a gzipped pprof profile (profile.proto, checked in as `proto/profile.proto` and
//! compiled by the build script), for `go tool pprof`, Pyroscope, Parca and Grafana.
//!
//! Like Go's goroutine profile, one sample per group with the sample types `goroutine/count`
//! (threads count as goroutines here, so it reads like Go's) and `blocked/nanoseconds`: the sum
//! of the members' blocked times where each is known (stuck threads), else the group's median
//! blocked time times its count. Samples: every candidate (threads, goroutines, timer groups)
//! and, for Go targets, every goroutine group and Go timer group that is not a candidate (a
//! goroutine group with a member's stack from the last snapshot, a timer group with the stack
//! that started its timers where the sampling probe saw one). Locations carry function, file and line; functions inlined at one
//! address share a Location, innermost Line first, as Go writes them. String labels: `kind`,
//! `wait_reason`, `creation_site`, `verdict` (`candidate`, `suppressed`, `not a candidate`),
//! `score`, `fingerprint`, `summary`.
use std::collections::HashMap;
use std::io::Write as _;

use anyhow::{Context as _, Result};
use flate2::write::GzEncoder;
use prost::Message as _;

use crate::analyze::fingerprint::goroutine_group;
use crate::model::goroutines::{group_key, place, Goroutine};
use crate::model::Frame;
use crate::report::Report;

/// Types generated from profile.proto (package `perftools.profiles`).
#[allow(clippy::all, missing_docs)]
pub mod proto {
    include!(concat!(env!("OUT_DIR"), "/perftools.profiles.rs"));
}

/// The profile, gzip-compressed as pprof files are on disk.
pub fn render(report: &Report) -> Result<Vec<u8>> {
    let profile = profile(report);
    let mut gz = GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&profile.encode_to_vec())
        .and_then(|()| gz.finish())
        .context("compressing the pprof profile")
}

struct Builder {
    profile: proto::Profile,
    strings: HashMap<String, i64>,
    functions: HashMap<(String, String), u64>,
    locations: HashMap<Vec<(u64, i64)>, u64>,
}

impl Builder {
    /// An empty profile whose string table starts with "", as profile.proto requires.
    fn new() -> Builder {
        let mut b = Builder {
            profile: proto::Profile::default(),
            strings: HashMap::new(),
            functions: HashMap::new(),
            locations: HashMap::new(),
        };
        b.string("");
        b
    }

    fn string(&mut self, s: &str) -> i64 {
        if let Some(&index) = self.strings.get(s) {
            return index;
        }
        let index = self.profile.string_table.len() as i64;
        self.profile.string_table.push(s.to_string());
        self.strings.insert(s.to_string(), index);
        index
    }

    fn function(&mut self, frame: &Frame) -> u64 {
        let name = frame
            .function
            .clone()
            .unwrap_or_else(|| format!("{:#x}", frame.addr));
        let file = frame.file.clone().unwrap_or_default();
        if let Some(&id) = self.functions.get(&(name.clone(), file.clone())) {
            return id;
        }
        let id = self.profile.function.len() as u64 + 1;
        let function = proto::Function {
            id,
            name: self.string(&name),
            system_name: self.string(&name),
            filename: self.string(&file),
            start_line: 0,
        };
        self.profile.function.push(function);
        self.functions.insert((name, file), id);
        id
    }

    /// Location ids of a stack, innermost first; a run of inlined frames and the frame they
    /// were inlined into make one Location.
    fn stack(&mut self, stack: &[Frame]) -> Vec<u64> {
        let mut ids = Vec::new();
        let mut lines: Vec<proto::Line> = Vec::new();
        for frame in stack {
            lines.push(proto::Line {
                function_id: self.function(frame),
                line: i64::from(frame.line.unwrap_or(0)),
            });
            if frame.inlined {
                continue;
            }
            let key: Vec<(u64, i64)> = std::iter::once((frame.addr, 0))
                .chain(lines.iter().map(|l| (l.function_id, l.line)))
                .collect();
            let next = self.profile.location.len() as u64 + 1;
            let id = *self.locations.entry(key).or_insert(next);
            if id == next {
                self.profile.location.push(proto::Location {
                    id,
                    mapping_id: 1,
                    address: frame.addr,
                    line: std::mem::take(&mut lines),
                    is_folded: false,
                });
            }
            lines.clear();
            ids.push(id);
        }
        ids
    }

    fn sample(&mut self, stack: &[Frame], count: i64, blocked_ns: i64, labels: &[(&str, &str)]) {
        let location_id = self.stack(stack);
        let label = labels
            .iter()
            .filter(|(_, value)| !value.is_empty())
            .map(|(key, value)| proto::Label {
                key: self.string(key),
                str: self.string(value),
                num: 0,
                num_unit: 0,
            })
            .collect();
        self.profile.sample.push(proto::Sample {
            location_id,
            value: vec![count, blocked_ns],
            label,
        });
    }
}

fn profile(report: &Report) -> proto::Profile {
    let mut b = Builder::new();
    let sample_type = vec![
        proto::ValueType {
            ty: b.string("goroutine"),
            unit: b.string("count"),
        },
        proto::ValueType {
            ty: b.string("blocked"),
            unit: b.string("nanoseconds"),
        },
    ];
    b.profile.sample_type = sample_type;
    b.profile.period_type = Some(proto::ValueType {
        ty: b.string("goroutine"),
        unit: b.string("count"),
    });
    b.profile.period = 1;
    b.profile.duration_nanos = report.duration_ns as i64;
    b.profile.time_nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64 - report.duration_ns as i64);
    let exe = b.string(&report.target.exe);
    // Frames are symbolized already: one mapping over everything, marked as such, keeps pprof
    // from trying to symbolize them again.
    b.profile.mapping.push(proto::Mapping {
        id: 1,
        memory_start: 0,
        memory_limit: u64::MAX,
        file_offset: 0,
        filename: exe,
        build_id: 0,
        has_functions: true,
        has_filenames: true,
        has_line_numbers: true,
        has_inline_frames: true,
    });
    let comment = b.string(&format!(
        "leaktrace: pid {} ({}), traced {} ns",
        report.target.pid, report.target.comm, report.duration_ns
    ));
    b.profile.comment.push(comment);

    for c in &report.candidates {
        let blocked: u64 = if c.threads.is_empty() {
            c.blocked_ns.p50.saturating_mul(c.count as u64)
        } else {
            c.threads.iter().map(|t| t.blocked_ns).sum()
        };
        let creation_site = c
            .creation_stack
            .as_deref()
            .and_then(|s| s.first())
            .map(place)
            .unwrap_or_default();
        let verdict = if c.suppressed_by.is_some() {
            "suppressed"
        } else {
            "candidate"
        };
        let score = format!("{:.0}", c.score);
        b.sample(
            &c.blocking_stack,
            c.count as i64,
            blocked as i64,
            &[
                ("kind", c.kind.name()),
                ("wait_reason", c.wait_reason.as_deref().unwrap_or("")),
                ("creation_site", &creation_site),
                ("verdict", verdict),
                ("score", &score),
                ("fingerprint", &c.fingerprint),
                ("summary", &c.summary),
            ],
        );
    }

    // Timer groups that are not candidates: who started them where that was seen (a timer
    // blocks nothing, so no blocked time).
    for group in report.go_timers.iter().flat_map(|t| &t.other_groups) {
        b.sample(
            group.starter_stack.as_deref().unwrap_or(&[]),
            group.count as i64,
            0,
            &[
                ("kind", "go_timers"),
                ("callback", &group.callback),
                ("creation_site", &group.creation_site),
                ("verdict", "not a candidate"),
                ("why", group.not_a_candidate.as_deref().unwrap_or("")),
            ],
        );
    }

    let (Some(overview), Some(snapshot)) = (&report.goroutines, &report.goroutine_snapshot) else {
        return b.profile;
    };
    // One pass over the snapshot (100k goroutines), not one per group.
    let mut members: HashMap<(String, String, String), &Goroutine> = HashMap::new();
    for (g, _) in &snapshot.goroutines {
        let key = group_key(g);
        members
            .entry((key.created_at, key.sits_at, key.state))
            .or_insert(g);
    }
    for group in &overview.other_groups {
        let key = (
            group.created_at.clone(),
            group.sits_at.clone(),
            group.state.clone(),
        );
        let Some(member) = members.get(&key) else {
            continue;
        };
        let fingerprint = goroutine_group(&group.created_at, &group.sits_at, &group.state);
        b.sample(
            &member.stack,
            group.count as i64,
            group.age_ns.p50.saturating_mul(group.count as u64) as i64,
            &[
                ("kind", "goroutines"),
                ("wait_reason", &group.state),
                ("creation_site", &group.created_at),
                ("verdict", "not a candidate"),
                ("why", group.not_a_candidate.as_deref().unwrap_or("")),
                ("fingerprint", &fingerprint),
            ],
        );
    }
    b.profile
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(function: &str, line: u32, addr: u64, inlined: bool) -> Frame {
        Frame {
            function: Some(function.into()),
            file: Some("/src/main.go".into()),
            line: Some(line),
            inlined,
            ..Frame::unknown(addr)
        }
    }

    #[test]
    fn inlined_frames_share_a_location_innermost_line_first() {
        let mut b = Builder::new();
        let stack = [
            frame("runtime.gopark", 474, 0x100, false),
            frame("main.wait", 15, 0x200, true),
            frame("main.handle.gowrap1", 8, 0x200, false),
        ];
        let ids = b.stack(&stack);
        assert_eq!(ids, [1, 2], "two addresses, two locations");
        let location = &b.profile.location[1];
        assert_eq!(location.address, 0x200);
        let names: Vec<&str> = location
            .line
            .iter()
            .map(|l| {
                let f = &b.profile.function[l.function_id as usize - 1];
                b.profile.string_table[f.name as usize].as_str()
            })
            .collect();
        assert_eq!(names, ["main.wait", "main.handle.gowrap1"]);
        assert_eq!(location.line[0].line, 15);
        // The same stack again reuses locations and functions.
        assert_eq!(b.stack(&stack), ids);
        assert_eq!(b.profile.function.len(), 3);
        assert_eq!(b.profile.string_table[0], "");
    }
}
