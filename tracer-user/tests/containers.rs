//! Root integration tests for targets in containers (issue 12, "Targets in containers"): a C
//! thread-leak fixture and a statically linked Go fixture run in their own mount and pid
//! namespaces, chrooted into a tmpfs that exists only in their mount namespace, in a cgroup of
//! their own. Their executables and the C library are at paths (/app/...) that do not exist in
//! leaktrace's namespace, so every file leaktrace reads from them must be opened through
//! /proc/PID/root or /proc/PID/map_files. Traced by their host pid, they must be reported like
//! any other target: creation and blocking stacks with file:line, and the container's view named
//! (cgroup path, pid 1 in its pid namespace).
mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// The machines have 2 cores: these traces run one at a time so that timing stays predictable.
static SERIAL: Mutex<()> = Mutex::new(());

/// Where the fixture lives inside its container (absent from leaktrace's file system).
const APP: &str = "/app";

/// A fresh, empty directory under the test target's scratch space.
fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "containers-{name}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::create_dir_all(&dir).expect("create a scratch directory");
    dir
}

fn run_ok(what: &str, command: &mut Command) {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    assert!(
        output.status.success(),
        "{what} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The host library gcc links against (resolved: a copy must be the file, not a link).
fn host_library(name: &str) -> PathBuf {
    let output = Command::new("gcc")
        .arg(format!("-print-file-name={name}"))
        .output()
        .expect("run gcc");
    let path = String::from_utf8_lossy(&output.stdout).trim().to_string();
    std::fs::canonicalize(&path).unwrap_or_else(|e| panic!("{name} at {path:?}: {e}"))
}

/// `go/g01_chan_recv` built with CGO_ENABLED=0 (statically linked: the container holds it alone).
fn stage_go(stage: &Path, dir: &str) -> String {
    std::fs::create_dir_all(stage.join("app")).unwrap();
    let binary = stage.join("app").join(dir);
    let cache = workspace_root().join(".cache");
    run_ok(
        &format!("go build {dir}"),
        Command::new(go_toolchain("1.27"))
            .arg("build")
            .arg("-o")
            .arg(&binary)
            .arg(format!("./{dir}"))
            .current_dir(fixtures().join("go"))
            .env("CGO_ENABLED", "0")
            .env("GOTOOLCHAIN", "local")
            .env("GOFLAGS", "-mod=mod")
            .env("GOCACHE", cache.join("go-build"))
            .env("GOPATH", cache.join("gopath"))
            .env_remove("GOROOT"),
    );
    format!("{APP}/{dir}")
}

/// The cgroup v2 mount point of this host (pure v2 at /sys/fs/cgroup, or hybrid's "unified").
fn cgroup2_mount() -> PathBuf {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    mountinfo
        .lines()
        .find_map(|line| {
            let (fields, fs) = line.split_once(" - ")?;
            if !fs.starts_with("cgroup2 ") {
                return None;
            }
            fields.split_whitespace().nth(4).map(PathBuf::from)
        })
        .expect("no cgroup2 file system mounted: the container test needs one")
}

/// A fixture in a container: `unshare` (new mount and pid namespaces) mounts a tmpfs that only
/// its mount namespace sees, copies the staged /app into it, joins a cgroup of its own and
/// chroots into the tmpfs to exec the fixture as pid 1 of its pid namespace.
struct Container {
    fixture: Option<Fixture>,
    /// The fixture's pid in leaktrace's (the host's) pid namespace.
    host_pid: u32,
    /// The cgroup path as /proc/PID/cgroup names it ("/leaktrace-container-...").
    cgroup: String,
    cgroup_dir: PathBuf,
}

impl Container {
    fn start(stage: &Path, program: &str, args: &[&str]) -> Container {
        let root = scratch("root");
        let cgroup = format!(
            "/{}",
            root.file_name()
                .unwrap()
                .to_string_lossy()
                .replace('.', "-")
        );
        let cgroup_dir = cgroup2_mount().join(&cgroup[1..]);
        std::fs::create_dir(&cgroup_dir)
            .unwrap_or_else(|e| panic!("create cgroup {}: {e}", cgroup_dir.display()));
        let script = r#"set -e
stage=$1 root=$2 cgroup=$3 program=$4
shift 4
mount -t tmpfs leaktrace-container "$root"
cp -a "$stage"/. "$root"/
echo 0 > "$cgroup/cgroup.procs"
exec chroot "$root" "$program" "$@""#;
        let mut unshare_args: Vec<String> = [
            "--mount",
            "--pid",
            "--fork",
            "--kill-child",
            "--",
            "sh",
            "-c",
            script,
            "sh",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        for path in [stage, &root, &cgroup_dir] {
            unshare_args.push(path.to_string_lossy().into_owned());
        }
        unshare_args.push(program.to_string());
        unshare_args.extend(args.iter().map(|a| a.to_string()));
        let unshare_args: Vec<&str> = unshare_args.iter().map(String::as_str).collect();
        let fixture = Fixture::start(Path::new("unshare"), &unshare_args);
        let children =
            std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", fixture.pid()))
                .expect("unshare's children");
        let host_pid: u32 = children
            .split_whitespace()
            .next()
            .and_then(|pid| pid.parse().ok())
            .unwrap_or_else(|| panic!("unshare has no child: {children:?}"));
        let container = Container {
            fixture: Some(fixture),
            host_pid,
            cgroup,
            cgroup_dir,
        };
        // What makes it a container for leaktrace: neither the path the fixture runs from nor
        // the one the kernel shows us (its mount namespace's view, past its chroot) reaches it.
        let exe = std::fs::read_link(format!("/proc/{host_pid}/exe")).unwrap();
        assert!(exe.ends_with(&program[1..]), "{}", exe.display());
        for path in [exe.as_path(), Path::new(program)] {
            assert!(
                !path.exists(),
                "{} must exist only in the container",
                path.display()
            );
        }
        container
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        // Killing unshare kills its child (--kill-child), pid 1 of the namespace, and with it
        // the namespace; the cgroup can go once the task has exited.
        drop(self.fixture.take());
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::fs::remove_dir(&self.cgroup_dir).is_err() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Traces the container's fixture by its host pid.
fn trace(container: &Container) -> Value {
    trace_pid(container.host_pid, "3s", &["--min-blocked", "1s"])
}

/// The report names the container: its cgroup, and the fixture's pid (1) in its pid namespace.
fn assert_names_the_container(report: &Value, container: &Container) {
    let view = &report["target"]["container"];
    assert_eq!(view["cgroup"], container.cgroup.as_str(), "{view}");
    assert_eq!(view["namespace_pid"], 1, "{view}");
    assert_eq!(view["other_mount_namespace"], true, "{view}");
    assert_eq!(view["other_pid_namespace"], true, "{view}");
}

fn has_frame_at(stack: &Value, function: &str, file: &str, line: u64) -> bool {
    stack.as_array().is_some_and(|frames| {
        frames.iter().any(|f| {
            f["function"] == function
                && f["file"].as_str().is_some_and(|p| p.ends_with(file))
                && f["line"].as_u64() == Some(line)
        })
    })
}

#[test]
fn a_c_thread_leak_in_a_container_has_its_creation_stack() {
    require_root();
    let _guard = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let stage = scratch("stage-c");
    let program = stage_c(&stage, "thread_leak");

    let container = Container::start(&stage, &program, &["leak"]);
    std::thread::sleep(Duration::from_millis(200));
    let report = trace(&container);
    let attached = report["tracer"]["probes"].to_string();
    let leaks = of_kind(&report, "thread_leak");
    assert_eq!(leaks.len(), 1, "{report:#}");
    let leak = leaks[0];
    let spawn_line = line_of("thread_leak.c", "pthread_create(&t, NULL, leaky_task");
    assert!(
        has_frame_at(
            &leak["creation_stack"],
            "spawn_leaky_task",
            "thread_leak.c",
            spawn_line
        ),
        "the pthread_create uprobe must reach the container's libc ({attached}): {leak:#}"
    );
    let wait_line = line_of("thread_leak.c", "for (;;) pthread_cond_wait");
    assert!(
        has_frame_at(
            &leak["blocking_stack"],
            "wait_for_reply",
            "thread_leak.c",
            wait_line
        ),
        "{leak:#}"
    );
    assert_names_the_container(&report, &container);
    drop(container);

    // The fixed twin in the same container stays unreported.
    let container = Container::start(&stage, &program, &["joined"]);
    std::thread::sleep(Duration::from_millis(200));
    let report = trace(&container);
    assert!(candidates(&report).is_empty(), "{report:#}");
    assert!(report["native_io"]["threads_created"].as_u64().unwrap() >= 10);
    assert_names_the_container(&report, &container);
}

/// `NAME.c` built to run from /app with its own copies of the C library and dynamic loader in
/// /app/lib (as a container image carries its own), same flags as `build_c`.
fn stage_c(stage: &Path, name: &str) -> String {
    let lib = stage.join("app/lib");
    std::fs::create_dir_all(&lib).unwrap();
    run_ok(
        &format!("gcc {name}.c"),
        Command::new("gcc")
            .args(["-g", "-O1", "-fno-omit-frame-pointer", "-pthread"])
            .arg(format!(
                "-Wl,--dynamic-linker={APP}/lib/ld-linux-x86-64.so.2"
            ))
            .arg(format!("-Wl,-rpath,{APP}/lib"))
            .arg("-o")
            .arg(stage.join("app").join(name))
            .arg(fixtures().join(format!("{name}.c"))),
    );
    for (name, host) in [
        ("libc.so.6", host_library("libc.so.6")),
        (
            "ld-linux-x86-64.so.2",
            std::fs::canonicalize("/lib64/ld-linux-x86-64.so.2").expect("the host's ld.so"),
        ),
    ] {
        std::fs::copy(&host, lib.join(name))
            .unwrap_or_else(|e| panic!("copy {}: {e}", host.display()));
    }
    format!("{APP}/{name}")
}

/// A mutex names its owner by the id the owner has in the container's pid namespace: the cycle
/// is only found when that id is translated to the one the host traces by.
#[test]
fn an_abba_deadlock_in_a_container_names_both_owners() {
    require_root();
    let _guard = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let stage = scratch("stage-abba");
    let program = stage_c(&stage, "abba_deadlock");

    let container = Container::start(&stage, &program, &[]);
    let report = trace(&container);
    let deadlocks = of_kind(&report, "deadlock");
    assert_eq!(deadlocks.len(), 1, "{report:#}");
    let cycle = deadlocks[0]["cycle"].as_array().expect("the cycle");
    assert_eq!(cycle.len(), 2, "{cycle:?}");
    assert_eq!(cycle[0]["held_by"], cycle[1]["tid"]);
    assert_eq!(cycle[1]["held_by"], cycle[0]["tid"]);
    // Host ids: the threads of the container as the host numbers them.
    let tasks: Vec<u64> = std::fs::read_dir(format!("/proc/{}/task", container.host_pid))
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    for link in cycle {
        assert!(tasks.contains(&link["tid"].as_u64().unwrap()), "{link}");
    }
    assert_names_the_container(&report, &container);
}

#[test]
fn a_static_go_goroutine_leak_in_a_container_has_its_frames() {
    require_root();
    let _guard = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let stage = scratch("stage-go");
    let program = stage_go(&stage, "g01_chan_recv");

    let container = Container::start(&stage, &program, &[]);
    std::thread::sleep(Duration::from_millis(700));
    let report = trace(&container);
    let leaks = of_kind(&report, "goroutine_leak");
    assert_eq!(leaks.len(), 1, "{:#?}", candidates(&report));
    let leak = leaks[0];
    assert_frame_at(
        &leak["blocking_stack"],
        "main.wait",
        "main.go",
        line_of("go/g01_chan_recv/main.go", "<-ch // LEAK"),
    );
    let go_statement = &leak["creation_stack"][0];
    assert!(
        go_statement["function"]
            .as_str()
            .is_some_and(|f| f.contains("main.handle")),
        "{go_statement}"
    );
    assert!(go_statement["file"]
        .as_str()
        .is_some_and(|f| f.ends_with("main.go")));
    assert_eq!(
        go_statement["line"].as_u64(),
        Some(line_of("go/g01_chan_recv/main.go", "go wait(ch)")),
        "{go_statement}"
    );
    assert!(leak["count"].as_u64().unwrap() >= 100, "{leak:#}");
    assert_names_the_container(&report, &container);
    drop(container);

    // The fixed twin stays unreported, and was analysed as Go.
    let container = Container::start(&stage, &program, &["-fixed"]);
    std::thread::sleep(Duration::from_millis(700));
    let report = trace(&container);
    assert!(candidates(&report).is_empty(), "{:#?}", candidates(&report));
    assert!(report["goroutines"]["snapshots"].as_u64().unwrap() >= 2);
    assert_names_the_container(&report, &container);
}
