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

/// Where the fake gs hold `waiting` and `trackingSeq` (past what the Go 1.27 layout reads).
const G_WAITING: u64 = 320;
const G_TRACKING_SEQ: u64 = 328;

/// [`process`] that knows `g.trackingSeq`, so its reads can reuse stacks.
fn tracking_process(arena: &[u64]) -> GoProcess {
    let mut go = process(arena);
    go.wait_layout = Ok(waits::WaitLayout {
        g_waiting: G_WAITING,
        g_tracking_seq: G_TRACKING_SEQ,
        sudog_chan: 0,
        sudog_waitlink: 8,
        sudog_g: 16,
    });
    go
}

/// A whole read starting from `cache`: the snapshot (with its goroutines) and the cache after.
fn read_with(go: &GoProcess, cache: StackCache) -> (Snapshot, StackCache) {
    let mut read = go.start_snapshot_after(cache).expect("readable");
    let mut goroutines = Vec::new();
    while !go.continue_snapshot(&mut read, |g| goroutines.push(g)) {}
    let (snapshot, cache) = read.finish_keeping();
    (
        Snapshot {
            goroutines,
            ..snapshot
        },
        cache,
    )
}

/// The goroutines as a read without a cache sees them, `elapsed` and counts aside.
fn fresh(go: &GoProcess) -> Vec<GoroutineState> {
    go.snapshot().expect("readable").goroutines
}

#[test]
fn an_incremental_read_walks_only_the_goroutines_that_moved_and_sees_what_a_full_read_sees() {
    let mut arena = vec![0u64; WORDS];
    healthy(&mut arena);
    let base = arena.as_ptr() as u64;
    let addr = |word: usize| base + 8 * word as u64;
    let o = offsets::table(27).expect("Go 1.27 layout");
    let word_of = |i: usize, offset: u64| GS + i * G_WORDS + offset as usize / 8;
    let go = tracking_process(&arena);

    let (first, cache) = read_with(&go, StackCache::default());
    assert_eq!((first.reused, first.walked), (0, NGS));
    assert_eq!(first.goroutines, fresh(&go));
    let (second, cache) = read_with(&go, cache);
    assert_eq!((second.reused, second.walked), (NGS, 0));
    assert_eq!(second.goroutines, fresh(&go));

    // g 1 parked elsewhere: a new pc, and a frame chain with another caller.
    arena[word_of(1, o.sched_pc)] = 0x405000;
    arena[STACKS + 64 + 17] = 0x406000;
    // g 2 reused by a new goroutine, parked at the same place.
    arena[word_of(2, o.goid)] = 999;
    // g 3 ran and parked again at the same place, whose caller changed meanwhile: only
    // trackingSeq tells.
    arena[word_of(3, G_TRACKING_SEQ)] = 1;
    arena[STACKS + 3 * 64 + 17] = 0x407000;
    // g 4 exited.
    arena[word_of(4, o.atomicstatus)] = 6;
    // g 5's stack copied by the GC (new bounds, sp and bp; same frames).
    let moved = STACKS + 5 * 64;
    arena[word_of(5, o.sched_sp)] = addr(moved + 24);
    arena[word_of(5, o.sched_bp)] = addr(moved + 32);
    arena[moved + 32] = 0;
    arena[moved + 33] = 0x404000;

    let (third, cache) = read_with(&go, cache);
    assert_eq!(third.goroutines, fresh(&go));
    assert_eq!((third.reused, third.walked), (NGS - 5, 4));
    let stack_of = |goid: u64| {
        third
            .goroutines
            .iter()
            .find(|g| g.goid == goid)
            .map(|g| g.stack.clone())
    };
    assert_eq!(stack_of(101), Some(vec![0x405000, 0x406000, 0x404000]));
    assert_eq!(stack_of(999), Some(vec![0x401000, 0x403000, 0x404000]));
    assert_eq!(stack_of(103), Some(vec![0x401000, 0x407000, 0x404000]));
    assert_eq!(stack_of(104), None);
    assert_eq!(stack_of(105), Some(vec![0x401000, 0x404000]));
    // The exited one is forgotten.
    assert_eq!(cache.len(), NGS - 1);
}

#[test]
fn a_goroutine_that_did_not_run_keeps_its_walk_even_if_its_stack_memory_changed() {
    // What makes the cache pay: the stack is not read again. A parked goroutine's frame chain
    // does not change while it does not run, so this is only seen with a fake runtime.
    let mut arena = vec![0u64; WORDS];
    healthy(&mut arena);
    let go = tracking_process(&arena);
    let (_, cache) = read_with(&go, StackCache::default());
    arena[STACKS + 17] = 0x409000;
    let (again, _) = read_with(&go, cache);
    assert_eq!(
        again.goroutines[0].stack,
        vec![0x401000, 0x403000, 0x404000]
    );
    assert_eq!(fresh(&go)[0].stack, vec![0x401000, 0x409000, 0x404000]);
}

#[test]
fn a_walk_is_kept_only_if_the_goroutine_held_still_while_its_stack_was_read() {
    let mut arena = vec![0u64; WORDS];
    healthy(&mut arena);
    let o = offsets::table(27).expect("Go 1.27 layout");
    let go = tracking_process(&arena);
    let g_len = o
        .read_len()
        .max(go.wait_layout.as_ref().unwrap().g_read_len());
    let before = fresh(&go).remove(0);
    let g_bytes = |go: &GoProcess| go.memory.read_vec(before.g_addr, g_len).unwrap();
    assert!(go.holds_still(&before, &g_bytes(&go)));

    // It ran and parked elsewhere after its g was read: the walk made then is not kept.
    arena[GS + o.sched_pc as usize / 8] = 0x405000;
    assert!(!go.holds_still(&before, &g_bytes(&go)));
    arena[GS + o.sched_pc as usize / 8] = before.sched_pc;
    // It ran and parked again at the very same place: only trackingSeq tells.
    arena[GS + G_TRACKING_SEQ as usize / 8] = 1;
    assert!(!go.holds_still(&before, &g_bytes(&go)));
    // Woken (runnable) but not run yet: its frames are unchanged, but the walk is not kept.
    arena[GS + G_TRACKING_SEQ as usize / 8] = 0;
    arena[GS + o.atomicstatus as usize / 8] = 1;
    assert!(!go.holds_still(&before, &g_bytes(&go)));
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn corrupted_memory_between_incremental_reads_never_panics(words in corruptions()) {
        let mut arena = vec![0u64; WORDS];
        healthy(&mut arena);
        let base = arena.as_ptr() as u64;
        let go = tracking_process(&arena);
        let (_, cache) = read_with(&go, StackCache::default());
        for &(word, kind, raw) in &words {
            arena[word] = corrupt_value(kind, raw, base);
        }
        let listed = arena[ALLGLEN] as usize;
        match go.start_snapshot_after(cache) {
            Ok(mut read) => {
                let mut goroutines = Vec::new();
                while !go.continue_snapshot(&mut read, |g| goroutines.push(g)) {}
                let (snapshot, _) = read.finish_keeping();
                prop_assert!(goroutines.len() + snapshot.torn + snapshot.dead <= listed);
                prop_assert!(snapshot.reused + snapshot.walked <= goroutines.len());
                for g in &goroutines {
                    prop_assert!(g.stack.len() <= 16);
                }
            }
            Err(e) => {
                let message = format!("{e:#}");
                prop_assert!(!message.is_empty());
            }
        }
    }
}
