//! Loading the embedded eBPF object, attaching its tracepoints, and typed access to its maps.
//!
//! Dropping [`Probes`] detaches every program (aya owns the links), so every way out of
//! leaktrace — normal end, Ctrl-C, error, panic unwinding — leaves no probe behind.
use std::path::Path;

use anyhow::{bail, Context as _, Result};
use aya::maps::{Array, HashMap, MapData, PerCpuArray, RingBuf, StackTraceMap};
use aya::programs::raw_trace_point::RawTracePointLinkId;
use aya::programs::uprobe::{UProbeAttachLocation, UProbeLinkId, UProbeScope};
use aya::programs::{RawTracePoint, TracePoint, UProbe};
use aya::{Ebpf, EbpfLoader};
use std::num::NonZeroU32;
use tracer_common::{
    counter, names, thread_slot, window_group, EpollStats, FdKey, FutexKey, PendingCall,
    PendingWait, ThreadSlot, WakeStats,
};

use crate::model::KernelCounters;

/// Every tracepoint program, by (category, tracepoint, what it sees, need): each program is
/// named after its tracepoint. Required ones fail the trace when missing: without the futex
/// calls nothing can be seen. The others lose their part of the report (said in the notes):
/// futex2 exists only on 6.7+, and threads, epoll and timerfd are extras to the core.
const TRACEPOINTS: &[(&str, &str, Subsystem, Need)] = &[
    (
        "syscalls",
        "sys_enter_futex",
        Subsystem::Futex,
        Need::Required,
    ),
    (
        "syscalls",
        "sys_exit_futex",
        Subsystem::Futex,
        Need::Required,
    ),
    (
        "syscalls",
        "sys_enter_futex_wait",
        Subsystem::Futex2,
        Need::Optional,
    ),
    (
        "syscalls",
        "sys_exit_futex_wait",
        Subsystem::Futex2,
        Need::Optional,
    ),
    (
        "syscalls",
        "sys_enter_futex_waitv",
        Subsystem::Futex2,
        Need::Optional,
    ),
    (
        "syscalls",
        "sys_exit_futex_waitv",
        Subsystem::Futex2,
        Need::Optional,
    ),
    (
        "syscalls",
        "sys_enter_futex_wake",
        Subsystem::Futex2,
        Need::Optional,
    ),
    (
        "syscalls",
        "sys_enter_futex_requeue",
        Subsystem::Futex2,
        Need::Optional,
    ),
    (
        "syscalls",
        "sys_enter_clone",
        Subsystem::Threads,
        Need::Optional,
    ),
    (
        "syscalls",
        "sys_exit_clone",
        Subsystem::Threads,
        Need::Optional,
    ),
    (
        "syscalls",
        "sys_enter_clone3",
        Subsystem::Threads,
        Need::Optional,
    ),
    (
        "syscalls",
        "sys_exit_clone3",
        Subsystem::Threads,
        Need::Optional,
    ),
    (
        "syscalls",
        "sys_enter_fork",
        Subsystem::Threads,
        Need::Optional,
    ),
    (
        "syscalls",
        "sys_exit_fork",
        Subsystem::Threads,
        Need::Optional,
    ),
    (
        "syscalls",
        "sys_enter_vfork",
        Subsystem::Threads,
        Need::Optional,
    ),
    (
        "syscalls",
        "sys_exit_vfork",
        Subsystem::Threads,
        Need::Optional,
    ),
    (
        "sched",
        "sched_process_exit",
        Subsystem::Threads,
        Need::Optional,
    ),
    ("task", "task_rename", Subsystem::Threads, Need::Optional),
    ("task", "task_newtask", Subsystem::Threads, Need::Optional),
    (
        "syscalls",
        "sys_enter_epoll_create",
        Subsystem::Epoll,
        Need::Optional,
    ),
    (
        "syscalls",
        "sys_exit_epoll_create",
        Subsystem::Epoll,
        Need::Optional,
    ),
    (
        "syscalls",
        "sys_enter_epoll_create1",
        Subsystem::Epoll,
        Need::Optional,
    ),
    (
        "syscalls",
        "sys_exit_epoll_create1",
        Subsystem::Epoll,
        Need::Optional,
    ),
    (
        "syscalls",
        "sys_enter_epoll_ctl",
        Subsystem::Epoll,
        Need::Optional,
    ),
    (
        "syscalls",
        "sys_exit_epoll_ctl",
        Subsystem::Epoll,
        Need::Optional,
    ),
    (
        "syscalls",
        "sys_enter_epoll_wait",
        Subsystem::Epoll,
        Need::Optional,
    ),
    (
        "syscalls",
        "sys_exit_epoll_wait",
        Subsystem::Epoll,
        Need::Optional,
    ),
    (
        "syscalls",
        "sys_enter_epoll_pwait",
        Subsystem::Epoll,
        Need::Optional,
    ),
    (
        "syscalls",
        "sys_exit_epoll_pwait",
        Subsystem::Epoll,
        Need::Optional,
    ),
    (
        "syscalls",
        "sys_enter_epoll_pwait2",
        Subsystem::Epoll,
        Need::Optional,
    ),
    (
        "syscalls",
        "sys_exit_epoll_pwait2",
        Subsystem::Epoll,
        Need::Optional,
    ),
    (
        "syscalls",
        "sys_enter_timerfd_create",
        Subsystem::Timerfd,
        Need::Optional,
    ),
    (
        "syscalls",
        "sys_exit_timerfd_create",
        Subsystem::Timerfd,
        Need::Optional,
    ),
    (
        "syscalls",
        "sys_enter_timerfd_settime",
        Subsystem::Timerfd,
        Need::Optional,
    ),
    (
        "syscalls",
        "sys_exit_timerfd_settime",
        Subsystem::Timerfd,
        Need::Optional,
    ),
    (
        "syscalls",
        "sys_enter_timerfd_gettime",
        Subsystem::Timerfd,
        Need::Optional,
    ),
    (
        "syscalls",
        "sys_exit_timerfd_gettime",
        Subsystem::Timerfd,
        Need::Optional,
    ),
    (
        "syscalls",
        "sys_enter_read",
        Subsystem::ReadsAndCloses,
        Need::Optional,
    ),
    (
        "syscalls",
        "sys_exit_read",
        Subsystem::ReadsAndCloses,
        Need::Optional,
    ),
    (
        "syscalls",
        "sys_enter_close",
        Subsystem::ReadsAndCloses,
        Need::Optional,
    ),
];

