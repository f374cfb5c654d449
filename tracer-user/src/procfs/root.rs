//! Paths of the target's files turned into paths leaktrace can open, and the container view of
//! a target in other namespaces.
//!
//! A target in a container has its files in its own mount namespace and root directory: a
//! library it maps may not exist on leaktrace's side, or worse, another file may be there under
//! the same name. Every file read from the target goes through this module, by what names it:
//! - a file the target maps (its executable, its libraries): [`mapped_file`] and [`exe`], which
//!   reach the very inode mapped in any namespace. The path /proc/PID/maps prints is no good for
//!   opening: the kernel prints it relative to the *reader's* root (fs/proc/task_mmu.c
//!   `show_map_vma` → `seq_path` → `d_path`), so for a chrooted target it is neither the
//!   target's path nor one that exists in our mount namespace;
//! - a path the target itself names (its debug directories, perf maps, configuration):
//!   [`in_target_root`], through `/proc/PID/root`, which the kernel resolves to the target's root
//!   directory in its mount namespace (fs/proc/base.c `proc_root_link`).
//!
//! Uprobes key on the inode the path resolves to (kernel/events/uprobes.c `uprobe_register`), so a
//! uprobe attached through `/proc/PID/map_files/...` fires in the target, as the container test
//! checks.
use std::path::{Component, Path, PathBuf};

use anyhow::{bail, Context as _, Result};
use serde::{Deserialize, Serialize};

/// `path` as the target with process id `pid` names it itself (absolute, relative to its own
/// root directory) → `/proc/PID/root/PATH`, openable from leaktrace's mount namespace. Not for
/// /proc/PID/maps paths: see the module documentation, and use [`mapped_file`].
///
/// A path with `..` is refused, since the kernel would walk `..` from the target's root up into
/// the host's tree. An absolute symbolic link inside the target's tree resolves against
/// leaktrace's root, not the target's: pass paths without links where it matters.
///
/// Errors: a relative path, or one with `..`.
pub fn in_target_root(pid: u32, path: &Path) -> Result<PathBuf> {
    if !path.is_absolute() {
        bail!(
            "{} is not an absolute path in PID {pid}'s file system",
            path.display()
        );
    }
    let mut opened = PathBuf::from(format!("/proc/{pid}/root"));
    for component in path.components() {
        match component {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(name) => opened.push(name),
            Component::ParentDir | Component::Prefix(_) => bail!(
                "{} leaves PID {pid}'s root directory ('..'): not opened",
                path.display()
            ),
        }
    }
    Ok(opened)
}

/// The file mapped at `start..end` in the target (a /proc/PID/maps range), by
/// `/proc/PID/map_files/START-END`: the very file mapped, even when deleted or replaced, in any
/// mount namespace. Opening it needs CAP_SYS_ADMIN (fs/proc/base.c `proc_map_files_get_link`).
pub fn mapped_file(pid: u32, start: u64, end: u64) -> PathBuf {
    PathBuf::from(format!("/proc/{pid}/map_files/{start:x}-{end:x}"))
}

/// A path that opens the file the target maps at `start..end`, which /proc/PID/maps shows as
/// `maps_path` with inode `inode`: [`mapped_file`] when we may open map_files, else `maps_path`
/// under the target's root ([`in_target_root`]) if that is the same inode (true for host
/// processes and containers whose root is their mount namespace's root, as pivot_root leaves it).
///
/// Errors: neither reaches the mapped file (no CAP_SYS_ADMIN / CAP_CHECKPOINT_RESTORE for
/// map_files, and a chrooted target or a deleted file).
pub fn mapped_file_path(
    pid: u32,
    start: u64,
    end: u64,
    maps_path: &Path,
    inode: u64,
) -> Result<PathBuf> {
    use std::os::unix::fs::MetadataExt as _;
    let exact = mapped_file(pid, start, end);
    if std::fs::metadata(&exact).is_ok() {
        return Ok(exact);
    }
    let by_root = in_target_root(pid, maps_path)?;
    match std::fs::metadata(&by_root) {
        Ok(meta) if meta.ino() == inode => Ok(by_root),
        _ => bail!(
            "cannot reach {} of PID {pid}: {} needs CAP_SYS_ADMIN, and {} is not the file mapped",
            maps_path.display(),
            exact.display(),
            by_root.display()
        ),
    }
}

/// The target's executable, by `/proc/PID/exe`: the very file it runs, in any mount namespace.
pub fn exe(pid: u32) -> PathBuf {
    PathBuf::from(format!("/proc/{pid}/exe"))
}

