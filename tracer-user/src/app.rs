//! One trace from start to end: the target, the probes, the collection loop, the analysis and
//! the report, in that order, with every probe detached before the report is written.
use std::fs::File;
use std::io::{IsTerminal as _, Write as _};

use anyhow::{bail, Context as _, Result};

use crate::cli::{Cli, Command, Format, ReplayArgs};
use crate::collect::{EndReason, Settings};
use crate::model::Model;
use crate::replay::{RecordedSettings, Recorder};
use crate::report::ignore::IgnoreRules;
use crate::report::{GoroutineRead, Report, TargetInfo, TracerInfo};
use crate::target::Target;
use crate::{analyze, attach, collect, procfs, replay};

/// Wait sites listed in a report (the busiest by total time waited).
const REPORTED_WAIT_SITES: usize = 20;

/// Traces the target the command line names and writes the report.
pub fn run(mut cli: Cli) -> Result<()> {
    match cli.subcommand.take() {
        Some(Command::Diff { old, new, format }) => {
            let diff = crate::report::diff::run(&old, &new)?;
            let out = match format {
                crate::cli::DiffFormat::Text => diff.to_text(),
                crate::cli::DiffFormat::Json => diff.to_json(),
            };
            write_out(None, None, out.as_bytes())?;
            return match diff.is_worse() {
                true => Err(crate::report::diff::Worse.into()),
                false => Ok(()),
            };
        }
        Some(Command::Record(args)) => {
            let (cli, recording) = args.into_trace();
            return trace(cli, Some(&recording));
        }
        Some(Command::Report(args)) => return report_recording(&args),
        Some(Command::Agent(args)) => return crate::agent::run::run(&args),
        None => {}
    }
    trace(cli, None)
}

/// A one-shot trace, also written to `recording` when given (`leaktrace record`).
fn trace(cli: Cli, recording: Option<&std::path::Path>) -> Result<()> {
    let format = cli.report_format()?;
    let flag = if recording.is_some() {
        "--report"
    } else {
        "-o"
    };
    check_not_binary_to_terminal(
        format,
        cli.output.is_some(),
        std::io::stdout().is_terminal(),
        flag,
    )?;
    // Bad rules fail before tracing, with the line.
    let ignore = cli
        .ignore
        .as_deref()
        .map(crate::report::ignore::IgnoreRules::load)
        .transpose()?;
    // Fail on an unwritable output before spending a whole trace on it.
    let output = create_output(cli.output.as_deref())?;
    let recorder = recording
        .map(|path| Recorder::create(path).map(Recorder::shared))
        .transpose()?;
    attach::check_privileges()?;

    let mut target = match cli.pid {
        Some(pid) => Target::existing(pid)?,
        None => Target::start(&cli.command)?,
    };
    let mut probes = attach::Probes::load_with(target.pid, &cli.trace.probes())?;
    target.release()?;
    let info = TargetInfo {
        pid: target.pid,
        comm: procfs::comm(target.pid),
        exe: procfs::exe(target.pid),
        // A target that already exited has no namespaces to read; the trace says it exited.
        container: procfs::root::container_view(target.pid).ok().flatten(),
    };
    check_format_fits_target(format, &info)?;
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
        tap: recorder.as_ref().map(Recorder::tap).unwrap_or_default(),
        status_line: true,
        ..cli.trace.settings(cli.duration)
    };
    if let Some(recorder) = &recorder {
        recorder
            .lock()
            .expect("not poisoned yet")
            .header(&replay::Header {
                format: replay::FORMAT_NAME.into(),
                format_version: replay::FORMAT_VERSION,
                leaktrace_version: env!("CARGO_PKG_VERSION").into(),
                target: info.clone(),
                settings: RecordedSettings {
                    min_blocked_ns: settings.min_blocked_ns,
                    stack_after_ns: cli.trace.probes().long_wait_ns,
                    max_frames: settings.max_frames,
                    duration_ns: cli.duration.map(|d| d.as_nanos() as u64),
                    reported_wait_sites: REPORTED_WAIT_SITES,
                },
            });
    }
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

    let slowest_goroutine_read =
        outcome
            .slowest_goroutine_read
            .map(|(elapsed, goroutines)| GoroutineRead {
                elapsed_ns: elapsed.as_nanos() as u64,
                goroutines,
            });
    let tracer = |usage: libc::rusage| TracerInfo {
        max_rss_kb: usage.ru_maxrss as u64,
        cpu_ns: cpu_ns(&usage.ru_utime) + cpu_ns(&usage.ru_stime),
        probes: attached.clone(),
        notes: notes.clone(),
        slowest_goroutine_read,
        goroutine_read_setup_ns: outcome.goroutine_read_setup.map(|d| d.as_nanos() as u64),
        detail: Some(cli.trace.detail),
        windows: outcome.windows,
    };
    // A recording that could not be written fails the run, after the report is out.
    let recorded = recorder.map_or(Ok(()), |recorder| {
        recorder
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .finish(replay::Trailer {
                end: outcome.end,
                started_ns: outcome.started_ns,
                ended_ns: outcome.ended_ns,
                started_unix_ns: Some(crate::clock::monotonic_to_realtime(outcome.started_ns)),
                events: 0,
                tracer: tracer(own_usage()),
            })
    });
    let rendered = render(
        Traced::of(&outcome, info, settings.min_blocked_ns),
        // Measured after the analysis, which it includes.
        || tracer(own_usage()),
        format,
        ignore.as_ref(),
    )?;
    write_out(output, cli.output.as_deref(), &rendered)?;
    recorded
}

