//! Command-line interface. Keep it stable: scripts depend on these flags.
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Readable at a glance: worst candidates first, stacks as `function (file:line)`.
    Text,
    /// Machine-readable; fields are only ever added.
    Json,
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
#[derive(Debug, Parser)]
#[command(name = "leaktrace", version, verbatim_doc_comment)]
pub struct Cli {
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

    /// A thread blocked (or a goroutine alive) at least this long can be reported as stuck.
    /// Shorter waits are normal activity and only appear in the summaries.
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = humantime::parse_duration)]
    pub min_blocked: Duration,

    /// Waits that complete after at least this long have their stacks captured (each capture
    /// costs the target about a microsecond, so short waits never pay for one).
    #[arg(long, value_name = "DURATION", default_value = "10ms", value_parser = humantime::parse_duration)]
    pub stack_after: Duration,

    /// Report format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,

    /// Write the report to this file instead of stdout (checked before tracing starts).
    #[arg(short = 'o', long, value_name = "FILE")]
    pub output: Option<PathBuf>,

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
    fn bad_durations_are_rejected() {
        assert!(Cli::try_parse_from(["leaktrace", "--pid", "1", "--duration", "soon"]).is_err());
    }
}
