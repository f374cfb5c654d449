//! The one stable identity of a candidate or group, shared by `leaktrace diff`, `--ignore`
//! reports and anything that compares reports over time.
//!
//! A fingerprint is `KIND:HASH`, where HASH is 16 hex digits of FNV-1a 64 over the kind, the
//! creation site and the blocking site. Sites are function names (and, for goroutine groups,
//! their `function (file:line)` places and wait reason), never addresses, pids, tids, goroutine
//! ids or times, so the same leak has the same fingerprint across runs, restarts of the target
//! and ASLR. FNV is used instead of `std`'s hasher because that one may change between Rust
//! releases, and fingerprints are stored.
use crate::analyze::{Detail, Finding, FindingKind};
use crate::model::Frame;

/// Named frames of a stack that make up its site, innermost first.
const SITE_FRAMES: usize = 8;

/// The fingerprint of a candidate (see the module doc for the shape).
pub fn of(candidate: &Finding) -> String {
    let kind = candidate.kind().name();
    match &candidate.detail {
        Detail::GoroutineLeak { group, .. } => {
            goroutine_group(&group.created_at, &group.sits_at, &group.state)
        }
        Detail::GoTimer { group, .. } => fingerprint(
            kind,
            &[
                &format!("{:?}", group.kind),
                &group.callback,
                &group.period_ns.to_string(),
            ],
        ),
        _ => {
            let creation = candidate
                .creation_stack
                .as_deref()
                .map(stack_site)
                .unwrap_or_default();
            let blocking = stack_site(&candidate.blocking_stack);
            let reason = candidate.wait_reason().unwrap_or("");
            fingerprint(kind, &[&creation, &blocking, reason])
        }
    }
}

/// The fingerprint of a goroutine group, candidate or not: the same group keeps its fingerprint
/// when it becomes (or stops being) a candidate. Arguments as in `GoroutineGroup`.
pub fn goroutine_group(created_at: &str, sits_at: &str, state: &str) -> String {
    fingerprint(
        FindingKind::GoroutineLeak.name(),
        &[created_at, sits_at, state],
    )
}

/// Function names of a stack's first named frames, `;`-joined (unnamed frames have only an
/// address, which moves between runs).
fn stack_site(stack: &[Frame]) -> String {
    stack
        .iter()
        .filter_map(|f| f.function.as_deref())
        .take(SITE_FRAMES)
        .collect::<Vec<_>>()
        .join(";")
}

fn fingerprint(kind: &str, parts: &[&str]) -> String {
    // FNV-1a 64 (http://www.isthe.com/chongo/tech/comp/fnv/), parts separated by a 0 byte.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for part in std::iter::once(kind).chain(parts.iter().copied()) {
        for byte in part.bytes().chain(std::iter::once(0)) {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    format!("{kind}:{hash:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(function: &str, addr: u64) -> Frame {
        Frame {
            function: Some(function.into()),
            ..Frame::unknown(addr)
        }
    }

    #[test]
    fn addresses_do_not_change_a_site() {
        let a = [
            frame("lock", 0x1000),
            Frame::unknown(0x55),
            frame("worker", 0x2000),
        ];
        let b = [
            frame("lock", 0x7000),
            Frame::unknown(0x99),
            frame("worker", 0x8000),
        ];
        assert_eq!(stack_site(&a), stack_site(&b));
        assert_eq!(stack_site(&a), "lock;worker");
    }

    #[test]
    fn fingerprints_are_fixed_values() {
        // A stored fingerprint must keep meaning the same thing: this value never changes
        // (checked against an independent FNV-1a 64 of the same bytes).
        assert_eq!(
            goroutine_group(
                "main.leak (main.go:10)",
                "main.worker (main.go:20)",
                "chan receive"
            ),
            "goroutine_leak:058bc451c7b40fb2"
        );
        assert_ne!(
            goroutine_group("a", "b", "chan receive"),
            goroutine_group("a", "b", "chan send")
        );
        // Parts are separated, so moving text between parts changes the fingerprint.
        assert_ne!(
            fingerprint("k", &["ab", "c"]),
            fingerprint("k", &["a", "bc"])
        );
    }
}
