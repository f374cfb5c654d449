//! Incremental goroutine reads: a parked goroutine that did not run since the last read keeps
//! the stack and channel list that read walked, so a read of 100k goroutines that sit still
//! copies their gs (a few large `process_vm_readv` blocks) but not their stacks or sudogs, and
//! walks and hands on only the ones that changed.
//!
//! Why "did not run" is known (Go 1.19 through 1.27, `src/runtime`):
//! - `g.trackingSeq` (runtime2.go) moves each time the goroutine leaves `_Grunning` (and
//!   `_Gsyscall` from 1.21; `casgstatus`, proc.go): a goroutine that ran in between and parked
//!   again has a different value, unless it ran a multiple of 256 times in between.
//! - `g.sched` (`gobuf`: pc, sp, bp) is written by every park (`mcall`/`gosave`), and
//!   `g.stack` bounds and `g.sched.sp`/`bp` move when the GC copies a parked goroutine's stack
//!   (`copystack`, stack.go, from `shrinkstack` during a scan): a copied stack is walked again.
//! - `g.goid` tells a g reused by a new goroutine (gfget, proc.go) from the old one.
//! - `g.waiting` (the sudog list) and `g.waitreason` are set by the park itself.
//!
//! A stack is reused only when every one of those fields reads the same as when it was walked,
//! so the wrap of the 8-bit `trackingSeq` alone cannot pass a moved goroutine off as an
//! unchanged one: it would have to park again at the same pc, sp and bp, on the same sudog,
//! 256·k times later. Without `trackingSeq` (no DWARF) nothing is reused: every read walks
//! every stack, as before.
//!
//! The kept stacks are indexed by position in `runtime.allgs` (which only grows: gs are never
//! freed, runtime/proc.go `allgadd`) and checked against the g's address, so no hashing is
//! needed per goroutine; a g that is dead or not parked at the next read is dropped.
use std::sync::Arc;

/// What a parked goroutine's walked stack and channel list depend on (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ParkedAt {
    pub g_addr: u64,
    pub goid: u64,
    /// `atomicstatus` without `_Gscan`.
    pub status: u32,
    pub wait_reason_code: u8,
    pub tracking_seq: u8,
    pub sched_pc: u64,
    pub sched_sp: u64,
    pub sched_bp: u64,
    pub stack_lo: u64,
    pub stack_hi: u64,
    /// `g.waiting`: the first sudog (0 when none, or unread).
    pub waiting: u64,
}

/// A walk kept for the next read.
#[derive(Debug)]
struct Kept {
    at: ParkedAt,
    /// Shared among the goroutines parked at the same raw stack: 100k goroutines of one `go`
    /// statement hold one copy.
    stack: Arc<[u64]>,
    waits_on: Box<[u64]>,
}

/// The stacks the last complete read walked, for the next read to reuse, and how much of a
/// read was reused. Start with `StackCache::default()` (nothing to reuse: a full read) and pass
/// the one a read hands back ([`super::SnapshotRead::finish_keeping`]) to the next
/// ([`super::GoProcess::start_snapshot_after`]). Memory: about 130 bytes per parked goroutine,
/// plus one copy of each distinct stack.
#[derive(Debug, Default)]
pub struct StackCache {
    /// By position in allgs, from the last complete read.
    previous: Vec<Option<Kept>>,
    /// By position in allgs, for the read in progress.
    current: Vec<Option<Kept>>,
    /// Distinct stacks of `current`. foldhash: looked up once per walked goroutine, where
    /// SipHash was 2% of a first 100k-goroutine read (issue 9's profile).
    stacks: foldhash::HashSet<Arc<[u64]>>,
    /// Goroutines of the read in progress whose stack was reused, and walked.
    reused: usize,
    walked: usize,
}

impl StackCache {
    /// The stack and channels walked last time for the goroutine at position `index` of allgs,
    /// if it still is parked exactly as then; it is kept for the next read too.
    pub(crate) fn reuse(&mut self, index: usize, at: &ParkedAt) -> Option<(Vec<u64>, Vec<u64>)> {
        let kept = self.previous.get_mut(index)?.take()?;
        if kept.at != *at {
            return None;
        }
        let found = (kept.stack.to_vec(), kept.waits_on.to_vec());
        self.reused += 1;
        self.put(index, kept);
        Some(found)
    }

    /// Keeps what was just walked for the goroutine at position `index` of allgs.
    pub(crate) fn keep(&mut self, index: usize, at: ParkedAt, stack: &[u64], waits_on: &[u64]) {
        self.walked += 1;
        let stack = match self.stacks.get(stack) {
            Some(shared) => shared.clone(),
            None => {
                let shared: Arc<[u64]> = stack.into();
                self.stacks.insert(shared.clone());
                shared
            }
        };
        self.put(
            index,
            Kept {
                at,
                stack,
                waits_on: waits_on.into(),
            },
        );
    }

    /// A goroutine walked but not kept (no `trackingSeq` to tell whether it runs).
    pub(crate) fn walked_uncached(&mut self) {
        self.walked += 1;
    }

    fn put(&mut self, index: usize, kept: Kept) {
        if self.current.len() <= index {
            self.current.resize_with(index + 1, || None);
        }
        self.current[index] = Some(kept);
    }

