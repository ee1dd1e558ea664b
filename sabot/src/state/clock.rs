//! The time source of state TTL: the system clock, or a clock that tests move by hand.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Where a [`KeyedStateStore`](super::KeyedStateStore) reads the time that state TTL is measured
/// against, in milliseconds since the Unix epoch.
///
/// ```
/// use std::time::Duration;
/// use sabot::state::{ManualClock, StateClock};
///
/// let manual = ManualClock::new(1_000);
/// let clock = StateClock::from(manual.clone());
/// manual.advance(Duration::from_secs(2));
/// assert_eq!(clock.now_ms(), 3_000);
/// assert!(StateClock::System.now_ms() > 1_600_000_000_000);
/// ```
#[derive(Clone, Debug, Default)]
pub enum StateClock {
    /// Wall-clock time ([`SystemTime::now`]).
    #[default]
    System,
    /// A clock that only moves when told to (tests, replays).
    Manual(ManualClock),
}

impl StateClock {
    /// The current time in milliseconds since the Unix epoch.
    ///
    /// ```
    /// use sabot::state::{ManualClock, StateClock};
    /// assert_eq!(StateClock::from(ManualClock::new(42)).now_ms(), 42);
    /// ```
    #[inline]
    pub fn now_ms(&self) -> u64 {
        match self {
            StateClock::System => SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64),
            StateClock::Manual(clock) => clock.now_ms(),
        }
    }
}

impl From<ManualClock> for StateClock {
    fn from(clock: ManualClock) -> Self {
        StateClock::Manual(clock)
    }
}

/// A shared, hand-driven clock: clones see the same time, so a test keeps one clone and moves
/// the time of the store that holds the other.
///
/// ```
/// use std::time::Duration;
/// use sabot::state::ManualClock;
///
/// let clock = ManualClock::new(0);
/// let seen_by_store = clock.clone();
/// clock.advance(Duration::from_millis(250));
/// assert_eq!(seen_by_store.now_ms(), 250);
/// clock.set_ms(10);
/// assert_eq!(seen_by_store.now_ms(), 10);
/// ```
#[derive(Clone, Debug, Default)]
pub struct ManualClock {
    now_ms: Arc<AtomicU64>,
}

impl ManualClock {
    /// A clock standing at `start_ms` milliseconds since the Unix epoch.
    ///
    /// ```
    /// use sabot::state::ManualClock;
    /// assert_eq!(ManualClock::new(7).now_ms(), 7);
    /// ```
    pub fn new(start_ms: u64) -> Self {
        ManualClock { now_ms: Arc::new(AtomicU64::new(start_ms)) }
    }

    /// The time this clock shows, in milliseconds.
    ///
    /// ```
    /// use sabot::state::ManualClock;
    /// assert_eq!(ManualClock::default().now_ms(), 0);
    /// ```
    #[inline]
    pub fn now_ms(&self) -> u64 {
        self.now_ms.load(Ordering::Relaxed)
    }

    /// Moves the clock forward by `by` (saturating).
    ///
    /// ```
    /// use std::time::Duration;
    /// use sabot::state::ManualClock;
    /// let clock = ManualClock::new(0);
    /// clock.advance(Duration::from_secs(1));
    /// assert_eq!(clock.now_ms(), 1_000);
    /// ```
    pub fn advance(&self, by: Duration) {
        let by = u64::try_from(by.as_millis()).unwrap_or(u64::MAX);
        let _ = self.now_ms.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |now| Some(now.saturating_add(by)));
    }

    /// Sets the clock to `ms` milliseconds since the Unix epoch (it may go backwards).
    ///
    /// ```
    /// use sabot::state::ManualClock;
    /// let clock = ManualClock::new(100);
    /// clock.set_ms(5);
    /// assert_eq!(clock.now_ms(), 5);
    /// ```
    pub fn set_ms(&self, ms: u64) {
        self.now_ms.store(ms, Ordering::Relaxed);
    }
}
