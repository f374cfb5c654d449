//! The agent's HTTP side (axum): `/metrics` for Prometheus, `/report?pid=N[&format=json]` for
//! the last full report of a target, `/` an index. Handlers only read the shared state.
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use super::metrics::{self, AgentSeries, TargetSeries};
use crate::report::Report;

/// What the targets' tasks publish and the handlers read.
#[derive(Default)]
pub struct Shared {
    /// By pid: the targets watched now.
    pub targets: BTreeMap<u32, Watched>,
    /// By selector: followed processes replaced by new ones.
    pub restarts: BTreeMap<String, u64>,
    /// By reason: traces that failed.
    pub errors: BTreeMap<String, u64>,
    /// The selectors, as given (for the index).
    pub selectors: Vec<String>,
}

/// One watched target: its series and its last interval's report.
pub struct Watched {
    pub series: Arc<TargetSeries>,
    /// None until its first interval ends.
    pub report: Option<Arc<Report>>,
}

pub type SharedState = Arc<Mutex<Shared>>;

/// Locks the state; a task that panicked while holding it left plain data behind, still
/// worth serving.
pub fn lock(state: &SharedState) -> std::sync::MutexGuard<'_, Shared> {
    state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

pub fn router(state: SharedState) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/metrics", get(metrics_page))
        .route("/report", get(report_page))
        .with_state(state)
}

async fn metrics_page(State(state): State<SharedState>) -> Response {
    let mut series = {
        let shared = lock(&state);
        AgentSeries {
            targets: shared.targets.values().map(|w| w.series.clone()).collect(),
            restarts: shared.restarts.clone(),
            errors: shared.errors.clone(),
            ..AgentSeries::default()
        }
    };
    let usage = crate::app::own_usage();
    series.cpu_seconds =
        (crate::app::cpu_ns(&usage.ru_utime) + crate::app::cpu_ns(&usage.ru_stime)) as f64 / 1e9;
    series.resident_memory_bytes = ::procfs::process::Process::myself()
        .and_then(|me| me.status())
        .ok()
        .and_then(|status| status.vmrss)
        .map_or(0, |kib| kib * 1024);
    (
        [(header::CONTENT_TYPE, metrics::CONTENT_TYPE)],
        metrics::encode(series),
    )
        .into_response()
}

fn plain(status: StatusCode, text: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        text,
    )
        .into_response()
}

async fn report_page(
    State(state): State<SharedState>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let Some(pid) = query.get("pid") else {
        return plain(
            StatusCode::BAD_REQUEST,
            "give the target's pid: /report?pid=N (&format=json)\n".into(),
        );
    };
    let Ok(pid) = pid.parse::<u32>() else {
        return plain(
            StatusCode::BAD_REQUEST,
            format!("pid {pid:?} is not a process id\n"),
        );
    };
    let json = match query.get("format").map(String::as_str) {
        None | Some("text") => false,
        Some("json") => true,
        Some(other) => {
            return plain(
                StatusCode::BAD_REQUEST,
                format!("format {other:?} is not text or json\n"),
            )
        }
    };
    let report = {
        let shared = lock(&state);
        match shared.targets.get(&pid) {
            None => {
                return plain(
                    StatusCode::NOT_FOUND,
                    format!("pid {pid} is not watched by this agent (see /)\n"),
                )
            }
            Some(Watched { report: None, .. }) => {
                return plain(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("pid {pid}: first interval not finished\n"),
                )
            }
            Some(Watched {
                report: Some(report),
                ..
            }) => report.clone(),
        }
    };
    // Rendering a big report takes a while: outside the lock.
    if json {
        (
            [(header::CONTENT_TYPE, "application/json")],
            report.to_json(),
        )
            .into_response()
    } else {
        plain(StatusCode::OK, report.to_text())
    }
}

async fn index(State(state): State<SharedState>) -> Response {
    let shared = lock(&state);
    let mut out = String::from("leaktrace agent\n\n/metrics  Prometheus metrics\n");
    let _ = writeln!(out, "selectors: {}\n", shared.selectors.join(" "));
    if shared.targets.is_empty() {
        out.push_str("no target watched now\n");
    }
    for watched in shared.targets.values() {
        let t = &watched.series;
        let _ = writeln!(
            out,
            "pid {} ({}) {} [{}]: {} interval(s)  /report?pid={}  /report?pid={}&format=json",
            t.pid, t.comm, t.exe, t.selector, t.intervals, t.pid, t.pid
        );
    }
    plain(StatusCode::OK, out)
}
