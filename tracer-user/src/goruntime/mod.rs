//! Goroutines of a running Go program, read from the outside: the Go runtime's own state in
//! process memory (`runtime.allgs` and each `runtime.g`), never written to, the process never
//! stopped. No eBPF here: this is the edge the Go leak analysis is fed from.
//!
//! ```no_run
//! # fn main() -> anyhow::Result<()> {
//! if let Some(go) = tracer_user::goruntime::inspect(4242)? {
//!     let snapshot = go.snapshot()?;
//!     for g in &snapshot.goroutines {
//!         println!("goroutine {} {:?} {:?} created at {:#x}", g.goid, g.status, g.wait_reason, g.gopc);
//!     }
//! }
//! # Ok(()) }
//! ```
//!
//! How it finds things:
//! - Go and its version: `.go.buildinfo` (falls back to `runtime.buildVersion`). Go 1.19 through
//!   1.27 on amd64 are supported.
//! - `runtime.allglen`/`runtime.allgptr` (or `runtime.allgs`) from the symbol table; in stripped
//!   binaries, `runtime.allgs` from the code of `runtime.forEachG`, found through `.gopclntab`.
//! - `runtime.g` field offsets from DWARF; for binaries without DWARF, a per-version table
//!   ([`offsets::table`]).
//! - Wait reason names from the process's own `runtime.waitReasonStrings` (by symbol, or found
//!   in `.data` by its first entries "" and "GC assist marking"), so they match the runtime.
//! - Stacks: a frame-pointer walk from each goroutine's saved `sched.pc/sp/bp` (Go keeps frame
//!   pointers on amd64) inside its own stack bounds.
mod binary;
pub mod godebug;
pub mod incremental;
pub mod offsets;
pub mod pclntab;
#[cfg(test)]
mod robustness;
pub mod timers;
pub mod waits;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};
use serde::{Deserialize, Serialize};

use self::binary::GoBinary;
use self::incremental::ParkedAt;
pub use self::incremental::StackCache;
use self::memory::{u32_at, u64_at, Memory};
pub use self::offsets::GOffsets;
use self::pclntab::LineTable;
use crate::clock::monotonic_ns;
use crate::memory;

/// Versions this module reads, for error messages.
pub const SUPPORTED: &str = "1.19 through 1.27 (amd64)";
const MIN_MINOR: u32 = 19;
const MAX_MINOR: u32 = 27;

/// The most frames kept per goroutine unless [`GoProcess::set_max_frames`] says otherwise.
pub const DEFAULT_MAX_FRAMES: usize = 64;
/// Bytes of each goroutine's stack read in bulk from its saved sp; frames beyond are read one
/// by one.
const STACK_READ_BYTES: u64 = 4096;
/// gs closer than this are read in one copy (they sit side by side in their heap spans).
const G_MERGE_GAP: u64 = 1024;
/// Stacks closer than this are read in one copy. Small stacks sit 2 KiB apart, so this keeps
/// one range per stack: merging them (a 2 KiB gap, copying whole stacks in 1 MiB blocks) trades
/// the kernel's per-range cost for copying ~7x the bytes, and made no difference measured at
/// 100k goroutines (issue 9, with the batch buffers kept), so it is not done.
const STACK_MERGE_GAP: u64 = 256;
/// More goroutines than this in allgs means we read garbage.
const MAX_GOROUTINES: u64 = 50_000_000;
/// Goroutines read per batch: each batch's gs (about 400 bytes each) and used stacks (at most
/// [`STACK_READ_BYTES`] each) are read into buffers freed before the next batch, so a
/// million goroutines do not need a gigabyte of them at once.
const SNAPSHOT_CHUNK: usize = 4 * 1024;
/// A goroutine stack can grow to 1 GB (runtime.maxstacksize on 64-bit).
const MAX_STACK_BYTES: u64 = 1 << 30;

/// `_Gscan`: set while the GC (or a stack scan) holds the goroutine; the rest is the status.
const G_SCAN: u32 = 0x1000;

/// A Go version, from the binary's build info ("go1.21.13").
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct GoVersion {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
}

impl GoVersion {
    /// Parses "go1.21.13", "go1.22", "go1.27.3 X:nocoverageredesign"; None for "devel ..." and
    /// anything else.
    pub fn parse(text: &str) -> Option<GoVersion> {
        let text = text.split_whitespace().next()?.strip_prefix("go")?;
        // Release candidates: "go1.22rc1" is 1.22.0.
        let text = text.split(['r', 'b']).next()?;
        let mut parts = text.split('.');
        let major = parts.next()?.parse().ok()?;
        let minor = parts.next()?.parse().ok()?;
        let patch = parts.next().map_or(Some(0), |p| p.parse().ok())?;
        Some(GoVersion {
            major,
            minor,
            patch,
        })
    }

    pub fn is_supported(&self) -> bool {
        self.major == 1 && (MIN_MINOR..=MAX_MINOR).contains(&self.minor)
    }
}

impl std::fmt::Display for GoVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// A goroutine's status (`runtime._G*`), without the `_Gscan` bit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GStatus {
    Idle,
    Runnable,
    Running,
    Syscall,
    Waiting,
    Dead,
    CopyStack,
    Preempted,
    /// Go 1.26+: found leaked by the runtime's own goroutine leak detector.
    Leaked,
    /// Go 1.26+: a dead goroutine kept for an extra M (`_Gdeadextra`).
    DeadExtra,
    /// A value this module does not know (a newer runtime, or a torn read).
    Other(u32),
}

