//! Command-line interface. Keep it stable: scripts depend on these flags.
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Readable at a glance: worst candidates first, stacks as `function (file:line)`.
    Text,
    /// Machine-readable; fields are only ever added.
    Json,
    /// gzipped pprof profile (`go tool pprof`, Pyroscope, Parca): one sample per group,
    /// goroutine/count and blocked/nanoseconds, labels kind, wait_reason, creation_site,
    /// verdict, score.
    Pprof,
    /// Go targets: every goroutine in the runtime's own traceback text (like a SIGQUIT or
    /// debug=2 dump), read without stopping the world.
    Goroutines,
    /// Collapsed stacks (`root;...;leaf count`) of stuck threads and goroutines.
    Folded,
    /// An SVG flame graph of the stuck threads and goroutines.
    Flamegraph,
    /// One self-contained HTML page: candidates, stacks, charts, flame graph.
    Html,
}

impl Cli {
    /// --format, else the format -o's extension names, else text (see [`report_format`]).
    pub fn report_format(&self) -> anyhow::Result<Format> {
        report_format(self.format, self.output.as_deref())
    }
}

/// The extensions a report file may have without --format, and the format each asks for.
/// Text is also written to a file without an extension (`-o report`, `-o /dev/stdout`).
const EXTENSIONS: &[(&str, Format)] = &[
    (".txt", Format::Text),
    (".text", Format::Text),
    (".log", Format::Text),
    (".json", Format::Json),
    (".pb.gz", Format::Pprof),
    // What `go test -cpuprofile` and most pprof tooling name the same gzipped profile.proto.
    (".pprof", Format::Pprof),
    (".prof", Format::Pprof),
    (".folded", Format::Folded),
    (".svg", Format::Flamegraph),
    (".html", Format::Html),
    (".htm", Format::Html),
];

/// `--format` if given, else the format the report file's extension names, else (no file)
/// text. Errors, before any tracing, on a file whose extension names no format: text written
/// to `x.pprof` or `x.json.bak` is not what was asked for, and `x.gz` alone would be a gzip
/// file that is not one (only pprof is written gzipped: `.pb.gz`).
pub fn report_format(
    format: Option<Format>,
    output: Option<&std::path::Path>,
) -> anyhow::Result<Format> {
    let (Some(path), None) = (output, format) else {
        return Ok(format.unwrap_or(Format::Text));
    };
    Format::from_extension(path).ok_or_else(|| {
        // Grouped by format, in the order of --format's values.
        let known: Vec<String> = Format::value_variants()
            .iter()
            .filter_map(|format| {
                let exts: Vec<&str> = EXTENSIONS
                    .iter()
                    .filter(|(_, f)| f == format)
                    .map(|(ext, _)| *ext)
                    .collect();
                let name = format.to_possible_value()?;
                let none = if *format == Format::Text {
                    " or none"
                } else {
                    ""
                };
                (!exts.is_empty()).then(|| format!("{}: {}{none}", name.get_name(), exts.join(" ")))
            })
            .collect();
        anyhow::anyhow!(
            "cannot tell the report format from the file name {}: the extensions leaktrace knows \
             are {}; or give --format",
            path.display(),
            known.join("; ")
        )
    })
}

impl Format {
    /// The format a report file's name asks for ([`EXTENSIONS`]; no extension: text), None
    /// when its extension names none.
    pub fn from_extension(path: &std::path::Path) -> Option<Format> {
        let name = path.file_name()?.to_str()?.to_ascii_lowercase();
        // A leading dot starts a hidden file's name, not an extension.
        if !name.trim_start_matches('.').contains('.') {
            return Some(Format::Text);
        }
        EXTENSIONS
            .iter()
            .find(|(ext, _)| name.ends_with(ext))
            .map(|&(_, format)| format)
    }
}

