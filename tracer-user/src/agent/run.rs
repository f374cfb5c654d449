//! The agent's loop: the HTTP server, the rescans that pick targets up, one task per target
//! tracing it interval after interval, and the shutdown on SIGTERM / Ctrl-C.
use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::{Context as _, Result};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;
use tokio::task::{JoinHandle, LocalSet};
use tokio::time::{interval, MissedTickBehavior};

use super::http::{self, lock, SharedState, Watched};
use super::metrics::{self, TargetSeries};
use super::status::{self, Status, Tracked};
use super::targets::{self, Found, Selectors};
use crate::cli::AgentArgs;
use crate::collect::{self, EndReason, Settings};
use crate::report::ignore::IgnoreRules;
use crate::report::TargetInfo;
use crate::target::Target;
use crate::{attach, procfs};

/// Statuses of targets gone, kept for a follow-up process with the same comm and executable
/// (a restart): at most this many.
const KEPT_HISTORIES: usize = 64;
/// How long the targets' tasks get to drop their probes after a SIGTERM (they drop them at
/// once, in about 3 s; the runtime waits for drops still going after this).
const STOP_GRACE: Duration = Duration::from_secs(10);

/// What identifies a followed process across restarts: its comm and executable.
type FollowKey = (String, String);

/// What every target's task needs.
struct Context {
    settings: Settings,
    /// `--stack-after`, `--detail`, ..., for every target's probes.
    probe_options: attach::ProbeOptions,
    ignore: Option<IgnoreRules>,
    report_dir: Option<PathBuf>,
    report_keep: usize,
    state: SharedState,
    stop: watch::Receiver<bool>,
    /// By (comm, exe): the statuses of a target that went, for the process that replaces it.
    histories: std::cell::RefCell<Vec<(FollowKey, Vec<Tracked>)>>,
    /// By selector: followed processes that exited and were not replaced yet (a new process
    /// of the selector picked up then is a restart).
    gone: std::cell::RefCell<HashMap<String, u64>>,
}

/// How a target's task ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum End {
    /// The target exited.
    Exited,
    /// It could not be traced (counted in `leaktrace_target_errors_total`).
    Failed,
    /// The agent is stopping.
    Stopped,
}

/// Runs the agent until SIGTERM or Ctrl-C. Fails (before tracing anything) on bad options: an
/// unreadable --ignore file, an unusable --report-dir, no privileges, an address it cannot
/// listen on.
pub fn run(args: &AgentArgs) -> Result<()> {
    let ignore = args.ignore.as_deref().map(IgnoreRules::load).transpose()?;
    if let Some(dir) = &args.report_dir {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create the report directory {}", dir.display()))?;
        let metadata = std::fs::metadata(dir)
            .with_context(|| format!("cannot use the report directory {}", dir.display()))?;
        anyhow::ensure!(
            !metadata.permissions().readonly(),
            "the report directory {} is not writable",
            dir.display()
        );
    }
    attach::check_privileges()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    LocalSet::new().block_on(&runtime, agent(args, ignore))
}

