//! Root integration tests of `leaktrace agent` (issue 12) as Prometheus sees it: the real agent
//! traces real fixtures (a Go goroutine leak and a C thread leak, each with its fixed twin), a
//! real Prometheus (Debian's package, scripts/setup-prometheus.sh) scrapes it every second on
//! loopback, and the assertions go through Prometheus's HTTP query API (`/api/v1/query`).
//! Also: the exposition passes `promtool check metrics`, the alert rules and scrape config of
//! docs/ pass promtool, targets are picked up again after a restart and dropped when they exit,
//! and targets in containers are selected by cgroup and by name.
mod common;

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::container::*;
use common::*;
use serde_json::Value;
use tracer_user::agent::targets::{scan, Selectors};

/// The machines have 2 cores: one agent (and one Prometheus) at a time.
static SERIAL: Mutex<()> = Mutex::new(());

/// A port nobody listens on now (the kernel's pick), for the agent and Prometheus.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind a free port")
        .port()
}

/// GET `url`: the status and body, or the error (connection refused while starting).
fn get(url: &str) -> Result<(u16, String), String> {
    let agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .new_agent();
    let mut response = agent.get(url).call().map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let body = response
        .body_mut()
        .read_to_string()
        .map_err(|e| e.to_string())?;
    Ok((status, body))
}

/// Polls `check` every 500 ms until it returns Some, failing with `what` and the last state
/// after `timeout`.
fn wait_for<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        match check() {
            Ok(value) => return value,
            Err(last) if Instant::now() >= deadline => {
                panic!("{what}: not within {timeout:?}; last: {last}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(500)),
        }
    }
}

/// A copy of `binary` named `name`, so that its process's comm is `name` (one per fixture
/// instance: the leak and its twin are told apart by name, as services on a host are).
fn named_copy(binary: &Path, name: &str) -> PathBuf {
    let copy = binary.with_file_name(name);
    std::fs::copy(binary, &copy).unwrap_or_else(|e| panic!("copy {}: {e}", binary.display()));
    copy
}

/// A running `leaktrace agent`; SIGKILLed on drop if the test did not stop it.
struct Agent {
    child: Option<Child>,
    base: String,
}

impl Agent {
    fn start(args: &[&str]) -> Agent {
        let listen = format!("127.0.0.1:{}", free_port());
        let child = leaktrace()
            .args(["agent", "--listen", &listen])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start leaktrace agent");
        let mut agent = Agent {
            child: Some(child),
            base: format!("http://{listen}"),
        };
        wait_for("the agent serves /", Duration::from_secs(60), || {
            if let Some(status) = agent.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("the agent exited at start: {status}");
            }
            match get(&format!("{}/", agent.base))? {
                (200, _) => Ok(()),
                (status, body) => Err(format!("{status}: {body}")),
            }
        });
        agent
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    fn metrics(&self) -> String {
        match get(&format!("{}/metrics", self.base)) {
            Ok((200, body)) => body,
            other => panic!("GET /metrics: {other:?}"),
        }
    }

