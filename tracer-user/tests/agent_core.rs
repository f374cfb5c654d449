//! The agent core (`leaktrace agent`), as root with real probes on real fixtures: what /metrics
//! and /report publish interval after interval, --report-dir's rotation, a target that exits
//! while the agent goes on, and SIGTERM ending the agent with every probe detached (the kernel's
//! view: the program and link ids the agent held, from its /proc fdinfo, no longer exist).
//! Prometheus itself scraping the agent is tests/agent.rs.
mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// A running agent: its process and the address it serves.
struct Agent {
    child: Child,
    address: String,
    stderr: mpsc::Receiver<String>,
}

impl Agent {
    /// `leaktrace agent --listen 127.0.0.1:0 ARGS`; returns once it serves (its first stderr
    /// line names the address the kernel gave it).
    fn start(args: &[&str]) -> Agent {
        let mut child = leaktrace()
            .args(["agent", "--listen", "127.0.0.1:0", "--rescan", "1s"])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start leaktrace agent");
        let (lines, stderr) = mpsc::channel();
        let pipe = child.stderr.take().expect("piped stderr");
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                eprintln!("agent: {line}");
                if lines.send(line).is_err() {
                    break;
                }
            }
        });
        let first = stderr
            .recv_timeout(Duration::from_secs(30))
            .expect("the agent says where it serves");
        let address = first
            .split("http://")
            .nth(1)
            .and_then(|rest| rest.split('/').next())
            .unwrap_or_else(|| panic!("no address in {first:?}"))
            .to_string();
        Agent {
            child,
            address,
            stderr,
        }
    }

    /// GET `path`: (status code, body).
    fn get(&self, path: &str) -> (u16, String) {
        let mut stream = TcpStream::connect(&self.address).expect("connect to the agent");
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        write!(
            stream,
            "GET {path} HTTP/1.0\r\nHost: {}\r\n\r\n",
            self.address
        )
        .unwrap();
        let mut response = String::new();
        stream
            .read_to_string(&mut response)
            .expect("read the response");
        let (head, body) = response
            .split_once("\r\n\r\n")
            .unwrap_or_else(|| panic!("not an HTTP response: {response:?}"));
        let code = head
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or_else(|| panic!("no status in {head:?}"));
        (code, body.to_string())
    }

    fn metrics(&self) -> Metrics {
        let (code, body) = self.get("/metrics");
        assert_eq!(code, 200, "{body}");
        Metrics::parse(&body)
    }

    /// Polls /metrics until `ready` holds (or `within` passes: panics with the last page).
    fn metrics_when(
        &self,
        within: Duration,
        what: &str,
        ready: impl Fn(&Metrics) -> bool,
    ) -> Metrics {
        let deadline = Instant::now() + within;
        loop {
            let metrics = self.metrics();
            if ready(&metrics) {
                return metrics;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: not within {within:?}; /metrics:\n{}",
                metrics.text
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// SIGTERM; returns the exit status and how long the agent took to end.
    fn terminate(mut self) -> (std::process::ExitStatus, Duration) {
        let started = Instant::now();
        // SAFETY: signalling the agent this test started, which is running.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for the agent") {
                return (status, started.elapsed());
            }
            if started.elapsed() > Duration::from_secs(60) {
                let _ = self.child.kill();
                panic!("the agent did not end within 60 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        while self.stderr.try_recv().is_ok() {}
    }
}

/// One exposition page: samples by metric name.
struct Metrics {
    text: String,
    samples: Vec<(String, BTreeMap<String, String>, f64)>,
}

impl Metrics {
    /// The Prometheus text format's sample lines (`name{k="v",...} value`).
    fn parse(text: &str) -> Metrics {
        let mut samples = Vec::new();
        for line in text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
        {
            let (series, value) = line.rsplit_once(' ').expect("a sample line");
            let value: f64 = value.parse().unwrap_or_else(|_| panic!("value in {line}"));
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => (name, parse_labels(rest.strip_suffix('}').unwrap())),
                None => (series, BTreeMap::new()),
            };
            samples.push((name.to_string(), labels, value));
        }
        Metrics {
            text: text.to_string(),
            samples,
        }
    }

    /// Samples of `name` whose labels include every `(key, value)` of `with`.
    fn find(&self, name: &str, with: &[(&str, &str)]) -> Vec<(&BTreeMap<String, String>, f64)> {
        self.samples
            .iter()
            .filter(|(n, labels, _)| {
                n == name
                    && with
                        .iter()
                        .all(|(k, v)| labels.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|(_, labels, value)| (labels, *value))
            .collect()
    }

    fn value(&self, name: &str, with: &[(&str, &str)]) -> Option<f64> {
        match self.find(name, with).as_slice() {
            [] => None,
            [(_, value)] => Some(*value),
            more => panic!("{name} {with:?}: {} series, one expected", more.len()),
        }
    }
}

fn parse_labels(text: &str) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    let mut chars = text.chars().peekable();
    loop {
        let key: String = chars.by_ref().take_while(|&c| c != '=').collect();
        if key.is_empty() {
            return labels;
        }
        assert_eq!(chars.next(), Some('"'), "a quoted value in {text}");
        let mut value = String::new();
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some('n') => value.push('\n'),
                    Some(other) => value.push(other),
                    None => break,
                },
                '"' => break,
                c => value.push(c),
            }
        }
        labels.insert(key.trim_start_matches(',').to_string(), value);
        if chars.peek() == Some(&',') {
            chars.next();
        }
    }
}

