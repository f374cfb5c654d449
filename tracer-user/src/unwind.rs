//! Unwinds the user stack of a thread blocked in a syscall, from outside the process and without
//! stopping it: all we have is the stack and instruction pointers the kernel shows in
//! /proc/PID/task/TID/syscall, the process's memory through /proc/PID/mem and its mappings.
//! x86_64 only.
//!
//! Each frame is unwound with the DWARF CFI of the module (`.eh_frame`) when there is one, and with
//! the frame pointer chain otherwise. The kernel does not show rbp, so when the CFI needs it before
//! any frame has restored it, it is recovered by scanning the stack for a saved frame pointer.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ::procfs::process::{MMPermissions, MMapPath, MemoryMap, Process};
use anyhow::{anyhow, Context as _, Result};
use gimli::{
    BaseAddresses, CfaRule, EhFrame, EhFrameHdr, LittleEndian, RegisterRule, UnwindContext,
    UnwindSection as _, X86_64,
};
use object::{Object as _, ObjectSection as _, ObjectSegment as _};

use crate::goruntime::pclntab::{GoFrameLayout, LineTable};
use crate::memory::Memory;

/// How far above the stack pointer to look for a saved frame pointer: deeper than the locals of
/// any sane frame, shallow enough that a miss costs one small read.
const FRAME_POINTER_SCAN_BYTES: u64 = 4096;
/// CFI rows kept (about 48 bytes each): more distinct pcs than a program's call sites in
/// stacks we unwind; past it the cache starts over rather than grow.
const MAX_CACHED_ROWS: usize = 1 << 16;

/// The registers of a thread as the kernel shows them while it is in a syscall.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyscallState {
    pub nr: i64,
    pub args: [u64; 6],
    pub sp: u64,
    pub pc: u64,
}

/// Parses the content of /proc/PID/task/TID/syscall. None when the thread is not in a syscall.
pub fn parse_syscall_line(line: &str) -> Option<SyscallState> {
    // "running" while on a CPU; "-1 SP PC" when blocked outside a syscall (e.g. a page fault).
    let mut fields = line.split_whitespace();
    let nr: i64 = fields.next()?.parse().ok()?;
    if nr < 0 {
        return None;
    }
    let mut values = [0u64; 8];
    for value in &mut values {
        *value = parse_hex(fields.next()?)?;
    }
    if fields.next().is_some() {
        return None;
    }
    let [a0, a1, a2, a3, a4, a5, sp, pc] = values;
    Some(SyscallState {
        nr,
        args: [a0, a1, a2, a3, a4, a5],
        sp,
        pc,
    })
}

fn parse_hex(field: &str) -> Option<u64> {
    u64::from_str_radix(field.strip_prefix("0x")?, 16).ok()
}

/// Reads a process's memory and executable mappings to unwind the user stacks of its blocked threads.
pub struct RemoteUnwinder {
    pid: u32,
    mem: Memory,
    /// Sorted by start address.
    maps: Vec<Mapping>,
    /// Unwind tables per mapped file; None when a file has none or cannot be read, so that it is
    /// tried once only.
    modules: HashMap<FileKey, Option<Module>>,
    /// CFI rows already evaluated, by file and address in it: a row is a pure function of the
    /// file, and the same few call sites (a thread-creation site, a wait loop) are unwound over
    /// and over, each evaluation a search of .eh_frame_hdr and a run of the FDE's program.
    rows: HashMap<(FileKey, u64), Option<CfiRow>>,
    ctx: UnwindContext<usize>,
    /// While completing a stack the kernel took: the copy of its top (address of the first
    /// word, words). Stack reads are then served from it only, never from the live stack, which
    /// has moved on since.
    captured: Option<(u64, Vec<u64>)>,
    /// The Go executable's line table and load bias: Go code has no .eh_frame, and its own
    /// traceback unwinds with the table's SP deltas instead.
    go: Option<(Arc<LineTable>, u64)>,
}

impl RemoteUnwinder {
    /// Opens /proc/PID/mem and reads /proc/PID/maps.
    pub fn new(pid: u32) -> Result<Self> {
        let mem = Memory::open(pid)?;
        let maps = read_maps(pid)?;
        Ok(RemoteUnwinder {
            pid,
            mem,
            maps,
            modules: HashMap::new(),
            rows: HashMap::new(),
            ctx: UnwindContext::new(),
            captured: None,
            go: None,
        })
    }

    /// Unwinds the frames of the Go executable as the Go runtime's traceback does
    /// (runtime/traceback.go): the return address is at SP + the `pcsp` table's value for the pc,
    /// which holds in assembly functions without frame pointers (`Syscall6`) as well, and the walk
    /// ends at a top frame or one that writes SP (`mcall`, `systemstack`), past which the memory
    /// above SP belongs to another stack. `load_bias`: run-time minus link address.
    pub fn set_go_line_table(&mut self, table: Arc<LineTable>, load_bias: u64) {
        self.go = Some((table, load_bias));
    }

    /// The Go frame layout at `pc` (a run-time address), when it is Go code.
    fn go_layout(&self, pc: u64) -> Option<GoFrameLayout> {
        let (table, bias) = self.go.as_ref()?;
        let link = pc.checked_sub(*bias)?;
        if !table.text_range().contains(&link) {
            return None;
        }
        table.frame_layout(link)
    }