/// How much of the time the syscall tracepoints are attached (`--detail`).
///
/// Any attached syscall tracepoint sets `TIF_SYSCALL_TRACEPOINT` on every task of the host
/// (kernel/tracepoint.c `syscall_regfunc`), so every syscall of every process pays the slow
/// syscall path (~+65 ns here), and each attached program runs for every process's call before
/// it filters on the target (~+300 ns a futex call). `Low` watches syscalls only in probe
/// windows (see `collect::windows`), with two raw `sys_enter`/`sys_exit` programs that dispatch
/// on the syscall number (tracer-ebpf `raw.rs`: they attach and detach in well under a
/// millisecond, where each per-syscall tracepoint took ~45-80 ms to detach); the lifecycle tracepoints (`task_newtask`, `sched_process_exit`,
/// `task_rename`) fire only when a thread is created, exits or is renamed, and the uprobes cost
/// only the target, so those stay attached in both modes.
/// Full is the default (and what a recording without the field was made with): low does not yet
/// give the same findings in every test, see the README's "Cost and detail".
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    clap::ValueEnum,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Detail {
    /// Syscall tracepoints in short probe windows; the rest of the evidence from /proc and
    /// the target's memory.
    #[default]
    Low,
    /// Every probe for the whole trace.
    Full,
}

impl Detail {
    /// What a trace recorded before `--detail` existed was: every probe all the time. Serde's
    /// default for the field in old recordings and reports, whatever the CLI's default is.
    pub fn before_the_field_existed() -> Option<Self> {
        Some(Detail::Full)
    }
}

/// What a probe sees: the status line's counts by subsystem, and (with the category) the
/// window group of a tracepoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Subsystem {
    /// futex(2).
    Futex,
    /// The futex2 calls (futex_wait, futex_waitv, futex_wake, futex_requeue; Linux 6.7+).
    Futex2,
    /// Thread and process creation, exit and renaming (syscalls, task and sched tracepoints,
    /// the `pthread_create` uprobe).
    Threads,
    Epoll,
    Timerfd,
    /// read(2) and close(2) of the fds leaktrace tracks (timerfds, epoll sets).
    ReadsAndCloses,
    /// The low mode's two raw `sys_enter`/`sys_exit` programs: every windowed syscall above,
    /// while a window is open.
    InWindows,
}

impl Subsystem {
    /// Its name in the status line ("futex 8, threads 11, ...").
    pub fn name(self) -> &'static str {
        match self {
            Subsystem::Futex | Subsystem::Futex2 => "futex",
            Subsystem::Threads => "threads",
            Subsystem::Epoll => "epoll",
            Subsystem::Timerfd => "timerfd",
            Subsystem::ReadsAndCloses => "fd reads and closes",
            Subsystem::InWindows => "syscalls in windows",
        }
    }
}

/// The uprobes attached at load for the whole trace (the Go ones come and go in windows of
/// their own, `collect::gocreation`), by the function they are placed on. `Probes::attached`
/// names them `uprobe:LIBRARY:FUNCTION`.
const UPROBES: &[(&str, Subsystem)] = &[("pthread_create", Subsystem::Threads)];

/// The subsystem of a probe as `Probes::attached` names it (`category:tracepoint` or
/// `uprobe:LIBRARY:FUNCTION`), from the tables; None for a name they do not have.
pub fn subsystem_of(probe: &str) -> Option<Subsystem> {
    if let Some(rest) = probe.strip_prefix("uprobe:") {
        let function = rest.rsplit(':').next()?;
        return UPROBES
            .iter()
            .find(|(name, _)| *name == function)
            .map(|&(_, subsystem)| subsystem);
    }
    let (category, tracepoint) = probe.split_once(':')?;
    if category == "raw_syscalls" {
        return Some(Subsystem::InWindows);
    }
    TRACEPOINTS
        .iter()
        .find(|&&(c, t, _, _)| c == category && t == tracepoint)
        .map(|&(_, _, subsystem, _)| subsystem)
}

/// The syscalls by what they show, so that a window watches only what is in question (a
/// suspect futex wait needs the futex calls, not the fd reads).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Group {
    /// futex(2) itself.
    Futex,
    /// The futex2 calls (futex_wait, futex_waitv, futex_wake, futex_requeue; Linux 6.7+),
    /// which the C library and Go do not use (yet).
    Futex2,
    /// clone, clone3, fork, vfork: in the low mode creations come from `task_newtask` instead.
    Threads,
    Epoll,
    /// timerfd calls, and reads and closes of tracked fds.
    Fds,
    /// Not a syscall tracepoint: attached for the whole trace in both modes.
    Lifecycle,
}

impl Group {
    pub const WINDOWED: [Group; 5] = [
        Group::Futex,
        Group::Futex2,
        Group::Threads,
        Group::Epoll,
        Group::Fds,
    ];