impl GStatus {
    pub fn from_raw(raw: u32) -> GStatus {
        match raw & !G_SCAN {
            0 => GStatus::Idle,
            1 => GStatus::Runnable,
            2 => GStatus::Running,
            3 => GStatus::Syscall,
            4 => GStatus::Waiting,
            6 => GStatus::Dead,
            8 => GStatus::CopyStack,
            9 => GStatus::Preempted,
            10 => GStatus::Leaked,
            11 => GStatus::DeadExtra,
            other => GStatus::Other(other),
        }
    }

    /// Its saved registers (`sched`) describe where it stopped: it is not on a CPU.
    fn is_parked(self) -> bool {
        matches!(
            self,
            GStatus::Runnable | GStatus::Waiting | GStatus::Preempted | GStatus::Leaked
        )
    }
}

/// One goroutine as read from the target's memory. Plain data: addresses are as the process
/// sees them (load bias included), to symbolize with the process's maps.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GoroutineState {
    /// Address of its `runtime.g` (stable while it lives; reused after it dies).
    pub g_addr: u64,
    pub goid: u64,
    pub status: GStatus,
    /// The `_Gscan` bit was set: the GC was scanning its stack at that moment.
    pub scanning: bool,
    /// Why it is parked, in the target runtime's own words ("chan receive", "select",
    /// "sync.WaitGroup.Wait", "sleep", "IO wait", ...). Only for waiting (and leaked) goroutines;
    /// `waitReason(N)` when the name table could not be read.
    pub wait_reason: Option<String>,
    /// The raw `g.waitreason` code.
    pub wait_reason_code: u8,
    /// PC of the `go` statement that created it: a return address (the instruction after the
    /// call to `runtime.newproc`), so look it up one byte earlier for the statement's line.
    pub gopc: u64,
    /// Entry of the goroutine's function.
    pub startpc: u64,
    /// Saved registers of a parked goroutine (stale for running ones).
    pub sched_pc: u64,
    pub sched_sp: u64,
    pub sched_bp: u64,
    /// `g.waitsince`: `nanotime()` (CLOCK_MONOTONIC ns) when it blocked, or 0. The runtime only
    /// fills it in lazily (during GC), so it is often 0 or later than the true start.
    pub waitsince_ns: i64,
    /// Goroutine that created it (Go 1.21+; None before).
    pub parent_goid: Option<u64>,
    /// `g.trackingSeq`: moves (mod 256) each time the goroutine leaves a CPU, so an unchanged
    /// value across snapshots means it did not run in between. None without DWARF.
    #[serde(default)]
    pub tracking_seq: Option<u8>,
    /// Addresses of the channels a waiting goroutine is parked on (`g.waiting` -> `sudog.c`,
    /// one per select case): empty for other waits, without DWARF, or when the read was torn.
    #[serde(default)]
    pub waits_on: Vec<u64>,
    pub stack_lo: u64,
    pub stack_hi: u64,
    /// User stack, innermost first: `sched_pc` then return addresses (not adjusted by -1), from
    /// a frame-pointer walk. Empty for running goroutines and those in syscalls, whose saved
    /// registers are stale.
    pub stack: Vec<u64>,
}

/// All live goroutines at one moment (the reading takes a few ms; each goroutine is read
/// consistently with itself, not with the others).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Live goroutines (not `_Gdead`/`_Gidle`), in allgs order.
    pub goroutines: Vec<GoroutineState>,
    /// Goroutines skipped because what was read did not hold together (the target changed it
    /// while we read: a torn read), or could not be read.
    pub torn: usize,
    /// Dead and idle gs in allgs (kept by the runtime for reuse).
    pub dead: usize,
    /// CLOCK_MONOTONIC ns when the snapshot started (comparable with `waitsince_ns`).
    pub taken_at_ns: u64,
    /// How long reading took.
    pub elapsed: Duration,
    /// Parked goroutines whose stack (and channels) the last read had walked and that had not
    /// moved since, so were not read again ([`incremental`]); 0 for a read without a cache.
    #[serde(default)]
    pub reused: usize,
    /// Goroutines whose stack was read and walked.
    #[serde(default)]
    pub walked: usize,
}

/// A read of all goroutines in progress ([`GoProcess::start_snapshot`]): the gs listed in
/// `runtime.allgs` when it started, and how far it got. Goroutines created after the start
/// are not in it (as with any read of a running target, it is not an instant).
pub struct SnapshotRead {
    gs: Vec<u64>,
    next: usize,
    torn: usize,
    dead: usize,
    taken_at_ns: u64,
    /// Time spent reading so far (not the time since the start).
    elapsed: Duration,
    /// The last read's walks, and this one's.
    cache: StackCache,
    /// Read buffers kept from one batch to the next.
    buffers: ReadBuffers,
}

/// The buffers a read copies gs, stacks and sudogs into, kept across its batches: allocating
/// them afresh for each batch cost a 100k-goroutine read more in page faults and zeroing than
/// the copies themselves (issue 9's profile). A few MiB: one batch's worth each.
#[derive(Default)]
struct ReadBuffers {
    gs: Vec<u8>,
    stacks: Vec<u8>,
    sudogs: Vec<u8>,
}

impl SnapshotRead {
    /// How many goroutines (gs, dead ones included) are read so far, and in all.
    pub fn progress(&self) -> (usize, usize) {
        (self.next, self.gs.len())
    }

    /// The counts and times of a finished read (`goroutines` is empty: they went to `each`).
    pub fn finish(self) -> Snapshot {
        self.finish_keeping().0
    }

