//! One self-contained HTML page of a report: candidates with their stacks and reasons,
//! blocked-time percentiles, count-over-time charts (per goroutine group and timer group, and
//! the totals), and the flame graph. Everything is inline (CSS, the chart script, the flame
//! graph as a data: image), so the page needs no network when it is viewed.
//!
//! The script draws the charts from `data-series` attributes and marks `<body data-rendered>`
//! when done; a script error is written into `#script-errors` (the HTML test reads both back).
use std::fmt::Write as _;

use anyhow::Result;

use crate::analyze::goroutines::GoroutineGroup;
use crate::analyze::{Detail, Percentiles};
use crate::model::goroutines::CountAt;
use crate::model::Frame;
use crate::report::{frame_text, human_ns, Report, ReportedCandidate};

const STYLE: &str = r#"
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222;max-width:1200px}
h1{font-size:1.4em}h2{font-size:1.2em;margin-top:1.5em}
.candidate{border:1px solid #ccc;border-left:6px solid #c0392b;border-radius:4px;padding:.6em 1em;margin:1em 0}
.candidate.suppressed{border-left-color:#999;opacity:.75}
.kind{font-weight:bold;color:#c0392b}.suppressed .kind{color:#777}
pre{background:#f6f6f6;padding:.5em;overflow-x:auto;font-size:.85em}
.chart svg,.pct svg{background:#fafafa;border:1px solid #ddd}
.charts{display:flex;flex-wrap:wrap;gap:1em}
#script-errors{color:#c00;white-space:pre-wrap}
.note{color:#666}
"#;

const SCRIPT: &str = r#"
window.onerror = function (msg, src, line) {
  document.getElementById('script-errors').textContent += 'error: ' + msg + ' (line ' + line + ')\n';
};
(function () {
  var NS = 'http://www.w3.org/2000/svg';
  function el(name, attrs, text) {
    var e = document.createElementNS(NS, name);
    for (var k in attrs) e.setAttribute(k, attrs[k]);
    if (text !== undefined) e.textContent = text;
    return e;
  }
  function human(ns) {
    if (ns < 1e3) return ns + 'ns';
    if (ns < 1e6) return (ns / 1e3).toFixed(1) + 'us';
    if (ns < 1e9) return (ns / 1e6).toFixed(1) + 'ms';
    return (ns / 1e9).toFixed(2) + 's';
  }
  document.querySelectorAll('.chart').forEach(function (div) {
    var points = JSON.parse(div.dataset.series);
    var w = 360, h = 120, pad = 30;
    var svg = el('svg', {width: w, height: h + 20});
    svg.appendChild(el('text', {x: 4, y: 12, 'font-size': 11}, div.dataset.title));
    var t0 = points.length ? points[0][0] : 0, t1 = points.length ? points[points.length - 1][0] : 1;
    var max = Math.max.apply(null, points.map(function (p) { return p[1]; }).concat([1]));
    var xs = function (t) { return pad + (w - pad - 8) * (t1 > t0 ? (t - t0) / (t1 - t0) : 0); };
    var ys = function (c) { return h - (h - 24) * c / max; };
    svg.appendChild(el('line', {x1: pad, y1: h, x2: w - 8, y2: h, stroke: '#999'}));
    svg.appendChild(el('text', {x: 2, y: ys(max) + 4, 'font-size': 10}, String(max)));
    svg.appendChild(el('text', {x: 2, y: h, 'font-size': 10}, '0'));
    svg.appendChild(el('text', {x: w - 60, y: h + 14, 'font-size': 10}, ((t1 - t0) / 1e9).toFixed(1) + ' s'));
    svg.appendChild(el('polyline', {fill: 'none', stroke: '#2c7fb8', 'stroke-width': 2,
      points: points.map(function (p) { return xs(p[0]) + ',' + ys(p[1]); }).join(' ')}));
    div.appendChild(svg);
  });
  document.querySelectorAll('.pct').forEach(function (div) {
    var p = JSON.parse(div.dataset.percentiles);
    var keys = ['p50', 'p90', 'p99', 'max'];
    var w = 360, row = 18;
    var svg = el('svg', {width: w, height: row * keys.length + 22});
    svg.appendChild(el('text', {x: 4, y: 12, 'font-size': 11}, div.dataset.label + (p.at_least ? ' (at least)' : '')));
    var max = Math.max(p.max, 1);
    keys.forEach(function (k, i) {
      var y = 18 + i * row;
      svg.appendChild(el('text', {x: 4, y: y + 12, 'font-size': 11}, k));
      svg.appendChild(el('rect', {x: 40, y: y + 2, height: row - 6, width: Math.max(1, 240 * p[k] / max), fill: '#e6550d'}));
      svg.appendChild(el('text', {x: 290, y: y + 12, 'font-size': 11}, human(p[k])));
    });
    div.appendChild(svg);
  });
  document.body.setAttribute('data-rendered', document.querySelectorAll('.candidate').length + ' candidates');
})();
"#;

/// The page. `flamegraph_svg` is embedded as an image.
pub fn render(report: &Report, flamegraph_svg: &str) -> Result<String> {
    let mut out = String::new();
    let t = &report.target;
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>leaktrace: pid {} ({})</title><style>{STYLE}</style></head><body>\n",
        t.pid,
        esc(&t.comm)
    );
    let _ = writeln!(
        out,
        "<h1>leaktrace report for pid {} ({})</h1><p>{} &middot; traced {}{} &middot; {} events lost &middot; stuck threshold {}</p>",
        t.pid,
        esc(&t.comm),
        esc(&t.exe),
        human_ns(report.duration_ns),
        if report.target_exited { " until the target exited" } else { "" },
        report.lost_events,
        human_ns(report.min_blocked_ns)
    );
    let _ = writeln!(
        out,
        "<p class=\"note\">{}</p>",
        esc(&report.tracer.detail_line())
    );
    let _ = writeln!(out, "<div id=\"script-errors\"></div>");
    for note in &report.tracer.notes {
        let _ = writeln!(out, "<p class=\"note\">note: {}</p>", esc(note));
    }
    let _ = writeln!(
        out,
        "<h2>Leak candidates ({})</h2>",
        report.candidates.len()
    );
    if report.candidates.is_empty() {
        let _ = writeln!(out, "<p>No leak candidates.</p>");
    }
    for (i, c) in report.candidates.iter().enumerate() {
        write_candidate(&mut out, i + 1, c);
    }

    let mut charts = String::new();
    if let Some(go) = &report.goroutines {
        chart(&mut charts, "goroutines (all)", &go.history);
        for g in go.other_groups.iter().take(8) {
            chart(
                &mut charts,
                &format!("{} at {}", g.state, g.sits_at),
                &g.history,
            );
        }
    }
    if let Some(timers) = &report.go_timers {
        chart(&mut charts, "Go timers (all pending)", &timers.history);
        for g in timers.other_groups.iter().take(8) {
            chart(&mut charts, &format!("timers: {}", g.callback), &g.history);
        }
    }
    if !charts.is_empty() {
        let _ = writeln!(
            out,
            "<h2>Counts over time (groups that are not candidates)</h2><div class=\"charts\">{charts}</div>"
        );
    }
    let _ = writeln!(
        out,
        "<h2>Flame graph of stuck threads and goroutines</h2><img alt=\"flame graph\" style=\"max-width:100%\" src=\"data:image/svg+xml;base64,{}\">",
        base64(flamegraph_svg.as_bytes())
    );
    let _ = writeln!(out, "<script>{SCRIPT}</script></body></html>");
    Ok(out)
}

fn write_candidate(out: &mut String, rank: usize, c: &ReportedCandidate) {
    let class = if c.suppressed_by.is_some() {
        "candidate suppressed"
    } else {
        "candidate"
    };
    let _ = writeln!(
        out,
        "<div class=\"{class}\" data-fingerprint=\"{}\"><p><span class=\"kind\">#{rank} {}</span> {} (score {:.0})</p>",
        esc(&c.fingerprint),
        c.kind().name(),
        esc(&c.summary),
        c.score
    );
    if let Some(rule) = &c.suppressed_by {
        let _ = writeln!(
            out,
            "<p class=\"note\">suppressed by {}:{} <code>{}</code></p>",
            esc(&rule.file),
            rule.line,
            esc(&rule.rule)
        );
    }
    let _ = writeln!(out, "<ul>");
    for reason in &c.reasons {
        let _ = writeln!(out, "<li>{}</li>", esc(reason));
    }
    let _ = writeln!(out, "</ul><div class=\"charts\">");
    if c.blocked_ns.max > 0 {
        // A timerfd's are its ages since creation (analyze/timerfd.rs): it blocks nothing.
        let label = match c.detail {
            Detail::Timerfd { .. } => "age",
            _ => "blocked time",
        };
        percentiles(out, &c.blocked_ns, label);
    }
    let mut group_chart = |g: &GoroutineGroup| {
        chart(
            out,
            &format!("{} goroutines over time", g.state),
            &g.history,
        )
    };
    match &c.detail {
        Detail::GoroutineLeak { group: g, .. } => group_chart(g),
        Detail::GoTimer { group: t, .. } => {
            chart(out, &format!("timers {} over time", t.callback), &t.history)
        }
        _ => {}
    }
    let _ = writeln!(out, "</div>");
    match &c.detail {
        // A deadlock's threads wait at different places: each one's stack, as the text report
        // lists them, not the first thread's alone.
        Detail::Deadlock { threads, .. } => {
            for t in threads {
                let owner = t
                    .owner_tid
                    .map(|o| format!(", held by thread {o}"))
                    .unwrap_or_default();
                let title = format!(
                    "thread {} ({}) waits on futex {:#x}{owner}",
                    t.tid,
                    esc(&t.name),
                    t.futex_addr
                );
                stack(out, &title, &t.blocking_stack);
            }
        }
        _ => stack(out, "blocking stack", &c.blocking_stack),
    }
    if let Some(creation) = &c.creation_stack {
        stack(out, "created by", creation);
    }
    let _ = writeln!(out, "</div>");
}

fn stack(out: &mut String, title: &str, frames: &[Frame]) {
    let text: Vec<String> = frames.iter().map(|f| esc(&frame_text(f))).collect();
    let _ = writeln!(
        out,
        "<details open><summary>{title} ({} frames)</summary><pre>{}</pre></details>",
        frames.len(),
        text.join("\n")
    );
}

fn chart(out: &mut String, title: &str, history: &[CountAt]) {
    if history.is_empty() {
        return;
    }
    let series: Vec<String> = history
        .iter()
        .map(|p| format!("[{},{}]", p.at_ns, p.count))
        .collect();
    let _ = writeln!(
        out,
        "<div class=\"chart\" data-title=\"{}\" data-series=\"[{}]\"></div>",
        esc(title),
        series.join(",")
    );
}

fn percentiles(out: &mut String, p: &Percentiles, label: &str) {
    let _ = writeln!(
        out,
        "<div class=\"pct\" data-label=\"{}\" data-percentiles=\"{}\"></div>",
        esc(label),
        esc(&serde_json::to_string(p).unwrap_or_default())
    );
}

/// Text and attribute values: the five characters HTML gives meaning.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(ch),
        }
    }
    out
}

/// Standard base64 (RFC 4648) for the data: URL; too small a need for a dependency.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
    }

    #[test]
    fn markup_in_names_is_escaped() {
        assert_eq!(esc("a<b>&\"'"), "a&lt;b&gt;&amp;&quot;&#39;");
    }
}
