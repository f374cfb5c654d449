//! What a Go executable file tells: its Go version (build info), where the runtime's variables
//! are (symbol table, or for stripped binaries the function table `.gopclntab` plus a look at the
//! code of `runtime.forEachG`), and the layout of `runtime.g` (DWARF).
//!
//! Addresses here are link-time addresses (as in the file); the caller adds the load bias.
use std::collections::HashMap;

use anyhow::{anyhow, bail, Context as _, Result};
use gimli::{EndianSlice, LittleEndian};
use object::{Object as _, ObjectSection as _, ObjectSymbol as _};

use super::offsets::GOffsets;
use super::pclntab::LineTable;
use super::GoVersion;

/// The start of the `.go.buildinfo` section (debug/buildinfo).
const BUILDINFO_MAGIC: &[u8] = b"\xff Go buildinf:";

/// Symbols the reader needs from the symbol table when there is one.
const WANTED_SYMBOLS: &[&str] = &[
    "runtime.allglen",
    "runtime.allgptr",
    "runtime.allgs",
    "runtime.waitReasonStrings",
    "runtime.buildVersion",
    "runtime.newproc",
    "time.newTimer",
    "runtime.addtimer",
    "runtime.allp",
];

/// Everything read from the executable file.
pub(crate) struct GoBinary {
    pub version: GoVersion,
    /// The raw version string ("go1.21.13", possibly with " X:..." experiments).
    pub version_string: String,
    /// The `DefaultGODEBUG` build setting of the module info (Go 1.21+ records it when the
    /// main module's `go` line, its `godebug` block or `//go:debug` lines change a default);
    /// None when the build info has none.
    pub default_godebug: Option<String>,
    pub pie: bool,
    /// `(address, size)` by symbol name, for [`WANTED_SYMBOLS`] found in `.symtab`.
    pub symbols: HashMap<&'static str, (u64, u64)>,
    /// Field offsets of runtime.g from DWARF, when the binary has DWARF.
    pub dwarf_offsets: Option<Result<GOffsets>>,
    /// Layout of the runtime's timers from DWARF, when the binary has DWARF.
    pub timer_layout: Option<Result<super::timers::TimerLayout>>,
    /// Where goroutines' wait objects and run counts are, from DWARF.
    pub wait_layout: Option<Result<super::waits::WaitLayout>>,
    /// runtime.allgs found through .gopclntab and the code of runtime.forEachG (link address).
    pub allgs_from_code: Result<u64>,
    /// Function, file, line and inlined frames from `.gopclntab`.
    pub lines: Result<LineTable>,
    /// File offset for the goroutine-creation uprobe in `runtime.newproc` (after its
    /// stack-check prologue).
    pub newproc_probe: Result<u64>,
    /// File offset for the timer-start uprobe: in `time.newTimer` (Go 1.23+) or
    /// `runtime.addtimer` (before), after the prologue.
    pub timer_probe: Result<u64>,
    /// `(address, size)` of the sections where runtime variables live (.data, .noptrdata, .bss,
    /// .noptrbss), to check addresses found by heuristics and to search .data.
    pub data_sections: Vec<(String, u64, u64)>,
    /// The lowest PT_LOAD's address rounded down to a page, to compute the load bias.
    pub first_load_address: u64,
}

/// Whether the ELF file at `path` was built by Go (its sections, as `read` checks), without
/// reading the rest.
pub(crate) fn is_go_executable(path: &std::path::Path) -> Result<bool> {
    let data = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let elf = object::File::parse(&*data)
        .with_context(|| format!("{} is not an ELF executable", path.display()))?;
    Ok(is_go(&elf))
}

fn is_go(elf: &object::File<'_>) -> bool {
    elf.section_by_name(".go.buildinfo").is_some()
        || elf.section_by_name(".gopclntab").is_some()
        || elf.section_by_name(".note.go.buildid").is_some()
}