    /// The `WINDOW_GROUPS` bits (`tracer_common::window_group`) that make the raw window
    /// programs hand `groups`' syscalls to their handlers; `Lifecycle` has none.
    pub fn mask(groups: &[Group]) -> u32 {
        groups
            .iter()
            .map(|group| match group {
                Group::Futex => window_group::FUTEX,
                Group::Futex2 => window_group::FUTEX2,
                Group::Threads => window_group::THREADS,
                Group::Epoll => window_group::EPOLL,
                Group::Fds => window_group::FDS,
                Group::Lifecycle => 0,
            })
            .fold(0, |mask, bit| mask | bit)
    }

    /// The group of a tracepoint of the table: only syscall tracepoints are windowed.
    fn of(category: &str, subsystem: Subsystem) -> Group {
        if category != "syscalls" {
            return Group::Lifecycle;
        }
        match subsystem {
            Subsystem::Futex => Group::Futex,
            Subsystem::Futex2 => Group::Futex2,
            Subsystem::Threads => Group::Threads,
            Subsystem::Epoll => Group::Epoll,
            Subsystem::Timerfd | Subsystem::ReadsAndCloses => Group::Fds,
            // Not in the tracepoint table: the raw programs are attached on their own.
            Subsystem::InWindows => Group::Lifecycle,
        }
    }
}