/// `leaktrace diff --format`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DiffFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Compare two JSON reports (--format json) of the same program: candidates and goroutine
    /// groups that are new, grown, shrunk, resolved or unchanged, matched by their fingerprint
    /// (kind, creation site and blocking site: stable across runs and restarts).
    ///
    /// Exit status, as diff(1)'s: 0 when no candidate is new or grown (candidates suppressed
    /// by --ignore rules aside), 1 when one is, 2 when the reports cannot be compared.
    ///
    /// Example: leaktrace diff before.json after.json
    Diff {
        /// The earlier report.
        old: PathBuf,
        /// The later report.
        new: PathBuf,
        /// `json`: one object with the lists `new`, `grown`, `shrunk`, `resolved`, `unchanged`
        /// (and `warning` for reports of different programs), for CI.
        #[arg(long, value_enum, default_value = "text")]
        format: DiffFormat,
    },
    /// Trace like a one-shot run and also write everything the analysis was fed to a recording
    /// (gzip-compressed JSON lines: the events, the goroutine snapshots, the settings), to
    /// analyse again later with `leaktrace report FILE`. The report of the trace is written
    /// as usual (stdout, or --report FILE). --min-blocked, --stack-after and --max-frames are
    /// recorded (the replay's analysis uses --min-blocked), and the recording's report says
    /// which --detail.
    ///
    /// Example: sudo leaktrace record -o trace.jsonl.gz --pid 4242 --duration 10s
    Record(Box<RecordArgs>),
    /// Analyse a recording again (`leaktrace record`) and write its report: the report the
    /// recorded run gave, except the tracer's own CPU time and peak RSS, which are those of the
    /// recorded trace. Needs no root.
    ///
    /// Example: leaktrace report trace.jsonl.gz --format json -o report.json
    Report(ReplayArgs),
    /// Stay running as an agent: trace every process the selectors name (picking up new ones
    /// and dropping gone ones), in consecutive intervals, and serve what each interval found
    /// to Prometheus at /metrics and as full reports at /report?pid=N.
    ///
    /// Example: sudo leaktrace agent --listen 127.0.0.1:9464 --comm server --interval 30s
    Agent(Box<AgentArgs>),
}

/// `leaktrace record`: the tracing options of a one-shot run, `-o` naming the recording.
#[derive(Debug, clap::Args)]
// As for the main command: clap's own line reads as if --pid were needed with `-- COMMAND` too.
#[command(
    override_usage = "leaktrace record -o <FILE> [OPTIONS] --pid <PID>\n       leaktrace record -o <FILE> [OPTIONS] -- <COMMAND>..."
)]
pub struct RecordArgs {
    /// Write the recording to this file (gzip-compressed JSON lines; checked before tracing).
    #[arg(short = 'o', long, value_name = "FILE")]
    pub output: PathBuf,

    /// Write the report of the trace to this file instead of stdout.
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,

    /// Report format (as for a one-shot run). Default: from --report's extension, else text.
    #[arg(long, value_enum)]
    pub format: Option<Format>,

    /// Suppression rules for the report (as for a one-shot run; not part of the recording).
    #[arg(long, value_name = "FILE")]
    pub ignore: Option<PathBuf>,

    /// Trace this running process.
    #[arg(
        long,
        value_name = "PID",
        conflicts_with = "command",
        required_unless_present = "command"
    )]
    pub pid: Option<u32>,

    /// Stop after this long (as for a one-shot run).
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub duration: Option<Duration>,

    /// As for a one-shot run (recorded: see the command's description).
    #[command(flatten)]
    pub trace: TraceOptions,

    /// Start this command and trace it (as for a one-shot run).
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

impl RecordArgs {
    /// The one-shot run this recording is taken from, and the recording's path.
    pub fn into_trace(self) -> (Cli, PathBuf) {
        let cli = Cli {
            subcommand: None,
            pid: self.pid,
            duration: self.duration,
            trace: self.trace,
            format: self.format,
            output: self.report,
            ignore: self.ignore,
            command: self.command,
        };
        (cli, self.output)
    }
}

/// `leaktrace report FILE`.
#[derive(Debug, clap::Args)]
pub struct ReplayArgs {
    /// The recording (`leaktrace record -o FILE`).
    pub recording: PathBuf,

    /// Report format. Default: from the -o file's extension, else text.
    #[arg(long, value_enum)]
    pub format: Option<Format>,

    /// Write the report to this file instead of stdout.
    #[arg(short = 'o', long, value_name = "FILE")]
    pub output: Option<PathBuf>,

    /// Suppression rules (as for a one-shot run).
    #[arg(long, value_name = "FILE")]
    pub ignore: Option<PathBuf>,
}

impl ReplayArgs {
    /// --format, else the format -o's extension names, else text (see [`report_format`]).
    pub fn report_format(&self) -> anyhow::Result<Format> {
        report_format(self.format, self.output.as_deref())
    }
}

