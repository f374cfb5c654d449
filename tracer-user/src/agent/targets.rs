//! Which processes on the host the agent's selectors name, read from /proc.
//!
//! One scan walks /proc once (`procfs::process::all_processes`: thread-group leaders only, the
//! kernel lists no other task at the top of /proc) and reads of each process only what a
//! selector needs, so a rescan of a host with hundreds of processes stays cheap: `--all-go`
//! reads the section headers of an executable once per file, keyed by its (device, inode).
use std::collections::HashMap;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use object::Object as _;

/// What the command line asked to watch. A process matching any selector is a target.
#[derive(Clone, Debug, Default)]
pub struct Selectors {
    /// `--pid N`: these processes while they live (not followed across restarts).
    pub pids: Vec<u32>,
    /// `--comm NAME`: processes whose /proc/PID/comm is NAME (followed across restarts).
    pub comms: Vec<String>,
    /// `--exe PATH`: processes running this executable (followed across restarts).
    pub exes: Vec<PathBuf>,
    /// `--cgroup PATH`: processes in this cgroup (v2 path as in /proc/PID/cgroup) or below.
    pub cgroups: Vec<String>,
    /// `--all-go`: every Go process on the host.
    pub all_go: bool,
}

impl Selectors {
    /// True when no selector is given (the agent refuses to start then).
    pub fn is_empty(&self) -> bool {
        self.pids.is_empty()
            && self.comms.is_empty()
            && self.exes.is_empty()
            && self.cgroups.is_empty()
            && !self.all_go
    }
}

/// A process some selector names now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Found {
    pub pid: u32,
    /// The selector that matched, as the user wrote it (`pid=42`, `comm=server`,
    /// `exe=/usr/bin/server`, `cgroup=/system.slice/x.service`, `all-go`). When several match,
    /// the first in that order.
    pub selector: String,
}

/// The kernel's "this task is a kernel thread" flag in /proc/PID/stat's `flags`
/// (include/linux/sched.h `PF_KTHREAD`).
const PF_KTHREAD: u32 = 0x0020_0000;

/// /proc/PID/comm holds at most 15 bytes (include/linux/sched.h `TASK_COMM_LEN` 16, with the
/// NUL): the kernel cuts longer names there.
const COMM_LEN: usize = 15;

/// The processes the selectors name now, by pid, each once, in increasing pid order; never
/// leaktrace itself, never a kernel thread, never a zombie. Processes that vanish or cannot be
/// read during the scan are left out (the next scan sees them again if they are there).
pub fn scan(selectors: &Selectors) -> Vec<Found> {
    let me = std::process::id();
    let matcher = Matcher::new(selectors);
    let Ok(processes) = ::procfs::process::all_processes() else {
        return Vec::new();
    };
    let mut found: Vec<Found> = processes
        .filter_map(|process| process.ok())
        .filter_map(|process| {
            let pid = u32::try_from(process.pid).ok()?;
            if pid == me {
                return None;
            }
            // Selectors first: most processes match none, and then their stat is not read.
            let selector = matcher.selector_of(&process, pid)?;
            let stat = process.stat().ok()?;
            if stat.flags & PF_KTHREAD != 0 || matches!(stat.state, 'Z' | 'X' | 'x') {
                return None;
            }
            Some(Found { pid, selector })
        })
        .collect();
    found.sort_by_key(|f| f.pid);
    found
}

/// The selectors with what is worth reading once per scan rather than once per process.
struct Matcher<'a> {
    selectors: &'a Selectors,
    /// For each `--exe PATH`: the file's (device, inode) in leaktrace's mount namespace, when it
    /// exists there.
    exe_ids: Vec<Option<(u64, u64)>>,
    /// For each `--cgroup PATH`: the path as /proc/PID/cgroup writes it.
    cgroups: Vec<String>,
}

