//! The probes' own log lines (`--debug-probes`): what the kernel side has to say that a counter
//! cannot (why a Go probe window closes, the first record of a kind the ring buffer had no room
//! for, the first slot collision), sent with `aya-log` and written to stderr, one line each,
//! prefixed `leaktrace: probe log (pid N):`.
//!
//! Off unless asked for: then the eBPF object's `DEBUG_PROBES` and aya-log's `AYA_LOG_LEVEL`
//! globals are 0, the verifier drops the logging code, and aya-log's ring buffer is left unread.
use std::io::Write as _;

use anyhow::{Context as _, Result};
use aya::Ebpf;
use aya_log::EbpfLogger;

/// Writes the probes' log records of one traced process to stderr.
pub struct ProbeLog {
    pid: u32,
}

impl log::Log for ProbeLog {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &log::Record<'_>) {
        // One write a line, so that the lines of concurrent traces (the agent) do not mix.
        let _ = std::io::stderr()
            .lock()
            .write_all(line(self.pid, record).as_bytes());
    }

    fn flush(&self) {}
}

/// The stderr line of one record of the probes of `pid`.
fn line(pid: u32, record: &log::Record<'_>) -> String {
    format!("leaktrace: probe log (pid {pid}): {}\n", record.args())
}

/// Reads the log records of `ebpf`'s programs (which trace `pid`) from here on; they are written
/// when [`Reader::flush`] is called.
pub struct Reader(EbpfLogger<ProbeLog>);

impl Reader {
    /// Takes aya-log's ring buffer out of `ebpf` (before its programs are loaded: a program
    /// whose map fd is closed cannot load, so the reader lives as long as the programs).
    pub fn start(ebpf: &mut Ebpf, pid: u32) -> Result<Self> {
        EbpfLogger::init_with_logger(ebpf, ProbeLog { pid })
            .map(Reader)
            .context("reading the probes' log (--debug-probes)")
    }

    /// Writes the records waiting in the ring buffer.
    pub fn flush(&mut self) {
        self.0.flush();
    }
}

/// aya-log's level for the eBPF object's `AYA_LOG_LEVEL`: every level with `--debug-probes`,
/// none without.
pub fn level(debug_probes: bool) -> u8 {
    if debug_probes {
        aya_log::Level::Trace as u8
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_probe_line_names_the_traced_pid_and_is_one_line() {
        let hits = 2001;
        // The record borrows its arguments: built and used in one expression.
        let text = line(
            4242,
            &log::Record::builder()
                .args(format_args!("Go probe window: {hits} hits"))
                .level(log::Level::Info)
                .target("tracer_ebpf::go")
                .build(),
        );
        assert_eq!(
            text,
            "leaktrace: probe log (pid 4242): Go probe window: 2001 hits\n"
        );
    }

    #[test]
    fn the_probes_log_at_every_level_only_when_asked_to() {
        assert_eq!(level(false), 0);
        assert_eq!(level(true), aya_log::Level::Trace as u8);
    }
}