    /// [`SnapshotRead::finish`], and what this read walked, for the next read to reuse
    /// ([`GoProcess::start_snapshot_after`]). Only a complete read's cache forgets the
    /// goroutines that are gone: call it when [`GoProcess::continue_snapshot`] returned true.
    pub fn finish_keeping(mut self) -> (Snapshot, StackCache) {
        let (reused, walked) = if self.next == self.gs.len() {
            self.cache.finish_read()
        } else {
            self.cache.abandon_read();
            (0, 0)
        };
        (
            Snapshot {
                goroutines: Vec::new(),
                torn: self.torn,
                dead: self.dead,
                taken_at_ns: self.taken_at_ns,
                elapsed: self.elapsed,
                reused,
                walked,
            },
            self.cache,
        )
    }

    /// Gives up a read part way: the cache it started with, with what it walked so far.
    pub fn abandon(mut self) -> StackCache {
        self.cache.abandon_read();
        self.cache
    }
}

/// What leaktrace finds in a Go executable file, each way it knows (for tests and diagnostics).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BinaryFacts {
    pub version: GoVersion,
    pub version_string: String,
    pub pie: bool,
    /// runtime.g layout from DWARF (None without DWARF; Some(Err) when unreadable).
    pub dwarf_offsets: Option<Result<GOffsets, String>>,
    /// The built-in layout for this version, if any.
    pub table_offsets: Option<GOffsets>,
    /// runtime.allgs from the symbol table (link address).
    pub allgs_symbol: Option<u64>,
    /// runtime.allgs from the code of runtime.forEachG (link address), as for stripped binaries.
    pub allgs_from_code: Result<u64, String>,
}

/// Whether the executable file at `path` is a Go program (errors: unreadable, not ELF).
pub fn is_go_executable(path: &std::path::Path) -> Result<bool> {
    binary::is_go_executable(path)
}

/// Reads what leaktrace needs from a Go executable file without running it; Ok(None) when it is
/// no Go program.
pub fn read_binary(path: &std::path::Path) -> Result<Option<BinaryFacts>> {
    let Some(binary) = binary::read(path)? else {
        return Ok(None);
    };
    Ok(Some(BinaryFacts {
        version: binary.version,
        version_string: binary.version_string.clone(),
        pie: binary.pie,
        dwarf_offsets: binary
            .dwarf_offsets
            .as_ref()
            .map(|r| r.as_ref().map(|o| *o).map_err(|e| format!("{e:#}"))),
        table_offsets: offsets::table(binary.version.minor),
        allgs_symbol: binary.symbols.get("runtime.allgs").map(|s| s.0),
        allgs_from_code: binary
            .allgs_from_code
            .as_ref()
            .map(|a| *a)
            .map_err(|e| format!("{e:#}")),
    }))
}

/// The `.gopclntab` line table of a Go executable file (link addresses); Ok(None) when it is no
/// Go program.
pub fn read_line_table(path: &std::path::Path) -> Result<Option<LineTable>> {
    match binary::read(path)? {
        Some(binary) => binary.lines.map(Some),
        None => Ok(None),
    }
}

/// Where the runtime.g layout came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OffsetsSource {
    Dwarf,
    VersionTable,
}

/// Where the list of all goroutines was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AllgsSource {
    /// `runtime.allglen` + `runtime.allgptr` symbols.
    AllglenSymbols { allglen: u64, allgptr: u64 },
    /// `runtime.allgs` symbol (slice header).
    AllgsSymbol(u64),
    /// `runtime.allgs` found in the code of `runtime.forEachG` (stripped binaries).
    ForEachGCode(u64),
}

/// A Go process ready to be read. Holds /proc/PID/mem open.
pub struct GoProcess {
    pid: u32,
    exe: PathBuf,
    version: GoVersion,
    version_string: String,
    /// The build info's `DefaultGODEBUG`, if any.
    default_godebug: Option<String>,
    pie: bool,
    bias: u64,
    offsets: GOffsets,
    offsets_source: OffsetsSource,
    allgs: AllgsSource,
    wait_reasons: Vec<String>,
    lines: Option<Arc<LineTable>>,
    /// File offset for the creation uprobe, or why there is none.
    newproc_probe: Result<u64, String>,
    /// File offset for the timer-start uprobe, or why there is none.
    timer_probe: Result<u64, String>,
    memory: Memory,
    max_frames: usize,
    /// runtime.allp (link address), for the timer heaps.
    allp: Option<u64>,
    /// Where the timer fields are, or why that is unknown.
    timer_layout: Result<timers::TimerLayout, String>,
    /// Where the wait objects and run counts are, or why that is unknown.
    wait_layout: Result<waits::WaitLayout, String>,
}

