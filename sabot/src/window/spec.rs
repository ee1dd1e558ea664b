//! Window assigners.

use std::fmt;
use std::time::Duration;

/// How rows are grouped into windows.
///
/// ```
/// use std::time::Duration;
/// use sabot::window::WindowSpec;
/// let w = WindowSpec::sliding(Duration::from_secs(60), Duration::from_secs(20));
/// assert_eq!(w.windows_of(65_000), vec![(20_000, 80_000), (40_000, 100_000), (60_000, 120_000)]);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowSpec {
    /// Fixed, non-overlapping windows of `size` (ms) aligned on the epoch.
    Tumbling {
        /// Window length in ms.
        size: i64,
    },
    /// Windows of `size` starting every `slide` (ms); a row belongs to `size / slide` windows.
    Sliding {
        /// Window length in ms.
        size: i64,
        /// Distance between window starts in ms.
        slide: i64,
    },
    /// Per key, rows closer than `gap` (ms) to each other form one window.
    Session {
        /// Inactivity gap in ms.
        gap: i64,
    },
    /// Per key, every `size` consecutive rows form one window (no event time needed).
    Count {
        /// Rows per window.
        size: usize,
    },
}

fn millis(d: Duration) -> i64 {
    d.as_millis().try_into().unwrap_or(i64::MAX)
}

impl WindowSpec {
    /// Tumbling windows of `size`.
    pub fn tumbling(size: Duration) -> Self {
        WindowSpec::Tumbling { size: millis(size).max(1) }
    }

    /// Sliding windows of `size`, one starting every `slide`.
    pub fn sliding(size: Duration, slide: Duration) -> Self {
        WindowSpec::Sliding { size: millis(size).max(1), slide: millis(slide).max(1) }
    }

    /// Session windows closed by an inactivity `gap`.
    pub fn session(gap: Duration) -> Self {
        WindowSpec::Session { gap: millis(gap).max(1) }
    }

    /// Count windows of `size` rows per key.
    pub fn count(size: usize) -> Self {
        WindowSpec::Count { size: size.max(1) }
    }

    /// Whether windows are defined on event time.
    pub fn uses_event_time(&self) -> bool {
        !matches!(self, WindowSpec::Count { .. })
    }

    /// For time-aligned windows, the pane length: the largest duration dividing both size and
    /// slide. Each row is aggregated into exactly one pane; windows merge their panes.
    pub fn pane_size(&self) -> Option<i64> {
        match *self {
            WindowSpec::Tumbling { size } => Some(size),
            WindowSpec::Sliding { size, slide } => Some(gcd(size, slide)),
            _ => None,
        }
    }

    /// The `(start, end)` of every aligned window containing `timestamp` (ms), oldest first.
    pub fn windows_of(&self, timestamp: i64) -> Vec<(i64, i64)> {
        match *self {
            WindowSpec::Tumbling { size } => {
                let start = timestamp.div_euclid(size) * size;
                vec![(start, start + size)]
            }
            WindowSpec::Sliding { size, slide } => {
                let last_start = timestamp.div_euclid(slide) * slide;
                let mut out = vec![];
                let mut start = last_start;
                while start > timestamp - size {
                    out.push((start, start + size));
                    start -= slide;
                }
                out.reverse();
                out
            }
            _ => vec![],
        }
    }

    /// The window length in ms for aligned windows.
    pub fn size(&self) -> Option<i64> {
        match *self {
            WindowSpec::Tumbling { size } | WindowSpec::Sliding { size, .. } => Some(size),
            _ => None,
        }
    }

    /// The distance between window starts in ms for aligned windows.
    pub fn slide(&self) -> Option<i64> {
        match *self {
            WindowSpec::Tumbling { size } => Some(size),
            WindowSpec::Sliding { slide, .. } => Some(slide),
            _ => None,
        }
    }
}

fn gcd(a: i64, b: i64) -> i64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

impl fmt::Display for WindowSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WindowSpec::Tumbling { size } => write!(f, "tumbling({size}ms)"),
            WindowSpec::Sliding { size, slide } => write!(f, "sliding({size}ms every {slide}ms)"),
            WindowSpec::Session { gap } => write!(f, "session(gap {gap}ms)"),
            WindowSpec::Count { size } => write!(f, "count({size})"),
        }
    }
}