/// Ok(None) when the file is no Go program.
pub(crate) fn read(path: &std::path::Path) -> Result<Option<GoBinary>> {
    let data = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let elf = object::File::parse(&*data)
        .with_context(|| format!("{} is not an ELF executable", path.display()))?;
    if !is_go(&elf) {
        return Ok(None);
    }
    // Everything below (pointer size, register ABI, runtime.g layouts) is amd64's.
    if elf.architecture() != object::Architecture::X86_64 {
        bail!(
            "{} is a Go program built for {:?}; leaktrace reads the Go runtime of x86_64 \
             (amd64) programs only",
            path.display(),
            elf.architecture()
        );
    }
    let mut symbols = HashMap::new();
    for symbol in elf.symbols() {
        if let Ok(name) = symbol.name() {
            if let Some(&wanted) = WANTED_SYMBOLS.iter().find(|&&w| w == name) {
                symbols.insert(wanted, (symbol.address(), symbol.size()));
            }
        }
    }
    let version_string = buildinfo_version(&elf)
        .or_else(|| symbol_string(&elf, symbols.get("runtime.buildVersion").copied()))
        .ok_or_else(|| {
            anyhow!(
                "{} is a Go program but its Go version is unreadable (no .go.buildinfo with an \
                 inline version: Go older than 1.18?); leaktrace supports Go {}",
                path.display(),
                super::SUPPORTED
            )
        })?;
    let version = GoVersion::parse(&version_string).ok_or_else(|| {
        anyhow!(
            "{} was built by Go {version_string:?}, which leaktrace cannot parse; it supports Go {}",
            path.display(),
            super::SUPPORTED
        )
    })?;
    let has_dwarf = elf.section_by_name(".debug_info").is_some()
        || elf.section_by_name(".zdebug_info").is_some();
    let structs = has_dwarf.then(|| dwarf_structs(&elf, DWARF_STRUCTS));
    let dwarf_offsets = structs.as_ref().map(|s| match s {
        Ok(found) => g_offsets_from_structs(found),
        Err(e) => Err(anyhow!("{e:#}")),
    });
    let timer_layout = structs.as_ref().map(|s| match s {
        Ok(found) => super::timers::TimerLayout::from_dwarf(found),
        Err(e) => Err(anyhow!("{e:#}")),
    });
    let wait_layout = structs.as_ref().map(|s| match s {
        Ok(found) => super::waits::WaitLayout::from_dwarf(found),
        Err(e) => Err(anyhow!("{e:#}")),
    });
    let data_sections = [".data", ".noptrdata", ".bss", ".noptrbss"]
        .iter()
        .filter_map(|name| {
            let s = elf.section_by_name(name)?;
            Some((name.to_string(), s.address(), s.size()))
        })
        .collect();
    let first_load_address = elf
        .segments()
        .map(|s| object::ObjectSegment::address(&s))
        .min()
        .unwrap_or(0)
        & !0xfff;
    let lines = LineTable::from_elf(&elf, version.minor);
    let allgs_from_code = match &lines {
        Ok(lines) => allgs_from_for_each_g(&elf, lines),
        Err(e) => Err(anyhow!("{e:#}")),
    };
    let newproc_probe = probe_offset(&elf, &symbols, lines.as_ref().ok(), "runtime.newproc");
    let timer_probe = probe_offset(
        &elf,
        &symbols,
        lines.as_ref().ok(),
        timer_start_function(version.minor),
    );
    let default_godebug = buildinfo_strings(&elf)
        .and_then(|(_, modinfo)| default_godebug(&modinfo).map(str::to_string));
    Ok(Some(GoBinary {
        newproc_probe,
        timer_probe,
        version,
        version_string,
        default_godebug,
        pie: elf.kind() == object::ObjectKind::Dynamic,
        symbols,
        dwarf_offsets,
        timer_layout,
        wait_layout,
        allgs_from_code,
        lines,
        data_sections,
        first_load_address,
    }))
}

/// The version string stored inline in `.go.buildinfo` (Go 1.18 and later).
fn buildinfo_version(elf: &object::File<'_>) -> Option<String> {
    buildinfo_strings(elf).map(|(version, _)| version)
}

/// The two strings stored inline in `.go.buildinfo` (Go 1.18 and later, debug/buildinfo's
/// `readRawBuildInfo`): after the 32-byte header, the version then the module info, each a
/// uvarint length and the bytes. The module info is still wrapped in its 16-byte sentinels.
fn buildinfo_strings(elf: &object::File<'_>) -> Option<(String, String)> {
    let data = elf.section_by_name(".go.buildinfo")?.data().ok()?;
    if !data.starts_with(BUILDINFO_MAGIC) || data.len() < 33 {
        return None;
    }
    let flags = data[15];
    if flags & 2 == 0 {
        // Pre-1.18 layout: pointers to string headers.
        return None;
    }
    let mut at = 32;
    let mut next = || {
        let (len, used) = uvarint(data.get(at..)?)?;
        let start = at + used;
        let end = start.checked_add(usize::try_from(len).ok()?)?;
        at = end;
        Some(String::from_utf8_lossy(data.get(start..end)?).into_owned())
    };
    let version = next()?;
    let modinfo = next().unwrap_or_default();
    Some((version, modinfo))
}

