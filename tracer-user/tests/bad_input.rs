//! Bad input: what the target controls (its executable, its /proc text, its runtime's memory)
//! must never make leaktrace panic or hang. Property tests feed the parsers random and mutated
//! input inside `cargo test` in bounded time (PROPTEST_CASES raises the number of cases for a
//! longer fuzzing run); binaries leaktrace cannot fully read (unsupported Go versions, no
//! symbols and no `.gopclntab`, not x86_64) and a kernel missing an optional tracepoint must be
//! reported as what cannot be done, with the rest of the report still there.
mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use common::*;
use object::{Object as _, ObjectSection as _};
use proptest::prelude::*;
use serde_json::Value;
use tracer_user::goruntime::{self, GoVersion};
use tracer_user::procfs::fds::{parse_epoll_fdinfo, parse_timerfd_fdinfo};
use tracer_user::unwind::parse_syscall_line;

/// Cases per property unless PROPTEST_CASES says otherwise: enough to catch the shallow faults
/// in a few seconds; a fuzzing run sets PROPTEST_CASES=100000.
fn cases(default: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default);
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Text that looks like procfs lines (keywords, numbers of every size, hex, parentheses) mixed
/// with arbitrary characters: pure random text almost never reaches the number parsing.
fn procfs_like() -> impl Strategy<Value = String> {
    let word = prop_oneof![
        Just("tfd:".to_string()),
        Just("events:".to_string()),
        Just("clockid:".to_string()),
        Just("ticks:".to_string()),
        Just("it_value:".to_string()),
        Just("it_interval:".to_string()),
        Just("0x".to_string()),
        Just("(".to_string()),
        Just(",".to_string()),
        Just(")".to_string()),
        Just("\n".to_string()),
        any::<u64>().prop_map(|n| n.to_string()),
        any::<i64>().prop_map(|n| n.to_string()),
        any::<u64>().prop_map(|n| format!("{n:x}")),
        any::<u64>().prop_map(|n| format!("0x{n:x}")),
        "[ -~]{0,12}",
        ".{0,4}",
    ];
    prop::collection::vec(word, 0..40).prop_map(|words| words.join(" "))
}

proptest! {
    #![proptest_config(cases(2000))]

    #[test]
    fn epoll_fdinfo_parsing_never_panics(text in procfs_like()) {
        for (fd, _) in parse_epoll_fdinfo(&text) {
            prop_assert!(text.contains(&fd.to_string()));
        }
    }

    #[test]
    fn timerfd_fdinfo_parsing_never_panics(
        text in procfs_like(),
        clockid in any::<i32>(),
        ticks in any::<u64>(),
        sec in any::<u64>(),
        nsec in any::<u64>(),
    ) {
        let _ = parse_timerfd_fdinfo(&text);
        // Well-formed lines with absurd numbers (the kernel caps them; a fake /proc need not).
        let lines = format!(
            "clockid: {clockid}\nticks: {ticks}\nsettime flags: 0\nit_value: ({sec}, {nsec})\nit_interval: ({nsec}, {sec})\n"
        );
        let state = parse_timerfd_fdinfo(&lines);
        prop_assert!(state.is_some(), "a well-formed timerfd fdinfo must parse: {lines}");
    }

    #[test]
    fn syscall_line_parsing_never_panics(text in procfs_like()) {
        if let Some(state) = parse_syscall_line(&text) {
            prop_assert!(state.nr >= 0);
        }
    }

    #[test]
    fn go_version_parsing_never_panics(text in "(go)?[0-9.rcbeta X:a-z]{0,24}") {
        if let Some(v) = GoVersion::parse(&text) {
            prop_assert!(text.starts_with("go"));
            let _ = v.is_supported();
        }
    }
}

/// A small Go program, built once per test process (Go 1.27, with DWARF and symbols).
fn go_binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| build_go("g01_chan_recv", "1.27", &[]))
}