/// `leaktrace agent`'s options (see `agent` for what they do).
#[derive(Debug, Clone, clap::Args)]
#[command(group(
    clap::ArgGroup::new("selectors")
        .required(true)
        .multiple(true)
        .args(["pid", "comm", "exe", "cgroup", "all_go"])
))]
pub struct AgentArgs {
    /// Serve /metrics (Prometheus text format), /report?pid=N and / here.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9464")]
    pub listen: std::net::SocketAddr,

    /// Watch this process while it lives (repeatable).
    #[arg(long, value_name = "PID")]
    pub pid: Vec<u32>,

    /// Watch processes named NAME (/proc/PID/comm), following restarts (repeatable).
    #[arg(long, value_name = "NAME")]
    pub comm: Vec<String>,

    /// Watch processes running this executable, following restarts (repeatable).
    #[arg(long, value_name = "PATH")]
    pub exe: Vec<PathBuf>,

    /// Watch the processes of this cgroup (v2 path as in /proc/PID/cgroup) and below, e.g. a
    /// container or pod (repeatable).
    #[arg(long, value_name = "PATH")]
    pub cgroup: Vec<String>,

    /// Watch every Go process on the host.
    #[arg(long)]
    pub all_go: bool,

    /// Each target is traced in consecutive intervals this long; at the end of each, its
    /// report is analysed and published (at least 2s).
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_interval)]
    pub interval: Duration,

    /// How often the selectors are evaluated again (new and gone processes).
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_rescan)]
    pub rescan: Duration,

    /// Write every interval's JSON report to DIR/<comm>-<pid>-<unix seconds>.json.
    #[arg(long, value_name = "DIR")]
    pub report_dir: Option<PathBuf>,

    /// Reports kept in --report-dir per target; older ones are removed.
    #[arg(long, value_name = "N", default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..))]
    pub report_keep: u32,

    /// As for a one-shot trace: suppression rules (suppressed candidates stay in /report but
    /// are left out of the metrics).
    #[arg(long, value_name = "FILE")]
    pub ignore: Option<PathBuf>,

    /// How each interval is traced, as for a one-shot trace.
    #[command(flatten)]
    pub trace: TraceOptions,
}

/// The shortest interval: analysing needs a few goroutine snapshots (one a second) and
/// thread scans to judge anything.
pub const MIN_INTERVAL: Duration = Duration::from_secs(2);

fn parse_rescan(text: &str) -> Result<Duration, String> {
    let rescan = humantime::parse_duration(text).map_err(|e| e.to_string())?;
    if rescan < Duration::from_millis(100) {
        return Err("a rescan period must be at least 100ms".into());
    }
    Ok(rescan)
}

fn parse_interval(text: &str) -> Result<Duration, String> {
    let interval = humantime::parse_duration(text).map_err(|e| e.to_string())?;
    if interval < MIN_INTERVAL {
        return Err(format!(
            "an interval must be at least {}",
            humantime::format_duration(MIN_INTERVAL)
        ));
    }
    Ok(interval)
}

