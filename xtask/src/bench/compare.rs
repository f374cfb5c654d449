//! `cargo xtask bench compare`: leaktrace side by side with what users run instead, on one Go
//! HTTP service holding 100k parked goroutines (tests/fixtures/go/bench/pprofserver, with
//! net/http/pprof) under a closed-loop load (bench/loadgen: throughput and p50/p99/max latency
//! of a cheap request on loopback). Each row watches a fresh server while the load runs; the
//! rows are rotated round after round so drift hits all alike. Rows: untraced (twice: the
//! second is the noise floor), leaktrace in its default mode and with `--detail full` (when
//! the build has the flag), `curl /debug/pprof/goroutine?debug=2` once a second,
//! `/debug/pprof/goroutineleak` once a second, and bcc's `offcputime` on the same pid.
use std::io::{BufRead as _, BufReader, Read as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};

use super::{compile_go, median, newest_go, PARKED_GOROUTINES};

/// Rounds of every row; p50/p99 and throughput are medians over rounds, max the worst.
const ROUNDS: usize = 3;
/// Load per run, after a warm-up that is not counted (connections, the tracer's first reads).
const LOAD_SECONDS: &str = "8";
const WARMUP_SECONDS: &str = "2";
const CLIENTS: &str = "8";
/// How often the pprof rows pull their profile: the alert-then-dump habit, left running.
const PULL_EVERY: Duration = Duration::from_secs(1);

#[derive(Clone, Copy, PartialEq)]
enum Row {
    Untraced,
    UntracedAgain,
    Leaktrace,
    LeaktraceFull,
    PprofGoroutine,
    PprofGoroutineLeak,
    Offcputime,
}

const ROWS: [Row; 7] = [
    Row::Untraced,
    Row::UntracedAgain,
    Row::Leaktrace,
    Row::LeaktraceFull,
    Row::PprofGoroutine,
    Row::PprofGoroutineLeak,
    Row::Offcputime,
];

/// What the load generator measured in one run.
struct Load {
    requests: u64,
    elapsed_ns: u64,
    p50_ns: u64,
    p99_ns: u64,
    max_ns: u64,
}

impl Load {
    /// Requests per second, in thousandths (a stalled server may do less than one a second).
    fn per_second_milli(&self) -> u64 {
        (self.requests as f64 * 1e3 / (self.elapsed_ns.max(1) as f64 / 1e9)) as u64
    }
}

/// One row's runs and what its observer said.
#[derive(Default)]
struct Results {
    loads: Vec<Load>,
    /// Per run: leaktrace's CPU per second of trace (ns), or the pulls' durations (ns).
    tracer_cpu_per_s: Vec<u64>,
    pulls: Vec<u64>,
    /// Why the row has no numbers (the tool could not run here), verbatim from the tool.
    failed: Option<String>,
}

struct Tools {
    leaktrace: PathBuf,
    has_detail: bool,
    server: PathBuf,
    loadgen: PathBuf,
    work: PathBuf,
}

pub(super) fn run(leaktrace: &Path, root: &Path, work: &Path) -> Result<()> {
    let status = Command::new("bash")
        .arg(root.join("scripts/setup-bench-tools.sh"))
        .status()
        .context("cannot run scripts/setup-bench-tools.sh")?;
    if !status.success() {
        bail!("scripts/setup-bench-tools.sh failed: {status}");
    }
    let go = newest_go(root)?;
    let go_version = String::from_utf8_lossy(&Command::new(&go).arg("version").output()?.stdout)
        .trim()
        .to_string();
    let help = Command::new(leaktrace).arg("--help").output()?;
    let tools = Tools {
        leaktrace: leaktrace.to_path_buf(),
        // Whether the build has `--detail low|full` (issue 9): before it, the default is
        // today's full tracing and the `--detail full` row has nothing to run.
        has_detail: String::from_utf8_lossy(&help.stdout).contains("--detail"),
        server: compile_go(root, work, "bench/pprofserver")?,
        loadgen: compile_go(root, work, "bench/loadgen")?,
        work: work.to_path_buf(),
    };
    println!(
        "Side by side: a Go HTTP service ({go_version}) holding {PARKED_GOROUTINES} parked goroutines, {CLIENTS} closed-loop clients on loopback, {WARMUP_SECONDS} s warm-up + {LOAD_SECONDS} s measured per run, {ROUNDS} rounds of every row, rotating; a fresh server per run\n"
    );
    let mut results: Vec<Results> = ROWS.iter().map(|_| Results::default()).collect();
    for round in 0..ROUNDS {
        for k in 0..ROWS.len() {
            let index = (round + k) % ROWS.len();
            let row = ROWS[index];
            let result = &mut results[index];
            if result.failed.is_some() || (row == Row::LeaktraceFull && !tools.has_detail) {
                continue;
            }
            run_row(&tools, row, result)?;
        }
    }
    print_table(&tools, &results);
    Ok(())
}