/// Recognises a Go program: Ok(None) when PID runs something else; an error when it is Go but
/// cannot be read (unsupported version, stripped without a known layout, no access).
pub fn inspect(pid: u32) -> Result<Option<GoProcess>> {
    let exe = crate::procfs::root::exe(pid);
    let real_exe = std::fs::read_link(&exe)
        .with_context(|| format!("PID {pid} does not exist or its executable is unreadable"))?;
    let Some(binary) = binary::read(&exe)? else {
        return Ok(None);
    };
    let described = format!(
        "{} (PID {pid}, Go {})",
        real_exe.display(),
        binary.version_string
    );
    if !binary.version.is_supported() {
        bail!(
            "{described}: Go {} is not supported; leaktrace reads goroutines of Go {SUPPORTED}",
            binary.version
        );
    }
    let (offsets, offsets_source) = choose_offsets(&binary, &described)?;
    let allgs = choose_allgs(&binary, &described)?;
    let bias = load_bias(pid, &binary)?;
    let memory = Memory::open(pid)?;
    let mut process = GoProcess {
        pid,
        exe: real_exe,
        version: binary.version,
        version_string: binary.version_string.clone(),
        default_godebug: binary.default_godebug.clone(),
        pie: binary.pie,
        bias,
        offsets,
        offsets_source,
        allgs,
        wait_reasons: Vec::new(),
        lines: None,
        newproc_probe: Err(String::new()),
        timer_probe: Err(String::new()),
        memory,
        max_frames: DEFAULT_MAX_FRAMES,
        allp: binary.symbols.get("runtime.allp").map(|s| s.0),
        timer_layout: match &binary.timer_layout {
            Some(Ok(layout)) => Ok(*layout),
            Some(Err(e)) => Err(format!(
                "the binary's DWARF does not describe the timers: {e:#}"
            )),
            None => Err(
                "no DWARF (built with -ldflags=-w or stripped): the layout of the \
                 runtime's timers is unknown"
                    .into(),
            ),
        },
        wait_layout: match &binary.wait_layout {
            Some(Ok(layout)) => Ok(*layout),
            Some(Err(e)) => Err(format!(
                "the binary's DWARF does not describe g.waiting/sudog: {e:#}"
            )),
            None => Err("no DWARF (built with -ldflags=-w or stripped)".into()),
        },
    };
    process.wait_reasons = process.read_wait_reasons(&binary).unwrap_or_default();
    process.newproc_probe = binary.newproc_probe.map_err(|e| format!("{e:#}"));
    process.timer_probe = binary.timer_probe.map_err(|e| format!("{e:#}"));
    process.lines = binary.lines.ok().map(Arc::new);
    Ok(Some(process))
}

fn choose_offsets(binary: &GoBinary, described: &str) -> Result<(GOffsets, OffsetsSource)> {
    let from_table = offsets::table(binary.version.minor);
    match (&binary.dwarf_offsets, from_table) {
        (Some(Ok(offsets)), _) => Ok((*offsets, OffsetsSource::Dwarf)),
        (_, Some(offsets)) => Ok((offsets, OffsetsSource::VersionTable)),
        (dwarf, None) => {
            let known: Vec<String> = offsets::table_versions()
                .map(|m| format!("1.{m}"))
                .collect();
            let why = match dwarf {
                Some(Err(e)) => format!("its DWARF does not describe runtime.g ({e:#})"),
                _ => "it has no DWARF (built with -ldflags=-w or stripped)".to_string(),
            };
            bail!(
                "{described}: {why}, and leaktrace has no built-in runtime.g layout for Go 1.{}; \
                 built-in layouts: Go {}. Rebuild without -w/-s, or use one of those versions",
                binary.version.minor,
                known.join(", ")
            )
        }
    }
}

fn choose_allgs(binary: &GoBinary, described: &str) -> Result<AllgsSource> {
    let symbol = |name: &str| binary.symbols.get(name).map(|&(addr, _)| addr);
    if let (Some(allglen), Some(allgptr)) = (symbol("runtime.allglen"), symbol("runtime.allgptr")) {
        return Ok(AllgsSource::AllglenSymbols { allglen, allgptr });
    }
    if let Some(allgs) = symbol("runtime.allgs") {
        return Ok(AllgsSource::AllgsSymbol(allgs));
    }
    match &binary.allgs_from_code {
        Ok(addr) if binary.in_data(*addr) => Ok(AllgsSource::ForEachGCode(*addr)),
        Ok(addr) => bail!(
            "{described}: stripped binary, and the runtime.allgs found in runtime.forEachG \
             ({addr:#x}) is outside the data sections: cannot list goroutines"
        ),
        Err(e) => bail!(
            "{described}: stripped binary (no symbol table), and runtime.allgs could not be \
             found another way ({e:#}): cannot list goroutines; rebuild without -ldflags=-s"
        ),
    }
}

/// Where the executable is loaded relative to its link addresses (0 unless PIE).
fn load_bias(pid: u32, binary: &GoBinary) -> Result<u64> {
    if !binary.pie {
        return Ok(0);
    }
    let process = ::procfs::process::Process::new(pid as i32)
        .with_context(|| format!("PID {pid} does not exist"))?;
    let exe_meta = std::fs::metadata(crate::procfs::root::exe(pid))
        .with_context(|| format!("cannot stat /proc/{pid}/exe"))?;
    let maps = process
        .maps()
        .with_context(|| format!("cannot read /proc/{pid}/maps"))?;
    use std::os::unix::fs::MetadataExt as _;
    let start = maps
        .iter()
        .filter(|m| m.inode == exe_meta.ino() && m.offset == 0)
        .map(|m| m.address.0)
        .min()
        .ok_or_else(|| anyhow!("PID {pid}: its executable is not in /proc/{pid}/maps"))?;
    Ok(start.wrapping_sub(binary.first_load_address))
}

impl GoBinary {
    fn in_data(&self, addr: u64) -> bool {
        self.data_sections
            .iter()
            .any(|(_, start, size)| (*start..start + size).contains(&addr))
    }
}

impl GoProcess {
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The executable's path as /proc/PID/exe names it.
    pub fn exe(&self) -> &std::path::Path {
        &self.exe
    }

    pub fn version(&self) -> GoVersion {
        self.version
    }

    /// As the build info says ("go1.21.13").
    pub fn version_string(&self) -> &str {
        &self.version_string
    }

