//! A line table from `.gopclntab`, the table the Go runtime itself uses for tracebacks: for a
//! code address, the frames `runtime.CallersFrames` would give (function, file, line, and the
//! functions inlined there, innermost first). Stripped Go binaries (`-ldflags=-s -w`) keep it, so
//! their goroutines get `function (file:line)` without a symbol table or DWARF.
//!
//! Layouts (Go source, `runtime/symtab.go`, `runtime/runtime2.go`, `runtime/symtabinl.go`,
//! `internal/abi/symtab.go`):
//! - `pcHeader`: magic 0xfffffff0 (Go 1.18, 1.19) or 0xfffffff1 (1.20+), then nfunc, nfiles,
//!   textStart (0 from Go 1.26 on: entries are offsets from `moduledata.text`), and the offsets of
//!   funcnametab, cutab, filetab, pctab and pclntab.
//! - `_func`: 40 bytes before 1.20; 1.20 added `startLine` (44 bytes). It is followed by
//!   `npcdata` u32 offsets into pctab and `nfuncdata` u32 offsets from `moduledata.gofunc`.
//! - `inlinedCall` (FUNCDATA_InlTree = 3, indexed by PCDATA_InlTreeIndex = 2): 20 bytes before
//!   1.20 (`func_` at 12, `parentPc` at 16), 16 bytes since (`nameOff` at 4, `parentPc` at 8).
//!
//! All addresses are link-time addresses (as in the file); the caller removes the load bias.
use anyhow::{anyhow, bail, Result};
use object::{Object as _, ObjectSection as _, ObjectSymbol as _};

const MAGIC_GO118: u32 = 0xffff_fff0;
const MAGIC_GO120: u32 = 0xffff_fff1;
const PCDATA_INL_TREE_INDEX: u32 = 2;
const FUNCDATA_INL_TREE: u32 = 3;
/// More nested inlining than this means the table is being misread.
const MAX_INLINE_DEPTH: usize = 256;

/// `abi.FuncFlagTopFrame`: the function is the outermost frame of a stack (`runtime.goexit`,
/// `mstart`, `rt0_go`); and `abi.FuncFlagSPWrite`: it writes SP in ways the table cannot follow
/// (`mcall`, `systemstack`, `morestack`). Go's traceback stops at either
/// (runtime/traceback.go, `unwinder.next`; internal/abi/symtab.go).
const FUNC_FLAG_TOP_FRAME: u8 = 1;
const FUNC_FLAG_SP_WRITE: u8 = 2;

/// What unwinding needs of the Go function at a pc, as the runtime's own traceback reads it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GoFrameLayout {
    /// `runtime.funcspdelta`: bytes the function has pushed below its return address at the pc
    /// (the return address is at SP + sp_delta, the caller's SP right above it). From the
    /// `pcsp` table, which also covers assembly functions without frame pointers.
    pub sp_delta: u32,
    /// The stack ends here (top frame) or cannot be followed past it (SP written).
    pub last: bool,
}

/// One frame at an address, as the Go runtime reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GoFrame {
    pub function: String,
    /// None when the table has no file for the address (the runtime says "?").
    pub file: Option<String>,
    /// None when the table has no line (the runtime says 0).
    pub line: Option<u32>,
    /// Inlined into the frame that follows it.
    pub inlined: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Layout {
    /// Go 1.18 and 1.19.
    Go118,
    /// Go 1.20 and later.
    Go120,
}

impl Layout {
    fn func_size(self) -> usize {
        match self {
            Layout::Go118 => 40,
            Layout::Go120 => 44,
        }
    }

    fn nfuncdata_offset(self) -> usize {
        self.func_size() - 1
    }

    /// (size, nameOff offset, parentPc offset) of an inlinedCall.
    fn inlined_call(self) -> (usize, usize, usize) {
        match self {
            Layout::Go118 => (20, 12, 16),
            Layout::Go120 => (16, 4, 8),
        }
    }
}

/// `.gopclntab` of one executable, with the bytes of `go:func.*` for inline trees.
pub struct LineTable {
    tab: Vec<u8>,
    layout: Layout,
    text_start: u64,
    nfunc: usize,
    funcname: usize,
    cutab: usize,
    filetab: usize,
    pctab: usize,
    pcln: usize,
    /// Link address of `moduledata.gofunc` and the bytes from there to the end of its section;
    /// None when it could not be found (then inlined frames are not expanded).
    gofunc: Option<(u64, Vec<u8>)>,
}

