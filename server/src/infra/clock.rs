//! Time, as the stores and token checks see it. Production reads the system
//! clock; tests move a [`ManualClock`] forward instead of sleeping, so expiry
//! is tested in milliseconds of real time, on every backend alike.

use std::{
    fmt,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

/// A source of the current time.
pub trait Clock: Send + Sync + fmt::Debug {
    /// Now.
    fn now(&self) -> SystemTime;
}

/// The clock every component shares.
pub type SharedClock = Arc<dyn Clock>;

/// The system's wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// A clock that only moves when told to.
#[derive(Debug)]
pub struct ManualClock {
    now: Mutex<SystemTime>,
}

impl ManualClock {
    /// A clock standing at `start`.
    pub fn new(start: SystemTime) -> Arc<Self> {
        Arc::new(Self {
            now: Mutex::new(start),
        })
    }

    /// A clock standing at the current system time.
    pub fn starting_now() -> Arc<Self> {
        // Whole milliseconds, as the stores keep them.
        Self::new(from_millis(to_millis(SystemTime::now())))
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: Duration) {
        let mut now = self.now.lock().expect("clock lock");
        *now += by;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> SystemTime {
        *self.now.lock().expect("clock lock")
    }
}

/// Milliseconds since the Unix epoch (negative before it).
pub fn to_millis(time: SystemTime) -> i64 {
    match time.duration_since(UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_millis()).unwrap_or(i64::MAX),
        Err(before) => -i64::try_from(before.duration().as_millis()).unwrap_or(i64::MAX),
    }
}

/// The time `millis` milliseconds after the Unix epoch.
pub fn from_millis(millis: i64) -> SystemTime {
    if millis >= 0 {
        UNIX_EPOCH + Duration::from_millis(millis.unsigned_abs())
    } else {
        UNIX_EPOCH - Duration::from_millis(millis.unsigned_abs())
    }
}

/// A proto Timestamp for `time`.
pub fn to_timestamp(time: SystemTime) -> pbjson_types::Timestamp {
    let millis = to_millis(time);
    pbjson_types::Timestamp {
        seconds: millis.div_euclid(1000),
        nanos: (millis.rem_euclid(1000) * 1_000_000) as i32,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn millis_round_trip_both_sides_of_the_epoch() {
        for millis in [0, 1, 1_700_000_000_123, -1, -86_400_000] {
            assert_eq!(to_millis(from_millis(millis)), millis);
        }
    }

    #[test]
    fn a_manual_clock_moves_only_when_told() {
        let clock = ManualClock::starting_now();
        let start = clock.now();
        assert_eq!(clock.now(), start);
        clock.advance(Duration::from_secs(90));
        assert_eq!(
            clock.now().duration_since(start).unwrap(),
            Duration::from_secs(90)
        );
    }

    #[test]
    fn timestamps_split_seconds_and_nanos() {
        let ts = to_timestamp(from_millis(1_500));
        assert_eq!((ts.seconds, ts.nanos), (1, 500_000_000));
        let ts = to_timestamp(from_millis(-1));
        assert_eq!((ts.seconds, ts.nanos), (-1, 999_000_000));
    }
}
