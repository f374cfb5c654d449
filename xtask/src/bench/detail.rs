//! `--detail low` against `--detail full` (issue 9): what the low-cost default costs a busy
//! target averaged over a long trace, what it costs the rest of the host between its probe
//! windows, and how long its windows are.
//!
//! A low trace's cost is not constant: the syscall tracepoints are attached in the first
//! window (2 s), then in short windows at a 5% duty cycle. So the target part runs each workload
//! for about `LEAKTRACE_BENCH_SECONDS` (60 by default: the budget is an average over a
//! 60 s trace) and the host part runs its workloads between two windows, checked against the
//! windows leaktrace logs (`LEAKTRACE_WINDOW_LOG=1`).
use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{bail, Context as _, Result};

use super::{compile, compile_go, median, read_elapsed, run_untraced, Build, Run, Workload};

/// The busy targets of the budget, by the start of their names among the short
/// workloads (`super::WORKLOADS`), run here for longer: futex loop ≤ x1.10, epoll loop ≤ x1.05,
/// thread spawn ≤ x1.02, Go HTTP server ≤ x1.01.
const LONG_WORKLOADS: [&str; 4] = ["futex loop", "epoll:", "thread spawn:", "Go: loopback HTTP"];

fn long_workloads() -> impl Iterator<Item = &'static Workload> {
    super::WORKLOADS
        .iter()
        .filter(|w| LONG_WORKLOADS.iter().any(|name| w.name.starts_with(name)))
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the struct; leaktrace logs CLOCK_MONOTONIC too.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Each long workload untraced, untraced again, traced `--detail low` and `--detail full`, for
/// about `LEAKTRACE_BENCH_SECONDS` each, `LEAKTRACE_BENCH_REPS` times (3), rotating.
pub fn target_cost(leaktrace: &Path, root: &Path, work: &Path) -> Result<()> {
    let seconds = env_number("LEAKTRACE_BENCH_SECONDS", 60);
    let reps = env_number("LEAKTRACE_BENCH_REPS", 3) as usize;
    println!(
        "--detail low vs full on a busy target: each workload run for ~{seconds} s, {reps} times each untraced, untraced again, low and full, rotating; medians\n"
    );
    let fixtures = root.join("tracer-user/tests/fixtures");
    for workload in long_workloads() {
        let binary = match workload.build {
            Build::C(name) => compile(&fixtures, work, name)?,
            Build::Go(dir) => compile_go(root, work, dir)?,
        };
        // Scale the work to the wanted length from one untraced run.
        let once = run_untraced(&binary, workload, work)?.elapsed_ns.max(1);
        let scale = (seconds as f64 * 1e9 / once as f64).max(1.0);
        let ops = (workload.ops as f64 * scale) as u64;
        let args = vec![ops.to_string()];
        let mut untraced = Vec::new();
        let mut again = Vec::new();
        let mut low = Vec::new();
        let mut full = Vec::new();
        for i in 0..reps {
            for k in 0..4 {
                match (i + k) % 4 {
                    0 => untraced.push(run_plain(&binary, &args, work)?),
                    1 => again.push(run_plain(&binary, &args, work)?),
                    2 => low.push(run_traced(leaktrace, "low", &binary, &args, work)?),
                    _ => full.push(run_traced(leaktrace, "full", &binary, &args, work)?),
                }
            }
        }
        let base = median(untraced.iter().map(|r| r.0)) as f64;
        let noise = median(again.iter().map(|r| r.0)) as f64;
        println!(
            "{} ({ops} {}s, ~{:.0} s untraced)",
            workload.name,
            workload.op_name,
            base / 1e9
        );
        println!("  noise floor (untraced/untraced) {:.3}", noise / base);
        for (mode, runs) in [("low ", &low), ("full", &full)] {
            let with = median(runs.iter().map(|r| r.0)) as f64;
            let covered = median(runs.iter().map(|r| r.1 .0));
            let trace = median(runs.iter().map(|r| r.1 .1)).max(1);
            let windows = median(runs.iter().map(|r| r.1 .2));
            let cpu = median(runs.iter().map(|r| r.1 .3));
            println!(
                "  --detail {mode}: ratio {:.3} ({:+.1}%), added {:.0} ns per {}; probes attached {:.1}% of the trace ({} window(s)); leaktrace CPU {:.1} ms per second of trace",
                with / base,
                (with / base - 1.0) * 100.0,
                (with - base) / ops as f64,
                workload.op_name,
                covered as f64 * 100.0 / trace as f64,
                windows,
                cpu as f64 / 1e6,
            );
        }
        println!();
    }
    Ok(())
}