impl std::fmt::Debug for LineTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LineTable")
            .field("layout", &self.layout)
            .field("text_start", &format_args!("{:#x}", self.text_start))
            .field("nfunc", &self.nfunc)
            .field("gofunc", &self.gofunc.as_ref().map(|g| g.0))
            .finish()
    }
}

fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(
        bytes.get(at..at.checked_add(4)?)?.try_into().ok()?,
    ))
}

fn u64_at(bytes: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(
        bytes.get(at..at.checked_add(8)?)?.try_into().ok()?,
    ))
}

fn cstring(bytes: &[u8], at: usize) -> Option<String> {
    let rest = bytes.get(at..)?;
    let end = rest.iter().position(|&b| b == 0)?;
    Some(String::from_utf8_lossy(&rest[..end]).into_owned())
}

/// `runtime.readvarint`: an unsigned LEB128 of at most 32 bits, and its length.
fn readvarint(p: &[u8]) -> Option<(u32, usize)> {
    let mut value = 0u32;
    let mut shift = 0u32;
    for (i, &b) in p.iter().enumerate().take(5) {
        value |= u32::from(b & 0x7f).checked_shl(shift)?;
        if b & 0x80 == 0 {
            return Some((value, i + 1));
        }
        shift += 7;
    }
    None
}

/// A function of the table: where its `_func` is and its entry.
#[derive(Clone, Copy, Debug)]
struct Func {
    /// Offset of the `_func` in the table.
    at: usize,
    entry: u64,
}

impl LineTable {
    /// Reads the table of an executable. `go_minor` is the Go version's minor number (it says
    /// where `moduledata.gofunc` is, needed for inlined frames).
    pub(crate) fn from_elf(elf: &object::File<'_>, go_minor: u32) -> Result<LineTable> {
        let section = elf
            .section_by_name(".gopclntab")
            .ok_or_else(|| anyhow!("no .gopclntab section"))?;
        let pclntab_addr = section.address();
        let tab = section.data()?.to_vec();
        let magic = u32_at(&tab, 0).ok_or_else(|| anyhow!("truncated .gopclntab"))?;
        let layout = match magic {
            MAGIC_GO118 => Layout::Go118,
            MAGIC_GO120 => Layout::Go120,
            _ => bail!(".gopclntab has magic {magic:#x}: not the Go 1.18+ layout"),
        };
        if tab.get(6) != Some(&1) || tab.get(7) != Some(&8) {
            bail!(".gopclntab is not for a 64-bit x86 target (minLC/ptrSize)");
        }
        let word = |at: usize| -> Result<usize> {
            let value = u64_at(&tab, at).ok_or_else(|| anyhow!("truncated .gopclntab header"))?;
            usize::try_from(value).map_err(|_| anyhow!(".gopclntab header field out of range"))
        };
        let nfunc = word(8)?;
        let header_text_start = u64_at(&tab, 24).unwrap_or(0);
        let funcname = word(32)?;
        let cutab = word(40)?;
        let filetab = word(48)?;
        let pctab = word(56)?;
        let pcln = word(64)?;
        if [funcname, cutab, filetab, pctab, pcln]
            .iter()
            .any(|&o| o > tab.len())
            || nfunc
                .checked_mul(8)
                .and_then(|n| n.checked_add(pcln + 8))
                .is_none_or(|end| end > tab.len())
        {
            bail!(".gopclntab header points outside the section");
        }
        let moduledata = find_moduledata(elf, pclntab_addr, pclntab_addr + funcname as u64);
        // textStart: the header's (Go < 1.26, may be 0 in PIE files), else moduledata.text, else
        // the .text section (what debug/gosym and objfile use).
        let text_start = if header_text_start != 0 {
            header_text_start
        } else if let Some(text) = moduledata
            .as_ref()
            .and_then(|m| m.word(MODULEDATA_TEXT_WORD))
            .filter(|&t| t != 0)
        {
            text
        } else {
            elf.section_by_name(".text")
                .map(|s| s.address())
                .ok_or_else(|| anyhow!("no .text section"))?
        };
        let gofunc_addr = gofunc_symbol(elf).or_else(|| {
            let index = gofunc_word(go_minor)?;
            moduledata.as_ref()?.word(index)
        });
        let gofunc = gofunc_addr.and_then(|addr| Some((addr, bytes_from(elf, addr)?)));
        Ok(LineTable {
            tab,
            layout,
            text_start,
            nfunc,
            funcname,
            cutab,
            filetab,
            pctab,
            pcln,
            gofunc,
        })
    }