    /// The read is complete: what it kept is what the next one reuses; goroutines it did not
    /// see parked (gone, running, reused by another goroutine) are forgotten.
    pub(crate) fn finish_read(&mut self) -> (usize, usize) {
        self.previous = std::mem::take(&mut self.current);
        // Stacks no kept goroutine holds any more (only the set does) are dropped.
        self.stacks.retain(|stack| Arc::strong_count(stack) > 1);
        let counts = (self.reused, self.walked);
        self.reused = 0;
        self.walked = 0;
        counts
    }

    /// A read abandoned part way: what it kept, and what it had not reached yet of the last
    /// one, stay for the next read.
    pub(crate) fn abandon_read(&mut self) {
        let current = std::mem::take(&mut self.current);
        if self.previous.len() < current.len() {
            self.previous.resize_with(current.len(), || None);
        }
        for (index, kept) in current.into_iter().enumerate() {
            if kept.is_some() {
                self.previous[index] = kept;
            }
        }
        self.reused = 0;
        self.walked = 0;
    }

    /// Goroutines whose walk is kept.
    pub fn len(&self) -> usize {
        self.previous.iter().flatten().count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(g_addr: u64, goid: u64, pc: u64) -> ParkedAt {
        ParkedAt {
            g_addr,
            goid,
            status: 4,
            wait_reason_code: 7,
            tracking_seq: 3,
            sched_pc: pc,
            sched_sp: 0x1000,
            sched_bp: 0x1010,
            stack_lo: 0x800,
            stack_hi: 0x1800,
            waiting: 0,
        }
    }

    #[test]
    fn an_unchanged_goroutine_keeps_its_walk_and_a_changed_one_does_not() {
        let mut cache = StackCache::default();
        cache.keep(0, at(0xa0, 1, 0x401000), &[0x401000, 0x402000], &[0xc0]);
        cache.keep(1, at(0xb0, 2, 0x401000), &[0x401000, 0x402000], &[]);
        cache.keep(2, at(0xc0, 3, 0x401000), &[0x401000, 0x403000], &[]);
        assert_eq!(cache.finish_read(), (0, 3));
        assert_eq!(cache.len(), 3);

        // Unchanged: the same stack and channels.
        assert_eq!(
            cache.reuse(0, &at(0xa0, 1, 0x401000)),
            Some((vec![0x401000, 0x402000], vec![0xc0]))
        );
        // Parked somewhere else: walked again.
        assert_eq!(cache.reuse(1, &at(0xb0, 2, 0x405000)), None);
        // The same g holding another goroutine (a reused g): walked again.
        assert_eq!(cache.reuse(2, &at(0xc0, 9, 0x401000)), None);
        // It ran in between (trackingSeq moved), even parked at the same place.
        cache.keep(2, at(0xc0, 9, 0x401000), &[0x401000, 0x403000], &[]);
        assert_eq!(cache.finish_read(), (1, 1));
        // Index 1 was not kept (the caller walks it and keeps it; here it did not): gone.
        assert_eq!(cache.len(), 2);
        let mut ran = at(0xa0, 1, 0x401000);
        ran.tracking_seq = 4;
        assert_eq!(cache.reuse(0, &ran), None);
        assert_eq!(cache.reuse(1, &at(0xb0, 2, 0x401000)), None);
        assert_eq!(
            cache.reuse(2, &at(0xc0, 9, 0x401000)),
            Some((vec![0x401000, 0x403000], vec![]))
        );
        assert_eq!(cache.finish_read(), (1, 0));
        // Gone from a complete read: dropped.
        assert_eq!(cache.len(), 1);
        assert_eq!(cache.reuse(0, &at(0xa0, 1, 0x401000)), None);
    }

    #[test]
    fn a_g_at_another_position_is_not_taken_for_the_one_kept_there() {
        let mut cache = StackCache::default();
        cache.keep(0, at(0xa0, 1, 0x401000), &[0x401000], &[]);
        cache.finish_read();
        assert_eq!(cache.reuse(0, &at(0xb0, 1, 0x401000)), None);
        assert_eq!(cache.reuse(5, &at(0xa0, 1, 0x401000)), None);
    }

    #[test]
    fn goroutines_parked_at_one_stack_share_one_copy() {
        let mut cache = StackCache::default();
        for i in 0..100 {
            cache.keep(
                i,
                at(0x1000 + i as u64 * 8, i as u64, 0x401000),
                &[1, 2, 3],
                &[],
            );
        }
        cache.finish_read();
        assert_eq!(cache.stacks.len(), 1);
        let shared = cache.stacks.iter().next().expect("one");
        assert_eq!(Arc::strong_count(shared), 101);
    }

    #[test]
    fn an_abandoned_read_keeps_what_it_had_not_reached() {
        let mut cache = StackCache::default();
        cache.keep(0, at(0xa0, 1, 0x401000), &[1], &[]);
        cache.keep(1, at(0xb0, 2, 0x401000), &[2], &[]);
        cache.finish_read();
        assert!(cache.reuse(0, &at(0xa0, 1, 0x401000)).is_some());
        cache.abandon_read();
        assert_eq!(cache.len(), 2);
        assert!(cache.reuse(1, &at(0xb0, 2, 0x401000)).is_some());
    }
}