async fn agent(args: &AgentArgs, ignore: Option<IgnoreRules>) -> Result<()> {
    // From here on a SIGTERM stops the agent (it no longer ends the process).
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;
    let listener = std::net::TcpListener::bind(args.listen)
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    listener.set_nonblocking(true)?;
    let address = listener.local_addr()?;

    let selectors = Selectors {
        pids: args.pid.clone(),
        comms: args.comm.clone(),
        exes: args.exe.clone(),
        cgroups: args.cgroup.clone(),
        all_go: args.all_go,
    };
    let state = SharedState::default();
    lock(&state).selectors = describe(&selectors);
    let (stop_tx, stop_rx) = watch::channel(false);
    // The server has a thread and runtime of its own: building an interval's report holds this
    // thread for a while (seconds for a large Go target on a loaded host), and a scrape must not
    // wait for it (Prometheus gives up after its scrape_timeout and leaves a gap).
    let server = {
        let mut stop = stop_rx.clone();
        let router = http::router(state.clone());
        std::thread::Builder::new()
            .name("leaktrace-http".into())
            .spawn(move || -> std::io::Result<()> {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                runtime.block_on(async move {
                    let listener = tokio::net::TcpListener::from_std(listener)?;
                    axum::serve(listener, router)
                        .with_graceful_shutdown(async move {
                            let _ = stop.wait_for(|stop| *stop).await;
                        })
                        .await
                })
            })
            .context("starting the HTTP server's thread")?
    };
    eprintln!(
        "leaktrace agent: serving http://{address}/metrics and /report?pid=N; watching {} every {}, traced in intervals of {}",
        describe(&selectors).join(" "),
        humantime::format_duration(args.rescan),
        humantime::format_duration(args.interval),
    );

    let context = Rc::new(Context {
        settings: args.trace.settings(Some(args.interval)),
        probe_options: args.trace.probes(),
        ignore,
        report_dir: args.report_dir.clone(),
        report_keep: args.report_keep as usize,
        state: state.clone(),
        stop: stop_rx,
        histories: Default::default(),
        gone: Default::default(),
    });
    // By pid: the selector that picked it, and its task.
    let mut tasks: HashMap<u32, (String, JoinHandle<End>)> = HashMap::new();
    // Pids that could not be traced: not tried again while they live.
    let mut failed: BTreeSet<u32> = BTreeSet::new();
    let mut rescan = interval(args.rescan);
    rescan.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = rescan.tick() => {}
            _ = sigterm.recv() => break,
            _ = sigint.recv() => break,
        }
        // The tasks that ended since the last rescan: an exited followed process may be replaced now.
        let finished: Vec<u32> = tasks
            .iter()
            .filter(|(_, (_, task))| task.is_finished())
            .map(|(&pid, _)| pid)
            .collect();
        for pid in finished {
            let (_, task) = tasks.remove(&pid).expect("listed above");
            if task.await.unwrap_or(End::Failed) == End::Failed {
                failed.insert(pid);
            }
        }
        failed.retain(|&pid| !procfs::is_gone(pid));
        // Selectors whose process exited but whose task has not seen it yet (it does at its
        // trace's next exit check): a process they name now is picked up at the next rescan,
        // once that task has counted it gone and left its statuses, so that a quick restart
        // (a service manager starts the new process within milliseconds) counts as one and
        // continues the statuses instead of racing the old task.
        let exiting: BTreeSet<&str> = tasks
            .iter()
            .filter(|(&pid, _)| procfs::is_gone(pid))
            .map(|(_, (selector, _))| selector.as_str())
            .collect();
        let mut picked = Vec::new();
        for found in targets::scan(&selectors) {
            if tasks.contains_key(&found.pid)
                || failed.contains(&found.pid)
                || exiting.contains(found.selector.as_str())
            {
                continue;
            }
            picked.push(found);
        }
        for found in picked {
            if let Some(waiting) = context
                .gone
                .borrow_mut()
                .get_mut(&found.selector)
                .filter(|n| **n > 0)
            {
                *waiting -= 1;
                *lock(&state)
                    .restarts
                    .entry(found.selector.clone())
                    .or_default() += 1;
            }
            let pid = found.pid;
            let selector = found.selector.clone();
            let task = tokio::task::spawn_local(watch_target(context.clone(), found));
            tasks.insert(pid, (selector, task));
        }
    }

    eprintln!("leaktrace agent: stopping; detaching every probe");
    let _ = stop_tx.send(true);
    let waiting = async {
        for (_, (_, task)) in tasks.drain() {
            let _ = task.await;
        }
    };
    if tokio::time::timeout(STOP_GRACE, waiting).await.is_err() {
        eprintln!("leaktrace agent: a target's task did not stop in time");
    }
    // Connections a scraper keeps alive are closed by the graceful shutdown; a client in the
    // middle of a slow read does not hold the agent up for long (the server's thread ends with
    // the process; joining it is not waited for, as dropping a runtime waits for blocking work).
    let closing = async {
        while !server.is_finished() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    if tokio::time::timeout(Duration::from_secs(2), closing)
        .await
        .is_err()
    {
        eprintln!("leaktrace agent: an HTTP connection did not close in time");
    }
    eprintln!("leaktrace agent: stopped");
    Ok(())
}

