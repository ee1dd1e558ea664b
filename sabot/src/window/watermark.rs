//! Watermark strategies: how event-time progress is derived from the events themselves.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// Generates watermarks from the event times seen by one partition.
pub trait WatermarkGenerator: Send {
    /// Called with the largest event time (ms) of each batch; returns a new watermark, if any.
    fn on_batch(&mut self, max_event_time: i64) -> Option<i64>;
}

/// How a stream's watermarks follow its event times.
///
/// ```
/// use std::time::Duration;
/// use sabot::window::WatermarkStrategy;
/// let strategy = WatermarkStrategy::bounded_out_of_orderness(Duration::from_secs(5));
/// let mut generator = strategy.create();
/// assert_eq!(generator.on_batch(60_000), Some(55_000));
/// assert_eq!(generator.on_batch(50_000), None, "watermarks never go backwards");
/// ```
#[derive(Clone)]
pub enum WatermarkStrategy {
    /// Events arrive at most `bound` after later events: watermark = max event time − bound.
    BoundedOutOfOrderness(Duration),
    /// Event times never decrease: watermark = max event time.
    Monotonous,
    /// A user generator, created once per partition.
    Custom(Arc<dyn Fn() -> Box<dyn WatermarkGenerator> + Send + Sync>),
}

impl WatermarkStrategy {
    /// Watermarks trail the largest event time seen by `bound`.
    pub fn bounded_out_of_orderness(bound: Duration) -> Self {
        WatermarkStrategy::BoundedOutOfOrderness(bound)
    }

    /// Watermarks equal the largest event time seen (for ordered streams).
    pub fn monotonous() -> Self {
        WatermarkStrategy::Monotonous
    }

    /// A custom generator.
    pub fn custom(factory: impl Fn() -> Box<dyn WatermarkGenerator> + Send + Sync + 'static) -> Self {
        WatermarkStrategy::Custom(Arc::new(factory))
    }

    /// A generator for one partition.
    pub fn create(&self) -> Box<dyn WatermarkGenerator> {
        match self {
            WatermarkStrategy::BoundedOutOfOrderness(bound) => {
                Box::new(BoundedGenerator { bound: bound.as_millis() as i64, emitted: i64::MIN })
            }
            WatermarkStrategy::Monotonous => Box::new(BoundedGenerator { bound: 0, emitted: i64::MIN }),
            WatermarkStrategy::Custom(factory) => factory(),
        }
    }
}

impl fmt::Debug for WatermarkStrategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WatermarkStrategy::BoundedOutOfOrderness(d) => write!(f, "bounded_out_of_orderness({d:?})"),
            WatermarkStrategy::Monotonous => f.write_str("monotonous"),
            WatermarkStrategy::Custom(_) => f.write_str("custom"),
        }
    }
}

struct BoundedGenerator {
    bound: i64,
    emitted: i64,
}

impl WatermarkGenerator for BoundedGenerator {
    fn on_batch(&mut self, max_event_time: i64) -> Option<i64> {
        let candidate = max_event_time.saturating_sub(self.bound);
        (candidate > self.emitted).then(|| {
            self.emitted = candidate;
            candidate
        })
    }
}