/// What the probes are loaded with (`cli::TraceOptions::probes`).
#[derive(Clone, Copy, Debug)]
pub struct ProbeOptions {
    /// Waits that lasted at least this long (ns) get their stacks captured (`--stack-after`).
    pub long_wait_ns: u64,
    pub detail: Detail,
    /// The probes log what a counter cannot say (`--debug-probes`, `probe_log`).
    pub debug_probes: bool,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Need {
    Required,
    Optional,
}

const TRACEFS: &str = "/sys/kernel/tracing";

pub struct Probes {
    pending: Array<MapData, ThreadSlot<PendingWait>>,
    watched: HashMap<MapData, FutexKey, WakeStats>,
    stacks: StackTraceMap<MapData>,
    events: RingBuf<MapData>,
    counters: PerCpuArray<MapData, u64>,
    pending_calls: Array<MapData, ThreadSlot<PendingCall>>,
    tracked_fds: Array<MapData, u32>,
    epoll_stats: HashMap<MapData, FdKey, EpollStats>,
    go_stack_budget: Array<MapData, u64>,
    /// See `task.rs`'s `CREATION_CALLER_SLOTS`.
    creation_caller_slots: HashMap<MapData, u64, u64>,
    go_layout: Array<MapData, u64>,
    /// The Go uprobes (goroutine creation, timer starts) while a window is open.
    go_links: Vec<(&'static str, UProbeLinkId)>,
    go_loaded: Vec<&'static str>,
    detail: Detail,
    /// Low mode: the groups a window may watch (Threads only without `task_newtask`).
    windowed: Vec<Group>,
    /// The `WINDOW_GROUPS` mask of the open window.
    window_groups: Array<MapData, u32>,
    window_mask: u32,
    /// The raw `sys_enter`/`sys_exit` programs attached now (low mode).
    window_links: Vec<(&'static str, RawTracePointLinkId)>,
    /// Detaching the last window's programs (see [`Probes::close_window`]).
    closing: Option<std::thread::JoinHandle<()>>,
    /// The probes' log (`--debug-probes`): written out with each drain.
    probe_log: Option<crate::probe_log::Reader>,
    /// Owns the programs and their links; dropped last.
    ebpf: Ebpf,
    pub attached: Vec<String>,
    pub notes: Vec<String>,
}

/// Fails with what to do when this process may not load eBPF programs.
pub fn check_privileges() -> Result<()> {
    const CAP_SYS_ADMIN: u32 = 21;
    const CAP_PERFMON: u32 = 38;
    const CAP_BPF: u32 = 39;
    let effective = ::procfs::process::Process::myself()
        .and_then(|me| me.status())
        .map_or(0, |status| status.capeff);
    let has = |cap: u32| effective & (1 << cap) != 0;
    if has(CAP_SYS_ADMIN) || (has(CAP_BPF) && has(CAP_PERFMON)) {
        return Ok(());
    }
    bail!(
        "not root: leaktrace loads eBPF programs and reads other processes' memory; run it with \
         sudo, or grant CAP_BPF, CAP_PERFMON and CAP_SYS_PTRACE"
    )
}

/// aya finds tracepoint ids in tracefs; some machines boot without it mounted.
fn ensure_tracefs(notes: &mut Vec<String>) -> Result<()> {
    for dir in [TRACEFS, "/sys/kernel/debug/tracing"] {
        if Path::new(dir).join("events").is_dir() {
            return Ok(());
        }
    }
    let rc = {
        let source = c"tracefs";
        let target = c"/sys/kernel/tracing";
        // SAFETY: mounting tracefs (a pseudo filesystem) with valid C strings.
        unsafe {
            libc::mount(
                source.as_ptr(),
                target.as_ptr(),
                source.as_ptr(),
                0,
                std::ptr::null(),
            )
        }
    };
    if rc != 0 {
        bail!(
            "tracefs is not mounted and mounting it at {TRACEFS} failed ({}); mount it with \
             `mount -t tracefs nodev {TRACEFS}`",
            std::io::Error::last_os_error()
        );
    }
    notes.push(format!("mounted tracefs at {TRACEFS} (it was not mounted)"));
    Ok(())
}

impl Probes {
    /// Every probe attached for the whole trace (`--detail full`).
    pub fn load(target_tgid: u32, long_wait_ns: u64) -> Result<Self> {
        Self::load_with(
            target_tgid,
            &ProbeOptions {
                long_wait_ns,
                detail: Detail::Full,
                debug_probes: false,
            },
        )
    }

    /// Loads every program; `Detail::Low` attaches the syscall tracepoints only in windows (the
    /// first one opens here, so that a started command is traced from its first instruction)
    /// and takes thread creations from `task_newtask`.
    pub fn load_with(target_tgid: u32, options: &ProbeOptions) -> Result<Self> {
        let ProbeOptions {
            long_wait_ns,
            detail,
            debug_probes,
        } = *options;
        let mut notes = Vec::new();
        // Not needed on kernels that account BPF memory to cgroups (5.11+), where it fails
        // without CAP_SYS_RESOURCE; only worth trying for older kernels.
        let limit = libc::rlimit {
            rlim_cur: libc::RLIM_INFINITY,
            rlim_max: libc::RLIM_INFINITY,
        };
        // SAFETY: setrlimit with a valid struct.
        let _ = unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &limit) };
        if !Path::new("/sys/kernel/btf/vmlinux").exists() {
            notes.push(
                "kernel has no BTF (/sys/kernel/btf/vmlinux); the futex probes do not need it"
                    .into(),
            );
        }
        ensure_tracefs(&mut notes)?;

        let object = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/tracer-ebpf"));
        let mut ebpf = EbpfLoader::new()
            .override_global(names::TARGET_TGID, &target_tgid, true)
            .override_global(names::LONG_WAIT_NS, &long_wait_ns, true)
            .override_global(
                names::CREATIONS_AT_NEWTASK,
                &u32::from(detail == Detail::Low && tracepoint_exists("task", "task_newtask")),
                true,
            )
            .override_global(names::DEBUG_PROBES, &u32::from(debug_probes), true)
            .override_global(aya_log::LEVEL, &crate::probe_log::level(debug_probes), true)
            .load(object)
            .context("loading the eBPF programs into the kernel failed")?;
        let probe_log = debug_probes
            .then(|| crate::probe_log::Reader::start(&mut ebpf, target_tgid))
            .transpose()?;

        let mut attached = Vec::new();
        let mut windowed = Vec::new();
        // Without task_newtask (an old or trimmed kernel), creations come from the clone/fork
        // exits in the windows instead.
        let newtask = tracepoint_exists("task", "task_newtask");
        for &(category, tracepoint, subsystem, need) in TRACEPOINTS {
            let group = Group::of(category, subsystem);
            let outcome = match (detail, group) {
                (Detail::Full, _) | (Detail::Low, Group::Lifecycle) => {
                    attach_tracepoint(&mut ebpf, category, tracepoint)
                }
                // task_newtask sends the creations: no syscall is watched for them.
                (Detail::Low, Group::Threads) if newtask => continue,
                // The raw sys_enter/sys_exit programs see these (below), by syscall number.
                (Detail::Low, _) => {
                    if !windowed.contains(&group) {
                        windowed.push(group);
                    }
                    continue;
                }
            };
            match (outcome, need) {
                (Ok(true), _) => attached.push(format!("{category}:{tracepoint}")),
                (Ok(false), Need::Required) => bail!(
                    "this kernel has no {category}:{tracepoint} tracepoint (CONFIG_FTRACE_SYSCALLS off?)"
                ),
                (Ok(false), Need::Optional) => notes.push(format!(
                    "{category}:{tracepoint} does not exist on this kernel; not traced"
                )),
                (Err(err), Need::Required) => return Err(err),
                (Err(err), Need::Optional) => {
                    notes.push(format!("{err:#}; {category}:{tracepoint} not traced"))
                }
            }
        }

        if detail == Detail::Low {
            for program in [names::RAW_SYS_ENTER, names::RAW_SYS_EXIT] {
                let prog: &mut RawTracePoint = ebpf
                    .program_mut(program)
                    .with_context(|| format!("program {program} missing from the eBPF object"))?
                    .try_into()?;
                prog.load()
                    .with_context(|| format!("the kernel rejected program {program}"))?;
                let tracepoint = program.trim_start_matches("raw_");
                attached.push(format!("raw_syscalls:{tracepoint}"));
            }
        }

        // Low mode with task_newtask: no pthread_create uprobe. Its trap costs every creation
        // ~2-3 us, and task_newtask's stack with its stack top already gives the caller of
        // pthread_create by CFI (README "Thread creations in the low mode").
        let uprobe = if detail == Detail::Low && newtask {
            Err(anyhow::anyhow!("not attached in the low mode"))
        } else {
            attach_pthread_create(&mut ebpf, target_tgid)
        };
        match uprobe {
            Ok(library) => attached.push(format!("uprobe:{library}:pthread_create")),
            Err(_) if detail == Detail::Low && newtask => {}
            // A Go program without cgo has no C library and needs none: its threads are
            // the runtime's clone calls, whose stacks are complete (frame pointers).
            Err(_) if libc_path(target_tgid).is_none() && runs_go(target_tgid) => {}
            Err(err) => notes.push(format!(
                "{err:#}; creation stacks of threads come from the clone call alone: complete \
                 for code with frame pointers (Go), shallow through a C library without them"
            )),
        }

        let mut take = |name: &str| {
            ebpf.take_map(name)
                .with_context(|| format!("map {name} missing from the eBPF object"))
        };
        let mut probes = Probes {
            pending: Array::try_from(take(names::PENDING_WAITS)?)?,
            watched: HashMap::try_from(take(names::WATCHED_ADDRS)?)?,
            stacks: StackTraceMap::try_from(take(names::STACKS)?)?,
            events: RingBuf::try_from(take(names::EVENTS)?)?,
            counters: PerCpuArray::try_from(take(names::COUNTERS)?)?,
            pending_calls: Array::try_from(take(names::PENDING_CALLS)?)?,
            tracked_fds: Array::try_from(take(names::TRACKED_FDS)?)?,
            epoll_stats: HashMap::try_from(take(names::EPOLL_STATS)?)?,
            go_stack_budget: Array::try_from(take(names::GO_STACK_BUDGET)?)?,
            creation_caller_slots: HashMap::try_from(take(names::CREATION_CALLER_SLOTS)?)?,
            go_layout: Array::try_from(take(names::GO_LAYOUT)?)?,
            go_links: Vec::new(),
            go_loaded: Vec::new(),
            detail,
            windowed,
            window_groups: Array::try_from(take(names::WINDOW_GROUPS)?)?,
            window_mask: 0,
            window_links: Vec::new(),
            closing: None,
            probe_log,
            ebpf,
            attached,
            notes,
        };
        if detail == Detail::Low {
            probes.open_window(&Group::WINDOWED)?;
        }
        Ok(probes)
    }