/// Ids of every BPF program or link the kernel has now (`bpftool -j KIND show`).
fn kernel_ids(kind: &str) -> BTreeSet<u64> {
    let output = Command::new("bpftool")
        .args(["-j", kind, "show"])
        .output()
        .expect("bpftool runs (scripts/setup-tools.sh installs it)");
    assert!(output.status.success(), "bpftool {kind} show failed");
    let list: Value = serde_json::from_slice(&output.stdout).expect("bpftool prints JSON");
    list.as_array()
        .expect("a list")
        .iter()
        .filter_map(|p| p["id"].as_u64())
        .collect()
}

/// The programs and links in `held` are gone from the kernel (polled: the kernel frees them
/// after an RCU grace period), and no uprobe event names `target`.
fn assert_detached(held: &(BTreeSet<u64>, BTreeSet<u64>), target: &Path) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let progs: Vec<u64> = kernel_ids("prog").intersection(&held.0).copied().collect();
        let links: Vec<u64> = kernel_ids("link").intersection(&held.1).copied().collect();
        if progs.is_empty() && links.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still in the kernel: programs {progs:?}, links {links:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let events: String = [
        "/sys/kernel/tracing/uprobe_events",
        "/sys/kernel/debug/tracing/uprobe_events",
    ]
    .iter()
    .filter_map(|p| std::fs::read_to_string(p).ok())
    .collect();
    let name = target.file_name().unwrap().to_string_lossy();
    assert!(
        !events.contains(name.as_ref()),
        "uprobe events name {name}:\n{events}"
    );
}

fn thread_leak_size(m: &Metrics, pid: &str) -> Option<(f64, String, String)> {
    let found = m.find(
        "leaktrace_candidate_size",
        &[("pid", pid), ("kind", "thread_leak")],
    );
    let [(labels, size)] = found.as_slice() else {
        return None;
    };
    let fingerprint = labels["fingerprint"].clone();
    let status = ["new", "growing", "stable", "resolved"]
        .into_iter()
        .find(|status| {
            m.value(
                "leaktrace_candidate_status",
                &[
                    ("pid", pid),
                    ("fingerprint", &fingerprint),
                    ("status", status),
                ],
            ) == Some(1.0)
        })
        .expect("one status is 1")
        .to_string();
    Some((*size, fingerprint, status))
}

