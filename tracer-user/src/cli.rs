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
    /// --format, else the format -o's extension names, else text.
    pub fn report_format(&self) -> Format {
        self.format
            .or_else(|| self.output.as_deref().and_then(Format::from_extension))
            .unwrap_or(Format::Text)
    }
}

impl Format {
    /// The format a report file's name asks for, where the extension is unambiguous.
    pub fn from_extension(path: &std::path::Path) -> Option<Format> {
        let name = path.file_name()?.to_str()?.to_ascii_lowercase();
        [
            (".pb.gz", Format::Pprof),
            (".svg", Format::Flamegraph),
            (".html", Format::Html),
            (".htm", Format::Html),
            (".folded", Format::Folded),
            (".json", Format::Json),
            (".txt", Format::Text),
        ]
        .into_iter()
        .find(|(ext, _)| name.ends_with(ext))
        .map(|(_, format)| format)
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Compare two JSON reports (--format json) of the same program: candidates and goroutine
    /// groups that are new, grown, shrunk, resolved or unchanged, matched by their fingerprint
    /// (kind, creation site and blocking site: stable across runs and restarts).
    ///
    /// Example: leaktrace diff before.json after.json
    Diff {
        /// The earlier report.
        old: PathBuf,
        /// The later report.
        new: PathBuf,
    },
}

/// Find what is stuck in a live process: deadlocked threads, threads waiting on a condition
/// nobody signals, leaked threads, event loops that never wake, timerfds that never fire, and,
/// in Go programs, leaked goroutines, with their stacks, how long, and whether they pile up.
///
/// leaktrace attaches eBPF probes (futex, thread creation and exit, epoll and timerfd system
/// calls) that act only for the one process traced, reads its threads from /proc, and, for a Go
/// program, reads every goroutine from the Go runtime in its memory about once a second. The
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
#[derive(Debug, Parser)]
#[command(
    name = "leaktrace",
    version,
    verbatim_doc_comment,
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

    /// A thread blocked (or a goroutine staying at one place) at least this long can be
    /// reported as stuck.
    /// Shorter waits are normal activity and only appear in the summaries.
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = humantime::parse_duration)]
    pub min_blocked: Duration,

    /// Waits that complete after at least this long have their stacks captured (each capture
    /// costs the target about a microsecond, so short waits never pay for one).
    #[arg(long, value_name = "DURATION", default_value = "10ms", value_parser = humantime::parse_duration)]
    pub stack_after: Duration,

    /// Report format. Default: from the -o file's extension (.txt, .json, .pb.gz pprof, .folded,
    /// .svg flame graph, .html), else text.
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

    /// How long the syscall tracepoints stay attached. `low`: in short probe windows (the first
    /// 2 s, then 250 ms at most every 5 s and at most 5% of the time, detaching included; less
    /// often under a storm of events; one when a new stuck thread shows up), the rest from
    /// /proc and the target's memory: other processes pay nothing between windows. `full`: every probe for the whole trace (every wait and wake
    /// counted; every process on the host pays for the syscall tracepoints meanwhile).
    #[arg(long, value_enum, default_value = "low")]
    pub detail: crate::attach::Detail,

    /// Deepest user stack taken from a blocked thread.
    #[arg(long, value_name = "N", default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=512))]
    pub max_frames: u32,

    /// Start this command and trace it from its first instruction (it is held before exec
    /// until the probes are attached). When the trace ends, the command is sent SIGTERM, then
    /// SIGKILL after 2 s if it is still running. The command shares leaktrace's stdout and
    /// stderr: use -o to keep the report apart from its output.
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<String>,
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
        assert_eq!(cli.min_blocked, Duration::from_secs(1));
    }

    #[test]
    fn detail_is_low_unless_full_is_asked_for() {
        let parse = |args: &[&str]| Cli::try_parse_from(args).map(|cli| cli.detail);
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
        assert_eq!(parse(&[]).report_format(), Format::Text);
        assert_eq!(parse(&["-o", "r.pb.gz"]).report_format(), Format::Pprof);
        assert_eq!(parse(&["-o", "R.HTML"]).report_format(), Format::Html);
        assert_eq!(parse(&["-o", "f.svg"]).report_format(), Format::Flamegraph);
        assert_eq!(parse(&["-o", "x.gz"]).report_format(), Format::Text);
        let explicit = parse(&["-o", "r.json", "--format", "goroutines"]);
        assert_eq!(explicit.report_format(), Format::Goroutines);
    }

    #[test]
    fn diff_is_a_subcommand_and_tracing_needs_none() {
        let cli = Cli::try_parse_from(["leaktrace", "diff", "a.json", "b.json"]).unwrap();
        assert!(matches!(cli.subcommand, Some(Command::Diff { .. })));
        assert!(Cli::try_parse_from(["leaktrace", "--pid", "3", "diff", "a", "b"]).is_err());
        assert!(Cli::try_parse_from(["leaktrace", "diff", "a.json"]).is_err());
        assert!(Cli::try_parse_from(["leaktrace", "--pid", "3"])
            .unwrap()
            .subcommand
            .is_none());
    }

    #[test]
    fn bad_durations_are_rejected() {
        assert!(Cli::try_parse_from(["leaktrace", "--pid", "1", "--duration", "soon"]).is_err());
    }
}