    /// The `DefaultGODEBUG` of the executable's build info (`asynctimerchan=1,...`): the
    /// GODEBUG defaults its main module's `go` line, `godebug` block and `//go:debug` lines
    /// chose. None when the build info records none.
    pub fn default_godebug(&self) -> Option<&str> {
        self.default_godebug.as_deref()
    }

    pub fn is_pie(&self) -> bool {
        self.pie
    }

    /// Process address minus link address of the executable.
    pub fn load_bias(&self) -> u64 {
        self.bias
    }

    pub fn offsets(&self) -> (GOffsets, OffsetsSource) {
        (self.offsets, self.offsets_source)
    }

    pub fn allgs_source(&self) -> AllgsSource {
        self.allgs
    }

    /// The runtime's wait reason names, by code (empty when they could not be read).
    pub fn wait_reasons(&self) -> &[String] {
        &self.wait_reasons
    }

    /// The Go function containing `addr` (a process address), from the binary's `.gopclntab`:
    /// names functions even in stripped binaries. Look return addresses up one byte earlier.
    pub fn function_at(&self, addr: u64) -> Option<String> {
        self.lines
            .as_ref()?
            .function_at(addr.wrapping_sub(self.bias))
    }

    /// The file offset in the executable (`/proc/PID/exe`) for the goroutine-creation uprobe,
    /// or why there is none.
    pub fn creation_probe(&self) -> Result<u64, String> {
        self.newproc_probe.clone()
    }

    /// The file offset for the timer-start uprobe, or why there is none.
    pub fn timer_start_probe(&self) -> Result<u64, String> {
        self.timer_probe.clone()
    }

    /// Where the timer-start probe finds the timer's `f` and the data word of its `arg` inside
    /// the `*timer` that `runtime.addtimer` gets (Go 1.22 and older; from DWARF): None on Go
    /// 1.23+, whose `newTimer` has them in registers, or when the layout is unknown.
    pub fn timer_start_fields(&self) -> Option<(u64, u64)> {
        if self.version.minor >= 23 {
            return None;
        }
        // `arg` is an interface: type word, then data word.
        self.timer_layout.as_ref().ok().map(|l| (l.f, l.arg + 8))
    }

    /// Which register of the timer-start probe identifies the timer in the heap: Go 1.23+'s
    /// `newTimer` gets `arg` (type in RDI, data in RSI) and the timer keeps that data word;
    /// earlier `addtimer` gets the `*timer` itself in RAX.
    pub fn timer_start_key_is_arg(&self) -> bool {
        self.version.minor >= 23
    }

    /// The executable's `.gopclntab` line table (link addresses: subtract [`Self::load_bias`]),
    /// when it is readable.
    pub fn line_table(&self) -> Option<Arc<LineTable>> {
        self.lines.clone()
    }

    /// Where what goroutines wait on (and whether they ran) is read from, or why it is not.
    pub fn wait_layout(&self) -> Result<waits::WaitLayout, String> {
        self.wait_layout.clone()
    }

    pub fn set_max_frames(&mut self, max_frames: usize) {
        self.max_frames = max_frames;
    }

    /// Reads every live goroutine. Fails only when the list of goroutines itself cannot be
    /// read (the process is gone); a goroutine that changes while it is read is skipped and
    /// counted in `torn`.
    pub fn snapshot(&self) -> Result<Snapshot> {
        let mut goroutines = Vec::new();
        let snapshot = self.snapshot_each(|g| goroutines.push(g))?;
        Ok(Snapshot {
            goroutines,
            ..snapshot
        })
    }

    /// [`GoProcess::snapshot`] that hands each goroutine to `each` as it is read, instead of
    /// collecting them (the returned snapshot's `goroutines` is empty; `elapsed` includes the
    /// time spent in `each`).
    pub fn snapshot_each(&self, mut each: impl FnMut(GoroutineState)) -> Result<Snapshot> {
        let mut read = self.start_snapshot()?;
        while !self.continue_snapshot(&mut read, &mut each) {}
        Ok(read.finish())
    }

    /// Starts a read of every live goroutine, to be done a batch at a time with
    /// [`GoProcess::continue_snapshot`]: reading a million goroutines takes seconds, and a
    /// caller with other work (a trace loop) interleaves it. Fails only when the list of
    /// goroutines cannot be read (the process is gone).
    pub fn start_snapshot(&self) -> Result<SnapshotRead> {
        self.start_snapshot_after(StackCache::default())
    }

    /// [`GoProcess::start_snapshot`] that reuses the stacks `cache` holds from the last read
    /// of this process, for the goroutines parked exactly as they were ([`incremental`]): the
    /// goroutines it hands on are the same as a read without the cache would give.
    pub fn start_snapshot_after(&self, cache: StackCache) -> Result<SnapshotRead> {
        let started = Instant::now();
        let taken_at_ns = monotonic_ns();
        let gs = self.all_g_pointers()?;
        Ok(SnapshotRead {
            gs,
            next: 0,
            torn: 0,
            dead: 0,
            taken_at_ns,
            elapsed: started.elapsed(),
            cache,
            buffers: ReadBuffers::default(),
        })
    }

    /// Reads the next [`SNAPSHOT_CHUNK`] goroutines of `read`, handing each live one to
    /// `each`; true when all are read. The gs and their stacks are read into buffers freed
    /// before the next batch, so they stay a few MiB whatever the number of goroutines.
    pub fn continue_snapshot(
        &self,
        read: &mut SnapshotRead,
        mut each: impl FnMut(GoroutineState),
    ) -> bool {
        let started = Instant::now();
        let end = (read.next + SNAPSHOT_CHUNK).min(read.gs.len());
        let (torn, dead) = self.read_goroutines(
            &read.gs[read.next..end],
            read.next,
            &mut read.cache,
            &mut read.buffers,
            &mut each,
        );
        read.next = end;
        read.torn += torn;
        read.dead += dead;
        read.elapsed += started.elapsed();
        read.next == read.gs.len()
    }