impl<'a> Matcher<'a> {
    fn new(selectors: &'a Selectors) -> Self {
        let mount = cgroup2_mount();
        Matcher {
            selectors,
            exe_ids: selectors
                .exes
                .iter()
                .map(|path| std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino())))
                .collect(),
            cgroups: selectors
                .cgroups
                .iter()
                .map(|path| cgroup_selector(path, mount.as_deref()))
                .collect(),
        }
    }

    fn selector_of(&self, process: &::procfs::process::Process, pid: u32) -> Option<String> {
        let s = self.selectors;
        if s.pids.contains(&pid) {
            return Some(format!("pid={pid}"));
        }
        if !s.comms.is_empty() {
            let comm = crate::procfs::comm(pid);
            if let Some(name) = s.comms.iter().find(|name| comm_matches(name, &comm)) {
                return Some(format!("comm={name}"));
            }
        }
        if !s.exes.is_empty() {
            if let Some(path) = self.exe_match(pid) {
                return Some(format!("exe={}", path.display()));
            }
        }
        if !self.cgroups.is_empty() {
            if let Some(cgroup) = process_cgroup(process) {
                if let Some(i) = self
                    .cgroups
                    .iter()
                    .position(|selector| cgroup_contains(selector, &cgroup))
                {
                    return Some(format!("cgroup={}", s.cgroups[i]));
                }
            }
        }
        if s.all_go && is_go_process(pid) {
            return Some("all-go".to_string());
        }
        None
    }

    /// The `--exe` path that names `pid`'s executable: the path /proc/PID/exe links to (as the
    /// kernel prints it to us), the same file (device, inode) as the path in our mount namespace,
    /// or the same file as the path seen from the process's own root (/proc/PID/root/PATH: an
    /// executable that exists only in a container's file system).
    fn exe_match(&self, pid: u32) -> Option<&'a Path> {
        let link = std::fs::read_link(crate::procfs::root::exe(pid)).ok()?;
        let running = std::fs::metadata(crate::procfs::root::exe(pid))
            .ok()
            .map(|m| (m.dev(), m.ino()));
        self.selectors
            .exes
            .iter()
            .zip(&self.exe_ids)
            .find(|(path, host_id)| {
                if link == **path {
                    return true;
                }
                let Some(running) = running else {
                    return false;
                };
                if **host_id == Some(running) {
                    return true;
                }
                crate::procfs::root::in_target_root(pid, path)
                    .ok()
                    .and_then(|inside| std::fs::metadata(inside).ok())
                    .is_some_and(|m| (m.dev(), m.ino()) == running)
            })
            .map(|(path, _)| path.as_path())
    }
}

/// True when /proc/PID/comm `comm` is the `--comm` `name`: equal, or `name` is longer than the
/// kernel keeps and `comm` is its first 15 bytes.
fn comm_matches(name: &str, comm: &str) -> bool {
    if name == comm {
        return true;
    }
    name.len() > COMM_LEN
        && comm.len() == COMM_LEN
        && name.as_bytes()[..COMM_LEN] == *comm.as_bytes()
}

/// Where the cgroup v2 file system is mounted in our mount namespace (/sys/fs/cgroup on a pure
/// v2 host, /sys/fs/cgroup/unified on a hybrid one), from /proc/self/mountinfo.
fn cgroup2_mount() -> Option<PathBuf> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    mountinfo.lines().find_map(|line| {
        let (fields, fs) = line.split_once(" - ")?;
        if !fs.starts_with("cgroup2 ") {
            return None;
        }
        fields.split_whitespace().nth(4).map(PathBuf::from)
    })
}

/// A `--cgroup` argument as /proc/PID/cgroup writes cgroup paths: a directory under the cgroup2
/// mount (`/sys/fs/cgroup/system.slice/x.service`) loses the mount point; no trailing slash.
fn cgroup_selector(path: &str, mount: Option<&Path>) -> String {
    let relative = mount
        .and_then(|mount| Path::new(path).strip_prefix(mount).ok())
        .map(|rest| format!("/{}", rest.display()));
    let path = relative.as_deref().unwrap_or(path);
    let trimmed = path.trim_end_matches('/');
    if trimmed.is_empty() {
        "/".to_string()
    } else if trimmed.starts_with('/') {
        trimmed.to_string()
    } else {
        format!("/{trimmed}")
    }
}