/// File range of each section worth corrupting in `data`: the ones leaktrace parses.
fn parsed_sections(data: &[u8]) -> Vec<(String, std::ops::Range<usize>)> {
    let elf = object::File::parse(data).expect("the fixture is an ELF file");
    [
        ".gopclntab",
        ".go.buildinfo",
        ".debug_info",
        ".debug_abbrev",
        ".debug_str",
        ".symtab",
        ".strtab",
        ".shstrtab",
        ".noptrdata",
    ]
    .iter()
    .filter_map(|name| {
        let section = elf.section_by_name(name)?;
        let (start, len) = section.file_range()?;
        Some((
            name.to_string(),
            start as usize..(start + len) as usize,
        ))
    })
    .chain(std::iter::once(("ELF headers".to_string(), 0..64)))
    .collect()
}

/// Every way leaktrace reads a Go executable, run on `path` in a thread that must finish in
/// time (a hang on bad input is a failure as much as a panic).
fn read_everything(path: &Path) -> Result<String, String> {
    let path = path.to_path_buf();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let outcome = std::panic::catch_unwind(|| {
            let facts = goruntime::read_binary(&path).map(|f| f.map(|f| f.version_string));
            if let Ok(Some(table)) = goruntime::read_line_table(&path) {
                let text = table.text_range();
                let step = ((text.end - text.start) / 4096).max(1);
                let mut pc = text.start.saturating_sub(64);
                while pc < text.end.saturating_add(64) {
                    let _ = table.function_at(pc);
                    let _ = table.frames(pc);
                    pc = pc.saturating_add(step);
                }
                for name in ["runtime.newproc", "runtime.forEachG", "main.main", ""] {
                    let _ = table.function_range(name);
                }
                let _ = table.entries();
            }
            format!("{facts:?}")
        });
        let _ = tx.send(outcome);
    });
    match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(Ok(summary)) => Ok(summary),
        Ok(Err(panic)) => Err(format!(
            "panicked: {}",
            panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default()
        )),
        Err(_) => Err("did not finish within 60 s".into()),
    }
}

proptest! {
    #![proptest_config(cases(32))]

    /// Random bytes written over the sections leaktrace parses (line table, build info, DWARF,
    /// symbols, section names, ELF header) of a real Go binary.
    #[test]
    fn corrupted_go_binaries_never_panic(
        section in any::<prop::sample::Index>(),
        writes in prop::collection::vec(
            (any::<prop::sample::Index>(), prop::collection::vec(any::<u8>(), 1..9)),
            1..24,
        ),
    ) {
        let original = std::fs::read(go_binary()).expect("read the fixture binary");
        let sections = parsed_sections(&original);
        let (name, range) = section.get(&sections).clone();
        let mut data = original;
        for (at, bytes) in &writes {
            let start = range.start + at.index(range.len().max(1));
            for (i, b) in bytes.iter().enumerate() {
                if let Some(slot) = data.get_mut(start + i) {
                    *slot = *b;
                }
            }
        }
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("corrupted-go");
        std::fs::create_dir_all(&dir).expect("create a scratch directory");
        let path = dir.join(format!("g-{}-{:?}", std::process::id(), std::thread::current().id()));
        std::fs::write(&path, &data).expect("write the corrupted binary");
        let outcome = read_everything(&path);
        prop_assert!(outcome.is_ok(), "{name} corrupted at {writes:?}: {outcome:?}");
    }
}

#[test]
fn an_uncorrupted_go_binary_reads_completely() {
    // The baseline of the property above: the unmodified file is read, so the corruptions are
    // what the property exercises.
    let facts = goruntime::read_binary(go_binary())
        .expect("readable")
        .expect("a Go program");
    assert_eq!(facts.version.minor, 27);
    assert!(matches!(facts.dwarf_offsets, Some(Ok(_))));
    let table = goruntime::read_line_table(go_binary())
        .expect("readable")
        .expect("a Go program");
    assert!(table.function_range("runtime.newproc").is_some());
}
