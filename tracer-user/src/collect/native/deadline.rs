//! Clock arithmetic of timerfd deadlines: the model keeps every deadline on CLOCK_MONOTONIC
//! (the probes' clock), while timerfd_settime takes relative times or absolute ones on the
//! timer's own clock.
use crate::clock;
use crate::model::timerfd::TFD_TIMER_ABSTIME;

/// A realtime deadline is recognisable by its size, since the clock is not in the settime
/// record: after 2001 in realtime, decades of uptime in monotonic.
const REALTIME_THRESHOLD_NS: u64 = 1_000_000_000 * 1_000_000_000;

/// Puts timerfd_settime deadlines on CLOCK_MONOTONIC.
#[derive(Clone, Copy, Debug, Default)]
pub struct Deadlines {
    /// CLOCK_REALTIME - CLOCK_MONOTONIC when tracing started (ns).
    realtime_offset_ns: i128,
}

impl Deadlines {
    pub fn now() -> Self {
        Deadlines {
            realtime_offset_ns: clock::realtime_offset_ns(),
        }
    }

    /// The monotonic deadline of a successful timerfd_settime(`flags`, `value_ns`) begun at
    /// `start_ns`; None when it disarmed the timer (value 0). CLOCK_BOOTTIME is taken as
    /// monotonic (they differ only by time spent suspended).
    pub fn of_settime(&self, start_ns: u64, flags: u32, value_ns: u64) -> Option<u64> {
        if value_ns == 0 {
            return None;
        }
        Some(if flags & TFD_TIMER_ABSTIME == 0 {
            start_ns.saturating_add(value_ns)
        } else if value_ns >= REALTIME_THRESHOLD_NS {
            clock::realtime_to_monotonic(value_ns, self.realtime_offset_ns)
        } else {
            value_ns
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_absolute_and_realtime_deadlines_land_on_monotonic() {
        const S: u64 = 1_000_000_000;
        let offset = 1_700_000_000 * S as i128;
        let d = Deadlines {
            realtime_offset_ns: offset,
        };
        assert_eq!(d.of_settime(100 * S, 0, 0), None);
        assert_eq!(d.of_settime(100 * S, 0, 5 * S), Some(105 * S));
        assert_eq!(
            d.of_settime(100 * S, TFD_TIMER_ABSTIME, 300 * S),
            Some(300 * S)
        );
        let wall = 1_700_000_500 * S;
        assert_eq!(
            d.of_settime(100 * S, TFD_TIMER_ABSTIME, wall),
            Some(500 * S)
        );
    }
}