/// The value of the `build\tDefaultGODEBUG=...` line of a module info text (the format of
/// `go version -m`, runtime/debug's `BuildInfo.String`).
fn default_godebug(modinfo: &str) -> Option<&str> {
    modinfo
        .lines()
        .find_map(|line| line.strip_prefix("build\tDefaultGODEBUG="))
}

fn uvarint(bytes: &[u8]) -> Option<(u64, usize)> {
    let mut value = 0u64;
    for (i, &b) in bytes.iter().enumerate().take(10) {
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

/// A Go string variable (pointer, length) read from the file's own data.
fn symbol_string(elf: &object::File<'_>, symbol: Option<(u64, u64)>) -> Option<String> {
    let (addr, _) = symbol?;
    let header = read_file_bytes(elf, addr, 16)?;
    let ptr = u64::from_le_bytes(header[0..8].try_into().ok()?);
    let len = u64::from_le_bytes(header[8..16].try_into().ok()?);
    let bytes = read_file_bytes(elf, ptr, usize::try_from(len).ok()?.min(256))?;
    String::from_utf8(bytes).ok()
}

/// `len` bytes at link address `addr`, from whichever section holds them in the file.
fn read_file_bytes(elf: &object::File<'_>, addr: u64, len: usize) -> Option<Vec<u8>> {
    elf.sections().find_map(|s| {
        let start = addr.checked_sub(s.address())?;
        if start.checked_add(len as u64)? > s.size() {
            return None;
        }
        let data = s.data().ok()?;
        let start = usize::try_from(start).ok()?;
        data.get(start..start + len).map(<[u8]>::to_vec)
    })
}

/// The function every timer start goes through, where the timer-start uprobe goes: Go 1.23+
/// `time.newTimer(when, period, f, arg, c)`; before, `runtime.addtimer(t)`.
pub(crate) fn timer_start_function(go_minor: u32) -> &'static str {
    if go_minor >= 23 {
        "time.newTimer"
    } else {
        "runtime.addtimer"
    }
}

/// The file offset of `function`'s first instruction after its stack-check prologue: where a
/// uprobe in it goes (the entry `cmp` would be single-stepped at ~11 us a hit; the next
/// instruction, `push rbp`, is emulated).
fn probe_offset(
    elf: &object::File<'_>,
    symbols: &HashMap<&'static str, (u64, u64)>,
    lines: Option<&LineTable>,
    function: &str,
) -> Result<u64> {
    let start = symbols
        .get(function)
        .map(|&(addr, _)| addr)
        .or_else(|| lines?.function_range(function).map(|r| r.start))
        .ok_or_else(|| anyhow!("{function} is in neither the symbol table nor .gopclntab"))?;
    let code = read_file_bytes(elf, start, 16)
        .ok_or_else(|| anyhow!("{function}'s code is not in the file"))?;
    let after = prologue_end(&code).ok_or_else(|| {
        anyhow!(
            "{function} does not start with the stack check leaktrace knows \
             (cmp rsp, [r14+16]; jbe): {:02x?}",
            &code[..8]
        )
    })?;
    file_offset(elf, start + after)
        .ok_or_else(|| anyhow!("{function} is in no loaded segment of the file"))
}

/// The length of a Go function's stack-check prologue, `cmp rsp, [r14+16]` then `jbe` (short
/// or near): what every Go function with a frame starts with on amd64 since Go 1.17.
pub(crate) fn prologue_end(code: &[u8]) -> Option<u64> {
    if code.get(0..4)? != [0x49, 0x3b, 0x66, 0x10] {
        return None;
    }
    match (code.get(4)?, code.get(5)?) {
        (0x76, _) => Some(6),
        (0x0f, 0x86) => Some(10),
        _ => None,
    }
}

/// Where a link address is in the file (what a uprobe is attached by).
fn file_offset(elf: &object::File<'_>, addr: u64) -> Option<u64> {
    elf.segments().find_map(|segment| {
        let (offset, size) = object::ObjectSegment::file_range(&segment);
        let start = object::ObjectSegment::address(&segment);
        (addr >= start && addr - start < size).then(|| offset + (addr - start))
    })
}

/// A struct as DWARF describes it: its size and its members' offsets.
#[derive(Clone, Debug, Default)]
pub(crate) struct StructLayout {
    pub size: Option<u64>,
    pub members: HashMap<String, u64>,
}

/// Structs of the runtime leaktrace reads, from DWARF: the goroutine (g, gobuf, stack) and the
/// timers (p, timer, timers, timerWhen, hchan), and what goroutines wait on (sudog,
/// maybeTraceablePtr).
const DWARF_STRUCTS: &[&str] = &[
    "runtime.g",
    "runtime.gobuf",
    "runtime.stack",
    "runtime.p",
    "runtime.timer",
    "runtime.timers",
    "runtime.timerWhen",
    "runtime.hchan",
    "runtime.sudog",
    "runtime.maybeTraceablePtr",
];

/// The layouts of `wanted` structs (first definition of each name) from the binary's DWARF.
/// Stops reading as soon as all are found; names that do not exist in this Go version are
/// simply missing from the result.
pub(crate) fn dwarf_structs(
    elf: &object::File<'_>,
    wanted: &[&str],
) -> Result<HashMap<String, StructLayout>> {
    let load = |id: gimli::SectionId| -> Result<std::borrow::Cow<'_, [u8]>, gimli::Error> {
        Ok(match elf.section_by_name(id.name()) {
            Some(section) => section
                .uncompressed_data()
                .unwrap_or(std::borrow::Cow::Borrowed(&[])),
            None => std::borrow::Cow::Borrowed(&[]),
        })
    };
    let sections = gimli::DwarfSections::load(load)?;
    let dwarf = sections.borrow(|section| EndianSlice::new(section, LittleEndian));
    let mut found: HashMap<String, StructLayout> = HashMap::new();
    let mut units = dwarf.units();
    'units: while let Some(header) = units.next()? {
        let unit = dwarf.unit(header)?;
        let mut entries = unit.entries();
        let mut current: Option<(String, isize)> = None;
        let mut depth: isize = 0;
        while let Some((delta, entry)) = entries.next_dfs()? {
            depth += delta;
            if let Some((_, struct_depth)) = &current {
                if depth <= *struct_depth {
                    current = None;
                }
            }
            match entry.tag() {
                gimli::DW_TAG_structure_type => {
                    let Some(name) = entry.attr_value(gimli::DW_AT_name)? else {
                        continue;
                    };
                    let name = dwarf
                        .attr_string(&unit, name)?
                        .to_string_lossy()
                        .into_owned();
                    if wanted.contains(&name.as_str()) && !found.contains_key(&name) {
                        let size = entry
                            .attr_value(gimli::DW_AT_byte_size)?
                            .and_then(|v| v.udata_value());
                        found.insert(
                            name.clone(),
                            StructLayout {
                                size,
                                members: HashMap::new(),
                            },
                        );
                        current = Some((name, depth));
                    }
                }
                gimli::DW_TAG_member => {
                    let Some((struct_name, _)) = &current else {
                        continue;
                    };
                    let (Some(name), Some(location)) = (
                        entry.attr_value(gimli::DW_AT_name)?,
                        entry.attr_value(gimli::DW_AT_data_member_location)?,
                    ) else {
                        continue;
                    };
                    let name = dwarf
                        .attr_string(&unit, name)?
                        .to_string_lossy()
                        .into_owned();
                    if let Some(offset) = location.udata_value() {
                        found
                            .get_mut(struct_name)
                            .expect("inserted with current")
                            .members
                            .insert(name, offset);
                    }
                }
                _ => {}
            }
            if current.is_none() && wanted.iter().all(|w| found.contains_key(*w)) {
                break 'units;
            }
        }
    }
    Ok(found)
}

