//! leaktrace: finds what is stuck in a live process (deadlocked and leaked threads, leaked
//! goroutines) with eBPF probes and by reading the process from /proc, without stopping it.
//!
//! Only the edges touch the system: `attach` (eBPF), `collect` (the tracing loop), `procfs`,
//! `unwind`, `goruntime` and `symbolize`. `model` and `analyze` are pure functions of events,
//! and `report` renders. The binary (`main.rs`) parses the command line and calls [`app::run`].
pub mod agent;
pub mod analyze;
pub mod app;
pub mod attach;
pub mod cli;
pub mod clock;
pub mod collect;
pub mod goruntime;
pub mod memory;
pub mod model;
pub mod probe_log;
pub mod procfs;
pub mod replay;
pub mod report;
pub mod symbolize;
pub mod target;
pub mod units;
pub mod unwind;
