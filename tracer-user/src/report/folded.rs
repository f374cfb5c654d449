//! Collapsed stacks (`frame;frame;frame count`, root first: the input of flamegraph.pl,
//! inferno, speedscope) of the stuck threads and goroutines of a report's candidates, and an
//! SVG flame graph of them drawn by the `inferno` crate.
//!
//! Each stack starts with the candidate's kind as its root frame, so each kind is one tower.
//! Counts are threads or goroutines. Candidates suppressed by `--ignore` rules are left out
//! (they are listed in the text, JSON and HTML reports).
use std::fmt::Write as _;

use anyhow::{Context as _, Result};

use crate::model::Frame;
use crate::report::{Report, ReportedCandidate};

/// The collapsed stacks, one line per distinct stack, sorted (as inferno's collapsers do).
pub fn render(report: &Report) -> String {
    let mut lines = std::collections::BTreeMap::<String, usize>::new();
    for candidate in report
        .candidates
        .iter()
        .filter(|c| c.suppressed_by.is_none())
    {
        for (stack, count) in stacks(candidate) {
            *lines.entry(stack).or_default() += count;
        }
    }
    let mut out = String::new();
    for (stack, count) in lines {
        let _ = writeln!(out, "{stack} {count}");
    }
    out
}

/// An SVG flame graph of [`render`]'s stacks. A report without stuck stacks gets a small SVG
/// that says so (inferno refuses empty input).
pub fn flamegraph(report: &Report) -> Result<String> {
    let folded = render(report);
    if folded.is_empty() {
        return Ok(concat!(
            r#"<?xml version="1.0" standalone="no"?>"#,
            "\n",
            r#"<svg version="1.1" width="600" height="40" xmlns="http://www.w3.org/2000/svg">"#,
            r#"<text x="10" y="25" font-family="Verdana" font-size="14">leaktrace: no stuck threads or goroutines</text></svg>"#,
            "\n"
        )
        .to_string());
    }
    let mut options = inferno::flamegraph::Options::default();
    options.title = format!(
        "leaktrace: stuck threads and goroutines of pid {} ({})",
        report.target.pid, report.target.comm
    );
    options.count_name = "threads/goroutines".to_string();
    let mut svg = Vec::new();
    inferno::flamegraph::from_lines(&mut options, folded.lines(), &mut svg)
        .context("drawing the flame graph")?;
    String::from_utf8(svg).context("the flame graph is not UTF-8")
}

/// (root-first stack, count) of one candidate: each stuck thread with its own stack when the
/// threads have them (deadlocks), else the candidate's stack times its count.
fn stacks(c: &ReportedCandidate) -> Vec<(String, usize)> {
    let root = c.kind().name();
    let per_thread: Vec<(String, usize)> = c
        .threads()
        .iter()
        .filter(|t| !t.blocking_stack.is_empty())
        .map(|t| (collapse(root, &t.blocking_stack), 1))
        .collect();
    if !per_thread.is_empty() {
        return per_thread;
    }
    vec![(collapse(root, &c.blocking_stack), c.count.max(1))]
}

fn collapse(root: &str, stack: &[Frame]) -> String {
    let mut out = root.to_string();
    for frame in stack.iter().rev() {
        out.push(';');
        out.push_str(&frame_name(frame));
    }
    out
}

/// A frame's function (with `;` and newlines, which end a frame or a line, replaced), or
/// `??@module+addr` for an unnamed frame.
fn frame_name(frame: &Frame) -> String {
    match (&frame.function, &frame.module) {
        (Some(f), _) => f.replace([';', '\n'], "_"),
        (None, Some(m)) => format!("??@{}", m.rsplit('/').next().unwrap_or(m)),
        (None, None) => format!("??@{:#x}", frame.addr),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stacks_are_root_first_and_names_cannot_break_lines() {
        let frame = |f: &str| Frame {
            function: Some(f.into()),
            ..Frame::unknown(1)
        };
        let stack = [
            frame("runtime.gopark"),
            frame("main.a;b"),
            frame("main.main"),
        ];
        assert_eq!(
            collapse("goroutine_leak", &stack),
            "goroutine_leak;main.main;main.a_b;runtime.gopark"
        );
        assert_eq!(frame_name(&Frame::unknown(0x10)), "??@0x10");
    }
}