/// Refuses a binary report bound for a terminal (unreadable bytes that can upset it), before
/// any tracing; a pipe or a redirect is fine. `flag` names the option that writes to a file.
fn check_not_binary_to_terminal(
    format: Format,
    to_file: bool,
    stdout_is_terminal: bool,
    flag: &str,
) -> Result<()> {
    if format == Format::Pprof && !to_file && stdout_is_terminal {
        bail!(
            "--format pprof is binary (a gzipped protobuf) and stdout is a terminal: write it \
             to a file with {flag} FILE.pb.gz, or pipe or redirect stdout"
        );
    }
    Ok(())
}

/// Refuses a format the target cannot give (a goroutine dump of a program that is not Go)
/// once the target is known and before the trace is spent on it. A Go program that cannot be
/// read is left to the trace, whose notes say why.
fn check_format_fits_target(format: Format, target: &TargetInfo) -> Result<()> {
    if format != Format::Goroutines {
        return Ok(());
    }
    let exe = procfs::root::exe(target.pid);
    match crate::goruntime::is_go_executable(&exe) {
        Ok(false) => bail!(
            "--format goroutines needs a Go program: pid {} ({}, {}) is not a Go program (its \
             executable has no Go build information); use --format text, json or another format",
            target.pid,
            target.comm,
            target.exe
        ),
        Ok(true) | Err(_) => Ok(()),
    }
}

/// What a report is made of, live or replayed.
struct Traced<'a> {
    model: &'a Model,
    target: TargetInfo,
    started_ns: u64,
    ended_ns: u64,
    end: EndReason,
    min_blocked_ns: u64,
    reported_wait_sites: usize,
    /// When the trace started, wall clock (ns since the Unix epoch), where known.
    started_unix_ns: Option<u64>,
}

impl<'a> Traced<'a> {
    /// A live trace's outcome, as the one-shot run and the agent report it.
    fn of(outcome: &'a collect::Outcome, target: TargetInfo, min_blocked_ns: u64) -> Self {
        Traced {
            model: &outcome.model,
            target,
            started_ns: outcome.started_ns,
            ended_ns: outcome.ended_ns,
            end: outcome.end,
            min_blocked_ns,
            reported_wait_sites: REPORTED_WAIT_SITES,
            started_unix_ns: Some(crate::clock::monotonic_to_realtime(outcome.started_ns)),
        }
    }
}

/// The report of one agent interval: the same analysis as a one-shot trace's ([`report_of`]),
/// with leaktrace's own resource use, `notes` (the probes', the target's, the trace's) and the
/// `--ignore` rules applied.
pub fn build_report(
    info: TargetInfo,
    probes: Vec<String>,
    mut notes: Vec<String>,
    outcome: &collect::Outcome,
    min_blocked_ns: u64,
    detail: crate::attach::Detail,
    ignore: Option<&IgnoreRules>,
) -> Report {
    if outcome.end == EndReason::Interrupted {
        notes.push("interrupted: reporting what was seen until then".into());
    }
    report_of(
        Traced::of(outcome, info, min_blocked_ns),
        || {
            let usage = own_usage();
            TracerInfo {
                max_rss_kb: usage.ru_maxrss as u64,
                cpu_ns: cpu_ns(&usage.ru_utime) + cpu_ns(&usage.ru_stime),
                probes,
                notes,
                slowest_goroutine_read: outcome.slowest_goroutine_read.map(
                    |(elapsed, goroutines)| GoroutineRead {
                        elapsed_ns: elapsed.as_nanos() as u64,
                        goroutines,
                    },
                ),
                goroutine_read_setup_ns: outcome.goroutine_read_setup.map(|d| d.as_nanos() as u64),
                detail: Some(detail),
                windows: outcome.windows,
            }
        },
        ignore,
    )
}

/// Analyses and renders: the one path from a model to a report, so that a replay renders what
/// the live run rendered.
fn render(
    traced: Traced,
    tracer: impl FnOnce() -> TracerInfo,
    format: Format,
    ignore: Option<&IgnoreRules>,
) -> Result<Vec<u8>> {
    let model = traced.model;
    let mut report = report_of(traced, tracer, ignore);
    if matches!(format, Format::Goroutines | Format::Pprof) {
        report.keep_goroutine_snapshot(model);
    }
    report.render(format)
}

