//! Paths as the target sees them, turned into paths leaktrace can open, and the container view of
//! a target in other namespaces.
//!
//! A target in a container names its files (in /proc/PID/maps, its ELF headers) relative to its
//! own root and mount namespace: "/usr/lib/x86_64-linux-gnu/libc.so.6" may not exist on the host,
//! or worse, be a different library there. Every file read from the target goes through
//! [`in_target_root`] (or [`mapped_file`] / [`exe`], which name the very mapped file): the kernel
//! resolves `/proc/PID/root` to the target's root directory in its mount namespace
//! (fs/proc/base.c `proc_root_link`), so the path reaches the inode the target uses. Uprobes key
//! on that inode (kernel/events/uprobes.c `uprobe_register` takes the inode the path resolves to),
//! so a uprobe attached through this path fires in the target.
use std::path::{Component, Path, PathBuf};

use anyhow::{bail, Context as _, Result};
use serde::Serialize;

/// `path` as the target with process id `pid` sees it (absolute, as /proc/PID/maps prints it)
/// → `/proc/PID/root/PATH`, openable from leaktrace's mount namespace.
///
/// Paths from /proc/PID/maps are resolved by the kernel (d_path: no symlinks, no `..`), so they
/// name exactly the mapped file. A path with `..` is refused, since the kernel would walk `..`
/// from the target's root up into the host's tree. A symbolic link *inside* the target's tree
/// that is absolute resolves against leaktrace's root, not the target's: callers pass resolved
/// paths (maps), or use [`mapped_file`] / [`exe`].
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

/// The target's executable, by `/proc/PID/exe`: the very file it runs, in any mount namespace.
pub fn exe(pid: u32) -> PathBuf {
    PathBuf::from(format!("/proc/{pid}/exe"))
}

/// What a target in a container is called there: shown when it lives in another mount or pid
/// namespace than leaktrace.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
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
        .and_then(|status| status.nspid)
        .and_then(|pids| pids.last().copied())
        .and_then(|pid| u32::try_from(pid).ok());
    Ok(Some(ContainerView {
        cgroup,
        namespace_pid,
        other_mount_namespace,
        other_pid_namespace,
    }))
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
    fn a_host_process_has_no_container_view() {
        assert_eq!(container_view(std::process::id()).unwrap(), None);
    }
}