    pub fn detail(&self) -> Detail {
        self.detail
    }

    /// Whether syscall tracepoints are attached now (always in the full mode).
    pub fn window_is_open(&self) -> bool {
        self.detail == Detail::Full || !self.window_links.is_empty() || self.closing.is_some()
    }

    /// Makes the window watch `groups` too (low mode; a no-op in the full mode): sets their
    /// bits in `WINDOW_GROUPS` and attaches the raw `sys_enter`/`sys_exit` programs if they are
    /// not attached. Fails when they cannot be attached.
    pub fn open_window(&mut self, groups: &[Group]) -> Result<()> {
        if self.detail == Detail::Full {
            return Ok(());
        }
        let wanted: Vec<Group> = groups
            .iter()
            .copied()
            .filter(|group| self.windowed.contains(group))
            .collect();
        self.window_mask |= Group::mask(&wanted);
        self.window_groups
            .set(0, self.window_mask, 0)
            .context("setting the probe window's syscall groups")?;
        let started = std::time::Instant::now();
        for program in [names::RAW_SYS_ENTER, names::RAW_SYS_EXIT] {
            if self.window_links.iter().any(|(n, _)| *n == program) {
                continue;
            }
            let prog: &mut RawTracePoint = self
                .ebpf
                .program_mut(program)
                .with_context(|| format!("program {program} missing from the eBPF object"))?
                .try_into()?;
            let tracepoint = program.trim_start_matches("raw_");
            let link = prog
                .attach(tracepoint)
                .with_context(|| format!("attaching to the raw tracepoint {tracepoint} failed"))?;
            self.window_links.push((program, link));
        }
        if std::env::var_os("LEAKTRACE_WINDOW_LOG").is_some() {
            eprintln!(
                "leaktrace: window attached in {} us",
                started.elapsed().as_micros()
            );
        }
        Ok(())
    }

    /// Detaches the raw window programs: from here on the host pays nothing for them. Calls in
    /// progress keep their slots; the collector decides whether to trust them
    /// ([`Probes::clear_slots`]).
    pub fn close_window(&mut self) {
        self.window_mask = 0;
        // Nothing is handed on while the links go (and if one outlived a failure).
        let _ = self.window_groups.set(0, 0, 0);
        let mut links = Vec::new();
        for (program, link) in std::mem::take(&mut self.window_links) {
            if let Some(Ok(prog)) = self
                .ebpf
                .program_mut(program)
                .map(<&mut RawTracePoint>::try_from)
            {
                if let Ok(link) = prog.take_link(link) {
                    links.push(link);
                }
            }
        }
        // Releasing a raw tracepoint link unregisters the probe (kernel/bpf/syscall.c
        // `bpf_raw_tp_link_release` -> `bpf_probe_unregister`) and leaves the grace periods to
        // call_rcu; still done on a thread of its own, so that a slow kernel never stalls the
        // collection loop (the window ends when the links are gone, [`Probes::window_closed`]).
        self.closing = Some(std::thread::spawn(move || {
            let started = std::time::Instant::now();
            drop(links);
            if std::env::var_os("LEAKTRACE_WINDOW_LOG").is_some() {
                eprintln!(
                    "leaktrace: window detached in {} us",
                    started.elapsed().as_micros()
                );
            }
        }));
    }

    /// Whether the last window's tracepoints are all detached (joins the closing thread then).
    pub fn window_closed(&mut self) -> bool {
        match &self.closing {
            Some(handle) if !handle.is_finished() => false,
            _ => {
                if let Some(handle) = self.closing.take() {
                    let _ = handle.join();
                }
                true
            }
        }
    }

    /// How many programs the open window has attached (the raw `sys_enter` and `sys_exit`).
    pub fn window_tracepoints(&self) -> usize {
        self.window_links.len()
    }

    /// Whether the last window's tracepoints are still being detached.
    pub fn window_closing(&self) -> bool {
        self.closing
            .as_ref()
            .is_some_and(|handle| !handle.is_finished())
    }

    /// Waits until the last window's tracepoints are all detached.
    pub fn wait_window_closed(&mut self) {
        if let Some(handle) = self.closing.take() {
            let _ = handle.join();
        }
    }

    /// Frees the wait and call slots of `tids` (calls whose exit happened outside a window):
    /// only while no window is open, so no program writes them meanwhile.
    pub fn clear_slots(&mut self, tids: &[u32]) {
        for &tid in tids {
            let index = thread_slot(tid);
            if let Ok(slot) = self.pending.get(&index, 0) {
                if slot.tid == tid && slot.active != 0 {
                    let _ = self.pending.set(index, ThreadSlot { active: 0, ..slot }, 0);
                }
            }
            if let Ok(slot) = self.pending_calls.get(&index, 0) {
                if slot.tid == tid && slot.active != 0 {
                    let _ = self
                        .pending_calls
                        .set(index, ThreadSlot { active: 0, ..slot }, 0);
                }
            }
        }
    }

