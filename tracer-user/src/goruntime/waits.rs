//! What a parked goroutine waits on, and whether it ran between two looks: the facts that tell a
//! goroutine stuck at one place from one that keeps coming back to it, and a leaked request from
//! an idle pool. Read only, like the rest of the reader; a read the target tears (the goroutine
//! woke meanwhile) gives no channel rather than a wrong one where that can be told.
//!
//! Sources (Go 1.19 through 1.27, `src/runtime`):
//! - `g.trackingSeq` (runtime2.go): `casgstatus` (proc.go) adds one each time the goroutine
//!   leaves `_Grunning` (1.19-1.20) or `_Grunning`/`_Gsyscall` (1.21+). A parked goroutine
//!   whose count did not move between two snapshots did not run in between (modulo 256).
//! - `g.waiting` (runtime2.go): the sudogs the goroutine is parked on, in lock order, linked by
//!   `sudog.waitlink`; set by `chansend`/`chanrecv` (chan.go, one sudog) and `selectgo`
//!   (select.go, one per case). Nil for semaphore waits (`sync.Mutex`, `sync.Cond`,
//!   `sync.WaitGroup`), whose sudogs live in the runtime's semaphore table instead.
//! - `sudog.c` (runtime2.go): the channel; a `*hchan` until Go 1.25, a `maybeTraceableChan`
//!   (`maybeTraceablePtr{vp, vu}`, where `vu` is the source of truth) from Go 1.26.
use std::collections::HashMap;

use anyhow::{anyhow, Result};

use super::binary::StructLayout;
use super::memory::{u64_at, Memory};

/// At most this many sudogs are followed per goroutine (a select with more cases is listed in
/// part).
pub const MAX_CASES: usize = 16;
/// sudogs closer than this are read in one copy.
const SUDOG_MERGE_GAP: u64 = 256;

/// Offsets of the fields above, from DWARF (no built-in table: stripped binaries go without).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WaitLayout {
    /// `g.waiting` (`*sudog`).
    pub g_waiting: u64,
    /// `g.trackingSeq` (`uint8`).
    pub g_tracking_seq: u64,
    /// The word of `sudog.c` that holds the channel's address.
    pub sudog_chan: u64,
    /// `sudog.waitlink` (`*sudog`).
    pub sudog_waitlink: u64,
    /// `sudog.g` (`*g`): a sudog that no longer names its goroutine was reused meanwhile.
    pub sudog_g: u64,
}

impl WaitLayout {
    pub(crate) fn from_dwarf(structs: &HashMap<String, StructLayout>) -> Result<WaitLayout> {
        let field = |ty: &str, member: &str| -> Result<u64> {
            structs
                .get(ty)
                .and_then(|layout| layout.members.get(member))
                .copied()
                .ok_or_else(|| anyhow!("no {ty}.{member} in the binary's DWARF"))
        };
        // Go 1.26+: sudog.c is a maybeTraceableChan embedding a maybeTraceablePtr at offset 0.
        let chan_word = field("runtime.maybeTraceablePtr", "vu").unwrap_or(0);
        Ok(WaitLayout {
            g_waiting: field("runtime.g", "waiting")?,
            g_tracking_seq: field("runtime.g", "trackingSeq")?,
            sudog_chan: field("runtime.sudog", "c")? + chan_word,
            sudog_waitlink: field("runtime.sudog", "waitlink")?,
            sudog_g: field("runtime.sudog", "g")?,
        })
    }

    /// How many bytes of a g to read to see `waiting` and `trackingSeq`.
    pub fn g_read_len(&self) -> usize {
        self.g_waiting.max(self.g_tracking_seq) as usize + 8
    }

    fn sudog_read_len(&self) -> usize {
        self.sudog_chan.max(self.sudog_waitlink).max(self.sudog_g) as usize + 8
    }
}

/// A plausible heap pointer: not null, 8-aligned, in user space.
fn is_pointer(p: u64) -> bool {
    p != 0 && p.is_multiple_of(8) && p < (1 << 47)
}

/// The channels each goroutine waits on, following `g.waiting` then `sudog.waitlink`, for many
/// goroutines at once (one batch of reads per select case depth). `first[i]` is goroutine i's
/// address and its `g.waiting` (0 when it waits on no channel); the result has one list per
/// goroutine, without repeats, empty when nothing could be read or the goroutine woke while it
/// was read (a sudog of another goroutine).
pub(crate) fn channels(
    memory: &Memory,
    layout: &WaitLayout,
    first: &[(u64, u64)],
    buf: &mut Vec<u8>,
) -> Vec<Vec<u64>> {
    let mut result = vec![Vec::new(); first.len()];
    let mut next: Vec<u64> = first.iter().map(|&(_, sudog)| sudog).collect();
    let len = layout.sudog_read_len();
    for _ in 0..MAX_CASES {
        let ranges: Vec<(u64, usize)> = next
            .iter()
            .map(|&s| if is_pointer(s) { (s, len) } else { (0, 0) })
            .collect();
        if ranges.iter().all(|r| r.1 == 0) {
            break;
        }
        let at = memory.read_coalesced_into(&ranges, SUDOG_MERGE_GAP, buf);
        for (i, (at, &(_, len))) in at.into_iter().zip(&ranges).enumerate() {
            next[i] = 0;
            let Some(at) = at.filter(|_| len > 0) else {
                continue;
            };
            let sudog = &buf[at..at + len];
            let (Some(chan), Some(link), Some(g)) = (
                u64_at(sudog, layout.sudog_chan as usize),
                u64_at(sudog, layout.sudog_waitlink as usize),
                u64_at(sudog, layout.sudog_g as usize),
            ) else {
                continue;
            };
            if g != first[i].0 {
                // Reused by another goroutine: what was read so far is not this one's wait.
                result[i].clear();
                continue;
            }
            if is_pointer(chan) && !result[i].contains(&chan) {
                result[i].push(chan);
            }
            next[i] = link;
        }
    }
    result
}