/// The selectors as the user wrote them.
fn describe(selectors: &Selectors) -> Vec<String> {
    let mut out: Vec<String> = selectors
        .pids
        .iter()
        .map(|p| format!("--pid {p}"))
        .collect();
    out.extend(selectors.comms.iter().map(|c| format!("--comm {c}")));
    out.extend(
        selectors
            .exes
            .iter()
            .map(|e| format!("--exe {}", e.display())),
    );
    out.extend(selectors.cgroups.iter().map(|c| format!("--cgroup {c}")));
    if selectors.all_go {
        out.push("--all-go".into());
    }
    out
}

/// Counts a trace that failed, with a line on stderr; the agent goes on.
fn failed(context: &Context, pid: u32, reason: &str, err: &anyhow::Error) -> End {
    eprintln!("leaktrace agent: pid {pid}: {reason}: {err:#}");
    *lock(&context.state)
        .errors
        .entry(reason.to_string())
        .or_default() += 1;
    End::Failed
}

/// Traces one target interval after interval until it exits or the agent stops; its probes
/// are dropped (detached) when this returns.
async fn watch_target(context: Rc<Context>, found: Found) -> End {
    let pid = found.pid;
    let mut target = match Target::existing(pid) {
        Ok(target) => target,
        Err(err) => return failed(&context, pid, "exited at attach", &err),
    };
    // Loading and dropping probes take the kernel a while (tracepoints are registered and
    // unregistered one by one, each waiting for an RCU grace period: about 3 s to drop one
    // target's): done on the blocking pool, so that the other targets' traces and the HTTP
    // server go on meanwhile, and all targets' probes are dropped at once on a stop.
    let options = context.probe_options;
    let loaded = tokio::task::spawn_blocking(move || attach::Probes::load_with(pid, &options))
        .await
        .unwrap_or_else(|err| Err(anyhow::anyhow!("loading the probes panicked: {err}")));
    let mut probes = match loaded {
        Ok(probes) => probes,
        Err(err) => return failed(&context, pid, "probes not loaded", &err),
    };
    let container = procfs::root::container_view(pid);
    if procfs::is_gone(pid) {
        let _ = tokio::task::spawn_blocking(move || drop(probes)).await;
        return failed(
            &context,
            pid,
            "exited at attach",
            &anyhow::anyhow!("the process exited while its probes were attached"),
        );
    }
    let info = TargetInfo {
        pid,
        comm: procfs::comm(pid),
        exe: procfs::exe(pid),
        container: container.ok().flatten(),
    };
    let key = (info.comm.clone(), info.exe.clone());
    let mut tracked: Vec<Tracked> = {
        let mut histories = context.histories.borrow_mut();
        histories
            .iter()
            .position(|(k, _)| *k == key)
            .map(|at| histories.remove(at).1)
            .unwrap_or_default()
    };
    let mut series = TargetSeries {
        pid,
        comm: info.comm.clone(),
        exe: info.exe.clone(),
        selector: found.selector.clone(),
        container: info
            .container
            .as_ref()
            .and_then(|c| c.cgroup.clone())
            .unwrap_or_default(),
        ..TargetSeries::default()
    };
    lock(&context.state).targets.insert(
        pid,
        Watched {
            series: Arc::new(series.clone()),
            report: None,
        },
    );
    eprintln!(
        "leaktrace agent: watching pid {pid} ({}, {}) with {}",
        info.comm,
        found.selector,
        attach::probe_summary(&probes.attached)
    );

    let mut known_threads = Vec::new();
    let mut stop = context.stop.clone();
    let end = loop {
        if *stop.borrow() {
            break End::Stopped;
        }
        // On a stop the interval in progress is dropped, unreported: the probes go with it.
        let traced = tokio::select! {
            traced = collect::trace(&mut probes, &mut target, &context.settings) => traced,
            _ = stop.wait_for(|stop| *stop) => break End::Stopped,
        };
        let (mut outcome, trace_notes) = match traced {
            Ok(traced) => traced,
            Err(err) => break failed(&context, pid, "trace failed", &err),
        };
        outcome
            .model
            .threads
            .adopt(&known_threads, outcome.started_ns);
        known_threads = outcome.model.threads.known_creations();
        let mut notes = probes.notes.clone();
        notes.extend(crate::target::architecture_note(pid));
        notes.extend(trace_notes);
        let mut report = crate::app::build_report(
            info.clone(),
            probes.attached.clone(),
            notes,
            &outcome,
            context.settings.min_blocked_ns,
            context.probe_options.detail,
            context.ignore.as_ref(),
        );
        let end = outcome.end;
        // Low detail only: full keeps its probes attached, with no windows.
        let windows = outcome.windows.map_or(0, |w| w.count);
        drop(outcome);

        // The interval a target exited in shows its threads gone, not its leaks resolved: the
        // statuses stay as they were, for a process that replaces it.
        if end != EndReason::TargetExited {
            tracked = status::transition(&tracked, metrics::groups_of(&report));
            log_changes(pid, &info.comm, &tracked);
            status::annotate(&mut report, &tracked);
        }
        series.intervals += 1;
        series.lost_events = report.lost_events;
        series.probe_windows += windows;
        series.last = Some(metrics::interval_series(
            &report,
            &tracked,
            report.native_io.threads_alive,
        ));
        if let Some(dir) = &context.report_dir {
            let seconds = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            if let Err(err) = super::reports::write(
                dir,
                &info.comm,
                pid,
                seconds,
                &report.to_json(),
                context.report_keep,
            ) {
                eprintln!("leaktrace agent: pid {pid}: {err:#}");
            }
        }
        if let Some(watched) = lock(&context.state).targets.get_mut(&pid) {
            watched.series = Arc::new(series.clone());
            watched.report = Some(Arc::new(report));
        }
        match end {
            EndReason::Duration => {}
            EndReason::TargetExited => break End::Exited,
            EndReason::Interrupted => break End::Stopped,
        }
    };
    // The target is gone for the metrics and the rescans at once; the probes take a while.
    lock(&context.state).targets.remove(&pid);
    if end == End::Exited {
        eprintln!("leaktrace agent: pid {pid} ({}) exited", info.comm);
        if !found.selector.starts_with("pid=") {
            *context
                .gone
                .borrow_mut()
                .entry(found.selector.clone())
                .or_default() += 1;
        }
    }
    {
        let mut histories = context.histories.borrow_mut();
        tracked.retain(|t| t.status != Status::Resolved);
        if !tracked.is_empty() {
            histories.retain(|(k, _)| *k != key);
            if histories.len() >= KEPT_HISTORIES {
                histories.remove(0);
            }
            histories.push((key, tracked));
        }
    }
    let _ = tokio::task::spawn_blocking(move || drop(probes)).await;
    end
}

/// A line on stderr for each group that appeared or went.
fn log_changes(pid: u32, comm: &str, tracked: &[Tracked]) {
    for t in tracked {
        let g = &t.group;
        match t.status {
            Status::New => eprintln!(
                "leaktrace agent: pid {pid} ({comm}): new {} {} ({} member(s){}{})",
                g.kind,
                g.fingerprint,
                g.size,
                if g.blocking_function.is_empty() {
                    String::new()
                } else {
                    format!(", blocked in {}", g.blocking_function)
                },
                if g.creation_function.is_empty() {
                    String::new()
                } else {
                    format!(", created in {}", g.creation_function)
                },
            ),
            Status::Resolved => eprintln!(
                "leaktrace agent: pid {pid} ({comm}): resolved {} {}",
                g.kind, g.fingerprint
            ),
            Status::Growing | Status::Stable => {}
        }
    }
}