    /// The kind an fd is tracked as in the kernel (`tracer_common::fd_kind`, 0: not tracked).
    pub fn tracked_fd_kind(&self, fd: u32) -> u32 {
        self.tracked_fds.get(&fd, 0).unwrap_or(0)
    }

    /// Tells the Go uprobes where to read (`tracer_common::go_layout` slots; 0: unknown).
    pub fn set_go_layout(&mut self, values: &[(u32, u64)]) -> Result<()> {
        for &(slot, value) in values {
            self.go_layout
                .set(slot, value, 0)
                .context("setting the Go probes' layout")?;
        }
        Ok(())
    }

    /// Attaches the Go uprobe `program` at `offset` of the target's executable (past a
    /// function's prologue) for a window, allowing it `stacks` stack captures from budget
    /// `slot`, until [`Probes::close_go_probes`].
    pub fn open_go_probe(
        &mut self,
        program: &'static str,
        pid: u32,
        offset: u64,
        slot: u32,
        stacks: u64,
    ) -> Result<()> {
        self.go_stack_budget
            .set(slot, stacks, 0)
            .context("setting a Go probe's stack budget")?;
        if self.go_links.is_empty() {
            // The first probe of a window: the window's hits (`--debug-probes`) count from 0.
            self.go_stack_budget
                .set(tracer_common::go_budget::WINDOW_HITS, 0, 0)
                .context("zeroing the Go probes' window hits")?;
        }
        let prog: &mut UProbe = self
            .ebpf
            .program_mut(program)
            .with_context(|| format!("program {program} missing from the eBPF object"))?
            .try_into()?;
        if !self.go_loaded.contains(&program) {
            prog.load()
                .with_context(|| format!("the kernel rejected program {program}"))?;
            self.go_loaded.push(program);
        }
        let scope = NonZeroU32::new(pid)
            .map(UProbeScope::OneProcess)
            .context("pid 0")?;
        // /proc/PID/exe reaches the very file the target runs, even if it was replaced or is in
        // another mount namespace.
        let link = prog
            .attach(
                UProbeAttachLocation::AbsoluteOffset(offset),
                crate::procfs::root::exe(pid),
                scope,
            )
            .with_context(|| format!("attaching the Go uprobe {program} failed"))?;
        self.go_links.push((program, link));
        Ok(())
    }

    /// Hits of the Go uprobes so far (goroutine creations and timer starts), summed over CPUs.
    pub fn go_probe_hits(&self) -> u64 {
        [counter::GO_CREATIONS, counter::GO_TIMER_STARTS]
            .iter()
            .filter_map(|index| self.counters.get(index, 0).ok())
            .map(|values| values.iter().sum::<u64>())
            .sum()
    }

    /// Removes the Go uprobes of the open window.
    pub fn close_go_probes(&mut self) {
        for (program, link) in std::mem::take(&mut self.go_links) {
            if let Some(prog) = self.ebpf.program_mut(program) {
                if let Ok(prog) = <&mut UProbe>::try_from(prog) {
                    // Dropping the Ebpf detaches them anyway; this is for the windows between.
                    let _ = prog.detach(link);
                }
            }
        }
    }

    /// Which of `tids` are inside a futex wait that began after attach.
    pub fn pending_waits(&self, tids: &[u32]) -> Vec<(u32, PendingWait)> {
        slots_of(&self.pending, tids)
    }

    /// Starts counting wakes on a futex word (idempotent).
    pub fn watch(&mut self, key: FutexKey) -> Result<()> {
        if self.watched.get(&key, 0).is_ok() {
            return Ok(());
        }
        self.watched
            .insert(
                key,
                WakeStats {
                    first_waker_stack_id: -1,
                    ..Default::default()
                },
                0,
            )
            .context("watching a futex word failed (watched-address map full?)")
    }

    pub fn watched(&self) -> Vec<(FutexKey, WakeStats)> {
        self.watched.iter().filter_map(|entry| entry.ok()).collect()
    }

    /// The instruction pointers of a captured stack, innermost first.
    pub fn stack(&self, id: i32) -> Option<Vec<u64>> {
        let id = u32::try_from(id).ok()?;
        let trace = self.stacks.get(&id, 0).ok()?;
        Some(trace.frames().iter().map(|f| f.ip).collect())
    }

    /// Hands at most `max` of the records waiting in the ring buffer to `handle`, oldest
    /// first; true when it stopped at `max` (more may be waiting).
    pub fn drain(&mut self, max: usize, mut handle: impl FnMut(&[u8])) -> bool {
        if let Some(log) = &mut self.probe_log {
            log.flush();
        }
        for _ in 0..max {
            match self.events.next() {
                Some(item) => handle(&item),
                None => return false,
            }
        }
        true
    }

    /// The target's syscalls while a low-mode window was attached, so far (cumulative;
    /// `counter::WINDOW_CALLS`). Not in [`KernelCounters`]: it paces the windows and is no
    /// fact of the report.
    pub fn window_calls(&self) -> u64 {
        self.counter(counter::WINDOW_CALLS)
    }

    /// Records sent or lost by the kernel so far (`counter::EVENTS_SENT` + `EVENTS_LOST`),
    /// without reading every other counter: the window schedule asks every 25 ms.
    pub fn records(&self) -> u64 {
        self.counter(counter::EVENTS_SENT) + self.counter(counter::EVENTS_LOST)
    }

    /// One kernel counter (`tracer_common::counter`), summed over the CPUs.
    fn counter(&self, index: u32) -> u64 {
        self.counters
            .get(&index, 0)
            .map(|values| values.iter().sum())
            .unwrap_or(0)
    }