    /// Reads the goroutines of the gs at `gs` (from position `first_index` of allgs), handing
    /// each live one to `each`; returns how many were torn and how many dead. The stacks and
    /// channel lists of goroutines parked as `cache` last saw them are taken from it instead of
    /// being read; the others are read, walked and kept in it.
    fn read_goroutines(
        &self,
        gs: &[u64],
        first_index: usize,
        cache: &mut StackCache,
        buffers: &mut ReadBuffers,
        each: &mut impl FnMut(GoroutineState),
    ) -> (usize, usize) {
        let o = &self.offsets;
        let layout = self.wait_layout.as_ref().ok();
        let g_len = o.read_len().max(layout.map_or(0, |l| l.g_read_len()));
        let ranges: Vec<(u64, usize)> = gs.iter().map(|&g| (g, g_len)).collect();
        let g_at = self
            .memory
            .read_coalesced_into(&ranges, G_MERGE_GAP, &mut buffers.gs);
        let g_buf = &buffers.gs;
        let mut torn = 0;
        let mut dead = 0;
        let mut live = Vec::with_capacity(gs.len());
        // Per live goroutine: its position in allgs, what its walk depends on (None: unknown,
        // not kept), and whether its stack and channels came from the cache.
        let mut walks: Vec<(usize, Option<ParkedAt>, bool)> = Vec::with_capacity(gs.len());
        // Each live goroutine's g.waiting (0 unless it is parked on channels and not reused).
        let mut sudogs = Vec::with_capacity(gs.len());
        for (i, (&g_addr, at)) in gs.iter().zip(g_at).enumerate() {
            let Some(at) = at else {
                torn += 1;
                continue;
            };
            let buf = &g_buf[at..at + g_len];
            match self.decode_g(g_addr, buf) {
                Decoded::Live(mut state) => {
                    let mut sudog = 0;
                    if let Some(layout) = layout {
                        state.tracking_seq = buf.get(layout.g_tracking_seq as usize).copied();
                        if state.status == GStatus::Waiting {
                            sudog = u64_at(buf, layout.g_waiting as usize).unwrap_or(0);
                        }
                    }
                    let index = first_index + i;
                    let parked_at = state.tracking_seq.filter(|_| state.status.is_parked()).map(
                        |tracking_seq| ParkedAt {
                            g_addr,
                            goid: state.goid,
                            status: u32_at(buf, o.atomicstatus as usize).unwrap_or(0) & !G_SCAN,
                            wait_reason_code: state.wait_reason_code,
                            tracking_seq,
                            sched_pc: state.sched_pc,
                            sched_sp: state.sched_sp,
                            sched_bp: state.sched_bp,
                            stack_lo: state.stack_lo,
                            stack_hi: state.stack_hi,
                            waiting: sudog,
                        },
                    );
                    let reused = parked_at.and_then(|at| cache.reuse(index, &at));
                    let from_cache = reused.is_some();
                    if let Some((stack, waits_on)) = reused {
                        state.stack = stack;
                        state.waits_on = waits_on;
                        sudog = 0;
                    }
                    sudogs.push((g_addr, sudog));
                    walks.push((index, parked_at, from_cache));
                    live.push(state);
                }
                Decoded::Dead => dead += 1,
                Decoded::Torn => torn += 1,
            }
        }
        // The used part of each parked goroutine's stack that is not reused, in one batch.
        let stack_ranges: Vec<(u64, usize)> = live
            .iter()
            .zip(&walks)
            .map(|(g, &(_, _, from_cache))| {
                if g.status.is_parked() && !from_cache {
                    let len = (g.stack_hi - g.sched_sp).min(STACK_READ_BYTES);
                    (g.sched_sp, len as usize)
                } else {
                    (0, 0)
                }
            })
            .collect();
        let stack_at =
            self.memory
                .read_coalesced_into(&stack_ranges, STACK_MERGE_GAP, &mut buffers.stacks);
        let stack_buf = &buffers.stacks;
        let mut waits_on = match layout {
            Some(layout) => waits::channels(&self.memory, layout, &sudogs, &mut buffers.sudogs),
            None => vec![Vec::new(); live.len()],
        };
        let mut walked = Vec::with_capacity(live.len());
        for ((((mut g, at), &(base, len)), waits_on), (index, parked_at, from_cache)) in live
            .into_iter()
            .zip(stack_at)
            .zip(&stack_ranges)
            .zip(waits_on.iter_mut())
            .zip(walks)
        {
            if from_cache {
                // Not checked below (nothing was walked), but handed on in allgs order.
                walked.push((g, index, None, false, true));
                continue;
            }
            g.waits_on = std::mem::take(waits_on);
            if len > 0 {
                let Some(at) = at else {
                    // Its stack moved or was freed under us.
                    torn += 1;
                    continue;
                };
                g.stack = self.walk(&g, base, &stack_buf[at..at + len]);
            }
            walked.push((g, index, parked_at, len > 0, false));
        }
        // A goroutine that ran between the read of its g and the read of its stack may have been
        // walked over frames it was changing: its walk is handed on as read (the next read
        // walks it again), but kept for reuse only if its g still reads as it did, so that a
        // torn walk is never taken for the goroutine's place in later reads. (Reading the
        // goroutines that moved again, on their own, was tried: on a target whose goroutines
        // run every millisecond it made every read slow and showed them as running.)
        let ranges: Vec<(u64, usize)> = walked
            .iter()
            .map(|(g, _, parked_at, _, _)| (g.g_addr, if parked_at.is_some() { g_len } else { 0 }))
            .collect();
        // Into the gs' buffer: the first read of them is decoded by now.
        let check_at = self
            .memory
            .read_coalesced_into(&ranges, G_MERGE_GAP, &mut buffers.gs);
        let check_buf = &buffers.gs;
        for ((g, index, parked_at, stack_read, from_cache), at) in walked.into_iter().zip(check_at)
        {
            if from_cache {
                each(g);
                continue;
            }
            // Only the kept ones were read again (the others' ranges are empty).
            let still = parked_at.is_some()
                && at.is_some_and(|at| {
                    check_buf
                        .get(at..at + g_len)
                        .is_some_and(|buf| self.holds_still(&g, buf))
                });
            match parked_at {
                Some(parked_at) if still => cache.keep(index, parked_at, &g.stack, &g.waits_on),
                _ if stack_read => cache.walked_uncached(),
                _ => {}
            }
            each(g);
        }
        (torn, dead)
    }

