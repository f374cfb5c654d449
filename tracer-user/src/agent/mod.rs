//! The always-on agent (`leaktrace agent`): watches the processes its selectors name, traces
//! each in consecutive intervals, and serves what it found to Prometheus.
//!
//! Design:
//! - Each target gets its own `attach::Probes`, loaded once when the target is picked up and
//!   dropped (every probe detached) when it goes. It is traced in consecutive intervals by
//!   calling `collect::trace` with `duration = --interval` again and again; each interval
//!   starts a fresh `Model`, so the agent's memory is bounded by one interval per target,
//!   whatever its uptime. Waits in progress when an interval starts are found by the attach
//!   scan, as for a one-shot trace of a running process; threads whose creation an earlier
//!   interval saw keep their creation site (`model::threads::Threads::adopt`, as many as
//!   threads alive), so a thread leak's size is all its leaked threads.
//! - At each interval's end the report is built as a one-shot trace builds it
//!   (`app::build_report`), the candidates' statuses are updated by fingerprint
//!   ([`status`]), the metrics are published ([`metrics`]), the report is kept for /report
//!   and written to `--report-dir` ([`reports`]).
//! - Targets run concurrently on one single-threaded tokio runtime (a `LocalSet`: each trace is
//!   an async fn that waits on timers between its slices of work); the HTTP server ([`http`],
//!   axum) runs on the same runtime. The selectors are re-evaluated every `--rescan`.
//! - A target that exits, cannot be read or is not Go is an event (a counter and a line on
//!   stderr), never the agent's exit. SIGTERM / Ctrl-C stop every trace, drop every target's
//!   probes and end the agent with status 0.
pub mod http;
pub mod metrics;
pub mod reports;
pub mod run;
pub mod status;
pub mod targets;