/// Find what is stuck in a live process: deadlocked threads, threads waiting on a condition
/// nobody signals, leaked threads, event loops that never wake, timerfds that never fire, and,
/// in Go programs, leaked goroutines, with their stacks, how long, and whether they pile up.
///
/// leaktrace attaches eBPF probes that act only for the one process traced: thread creation and
/// exit all the time, and its futex, epoll and timerfd system calls in short probe windows
/// (`--detail low`, the default: the rest of the host pays nothing between windows; `--detail
/// full` watches them for the whole trace). It reads the target's threads from /proc and, for a
/// Go program, every goroutine from the Go runtime in its memory about once a second. The
/// target is not stopped, restarted or modified, and every probe is removed when leaktrace
/// exits, also on Ctrl-C and on errors. Needs root (or CAP_BPF, CAP_PERFMON and
/// CAP_SYS_PTRACE).
///
/// The report lists leak candidates worst first, each with the reasons for its score.
///
/// Examples:
///   sudo leaktrace --pid 4242                      # trace until Ctrl-C, then report
///   sudo leaktrace --pid 4242 --duration 30s --format json -o report.json
///   sudo leaktrace --duration 10s -- ./server --port 8080
///   sudo leaktrace --pid 4242 --duration 10s -o leaks.html      # format from the extension
///   sudo leaktrace --pid 4242 --duration 10s -o goroutines.pb.gz && go tool pprof -top -sample_index=goroutine goroutines.pb.gz
///   sudo leaktrace --pid 4242 --duration 5s --format goroutines # like a SIGQUIT dump
///   leaktrace diff before.json after.json
///   sudo leaktrace agent --comm server --listen 127.0.0.1:9464   # always on, for Prometheus
#[derive(Debug, Parser)]
#[command(
    name = "leaktrace",
    version,
    verbatim_doc_comment,
    // clap's own line reads as if --pid were needed with `-- COMMAND` too.
    override_usage = "leaktrace [OPTIONS] --pid <PID>\n       leaktrace [OPTIONS] -- <COMMAND>...\n       leaktrace <SUBCOMMAND> ...",
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub subcommand: Option<Command>,

    /// Trace this running process.
    #[arg(
        long,
        value_name = "PID",
        conflicts_with = "command",
        required_unless_present = "command"
    )]
    pub pid: Option<u32>,

    /// Stop after this long (e.g. 500ms, 10s, 2m). Default: until Ctrl-C, SIGTERM, or the
    /// target exits. The report is printed in every case.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub duration: Option<Duration>,

    /// How the target is traced (shared with `record` and `agent`).
    #[command(flatten)]
    pub trace: TraceOptions,

    /// Report format. Default: from the -o file's extension (.txt/.text/.log or none text,
    /// .json, .pb.gz/.pprof/.prof pprof, .folded, .svg flame graph, .html/.htm); another
    /// extension is refused before tracing unless --format is given.
    #[arg(long, value_enum)]
    pub format: Option<Format>,

    /// Write the report to this file instead of stdout (checked before tracing starts).
    #[arg(short = 'o', long, value_name = "FILE")]
    pub output: Option<PathBuf>,

    /// Suppression rules: candidates they match are marked as suppressed, with the rule, and
    /// listed after the others (never dropped). One rule a line, conditions joined by ` & `:
    /// `kind K`, `function F` (any frame of the blocking or creation stack), `top-function F`
    /// (innermost frame outside the Go runtime/standard library, like goleak's
    /// IgnoreTopFunction), `blocking-function F`, `creation-function F`, `wait-reason R`;
    /// `F*` matches a prefix; `#` starts a comment. Example:
    ///   kind goroutine_leak & top-function net/http.(*persistConn).readLoop
    #[arg(long, value_name = "FILE", verbatim_doc_comment)]
    pub ignore: Option<PathBuf>,

    /// Start this command and trace it from its first instruction (it is held before exec
    /// until the probes are attached). When the trace ends, the command is sent SIGTERM, then
    /// SIGKILL after 2 s if it is still running. The command shares leaktrace's stdout and
    /// stderr: use -o to keep the report apart from its output.
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

/// The options of how a target is traced, the same for a one-shot run, `record` and each of the
/// agent's intervals; [`TraceOptions::settings`] and [`TraceOptions::probes`] turn them into
/// the collector's and the probes' settings.
#[derive(Debug, Clone, clap::Args)]
pub struct TraceOptions {
    /// A thread blocked (or a goroutine staying at one place) at least this long can be
    /// reported as stuck.
    /// Shorter waits are normal activity and only appear in the summaries.
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = humantime::parse_duration)]
    pub min_blocked: Duration,

    /// Waits that complete after at least this long have their stacks captured (each capture
    /// costs the target about a microsecond, so short waits never pay for one).
    #[arg(long, value_name = "DURATION", default_value = "10ms", value_parser = humantime::parse_duration)]
    pub stack_after: Duration,

    /// How long syscalls are watched. `low`: in short probe windows (the first 2 s, then
    /// 250 ms at most every 5 s and at most 5% of the time; less often under a storm of events;
    /// one when a new stuck thread shows up), the rest from /proc and the target's memory:
    /// other processes pay nothing between windows, so this is the mode to leave running on a
    /// shared host, and the default. `full`: every probe for the whole trace (every wait and
    /// wake counted, every completed wait in the histograms; every process on the host pays for
    /// the syscall tracepoints meanwhile): for a short investigation (README, "Cost and detail").
    #[arg(long, value_enum, default_value = "low")]
    pub detail: crate::attach::Detail,

    /// Deepest user stack taken from a blocked thread.
    #[arg(long, value_name = "N", default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=512))]
    pub max_frames: u32,

    /// The probes write to stderr (lines starting `leaktrace: probe log`) what their counters
    /// cannot say: why a Go probe window closes (a storm of hits, its stack budget spent, with
    /// the numbers), the first record of each kind the ring buffer had no room for (its kind
    /// and size), the first clash of two threads over one call slot. Off by default: the
    /// logging code is then dropped by the kernel's verifier and costs the target nothing.
    #[arg(long)]
    pub debug_probes: bool,
}