    /// Whether the g read again into `buf` is still parked where `g` was read: the same
    /// status, `g.sched` (rewritten by every park, runtime/proc.go `gopark` -> `mcall`) and,
    /// where the layout has it, `trackingSeq` (moved by every exit from running, `casgstatus`).
    fn holds_still(&self, g: &GoroutineState, buf: &[u8]) -> bool {
        let Decoded::Live(now) = self.decode_g(g.g_addr, buf) else {
            return false;
        };
        let tracking_seq = self
            .wait_layout
            .as_ref()
            .ok()
            .and_then(|layout| buf.get(layout.g_tracking_seq as usize).copied());
        now.goid == g.goid
            && now.status == g.status
            && (now.sched_pc, now.sched_sp, now.sched_bp) == (g.sched_pc, g.sched_sp, g.sched_bp)
            && (g.tracking_seq.is_none() || tracking_seq == g.tracking_seq)
    }

    /// The addresses of all gs (runtime.allgs), dead ones included.
    fn all_g_pointers(&self) -> Result<Vec<u64>> {
        let read = |addr: u64| {
            self.memory
                .read_u64(addr.wrapping_add(self.bias))
                .with_context(|| {
                    format!(
                        "cannot read the Go runtime's goroutine list of PID {} (has it exited?)",
                        self.pid
                    )
                })
        };
        // The runtime publishes allgptr before allglen: read the length first.
        let (len, ptr) = match self.allgs {
            AllgsSource::AllglenSymbols { allglen, allgptr } => {
                let len = read(allglen)?;
                (len, read(allgptr)?)
            }
            AllgsSource::AllgsSymbol(allgs) | AllgsSource::ForEachGCode(allgs) => {
                let len = read(allgs + 8)?;
                (len, read(allgs)?)
            }
        };
        if len > MAX_GOROUTINES || (len > 0 && ptr == 0) {
            bail!(
                "PID {}: the goroutine list reads as {len} entries at {ptr:#x}: not a Go \
                 runtime leaktrace understands",
                self.pid
            );
        }
        let bytes = self
            .memory
            .read_vec(ptr, len as usize * 8)
            .with_context(|| format!("cannot read runtime.allgs of PID {}", self.pid))?;
        Ok(bytes
            .chunks_exact(8)
            .map(|w| u64::from_le_bytes(w.try_into().expect("8 bytes")))
            .filter(|&g| g != 0 && g.is_multiple_of(8))
            .collect())
    }

    fn decode_g(&self, g_addr: u64, buf: &[u8]) -> Decoded {
        let o = &self.offsets;
        let word = |offset: u64| u64_at(buf, offset as usize);
        let (Some(raw_status), Some(goid), Some(lo), Some(hi), Some(sp), Some(pc), Some(bp)) = (
            u32_at(buf, o.atomicstatus as usize),
            word(o.goid),
            word(o.stack_lo),
            word(o.stack_hi),
            word(o.sched_sp),
            word(o.sched_pc),
            word(o.sched_bp),
        ) else {
            return Decoded::Torn;
        };
        let status = GStatus::from_raw(raw_status);
        if raw_status & !(G_SCAN | 0xf) != 0 || matches!(status, GStatus::Other(_)) {
            return Decoded::Torn;
        }
        if matches!(status, GStatus::Dead | GStatus::DeadExtra | GStatus::Idle) {
            return Decoded::Dead;
        }
        if status.is_parked()
            && !(lo < hi && hi - lo <= MAX_STACK_BYTES && (lo..=hi).contains(&sp) && pc != 0)
        {
            return Decoded::Torn;
        }
        let wait_reason_code = buf.get(o.waitreason as usize).copied().unwrap_or(0);
        let wait_reason = matches!(status, GStatus::Waiting | GStatus::Leaked).then(|| {
            self.wait_reasons
                .get(usize::from(wait_reason_code))
                .cloned()
                .unwrap_or_else(|| format!("waitReason({wait_reason_code})"))
        });
        Decoded::Live(GoroutineState {
            g_addr,
            goid,
            status,
            scanning: raw_status & G_SCAN != 0,
            wait_reason,
            wait_reason_code,
            gopc: word(o.gopc).unwrap_or(0),
            startpc: word(o.startpc).unwrap_or(0),
            sched_pc: pc,
            sched_sp: sp,
            sched_bp: bp,
            waitsince_ns: word(o.waitsince).unwrap_or(0) as i64,
            parent_goid: o.parent_goid.and_then(word),
            tracking_seq: None,
            waits_on: Vec::new(),
            stack_lo: lo,
            stack_hi: hi,
            stack: Vec::new(),
        })
    }

