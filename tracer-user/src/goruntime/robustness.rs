//! Property tests: the Go runtime's structures are read from memory the target owns, so a
//! corrupted `allgs` (absurd lengths, null, unaligned or dangling pointers, pointers into
//! itself), gs with impossible stacks and frame-pointer chains that loop, and P timer heaps of
//! absurd sizes must give torn counts or an error, never a panic, a hang or an unbounded
//! allocation. The "process" read is this test process: the fake runtime lives in an arena in
//! its own memory, read through /proc/self/mem and process_vm_readv like a real target.
use std::path::PathBuf;

use proptest::prelude::*;

use super::memory::Memory;
use super::timers::{TimerImplementation, TimerLayout};
use super::*;

/// Words in the arena: 64 KiB.
const WORDS: usize = 8192;
/// Arena layout (word indexes).
const ALLGLEN: usize = 0;
const ALLGPTR: usize = 1;
const ALLP: usize = 2; // slice header: ptr, len
const ALLGS: usize = 16; // 64 pointers
const GS: usize = 128; // gs, 64 words (512 bytes) apart
const G_WORDS: usize = 64;
const NGS: usize = 32;
const STACKS: usize = GS + NGS * G_WORDS; // stacks, 64 words apart

fn layout() -> TimerLayout {
    TimerLayout {
        p_heap: 16,
        entry_size: 16,
        entry_timer: 0,
        when: 8,
        period: 16,
        f: 24,
        arg: 32,
        implementation: TimerImplementation::State {
            state: 48,
            is_chan: 49,
            blocked: 52,
        },
        hchan_qcount: 0,
        hchan_dataqsiz: 8,
    }
}

/// A GoProcess reading this test process, with the runtime's variables at `arena`.
fn process(arena: &[u64]) -> GoProcess {
    let base = arena.as_ptr() as u64;
    let offsets = offsets::table(27).expect("Go 1.27 layout");
    GoProcess {
        pid: std::process::id(),
        exe: PathBuf::from("/proc/self/exe"),
        version: GoVersion {
            major: 1,
            minor: 27,
            patch: 0,
        },
        version_string: "go1.27.0".into(),
        pie: false,
        bias: 0,
        offsets,
        offsets_source: OffsetsSource::VersionTable,
        allgs: AllgsSource::AllglenSymbols {
            allglen: base + 8 * ALLGLEN as u64,
            allgptr: base + 8 * ALLGPTR as u64,
        },
        wait_reasons: vec!["".into(), "chan receive".into()],
        lines: None,
        newproc_probe: Err(String::new()),
        timer_probe: Err(String::new()),
        memory: Memory::open(std::process::id()).expect("open /proc/self/mem"),
        max_frames: 16,
        allp: Some(base + 8 * ALLP as u64),
        timer_layout: Ok(layout()),
        default_godebug: None,
        // No sudog layout: the channel reads are checked by goruntime::waits' own tests.
        wait_layout: Err("not described in this test".into()),
    }
}

/// A consistent fake runtime: NGS parked goroutines with real frame-pointer chains, and two Ps
/// whose heaps hold timers.
fn healthy(arena: &mut [u64]) {
    let base = arena.as_ptr() as u64;
    let addr = |word: usize| base + 8 * word as u64;
    let o = offsets::table(27).expect("Go 1.27 layout");
    arena[ALLGLEN] = NGS as u64;
    arena[ALLGPTR] = addr(ALLGS);
    for i in 0..NGS {
        let g = GS + i * G_WORDS;
        arena[ALLGS + i] = addr(g);
        let stack = STACKS + i * 64;
        let set = |arena: &mut [u64], off: u64, value: u64| arena[g + off as usize / 8] = value;
        set(arena, o.stack_lo, addr(stack));
        set(arena, o.stack_hi, addr(stack + 64));
        set(arena, o.sched_sp, addr(stack + 8));
        set(arena, o.sched_pc, 0x401000);
        set(arena, o.sched_bp, addr(stack + 16));
        // atomicstatus (u32) is _Gwaiting; goid shares no word with it.
        arena[g + o.atomicstatus as usize / 8] = 4;
        set(arena, o.goid, 100 + i as u64);
        set(arena, o.gopc, 0x402000);
        // Frame chain: (saved bp, return address) pairs going up the stack.
        arena[stack + 16] = addr(stack + 32);
        arena[stack + 17] = 0x403000;
        arena[stack + 32] = 0;
        arena[stack + 33] = 0x404000;
    }
    // allp: two Ps (reusing gs' space beyond what the g layout reads would collide, so the Ps
    // live in the stack area's tail).
    let ps = STACKS + NGS * 64;
    arena[ALLP] = addr(ps);
    arena[ALLP + 1] = 2;
    for p in 0..2 {
        let p_struct = ps + 8 + p * 8;
        arena[ps + p] = addr(p_struct);
        let heap = p_struct + 400;
        arena[p_struct + 2] = addr(heap + p * 16); // p_heap = 16: slice ptr, len
        arena[p_struct + 3] = 2;
    }
}

/// What a corrupted word holds, by `kind`: a pointer into the arena (aligned or not, possibly
/// to the word itself), null, an absurd number, or anything.
fn corrupt_value(kind: u8, raw: u64, base: u64) -> u64 {
    let words = WORDS as u64;
    match kind {
        0 => base + 8 * (raw % words),
        1 => base + raw % (8 * words),
        2 => 0,
        3 => u64::MAX,
        4 => u64::MAX - 7,
        5 => 1 << 40,
        6 => 49_999_999,
        7 => 50_000_000,
        8 => 65_536,
        9 => raw % 64,
        _ => raw,
    }
}

fn corruptions() -> impl Strategy<Value = Vec<(usize, u8, u64)>> {
    prop::collection::vec((0..WORDS, 0u8..11, any::<u64>()), 1..64)
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(512),
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// The healthy arena reads as it was built: the properties below corrupt something real.
#[test]
fn the_fake_runtime_reads_back() {
    let mut arena = vec![0u64; WORDS];
    healthy(&mut arena);
    let go = process(&arena);
    let snapshot = go.snapshot().expect("readable");
    assert_eq!(snapshot.goroutines.len(), NGS);
    assert_eq!(snapshot.torn, 0);
    assert_eq!(
        snapshot.goroutines[0].stack,
        vec![0x401000, 0x403000, 0x404000]
    );
    assert_eq!(snapshot.goroutines[3].wait_reason.as_deref(), Some(""));
    let timers = go.timers().expect("readable");
    assert_eq!(timers.ps, 2);
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn corrupted_runtime_memory_never_panics(words in corruptions()) {
        let mut arena = vec![0u64; WORDS];
        healthy(&mut arena);
        let base = arena.as_ptr() as u64;
        for &(word, kind, raw) in &words {
            arena[word] = corrupt_value(kind, raw, base);
        }
        let go = process(&arena);
        match go.snapshot() {
            Ok(snapshot) => {
                let listed = arena[ALLGLEN] as usize;
                prop_assert!(snapshot.goroutines.len() + snapshot.torn + snapshot.dead <= listed);
                for g in &snapshot.goroutines {
                    prop_assert!(g.stack.len() <= 16);
                }
            }
            Err(e) => {
                let message = format!("{e:#}");
                prop_assert!(!message.is_empty());
            }
        }
        let _ = go.timers();
    }
}
