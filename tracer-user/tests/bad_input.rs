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

/// A small Go program, built once per test process (Go 1.27, with symbols and DWARF left
/// uncompressed, so that corruptions reach the DWARF parser rather than the decompressor).
fn go_binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| build_go("g01_chan_recv", "1.27", &["-ldflags=-compressdwarf=false"]))
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
        Some((name.to_string(), start as usize..(start + len) as usize))
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

/// A copy of `binary` with every occurrence of `from` replaced by `to` (same length): the build
/// info's inline version and `runtime.buildVersion`, or a section's name.
fn patched(binary: &Path, from: &str, to: &str) -> PathBuf {
    assert_eq!(from.len(), to.len(), "patches keep the file's layout");
    let mut data = std::fs::read(binary).expect("read the binary");
    let mut found = 0;
    let mut i = 0;
    while let Some(at) = data[i..]
        .windows(from.len())
        .position(|w| w == from.as_bytes())
    {
        let at = i + at;
        data[at..at + to.len()].copy_from_slice(to.as_bytes());
        found += 1;
        i = at + to.len();
    }
    assert!(found > 0, "{from:?} is not in {}", binary.display());
    let path = binary.with_file_name(format!(
        "{}-{}",
        binary.file_name().unwrap().to_string_lossy(),
        to.trim_start_matches('.')
    ));
    std::fs::write(&path, data).expect("write the patched copy");
    let mut perms = std::fs::metadata(&path).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    std::fs::set_permissions(&path, perms).unwrap();
    path
}

/// The exact version string a toolchain writes into its binaries ("go1.27.3").
fn version_in(binary: &Path) -> String {
    goruntime::read_binary(binary)
        .expect("readable")
        .expect("a Go program")
        .version_string
}

/// Traces a Go program leaktrace cannot read goroutines of: the trace must succeed, say why
/// goroutines are missing (the note contains each of `why`), and still report the threads.
fn reports_threads_without_goroutines(binary: &Path, why: &[&str]) -> Value {
    require_root();
    let fixture = Fixture::start(binary, &[]);
    let report = trace_pid(fixture.pid(), "2s", &[]);
    let notes: Vec<&str> = report["tracer"]["notes"]
        .as_array()
        .expect("notes")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let note = notes
        .iter()
        .find(|n| n.contains("goroutines are not analysed"))
        .unwrap_or_else(|| panic!("no note says goroutines are not analysed: {notes:#?}"));
    for word in why {
        assert!(note.contains(word), "{word:?} missing from {note:?}");
    }
    assert!(report.get("goroutines").is_none());
    assert!(
        report["native_io"]["threads_alive"].as_u64().unwrap_or(0) >= 2,
        "the Go runtime's threads are still reported: {}",
        report["native_io"]
    );
    report
}

#[test]
fn a_future_go_version_is_named_and_the_threads_are_reported() {
    let binary = build_go("g01_chan_recv", "1.27", &[]);
    let version = version_in(&binary);
    let future = version.replace("go1.27", "go1.28");
    let patched = patched(&binary, &version, &future);
    reports_threads_without_goroutines(
        &patched,
        &["Go 1.28", "not supported", "1.19 through 1.27"],
    );
}

#[test]
fn an_old_go_version_is_named_and_the_threads_are_reported() {
    let binary = build_go("g01_chan_recv", "1.19", &[]);
    let version = version_in(&binary);
    let old = version.replace("go1.19", "go1.18");
    let patched = patched(&binary, &version, &old);
    reports_threads_without_goroutines(&patched, &["Go 1.18", "not supported"]);
}

#[test]
fn a_go_binary_without_symbols_or_line_table_is_reported_without_goroutines() {
    let stripped = build_go("g01_chan_recv", "1.27", &["-ldflags=-s -w"]);
    // The runtime finds its line table through moduledata, not the section header: renaming
    // the section hides it from leaktrace and leaves the program running as before.
    let hidden = patched(&stripped, ".gopclntab", ".xopclntab");
    let facts = goruntime::read_binary(&hidden).unwrap().unwrap();
    assert!(facts.allgs_symbol.is_none() && facts.allgs_from_code.is_err());
    reports_threads_without_goroutines(&hidden, &["runtime.allgs", "pclntab"]);
}

/// Builds a Go fixture for another architecture (`GOARCH`), e.g. 386 (runs here through the
/// kernel's IA32 emulation).
fn build_go_arch(dir: &str, goarch: &str) -> PathBuf {
    let binary = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("{dir}-{goarch}-{}", std::process::id()));
    let cache = workspace_root().join(".cache");
    let output = Command::new(go_toolchain("1.27"))
        .args(["build", "-o"])
        .arg(&binary)
        .arg(format!("./{dir}"))
        .current_dir(fixtures().join("go"))
        .env("GOARCH", goarch)
        .env("GOTOOLCHAIN", "local")
        .env("GOFLAGS", "-mod=mod")
        .env("GOCACHE", cache.join("go-build"))
        .env("GOPATH", cache.join("gopath"))
        .env_remove("GOROOT")
        .output()
        .expect("run go build");
    assert!(
        output.status.success(),
        "building {dir} for {goarch}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    binary
}