/// Interval 1 shows the C thread leak as `new`, interval 2 as `growing` and bigger (threads of
/// interval 1 keep their creation site), with its labels; the joined twin has no candidate
/// series and a 0 for every kind; /report has the same candidate; --report-dir keeps the last
/// two; SIGTERM ends the agent with status 0 and nothing left in the kernel.
#[test]
fn a_thread_leak_is_new_then_growing_and_the_fixed_twin_has_no_candidate() {
    require_root();
    let binary = build_c("thread_leak");
    let leak = Fixture::start(&binary, &["leak"]);
    let twin = Fixture::start(&binary, &["joined"]);
    let (leak_pid, twin_pid) = (leak.pid().to_string(), twin.pid().to_string());
    let reports = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("agent-core-reports-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&reports);
    let agent = Agent::start(&[
        "--pid",
        &leak_pid,
        "--pid",
        &twin_pid,
        "--interval",
        "3s",
        "--report-dir",
        reports.to_str().unwrap(),
        "--report-keep",
        "2",
    ]);
    let intervals = |m: &Metrics, pid: &str| {
        m.value("leaktrace_intervals_total", &[("pid", pid)])
            .unwrap_or(0.0)
    };

    let first = agent.metrics_when(Duration::from_secs(60), "a first interval", |m| {
        intervals(m, &leak_pid) >= 1.0
    });
    assert_eq!(first.value("leaktrace_targets", &[]), Some(2.0));
    assert_eq!(intervals(&first, &leak_pid), 1.0, "interval 1 caught");
    let (size_1, fingerprint, status_1) =
        thread_leak_size(&first, &leak_pid).expect("a thread_leak series after interval 1");
    assert_eq!(status_1, "new");
    assert!(fingerprint.starts_with("thread_leak:"), "{fingerprint}");
    let labels = first.find("leaktrace_candidate_size", &[("fingerprint", &fingerprint)]);
    let labels = labels[0].0;
    assert_eq!(labels["comm"], "thread_leak");
    assert_eq!(labels["creation_function"], "spawn_leaky_task");
    assert_eq!(labels["blocking_function"], "wait_for_reply");
    assert_eq!(labels["wait_reason"], "");
    assert!(
        first
            .value(
                "leaktrace_candidate_growth_per_second",
                &[("fingerprint", &fingerprint)]
            )
            .unwrap()
            > 0.0
    );

    let second = agent.metrics_when(Duration::from_secs(60), "a second interval", |m| {
        intervals(m, &leak_pid) >= 2.0
    });
    let (size_2, fingerprint_2, status_2) =
        thread_leak_size(&second, &leak_pid).expect("a thread_leak series after interval 2");
    assert_eq!(fingerprint_2, fingerprint, "one group, one identity");
    assert!(size_2 > size_1, "the leak grew: {size_1} then {size_2}");
    // It grows every interval (a thread every 100 ms), whichever interval this is.
    assert_eq!(status_2, "growing");
    assert_eq!(
        second.value(
            "leaktrace_leak_candidates",
            &[("pid", &leak_pid), ("kind", "thread_leak")]
        ),
        Some(1.0)
    );

    // The fixed twin: traced as long, no candidate of any kind.
    assert!(intervals(&second, &twin_pid) >= 1.0);
    assert!(
        second
            .find("leaktrace_candidate_size", &[("pid", &twin_pid)])
            .is_empty(),
        "{}",
        second.text
    );
    for kind in [
        "deadlock",
        "futex_wait",
        "thread_leak",
        "epoll_wait",
        "timerfd",
        "goroutine_leak",
        "go_timer",
    ] {
        assert_eq!(
            second.value(
                "leaktrace_leak_candidates",
                &[("pid", &twin_pid), ("kind", kind)]
            ),
            Some(0.0),
            "{kind}"
        );
    }
    assert!(
        second
            .value("leaktrace_agent_cpu_seconds_total", &[])
            .unwrap()
            > 0.0
    );
    assert!(
        second
            .value("leaktrace_agent_resident_memory_bytes", &[])
            .unwrap()
            > 1e6
    );

    // /report: the same candidate in full; text too; unknown pids are 404.
    let (code, json) = agent.get(&format!("/report?pid={leak_pid}&format=json"));
    assert_eq!(code, 200, "{json}");
    let report: Value = serde_json::from_str(&json).expect("a JSON report");
    assert_eq!(report["target"]["pid"].as_u64(), Some(leak.pid() as u64));
    let leaks = of_kind(&report, "thread_leak");
    assert_eq!(leaks.len(), 1, "{json}");
    assert_eq!(leaks[0]["fingerprint"], fingerprint.as_str());
    assert_eq!(leaks[0]["status"], "growing", "the report says it too");
    assert!(
        functions(&leaks[0]["creation_stack"]).contains(&"spawn_leaky_task".to_string()),
        "{json}"
    );
    let (code, text) = agent.get(&format!("/report?pid={leak_pid}"));
    assert_eq!(code, 200);
    assert!(
        text.contains("thread_leak") && text.contains("spawn_leaky_task"),
        "{text}"
    );
    let (code, text) = agent.get("/report?pid=4000000000");
    assert_eq!(code, 404, "{text}");
    assert!(text.contains("not watched"), "{text}");
    let (code, _) = agent.get("/report?pid=nonsense");
    assert_eq!(code, 400);
    let (code, index) = agent.get("/");
    assert_eq!(code, 200);
    assert!(
        index.contains(&format!("/report?pid={leak_pid}")),
        "{index}"
    );

    // --report-keep 2: after a third interval, two reports of each target remain.
    agent.metrics_when(Duration::from_secs(60), "a third interval", |m| {
        intervals(m, &leak_pid) >= 3.0 && intervals(m, &twin_pid) >= 3.0
    });
    let mut names: Vec<String> = std::fs::read_dir(&reports)
        .expect("the report directory")
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".json"))
        .collect();
    names.sort();
    let of = |pid: &str| {
        names
            .iter()
            .filter(|n| n.starts_with(&format!("thread_leak-{pid}-")))
            .count()
    };
    assert_eq!((of(&leak_pid), of(&twin_pid)), (2, 2), "{names:?}");
    let written: Value =
        serde_json::from_str(&std::fs::read_to_string(reports.join(&names[0])).unwrap())
            .expect("a JSON report on disk");
    assert!(written["candidates"].is_array());

    let held = held_ids(agent.child.id());
    // Per target, in the default low mode: the three lifecycle tracepoints and the two raw
    // sys_enter/sys_exit window programs (task_newtask takes the creation stacks: no
    // pthread_create uprobe), and at least the three lifecycle links (the window links come
    // and go).
    assert!(
        held.0.len() >= 10 && held.1.len() >= 6,
        "the agent holds too few programs/links to trace two targets: {held:?}"
    );
    let (status, took) = agent.terminate();
    assert!(status.success(), "the agent ended with {status}");
    // Detaching is the kernel's work (per-syscall tracepoints unregister one by one, ~3 s for
    // two targets in --detail full; the low mode's raw links go in under a millisecond); the
    // margin is for a loaded machine.
    assert!(took < Duration::from_secs(10), "SIGTERM took {took:?}");
    assert_detached(&held, &binary);
    let _ = std::fs::remove_dir_all(&reports);
}

