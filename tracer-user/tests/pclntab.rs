//! The `.gopclntab` line table (what symbolizes stripped Go binaries) against DWARF: on the
//! unstripped build of a fixture, for a sample of addresses in every function, the frames from
//! `.gopclntab` (function, file, line, inlined ones included) must be the ones blazesym finds in
//! the DWARF. And the stripped build of the same program must give the same frames.
mod common;

use blazesym::symbolize::{
    source::{Elf, Source},
    Input, Symbolized, Symbolizer,
};
use common::*;
use tracer_user::goruntime::{pclntab::LineTable, read_line_table};

/// Addresses tried per function (spread over its code).
const PER_FUNCTION: u64 = 8;

type Located = (String, Option<String>, Option<u32>);

fn line_table(path: &std::path::Path) -> LineTable {
    read_line_table(path)
        .expect("a readable Go binary")
        .expect("a Go binary")
}

/// Addresses in every function: its entry and points spread over its code.
fn sample(table: &LineTable) -> Vec<u64> {
    let entries = table.entries();
    let end = table.text_range().end;
    let mut addrs = Vec::new();
    for (i, &entry) in entries.iter().enumerate() {
        let next = entries.get(i + 1).copied().unwrap_or(end);
        let step = (next.saturating_sub(entry) / PER_FUNCTION).max(1);
        addrs.extend((0..PER_FUNCTION).map(|k| entry + k * step).filter(|&a| a < next));
    }
    addrs
}

/// Frames from DWARF, innermost first.
fn dwarf_frames(binary: &std::path::Path, addrs: &[u64]) -> Vec<Option<Vec<Located>>> {
    let symbolizer = Symbolizer::new();
    let source = Source::Elf(Elf::new(binary));
    let mut out = Vec::with_capacity(addrs.len());
    for chunk in addrs.chunks(4096) {
        let resolved = symbolizer
            .symbolize(&source, Input::VirtOffset(chunk))
            .expect("blazesym reads the binary");
        for result in resolved {
            out.push(match result {
                Symbolized::Sym(sym) => {
                    let loc = |info: Option<&blazesym::symbolize::CodeInfo<'_>>| match info {
                        Some(info) => (
                            Some(info.to_path().to_string_lossy().into_owned()),
                            info.line,
                        ),
                        None => (None, None),
                    };
                    let mut frames: Vec<Located> = sym
                        .inlined
                        .iter()
                        .rev()
                        .map(|inl| {
                            let (file, line) = loc(inl.code_info.as_ref());
                            (inl.name.to_string(), file, line)
                        })
                        .collect();
                    let (file, line) = loc(sym.code_info.as_deref());
                    frames.push((sym.name.to_string(), file, line));
                    Some(frames)
                }
                _ => None,
            });
        }
    }
    out
}

fn pcln_frames(table: &LineTable, addr: u64) -> Vec<Located> {
    table
        .frames(addr)
        .into_iter()
        .map(|f| (f.function, f.file, f.line))
        .collect()
}

/// Builds the fixture with and without symbols and compares; returns (addresses compared,
/// whole stacks equal, innermost frames equal).
fn agrees_with_dwarf(go: &str, flags: &[&str]) {
    let unstripped = build_go("g13_consumer", go, flags);
    let mut stripped_flags = flags.to_vec();
    stripped_flags.push("-ldflags=-s -w");
    let stripped = build_go("g13_consumer", go, &stripped_flags);

    let table = line_table(&unstripped);
    assert!(table.has_inline_trees(), "Go {go}: inline trees not found");
    let addrs = sample(&table);
    let dwarf = dwarf_frames(&unstripped, &addrs);
    let (mut compared, mut same_stack, mut same_innermost, mut inlined_stacks) = (0, 0, 0, 0);
    let mut differences = Vec::new();
    for (&addr, dwarf) in addrs.iter().zip(&dwarf) {
        let Some(dwarf) = dwarf else { continue };
        // Code without DWARF lines (some assembly) has nothing to compare with.
        if dwarf.iter().all(|f| f.2.is_none()) {
            continue;
        }
        compared += 1;
        let ours = pcln_frames(&table, addr);
        if ours.len() > 1 {
            inlined_stacks += 1;
        }
        if ours.first() == dwarf.first() {
            same_innermost += 1;
        }
        if &ours == dwarf {
            same_stack += 1;
        } else if differences.len() < 15 {
            differences.push(format!("{addr:#x}:\n  pclntab {ours:?}\n  dwarf   {dwarf:?}"));
        }
    }
    eprintln!(
        "Go {go} {flags:?}: {compared} addresses in {} functions; whole stacks equal: {same_stack} \
         ({:.3}%), innermost frames equal: {same_innermost}; {inlined_stacks} with inlined frames",
        table.entries().len(),
        100.0 * same_stack as f64 / compared as f64
    );
    for d in &differences {
        eprintln!("{d}");
    }
    assert!(compared > 5000, "Go {go}: only {compared} addresses compared");
    assert!(inlined_stacks > 500, "Go {go}: only {inlined_stacks} inlined");
    assert_eq!(same_stack, compared, "Go {go}: pclntab and DWARF disagree");

    // The stripped build has the same code and the same table.
    let stripped_table = line_table(&stripped);
    assert!(stripped_table.has_inline_trees(), "Go {go} stripped");
    for &addr in &addrs {
        assert_eq!(
            pcln_frames(&stripped_table, addr),
            pcln_frames(&table, addr),
            "Go {go}: stripped build at {addr:#x}"
        );
    }
}

#[test]
fn the_line_table_agrees_with_dwarf_on_go_1_19() {
    agrees_with_dwarf("1.19", &[]);
}

#[test]
fn the_line_table_agrees_with_dwarf_on_go_1_27() {
    agrees_with_dwarf("1.27", &[]);
}

#[test]
fn the_line_table_agrees_with_dwarf_on_go_1_27_pie() {
    agrees_with_dwarf("1.27", &["-buildmode=pie"]);
}

#[test]
fn the_line_table_agrees_with_dwarf_on_go_1_21() {
    agrees_with_dwarf("1.21", &[]);
}
