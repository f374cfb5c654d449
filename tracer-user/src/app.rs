//! One trace from start to end: the target, the probes, the collection loop, the analysis and
//! the report, in that order, with every probe detached before the report is written.
use std::fs::File;
use std::io::Write as _;

use anyhow::{Context as _, Result};

use crate::cli::{Cli, Command, Format};
use crate::collect::{EndReason, Settings};
use crate::report::{GoroutineRead, Report, TargetInfo, TracerInfo};
use crate::target::Target;
use crate::{analyze, attach, collect, procfs};

/// Wait sites listed in a report (the busiest by total time waited).
const REPORTED_WAIT_SITES: usize = 20;

/// Traces the target the command line names and writes the report.
pub fn run(cli: Cli) -> Result<()> {
    if let Some(Command::Diff { old, new }) = &cli.subcommand {
        return write_out(None, None, crate::report::diff::run(old, new)?.as_bytes());
    }
    let format = cli.report_format();
    // Bad rules fail before tracing, with the line.
    let ignore = cli
        .ignore
        .as_deref()
        .map(crate::report::ignore::IgnoreRules::load)
        .transpose()?;
    // Fail on an unwritable output before spending a whole trace on it.
    let output = cli
        .output
        .as_ref()
        .map(|path| {
            File::create(path)
                .with_context(|| format!("cannot write the report to {}", path.display()))
        })
        .transpose()?;
    attach::check_privileges()?;

    let mut target = match cli.pid {
        Some(pid) => Target::existing(pid)?,
        None => Target::start(&cli.command)?,
    };
    let mut probes =
        attach::Probes::load_with(target.pid, cli.stack_after.as_nanos() as u64, cli.detail)?;
    target.release()?;
    let info = TargetInfo {
        pid: target.pid,
        comm: procfs::comm(target.pid),
        exe: procfs::exe(target.pid),
        // A target that already exited has no namespaces to read; the trace says it exited.
        container: procfs::root::container_view(target.pid).ok().flatten(),
    };
    eprintln!(
        "leaktrace: tracing pid {} ({}) with {}; {}",
        info.pid,
        info.comm,
        attach::probe_summary(&probes.attached),
        match cli.duration {
            Some(d) => format!("for {}", humantime::format_duration(d)),
            None => "Ctrl-C to stop and report".to_string(),
        }
    );

    let settings = Settings {
        duration: cli.duration,
        min_blocked_ns: cli.min_blocked.as_nanos() as u64,
        max_frames: cli.max_frames as usize,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let (outcome, trace_notes) =
        runtime.block_on(collect::trace(&mut probes, &mut target, &settings))?;
    let mut notes = std::mem::take(&mut probes.notes);
    notes.extend(crate::target::architecture_note(info.pid));
    notes.extend(trace_notes);
    let attached = std::mem::take(&mut probes.attached);
    // Detach before anything else can go wrong.
    drop(probes);
    if outcome.end == EndReason::Interrupted {
        notes.push("interrupted: reporting what was seen until then".into());
    }
    target.stop_started_command();

    let analysis = analyze::analyze(
        &outcome.model,
        outcome.ended_ns,
        settings.min_blocked_ns,
        REPORTED_WAIT_SITES,
    );
    let usage = own_usage();
    let mut report = Report::new(
        info,
        TracerInfo {
            max_rss_kb: usage.ru_maxrss as u64,
            cpu_ns: cpu_ns(&usage.ru_utime) + cpu_ns(&usage.ru_stime),
            probes: attached,
            notes,
            slowest_goroutine_read: outcome.slowest_goroutine_read.map(|(elapsed, goroutines)| {
                GoroutineRead {
                    elapsed_ns: elapsed.as_nanos() as u64,
                    goroutines,
                }
            }),
            detail: cli.detail,
            windows: outcome.windows,
        },
        analysis,
        &outcome.model,
        outcome.ended_ns.saturating_sub(outcome.started_ns),
        outcome.end == EndReason::TargetExited,
        settings.min_blocked_ns,
    );
    if let Some(rules) = &ignore {
        report.apply_ignore_rules(rules);
    }
    if matches!(format, Format::Goroutines | Format::Pprof) {
        report.keep_goroutine_snapshot(&outcome.model);
    }
    let rendered = report.render(format)?;
    write_out(output, cli.output.as_deref(), &rendered)
}

fn write_out(file: Option<File>, path: Option<&std::path::Path>, bytes: &[u8]) -> Result<()> {
    match (file, path) {
        (Some(mut file), Some(path)) => file
            .write_all(bytes)
            .with_context(|| format!("cannot write the report to {}", path.display())),
        _ => std::io::stdout()
            .write_all(bytes)
            .context("cannot write the report to stdout"),
    }
}

/// leaktrace's own resource use so far (`getrusage(RUSAGE_SELF)`: peak RSS in KiB, CPU time).
fn own_usage() -> libc::rusage {
    // SAFETY: getrusage fills the struct.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    usage
}

fn cpu_ns(time: &libc::timeval) -> u64 {
    time.tv_sec as u64 * 1_000_000_000 + time.tv_usec as u64 * 1_000
}