/// A target that exits in the middle of an interval: the agent drops it (and its probes), goes
/// on serving with `leaktrace_targets` 0, and still ends cleanly on SIGTERM. Before the first
/// interval ends, /report says so (503).
#[test]
fn the_agent_goes_on_when_its_target_exits_mid_interval() {
    require_root();
    let binary = build_c("thread_leak");
    let mut target = Fixture::start(&binary, &["joined"]);
    let pid = target.pid().to_string();
    let mut agent = Agent::start(&["--pid", &pid, "--interval", "60s"]);
    agent.metrics_when(Duration::from_secs(30), "the target picked up", |m| {
        m.value("leaktrace_target_info", &[("pid", &pid)]) == Some(1.0)
    });
    // Picked up means probes are being loaded: wait until they are attached.
    let deadline = Instant::now() + Duration::from_secs(30);
    // The lifecycle tracepoints' three links are attached at load in either mode.
    while held_ids(agent.child.id()).1.len() < 3 {
        assert!(
            Instant::now() < deadline,
            "the agent never attached its probes"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let (code, text) = agent.get(&format!("/report?pid={pid}"));
    assert_eq!(code, 503, "{text}");
    assert!(text.contains("first interval not finished"), "{text}");
    let held = held_ids(agent.child.id());

    let _ = target.child.kill();
    let _ = target.child.wait();
    let after = agent.metrics_when(Duration::from_secs(30), "the target dropped", |m| {
        m.value("leaktrace_targets", &[]) == Some(0.0)
    });
    assert!(after.find("leaktrace_target_info", &[]).is_empty());
    // Its probes went with it, while the agent goes on.
    assert_detached(&held, &binary);
    assert!(
        agent.child.try_wait().unwrap().is_none(),
        "the agent is still running"
    );
    assert!(
        held_ids(agent.child.id()).1.is_empty(),
        "the agent still holds links"
    );
    let (code, _) = agent.get("/");
    assert_eq!(code, 200);
    let (code, text) = agent.get(&format!("/report?pid={pid}"));
    assert_eq!(code, 404, "{text}");

    let (status, _) = agent.terminate();
    assert!(status.success(), "the agent ended with {status}");
}