    fn go_step(&self, regs: &Regs, layout: GoFrameLayout) -> Option<Regs> {
        if layout.last {
            return None;
        }
        let ra_at = regs.sp.checked_add(u64::from(layout.sp_delta))?;
        let ra = self.read_u64(ra_at)?;
        // A Go frame that has one saves the caller's rbp right below its return address; it
        // matters only when the walk leaves Go code (cgo, the C library).
        let fp = if layout.sp_delta >= 8 {
            self.read_u64(ra_at - 8)
        } else {
            regs.fp
        };
        Some(Regs {
            pc: ra,
            sp: ra_at.checked_add(8)?,
            fp,
        })
    }

    /// Return addresses of the stack, innermost first: frame 0 is `pc` itself, then each caller's
    /// return address (not adjusted by -1). Stops at max_frames, at a zero or invalid return
    /// address, or when it cannot make progress.
    pub fn unwind_blocked(&mut self, pc: u64, sp: u64, max_frames: usize) -> Vec<u64> {
        let mut frames = Vec::new();
        if max_frames == 0 {
            return frames;
        }
        frames.push(pc);
        // Threads and libraries come and go after we read the maps: a stack or code we do not
        // know is the sign of a stale copy.
        if self.mapping(pc).is_none() || self.mapping(sp).is_none() {
            if let Ok(maps) = read_maps(self.pid) {
                self.maps = maps;
            }
        }
        let mut regs = Regs { pc, sp, fp: None };
        while frames.len() < max_frames {
            let innermost = frames.len() == 1;
            let Some(caller) = self.step(&regs, innermost) else {
                break;
            };
            // A stack only grows down: a caller frame below or at ours means we are lost, and
            // requiring progress is what guarantees the walk ends.
            if caller.sp <= regs.sp || !self.is_executable(caller.pc) {
                break;
            }
            frames.push(caller.pc);
            regs = caller;
        }
        frames
    }

    /// Completes a user stack taken by the kernel's frame-pointer walk (`ips`: innermost pc, then
    /// the return address at `bp + 8`, and so on up the rbp chain), given the user `sp` and `bp`
    /// at that moment and a copy of the stack `words` from `sp` up.
    ///
    /// The walk assumes every frame, the innermost included, has pushed its frame pointer. A
    /// libc syscall wrapper or a function stopped at its first instruction has not: its caller's
    /// return address is on the stack but not in the rbp chain, so the walk skips that caller.
    /// Here the CFI (.eh_frame) unwinds the innermost frames from `sp` over the copied words
    /// until the frame whose base is `bp`, whose caller is the walk's second entry, and splices
    /// the two. Returns `ips` unchanged when the innermost frame already has its frame base in
    /// rbp, or when the frames cannot be followed (no CFI, beyond the copy): then the walk is
    /// the best we have. When the CFI shows that rbp was not the frame base (code that uses rbp
    /// as a general register), the walk beyond is not trusted and only the CFI frames are kept.
    pub fn complete_kernel_stack(
        &mut self,
        ips: &[u64],
        sp: u64,
        bp: u64,
        words: &[u64],
        max_frames: usize,
    ) -> Vec<u64> {
        let Some(&pc) = ips.first() else {
            return Vec::new();
        };
        if self.mapping(pc).is_none() {
            if let Ok(maps) = read_maps(self.pid) {
                self.maps = maps;
            }
        }
        self.captured = Some((sp, words.to_vec()));
        let completed = self.splice_kernel_stack(ips, sp, bp, max_frames);
        self.captured = None;
        completed.unwrap_or_else(|| ips.iter().copied().take(max_frames).collect())
    }

    fn splice_kernel_stack(
        &mut self,
        ips: &[u64],
        sp: u64,
        bp: u64,
        max_frames: usize,
    ) -> Option<Vec<u64>> {
        let mut frames = vec![ips[0]];
        let mut regs = Regs {
            pc: ips[0],
            sp,
            fp: Some(bp),
        };
        while frames.len() < max_frames {
            let innermost = frames.len() == 1;
            let lookup_pc = if innermost {
                regs.pc
            } else {
                regs.pc.checked_sub(1)?
            };
            let Some(row) = self.cfi_row(lookup_pc) else {
                if !innermost {
                    return None;
                }
                // A syscall stub whose CFI ends before its syscall (glibc's clone3,
                // sysdeps/unix/sysv/linux/x86_64/clone3.S: `cfi_endproc` then `syscall`) is a
                // frameless leaf there: its return address is at sp, and rbp is untouched.
                let caller = self.leaf_step(regs.sp)?;
                frames.push(caller.pc);
                regs = Regs {
                    fp: regs.fp,
                    ..caller
                };
                continue;
            };
            if matches!(row.cfa_base, CfaBase::Rbp) && regs.fp == Some(bp) {
                // This frame's base is where the kernel's walk started: its caller is ips[1].
                frames.extend(ips.iter().skip(1).copied());
                frames.truncate(max_frames);
                return Some(frames);
            }
            let Some(caller) = self.cfi_step(&regs, &row) else {
                // The copy ends before the caller's frame: with frames found past the walk's
                // start (rbp clobbered), they are all we can trust; else the walk stands.
                return (frames.len() > 1 && regs.fp != Some(bp)).then_some(frames);
            };
            if caller.sp <= regs.sp || !self.is_executable(caller.pc) {
                return None;
            }
            frames.push(caller.pc);
            regs = caller;
        }
        Some(frames)
    }