    pub fn counters(&self) -> KernelCounters {
        let sum = |index: u32| self.counter(index);
        KernelCounters {
            waits_started: sum(counter::WAITS_STARTED),
            waits_finished: sum(counter::WAITS_FINISHED),
            watched_wakes: sum(counter::WATCHED_WAKES),
            events_sent: sum(counter::EVENTS_SENT),
            events_lost: sum(counter::EVENTS_LOST),
            pending_map_full: sum(counter::PENDING_MAP_FULL),
            stack_errors: sum(counter::STACK_ERRORS),
            threads_created: sum(counter::THREADS_CREATED),
            threads_exited: sum(counter::THREADS_EXITED),
            pending_calls_full: sum(counter::PENDING_CALLS_FULL),
            go_creations: sum(counter::GO_CREATIONS),
            go_creation_stacks: sum(counter::GO_CREATION_STACKS),
            go_timer_starts: sum(counter::GO_TIMER_STARTS),
            go_timer_stacks: sum(counter::GO_TIMER_STACKS),
            creation_stacks_skipped: sum(counter::CREATION_STACKS_SKIPPED),
            tracked_fds_full: sum(counter::TRACKED_FDS_FULL),
            epoll_stats_full: sum(counter::EPOLL_STATS_FULL),
            epoll_waits: sum(counter::EPOLL_WAITS),
            timerfd_reads: sum(counter::TIMERFD_READS),
        }
    }

    /// Tells the kernel where the caller of the C library's creating function lies above the
    /// stack pointer at the creating syscall whose user ip is `ip` (bytes), so that its
    /// creation stack budget is per caller (`task.rs`, `creation_stack_allowed`).
    pub fn learn_creation_slot(&mut self, ip: u64, offset: u64) -> Result<()> {
        self.creation_caller_slots
            .insert(ip, offset, 0)
            .context("writing a creation caller slot")
    }

    /// Which of `tids` are inside a tracked call (epoll waits among them).
    pub fn pending_calls(&self, tids: &[u32]) -> Vec<(u32, PendingCall)> {
        slots_of(&self.pending_calls, tids)
    }

    /// Per-epoll-set statistics of the waits that returned since attach.
    pub fn epoll_stats(&self) -> Vec<(FdKey, EpollStats)> {
        self.epoll_stats
            .iter()
            .filter_map(|entry| entry.ok())
            .collect()
    }