/// True when cgroup `path` is `selector` or below it (prefix on a path boundary: `/a/b` holds
/// `/a/b/c` but not `/a/bc`).
fn cgroup_contains(selector: &str, path: &str) -> bool {
    if selector == "/" {
        return true;
    }
    match path.strip_prefix(selector) {
        Some(rest) => rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

/// The process's cgroup v2 path, the `0::PATH` line of /proc/PID/cgroup
/// (Documentation/admin-guide/cgroup-v2.rst, "Processes"); None on a v1-only host or when the
/// process is gone.
fn process_cgroup(process: &::procfs::process::Process) -> Option<String> {
    process
        .cgroups()
        .ok()?
        .0
        .into_iter()
        .find(|group| group.hierarchy == 0)
        .map(|group| group.pathname)
}

/// Whether an executable is Go, by (device, inode, ctime): a file is read once, and a file
/// replaced in place (new ctime) is read again. Bounded: cleared when it holds
/// [`GO_CACHE_MAX`] files.
static GO_CACHE: Mutex<Option<GoCache>> = Mutex::new(None);
/// Is-Go verdicts by the executable's (device, inode, ctime seconds, ctime nanoseconds).
type GoCache = HashMap<(u64, u64, i64, i64), bool>;
const GO_CACHE_MAX: usize = 4096;

/// True when the process runs a Go program: its executable, read through /proc/PID/exe (so also
/// in another mount namespace), has Go's build information section `.go.buildinfo`, the
/// `.note.go.buildid` note or the function table `.gopclntab` (the same test as
/// goruntime/binary.rs `read`, which sets the verdict for tracing; cmd/link writes these
/// sections in every Go executable, stripped or not). Only the ELF and section headers are read.
pub fn is_go_process(pid: u32) -> bool {
    let exe = crate::procfs::root::exe(pid);
    let Ok(meta) = std::fs::metadata(&exe) else {
        return false;
    };
    let key = (meta.dev(), meta.ino(), meta.ctime(), meta.ctime_nsec());
    if let Some(&known) = GO_CACHE
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .as_ref()
        .and_then(|cache| cache.get(&key))
    {
        return known;
    }
    // Opened only now: a rescan of known executables costs one stat each.
    let is_go = std::fs::File::open(&exe).is_ok_and(is_go_file);
    let mut cache = GO_CACHE.lock().unwrap_or_else(|e| e.into_inner());
    let cache = cache.get_or_insert_with(HashMap::new);
    if cache.len() >= GO_CACHE_MAX {
        cache.clear();
    }
    cache.insert(key, is_go);
    is_go
}

fn is_go_file(file: std::fs::File) -> bool {
    // ReadCache reads the parts of the file the parser asks for: the headers, not the code.
    let data = object::ReadCache::new(file);
    let Ok(elf) = object::File::parse(&data) else {
        return false;
    };
    [".go.buildinfo", ".note.go.buildid", ".gopclntab"]
        .iter()
        .any(|name| elf.section_by_name(name).is_some())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Child, Command};

    /// A child process that sleeps until killed, reaped on drop.
    struct Sleeper(Child);

    impl Sleeper {
        fn start(program: &Path) -> Self {
            // A copy just written can be busy for a moment ("Text file busy") when another test's
            // fork inherited its descriptor: retry.
            let mut tries = 0;
            let child = loop {
                match Command::new(program).arg("1000").spawn() {
                    Ok(child) => break child,
                    Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && tries < 50 => {
                        tries += 1;
                        std::thread::sleep(std::time::Duration::from_millis(20));
                    }
                    Err(e) => panic!("start {}: {e}", program.display()),
                }
            };
            // Until exec is done, the child's comm and exe are still ours.
            let sleeper = Sleeper(child);
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while std::fs::read_link(format!("/proc/{}/exe", sleeper.pid()))
                .ok()
                .as_deref()
                != std::fs::canonicalize(program).ok().as_deref()
            {
                assert!(std::time::Instant::now() < deadline, "the child never ran");
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            sleeper
        }

        fn pid(&self) -> u32 {
            self.0.id()
        }
    }

    impl Drop for Sleeper {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    /// `sleep` copied under a name of our own, so that no other process on the host matches.
    fn own_sleep(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("leaktrace-targets-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let copy = dir.join(name);
        if !copy.exists() {
            let sleep = which("sleep");
            std::fs::copy(sleep, &copy).unwrap();
        }
        copy
    }

    fn which(program: &str) -> PathBuf {
        std::env::var_os("PATH")
            .and_then(|paths| {
                std::env::split_paths(&paths)
                    .map(|dir| dir.join(program))
                    .find(|p| p.is_file())
            })
            .unwrap_or_else(|| panic!("{program} is not on PATH"))
    }

    fn pids(found: &[Found]) -> Vec<u32> {
        found.iter().map(|f| f.pid).collect()
    }

    #[test]
    fn leaktrace_itself_and_gone_pids_are_never_targets() {
        let me = std::process::id();
        let found = scan(&Selectors {
            pids: vec![me, u32::MAX - 1],
            ..Default::default()
        });
        assert!(found.is_empty(), "{found:?}");
        // Our own comm and cgroup name us, but we are left out anyway.
        let found = scan(&Selectors {
            comms: vec![crate::procfs::comm(me)],
            ..Default::default()
        });
        assert!(!pids(&found).contains(&me));
    }

    #[test]
    fn a_child_is_found_by_pid_comm_and_exe() {
        let program = own_sleep("lt-sel-a");
        let child = Sleeper::start(&program);
        let other = Sleeper::start(&own_sleep("lt-sel-other"));
        let by_pid = scan(&Selectors {
            pids: vec![child.pid()],
            ..Default::default()
        });
        assert_eq!(
            by_pid,
            vec![Found {
                pid: child.pid(),
                selector: format!("pid={}", child.pid())
            }]
        );
        let by_comm = scan(&Selectors {
            comms: vec!["lt-sel-a".into()],
            ..Default::default()
        });
        assert_eq!(pids(&by_comm), vec![child.pid()]);
        assert_eq!(by_comm[0].selector, "comm=lt-sel-a");
        let by_exe = scan(&Selectors {
            exes: vec![program.clone()],
            ..Default::default()
        });
        assert_eq!(pids(&by_exe), vec![child.pid()]);
        assert_eq!(by_exe[0].selector, format!("exe={}", program.display()));
        // The same file by another name (a symbolic link): same (device, inode).
        let link = program.with_file_name("lt-sel-link");
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&program, &link).unwrap();
        let by_link = scan(&Selectors {
            exes: vec![link],
            ..Default::default()
        });
        assert_eq!(pids(&by_link), vec![child.pid()]);
        // A selector matching both, each once, in pid order; the pid selector wins the label.
        let both = scan(&Selectors {
            pids: vec![other.pid()],
            comms: vec!["lt-sel-a".into(), "lt-sel-other".into()],
            ..Default::default()
        });
        let mut expected = vec![child.pid(), other.pid()];
        expected.sort();
        assert_eq!(pids(&both), expected);
        let label = |pid| both.iter().find(|f| f.pid == pid).unwrap().selector.clone();
        assert_eq!(label(other.pid()), format!("pid={}", other.pid()));
        assert_eq!(label(child.pid()), "comm=lt-sel-a");
    }

    #[test]
    fn a_process_that_exited_is_dropped() {
        let program = own_sleep("lt-sel-exit");
        let mut child = Sleeper::start(&program);
        let selectors = Selectors {
            comms: vec!["lt-sel-exit".into()],
            ..Default::default()
        };
        assert_eq!(pids(&scan(&selectors)), vec![child.pid()]);
        child.0.kill().unwrap();
        // A zombie until reaped: already not a target.
        std::thread::sleep(std::time::Duration::from_millis(100));
        assert!(scan(&selectors).is_empty());
        child.0.wait().unwrap();
        assert!(scan(&selectors).is_empty());
    }

    #[test]
    fn long_names_match_what_the_kernel_keeps() {
        assert!(comm_matches("server", "server"));
        assert!(!comm_matches("server", "server2"));
        assert!(comm_matches("payments-gateway-worker", "payments-gatewa"));
        assert!(!comm_matches("payments-gateway-worker", "payments-gatewb"));
        assert!(!comm_matches("payments", "payments-gatewa"));
        let child = Sleeper::start(&own_sleep("lt-sel-a-very-long-name"));
        let found = scan(&Selectors {
            comms: vec!["lt-sel-a-very-long-name".into()],
            ..Default::default()
        });
        assert_eq!(pids(&found), vec![child.pid()]);
    }

    #[test]
    fn cgroups_match_on_path_boundaries() {
        assert!(cgroup_contains("/a/b", "/a/b"));
        assert!(cgroup_contains("/a/b", "/a/b/c.scope"));
        assert!(!cgroup_contains("/a/b", "/a/bc"));
        assert!(!cgroup_contains("/a/b", "/a"));
        assert!(cgroup_contains("/", "/anything"));
        let mount = Path::new("/sys/fs/cgroup");
        assert_eq!(
            cgroup_selector("/sys/fs/cgroup/system.slice/x.service/", Some(mount)),
            "/system.slice/x.service"
        );
        assert_eq!(cgroup_selector("/sys/fs/cgroup", Some(mount)), "/");
        assert_eq!(
            cgroup_selector("system.slice", Some(mount)),
            "/system.slice"
        );
        assert_eq!(cgroup_selector("/kubepods/pod1", None), "/kubepods/pod1");
    }

    #[test]
    fn our_own_cgroup_selects_a_child_in_it() {
        let me = std::process::id();
        let myself = ::procfs::process::Process::myself().unwrap();
        let Some(cgroup) = process_cgroup(&myself) else {
            panic!("this test needs a cgroup v2 host (no 0:: line in /proc/self/cgroup)");
        };
        let child = Sleeper::start(&own_sleep("lt-sel-cg"));
        let found = scan(&Selectors {
            cgroups: vec![cgroup.clone()],
            ..Default::default()
        });
        let hit = found
            .iter()
            .find(|f| f.pid == child.pid())
            .unwrap_or_else(|| panic!("{found:?}"));
        assert_eq!(hit.selector, format!("cgroup={cgroup}"));
        assert!(!pids(&found).contains(&me));
        // A sibling path that only shares a prefix of the name does not.
        let found = scan(&Selectors {
            cgroups: vec![format!("{cgroup}-not")],
            ..Default::default()
        });
        assert!(!pids(&found).contains(&child.pid()), "{found:?}");
    }

    #[test]
    fn kernel_threads_are_never_targets() {
        // kthreadd is pid 2 in the initial pid namespace; elsewhere there is none to see.
        if std::fs::read_to_string("/proc/2/comm").is_ok_and(|c| c.trim() == "kthreadd") {
            let found = scan(&Selectors {
                pids: vec![2],
                comms: vec!["kthreadd".into()],
                cgroups: vec!["/".into()],
                ..Default::default()
            });
            assert!(!pids(&found).contains(&2), "{found:?}");
        }
        // A cgroup selector of the root names every process, and still no kernel thread.
        let found = scan(&Selectors {
            cgroups: vec!["/".into()],
            ..Default::default()
        });
        for f in &found {
            let stat = ::procfs::process::Process::new(f.pid as i32)
                .and_then(|p| p.stat())
                .map(|s| s.flags & PF_KTHREAD);
            assert!(!matches!(stat, Ok(flags) if flags != 0), "{f:?}");
        }
    }

    #[test]
    fn go_executables_are_told_from_others() {
        // This test binary is Rust: not Go.
        assert!(!is_go_process(std::process::id()));
        let child = Sleeper::start(&own_sleep("lt-sel-not-go"));
        let found = scan(&Selectors {
            all_go: true,
            ..Default::default()
        });
        assert!(!pids(&found).contains(&child.pid()));
        for f in &found {
            assert_eq!(f.selector, "all-go");
        }
    }
}