    /// Frame-pointer walk of a parked goroutine: gobuf.bp is the frame base of the function
    /// that parked (runtime.gopark/mcall's caller); each frame holds (saved bp, return address)
    /// at its base. `buf` holds the stack from `base` on.
    fn walk(&self, g: &GoroutineState, base: u64, buf: &[u8]) -> Vec<u64> {
        let mut frames = Vec::with_capacity(16);
        if self.max_frames == 0 {
            return frames;
        }
        frames.push(g.sched_pc);
        let word = |addr: u64| -> Option<u64> {
            match addr.checked_sub(base) {
                Some(off) if off + 8 <= buf.len() as u64 => u64_at(buf, off as usize),
                _ => self.memory.read_u64(addr).ok(),
            }
        };
        let mut bp = g.sched_bp;
        let mut floor = g.sched_sp;
        while frames.len() < self.max_frames {
            // A frame base is on this goroutine's stack, above the previous one.
            if bp == 0 || !bp.is_multiple_of(8) || bp < floor || bp.saturating_add(16) > g.stack_hi
            {
                break;
            }
            let (Some(saved_bp), Some(ret)) = (word(bp), word(bp + 8)) else {
                break;
            };
            if ret == 0 {
                break;
            }
            frames.push(ret);
            floor = bp + 16;
            bp = saved_bp;
        }
        frames
    }

    /// The runtime's `waitReasonStrings`, read from the process (so relocations are applied).
    fn read_wait_reasons(&self, binary: &GoBinary) -> Result<Vec<String>> {
        let (addr, count) = match binary.symbols.get("runtime.waitReasonStrings") {
            Some(&(addr, size)) => (addr.wrapping_add(self.bias), (size / 16) as usize),
            None => self.find_wait_reasons(binary)?,
        };
        let table = self.memory.read_vec(addr, count * 16)?;
        let headers: Vec<(u64, usize)> = table
            .chunks_exact(16)
            .map(|e| {
                let ptr = u64_at(e, 0).unwrap_or(0);
                let len = u64_at(e, 8).unwrap_or(0).min(256) as usize;
                (ptr, len)
            })
            .collect();
        let (buf, at) = self.memory.read_ranges(&headers);
        Ok(headers
            .iter()
            .zip(at)
            .enumerate()
            .map(|(code, (&(_, len), at))| match at {
                Some(at) => String::from_utf8_lossy(&buf[at..at + len]).into_owned(),
                None => format!("waitReason({code})"),
            })
            .collect())
    }

    /// Without symbols: `waitReasonStrings` is an array of (ptr, len) in .data that starts with
    /// "" and "GC assist marking" in every supported version; it ends where the entries stop
    /// looking like short strings.
    fn find_wait_reasons(&self, binary: &GoBinary) -> Result<(u64, usize)> {
        const SECOND: &[u8] = b"GC assist marking";
        for (name, start, size) in &binary.data_sections {
            if name != ".data" {
                continue;
            }
            let start = start.wrapping_add(self.bias);
            let data = self.memory.read_vec(start, *size as usize)?;
            let entry = |i: usize| Some((u64_at(&data, i)?, u64_at(&data, i + 8)?));
            for i in (0..data.len().saturating_sub(32)).step_by(8) {
                if entry(i).map(|e| e.1) != Some(0) {
                    continue;
                }
                let Some((ptr, 17)) = entry(i + 16) else {
                    continue;
                };
                let mut text = [0u8; 17];
                if self.memory.read(ptr, &mut text).is_err() || text != SECOND {
                    continue;
                }
                let mut count = 2;
                while let Some((ptr, len)) = entry(i + 16 * count) {
                    if ptr == 0 || len == 0 || len > 64 {
                        break;
                    }
                    count += 1;
                }
                return Ok((start + i as u64, count));
            }
        }
        Err(anyhow!("runtime.waitReasonStrings not found in .data"))
    }
}

enum Decoded {
    Live(GoroutineState),
    Dead,
    Torn,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_go_versions() {
        let v = |major, minor, patch| GoVersion {
            major,
            minor,
            patch,
        };
        assert_eq!(GoVersion::parse("go1.21.13"), Some(v(1, 21, 13)));
        assert_eq!(GoVersion::parse("go1.22"), Some(v(1, 22, 0)));
        assert_eq!(GoVersion::parse("go1.27.3 X:nodwarf5"), Some(v(1, 27, 3)));
        assert_eq!(GoVersion::parse("go1.23rc2"), Some(v(1, 23, 0)));
        assert_eq!(GoVersion::parse("devel +abc"), None);
        assert!(v(1, 19, 8).is_supported());
        assert!(!v(1, 18, 0).is_supported());
        assert!(!v(1, 28, 0).is_supported());
    }

    #[test]
    fn decodes_statuses_with_the_scan_bit() {
        assert_eq!(GStatus::from_raw(4), GStatus::Waiting);
        assert_eq!(GStatus::from_raw(0x1004), GStatus::Waiting);
        assert_eq!(GStatus::from_raw(6), GStatus::Dead);
        assert_eq!(GStatus::from_raw(5), GStatus::Other(5));
    }

    #[test]
    fn a_non_go_process_is_none() {
        // The test binary itself is Rust.
        assert!(inspect(std::process::id()).unwrap().is_none());
    }
}