    /// The registers of the caller of the frame `regs` describes.
    fn step(&mut self, regs: &Regs, innermost: bool) -> Option<Regs> {
        // A return address may point just past the end of its function (a call to a function
        // that does not return), so it is looked up as the call instruction it follows. The
        // innermost pc is after a `syscall`, which is never last.
        let lookup_pc = if innermost {
            regs.pc
        } else {
            regs.pc.checked_sub(1)?
        };
        if let Some(layout) = self.go_layout(lookup_pc) {
            return self.go_step(regs, layout);
        }
        match self.cfi_row(lookup_pc) {
            Some(row) => self.cfi_step(regs, &row),
            None => self.heuristic_step(regs, innermost),
        }
    }

    fn cfi_step(&mut self, regs: &Regs, row: &CfiRow) -> Option<Regs> {
        let (fp, base) = match row.cfa_base {
            CfaBase::Rsp => (regs.fp, regs.sp),
            CfaBase::Rbp => {
                let fp = match regs.fp {
                    Some(fp) => fp,
                    None => self.find_frame_pointer(regs.sp)?,
                };
                (Some(fp), fp)
            }
        };
        let cfa = base.checked_add_signed(row.cfa_offset)?;
        let ra = match row.ra {
            SavedAt::Offset(offset) => self.read_u64(cfa.checked_add_signed(offset)?)?,
            // The outermost frame (_start, clone3) marks its return address undefined: no caller.
            SavedAt::Unchanged | SavedAt::Unknown => return None,
        };
        let fp = match row.rbp {
            SavedAt::Offset(offset) => Some(self.read_u64(cfa.checked_add_signed(offset)?)?),
            SavedAt::Unchanged => fp,
            SavedAt::Unknown => None,
        };
        Some(Regs {
            pc: ra,
            sp: cfa,
            fp,
        })
    }

    /// For code without CFI (Go, JIT, stripped binaries): frame pointers, which such code
    /// usually keeps.
    fn heuristic_step(&mut self, regs: &Regs, innermost: bool) -> Option<Regs> {
        if let Some(fp) = regs.fp {
            return self.frame_pointer_step(regs.sp, fp);
        }
        // Only the innermost frame can be a leaf, and a leaf often has no frame at all (Go's
        // runtime.futex, raw syscall stubs): its return address is then right at sp.
        if innermost {
            if let Some(caller) = self.leaf_step(regs.sp) {
                return Some(caller);
            }
        }
        let fp = self.find_frame_pointer(regs.sp)?;
        self.frame_pointer_step(regs.sp, fp)
    }

    fn leaf_step(&mut self, sp: u64) -> Option<Regs> {
        let ra = self.read_u64(sp)?;
        if !self.is_return_address(ra) {
            return None;
        }
        Some(Regs {
            pc: ra,
            sp: sp.checked_add(8)?,
            // A frameless leaf does not touch rbp: it still holds the caller's frame base, which
            // we do not know.
            fp: None,
        })
    }

    fn frame_pointer_step(&mut self, sp: u64, fp: u64) -> Option<Regs> {
        let stack_end = self.mapping(sp)?.end;
        // A saved rbp of 0 is how a frame pointer chain ends, and anything outside our stack is
        // garbage: either way we cannot go on.
        if fp < sp || fp.checked_add(16)? > stack_end {
            return None;
        }
        let saved_fp = self.read_u64(fp)?;
        let ra = self.read_u64(fp + 8)?;
        if !self.is_return_address(ra) {
            return None;
        }
        Some(Regs {
            pc: ra,
            sp: fp + 16,
            fp: Some(saved_fp),
        })
    }

    /// Recovers the frame base (rbp) of the frame whose stack pointer is `sp`. The kernel does not
    /// show rbp for a blocked thread, and glibc, which holds the syscall, does not use it as a
    /// frame pointer, so it still holds the frame base of the first caller built with frame
    /// pointers: that frame starts with a (saved rbp, return address) pair somewhere above sp.
    fn find_frame_pointer(&mut self, sp: u64) -> Option<u64> {
        let sp = sp.checked_next_multiple_of(8)?;
        let stack_end = self.mapping(sp)?.end;
        let len = stack_end.checked_sub(sp)?.min(FRAME_POINTER_SCAN_BYTES + 8);
        let words = self.read_words(sp, len)?;
        for (index, pair) in words.windows(2).enumerate() {
            let base = sp + 8 * index as u64;
            let (saved_fp, ra) = (pair[0], pair[1]);
            // The caller's frame is above this one's (saved rbp, return address) pair, or there
            // is no caller frame with a frame pointer (0).
            let chains_up = saved_fp == 0 || (saved_fp >= base + 16 && saved_fp < stack_end);
            if chains_up && self.is_return_address(ra) {
                return Some(base);
            }
        }
        None
    }

