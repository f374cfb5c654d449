//! The always-on agent (`leaktrace agent`): watches the processes its selectors name, traces
//! each in consecutive intervals, and serves what it found to Prometheus.
pub mod targets;