/// The analysis of a traced model (live, replayed or an agent interval) made into a report,
/// `--ignore` rules applied: the one place a model becomes a report.
fn report_of(
    traced: Traced,
    tracer: impl FnOnce() -> TracerInfo,
    ignore: Option<&IgnoreRules>,
) -> Report {
    let analysis = analyze::analyze(
        traced.model,
        traced.ended_ns,
        traced.min_blocked_ns,
        traced.reported_wait_sites,
    );
    let mut report = Report::new(
        traced.target,
        tracer(),
        analysis,
        traced.ended_ns.saturating_sub(traced.started_ns),
        traced.end == EndReason::TargetExited,
        traced.min_blocked_ns,
    );
    if let Some(rules) = ignore {
        report.apply_ignore_rules(rules);
    }
    report.started_unix_ns = traced.started_unix_ns;
    report
}

/// `leaktrace report FILE`: the report of a recording.
fn report_recording(args: &ReplayArgs) -> Result<()> {
    let format = args.report_format()?;
    check_not_binary_to_terminal(
        format,
        args.output.is_some(),
        std::io::stdout().is_terminal(),
        "-o",
    )?;
    let ignore = args.ignore.as_deref().map(IgnoreRules::load).transpose()?;
    let output = create_output(args.output.as_deref())?;
    let replay = replay::load(&args.recording)?;
    let cut_short = replay.cut_short.clone();
    let rendered = render_replay(replay, format, ignore.as_ref())?;
    write_out(output, args.output.as_deref(), &rendered)?;
    // As gzip -d does with a truncated file: what was there is out, and the exit status says
    // it is not all (the report's notes say so too).
    match cut_short {
        Some(why) => bail!("{}: {why}", args.recording.display()),
        None => Ok(()),
    }
}

/// The report of the recording at `path`, as `leaktrace report` renders it (one cut short:
/// the report of its events up to the cut, which its notes say).
pub fn render_recording(
    path: &std::path::Path,
    format: Format,
    ignore: Option<&IgnoreRules>,
) -> Result<Vec<u8>> {
    render_replay(replay::load(path)?, format, ignore)
}

fn render_replay(
    replay: replay::Replay,
    format: Format,
    ignore: Option<&IgnoreRules>,
) -> Result<Vec<u8>> {
    let replay::Replay {
        header,
        model,
        trailer,
        ..
    } = replay;
    render(
        Traced {
            model: &model,
            target: header.target,
            started_ns: trailer.started_ns,
            ended_ns: trailer.ended_ns,
            end: trailer.end,
            min_blocked_ns: header.settings.min_blocked_ns,
            reported_wait_sites: header.settings.reported_wait_sites,
            started_unix_ns: trailer.started_unix_ns,
        },
        || trailer.tracer,
        format,
        ignore,
    )
}

/// The report file `-o` names, created now so that an unwritable path fails before any work.
fn create_output(path: Option<&std::path::Path>) -> Result<Option<File>> {
    path.map(|path| {
        File::create(path).with_context(|| format!("cannot write the report to {}", path.display()))
    })
    .transpose()
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
pub fn own_usage() -> libc::rusage {
    // SAFETY: getrusage fills the struct; all zeroes is a valid rusage (plain integers).
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above; RUSAGE_SELF is always valid.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    usage
}

pub fn cpu_ns(time: &libc::timeval) -> u64 {
    time.tv_sec as u64 * 1_000_000_000 + time.tv_usec as u64 * 1_000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pprof_is_refused_for_a_terminal_only() {
        let err = check_not_binary_to_terminal(Format::Pprof, false, true, "-o").unwrap_err();
        let err = err.to_string();
        assert!(err.contains("-o FILE.pb.gz"), "{err}");
        assert!(err.contains("stdout is a terminal"), "{err}");
        // A pipe, a redirect or a file is where pprof bytes belong.
        assert!(check_not_binary_to_terminal(Format::Pprof, false, false, "-o").is_ok());
        assert!(check_not_binary_to_terminal(Format::Pprof, true, true, "-o").is_ok());
        assert!(check_not_binary_to_terminal(Format::Text, false, true, "-o").is_ok());
        let err = check_not_binary_to_terminal(Format::Pprof, false, true, "--report").unwrap_err();
        assert!(err.to_string().contains("--report FILE.pb.gz"), "{err}");
    }

    #[test]
    fn a_goroutine_dump_of_a_program_that_is_not_go_is_refused_before_tracing() {
        // This test binary is Rust: no Go build information.
        let me = TargetInfo {
            pid: std::process::id(),
            comm: procfs::comm(std::process::id()),
            exe: procfs::exe(std::process::id()),
            container: None,
        };
        let err = check_format_fits_target(Format::Goroutines, &me).unwrap_err();
        let err = err.to_string();
        assert!(err.contains("is not a Go program"), "{err}");
        assert!(err.contains(&format!("pid {}", me.pid)), "{err}");
        for other in [Format::Text, Format::Json, Format::Pprof, Format::Html] {
            assert!(check_format_fits_target(other, &me).is_ok());
        }
    }
}