    /// Whether `ra` looks like a return address: in code, right after a call instruction. Used
    /// for addresses found without CFI, which may be stale data.
    fn is_return_address(&mut self, ra: u64) -> bool {
        if !self.is_executable(ra) {
            return false;
        }
        let Some(start) = ra.checked_sub(CALL_WINDOW as u64) else {
            return false;
        };
        let mut code = [0u8; CALL_WINDOW];
        if self.mem.read(start, &mut code).is_err() {
            return false;
        }
        match call_ending_at(&code) {
            Some(Call::Direct { rel32 }) => ra
                .checked_add_signed(i64::from(rel32))
                .is_some_and(|target| self.is_executable(target)),
            Some(Call::Indirect) => true,
            None => false,
        }
    }

    /// Whether `a` and `b` lie in the same mapped file (a library or the executable).
    pub fn same_file(&self, a: u64, b: u64) -> bool {
        match (self.mapping(a), self.mapping(b)) {
            (Some(x), Some(y)) => x.path.is_some() && x.path == y.path,
            _ => false,
        }
    }

    fn is_executable(&self, addr: u64) -> bool {
        self.mapping(addr).is_some_and(|m| m.executable)
    }

    fn mapping(&self, addr: u64) -> Option<&Mapping> {
        let index = self.maps.partition_point(|m| m.end <= addr);
        self.maps.get(index).filter(|m| m.start <= addr)
    }

    /// The CFI row for `pc`, when its module has unwind tables we can use.
    fn cfi_row(&mut self, pc: u64) -> Option<CfiRow> {
        let mapping = self.mapping(pc).filter(|m| m.executable)?;
        let key = mapping.file?;
        let file_offset = pc - mapping.start + mapping.offset;
        // Finding the file costs a stat of /proc/PID/map_files: only on a module's first use.
        let opened = (!self.modules.contains_key(&key)).then(|| mapping.file_path(self.pid));
        if let Some(opened) = opened {
            let module = opened.and_then(|path| Module::load(&path).ok());
            self.modules.insert(key, module);
        }
        let module = self.modules.get(&key)?.as_ref()?;
        let address = module.address_of_file_offset(file_offset)?;
        if let Some(row) = self.rows.get(&(key, address)) {
            return *row;
        }
        let row = module.row(&mut self.ctx, address);
        if self.rows.len() >= MAX_CACHED_ROWS {
            self.rows.clear();
        }
        self.rows.insert((key, address), row);
        row
    }

    fn read_u64(&self, addr: u64) -> Option<u64> {
        if let Some((base, words)) = &self.captured {
            let index = usize::try_from(addr.checked_sub(*base)? / 8).ok()?;
            return (addr % 8 == base % 8).then(|| words.get(index).copied())?;
        }
        self.mem.read_u64(addr).ok()
    }

    fn read_words(&self, addr: u64, len: u64) -> Option<Vec<u64>> {
        if self.captured.is_some() {
            // Only the CFI is followed over a copy: no scans.
            return None;
        }
        let buf = self.mem.read_vec(addr, usize::try_from(len).ok()?).ok()?;
        Some(
            buf.chunks_exact(8)
                .filter_map(|chunk| chunk.try_into().ok().map(u64::from_le_bytes))
                .collect(),
        )
    }
}

/// What we know of a frame's registers. rbp is None when unknown.
#[derive(Debug, Clone, Copy)]
struct Regs {
    pc: u64,
    sp: u64,
    fp: Option<u64>,
}

/// A file, however many times and by whichever path it is mapped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct FileKey {
    dev: (i32, i32),
    inode: u64,
}

#[derive(Debug, Clone)]
pub(crate) struct Mapping {
    pub(crate) start: u64,
    pub(crate) end: u64,
    pub(crate) offset: u64,
    pub(crate) executable: bool,
    file: Option<FileKey>,
    pub(crate) path: Option<PathBuf>,
}

impl Mapping {
    fn from_procfs(map: &MemoryMap) -> Mapping {
        let path = match &map.pathname {
            MMapPath::Path(path) if map.inode != 0 => Some(path.clone()),
            _ => None,
        };
        Mapping {
            start: map.address.0,
            end: map.address.1,
            offset: map.offset,
            executable: map.perms.contains(MMPermissions::EXECUTE),
            file: path.as_ref().map(|_| FileKey {
                dev: map.dev,
                inode: map.inode,
            }),
            path,
        }
    }

    /// Where to open the mapped file from our side (see `procfs::root::mapped_file_path`).
    pub(crate) fn file_path(&self, pid: u32) -> Option<PathBuf> {
        let (path, file) = (self.path.as_ref()?, self.file?);
        crate::procfs::root::mapped_file_path(pid, self.start, self.end, path, file.inode).ok()
    }
}

pub(crate) fn read_maps(pid: u32) -> Result<Vec<Mapping>> {
    let pid_i32 = i32::try_from(pid).map_err(|_| anyhow!("invalid pid {pid}"))?;
    let maps = Process::new(pid_i32)
        .and_then(|process| process.maps())
        .with_context(|| format!("cannot read /proc/{pid}/maps"))?;
    let mut maps: Vec<Mapping> = maps.iter().map(Mapping::from_procfs).collect();
    maps.sort_by_key(|m| m.start);
    Ok(maps)
}