/// Starts a fresh server, the row's observer, the load; stops them; adds the run to `result`.
fn run_row(tools: &Tools, row: Row, result: &mut Results) -> Result<()> {
    let mut server = Server::start(&tools.server)?;
    let outcome = observe_load(tools, row, &server, result);
    server.stop();
    outcome
}

fn observe_load(tools: &Tools, row: Row, server: &Server, result: &mut Results) -> Result<()> {
    match row {
        Row::Untraced | Row::UntracedAgain => {
            result.loads.push(load(tools, server)?);
        }
        Row::Leaktrace | Row::LeaktraceFull => {
            let mut command = Command::new(&tools.leaktrace);
            command.args(["--pid", &server.pid().to_string()]);
            // Each row names its mode, whatever the default is.
            if row == Row::LeaktraceFull {
                command.args(["--detail", "full"]);
            } else if tools.has_detail {
                command.args(["--detail", "low"]);
            }
            let report_path = tools.work.join("report-compare.json");
            command
                .args(["--format", "json", "-o"])
                .arg(&report_path)
                .stdout(Stdio::null())
                .stderr(Stdio::piped());
            let mut tracer = command.spawn().context("cannot start leaktrace")?;
            let mut stderr = BufReader::new(tracer.stderr.take().context("stderr")?);
            let mut line = String::new();
            while !line.contains("tracing pid") {
                line.clear();
                if stderr.read_line(&mut line)? == 0 {
                    let _ = tracer.wait();
                    bail!("leaktrace ended before attaching to the comparison server");
                }
            }
            // Drain stderr meanwhile, so that leaktrace never blocks writing its status line.
            let drain =
                std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
            let measured = load(tools, server);
            // SAFETY: kill has no memory preconditions; the pid is our child's.
            unsafe { libc::kill(tracer.id() as i32, libc::SIGINT) };
            let status = tracer.wait()?;
            let _ = drain.join();
            let measured = measured?;
            if !status.success() {
                bail!("leaktrace tracing the comparison server failed: {status}");
            }
            let report: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(&report_path)?)
                    .context("leaktrace wrote no JSON report")?;
            let cpu = report["tracer"]["cpu_ns"].as_u64().unwrap_or(0);
            let trace_ns = report["duration_ns"].as_u64().unwrap_or(0).max(1);
            result
                .tracer_cpu_per_s
                .push((cpu as f64 / (trace_ns as f64 / 1e9)) as u64);
            result.loads.push(measured);
        }
        Row::PprofGoroutine | Row::PprofGoroutineLeak => {
            let path = if row == Row::PprofGoroutine {
                "/debug/pprof/goroutine?debug=2"
            } else {
                "/debug/pprof/goroutineleak?debug=1"
            };
            let url = format!("http://{}{path}", server.addr);
            let stop = Arc::new(AtomicBool::new(false));
            let puller = {
                let stop = stop.clone();
                std::thread::spawn(move || pull_every_second(&url, &stop))
            };
            let measured = load(tools, server);
            stop.store(true, Ordering::Relaxed);
            let pulls = puller
                .join()
                .map_err(|_| anyhow::anyhow!("the pprof puller panicked"))??;
            result.loads.push(measured?);
            result.pulls.extend(pulls);
        }
        Row::Offcputime => match Offcputime::start(server.pid())? {
            Ok(mut tool) => {
                let measured = load(tools, server);
                tool.stop();
                result.loads.push(measured?);
            }
            Err(why) => result.failed = Some(why),
        },
    }
    Ok(())
}

