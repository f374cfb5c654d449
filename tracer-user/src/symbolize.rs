//! Addresses to `function (file:line)` with blazesym: ELF symbols and DWARF for C, C++ and Rust,
//! Go's symbol table, PIE and shared libraries through /proc/PID/maps, and kernel addresses
//! through kallsyms.
//!
//! Go executables without symbols (`-ldflags=-s -w`) still have `.gopclntab`, the table the Go
//! runtime uses for its own tracebacks: when the collector recognises a Go program it hands its
//! line table over ([`Symbolizer::set_go_line_table`]), and addresses blazesym cannot name (or
//! names without a file and line) are looked up there, inlined frames included.
//!
//! Symbolization must happen while the target is alive (it reads the target's mappings), so the
//! collector symbolizes as it observes, and caches by address. A target can still exit between
//! the moment a stack is taken and its lookup (a stack taken in the scan that sees it exiting):
//! the executable mappings seen while it was alive are kept, each with its file held open, so
//! those addresses are then named from the files themselves ([`Symbolizer::resolve`]).
use std::collections::HashMap;
use std::fs::File;
use std::os::fd::AsRawFd as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use blazesym::symbolize::{
    source::{Elf, Kernel, Process, Source},
    Input, Sym, Symbolized, Symbolizer as Blazesym,
};
use blazesym::Pid;

use crate::goruntime::pclntab::LineTable;
use crate::model::Frame;

pub struct Symbolizer {
    blazesym: Blazesym,
    pid: u32,
    user: HashMap<u64, Vec<Frame>>,
    kernel: HashMap<u64, String>,
    go: Option<GoLines>,
    /// The target's executable file mappings as last read while it was alive.
    mapped: Vec<MappedFile>,
    /// When `mapped` was last read: addresses outside every file mapping (the vdso, JIT code,
    /// a garbled return address) would otherwise re-read the maps at each lookup.
    mapped_at: std::time::Instant,
}

/// An executable mapping of a file, with the file held open so that it can still be read after
/// the target (and its /proc/PID/map_files) is gone.
struct MappedFile {
    start: u64,
    end: u64,
    /// File offset of `start`.
    offset: u64,
    /// The path the target maps it as, for frames' `module`.
    path: PathBuf,
    file: File,
}

/// The line table of a Go executable, and where it is loaded.
struct GoLines {
    table: Arc<LineTable>,
    /// Process address minus link address.
    bias: u64,
    /// The executable's path, for the frames' `module`.
    module: String,
}

impl GoLines {
    /// Frames for a process address, innermost first; None outside the Go code.
    fn frames(&self, addr: u64) -> Option<Vec<Frame>> {
        let link = addr.wrapping_sub(self.bias);
        let frames = self.table.frames(link);
        if frames.is_empty() {
            return None;
        }
        Some(
            frames
                .into_iter()
                .map(|f| Frame {
                    function: Some(f.function),
                    file: f.file,
                    line: f.line,
                    module: Some(self.module.clone()),
                    addr,
                    inlined: f.inlined,
                })
                .collect(),
        )
    }
}

impl Symbolizer {
    pub fn new(pid: u32) -> Self {
        // Separate debug files (debug links, build ids) are the target's: in a container they
        // live in its file system, not ours. blazesym itself reads the mapped files through
        // /proc/PID/map_files and the perf map through /proc/PID/root (its `Process` defaults).
        let debug_dirs: Vec<_> = ["/usr/lib/debug", "/lib/debug"]
            .iter()
            .filter_map(|dir| crate::procfs::root::in_target_root(pid, Path::new(dir)).ok())
            .collect();
        let mut symbolizer = Symbolizer {
            blazesym: Blazesym::builder().set_debug_dirs(Some(debug_dirs)).build(),
            pid,
            user: HashMap::new(),
            kernel: HashMap::new(),
            go: None,
            mapped: Vec::new(),
            mapped_at: std::time::Instant::now(),
        };
        // Now, not at the first lookup: a target can exit before its first stack is looked up.
        symbolizer.read_mappings();
        symbolizer
    }

    /// Re-reads the executable mappings if one of `addrs` is outside those known (a library
    /// loaded since), at most once a second; keeps the old ones when the target cannot be read.
    fn refresh_mappings(&mut self, addrs: &[u64]) {
        const AT_MOST_EVERY: std::time::Duration = std::time::Duration::from_secs(1);
        let known = |addr: u64| self.mapped.iter().any(|m| (m.start..m.end).contains(&addr));
        if self.mapped_at.elapsed() >= AT_MOST_EVERY && !addrs.iter().all(|&addr| known(addr)) {
            self.read_mappings();
        }
    }