/// The unwind tables of one ELF file, in the file's own (link-time) addresses.
/// The sections are kept as bytes and parsed on each lookup, which costs a few header reads, so
/// that gimli's borrowed readers need no self-referential struct.
struct Module {
    eh_frame: Vec<u8>,
    eh_frame_hdr: Option<Vec<u8>>,
    bases: BaseAddresses,
    segments: Vec<Segment>,
}

/// A PT_LOAD segment: where a range of the file is meant to be in memory.
struct Segment {
    file_offset: u64,
    file_size: u64,
    address: u64,
}

impl Module {
    fn load(path: &Path) -> Result<Module> {
        let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        // Only the headers and unwind sections are read, not a whole (possibly huge) binary.
        let cache = object::ReadCache::new(file);
        let elf = object::File::parse(&cache)?;
        let section = |name: &str| -> Option<(u64, Vec<u8>)> {
            let section = elf.section_by_name(name)?;
            Some((section.address(), section.data().ok()?.to_vec()))
        };
        let (eh_frame_address, eh_frame) =
            section(".eh_frame").ok_or_else(|| anyhow!("no .eh_frame"))?;
        let mut bases = BaseAddresses::default().set_eh_frame(eh_frame_address);
        if let Some(text) = elf.section_by_name(".text") {
            bases = bases.set_text(text.address());
        }
        let eh_frame_hdr = section(".eh_frame_hdr").map(|(address, data)| {
            bases = bases.clone().set_eh_frame_hdr(address);
            data
        });
        let segments = elf
            .segments()
            .map(|segment| {
                let (file_offset, file_size) = segment.file_range();
                Segment {
                    file_offset,
                    file_size,
                    address: segment.address(),
                }
            })
            .collect();
        Ok(Module {
            eh_frame,
            eh_frame_hdr,
            bases,
            segments,
        })
    }

    /// Maps a file offset to the file's own address space, which is what its tables use: a
    /// mapping's start tells where the file offset it maps landed, and only the segments know
    /// which address that offset was linked at (PIE and shared objects are relocated as a whole,
    /// but segments are not at their file offsets).
    fn address_of_file_offset(&self, file_offset: u64) -> Option<u64> {
        self.segments
            .iter()
            .find(|s| file_offset >= s.file_offset && file_offset - s.file_offset < s.file_size)
            .map(|s| s.address + (file_offset - s.file_offset))
    }

    fn row(&self, ctx: &mut UnwindContext<usize>, address: u64) -> Option<CfiRow> {
        let mut eh_frame = EhFrame::new(&self.eh_frame, LittleEndian);
        eh_frame.set_address_size(8);
        let eh_frame_hdr = self.eh_frame_hdr.as_deref().and_then(|hdr| {
            EhFrameHdr::new(hdr, LittleEndian)
                .parse(&self.bases, 8)
                .ok()
        });
        let get_cie = EhFrame::cie_from_offset;
        let row = match eh_frame_hdr.as_ref().and_then(|hdr| hdr.table()) {
            Some(table) => {
                table.unwind_info_for_address(&eh_frame, &self.bases, ctx, address, get_cie)
            }
            // Without the sorted table of .eh_frame_hdr, a linear search of .eh_frame.
            None => eh_frame.unwind_info_for_address(&self.bases, ctx, address, get_cie),
        }
        .ok()?;
        let (cfa_base, cfa_offset) = match *row.cfa() {
            CfaRule::RegisterAndOffset { register, offset } if register == X86_64::RSP => {
                (CfaBase::Rsp, offset)
            }
            CfaRule::RegisterAndOffset { register, offset } if register == X86_64::RBP => {
                (CfaBase::Rbp, offset)
            }
            // Expressions (PLT stubs, signal frames) are left to the heuristics.
            _ => return None,
        };
        Some(CfiRow {
            cfa_base,
            cfa_offset,
            ra: SavedAt::from_rule(row.register(X86_64::RA)),
            rbp: SavedAt::from_rule(row.register(X86_64::RBP)),
        })
    }
}

/// What we use of a CFI row.
#[derive(Debug, Clone, Copy)]
struct CfiRow {
    cfa_base: CfaBase,
    cfa_offset: i64,
    ra: SavedAt,
    rbp: SavedAt,
}

#[derive(Debug, Clone, Copy)]
enum CfaBase {
    Rsp,
    Rbp,
}

/// Where the caller's value of a register is.
#[derive(Debug, Clone, Copy)]
enum SavedAt {
    /// At CFA + offset.
    Offset(i64),
    /// Still in the register: the frame did not touch it.
    Unchanged,
    /// Somewhere we do not follow.
    Unknown,
}

impl SavedAt {
    fn from_rule(rule: RegisterRule<usize>) -> SavedAt {
        match rule {
            RegisterRule::Offset(offset) => SavedAt::Offset(offset),
            // gimli says Undefined for a register the CIE and FDE never mention, which for a
            // callee-saved register means the frame left it alone.
            RegisterRule::Undefined | RegisterRule::SameValue => SavedAt::Unchanged,
            _ => SavedAt::Unknown,
        }
    }
}