/// Field offsets of runtime.g (and its gobuf and stack) from the DWARF structs.
fn g_offsets_from_structs(found: &HashMap<String, StructLayout>) -> Result<GOffsets> {
    let field = |ty: &str, member: &str| -> Result<u64> {
        found
            .get(ty)
            .and_then(|layout| layout.members.get(member))
            .copied()
            .ok_or_else(|| anyhow!("no {ty}.{member} in the binary's DWARF"))
    };
    let sched = field("runtime.g", "sched")?;
    let stack = field("runtime.g", "stack")?;
    Ok(GOffsets {
        stack_lo: stack + field("runtime.stack", "lo")?,
        stack_hi: stack + field("runtime.stack", "hi")?,
        sched_sp: sched + field("runtime.gobuf", "sp")?,
        sched_pc: sched + field("runtime.gobuf", "pc")?,
        sched_bp: sched + field("runtime.gobuf", "bp")?,
        atomicstatus: field("runtime.g", "atomicstatus")?,
        goid: field("runtime.g", "goid")?,
        waitsince: field("runtime.g", "waitsince")?,
        waitreason: field("runtime.g", "waitreason")?,
        parent_goid: field("runtime.g", "parentGoid").ok(),
        gopc: field("runtime.g", "gopc")?,
        startpc: field("runtime.g", "startpc")?,
    })
}

