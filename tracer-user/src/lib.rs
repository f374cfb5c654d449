//! The parts of leaktrace that integration tests (and later the binary) use as a library.
//! `main.rs` keeps its own modules for now; the lead moves them here when wiring them up.
pub mod goruntime;