fn run_plain(binary: &Path, args: &[String], work: &Path) -> Result<(u64, (u64, u64, u64, u64))> {
    let result = work.join("result-untraced");
    let status = Command::new(binary).args(args).arg(&result).status()?;
    if !status.success() {
        bail!("{} failed: {status}", binary.display());
    }
    Ok((read_elapsed(&result)?, (0, 0, 0, 0)))
}

/// The workload's time, and from the report: (probe time covered, trace length, windows,
/// leaktrace CPU per second of trace), all ns; full mode covers the whole trace.
fn run_traced(
    leaktrace: &Path,
    detail: &str,
    binary: &Path,
    args: &[String],
    work: &Path,
) -> Result<(u64, (u64, u64, u64, u64))> {
    let result = work.join("result-traced");
    let report_path = work.join("report-detail.json");
    let output = Command::new(leaktrace)
        .args(["--detail", detail, "--format", "json", "-o"])
        .arg(&report_path)
        .arg("--")
        .arg(binary)
        .args(args)
        .arg(&result)
        .output()?;
    if !output.status.success() {
        bail!(
            "leaktrace failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&report_path)?)
        .context("leaktrace wrote no JSON report")?;
    let trace_ns = report["duration_ns"].as_u64().unwrap_or(0);
    let windows = &report["tracer"]["windows"];
    let (covered, count) = match windows["count"].as_u64() {
        Some(count) => (windows["covered_ns"].as_u64().unwrap_or(0), count),
        None => (trace_ns, 0),
    };
    let cpu = report["tracer"]["cpu_ns"].as_u64().unwrap_or(0);
    let cpu_per_s = (cpu as f64 / (trace_ns.max(1) as f64 / 1e9)) as u64;
    Ok((
        read_elapsed(&result)?,
        (covered, trace_ns, count, cpu_per_s),
    ))
}

/// A leaktrace `--detail low` tracing an idle `sleep`, logging its windows.
struct LowTrace {
    child: std::process::Child,
    stderr: BufReader<std::process::ChildStderr>,
}

impl LowTrace {
    fn start(leaktrace: &Path, work: &Path) -> Result<Self> {
        let mut child = Command::new(leaktrace)
            .args(["--detail", "low", "--format", "json", "-o"])
            .arg(work.join("report-idle-low.json"))
            .args(["--", "sleep", "600"])
            .env("LEAKTRACE_WINDOW_LOG", "1")
            .stderr(Stdio::piped())
            .spawn()
            .context("cannot start leaktrace")?;
        let stderr = BufReader::new(child.stderr.take().context("stderr")?);
        Ok(LowTrace { child, stderr })
    }

    /// Reads stderr until a line containing `needle`.
    fn wait_for(&mut self, needle: &str) -> Result<String> {
        let mut line = String::new();
        while !line.contains(needle) {
            line.clear();
            if self.stderr.read_line(&mut line)? == 0 {
                bail!("leaktrace ended before logging {needle:?}");
            }
        }
        Ok(line)
    }

    /// Ends the trace (SIGINT) and returns the rest of its window log.
    fn stop(mut self) -> Result<String> {
        // SAFETY: kill has no memory preconditions; the pid is our child's.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let mut rest = String::new();
        std::io::Read::read_to_string(&mut self.stderr, &mut rest)?;
        let status = self.child.wait()?;
        if !status.success() {
            bail!("leaktrace tracing an idle process failed: {status}");
        }
        Ok(rest)
    }
}

/// "leaktrace: window N open at T ns" -> T.
fn opened_at(log: &str) -> Vec<u64> {
    log.lines()
        .filter_map(|line| {
            let rest = line.strip_prefix("leaktrace: window ")?;
            let (_, at) = rest.split_once(" open at ")?;
            at.strip_suffix(" ns")?.parse().ok()
        })
        .collect()
}

/// The host workload while a low trace of an idle process is between windows: started once its
/// first window has closed, and run again (at most 5 times) if a window opened meanwhile.
pub fn run_between_windows(
    leaktrace: &Path,
    binary: &Path,
    workload: &Workload,
    work: &Path,
) -> Result<Run> {
    for _ in 0..5 {
        let mut trace = LowTrace::start(leaktrace, work)?;
        trace.wait_for("window 1 closed")?;
        let started = monotonic_ns();
        let run = run_untraced(binary, workload, work)?;
        let ended = monotonic_ns();
        let log = trace.stop()?;
        if opened_at(&log).iter().all(|&at| at < started || at > ended) {
            return Ok(run);
        }
    }
    bail!("a probe window opened during every one of 5 runs between windows")
}

/// "leaktrace: window 1 closed at T ns" -> T.
fn first_closed_at(log: &str) -> Option<u64> {
    log.lines().find_map(|line| {
        let rest = line.strip_prefix("leaktrace: window 1 closed at ")?;
        rest.split_once(" ns")?.0.parse().ok()
    })
}

/// Of the host workload's operations, the share run inside a window: the whole workload takes
/// ~2 s untraced on a busy machine, longer than the first window.
const INSIDE_SHARE: u64 = 4;

/// The host workload while a low trace of an idle process has its first window (2 s) open:
/// what every syscall of the host pays while the raw `sys_enter`/`sys_exit` programs are
/// attached. A quarter of the operations, its time times four (comparable with the untraced
/// runs of the whole workload). Run again (at most 5 times) if the window closed before the
/// workload ended.
pub fn run_inside_a_window(
    leaktrace: &Path,
    binary: &Path,
    workload: &Workload,
    work: &Path,
) -> Result<Run> {
    let ops = (workload.ops / INSIDE_SHARE).to_string();
    for _ in 0..5 {
        let mut trace = LowTrace::start(leaktrace, work)?;
        // The first window is attached before leaktrace says it is tracing.
        trace.wait_for("tracing pid")?;
        let (elapsed_ns, _) = run_plain(binary, std::slice::from_ref(&ops), work)?;
        let ended = monotonic_ns();
        let log = trace.stop()?;
        if first_closed_at(&log).is_some_and(|closed| closed > ended) {
            return Ok(Run {
                elapsed_ns: elapsed_ns * INSIDE_SHARE,
                ..Run::default()
            });
        }
    }
    bail!("the first probe window closed before the workload ended in every one of 5 runs")
}

/// How long windows are and what they attach, on an idle target: the window log of a 30 s
/// trace. A window costs the host what `--detail full` costs it, for the time it is attached.
pub fn window_host_cost(leaktrace: &Path, work: &Path) -> Result<()> {
    let mut trace = LowTrace::start(leaktrace, work)?;
    trace.wait_for("tracing pid")?;
    std::thread::sleep(std::time::Duration::from_secs(30));
    let log = trace.stop()?;
    let attached: Vec<u64> = log
        .lines()
        .filter_map(|line| {
            let (_, rest) = line.split_once(" after ")?;
            rest.strip_suffix(" ms attached")?.parse().ok()
        })
        .collect();
    let later = &attached[attached.len().min(1)..];
    println!(
        "  --detail low on an idle target, 30 s: {} window(s); attached {} ms (first window: 2 s of trace after start-up, then the time the kernel takes to detach); later windows {:?} ms (250 ms + detaching); median later window {} ms\n",
        attached.len(),
        attached.first().copied().unwrap_or(0),
        later,
        median(later.iter().copied()),
    );
    Ok(())
}