    /// Whether inlined frames can be expanded (the inline trees were found).
    pub fn has_inline_trees(&self) -> bool {
        self.gofunc.is_some()
    }

    /// Link address range of the code the table covers.
    pub fn text_range(&self) -> std::ops::Range<u64> {
        let end = u32_at(&self.tab, self.pcln + 8 * self.nfunc).unwrap_or(0);
        self.text_start..self.text_start.saturating_add(u64::from(end))
    }

    /// `runtime.findfunc`: the function whose code holds `pc` (a link address).
    fn find(&self, pc: u64) -> Option<Func> {
        let off = u32::try_from(pc.checked_sub(self.text_start)?).ok()?;
        let entry_off = |i: usize| u32_at(&self.tab, self.pcln + 8 * i);
        // ftab has nfunc+1 entries; the last one is the end of the text.
        if off >= entry_off(self.nfunc)? {
            return None;
        }
        // The last entry with entryoff <= off.
        let (mut lo, mut hi) = (0usize, self.nfunc);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if entry_off(mid)? <= off {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        let i = lo.checked_sub(1)?;
        let funcoff = u32_at(&self.tab, self.pcln + 8 * i + 4)? as usize;
        let at = self.pcln.checked_add(funcoff)?;
        let entry = self
            .text_start
            .checked_add(u64::from(u32_at(&self.tab, at)?))?;
        Some(Func { at, entry })
    }

    fn func_u32(&self, f: Func, field: usize) -> Option<u32> {
        u32_at(&self.tab, f.at + field)
    }

    fn name_at(&self, nameoff: u32) -> Option<String> {
        cstring(&self.tab, self.funcname.checked_add(nameoff as usize)?)
    }

    /// `runtime.pcvalue`: the value of the pc-value table at `off` (in pctab) for `target`;
    /// None where the runtime gets -1 (no table, or `target` past its end).
    fn pcvalue(&self, f: Func, off: u32, target: u64) -> Option<i32> {
        if off == 0 {
            return None;
        }
        let mut p = self.tab.get(self.pctab.checked_add(off as usize)?..)?;
        let mut pc = f.entry;
        let mut val: i32 = -1;
        let mut first = true;
        loop {
            let (uvdelta, n) = readvarint(p)?;
            if uvdelta == 0 && !first {
                return None;
            }
            first = false;
            p = p.get(n..)?;
            // Zig-zag: -(uvdelta & 1) ^ (uvdelta >> 1).
            val = val.wrapping_add((0u32.wrapping_sub(uvdelta & 1) ^ (uvdelta >> 1)) as i32);
            let (pcdelta, n) = readvarint(p)?;
            p = p.get(n..)?;
            // PCQuantum is 1 on amd64.
            pc = pc.checked_add(u64::from(pcdelta))?;
            if target < pc {
                return Some(val);
            }
        }
    }

    /// `runtime.pcdatavalue`.
    fn pcdata(&self, f: Func, table: u32, target: u64) -> Option<i32> {
        let npcdata = self.func_u32(f, 28)?;
        if table >= npcdata {
            return None;
        }
        let off = self.func_u32(f, self.layout.func_size() + 4 * table as usize)?;
        self.pcvalue(f, off, target)
    }

    /// `runtime.funcdata` for the inline tree: the tree's bytes.
    fn inline_tree(&self, f: Func) -> Option<&[u8]> {
        let (_, gofunc) = self.gofunc.as_ref()?;
        let nfuncdata = u32::from(*self.tab.get(f.at + self.layout.nfuncdata_offset())?);
        if FUNCDATA_INL_TREE >= nfuncdata {
            return None;
        }
        let npcdata = self.func_u32(f, 28)? as usize;
        let off = self.func_u32(
            f,
            self.layout.func_size() + 4 * npcdata + 4 * FUNCDATA_INL_TREE as usize,
        )?;
        if off == u32::MAX {
            return None;
        }
        gofunc.get(off as usize..)
    }

    /// `runtime.funcline1`: file and line at `pc` in `f`.
    fn file_line(&self, f: Func, pc: u64) -> (Option<String>, Option<u32>) {
        let fileno = self
            .func_u32(f, 20)
            .and_then(|off| self.pcvalue(f, off, pc));
        let line = self
            .func_u32(f, 24)
            .and_then(|off| self.pcvalue(f, off, pc));
        let (Some(fileno), Some(line)) = (fileno, line) else {
            return (None, None);
        };
        let file = (|| {
            let cu_offset = self.func_u32(f, 32)?;
            let index = cu_offset.checked_add(u32::try_from(fileno).ok()?)? as usize;
            let fileoff = u32_at(&self.tab, self.cutab.checked_add(4 * index)?)?;
            if fileoff == u32::MAX {
                return None;
            }
            cstring(&self.tab, self.filetab.checked_add(fileoff as usize)?)
        })();
        (file, u32::try_from(line).ok())
    }

    /// The name of the (outermost) function containing `pc`, as `runtime.FuncForPC(pc).Name()`.
    /// The frame layout of the Go function at `pc` (a link address; look return addresses up
    /// one byte earlier). None outside Go code or where the table has no SP delta.
    pub fn frame_layout(&self, pc: u64) -> Option<GoFrameLayout> {
        let f = self.find(pc)?;
        let sp_delta = u32::try_from(self.pcvalue(f, self.func_u32(f, 16)?, pc)?).ok()?;
        // funcID and flag are the two bytes before nfuncdata (after a padding byte: `funcID
        // uint8; flag FuncFlag; _ [1]byte; nfuncdata uint8`, internal/abi/symtab.go).
        let flag = *self.tab.get(f.at + self.layout.nfuncdata_offset() - 2)?;
        Some(GoFrameLayout {
            sp_delta,
            last: flag & (FUNC_FLAG_TOP_FRAME | FUNC_FLAG_SP_WRITE) != 0,
        })
    }

    pub fn function_at(&self, pc: u64) -> Option<String> {
        let f = self.find(pc)?;
        self.name_at(self.func_u32(f, 4)?)
    }

    /// The frames at `pc` (a link address), innermost first: the functions inlined at `pc`,
    /// then the function whose code it is, as `runtime.CallersFrames` reports them. Empty when
    /// `pc` is in no Go function. Look return addresses up one byte earlier.
    pub fn frames(&self, pc: u64) -> Vec<GoFrame> {
        let Some(f) = self.find(pc) else {
            return Vec::new();
        };
        let Some(name) = self.func_u32(f, 4).and_then(|off| self.name_at(off)) else {
            return Vec::new();
        };
        let tree = self.inline_tree(f);
        let (call_size, name_field, parent_pc_field) = self.layout.inlined_call();
        let mut frames = Vec::new();
        let mut pc = pc;
        while let Some(tree) = tree {
            if frames.len() >= MAX_INLINE_DEPTH {
                break;
            }
            let Some(ix) = self
                .pcdata(f, PCDATA_INL_TREE_INDEX, pc)
                .and_then(|ix| usize::try_from(ix).ok())
            else {
                break;
            };
            let Some(call) = ix.checked_mul(call_size) else {
                break;
            };
            let (Some(nameoff), Some(parent_pc)) = (
                u32_at(tree, call + name_field),
                u32_at(tree, call + parent_pc_field),
            ) else {
                break;
            };
            let (file, line) = self.file_line(f, pc);
            frames.push(GoFrame {
                function: self.name_at(nameoff).unwrap_or_else(|| "?".to_string()),
                file,
                line,
                inlined: true,
            });
            pc = f.entry.saturating_add(u64::from(parent_pc));
        }
        let (file, line) = self.file_line(f, pc);
        frames.push(GoFrame {
            function: name,
            file,
            line,
            inlined: false,
        });
        frames
    }

    /// The link address range of the function named `name` (first match).
    pub fn function_range(&self, name: &str) -> Option<std::ops::Range<u64>> {
        (0..self.nfunc).find_map(|i| {
            let funcoff = u32_at(&self.tab, self.pcln + 8 * i + 4)? as usize;
            let nameoff = u32_at(&self.tab, self.pcln.checked_add(funcoff)? + 4)?;
            if self.name_at(nameoff)? != name {
                return None;
            }
            let entry = u32_at(&self.tab, self.pcln + 8 * i)?;
            let end = u32_at(&self.tab, self.pcln + 8 * (i + 1))?;
            Some(self.text_start + u64::from(entry)..self.text_start + u64::from(end.max(entry)))
        })
    }

    /// Every function's entry (link address), in address order.
    pub fn entries(&self) -> Vec<u64> {
        (0..self.nfunc)
            .filter_map(|i| u32_at(&self.tab, self.pcln + 8 * i))
            .map(|off| self.text_start.saturating_add(u64::from(off)))
            .collect()
    }
}

/// `moduledata.text` is word 20: pcHeader, six slices, findfunctab, minpc, maxpc (all versions).
const MODULEDATA_TEXT_WORD: usize = 20;

/// The word of `moduledata.gofunc`: pcHeader (1), six slices (18), findfunctab, minpc, maxpc
/// (3), text..enoptrbss (10), [covctrs, ecovctrs (2, Go 1.20+)], end, gcdata, gcbss (3), types,
/// [typedesclen (Go 1.27+)], etypes (2), [itaboffset, itabsize (2, Go 1.27+)], rodata (1).
fn gofunc_word(go_minor: u32) -> Option<usize> {
    match go_minor {
        18 | 19 => Some(38),
        20..=26 => Some(40),
        27 => Some(43),
        _ => None,
    }
}

/// `go:func.*` (Go 1.20+) or `go.func.*` (1.18, 1.19) from the symbol table, when there is one.
fn gofunc_symbol(elf: &object::File<'_>) -> Option<u64> {
    elf.symbols()
        .find(|s| matches!(s.name(), Ok("go:func.*" | "go.func.*")))
        .map(|s| s.address())
}

/// `runtime.firstmoduledata` as found in the file: the words that start with the address of
/// the pcHeader and of funcnametab. Its pointers are either in the file (Go's internal linker
/// writes them even in PIE files) or only in R_X86_64_RELATIVE addends.
struct Moduledata {
    words: Vec<u64>,
}

impl Moduledata {
    fn word(&self, index: usize) -> Option<u64> {
        self.words.get(index).copied()
    }
}

const MODULEDATA_WORDS: usize = 48;

fn find_moduledata(elf: &object::File<'_>, pclntab: u64, funcnametab: u64) -> Option<Moduledata> {
    let relocations: std::collections::HashMap<u64, u64> = elf
        .dynamic_relocations()
        .into_iter()
        .flatten()
        .filter(|(_, r)| r.addend() != 0)
        .map(|(offset, r)| (offset, r.addend() as u64))
        .collect();
    for section in elf.sections() {
        if section.kind() == object::SectionKind::Text {
            continue;
        }
        let Ok(data) = section.data() else {
            continue;
        };
        let base = section.address();
        let word = |i: usize| -> u64 {
            let value = u64_at(data, i).unwrap_or(0);
            if value != 0 {
                return value;
            }
            relocations.get(&(base + i as u64)).copied().unwrap_or(0)
        };
        for i in (0..data.len().saturating_sub(16)).step_by(8) {
            if word(i) == pclntab && word(i + 8) == funcnametab {
                let words = (0..MODULEDATA_WORDS).map(|w| word(i + 8 * w)).collect();
                return Some(Moduledata { words });
            }
        }
    }
    None
}

/// The file's bytes from link address `addr` to the end of the section holding it.
fn bytes_from(elf: &object::File<'_>, addr: u64) -> Option<Vec<u8>> {
    elf.sections().find_map(|s| {
        let start = addr.checked_sub(s.address())?;
        if start >= s.size() {
            return None;
        }
        let data = s.data().ok()?;
        data.get(usize::try_from(start).ok()?..).map(<[u8]>::to_vec)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_runtime_varints() {
        assert_eq!(readvarint(&[0x02]), Some((2, 1)));
        assert_eq!(readvarint(&[0x96, 0x01]), Some((150, 2)));
        assert_eq!(readvarint(&[0x80, 0x80]), None);
    }

    #[test]
    fn gofunc_is_after_rodata_in_each_layout() {
        assert_eq!(gofunc_word(19), Some(38));
        assert_eq!(gofunc_word(21), Some(40));
        assert_eq!(gofunc_word(27), Some(43));
        assert_eq!(gofunc_word(28), None);
    }
}
