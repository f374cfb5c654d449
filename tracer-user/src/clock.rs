//! The one clock: CLOCK_MONOTONIC in nanoseconds, the clock `bpf_ktime_get_ns` reads
//! (kernel/bpf/helpers.c: `ktime_get_mono_fast_ns`), so times read here and times stamped by the
//! probes compare directly. A leaf: it depends on nothing else in the crate.

/// Nanoseconds on `clock` (a `CLOCK_*` id), signed so that differences of clocks can be taken.
fn clock_ns(clock: libc::clockid_t) -> i128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the struct; the clocks asked for always exist on Linux.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as i128 * 1_000_000_000 + ts.tv_nsec as i128
}

/// CLOCK_MONOTONIC now, in ns since boot (not counting time suspended).
pub fn monotonic_ns() -> u64 {
    clock_ns(libc::CLOCK_MONOTONIC) as u64
}

/// CLOCK_REALTIME - CLOCK_MONOTONIC now, in ns: what to subtract from a wall-clock time to put
/// it on the monotonic clock (see [`realtime_to_monotonic`]).
pub fn realtime_offset_ns() -> i128 {
    clock_ns(libc::CLOCK_REALTIME) - clock_ns(libc::CLOCK_MONOTONIC)
}

/// A CLOCK_MONOTONIC time in ns as a wall-clock time (ns since the Unix epoch), by the
/// offset of the clocks now.
pub fn monotonic_to_realtime(monotonic_ns: u64) -> u64 {
    (monotonic_ns as i128 + realtime_offset_ns()).max(0) as u64
}

/// A CLOCK_REALTIME time in ns put on CLOCK_MONOTONIC, given [`realtime_offset_ns`]; 0 for a
/// time before boot.
pub fn realtime_to_monotonic(realtime_ns: u64, offset_ns: i128) -> u64 {
    (realtime_ns as i128 - offset_ns).max(0) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monotonic_moves_forward_and_realtime_maps_onto_it() {
        let a = monotonic_ns();
        let b = monotonic_ns();
        assert!(a > 0 && b >= a);
        let offset = realtime_offset_ns();
        // The wall clock is decades past boot; now in realtime is about now in monotonic.
        assert!(offset > 0);
        let now_real = (clock_ns(libc::CLOCK_REALTIME)) as u64;
        let mapped = realtime_to_monotonic(now_real, offset);
        assert!(mapped.abs_diff(monotonic_ns()) < 1_000_000_000, "{mapped}");
        assert_eq!(realtime_to_monotonic(5, 10), 0);
        let mono = monotonic_ns();
        let back = realtime_to_monotonic(monotonic_to_realtime(mono), offset);
        assert!(back.abs_diff(mono) < 1_000_000_000, "{back} {mono}");
        assert!(
            monotonic_to_realtime(mono) > 1_700_000_000_000_000_000,
            "after 2023"
        );
    }
}