#[test]
fn a_non_x86_64_go_binary_is_refused_with_its_architecture() {
    let binary = build_go_arch("g01_chan_recv", "386");
    let err = goruntime::read_binary(&binary).expect_err("a 386 binary is not readable");
    assert!(format!("{err:#}").contains("I386"), "{err:#}");
    let report = {
        require_root();
        let fixture = Fixture::start(&binary, &[]);
        trace_pid(fixture.pid(), "2s", &[])
    };
    let notes = report["tracer"]["notes"].to_string();
    assert!(
        notes.contains("I386") && notes.contains("x86_64"),
        "{notes}"
    );
    // Its system calls are invisible to syscall tracepoints: said, not silently empty.
    assert!(notes.contains("32-bit program"), "{notes}");
    assert!(report.get("goroutines").is_none());
}

/// Runs leaktrace with `hide` taken from tracefs on a waiter nobody signals, with `extra`
/// options: the report, whose notes must name what is missing and whose candidates must still
/// hold the waiter.
fn trace_without(hide: &[&str], extra: &[&str]) -> (serde_json::Value, String) {
    let fixture = Fixture::start(&build_c("condvar_never_signalled"), &["1", "0"]);
    let pid = fixture.pid().to_string();
    let mut args = vec!["--pid", &pid, "--duration", "2s", "--format", "json"];
    args.extend_from_slice(extra);
    let report = json_report(&common::tracefs::leaktrace_without(hide, &args));
    let notes = report["tracer"]["notes"].to_string();
    // The rest still works: the waiter nobody signals is found.
    assert_eq!(
        of_kind(&report, "futex_wait").len(),
        1,
        "{:#?}",
        candidates(&report)
    );
    (report, notes)
}

#[test]
fn a_kernel_missing_optional_tracepoints_is_said_and_the_rest_reported() {
    require_root();
    // The default (low) mode attaches only the lifecycle tracepoints: without the task
    // category (missing, as on an older kernel) thread creations come from the clone/fork
    // exits in the probe windows, and the windows' note says so instead of task_newtask.
    let (report, notes) = trace_without(&["task"], &[]);
    assert_eq!(report["tracer"]["detail"], "low");
    assert!(
        notes.contains("task:task_rename does not exist on this kernel; not traced")
            && notes.contains("task:task_newtask does not exist on this kernel; not traced"),
        "{notes}"
    );
    assert!(
        notes.contains("thread creations only in the windows")
            && !notes.contains("from task_newtask throughout"),
        "{notes}"
    );
    let probes = report["tracer"]["probes"].to_string();
    assert!(!probes.contains("task_newtask"), "{probes}");
    assert!(probes.contains("raw_syscalls:sys_exit"), "{probes}");

    // The full mode attaches every syscall tracepoint: one that cannot be attached is named.
    let (report, notes) = trace_without(
        &["task", "syscalls/sys_enter_timerfd_create"],
        &["--detail", "full"],
    );
    assert!(
        notes.contains("task:task_rename does not exist on this kernel; not traced"),
        "{notes}"
    );
    assert!(
        notes.contains("syscalls:sys_enter_timerfd_create not traced"),
        "{notes}"
    );
    let probes = report["tracer"]["probes"].to_string();
    assert!(!probes.contains("task_rename") && !probes.contains("sys_enter_timerfd_create"));
    assert!(probes.contains("sys_enter_futex"), "{probes}");
}

/// A number as the target can make it reach a ring-buffer record: system call arguments and
/// return values (fds, flags, timer values, futex addresses), tids, times.
fn target_number() -> impl Strategy<Value = u64> {
    prop_oneof![
        0u64..8,
        Just(u64::MAX),
        Just(i64::MAX as u64),
        Just(i64::MIN as u64),
        Just(u32::MAX as u64),
        Just(1_000_000_000u64 * 1_000_000_000),
        any::<u64>(),
    ]
}

fn frame() -> impl Strategy<Value = tracer_user::model::Frame> {
    (any::<u64>(), prop::option::of("[a-z.]{0,8}")).prop_map(|(addr, function)| {
        tracer_user::model::Frame {
            function,
            file: None,
            line: None,
            module: None,
            addr,
            inlined: false,
        }
    })
}