/// What a target in a container is called there: shown when it lives in another mount or pid
/// namespace than leaktrace.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerView {
    /// Its cgroup (the v2 path, or the first v1 hierarchy's when there is no v2 one), from
    /// /proc/PID/cgroup: "/system.slice/docker-1f2e….scope".
    pub cgroup: Option<String>,
    /// Its process id inside its own pid namespace (the last NSpid entry of /proc/PID/status).
    pub namespace_pid: Option<u32>,
    /// True when its mount namespace is not leaktrace's (its files are read through
    /// /proc/PID/root).
    pub other_mount_namespace: bool,
    /// True when its pid namespace is not leaktrace's.
    pub other_pid_namespace: bool,
}

/// The container view of `pid`; None when it shares leaktrace's mount and pid namespaces (a
/// plain host process). Errors: the process is gone or its namespaces cannot be read.
pub fn container_view(pid: u32) -> Result<Option<ContainerView>> {
    let process = ::procfs::process::Process::new(pid as i32)
        .with_context(|| format!("PID {pid} does not exist"))?;
    let ours = ::procfs::process::Process::myself().context("cannot read /proc/self")?;
    let namespaces = process
        .namespaces()
        .with_context(|| format!("cannot read /proc/{pid}/ns"))?;
    let our_namespaces = ours.namespaces().context("cannot read /proc/self/ns")?;
    let differs = |kind: &str| {
        let kind = std::ffi::OsStr::new(kind);
        namespaces.0.get(kind) != our_namespaces.0.get(kind)
    };
    let other_mount_namespace = differs("mnt");
    let other_pid_namespace = differs("pid");
    if !other_mount_namespace && !other_pid_namespace {
        return Ok(None);
    }
    let cgroup = process
        .cgroups()
        .ok()
        .and_then(|groups| cgroup_path(&groups.0));
    let namespace_pid = process
        .status()
        .ok()
        .and_then(|status| innermost(&status.nspid?));
    Ok(Some(ContainerView {
        cgroup,
        namespace_pid,
        other_mount_namespace,
        other_pid_namespace,
    }))
}

/// Thread ids of one target as its own pid namespace numbers them (what clone returns to it,
/// what it writes into its mutexes) → as leaktrace's numbers them (the ids of /proc/PID/task,
/// of the eBPF events). Identity when the target shares leaktrace's pid namespace.
///
/// Source: the NSpid line of /proc/PID/task/TID/status (fs/proc/array.c), "host … innermost";
/// kept per thread, and only threads not seen yet are read on a miss.
#[derive(Debug, Default)]
pub struct NamespaceTids {
    pid: u32,
    other_namespace: bool,
    /// Namespace tid → host tid.
    host_of: std::collections::HashMap<u32, u32>,
    /// Host tids whose status was read.
    read: std::collections::HashSet<u32>,
}

impl NamespaceTids {
    pub fn new(pid: u32) -> Self {
        let ns = |proc: &str| std::fs::metadata(format!("/proc/{proc}/ns/pid")).ok();
        let other_namespace = {
            use std::os::unix::fs::MetadataExt as _;
            match (ns(&pid.to_string()), ns("self")) {
                (Some(theirs), Some(ours)) => {
                    (theirs.dev(), theirs.ino()) != (ours.dev(), ours.ino())
                }
                // Unreadable: numbers are taken as they are, as before namespaces were known.
                _ => false,
            }
        };
        NamespaceTids {
            pid,
            other_namespace,
            ..Default::default()
        }
    }

    /// The host tid of the target's thread `ns_tid`; None when no live thread of the target has
    /// that id (it already exited, or is not a thread of the target: a forked child).
    pub fn host_tid(&mut self, ns_tid: u32) -> Option<u32> {
        if !self.other_namespace {
            return Some(ns_tid);
        }
        if let Some(&host) = self.host_of.get(&ns_tid) {
            return Some(host);
        }
        let tasks = std::fs::read_dir(format!("/proc/{}/task", self.pid)).ok()?;
        for host in tasks.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok()) {
            if !self.read.insert(host) {
                continue;
            }
            let status = ::procfs::process::Process::new(self.pid as i32)
                .and_then(|p| p.task_from_tid(host as i32))
                .and_then(|task| task.status());
            if let Some(inner) = status.ok().and_then(|s| innermost(&s.nspid?)) {
                self.host_of.insert(inner, host);
            }
        }
        self.host_of.get(&ns_tid).copied()
    }
}

/// The innermost id of a status file's NSpid ids, host first ("NSpid:\t41020\t7": 7).
fn innermost(nspid: &[i32]) -> Option<u32> {
    u32::try_from(*nspid.last()?).ok()
}

