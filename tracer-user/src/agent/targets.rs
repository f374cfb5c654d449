//! Which processes on the host the agent's selectors name, read from /proc.

use std::path::PathBuf;

/// What the command line asked to watch. A process matching any selector is a target.
#[derive(Clone, Debug, Default)]
pub struct Selectors {
    /// `--pid N`: these processes while they live (not followed across restarts).
    pub pids: Vec<u32>,
    /// `--comm NAME`: processes whose /proc/PID/comm is NAME (followed across restarts).
    pub comms: Vec<String>,
    /// `--exe PATH`: processes running this executable (followed across restarts).
    pub exes: Vec<PathBuf>,
    /// `--cgroup PATH`: processes in this cgroup (v2 path as in /proc/PID/cgroup) or below.
    pub cgroups: Vec<String>,
    /// `--all-go`: every Go process on the host.
    pub all_go: bool,
}

/// A process some selector names now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Found {
    pub pid: u32,
    /// The selector that matched, as the user wrote it (`pid=42`, `comm=server`, ...).
    pub selector: String,
}

/// The processes the selectors name now, by pid, each once (leaktrace itself never).
///
/// Skeleton: only `--pid` so far; the other selectors are being built.
pub fn scan(selectors: &Selectors) -> Vec<Found> {
    let me = std::process::id();
    selectors
        .pids
        .iter()
        .filter(|&&pid| pid != me && !crate::procfs::is_gone(pid))
        .map(|&pid| Found {
            pid,
            selector: format!("pid={pid}"),
        })
        .collect()
}