    fn read_mappings(&mut self) {
        self.mapped_at = std::time::Instant::now();
        let Ok(maps) = crate::unwind::read_maps(self.pid) else {
            return;
        };
        let pid = self.pid;
        let mapped: Vec<MappedFile> = maps
            .iter()
            .filter(|m| m.executable)
            .filter_map(|m| {
                let file = File::open(m.file_path(pid)?).ok()?;
                Some(MappedFile {
                    start: m.start,
                    end: m.end,
                    offset: m.offset,
                    path: m.path.clone()?,
                    file,
                })
            })
            .collect();
        if !mapped.is_empty() {
            self.mapped = mapped;
        }
    }

    /// Names addresses of a target that can no longer be read through /proc from the files it
    /// had mapped: each address as a file offset into its mapping's file (blazesym's ELF source).
    fn named_by_mapped_files(&self, lookups: &[u64]) -> Vec<Option<Vec<Frame>>> {
        lookups
            .iter()
            .map(|&addr| {
                let m = self
                    .mapped
                    .iter()
                    .find(|m| (m.start..m.end).contains(&addr))?;
                let path = PathBuf::from(format!("/proc/self/fd/{}", m.file.as_raw_fd()));
                let source = Source::Elf(Elf::new(path));
                let offset = addr - m.start + m.offset;
                let resolved = self
                    .blazesym
                    .symbolize_single(&source, Input::FileOffset(offset))
                    .ok()?;
                let Symbolized::Sym(sym) = resolved else {
                    return None;
                };
                let module = m.path.to_string_lossy().into_owned();
                Some(
                    frames_of(&sym, addr)
                        .into_iter()
                        .map(|frame| Frame {
                            module: Some(module.clone()),
                            ..frame
                        })
                        .collect(),
                )
            })
            .collect()
    }

    /// The target is a Go program: name addresses in its executable that blazesym cannot (no
    /// symbol, or no file and line) from its `.gopclntab`. `load_bias` is process address minus
    /// link address; `module` the executable's path.
    pub fn set_go_line_table(&mut self, table: Arc<LineTable>, load_bias: u64, module: String) {
        self.go = Some(GoLines {
            table,
            bias: load_bias,
            module,
        });
        // What was looked up without it may now be named.
        self.user
            .retain(|_, frames| frames.iter().any(|f| f.line.is_some()));
    }

    /// Symbolizes a user stack, innermost first. `addrs[0]` is the exact instruction; the others
    /// are return addresses, looked up one byte earlier so that a call at the end of a function
    /// is attributed to the caller's call line, not to whatever follows it.
    pub fn user_stack(&mut self, addrs: &[u64]) -> Vec<Frame> {
        self.frames(addrs, true)
    }

    /// Symbolizes a stack of return addresses only (each looked up one byte earlier).
    pub fn return_addresses(&mut self, addrs: &[u64]) -> Vec<Frame> {
        self.frames(addrs, false)
    }

    fn frames(&mut self, addrs: &[u64], first_is_exact: bool) -> Vec<Frame> {
        let lookups: Vec<u64> = addrs
            .iter()
            .enumerate()
            .map(|(i, &addr)| {
                if i == 0 && first_is_exact {
                    addr
                } else {
                    addr.saturating_sub(1)
                }
            })
            .collect();
        self.resolve(&lookups);
        lookups
            .iter()
            .zip(addrs)
            .flat_map(|(lookup, &addr)| {
                self.user[lookup].iter().cloned().map(move |mut frame| {
                    frame.addr = addr;
                    frame
                })
            })
            .collect()
    }

    /// The statement that made a call, from the call's return address (e.g. a `go` statement
    /// from the PC the Go runtime records): the innermost frame at the call instruction.
    pub fn call_site(&mut self, return_address: u64) -> Frame {
        let lookup = return_address.saturating_sub(1);
        self.resolve(&[lookup]);
        let mut frame = self.user[&lookup][0].clone();
        frame.addr = return_address;
        frame
    }

    /// The name of the function at `addr` (outermost, not an inlined callee).
    pub fn function_at(&mut self, addr: u64) -> Option<String> {
        self.resolve(&[addr]);
        self.user[&addr].last().and_then(|f| f.function.clone())
    }