/// Bytes before a return address that may hold the call that pushed it: the longest `call` form
/// is REX + ff + ModRM + SIB + disp32.
const CALL_WINDOW: usize = 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Call {
    /// `e8 rel32`: the target is the return address + rel32.
    Direct { rel32: i32 },
    /// `ff /2`: through a register or memory.
    Indirect,
}

/// The call instruction that ends exactly at the end of `code`, if any.
fn call_ending_at(code: &[u8; CALL_WINDOW]) -> Option<Call> {
    let direct = &code[CALL_WINDOW - 5..];
    if direct[0] == 0xe8 {
        let rel32 = i32::from_le_bytes([direct[1], direct[2], direct[3], direct[4]]);
        return Some(Call::Direct { rel32 });
    }
    // A REX prefix does not change the length of what follows, so only the ff form is checked.
    (0..CALL_WINDOW - 1).find_map(|start| {
        let modrm = code[start + 1];
        let is_call = code[start] == 0xff && (modrm >> 3) & 7 == 2;
        let len = 2 + modrm_operand_len(modrm, code.get(start + 2).copied());
        (is_call && start + len == CALL_WINDOW).then_some(Call::Indirect)
    })
}

/// Bytes after a ModRM byte taken by its SIB byte and displacement.
fn modrm_operand_len(modrm: u8, sib: Option<u8>) -> usize {
    let mode = modrm >> 6;
    let rm = modrm & 7;
    if mode == 3 {
        return 0;
    }
    let has_sib = rm == 4;
    let disp = match mode {
        0 if rm == 5 => 4,
        0 if has_sib && sib.is_some_and(|sib| sib & 7 == 5) => 4,
        0 => 0,
        1 => 1,
        _ => 4,
    };
    usize::from(has_sib) + disp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_blocked_syscall() {
        let line =
            "202 0x7f0c2c1ff910 0x80 0x2 0x0 0x0 0x7f0c2c1ff9a0 0x7ffe3b2a1c38 0x7f0c2d08e4ae\n";
        assert_eq!(
            parse_syscall_line(line),
            Some(SyscallState {
                nr: 202,
                args: [0x7f0c2c1ff910, 0x80, 0x2, 0, 0, 0x7f0c2c1ff9a0],
                sp: 0x7ffe3b2a1c38,
                pc: 0x7f0c2d08e4ae,
            })
        );
    }

    #[test]
    fn threads_outside_a_syscall_have_no_state() {
        assert_eq!(parse_syscall_line("running\n"), None);
        assert_eq!(
            parse_syscall_line("-1 0x7ffe3b2a1c38 0x55d0c1e0a123\n"),
            None
        );
        assert_eq!(parse_syscall_line(""), None);
    }

    #[test]
    fn rejects_malformed_lines() {
        assert_eq!(parse_syscall_line("202 0x1 0x2 0x3"), None);
        assert_eq!(
            parse_syscall_line("202 0x1 0x2 0x3 0x4 0x5 0x6 0x7 zz"),
            None
        );
        assert_eq!(
            parse_syscall_line("202 0x1 0x2 0x3 0x4 0x5 0x6 0x7 0x8 0x9"),
            None
        );
        assert_eq!(parse_syscall_line("202 1 2 3 4 5 6 7 8"), None);
    }

    /// `code` right-aligned in the window before a return address, padded with nops.
    fn window(code: &[u8]) -> [u8; CALL_WINDOW] {
        let mut window = [0x90; CALL_WINDOW];
        window[CALL_WINDOW - code.len()..].copy_from_slice(code);
        window
    }

    #[test]
    fn recognizes_calls_before_return_addresses() {
        let direct = window(&[0xe8, 0x10, 0x00, 0x00, 0x00]);
        assert_eq!(call_ending_at(&direct), Some(Call::Direct { rel32: 0x10 }));
        let backwards = window(&[0xe8, 0xf0, 0xff, 0xff, 0xff]);
        assert_eq!(
            call_ending_at(&backwards),
            Some(Call::Direct { rel32: -0x10 })
        );
        for indirect in [
            &[0xff, 0xd0][..],                                 // call rax
            &[0x41, 0xff, 0xd3],                               // call r11
            &[0xff, 0x10],                                     // call [rax]
            &[0xff, 0x50, 0x08],                               // call [rax+8]
            &[0xff, 0x54, 0x24, 0x08],                         // call [rsp+8]
            &[0xff, 0x15, 0x00, 0x10, 0x00, 0x00],             // call [rip+0x1000]
            &[0xff, 0x90, 0x00, 0x01, 0x00, 0x00],             // call [rax+0x100]
            &[0xff, 0x94, 0xd8, 0x00, 0x01, 0x00, 0x00],       // call [rax+rbx*8+0x100]
            &[0x41, 0xff, 0x94, 0xd8, 0x00, 0x01, 0x00, 0x00], // call [r8+rbx*8+0x100]
        ] {
            assert_eq!(
                call_ending_at(&window(indirect)),
                Some(Call::Indirect),
                "{indirect:x?}"
            );
        }
    }

    #[test]
    fn rejects_code_that_is_no_call() {
        for code in [
            &[0x48, 0x89, 0xc7][..],   // mov rdi, rax
            &[0xff, 0xe0],             // jmp rax (ff /4)
            &[0xff, 0x50],             // call [rax+disp8] cut short
            &[0xff, 0x15, 0x00, 0x10], // call [rip+disp32] cut short
            &[0x0f, 0x05],             // syscall
        ] {
            assert_eq!(call_ending_at(&window(code)), None, "{code:x?}");
        }
    }

    #[test]
    fn maps_file_offsets_through_segments() {
        let module = Module {
            eh_frame: Vec::new(),
            eh_frame_hdr: None,
            bases: BaseAddresses::default(),
            segments: vec![
                Segment {
                    file_offset: 0,
                    file_size: 0x628,
                    address: 0,
                },
                Segment {
                    file_offset: 0x1000,
                    file_size: 0x1b5,
                    address: 0x401000,
                },
            ],
        };
        assert_eq!(module.address_of_file_offset(0x1010), Some(0x401010));
        assert_eq!(module.address_of_file_offset(0x10), Some(0x10));
        assert_eq!(module.address_of_file_offset(0x1200), None);
    }

    mod live {
        //! Unwinds threads of a real C program, stuck the way leaktrace finds them.
        use std::io::{BufRead as _, BufReader};
        use std::path::PathBuf;
        use std::process::{Child, Command, Stdio};
        use std::sync::mpsc;
        use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

        use blazesym::symbolize::source::{Process, Source};
        use blazesym::symbolize::{Input, Symbolizer};

        use super::super::*;

        const PROGRAM: &str = r#"
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>

static pthread_mutex_t a = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t b = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t m = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t never = PTHREAD_COND_INITIALIZER;
static pthread_barrier_t both_hold_their_first_lock;
static volatile int signalled, after_calls;

/* A syscall stub with no frame and no CFI, like Go's runtime.futex: pause(2) forever. */
void frameless_pause(void);
__asm__(".text\n"
        ".globl frameless_pause\n"
        ".type frameless_pause, @function\n"
        "frameless_pause:\n"
        "  mov $34, %eax\n"
        "  syscall\n"
        "  ret\n"
        ".size frameless_pause, .-frameless_pause\n");

/* The statement after each call keeps it from being a tail call. */
__attribute__((noinline)) void lock_a_then_b(void) {
    pthread_mutex_lock(&a);
    pthread_barrier_wait(&both_hold_their_first_lock);
    pthread_mutex_lock(&b);
    after_calls++;
}

__attribute__((noinline)) void lock_b_then_a(void) {
    pthread_mutex_lock(&b);
    pthread_barrier_wait(&both_hold_their_first_lock);
    pthread_mutex_lock(&a);
    after_calls++;
}

__attribute__((noinline)) void wait_for_signal(void) {
    pthread_mutex_lock(&m);
    while (!signalled)
        pthread_cond_wait(&never, &m);
    pthread_mutex_unlock(&m);
    after_calls++;
}

__attribute__((noinline)) void pause_in_frameless_leaf(void) {
    frameless_pause();
    after_calls++;
}

void *worker_one(void *arg) {
    pthread_setname_np(pthread_self(), "worker_one");
    lock_a_then_b();
    return arg;
}

void *worker_two(void *arg) {
    pthread_setname_np(pthread_self(), "worker_two");
    lock_b_then_a();
    return arg;
}

void *waiter(void *arg) {
    pthread_setname_np(pthread_self(), "waiter");
    wait_for_signal();
    return arg;
}

void *leaf_worker(void *arg) {
    pthread_setname_np(pthread_self(), "leaf_worker");
    pause_in_frameless_leaf();
    return arg;
}

int main(void) {
    void *(*starts[])(void *) = {worker_one, worker_two, waiter, leaf_worker};
    pthread_t threads[4];
    pthread_barrier_init(&both_hold_their_first_lock, NULL, 2);
    for (int i = 0; i < 4; i++)
        if (pthread_create(&threads[i], NULL, starts[i], NULL) != 0)
            return 1;
    printf("READY\n");
    fflush(stdout);
    for (int i = 0; i < 4; i++)
        pthread_join(threads[i], NULL);
    return 0;
}
"#;

        const SYS_PAUSE: i64 = 34;

        /// The compiled program running; killed and cleaned up on drop, pass or fail.
        struct Stuck {
            dir: PathBuf,
            child: Option<Child>,
        }

        impl Drop for Stuck {
            fn drop(&mut self) {
                if let Some(child) = self.child.as_mut() {
                    let _ = child.kill();
                    let _ = child.wait();
                }
                let _ = std::fs::remove_dir_all(&self.dir);
            }
        }

        impl Stuck {
            fn start() -> Stuck {
                let nanos = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_nanos())
                    .unwrap_or_default();
                let dir = std::env::temp_dir()
                    .join(format!("leaktrace-unwind-{}-{nanos}", std::process::id()));
                let mut stuck = Stuck { dir, child: None };
                std::fs::create_dir_all(&stuck.dir).expect("create the temp dir");
                let source = stuck.dir.join("stuck.c");
                let binary = stuck.dir.join("stuck");
                std::fs::write(&source, PROGRAM).expect("write the C program");
                let status = Command::new("gcc")
                    .args(["-g", "-O1", "-fno-omit-frame-pointer", "-pthread", "-o"])
                    .arg(&binary)
                    .arg(&source)
                    .status()
                    .expect("run gcc (the test needs a C compiler)");
                assert!(status.success(), "gcc failed: {status}");
                let child = Command::new(&binary)
                    .stdout(Stdio::piped())
                    .spawn()
                    .expect("start the C program");
                stuck.child = Some(child);
                stuck.wait_ready();
                stuck
            }

            fn pid(&self) -> u32 {
                self.child.as_ref().map(Child::id).expect("started")
            }

            fn wait_ready(&mut self) {
                let stdout = self
                    .child
                    .as_mut()
                    .and_then(|child| child.stdout.take())
                    .expect("child stdout");
                let (tx, rx) = mpsc::channel();
                std::thread::spawn(move || {
                    let mut line = String::new();
                    let _ = BufReader::new(stdout).read_line(&mut line);
                    let _ = tx.send(line);
                });
                let line = rx
                    .recv_timeout(Duration::from_secs(10))
                    .expect("the C program did not say READY");
                assert_eq!(line.trim(), "READY");
                std::thread::sleep(Duration::from_millis(300));
            }

            /// The syscall registers of the thread named `name`, once it is blocked in `nr`.
            fn blocked_thread(&self, name: &str, nr: i64) -> SyscallState {
                let deadline = Instant::now() + Duration::from_secs(10);
                loop {
                    if let Some(state) = self.syscall_of(name).filter(|s| s.nr == nr) {
                        return state;
                    }
                    assert!(
                        Instant::now() < deadline,
                        "thread {name} never blocked in syscall {nr}"
                    );
                    std::thread::sleep(Duration::from_millis(20));
                }
            }

            fn syscall_of(&self, name: &str) -> Option<SyscallState> {
                let task_dir = format!("/proc/{}/task", self.pid());
                std::fs::read_dir(&task_dir)
                    .expect("list the threads")
                    .filter_map(|entry| entry.ok())
                    .find(|entry| {
                        std::fs::read_to_string(entry.path().join("comm"))
                            .is_ok_and(|comm| comm.trim() == name)
                    })
                    .and_then(|entry| {
                        let line = std::fs::read_to_string(entry.path().join("syscall")).ok()?;
                        parse_syscall_line(&line)
                    })
            }
        }

        /// Function names of a stack, innermost first ("?" where unknown).
        fn symbolize(pid: u32, frames: &[u64]) -> Vec<String> {
            // Return addresses are looked up as the call before them, as leaktrace does.
            let addrs: Vec<u64> = frames
                .iter()
                .enumerate()
                .map(|(i, &addr)| if i == 0 { addr } else { addr - 1 })
                .collect();
            let source = Source::Process(Process::new(pid.into()));
            Symbolizer::new()
                .symbolize(&source, Input::AbsAddr(&addrs))
                .expect("symbolize")
                .iter()
                .map(|sym| {
                    sym.as_sym()
                        .map_or("?".to_string(), |sym| sym.name.to_string())
                })
                .collect()
        }

        fn position(stack: &[String], name: &str) -> usize {
            stack
                .iter()
                .position(|f| f == name)
                .unwrap_or_else(|| panic!("no {name} in {stack:?}"))
        }

        /// `callee` then, right after it, its caller `caller`, and above both, what blocked.
        fn assert_called_from(stack: &[String], callee: &str, caller: &str, blocked_in: &[&str]) {
            let at = position(stack, callee);
            assert_eq!(
                stack.get(at + 1).map(String::as_str),
                Some(caller),
                "{callee} not called from {caller} in {stack:?}"
            );
            assert!(
                stack[..at]
                    .iter()
                    .any(|f| blocked_in.iter().any(|b| f.contains(b))),
                "nothing like {blocked_in:?} inside {callee} in {stack:?}"
            );
        }

        #[test]
        fn unwinds_threads_blocked_in_syscalls_of_a_live_process() {
            let stuck = Stuck::start();
            let pid = stuck.pid();
            let mut unwinder = RemoteUnwinder::new(pid).expect("open the process");
            let mut stack_of = |name: &str, nr: i64| {
                let state = stuck.blocked_thread(name, nr);
                let frames = unwinder.unwind_blocked(state.pc, state.sp, 64);
                let stack = symbolize(pid, &frames);
                println!("{name}:");
                for (addr, function) in frames.iter().zip(&stack) {
                    println!("  {addr:#014x} {function}");
                }
                stack
            };
            let mutex_lock = ["mutex_lock", "lll_lock"];
            let one = stack_of("worker_one", libc::SYS_futex);
            let two = stack_of("worker_two", libc::SYS_futex);
            let waiter = stack_of("waiter", libc::SYS_futex);
            let leaf = stack_of("leaf_worker", SYS_PAUSE);
            assert_called_from(&one, "lock_a_then_b", "worker_one", &mutex_lock);
            assert_called_from(&two, "lock_b_then_a", "worker_two", &mutex_lock);
            assert_called_from(&waiter, "wait_for_signal", "waiter", &["cond_wait"]);
            assert_eq!(leaf.first().map(String::as_str), Some("frameless_pause"));
            assert_called_from(
                &leaf,
                "pause_in_frameless_leaf",
                "leaf_worker",
                &["frameless_pause"],
            );
        }
    }
}