    /// Starts filtering reads and closes of an fd that existed before attach (a timerfd or an
    /// epoll set, `tracer_common::fd_kind`).
    pub fn track_fd(&mut self, key: FdKey, kind: u32) -> Result<()> {
        self.tracked_fds.set(key.fd, kind, 0).with_context(|| {
            format!(
                "tracking fd {} failed (beyond the {} fds leaktrace tracks?)",
                key.fd,
                tracer_common::TRACKED_FD_SLOTS
            )
        })
    }
}

fn tracepoint_exists(category: &str, tracepoint: &str) -> bool {
    [TRACEFS, "/sys/kernel/debug/tracing"].iter().any(|dir| {
        Path::new(dir)
            .join("events")
            .join(category)
            .join(tracepoint)
            .exists()
    })
}

impl Drop for Probes {
    fn drop(&mut self) {
        // Every probe is gone when leaktrace lets go of them, the closing window's too.
        self.wait_window_closed();
        // What the probes said since the last drain.
        if let Some(log) = &mut self.probe_log {
            log.flush();
        }
    }
}

/// One mapping of the C library the target has mapped: its path as /proc/PID/maps prints it,
/// its address range and inode.
fn libc_path(pid: u32) -> Option<(String, u64, u64, u64)> {
    let process = ::procfs::process::Process::new(i32::try_from(pid).ok()?).ok()?;
    process.maps().ok()?.iter().find_map(|map| {
        let ::procfs::process::MMapPath::Path(path) = &map.pathname else {
            return None;
        };
        let name = path.file_name()?.to_str()?;
        if !(name.starts_with("libc.so") || name.starts_with("libc-")) {
            return None;
        }
        let (start, end) = map.address;
        Some((path.to_string_lossy().into_owned(), start, end, map.inode))
    })
}

/// Whether `pid` runs a Go executable (checked only once no C library was found mapped).
fn runs_go(pid: u32) -> bool {
    crate::goruntime::is_go_executable(&crate::procfs::root::exe(pid)).unwrap_or(false)
}

/// A uprobe on the target's `pthread_create`, for full creation stacks of C/C++/Rust threads.
/// Returns the library's path as /proc/PID/maps names it.
fn attach_pthread_create(ebpf: &mut Ebpf, pid: u32) -> Result<String> {
    let (library, start, end, inode) =
        libc_path(pid).context("the target has no C library mapped (yet)")?;
    // The maps path need not exist on our side (a container's library), or be another file.
    let opened =
        crate::procfs::root::mapped_file_path(pid, start, end, Path::new(&library), inode)?;
    let prog: &mut aya::programs::UProbe = ebpf
        .program_mut("pthread_create_entry")
        .context("program pthread_create_entry missing from the eBPF object")?
        .try_into()?;
    prog.load()
        .context("the kernel rejected program pthread_create_entry")?;
    let scope = std::num::NonZeroU32::new(pid)
        .map(aya::programs::uprobe::UProbeScope::OneProcess)
        .context("pid 0")?;
    prog.attach("pthread_create", &opened, scope)
        .with_context(|| format!("attaching a uprobe to pthread_create in {library} failed"))?;
    Ok(library)
}

/// Loads the program named after `tracepoint` and attaches it; Ok(false) when this kernel has
/// no such tracepoint.
fn attach_tracepoint(ebpf: &mut Ebpf, category: &str, tracepoint: &str) -> Result<bool> {
    if !load_tracepoint(ebpf, category, tracepoint)? {
        return Ok(false);
    }
    let prog: &mut TracePoint = ebpf
        .program_mut(tracepoint)
        .with_context(|| format!("program {tracepoint} missing from the eBPF object"))?
        .try_into()?;
    prog.attach(category, tracepoint)
        .with_context(|| format!("attaching to {category}:{tracepoint} failed"))?;
    Ok(true)
}

/// Loads the program named after `tracepoint` without attaching it; Ok(false) when this kernel
/// has no such tracepoint.
fn load_tracepoint(ebpf: &mut Ebpf, category: &str, tracepoint: &str) -> Result<bool> {
    let program = tracepoint;
    let exists = tracepoint_exists(category, tracepoint);
    if !exists {
        return Ok(false);
    }
    let prog: &mut TracePoint = ebpf
        .program_mut(program)
        .with_context(|| format!("program {program} missing from the eBPF object"))?
        .try_into()?;
    prog.load()
        .with_context(|| format!("the kernel rejected program {program}"))?;
    Ok(true)
}

/// The calls in progress of `tids`, from their thread slots (one lookup per thread: cheaper
/// than walking all the slots).
fn slots_of<T: Copy>(slots: &Array<MapData, ThreadSlot<T>>, tids: &[u32]) -> Vec<(u32, T)>
where
    ThreadSlot<T>: aya::Pod,
{
    tids.iter()
        .filter_map(|&tid| {
            let slot = slots.get(&thread_slot(tid), 0).ok()?;
            slot.of(tid).map(|value| (tid, value))
        })
        .collect()
}

/// "40 probes: futex 8, threads 11, ..." for the status line; the JSON lists every probe.
pub fn probe_summary(probes: &[String]) -> String {
    let mut counts: Vec<(&str, usize)> = Vec::new();
    for probe in probes {
        // Only a name the tables do not have (none today) is "other".
        let subsystem = subsystem_of(probe).map_or("other", Subsystem::name);
        match counts.iter_mut().find(|(name, _)| *name == subsystem) {
            Some((_, n)) => *n += 1,
            None => counts.push((subsystem, 1)),
        }
    }
    let parts: Vec<String> = counts
        .iter()
        .map(|(name, n)| format!("{name} {n}"))
        .collect();
    format!("{} probes ({})", probes.len(), parts.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_watches_only_the_groups_asked_for() {
        assert_eq!(Group::mask(&[]), 0);
        assert_eq!(Group::mask(&[Group::Futex]), window_group::FUTEX);
        assert_eq!(
            Group::mask(&[Group::Futex, Group::Epoll, Group::Fds, Group::Lifecycle]),
            window_group::FUTEX | window_group::EPOLL | window_group::FDS
        );
        let every = Group::mask(&Group::WINDOWED);
        assert_eq!(every.count_ones(), Group::WINDOWED.len() as u32);
        assert_eq!(every & window_group::THREADS, window_group::THREADS);
    }

    #[test]
    fn probes_are_summarised_by_subsystem() {
        let probes: Vec<String> = [
            "syscalls:sys_enter_futex",
            "syscalls:sys_exit_futex",
            "syscalls:sys_enter_clone3",
            "uprobe:/lib/libc.so.6:pthread_create",
            "syscalls:sys_enter_read",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(
            probe_summary(&probes),
            "5 probes (futex 2, threads 2, fd reads and closes 1)"
        );
    }

    #[test]
    fn every_probe_of_the_tables_has_its_subsystem() {
        for &(category, tracepoint, subsystem, _) in TRACEPOINTS {
            assert_eq!(
                subsystem_of(&format!("{category}:{tracepoint}")),
                Some(subsystem),
                "{category}:{tracepoint}"
            );
        }
        assert_eq!(
            subsystem_of("uprobe:/usr/lib/x86_64-linux-gnu/libc.so.6:pthread_create"),
            Some(Subsystem::Threads)
        );
        assert_eq!(subsystem_of("syscalls:sys_enter_nanosleep"), None);
        assert_eq!(subsystem_of("uprobe:/lib/libc.so.6:malloc"), None);
        assert_eq!(subsystem_of("no colon"), None);
        // Each program is attached once: a name twice in the table would be counted twice.
        let mut names: Vec<&str> = TRACEPOINTS.iter().map(|&(_, t, _, _)| t).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), TRACEPOINTS.len());
    }

    #[test]
    fn the_window_groups_are_those_the_names_gave_before() {
        // The rule the groups were guessed by from the names until the table carried them.
        fn by_name(category: &str, tracepoint: &str) -> Group {
            if category != "syscalls" {
                Group::Lifecycle
            } else if tracepoint.ends_with("_futex") {
                Group::Futex
            } else if tracepoint.contains("futex") {
                Group::Futex2
            } else if tracepoint.contains("clone") || tracepoint.contains("fork") {
                Group::Threads
            } else if tracepoint.contains("epoll") {
                Group::Epoll
            } else {
                Group::Fds
            }
        }
        let mut sizes = std::collections::BTreeMap::new();
        for &(category, tracepoint, subsystem, _) in TRACEPOINTS {
            let group = Group::of(category, subsystem);
            assert_eq!(group, by_name(category, tracepoint), "{tracepoint}");
            *sizes.entry(format!("{group:?}")).or_insert(0) += 1;
        }
        let sizes: Vec<(String, usize)> = sizes.into_iter().collect();
        let expected = [
            ("Epoll", 12),
            ("Fds", 9),
            ("Futex", 2),
            ("Futex2", 6),
            ("Lifecycle", 3),
            ("Threads", 8),
        ];
        assert_eq!(
            sizes,
            expected.map(|(g, n)| (g.to_string(), n)).to_vec(),
            "tracepoints per window group"
        );
    }
}