    /// Looks up what the cache does not have yet.
    fn resolve(&mut self, lookups: &[u64]) {
        let mut missing: Vec<u64> = lookups
            .iter()
            .copied()
            .filter(|a| !self.user.contains_key(a))
            .collect();
        if missing.is_empty() {
            return;
        }
        missing.sort_unstable();
        missing.dedup();
        self.refresh_mappings(&missing);
        let source = Source::Process(Process::new(Pid::from(self.pid)));
        let resolved = self
            .blazesym
            .symbolize(&source, Input::AbsAddr(&missing))
            .unwrap_or_default();
        // The target exited since the stack was taken: /proc/PID/maps is gone with it.
        let from_files = if resolved.is_empty() {
            self.named_by_mapped_files(&missing)
        } else {
            Vec::new()
        };
        for (i, &lookup) in missing.iter().enumerate() {
            let frames = match resolved.get(i) {
                Some(Symbolized::Sym(sym)) if sym.code_info.is_some() => frames_of(sym, lookup),
                // No symbol, or no file and line: the Go runtime's own table knows better.
                other => match self.go.as_ref().and_then(|go| go.frames(lookup)) {
                    Some(frames) => frames,
                    None => match (other, from_files.get(i)) {
                        (Some(Symbolized::Sym(sym)), _) => frames_of(sym, lookup),
                        (_, Some(Some(frames))) => frames.clone(),
                        _ => vec![Frame::unknown(lookup)],
                    },
                },
            };
            self.user.insert(lookup, frames);
        }
    }

    /// Kernel function names (with offsets) for kernel addresses, innermost first.
    pub fn kernel_stack(&mut self, addrs: &[u64]) -> Vec<String> {
        let missing: Vec<u64> = addrs
            .iter()
            .copied()
            .filter(|a| !self.kernel.contains_key(a))
            .collect();
        if !missing.is_empty() {
            let source = Source::Kernel(Kernel::default());
            let resolved = self
                .blazesym
                .symbolize(&source, Input::AbsAddr(&missing))
                .unwrap_or_default();
            for (i, &addr) in missing.iter().enumerate() {
                let name = match resolved.get(i) {
                    Some(Symbolized::Sym(sym)) => format!("{}+{:#x}", sym.name, sym.offset),
                    _ => format!("{addr:#x}"),
                };
                self.kernel.insert(addr, name);
            }
        }
        addrs.iter().map(|a| self.kernel[a].clone()).collect()
    }
}

/// One address can stand for several frames when functions were inlined into each other:
/// blazesym lists them outermost first, each with its own location; a stack lists innermost first.
fn frames_of(sym: &Sym<'_>, addr: u64) -> Vec<Frame> {
    let module = sym
        .module
        .as_ref()
        .map(|m| m.to_string_lossy().into_owned());
    let location = |info: Option<&blazesym::symbolize::CodeInfo<'_>>| {
        info.map(|info| (info.to_path().to_string_lossy().into_owned(), info.line))
    };
    let frame = |name: &str, loc: Option<(String, Option<u32>)>, inlined: bool| {
        let (file, line) = loc.map_or((None, None), |(f, l)| (Some(f), l));
        Frame {
            function: Some(name.to_string()),
            file,
            line,
            module: module.clone(),
            addr,
            inlined,
        }
    };
    let mut frames: Vec<Frame> = sym
        .inlined
        .iter()
        .rev()
        .map(|inl| frame(&inl.name, location(inl.code_info.as_ref()), true))
        .collect();
    frames.push(frame(&sym.name, location(sym.code_info.as_deref()), false));
    frames
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Where libc is mapped executable in a process: (start, file offset of start), once the
    /// process has mapped it (a child just spawned may not have yet).
    fn libc_text(pid: u32) -> (u64, u64) {
        for _ in 0..500 {
            let maps = crate::unwind::read_maps(pid).unwrap();
            let text = maps.iter().find(|m| {
                m.executable
                    && m.path
                        .as_ref()
                        .is_some_and(|p| p.to_string_lossy().contains("libc.so"))
            });
            if let Some(text) = text {
                return (text.start, text.offset);
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        panic!("PID {pid} did not map libc in 5 s");
    }

    #[test]
    fn a_target_that_exited_is_still_named_from_the_files_it_had_mapped() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        // The same libc function in the child: same file offset, its own mapping.
        let ours = libc::getppid as *const () as u64;
        let (our_start, our_offset) = libc_text(std::process::id());
        let (its_start, its_offset) = libc_text(child.id());
        let in_child = |addr: u64| addr - our_start + our_offset - its_offset + its_start;
        let mut symbolizer = Symbolizer::new(child.id());
        let alive = symbolizer.function_at(in_child(libc::getpid as *const () as u64));
        assert!(
            alive.as_deref().is_some_and(|f| f.contains("getpid")),
            "{alive:?}"
        );

        child.kill().unwrap();
        child.wait().unwrap();
        let gone = symbolizer.user_stack(&[in_child(ours)]);
        assert!(
            gone[0]
                .function
                .as_deref()
                .is_some_and(|f| f.contains("getppid")),
            "{gone:?}"
        );
        assert!(gone[0]
            .module
            .as_deref()
            .is_some_and(|m| m.contains("libc.so")));
    }
}
