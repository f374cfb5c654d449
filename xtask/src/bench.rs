//! `cargo xtask bench`: what tracing costs the target and the rest of the host. Each workload is
//! run untraced, untraced again, and traced (started by leaktrace, `-- CMD`), rotating the order,
//! several times in the same run; the workload times its own loop, so attaching and reporting are
//! not counted. Results are medians, the traced/untraced ratio, and the untraced/untraced ratio
//! (the noise floor: a traced ratio inside it says nothing). Machines here are noisy, so only
//! ratios from one run mean anything.
//!
//! The host part runs workloads in processes leaktrace does NOT trace, while leaktrace traces an
//! idle process: what every other process on the host pays while leaktrace is on.
use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context as _, Result};

mod compare;
#[path = "bench/detail.rs"]
mod detail;

/// Runs of each variant; the median is reported.
const REPETITIONS: usize = 7;

/// How a workload is built from tests/fixtures.
enum Build {
    /// `NAME.c` with gcc.
    C(&'static str),
    /// `go/DIR` with the newest Go toolchain scripts/setup-go.sh installed.
    Go(&'static str),
}

struct Workload {
    name: &'static str,
    build: Build,
    args: &'static [&'static str],
    /// What one unit of work is, to report a per-operation cost.
    ops: u64,
    op_name: &'static str,
}

const WORKLOADS: &[Workload] = &[
    Workload {
        name: "futex loop (FUTEX_WAIT returning EAGAIN + FUTEX_WAKE, no sleeping)",
        build: Build::C("bench/futex_loop"),
        args: &["2000000"],
        ops: 2_000_000,
        op_name: "futex call",
    },
    Workload {
        name: "mutex/condvar ping-pong between two threads",
        build: Build::C("pingpong_healthy"),
        args: &["200000"],
        ops: 200_000,
        op_name: "round trip",
    },
    Workload {
        name: "thread spawn: create + join, one thread after another",
        build: Build::C("bench/spawn_threads"),
        args: &["20000"],
        ops: 20_000,
        op_name: "thread",
    },
    Workload {
        name: "epoll: eventfd write + epoll_wait + read",
        build: Build::C("bench/epoll_rounds"),
        args: &["500000"],
        ops: 500_000,
        op_name: "round",
    },
    Workload {
        name: "Go: channel ping-pong between two goroutines",
        build: Build::Go("bench/pingpong"),
        args: &["1000000"],
        ops: 1_000_000,
        op_name: "round trip",
    },
    Workload {
        name: "Go: spawn storm, 1e6 short goroutines",
        build: Build::Go("bench/spawn"),
        args: &["1000000"],
        ops: 1_000_000,
        op_name: "goroutine",
    },
    Workload {
        name: "Go: timer-heavy, AfterFunc+Stop and NewTimer+Stop",
        build: Build::Go("bench/timers"),
        args: &["2000000"],
        ops: 2_000_000,
        op_name: "round (two timers)",
    },
    Workload {
        name: "Go: loopback HTTP server, 8 clients, 40k requests",
        build: Build::Go("bench/server"),
        args: &["40000"],
        ops: 40_000,
        op_name: "request",
    },
];

/// Goroutines parked for the snapshot measurement.
const PARKED_GOROUTINES: &str = "100000";

#[derive(Default)]
struct Run {
    elapsed_ns: u64,
    /// From the traced run's report.
    events_sent: u64,
    lost: u64,
    rss_kb: u64,
    /// leaktrace's own CPU time and the trace's length, from the traced run's report.
    tracer_cpu_ns: u64,
    trace_ns: u64,
}

/// Workloads run in a process leaktrace does not trace (the host part).
const HOST_WORKLOADS: &[Workload] = &[
    Workload {
        name: "another process's futex loop (FUTEX_WAIT EAGAIN + FUTEX_WAKE)",
        build: Build::C("bench/futex_loop"),
        args: &["2000000"],
        ops: 2_000_000,
        op_name: "futex call",
    },
    Workload {
        name: "another process's getppid loop (a syscall leaktrace never probes)",
        build: Build::C("bench/getppid_loop"),
        args: &["5000000"],
        ops: 5_000_000,
        op_name: "syscall",
    },
];

/// Medians of `REPETITIONS` runs of each variant, the variants rotated so that warm-up and
/// drift hit all alike.
fn measure<const N: usize>(
    variants: [&mut dyn FnMut() -> Result<Run>; N],
) -> Result<[Vec<Run>; N]> {
    let mut runs: [Vec<Run>; N] = std::array::from_fn(|_| Vec::new());
    for i in 0..REPETITIONS {
        for k in 0..N {
            let v = (i + k) % N;
            runs[v].push(variants[v]()?);
        }
    }
    Ok(runs)
}

fn print_ratios(workload: &Workload, untraced: &[Run], again: &[Run], traced: &[Run]) -> u64 {
    let base = median(untraced.iter().map(|r| r.elapsed_ns));
    let noise = median(again.iter().map(|r| r.elapsed_ns));
    let with = median(traced.iter().map(|r| r.elapsed_ns));
    let per_op = (with as f64 - base as f64) / workload.ops as f64;
    println!("{}", workload.name);
    println!(
        "  untraced {:>8.1} ms   traced {:>8.1} ms   ratio {:.3} ({:+.1}%)   noise floor (untraced/untraced) {:.3}; added {:.0} ns per {}",
        base as f64 / 1e6,
        with as f64 / 1e6,
        with as f64 / base as f64,
        (with as f64 / base as f64 - 1.0) * 100.0,
        noise as f64 / base as f64,
        per_op,
        workload.op_name,
    );
    with
}

/// Runs every workload whose name contains `only` (all when None; "host", "goroutines" and
/// "compare" select those parts).
pub fn run(leaktrace: &Path, root: &Path, work: &Path, only: Option<&str>) -> Result<()> {
    let fixtures = &root.join("tracer-user/tests/fixtures");
    let wanted = |name: &str| only.is_none_or(|only| name.contains(only));
    println!(
        "leaktrace bench: {REPETITIONS} untraced, {REPETITIONS} more untraced (noise floor) and {REPETITIONS} traced runs of each workload, rotating; medians\n"
    );
    for workload in WORKLOADS.iter().filter(|w| wanted(w.name)) {
        let binary = match workload.build {
            Build::C(name) => compile(fixtures, work, name)?,
            Build::Go(dir) => compile_go(root, work, dir)?,
        };
        let [untraced, again, traced] = measure([
            &mut || run_untraced(&binary, workload, work),
            &mut || run_untraced(&binary, workload, work),
            &mut || run_traced(leaktrace, &binary, workload, work),
        ])?;
        let with = print_ratios(workload, &untraced, &again, &traced);
        let events: u64 = median(traced.iter().map(|r| r.events_sent));
        let lost: u64 = traced.iter().map(|r| r.lost).sum();
        let rss = traced.iter().map(|r| r.rss_kb).max().unwrap_or(0);
        let cpu_per_s = median(
            traced
                .iter()
                .map(|r| (r.tracer_cpu_ns as f64 / (r.trace_ns.max(1) as f64 / 1e9)) as u64),
        );
        println!(
            "  {} events handled per traced run ({:.0}/s of workload time); {} lost in all runs; tracer peak RSS {} MiB; tracer CPU {:.1} ms per second of trace\n",
            events,
            events as f64 / (with as f64 / 1e9),
            lost,
            rss / 1024,
            cpu_per_s as f64 / 1e6,
        );
    }
    if wanted("host") {
        host_cost(leaktrace, fixtures, work)?;
    }
    if wanted("detail") {
        detail::target_cost(leaktrace, root, work)?;
    }
    if wanted("goroutines") {
        goroutine_snapshot(leaktrace, root, work)?;
    }
    if wanted("compare") {
        compare::run(leaktrace, root, work)?;
    }
    Ok(())
}

/// What processes leaktrace does not trace pay while it traces another one: each host workload
/// untraced (no leaktrace running), again, while a `--detail low` leaktrace traces an idle
/// `sleep` between its probe windows and inside its first one, and while a `--detail full` one
/// does.
fn host_cost(leaktrace: &Path, fixtures: &Path, work: &Path) -> Result<()> {
    println!("The rest of the host: workloads in processes leaktrace does not trace, while it traces an idle process (low: between probe windows; full: probes attached)\n");
    for workload in HOST_WORKLOADS {
        let Build::C(name) = workload.build else {
            bail!("host workloads are C programs");
        };
        let binary = compile(fixtures, work, name)?;
        let [untraced, again, low, inside, full] = measure([
            &mut || run_untraced(&binary, workload, work),
            &mut || run_untraced(&binary, workload, work),
            &mut || detail::run_between_windows(leaktrace, &binary, workload, work),
            &mut || detail::run_inside_a_window(leaktrace, &binary, workload, work),
            &mut || run_beside_a_trace(leaktrace, &binary, workload, work),
        ])?;
        println!("  --detail low, between probe windows:");
        print_ratios(workload, &untraced, &again, &low);
        println!("  --detail low, inside a probe window (raw sys_enter/sys_exit attached):");
        print_ratios(workload, &untraced, &again, &inside);
        println!("  --detail full:");
        print_ratios(workload, &untraced, &again, &full);
        println!();
    }
    detail::window_host_cost(leaktrace, work)?;
    Ok(())
}

/// Runs the workload while leaktrace traces an idle `sleep` (started once its probes are
/// attached: it says so on stderr), then ends that trace with SIGINT.
fn run_beside_a_trace(
    leaktrace: &Path,
    binary: &Path,
    workload: &Workload,
    work: &Path,
) -> Result<Run> {
    let mut tracer = Command::new(leaktrace)
        .args(["--detail", "full", "--format", "json", "-o"])
        .arg(work.join("report-idle.json"))
        .args(["--", "sleep", "600"])
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot start leaktrace")?;
    let mut stderr = BufReader::new(tracer.stderr.take().context("stderr")?);
    let mut line = String::new();
    while !line.contains("tracing pid") {
        line.clear();
        if stderr.read_line(&mut line)? == 0 {
            bail!("leaktrace ended before attaching");
        }
    }
    let run = run_untraced(binary, workload, work);
    // SAFETY: kill has no memory preconditions; the pid is our child's.
    unsafe { libc::kill(tracer.id() as i32, libc::SIGINT) };
    // Keep draining stderr so that leaktrace never blocks writing its status line.
    std::io::copy(&mut stderr, &mut std::io::sink())?;
    let status = tracer.wait()?;
    if !status.success() {
        bail!("leaktrace tracing an idle process failed: {status}");
    }
    run
}

/// How long reading every goroutine of a process with 100k parked goroutines takes, from the
/// report of a trace of it (the target is not paused: each goroutine is read on its own).
fn goroutine_snapshot(leaktrace: &Path, root: &Path, work: &Path) -> Result<()> {
    let binary = compile_go(root, work, "bench/parked")?;
    let mut child = Command::new(&binary)
        .arg(PARKED_GOROUTINES)
        .stdout(Stdio::piped())
        .spawn()?;
    let mut ready = String::new();
    BufReader::new(child.stdout.take().context("stdout")?).read_line(&mut ready)?;
    let report_path = work.join("report-parked.json");
    let output = Command::new(leaktrace)
        .args(["--pid", &child.id().to_string(), "--duration", "3s"])
        .args(["--format", "json", "-o"])
        .arg(&report_path)
        .output();
    let _ = child.kill();
    let _ = child.wait();
    let output = output?;
    if !output.status.success() {
        bail!(
            "leaktrace failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&report_path)?)?;
    let read = &report["tracer"]["slowest_goroutine_read"];
    let ms = |ns: &serde_json::Value| ns.as_u64().unwrap_or(0) as f64 / 1e6;
    // leaktrace's user+system CPU (getrusage, start-up and report included) per second traced.
    let trace_s = report["duration_ns"].as_u64().unwrap_or(0) as f64 / 1e9;
    let cpu_per_s = ms(&report["tracer"]["cpu_ns"]) / trace_s.max(1e-9);
    println!(
        "Go: reading all goroutines of a process with {PARKED_GOROUTINES} parked: slowest of {} reads {:.1} ms for {} goroutines (target not paused); one-time setup at attach {:.1} ms (runtime layout, line table, symbols); leaktrace CPU {cpu_per_s:.0} ms per second of trace",
        report["goroutines"]["snapshots"],
        ms(&read["elapsed_ns"]),
        read["goroutines"],
        ms(&report["tracer"]["goroutine_read_setup_ns"]),
    );
    Ok(())
}

/// The newest Go toolchain in .cache/go (installed by scripts/setup-go.sh).
fn newest_go(root: &Path) -> Result<PathBuf> {
    let cache = root.join(".cache/go");
    let mut versions: Vec<(Vec<u32>, PathBuf)> = std::fs::read_dir(&cache)
        .with_context(|| {
            format!(
                "no Go toolchains in {}: run scripts/setup-go.sh",
                cache.display()
            )
        })?
        .filter_map(|entry| entry.ok())
        .filter_map(|entry| {
            let version = entry
                .file_name()
                .to_string_lossy()
                .split('.')
                .map(|part| part.parse().ok())
                .collect::<Option<Vec<u32>>>()?;
            let go = entry.path().join("venv/bin/go");
            go.is_file().then_some((version, go))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, go)| go).with_context(|| {
        format!(
            "no Go toolchain in {}: run scripts/setup-go.sh",
            cache.display()
        )
    })
}

fn compile_go(root: &Path, work: &Path, dir: &str) -> Result<PathBuf> {
    let binary = work.join(dir.replace('/', "-"));
    let cache = root.join(".cache");
    let status = Command::new(newest_go(root)?)
        .args(["build", "-o"])
        .arg(&binary)
        .arg(format!("./{dir}"))
        .current_dir(root.join("tracer-user/tests/fixtures/go"))
        .env("GOTOOLCHAIN", "local")
        .env("GOFLAGS", "-mod=mod")
        .env("GOCACHE", cache.join("go-build"))
        .env("GOPATH", cache.join("gopath"))
        .status()
        .context("cannot run go")?;
    if !status.success() {
        bail!("building {dir} failed");
    }
    Ok(binary)
}

fn compile(fixtures: &Path, work: &Path, name: &str) -> Result<PathBuf> {
    let binary = work.join(name.replace('/', "-"));
    let status = Command::new("gcc")
        .args(["-O2", "-g", "-fno-omit-frame-pointer", "-pthread", "-o"])
        .arg(&binary)
        .arg(fixtures.join(format!("{name}.c")))
        .status()
        .context("cannot run gcc")?;
    if !status.success() {
        bail!("compiling {name} failed");
    }
    Ok(binary)
}

fn read_elapsed(path: &Path) -> Result<u64> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("the workload wrote no result to {}", path.display()))?;
    text.trim()
        .parse()
        .with_context(|| format!("bad result {text:?}"))
}

fn run_untraced(binary: &Path, workload: &Workload, work: &Path) -> Result<Run> {
    let result = work.join("result-untraced");
    let status = Command::new(binary)
        .args(workload.args)
        .arg(&result)
        .status()?;
    if !status.success() {
        bail!("{} failed: {status}", binary.display());
    }
    Ok(Run {
        elapsed_ns: read_elapsed(&result)?,
        ..Run::default()
    })
}

fn run_traced(leaktrace: &Path, binary: &Path, workload: &Workload, work: &Path) -> Result<Run> {
    let result = work.join("result-traced");
    let report_path = work.join("report.json");
    let output = Command::new(leaktrace)
        .args(["--format", "json", "-o"])
        .arg(&report_path)
        .arg("--")
        .arg(binary)
        .args(workload.args)
        .arg(&result)
        .output()?;
    if !output.status.success() {
        bail!(
            "leaktrace failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&report_path)?)
        .context("leaktrace wrote no JSON report")?;
    Ok(Run {
        elapsed_ns: read_elapsed(&result)?,
        events_sent: report["counters"]["events_sent"].as_u64().unwrap_or(0),
        lost: report["lost_events"].as_u64().unwrap_or(0),
        rss_kb: report["tracer"]["max_rss_kb"].as_u64().unwrap_or(0),
        tracer_cpu_ns: report["tracer"]["cpu_ns"].as_u64().unwrap_or(0),
        trace_ns: report["duration_ns"].as_u64().unwrap_or(0),
    })
}

fn median(values: impl Iterator<Item = u64>) -> u64 {
    let mut values: Vec<u64> = values.collect();
    values.sort_unstable();
    values.get(values.len() / 2).copied().unwrap_or(0)
}
