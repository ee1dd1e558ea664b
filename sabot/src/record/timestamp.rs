//! [`Timestamp`]: a point in time as milliseconds since the Unix epoch.

use std::fmt;

use crate::expr::ScalarValue;

/// Milliseconds since the Unix epoch (UTC), stored in Arrow as `Timestamp(Millisecond, None)`.
///
/// A `Copy` newtype over `i64`, ordered by time. Its `Display` is ISO-8601 in UTC with
/// millisecond precision.
///
/// ```
/// use sabot::record::Timestamp;
/// let t = Timestamp::from_millis(1_700_000_000_123);
/// assert_eq!(t.millis(), 1_700_000_000_123);
/// assert_eq!(t.to_string(), "2023-11-14T22:13:20.123Z");
/// assert!(Timestamp::from_millis(0) < t);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(i64);

impl Timestamp {
    /// The Unix epoch, `1970-01-01T00:00:00.000Z`.
    ///
    /// ```
    /// assert_eq!(sabot::record::Timestamp::EPOCH.millis(), 0);
    /// ```
    pub const EPOCH: Timestamp = Timestamp(0);

    /// The timestamp `millis` milliseconds after (or, if negative, before) the epoch.
    ///
    /// ```
    /// use sabot::record::Timestamp;
    /// assert_eq!(Timestamp::from_millis(-1).to_string(), "1969-12-31T23:59:59.999Z");
    /// ```
    pub const fn from_millis(millis: i64) -> Timestamp {
        Timestamp(millis)
    }

    /// Milliseconds since the epoch.
    ///
    /// ```
    /// assert_eq!(sabot::record::Timestamp::from_millis(42).millis(), 42);
    /// ```
    pub const fn millis(self) -> i64 {
        self.0
    }
}

impl From<i64> for Timestamp {
    /// Interprets `millis` as milliseconds since the epoch.
    fn from(millis: i64) -> Self {
        Timestamp(millis)
    }
}

impl From<Timestamp> for i64 {
    fn from(t: Timestamp) -> Self {
        t.0
    }
}

impl From<Timestamp> for ScalarValue {
    fn from(t: Timestamp) -> Self {
        ScalarValue::TimestampMillis(Some(t.0))
    }
}

impl From<Option<Timestamp>> for ScalarValue {
    fn from(t: Option<Timestamp>) -> Self {
        ScalarValue::TimestampMillis(t.map(Timestamp::millis))
    }
}

/// `(year, month, day)` of the proleptic Gregorian calendar for a day count since 1970-01-01
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const MS_PER_DAY: i64 = 86_400_000;
        let days = self.0.div_euclid(MS_PER_DAY);
        let ms_of_day = self.0.rem_euclid(MS_PER_DAY);
        let (year, month, day) = civil_from_days(days);
        let (secs, ms) = (ms_of_day / 1000, ms_of_day % 1000);
        write!(f, "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{ms:03}Z", secs / 3600, secs / 60 % 60, secs % 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display() {
        assert_eq!(Timestamp::EPOCH.to_string(), "1970-01-01T00:00:00.000Z");
        assert_eq!(Timestamp::from_millis(951_782_400_000).to_string(), "2000-02-29T00:00:00.000Z");
        assert_eq!(Timestamp::from_millis(1_709_251_199_999).to_string(), "2024-02-29T23:59:59.999Z");
        assert_eq!(Timestamp::from_millis(-86_400_000).to_string(), "1969-12-31T00:00:00.000Z");
        // Extreme values must not panic.
        let _ = Timestamp::from_millis(i64::MIN).to_string();
        let _ = Timestamp::from_millis(i64::MAX).to_string();
    }
}
