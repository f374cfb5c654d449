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
        let line = format!(
            "leaktrace: probe log (pid {}): {}\n",
            self.pid,
            record.args()
        );
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }

    fn flush(&self) {}
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