/// One event as the collector decodes it from a ring-buffer record (or a /proc scan).
fn kernel_event() -> impl Strategy<Value = tracer_user::model::Event> {
    use tracer_user::model::epoll::EpollEvent;
    use tracer_user::model::threads::ThreadEvent;
    use tracer_user::model::timerfd::{TimerfdEvent, TimerfdState};
    use tracer_user::model::Event;
    let n = target_number;
    let stack = || prop::collection::vec(frame(), 0..3);
    prop_oneof![
        (n(), n(), n(), n(), n(), n(), prop::option::of(stack())).prop_map(
            |(tid, addr, op, start, duration, ret, user_stack)| Event::WaitDone {
                tid: tid as u32,
                futex_addr: addr,
                op: op as u32,
                start_ns: start,
                duration_ns: duration,
                ret: ret as i64,
                user_stack,
                kernel_stack: None,
            }
        ),
        (n(), n(), n(), n(), stack()).prop_map(|(at, creator, tid, flags, stack)| {
            Event::Thread(ThreadEvent::Created {
                at_ns: at,
                creator: creator as u32,
                tid: tid as u32,
                flags,
                stack,
            })
        }),
        (n(), n()).prop_map(|(at, tid)| Event::Thread(ThreadEvent::Exited {
            at_ns: at,
            tid: tid as u32
        })),
        (n(), ".{0,20}").prop_map(|(tid, name)| Event::Thread(ThreadEvent::Renamed {
            tid: tid as u32,
            name
        })),
        (n(), n(), n(), stack()).prop_map(|(at, tid, epfd, stack)| {
            Event::Epoll(EpollEvent::Created {
                at_ns: at,
                tid: tid as u32,
                epfd: epfd as i32,
                stack,
            })
        }),
        (n(), n(), n(), n(), n(), n(), n()).prop_map(|(at, tid, epfd, op, fd, events, ret)| {
            Event::Epoll(EpollEvent::Ctl {
                at_ns: at,
                tid: tid as u32,
                epfd: epfd as i32,
                op: op as u32,
                fd: fd as i32,
                events: events as u32,
                ret: ret as i64,
            })
        }),
        (n(), n()).prop_map(|(at, epfd)| Event::Epoll(EpollEvent::Closed {
            at_ns: at,
            epfd: epfd as i32
        })),
        (n(), n(), n(), n(), stack()).prop_map(|(at, tid, fd, clockid, stack)| {
            Event::Timerfd(TimerfdEvent::Created {
                at_ns: at,
                tid: tid as u32,
                fd: fd as i32,
                clockid: clockid as i32,
                flags: 0,
                stack,
            })
        }),
        (n(), n(), n(), n(), n(), n(), prop::option::of(n()), n()).prop_map(
            |(at, tid, fd, flags, value, interval, deadline, ret)| {
                Event::Timerfd(TimerfdEvent::Set {
                    at_ns: at,
                    tid: tid as u32,
                    fd: fd as i32,
                    flags: flags as u32,
                    value_ns: value,
                    interval_ns: interval,
                    deadline_ns: deadline,
                    ret: ret as i64,
                    stack: Vec::new(),
                })
            }
        ),
        (n(), n(), n(), n(), n()).prop_map(|(at, tid, fd, ret, expirations)| {
            Event::Timerfd(TimerfdEvent::Read {
                at_ns: at,
                tid: tid as u32,
                fd: fd as i32,
                ret: ret as i64,
                expirations,
            })
        }),
        (n(), n(), n(), n(), n()).prop_map(|(at, fd, ticks, value, interval)| {
            Event::Timerfd(TimerfdEvent::Existing {
                at_ns: at,
                fd: fd as i32,
                state: TimerfdState {
                    clockid: 1,
                    ticks,
                    it_value_ns: value,
                    it_interval_ns: interval,
                },
            })
        }),
        (n(), n()).prop_map(|(at, fd)| Event::Timerfd(TimerfdEvent::Closed {
            at_ns: at,
            fd: fd as i32
        })),
        n().prop_map(|at| Event::TargetExited { at_ns: at }),
    ]
}

proptest! {
    #![proptest_config(cases(300))]

    /// Whatever the records say (their fields are the target's system call arguments and
    /// results), the model, the analysis and both report formats never panic.
    #[test]
    fn any_event_stream_is_modelled_analysed_and_reported(
        started in target_number(),
        events in prop::collection::vec(kernel_event(), 0..40),
        now in target_number(),
        min_blocked in target_number(),
    ) {
        use tracer_user::model::{Event, Model};
        use tracer_user::report::{Report, TargetInfo, TracerInfo};
        let mut model = Model::new();
        model.apply(&Event::TraceStarted { at_ns: started });
        for event in &events {
            model.apply(event);
        }
        let analysis = tracer_user::analyze::analyze(&model, now, min_blocked, 20);
        let report = Report::new(
            TargetInfo { pid: 1, comm: "fuzz".into(), exe: "/fuzz".into(), container: None },
            TracerInfo::default(),
            analysis,
            now.saturating_sub(started),
            false,
            min_blocked,
        );
        let json = report.to_json();
        prop_assert!(serde_json::from_str::<Value>(&json).is_ok());
        let _ = report.to_text();
    }
}