/// Finds `runtime.allgs` without symbols: `runtime.forEachG` ranges over it, so its code loads
/// the slice's pointer and length with two RIP-relative 8-byte moves from addresses 8 apart.
fn allgs_from_for_each_g(elf: &object::File<'_>, lines: &LineTable) -> Result<u64> {
    let for_each_g = lines
        .function_range("runtime.forEachG")
        .ok_or_else(|| anyhow!("no runtime.forEachG in .gopclntab"))?;
    let start = for_each_g.start;
    let code = read_file_bytes(elf, start, usize::try_from(for_each_g.end - start)?)
        .ok_or_else(|| anyhow!("runtime.forEachG's code is not in the file"))?;
    let targets = rip_relative_loads(&code, start);
    targets
        .iter()
        .copied()
        .find(|t| targets.contains(&(t + 8)))
        .ok_or_else(|| anyhow!("runtime.forEachG does not load a slice header as expected"))
}

/// Targets of `mov r64, [rip+disp32]` (REX.W 8B /r with mod=00 rm=101) in `code` at `addr`.
pub(crate) fn rip_relative_loads(code: &[u8], addr: u64) -> Vec<u64> {
    let mut targets = Vec::new();
    for i in 0..code.len().saturating_sub(6) {
        let (rex, op, modrm) = (code[i], code[i + 1], code[i + 2]);
        if (rex == 0x48 || rex == 0x4c) && op == 0x8b && modrm & 0xc7 == 0x05 {
            let disp = i32::from_le_bytes(code[i + 3..i + 7].try_into().expect("4 bytes"));
            let next = addr + i as u64 + 7;
            targets.push(next.wrapping_add_signed(i64::from(disp)));
        }
    }
    targets
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_default_godebug_from_the_module_info() {
        let modinfo = "path\tfieldcase\nmod\tfieldcase\t(devel)\t\nbuild\t-compiler=gc\nbuild\tDefaultGODEBUG=asynctimerchan=1,tls3des=1\nbuild\tGOOS=linux\n";
        assert_eq!(default_godebug(modinfo), Some("asynctimerchan=1,tls3des=1"));
        assert_eq!(default_godebug("path\tx\nbuild\tGOOS=linux\n"), None);
    }

    #[test]
    fn finds_the_end_of_go_stack_check_prologues() {
        // Go 1.27's runtime.newproc: cmp rsp,[r14+0x10]; jbe rel8; push rbp
        assert_eq!(
            prologue_end(&[0x49, 0x3b, 0x66, 0x10, 0x76, 0x4c, 0x55]),
            Some(6)
        );
        // A far jbe (large functions).
        assert_eq!(
            prologue_end(&[0x49, 0x3b, 0x66, 0x10, 0x0f, 0x86, 1, 2, 3, 4, 0x55]),
            Some(10)
        );
        // Frameless or unknown code: no guess.
        assert_eq!(prologue_end(&[0x55, 0x48, 0x89, 0xe5, 0, 0]), None);
        assert_eq!(prologue_end(&[0x49, 0x3b, 0x66, 0x10, 0x77, 0x4c]), None);
    }

    #[test]
    fn decodes_rip_relative_loads() {
        // mov rcx, [rip+0x12da44]; mov rdx, [rip+0x12da40] at 0x448645 (from go1.27 forEachG)
        let code = [
            0x48, 0x8b, 0x0d, 0x44, 0xda, 0x12, 0x00, 0x48, 0x89, 0x4c, 0x24, 0x18, 0x48, 0x8b,
            0x15, 0x40, 0xda, 0x12, 0x00,
        ];
        // Here the second move is 12 bytes after the first: it ends at 0x448658.
        let targets = rip_relative_loads(&code, 0x448645);
        assert_eq!(targets, vec![0x576090, 0x576098]);
    }

    #[test]
    fn reads_uvarints() {
        assert_eq!(uvarint(&[0x08]), Some((8, 1)));
        assert_eq!(uvarint(&[0x96, 0x01]), Some((150, 2)));
        assert_eq!(uvarint(&[0x80]), None);
    }
}
