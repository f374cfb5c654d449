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
//! collector symbolizes as it observes, and caches by address.
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use blazesym::symbolize::{
    source::{Kernel, Process, Source},
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
        Symbolizer {
            blazesym: Blazesym::builder().set_debug_dirs(Some(debug_dirs)).build(),
            pid,
            user: HashMap::new(),
            kernel: HashMap::new(),
            go: None,
        }
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
        let source = Source::Process(Process::new(Pid::from(self.pid)));
        let resolved = self
            .blazesym
            .symbolize(&source, Input::AbsAddr(&missing))
            .unwrap_or_default();
        for (i, &lookup) in missing.iter().enumerate() {
            let frames = match resolved.get(i) {
                Some(Symbolized::Sym(sym)) if sym.code_info.is_some() => frames_of(sym, lookup),
                // No symbol, or no file and line: the Go runtime's own table knows better.
                other => match self.go.as_ref().and_then(|go| go.frames(lookup)) {
                    Some(frames) => frames,
                    None => match other {
                        Some(Symbolized::Sym(sym)) => frames_of(sym, lookup),
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
