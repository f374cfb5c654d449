//! User stacks taken in the kernel, completed with the stack top sent alongside them (see
//! `tracer_common::UserStackTop` and `RemoteUnwinder::complete_kernel_stack`).
use std::collections::HashMap;

use tracer_common::UserStackTop;

use crate::attach::Probes;
use crate::unwind::RemoteUnwinder;

/// The last stack top of each (thread, stack id), for the records that carry that stack id. A
/// top comes before its record, possibly in an earlier drain (the pthread_create uprobe runs
/// before the clone whose exit sends the creation), and one drain may hold several records with
/// the same stack id: a top is kept after use. Tops of one stack id differ only in words the CFI
/// walk does not read, or in frames the kernel's walk did see.
#[derive(Default)]
pub struct StackTops {
    by_stack: HashMap<(u32, i32), Top>,
}

/// One or more [`UserStackTop`]s of one stack joined: `words` from `sp` up.
struct Top {
    sp: u64,
    bp: u64,
    words: Vec<u64>,
}

/// More tops than this kept: start over rather than grow (a top missed costs one frame).
const MAX_WAITING: usize = 4096;

impl StackTops {
    /// Keeps a stack top for the records with its (thread, stack id).
    pub fn keep(&mut self, top: UserStackTop) {
        if self.by_stack.len() >= MAX_WAITING {
            self.by_stack.clear();
        }
        let read = (top.words_read as usize).min(top.words.len());
        let key = (top.tid, top.stack_id);
        // A continuation (`--detail low` creations): the words right above a whole top of the
        // same stack just sent.
        if let Some(kept) = self.by_stack.get_mut(&key) {
            let end = kept.sp + 8 * kept.words.len() as u64;
            if kept.words.len() == top.words.len() && top.sp == end {
                kept.words.extend_from_slice(&top.words[..read]);
                return;
            }
        }
        self.by_stack.insert(
            key,
            Top {
                sp: top.sp,
                bp: top.bp,
                words: top.words[..read].to_vec(),
            },
        );
    }
}

/// Where the user stacks of kernel records come from.
pub struct UserStacks<'a> {
    pub probes: &'a Probes,
    pub tops: &'a mut StackTops,
    pub unwinder: Option<&'a mut RemoteUnwinder>,
    pub max_frames: usize,
}

impl UserStacks<'_> {
    /// The return addresses of user stack `id` that thread `tid` took, innermost first,
    /// completed with its stack top when one came. None when the id is none (negative) or gone.
    pub fn get(&mut self, tid: u32, id: i32) -> Option<Vec<u64>> {
        let ips = self.probes.stack(id)?;
        let top = self.tops.by_stack.get(&(tid, id));
        Some(match (top, self.unwinder.as_deref_mut()) {
            (Some(top), Some(unwinder)) => {
                unwinder.complete_kernel_stack(&ips, top.sp, top.bp, &top.words, self.max_frames)
            }
            _ => ips,
        })
    }

    /// For a creation stack `ips` (as [`Self::get`] gave it): the innermost ip (after the
    /// syscall) and where, in bytes above the stack top's sp, the return address into the first
    /// frame outside the innermost frame's file lies: the caller of the C library's creating
    /// function. None without a stack top, without such a frame, or when it lies beyond the top.
    pub fn caller_slot(&mut self, tid: u32, id: i32, ips: &[u64]) -> Option<(u64, u64)> {
        let top = self.tops.by_stack.get(&(tid, id))?;
        let unwinder = self.unwinder.as_deref()?;
        let ip = *ips.first()?;
        let caller = ips
            .iter()
            .skip(1)
            .find(|&&pc| !unwinder.same_file(ip, pc))?;
        // The first copy above sp: a stale copy lower down would only make the kernel's key
        // vary, which costs stacks, never findings.
        let index = top.words.iter().position(|w| w == caller)?;
        Some((ip, index as u64 * 8))
    }
}