impl TraceOptions {
    /// The collector's settings for a trace of `duration` (None: until stopped), with no tap
    /// and no status line.
    pub fn settings(&self, duration: Option<Duration>) -> crate::collect::Settings {
        crate::collect::Settings {
            duration,
            min_blocked_ns: self.min_blocked.as_nanos() as u64,
            max_frames: self.max_frames as usize,
            tap: Default::default(),
            status_line: false,
        }
    }

    /// What the probes are loaded with.
    pub fn probes(&self) -> crate::attach::ProbeOptions {
        crate::attach::ProbeOptions {
            long_wait_ns: self.stack_after.as_nanos() as u64,
            detail: self.detail,
            debug_probes: self.debug_probes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn pid_or_command_is_required_and_not_both() {
        assert!(Cli::try_parse_from(["leaktrace"]).is_err());
        assert!(Cli::try_parse_from(["leaktrace", "--pid", "1", "--", "true"]).is_err());
        let cli =
            Cli::try_parse_from(["leaktrace", "--duration", "2s", "--", "sleep", "5"]).unwrap();
        assert_eq!(cli.command, vec!["sleep", "5"]);
        assert_eq!(cli.duration, Some(Duration::from_secs(2)));
        assert_eq!(cli.trace.min_blocked, Duration::from_secs(1));
    }

    #[test]
    fn detail_is_low_unless_full_is_asked_for() {
        let parse = |args: &[&str]| Cli::try_parse_from(args).map(|cli| cli.trace.detail);
        assert_eq!(
            parse(&["leaktrace", "--pid", "1"]).unwrap(),
            crate::attach::Detail::Low
        );
        assert_eq!(
            parse(&["leaktrace", "--pid", "1", "--detail", "full"]).unwrap(),
            crate::attach::Detail::Full
        );
        assert!(parse(&["leaktrace", "--pid", "1", "--detail", "some"]).is_err());
    }

    #[test]
    fn the_format_follows_the_output_extension_unless_given() {
        let parse = |args: &[&str]| {
            Cli::try_parse_from(["leaktrace", "--pid", "1"].iter().chain(args)).unwrap()
        };
        let format = |args: &[&str]| parse(args).report_format().unwrap();
        assert_eq!(format(&[]), Format::Text);
        assert_eq!(format(&["-o", "r.pb.gz"]), Format::Pprof);
        assert_eq!(format(&["-o", "cpu.pprof"]), Format::Pprof);
        assert_eq!(format(&["-o", "R.HTML"]), Format::Html);
        assert_eq!(format(&["-o", "f.svg"]), Format::Flamegraph);
        for text in [
            "r.txt",
            "r.text",
            "run.LOG",
            "report",
            "/dev/stdout",
            "dir.d/.report",
        ] {
            assert_eq!(format(&["-o", text]), Format::Text, "{text}");
        }
        let explicit = parse(&["-o", "r.json", "--format", "goroutines"]);
        assert_eq!(explicit.report_format().unwrap(), Format::Goroutines);
        assert_eq!(
            format(&["-o", "x.pb", "--format", "pprof"]),
            Format::Pprof,
            "--format names what an unknown extension cannot"
        );
    }

    #[test]
    fn an_output_extension_that_names_no_format_is_refused_with_the_known_ones() {
        // `x.gz` alone is no format: leaktrace gzips pprof only, and text in a .gz file is a
        // gzip file that is not one.
        for unknown in ["x.pb", "x.txt.bak", "x.gz", "report.2024-01-01"] {
            let cli = Cli::try_parse_from(["leaktrace", "--pid", "1", "-o", unknown]).unwrap();
            let err = cli.report_format().expect_err(unknown).to_string();
            assert!(err.contains(&format!("file name {unknown}")), "{err}");
            for known in [
                "text: .txt .text .log or none;",
                "json: .json;",
                "pprof: .pb.gz .pprof .prof;",
                "flamegraph: .svg;",
            ] {
                assert!(err.contains(known), "{err}");
            }
            assert!(err.contains("--format"), "{err}");
            // The same for `record --report` and `report -o`.
            let record = Cli::try_parse_from([
                "leaktrace",
                "record",
                "-o",
                "t.jsonl.gz",
                "--report",
                unknown,
                "--pid",
                "1",
            ])
            .unwrap();
            let Some(Command::Record(args)) = record.subcommand else {
                panic!("record is a subcommand");
            };
            assert!(args.into_trace().0.report_format().is_err(), "{unknown}");
            let replay =
                Cli::try_parse_from(["leaktrace", "report", "t.jsonl.gz", "-o", unknown]).unwrap();
            let Some(Command::Report(args)) = replay.subcommand else {
                panic!("report is a subcommand");
            };
            assert!(args.report_format().is_err(), "{unknown}");
        }
    }

    #[test]
    fn diff_is_a_subcommand_and_tracing_needs_none() {
        let cli = Cli::try_parse_from(["leaktrace", "diff", "a.json", "b.json"]).unwrap();
        assert!(matches!(
            cli.subcommand,
            Some(Command::Diff {
                format: DiffFormat::Text,
                ..
            })
        ));
        let json = Cli::try_parse_from(["leaktrace", "diff", "a", "b", "--format", "json"]);
        assert!(matches!(
            json.unwrap().subcommand,
            Some(Command::Diff {
                format: DiffFormat::Json,
                ..
            })
        ));
        assert!(Cli::try_parse_from(["leaktrace", "diff", "a", "b", "--format", "pprof"]).is_err());
        assert!(Cli::try_parse_from(["leaktrace", "--pid", "3", "diff", "a", "b"]).is_err());
        assert!(Cli::try_parse_from(["leaktrace", "diff", "a.json"]).is_err());
        assert!(Cli::try_parse_from(["leaktrace", "--pid", "3"])
            .unwrap()
            .subcommand
            .is_none());
    }

    #[test]
    fn record_takes_the_tracing_options_and_report_a_recording() {
        let cli = Cli::try_parse_from([
            "leaktrace",
            "record",
            "-o",
            "t.jsonl.gz",
            "--duration",
            "2s",
            "--report",
            "r.json",
            "--",
            "sleep",
            "5",
        ])
        .unwrap();
        let Some(Command::Record(args)) = cli.subcommand else {
            panic!("record is a subcommand");
        };
        let (trace, recording) = args.into_trace();
        assert_eq!(recording, PathBuf::from("t.jsonl.gz"));
        assert_eq!(trace.command, vec!["sleep", "5"]);
        assert_eq!(trace.report_format().unwrap(), Format::Json);
        assert!(Cli::try_parse_from(["leaktrace", "record", "--pid", "1"]).is_err());
        assert!(
            Cli::try_parse_from(["leaktrace", "record", "-o", "t", "--pid", "1", "--", "x"])
                .is_err()
        );
        let cli =
            Cli::try_parse_from(["leaktrace", "report", "t.jsonl.gz", "-o", "r.html"]).unwrap();
        let Some(Command::Report(args)) = cli.subcommand else {
            panic!("report is a subcommand");
        };
        assert_eq!(args.report_format().unwrap(), Format::Html);
        assert!(Cli::try_parse_from(["leaktrace", "report"]).is_err());
    }

    #[test]
    fn agent_needs_a_selector_and_an_interval_of_two_seconds() {
        assert!(Cli::try_parse_from(["leaktrace", "agent"]).is_err());
        let cli =
            Cli::try_parse_from(["leaktrace", "agent", "--pid", "7", "--comm", "srv"]).unwrap();
        let Some(Command::Agent(args)) = cli.subcommand else {
            panic!("agent is a subcommand");
        };
        assert_eq!(args.pid, vec![7]);
        assert_eq!(args.comm, vec!["srv"]);
        assert_eq!(args.interval, Duration::from_secs(30));
        assert_eq!(args.rescan, Duration::from_secs(5));
        assert_eq!(args.report_keep, 20);
        assert_eq!(args.listen.to_string(), "127.0.0.1:9464");
        assert!(
            Cli::try_parse_from(["leaktrace", "agent", "--all-go", "--interval", "1s"]).is_err()
        );
        assert!(
            Cli::try_parse_from(["leaktrace", "agent", "--all-go", "--interval", "2s"]).is_ok()
        );
        assert!(Cli::try_parse_from(["leaktrace", "agent", "--all-go", "--rescan", "0s"]).is_err());
    }

    #[test]
    fn the_trace_options_are_one_set_in_every_tracing_command() {
        let options = [
            "--min-blocked",
            "3s",
            "--stack-after",
            "20ms",
            "--max-frames",
            "32",
            "--detail",
            "low",
            "--debug-probes",
        ];
        let check = |trace: &TraceOptions| {
            assert_eq!(trace.min_blocked, Duration::from_secs(3));
            assert_eq!(trace.stack_after, Duration::from_millis(20));
            assert_eq!(trace.max_frames, 32);
            assert_eq!(trace.detail, crate::attach::Detail::Low);
            assert!(trace.debug_probes);
            let settings = trace.settings(Some(Duration::from_secs(5)));
            assert_eq!(settings.min_blocked_ns, 3_000_000_000);
            assert_eq!(settings.max_frames, 32);
            assert_eq!(settings.duration, Some(Duration::from_secs(5)));
            let probes = trace.probes();
            assert_eq!(probes.long_wait_ns, 20_000_000);
            assert_eq!(probes.detail, crate::attach::Detail::Low);
            assert!(probes.debug_probes);
        };
        let with = |head: &[&'static str]| -> Cli {
            let args: Vec<&str> = head.iter().chain(&options).copied().collect();
            Cli::try_parse_from(args).unwrap()
        };
        check(&with(&["leaktrace", "--pid", "1"]).trace);
        let Some(Command::Record(args)) =
            with(&["leaktrace", "record", "-o", "t", "--pid", "1"]).subcommand
        else {
            panic!("record is a subcommand");
        };
        check(&args.trace);
        check(&args.into_trace().0.trace);
        let Some(Command::Agent(args)) = with(&["leaktrace", "agent", "--all-go"]).subcommand
        else {
            panic!("agent is a subcommand");
        };
        check(&args.trace);
        // The same bounds everywhere.
        for head in [
            &["leaktrace", "--pid", "1"][..],
            &["leaktrace", "record", "-o", "t", "--pid", "1"],
            &["leaktrace", "agent", "--all-go"],
        ] {
            let parse = |extra: &[&str]| {
                Cli::try_parse_from(head.iter().chain(extra).copied().collect::<Vec<_>>())
            };
            let defaults = parse(&[]).unwrap();
            let trace = match &defaults.subcommand {
                None => &defaults.trace,
                Some(Command::Record(args)) => &args.trace,
                Some(Command::Agent(args)) => &args.trace,
                Some(_) => unreachable!("only tracing commands here"),
            };
            assert_eq!(trace.min_blocked, Duration::from_secs(1));
            assert_eq!(trace.stack_after, Duration::from_millis(10));
            assert_eq!(trace.max_frames, 64);
            assert_eq!(trace.detail, crate::attach::Detail::Low);
            assert!(!trace.debug_probes, "the probes log only when asked to");
            assert!(parse(&["--max-frames", "0"]).is_err());
            assert!(parse(&["--max-frames", "513"]).is_err());
            assert!(parse(&["--detail", "some"]).is_err());
            assert!(parse(&["--min-blocked", "soon"]).is_err());
        }
    }

    #[test]
    fn record_usage_offers_pid_or_command_like_the_main_command() {
        let mut cli = Cli::command();
        let record = cli
            .find_subcommand_mut("record")
            .expect("record is a subcommand");
        let usage = record.render_usage().to_string();
        assert!(usage.contains("--pid <PID>\n"), "{usage}");
        assert!(
            usage.contains("record -o <FILE> [OPTIONS] -- <COMMAND>..."),
            "{usage}"
        );
        assert!(!usage.contains("--pid <PID> [-- <COMMAND>"), "{usage}");
    }

    #[test]
    fn bad_durations_are_rejected() {
        assert!(Cli::try_parse_from(["leaktrace", "--pid", "1", "--duration", "soon"]).is_err());
    }
}