    /// The last full JSON report of `pid`, once its first interval is done.
    fn report(&self, pid: u32) -> Value {
        let url = format!("{}/report?pid={pid}&format=json", self.base);
        let body = wait_for(
            &format!("a report of pid {pid}"),
            Duration::from_secs(90),
            || match get(&url)? {
                (200, body) => Ok(body),
                (status, body) => Err(format!("{status}: {body}")),
            },
        );
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("/report is not JSON ({e}): {body}"))
    }

    fn assert_running(&mut self) {
        if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
            panic!("the agent exited: {status}");
        }
    }

    /// SIGTERM, and the agent must exit 0 (every trace stopped, every probe detached) in time.
    fn stop(&mut self) {
        let mut child = self.child.take().unwrap();
        // SAFETY: signalling the agent this test started, which has not been reaped.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                assert!(status.success(), "the agent exited {status} on SIGTERM");
                return;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("the agent did not exit within 30 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A real Prometheus scraping one target every second, with its storage in a scratch directory;
/// killed on drop.
struct Prometheus {
    child: Child,
    base: String,
}

/// One series of a query's answer: its labels and value.
#[derive(Debug, Clone)]
struct Sample {
    labels: BTreeMap<String, String>,
    value: f64,
}

impl Sample {
    fn label(&self, name: &str) -> &str {
        self.labels.get(name).map(String::as_str).unwrap_or("")
    }
}

impl Prometheus {
    fn start(target: &str) -> Prometheus {
        let dir = scratch("prometheus");
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
                 scrape_configs:\n  - job_name: leaktrace\n    static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .unwrap();
        let listen = format!("127.0.0.1:{}", free_port());
        let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={listen}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start prometheus (scripts/setup-prometheus.sh installs it)");
        let prometheus = Prometheus {
            child,
            base: format!("http://{listen}"),
        };
        wait_for(
            "prometheus is ready",
            Duration::from_secs(60),
            || match get(&format!("{}/-/ready", prometheus.base))? {
                (200, _) => Ok(()),
                (status, body) => Err(format!("{status}: {body}")),
            },
        );
        prometheus
    }

    /// An instant query through `/api/v1/query`: the vector it returns.
    fn query(&self, promql: &str) -> Vec<Sample> {
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(10)))
            .build()
            .new_agent();
        let body = agent
            .get(format!("{}/api/v1/query", self.base))
            .query("query", promql)
            .call()
            .and_then(|mut r| r.body_mut().read_to_string())
            .unwrap_or_else(|e| panic!("query {promql}: {e}"));
        let answer: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(answer["status"], "success", "{promql}: {answer}");
        assert_eq!(answer["data"]["resultType"], "vector", "{promql}: {answer}");
        answer["data"]["result"]
            .as_array()
            .unwrap()
            .iter()
            .map(|series| Sample {
                labels: series["metric"]
                    .as_object()
                    .unwrap()
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                    .collect(),
                value: series["value"][1].as_str().unwrap().parse().unwrap(),
            })
            .collect()
    }

    /// Polls `promql` until `accept` takes its answer.
    fn wait_until(
        &self,
        promql: &str,
        timeout: Duration,
        accept: impl Fn(&[Sample]) -> bool,
    ) -> Vec<Sample> {
        wait_for(promql, timeout, || {
            let samples = self.query(promql);
            if accept(&samples) {
                Ok(samples)
            } else {
                Err(format!("{samples:?}"))
            }
        })
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `promtool check metrics` on an exposition (its stdin): the lint Prometheus ships.
fn promtool_check_metrics(exposition: &str) {
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool (scripts/setup-prometheus.sh installs it)");
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(exposition.as_bytes())
        .unwrap();
    let output = promtool.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "promtool check metrics: {}{}\n{exposition}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

fn promtool(args: &[&str], dir: &Path) -> String {
    let output = Command::new("promtool")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run promtool (scripts/setup-prometheus.sh installs it)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "promtool {args:?}: {text}");
    text
}

/// The alert rules users paste (docs/alerts.yml) are valid, and fire when they should and only
/// then (fixtures/prometheus/alerts_test.yml).
#[test]
fn the_alert_rules_pass_promtool() {
    let docs = workspace_root().join("docs");
    let checked = promtool(&["check", "rules", "alerts.yml"], &docs);
    assert!(checked.contains("2 rules found"), "{checked}");
    promtool(
        &["test", "rules", "alerts_test.yml"],
        &fixtures().join("prometheus"),
    );
}

/// The scrape config docs/agent.md gives (with the alert rules beside it) is a valid
/// Prometheus configuration.
#[test]
fn the_scrape_config_in_the_docs_passes_promtool() {
    let doc = std::fs::read_to_string(workspace_root().join("docs/agent.md")).unwrap();
    let config = doc
        .split("```yaml\n")
        .skip(1)
        .filter_map(|block| block.split_once("```").map(|(yaml, _)| yaml))
        .find(|yaml| yaml.contains("scrape_configs:"))
        .expect("docs/agent.md has a ```yaml block with scrape_configs");
    assert!(config.contains("127.0.0.1:9464"), "{config}");
    let dir = scratch("scrape-config");
    std::fs::write(dir.join("prometheus.yml"), config).unwrap();
    std::fs::copy(
        workspace_root().join("docs/alerts.yml"),
        dir.join("leaktrace-alerts.yml"),
    )
    .unwrap();
    let checked = promtool(&["check", "config", "prometheus.yml"], &dir);
    assert!(checked.contains("2 rules found"), "{checked}");
}

/// `--all-go` tells Go programs (their build information section) from others, `--exe` names a
/// program by its path, and neither picks a process of another program.
#[test]
fn all_go_and_exe_select_by_the_executable() {
    let go = build_go("g01_chan_recv", "1.27", &[]);
    let go = named_copy(&go, "lt-sel-go");
    let c = named_copy(&build_c("thread_leak"), "lt-sel-c");
    let go_fixture = Fixture::start(&go, &["-fixed", "-rate", "10"]);
    let c_fixture = Fixture::start(&c, &["joined"]);
    let found = scan(&Selectors {
        all_go: true,
        ..Default::default()
    });
    let go_hit = found.iter().find(|f| f.pid == go_fixture.pid());
    assert_eq!(
        go_hit.map(|f| f.selector.as_str()),
        Some("all-go"),
        "{found:?}"
    );
    assert!(found.iter().all(|f| f.pid != c_fixture.pid()), "{found:?}");
    let found = scan(&Selectors {
        exes: vec![c.clone()],
        ..Default::default()
    });
    let pids: Vec<u32> = found.iter().map(|f| f.pid).collect();
    assert_eq!(pids, vec![c_fixture.pid()], "{found:?}");
    assert_eq!(found[0].selector, format!("exe={}", c.display()));
}

/// The `expr` of the alert rule `name` in docs/alerts.yml.
fn alert_expr(name: &str) -> String {
    let rules = std::fs::read_to_string(workspace_root().join("docs/alerts.yml")).unwrap();
    let (_, after) = rules
        .split_once(&format!("- alert: {name}\n"))
        .unwrap_or_else(|| panic!("no alert {name} in docs/alerts.yml"));
    after
        .lines()
        .find_map(|line| line.trim().strip_prefix("expr: "))
        .unwrap_or_else(|| panic!("alert {name} has no expr"))
        .to_string()
}

/// The Go and C fixtures under names of their own: (leak, fixed twin) binaries.
struct Fixtures {
    go_leak: PathBuf,
    go_fixed: PathBuf,
    c_leak: PathBuf,
    c_fixed: PathBuf,
}

fn fixtures_named() -> Fixtures {
    let go = build_go("g01_chan_recv", "1.27", &[]);
    let c = build_c("thread_leak");
    Fixtures {
        go_leak: named_copy(&go, "lt-go-leak"),
        go_fixed: named_copy(&go, "lt-go-fixed"),
        c_leak: named_copy(&c, "lt-c-leak"),
        c_fixed: named_copy(&c, "lt-c-fixed"),
    }
}

/// The agent's side of one target, read through Prometheus: the series of
/// `leaktrace_target_info` for a comm.
fn target_pids(prometheus: &Prometheus, comm: &str) -> Vec<String> {
    prometheus
        .query(&format!("leaktrace_target_info{{comm=\"{comm}\"}}"))
        .iter()
        .map(|s| s.label("pid").to_string())
        .collect()
}

/// The whole story through Prometheus: leaks are there with their labels and rising, twins have
/// none, the exposition passes promtool, a restarted target is picked up again with the same
/// fingerprint, a target that exits is dropped while the agent stays up, and SIGTERM ends it
/// cleanly.
#[test]
fn prometheus_sees_the_leaks_rise_and_not_their_twins() {
    require_root();
    let _guard = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let bins = fixtures_named();
    let mut go_leak = Fixture::start(&bins.go_leak, &["-rate", "20"]);
    let _go_fixed = Fixture::start(&bins.go_fixed, &["-fixed", "-rate", "20"]);
    let _c_leak = Fixture::start(&bins.c_leak, &["leak"]);
    let c_fixed = Fixture::start(&bins.c_fixed, &["joined"]);
    let mut agent = Agent::start(&[
        "--comm",
        "lt-go-leak",
        "--comm",
        "lt-go-fixed",
        "--comm",
        "lt-c-leak",
        "--comm",
        "lt-c-fixed",
        "--interval",
        "3s",
        "--rescan",
        "1s",
        "--min-blocked",
        "1s",
    ]);
    let prometheus = Prometheus::start(agent.base.trim_start_matches("http://"));
    let minute = Duration::from_secs(60);

    // Every target is there, by its pid and selector.
    for (fixture, comm) in [
        (&go_leak, "lt-go-leak"),
        (&_go_fixed, "lt-go-fixed"),
        (&_c_leak, "lt-c-leak"),
        (&c_fixed, "lt-c-fixed"),
    ] {
        let info = prometheus.wait_until(
            &format!("leaktrace_target_info{{comm=\"{comm}\"}}"),
            minute,
            |s| s.len() == 1,
        );
        assert_eq!(info[0].label("pid"), fixture.pid().to_string(), "{info:?}");
        assert_eq!(
            info[0].label("selector"),
            format!("comm={comm}"),
            "{info:?}"
        );
        assert_eq!(info[0].label("container"), "", "{info:?}");
        assert_eq!(info[0].value, 1.0);
    }

    // The goroutine leak: its group's size, labelled with where it was created and sits.
    let go_size = "leaktrace_candidate_size{comm=\"lt-go-leak\",kind=\"goroutine_leak\"}";
    let first = prometheus.wait_until(go_size, Duration::from_secs(90), |s| s.len() == 1);
    let go_group = first[0].clone();
    assert_eq!(
        go_group.label("pid"),
        go_leak.pid().to_string(),
        "{go_group:?}"
    );
    assert!(
        go_group.label("creation_function").contains("main.handle"),
        "{go_group:?}"
    );
    assert_eq!(
        go_group.label("blocking_function"),
        "main.wait",
        "{go_group:?}"
    );
    assert_eq!(
        go_group.label("wait_reason"),
        "chan receive",
        "{go_group:?}"
    );
    assert!(
        go_group.label("fingerprint").starts_with("goroutine_leak:"),
        "{go_group:?}"
    );
    // The thread leak: created in the fixture's own function.
    let c_size = "leaktrace_candidate_size{comm=\"lt-c-leak\",kind=\"thread_leak\"}";
    let c_first = prometheus.wait_until(c_size, Duration::from_secs(90), |s| s.len() == 1);
    let c_group = c_first[0].clone();
    assert!(
        c_group
            .label("creation_function")
            .contains("spawn_leaky_task"),
        "{c_group:?}"
    );
    assert!(
        c_group.label("fingerprint").starts_with("thread_leak:"),
        "{c_group:?}"
    );
    // Both rise: a later interval's size is above the first one Prometheus saw.
    for (query, before) in [(go_size, go_group.value), (c_size, c_group.value)] {
        prometheus.wait_until(query, minute, |s| s.len() == 1 && s[0].value > before);
    }
    let rising = prometheus.query(&format!(
        "max_over_time({go_size}[2m]) > min_over_time({go_size}[2m])"
    ));
    assert_eq!(rising.len(), 1, "{rising:?}");

    // Their status went through new to growing, and they have a score. The thread leak's
    // growth per second is there too; a goroutine group's comes from the trend of its count
    // over the interval's snapshots (one a second), which a 3 s interval under load may not
    // have, so it is not asserted here.
    for comm in ["lt-go-leak", "lt-c-leak"] {
        let growing = prometheus.query(&format!(
            "max_over_time(leaktrace_candidate_status{{comm=\"{comm}\",status=\"growing\"}}[5m]) == 1"
        ));
        assert!(!growing.is_empty(), "{comm} never growing");
        let scored = prometheus.query(&format!("leaktrace_candidate_score{{comm=\"{comm}\"}} > 0"));
        assert!(!scored.is_empty(), "{comm} has no score above 0");
    }
    let growth = prometheus.query(
        "max_over_time(leaktrace_candidate_growth_per_second{comm=\"lt-c-leak\",kind=\"thread_leak\"}[5m]) > 0",
    );
    assert_eq!(
        growth.len(),
        1,
        "the thread leak's growth per second: {growth:?}"
    );
    // The alert rule users paste (docs/alerts.yml) picks both leaks on live data, and no twin.
    let growing_rule = alert_expr("LeaktraceLeakGrowing");
    let alerting = prometheus.wait_until(&growing_rule, minute, |s| {
        ["lt-go-leak", "lt-c-leak"]
            .iter()
            .all(|comm| s.iter().any(|x| x.label("comm") == *comm))
    });
    assert!(
        alerting.iter().all(|s| s.label("comm").ends_with("-leak")),
        "{alerting:?}"
    );
    assert!(
        prometheus
            .query(&alert_expr("LeaktraceDeadlock"))
            .is_empty(),
        "no deadlock here"
    );

    // The twins: analysed several times, a deadlock series at 0 for alerts to hang on, and never
    // a candidate series, at any point of the run.
    for comm in ["lt-go-fixed", "lt-c-fixed"] {
        prometheus.wait_until(
            &format!("leaktrace_intervals_total{{comm=\"{comm}\"}}"),
            minute,
            |s| s.len() == 1 && s[0].value >= 2.0,
        );
        let deadlocks = prometheus.query(&format!(
            "leaktrace_leak_candidates{{comm=\"{comm}\",kind=\"deadlock\"}}"
        ));
        assert_eq!(deadlocks.len(), 1, "{comm}: {deadlocks:?}");
        assert_eq!(deadlocks[0].value, 0.0, "{comm}: {deadlocks:?}");
        let ever = prometheus.query(&format!(
            "count_over_time(leaktrace_candidate_size{{comm=\"{comm}\"}}[10m])"
        ));
        assert!(ever.is_empty(), "{comm} has candidates: {ever:?}");
    }
    let goroutines = prometheus.query("leaktrace_goroutines{comm=\"lt-go-fixed\"}");
    assert_eq!(goroutines.len(), 1, "{goroutines:?}");
    assert!(goroutines[0].value >= 1.0, "{goroutines:?}");

    // What Prometheus scraped passes Prometheus's own lint.
    promtool_check_metrics(&agent.metrics());

    // Restart: the Go leak dies and comes back under the same name: a new pid is watched, the
    // selector counts one restart, and the leak keeps its identity.
    let old_pid = go_leak.pid();
    drop(go_leak);
    go_leak = Fixture::start(&bins.go_leak, &["-rate", "20"]);
    let new_pid = go_leak.pid().to_string();
    wait_for(
        "the restarted target is watched",
        minute,
        || match target_pids(&prometheus, "lt-go-leak").as_slice() {
            [pid] if *pid == new_pid => Ok(()),
            other => Err(format!("{other:?}")),
        },
    );
    let restarts = prometheus.wait_until(
        "leaktrace_target_restarts_total{selector=\"comm=lt-go-leak\"}",
        minute,
        |s| s.len() == 1 && s[0].value >= 1.0,
    );
    assert_eq!(restarts[0].value, 1.0, "{restarts:?}");
    let again = prometheus.wait_until(
        &format!("leaktrace_candidate_size{{comm=\"lt-go-leak\",kind=\"goroutine_leak\",pid=\"{new_pid}\"}}"),
        Duration::from_secs(90),
        |s| s.len() == 1,
    );
    assert_eq!(
        again[0].label("fingerprint"),
        go_group.label("fingerprint"),
        "the restarted leak (pid {new_pid}, was {old_pid}) changed identity: {again:?} vs {go_group:?}"
    );

    // ... and continues its statuses: for the agent it is the same leak, not a new one.
    let renewed = prometheus.query(&format!(
        "max_over_time(leaktrace_candidate_status{{comm=\"lt-go-leak\",pid=\"{new_pid}\",status=\"new\"}}[5m])"
    ));
    assert!(
        !renewed.is_empty() && renewed.iter().all(|s| s.value == 0.0),
        "the restarted leak was reported new again: {renewed:?}"
    );

    // A target that exits: dropped from the agent's targets; the agent stays up and serves.
    let targets_before = prometheus.query("leaktrace_targets");
    assert_eq!(targets_before.len(), 1, "{targets_before:?}");
    assert_eq!(targets_before[0].value, 4.0, "{targets_before:?}");
    let gone_pid = c_fixed.pid();
    drop(c_fixed);
    wait_for("the exited target is dropped", minute, || {
        let metrics = agent.metrics();
        let listed = metrics
            .lines()
            .any(|l| l.starts_with("leaktrace_target_info") && l.contains("lt-c-fixed"));
        if listed {
            Err(format!("pid {gone_pid} still listed"))
        } else {
            Ok(())
        }
    });
    prometheus.wait_until("leaktrace_targets", minute, |s| {
        s.len() == 1 && s[0].value == 3.0
    });
    agent.assert_running();
    // The others are still traced: the C leak's intervals keep coming.
    let intervals = "leaktrace_intervals_total{comm=\"lt-c-leak\"}";
    let done = prometheus.query(intervals)[0].value;
    prometheus.wait_until(intervals, minute, |s| s.len() == 1 && s[0].value > done);
    promtool_check_metrics(&agent.metrics());

    let agent_pid = agent.pid();
    agent.stop();
    assert!(
        !Path::new(&format!("/proc/{agent_pid}")).exists(),
        "the agent was reaped"
    );
}

/// Containers: a C thread leak selected by its cgroup and a statically linked Go leak selected
/// by its name, both in their own mount and pid namespaces with files only there. The agent
/// names their cgroups, and their reports have frames with file:line.
#[test]
fn containers_are_found_by_cgroup_and_by_name() {
    require_root();
    let _guard = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let c_stage = scratch("agent-stage-c");
    let c_program = stage_c(&c_stage, "thread_leak");
    let go_stage = scratch("agent-stage-go");
    let built = stage_go(&go_stage, "g01_chan_recv");
    // Its own name, so that --comm names this container's process and no other.
    let go_program = format!("{APP}/lt-ct-go");
    std::fs::rename(go_stage.join(&built[1..]), go_stage.join(&go_program[1..])).unwrap();

    let c_container = Container::start(&c_stage, &c_program, &["leak"]);
    let go_container = Container::start(&go_stage, &go_program, &["-rate", "20"]);

    // The selectors name them, by cgroup (as /proc/PID/cgroup and as a cgroupfs directory) and
    // by the executable's path inside the container (it exists nowhere on the host).
    let by_cgroup = scan(&Selectors {
        cgroups: vec![c_container.cgroup.clone()],
        ..Default::default()
    });
    let pids: Vec<u32> = by_cgroup.iter().map(|f| f.pid).collect();
    assert_eq!(pids, vec![c_container.host_pid], "{by_cgroup:?}");
    let by_dir = scan(&Selectors {
        cgroups: vec![c_container.cgroup_dir.to_string_lossy().into_owned()],
        ..Default::default()
    });
    let pids: Vec<u32> = by_dir.iter().map(|f| f.pid).collect();
    assert_eq!(pids, vec![c_container.host_pid], "{by_dir:?}");
    let by_exe = scan(&Selectors {
        exes: vec![PathBuf::from(&go_program)],
        ..Default::default()
    });
    let pids: Vec<u32> = by_exe.iter().map(|f| f.pid).collect();
    assert_eq!(pids, vec![go_container.host_pid], "{by_exe:?}");
    let by_go = scan(&Selectors {
        all_go: true,
        ..Default::default()
    });
    assert!(
        by_go.iter().any(|f| f.pid == go_container.host_pid),
        "{by_go:?}"
    );
    assert!(
        by_go.iter().all(|f| f.pid != c_container.host_pid),
        "{by_go:?}"
    );

    let mut agent = Agent::start(&[
        "--cgroup",
        &c_container.cgroup,
        "--comm",
        "lt-ct-go",
        "--interval",
        "3s",
        "--rescan",
        "1s",
        "--min-blocked",
        "1s",
    ]);

    // The C leak: its creation stack reached the container's own libc (file:line of the
    // fixture), and the agent names the container.
    let report = wait_for(
        "the C container's thread leak",
        Duration::from_secs(90),
        || {
            let report = agent.report(c_container.host_pid);
            if of_kind(&report, "thread_leak").len() == 1 {
                Ok(report)
            } else {
                Err(format!("{:#}", report["candidates"]))
            }
        },
    );
    let leak = of_kind(&report, "thread_leak")[0];
    assert_frame_at(
        &leak["creation_stack"],
        "spawn_leaky_task",
        "thread_leak.c",
        line_of("thread_leak.c", "pthread_create(&t, NULL, leaky_task"),
    );
    assert_frame_at(
        &leak["blocking_stack"],
        "wait_for_reply",
        "thread_leak.c",
        line_of("thread_leak.c", "for (;;) pthread_cond_wait"),
    );
    assert_eq!(
        report["target"]["container"]["cgroup"],
        c_container.cgroup.as_str()
    );

    // The Go leak: its go statement and where it sits, with file:line.
    let report = wait_for(
        "the Go container's goroutine leak",
        Duration::from_secs(90),
        || {
            let report = agent.report(go_container.host_pid);
            if of_kind(&report, "goroutine_leak").len() == 1 {
                Ok(report)
            } else {
                Err(format!("{:#}", report["candidates"]))
            }
        },
    );
    let leak = of_kind(&report, "goroutine_leak")[0];
    assert_frame_at(
        &leak["blocking_stack"],
        "main.wait",
        "main.go",
        line_of("go/g01_chan_recv/main.go", "<-ch // LEAK"),
    );
    assert_frame_at(
        &leak["creation_stack"],
        "main.handle",
        "main.go",
        line_of("go/g01_chan_recv/main.go", "go wait(ch)"),
    );
    assert_eq!(report["target"]["container"]["namespace_pid"], 1);

    // /metrics says which container each target is in, and which selector chose it.
    let metrics = agent.metrics();
    for (pid, container, selector) in [
        (
            c_container.host_pid,
            c_container.cgroup.as_str(),
            format!("cgroup={}", c_container.cgroup),
        ),
        (
            go_container.host_pid,
            go_container.cgroup.as_str(),
            "comm=lt-ct-go".to_string(),
        ),
    ] {
        let pid_label = format!("pid=\"{pid}\"");
        let info = metrics
            .lines()
            .find(|l| l.starts_with("leaktrace_target_info{") && l.contains(&pid_label))
            .unwrap_or_else(|| panic!("no leaktrace_target_info for pid {pid}:\n{metrics}"));
        assert!(
            info.contains(&format!("container=\"{container}\"")),
            "{info}"
        );
        assert!(info.contains(&format!("selector=\"{selector}\"")), "{info}");
    }
    let series_with = |pid: u32, metric: &str| {
        metrics
            .lines()
            .any(|l| l.starts_with(metric) && l.contains(&format!("pid=\"{pid}\"")))
    };
    assert!(series_with(
        c_container.host_pid,
        "leaktrace_candidate_size{"
    ));
    assert!(series_with(
        go_container.host_pid,
        "leaktrace_candidate_size{"
    ));
    agent.stop();
}
