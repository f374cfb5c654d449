//! Where the caller of the C library's thread-creating function lies on the stack at the
//! creating syscall, learned once per syscall site from the first creation stack unwound there
//! and handed to the kernel, whose per-site stack budget (`--detail low`, tracer-ebpf `task.rs`)
//! is then per caller rather than one for every `pthread_create` of the program.
use std::collections::HashSet;

use tracer_common::{native_call, CallDone};

use super::stacktop::UserStacks;
use crate::attach::Probes;

#[derive(Default)]
pub struct CreationSlots {
    /// Syscall sites (user ip after the syscall) already learned or found not learnable.
    tried: HashSet<u64>,
    /// (ip, offset in bytes above sp) learned and not yet written to the kernel.
    learned: Vec<(u64, u64)>,
}

/// A program with more creating syscall sites than this (the kernel map's size) stops learning.
const MAX_SITES: usize = 256;

impl CreationSlots {
    /// Learns the caller's slot from a creation's stack and stack top, once per syscall site.
    pub fn observe(&mut self, done: &CallDone, stacks: &mut UserStacks) {
        let creating = matches!(
            done.call.call,
            native_call::CLONE | native_call::CLONE3 | native_call::FORK | native_call::VFORK
        );
        if !creating || done.ret <= 0 || done.user_stack_id < 0 || self.tried.len() >= MAX_SITES {
            return;
        }
        let Some(ips) = stacks.get(done.tid, done.user_stack_id) else {
            return;
        };
        let Some(&ip) = ips.first() else {
            return;
        };
        if !self.tried.insert(ip) {
            return;
        }
        self.learned
            .extend(stacks.caller_slot(done.tid, done.user_stack_id, &ips));
    }

    /// Writes what was learned to the kernel. A failed write only leaves that site's budget
    /// shared by all its callers.
    pub fn flush(&mut self, probes: &mut Probes) {
        for (ip, offset) in self.learned.drain(..) {
            let _ = probes.learn_creation_slot(ip, offset);
        }
    }
}