/// Pulls `url` with curl, one pull a second, never two at once (a dump that takes longer than
/// a second delays the next); returns each completed pull's duration (ns). A pull still going
/// when the load ends is stopped, not waited for.
fn pull_every_second(url: &str, stop: &AtomicBool) -> Result<Vec<u64>> {
    let mut took = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let start = Instant::now();
        let mut curl = Command::new("curl")
            .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", url])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("cannot run curl")?;
        let status = loop {
            if let Some(status) = curl.try_wait()? {
                break status;
            }
            if stop.load(Ordering::Relaxed) {
                let _ = curl.kill();
                let _ = curl.wait();
                return Ok(took);
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let output = curl.wait_with_output()?;
        let code = String::from_utf8_lossy(&output.stdout);
        if !status.success() || code.trim() != "200" {
            bail!(
                "curl {url}: HTTP {code} {}",
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        took.push(start.elapsed().as_nanos() as u64);
        let next = start + PULL_EVERY;
        while Instant::now() < next && !stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    Ok(took)
}

/// The comparison server, killed when the run ends.
struct Server {
    child: Child,
    addr: String,
}

impl Server {
    fn start(binary: &Path) -> Result<Server> {
        let mut child = Command::new(binary)
            .arg(PARKED_GOROUTINES)
            .stdout(Stdio::piped())
            .spawn()
            .context("cannot start the comparison server")?;
        let mut ready = String::new();
        BufReader::new(child.stdout.take().context("stdout")?).read_line(&mut ready)?;
        let Some(addr) = ready.trim().strip_prefix("READY ") else {
            let _ = child.kill();
            let _ = child.wait();
            bail!("the comparison server did not start: {ready:?}");
        };
        Ok(Server {
            addr: addr.to_string(),
            child,
        })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn load(tools: &Tools, server: &Server) -> Result<Load> {
    let output = Command::new(&tools.loadgen)
        .arg(format!("http://{}/", server.addr))
        .args([CLIENTS, WARMUP_SECONDS, LOAD_SECONDS])
        .output()
        .context("cannot run the load generator")?;
    if !output.status.success() {
        bail!(
            "the load generator failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let text = String::from_utf8_lossy(&output.stdout);
    let words: Vec<&str> = text.split_whitespace().collect();
    let field = |name: &str| -> Result<u64> {
        let at = words
            .iter()
            .position(|w| *w == name)
            .with_context(|| format!("no {name} in the load generator's output {text:?}"))?;
        words
            .get(at + 1)
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("bad {name} in {text:?}"))
    };
    Ok(Load {
        requests: field("requests")?,
        elapsed_ns: field("elapsed_ns")?,
        p50_ns: field("p50_ns")?,
        p99_ns: field("p99_ns")?,
        max_ns: field("max_ns")?,
    })
}

/// bcc's offcputime on the server's pid, until stopped with SIGINT.
struct Offcputime {
    child: Child,
}

impl Offcputime {
    /// The running tool once it says it is tracing, or (inner Err) why it could not run here:
    /// the last lines it printed before exiting.
    fn start(pid: u32) -> Result<std::result::Result<Offcputime, String>> {
        let mut child = Command::new("offcputime-bpfcc")
            .args(["-p", &pid.to_string()])
            // bcc prints "Tracing off-CPU time..." once attached; unbuffered, so it arrives.
            .env("PYTHONUNBUFFERED", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("cannot start offcputime-bpfcc (scripts/setup-bench-tools.sh)")?;
        let stdout = child.stdout.take().context("stdout")?;
        let mut stderr = child.stderr.take().context("stderr")?;
        let (lines, attached) = mpsc::channel();
        // Everything it printed on stdout, for when it fails (libbcc says why there).
        let printed = std::thread::spawn(move || {
            let mut printed = Vec::new();
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.starts_with("Tracing") {
                    let _ = lines.send(());
                }
                printed.push(line);
            }
            printed
        });
        match attached.recv_timeout(Duration::from_secs(60)) {
            Ok(()) => {
                // Keep draining stderr so that the tool never blocks on it.
                std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
                Ok(Ok(Offcputime { child }))
            }
            Err(_) => {
                let _ = child.kill();
                let status = child.wait()?;
                let mut text = printed.join().unwrap_or_default().join("\n");
                text.push('\n');
                let _ = stderr.read_to_string(&mut text);
                // bcc's own messages, without the Python traceback around them.
                let said: Vec<&str> = text
                    .lines()
                    .map(str::trim_end)
                    .filter(|l| !l.is_empty() && !l.starts_with(' ') && !l.starts_with("Traceback"))
                    .collect();
                let mut why = format!("exited with {status}: {}", said.join(" / "));
                if !Path::new("/sys/bus/event_source/devices/kprobe").exists() {
                    why.push_str(
                        "; with headers it would still fail: it attaches a kprobe on \
                         finish_task_switch, and this kernel has no kprobes \
                         (no /sys/bus/event_source/devices/kprobe)",
                    );
                }
                Ok(Err(why))
            }
        }
    }

    fn stop(&mut self) {
        // SAFETY: kill has no memory preconditions; the pid is our child's.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let _ = self.child.wait();
    }
}

fn print_table(tools: &Tools, results: &[Results]) {
    let base = median(results[0].loads.iter().map(Load::per_second_milli)).max(1);
    println!("| row | requests/s | throughput vs untraced | p50 | p99 | max | notes |");
    println!("|---|---|---|---|---|---|---|");
    for (row, result) in ROWS.iter().zip(results) {
        let name = match row {
            Row::Untraced => "untraced".to_string(),
            Row::UntracedAgain => "untraced again (noise floor)".to_string(),
            Row::Leaktrace if tools.has_detail => {
                "leaktrace `--detail low` (the default)".to_string()
            }
            Row::Leaktrace => {
                "leaktrace (default; this build has no `--detail`: full tracing)".to_string()
            }
            Row::LeaktraceFull => "leaktrace `--detail full`".to_string(),
            Row::PprofGoroutine => {
                "`curl /debug/pprof/goroutine?debug=2` once a second".to_string()
            }
            Row::PprofGoroutineLeak => {
                "`curl /debug/pprof/goroutineleak` once a second".to_string()
            }
            Row::Offcputime => "bcc `offcputime-bpfcc -p PID`".to_string(),
        };
        if let Some(why) = &result.failed {
            println!("| {name} | | | | | | could not run here: {why} |");
            continue;
        }
        if result.loads.is_empty() {
            println!("| {name} | | | | | | not run: this leaktrace has no `--detail` flag |");
            continue;
        }
        let per_second = median(result.loads.iter().map(Load::per_second_milli));
        let p50 = median(result.loads.iter().map(|l| l.p50_ns));
        let p99 = median(result.loads.iter().map(|l| l.p99_ns));
        let max = result.loads.iter().map(|l| l.max_ns).max().unwrap_or(0);
        let note = if !result.tracer_cpu_per_s.is_empty() {
            format!(
                "leaktrace CPU {:.0} ms per second of trace",
                median(result.tracer_cpu_per_s.iter().copied()) as f64 / 1e6
            )
        } else if !result.pulls.is_empty() {
            format!(
                "{} pulls, each {:.0} ms (median), {:.0} ms (max)",
                result.pulls.len(),
                median(result.pulls.iter().copied()) as f64 / 1e6,
                result.pulls.iter().copied().max().unwrap_or(0) as f64 / 1e6
            )
        } else {
            String::new()
        };
        println!(
            "| {name} | {:.1} | ×{:.3} | {} | {} | {} | {note} |",
            per_second as f64 / 1e3,
            per_second as f64 / base as f64,
            millis(p50),
            millis(p99),
            millis(max),
        );
    }
    println!();
}

fn millis(ns: u64) -> String {
    format!("{:.2} ms", ns as f64 / 1e6)
}