/// The cgroup that names a container among a process's /proc/PID/cgroup lines: the v2 one
/// (hierarchy 0), else systemd's v1 one (`name=systemd`), else any v1 one; the first of these
/// that is not the root "/", since a hybrid host often leaves some hierarchies at the root (a
/// runtime that moved the process moved it everywhere it could). "/" when all are at the root.
fn cgroup_path(groups: &[::procfs::ProcessCGroup]) -> Option<String> {
    let rank = |g: &::procfs::ProcessCGroup| {
        if g.hierarchy == 0 {
            0
        } else if g.controllers.iter().any(|c| c == "name=systemd") {
            1
        } else {
            2
        }
    };
    let mut ranked: Vec<_> = groups.iter().collect();
    ranked.sort_by_key(|g| rank(g));
    ranked
        .iter()
        .find(|g| g.pathname != "/")
        .or(ranked.first())
        .map(|g| g.pathname.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_maps_path_is_opened_under_the_targets_root() {
        assert_eq!(
            in_target_root(42, Path::new("/usr/lib/x86_64-linux-gnu/libc.so.6")).unwrap(),
            Path::new("/proc/42/root/usr/lib/x86_64-linux-gnu/libc.so.6")
        );
        assert_eq!(
            in_target_root(7, Path::new("/app/./bin")).unwrap(),
            Path::new("/proc/7/root/app/bin")
        );
    }

    #[test]
    fn paths_that_could_leave_the_root_are_refused() {
        let err = in_target_root(42, Path::new("/app/../../etc/shadow")).unwrap_err();
        assert!(err.to_string().contains("'..'"), "{err}");
        assert!(in_target_root(42, Path::new("lib/libc.so.6")).is_err());
    }

    #[test]
    fn our_own_root_reaches_the_same_file() {
        // leaktrace's own files through /proc/self's pid: same inode as the plain path.
        use std::os::unix::fs::MetadataExt as _;
        let me = std::process::id();
        let exe = std::fs::read_link("/proc/self/exe").unwrap();
        let through_root = std::fs::metadata(in_target_root(me, &exe).unwrap()).unwrap();
        let direct = std::fs::metadata(&exe).unwrap();
        assert_eq!(
            (through_root.dev(), through_root.ino()),
            (direct.dev(), direct.ino())
        );
    }

    fn group(hierarchy: u32, controllers: &[&str], pathname: &str) -> ::procfs::ProcessCGroup {
        ::procfs::ProcessCGroup {
            hierarchy,
            controllers: controllers.iter().map(|c| c.to_string()).collect(),
            pathname: pathname.into(),
        }
    }

    #[test]
    fn the_container_cgroup_is_the_most_specific_one() {
        // Pure v2 (docker, podman, kubernetes on current hosts).
        let v2 = [group(0, &[], "/system.slice/docker-1f2e.scope")];
        assert_eq!(
            cgroup_path(&v2).as_deref(),
            Some("/system.slice/docker-1f2e.scope")
        );
        // Hybrid, the v2 hierarchy left at the root: systemd's v1 path names it.
        let hybrid = [
            group(4, &["memory"], "/docker/1f2e"),
            group(9, &["name=systemd"], "/docker/1f2e"),
            group(0, &[], "/"),
        ];
        assert_eq!(cgroup_path(&hybrid).as_deref(), Some("/docker/1f2e"));
        let memory_only = [group(4, &["memory"], "/job/7"), group(0, &[], "/")];
        assert_eq!(cgroup_path(&memory_only).as_deref(), Some("/job/7"));
        assert_eq!(cgroup_path(&[group(0, &[], "/")]).as_deref(), Some("/"));
        assert_eq!(cgroup_path(&[]), None);
    }

    #[test]
    fn the_innermost_namespace_id_is_the_last() {
        assert_eq!(innermost(&[41020, 7]), Some(7));
        assert_eq!(innermost(&[512]), Some(512));
        assert_eq!(innermost(&[]), None);
    }

    #[test]
    fn in_our_own_pid_namespace_thread_ids_are_kept() {
        let mut tids = NamespaceTids::new(std::process::id());
        assert_eq!(tids.host_tid(12345), Some(12345));
    }

    #[test]
    fn our_own_mapped_executable_is_reachable() {
        use std::os::unix::fs::MetadataExt as _;
        let me = std::process::id();
        let exe = std::fs::read_link("/proc/self/exe").unwrap();
        let inode = std::fs::metadata(&exe).unwrap().ino();
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        let line = maps
            .lines()
            .find(|l| l.ends_with(exe.to_str().unwrap()))
            .expect("our executable is mapped");
        let (start, end) = line
            .split_whitespace()
            .next()
            .unwrap()
            .split_once('-')
            .unwrap();
        let (start, end) = (
            u64::from_str_radix(start, 16).unwrap(),
            u64::from_str_radix(end, 16).unwrap(),
        );
        let path = mapped_file_path(me, start, end, &exe, inode).unwrap();
        assert_eq!(std::fs::metadata(path).unwrap().ino(), inode);
        // The wrong inode behind the path, and no map_files entry: refused, not guessed.
        assert!(mapped_file_path(me, 1, 2, &exe, inode + 1).is_err());
    }

    #[test]
    fn a_host_process_has_no_container_view() {
        assert_eq!(container_view(std::process::id()).unwrap(), None);
    }
}
