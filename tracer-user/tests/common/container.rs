//! Containers for the integration tests: a fixture run in its own mount and pid namespaces,
//! chrooted into a tmpfs that exists only in its mount namespace, in a cgroup of its own
//! (tests/containers.rs traces them one-shot, tests/agent.rs through the agent).
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use super::*;

/// Where the fixture lives inside its container (absent from leaktrace's file system).
pub const APP: &str = "/app";

/// A fresh, empty directory under the test target's scratch space.
pub fn scratch(name: &str) -> PathBuf {
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

pub fn run_ok(what: &str, command: &mut Command) {
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
pub fn host_library(name: &str) -> PathBuf {
    let output = Command::new("gcc")
        .arg(format!("-print-file-name={name}"))
        .output()
        .expect("run gcc");
    let path = String::from_utf8_lossy(&output.stdout).trim().to_string();
    std::fs::canonicalize(&path).unwrap_or_else(|e| panic!("{name} at {path:?}: {e}"))
}

/// `go/g01_chan_recv` built with CGO_ENABLED=0 (statically linked: the container holds it alone).
pub fn stage_go(stage: &Path, dir: &str) -> String {
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
pub fn cgroup2_mount() -> PathBuf {
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
pub struct Container {
    pub fixture: Option<Fixture>,
    /// The fixture's pid in leaktrace's (the host's) pid namespace.
    pub host_pid: u32,
    /// The cgroup path as /proc/PID/cgroup names it ("/leaktrace-container-...").
    pub cgroup: String,
    pub cgroup_dir: PathBuf,
}

impl Container {
    pub fn start(stage: &Path, program: &str, args: &[&str]) -> Container {
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

/// `NAME.c` built to run from /app with its own copies of the C library and dynamic loader in
/// /app/lib (as a container image carries its own), same flags as `build_c`.
pub fn stage_c(stage: &Path, name: &str) -> String {
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
