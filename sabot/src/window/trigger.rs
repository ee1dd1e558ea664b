//! Triggers: when a global window (one per key, never ending by itself) emits its aggregates.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// What a trigger decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TriggerResult {
    /// Nothing yet.
    Continue,
    /// Emit the aggregates of the key's rows so far and keep them (cumulative results).
    Fire,
    /// Emit, then drop the key's rows: the next firing covers only rows that come after.
    FireAndPurge,
}

/// What a trigger knows of one key's window, and the one timer it may keep there. It is the
/// whole state of a trigger (triggers are stateless): checkpoints save it per key.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TriggerState {
    /// Rows in the window (since the last purge).
    pub count: u64,
    /// Event time (or arrival time, without an event-time column) of the first row, in ms.
    pub first_time: Option<i64>,
    /// Event time (or arrival time) of the latest row, in ms.
    pub last_time: Option<i64>,
    /// A time the trigger asked to be woken at ([`Trigger::on_time`] sees it).
    pub timer: Option<i64>,
}

/// Decides when a key's global window fires, like Flink's `Trigger` on `GlobalWindows`.
/// Triggers are stateless: what they remember per key is in [`TriggerState`].
///
/// ```
/// use sabot::window::{Trigger, TriggerResult, TriggerState};
///
/// /// Fires when a key has seen `n` rows, or its first row is older than 1 s of event time.
/// #[derive(Debug)]
/// struct CountOrAge(u64);
///
/// impl Trigger for CountOrAge {
///     fn on_element(&self, state: &mut TriggerState, _watermark: i64, _now: i64) -> TriggerResult {
///         state.timer = state.first_time.map(|t| t + 1_000);
///         if state.count >= self.0 { TriggerResult::FireAndPurge } else { TriggerResult::Continue }
///     }
///     fn on_time(&self, state: &mut TriggerState, watermark: i64, _now: i64) -> TriggerResult {
///         match state.timer {
///             Some(t) if watermark >= t => TriggerResult::FireAndPurge,
///             _ => TriggerResult::Continue,
///         }
///     }
/// }
///
/// let mut state = TriggerState { count: 3, first_time: Some(0), ..Default::default() };
/// assert_eq!(CountOrAge(3).on_element(&mut state, 0, 0), TriggerResult::FireAndPurge);
/// ```
pub trait Trigger: Send + Sync + fmt::Debug + 'static {
    /// Called after a row was added to the key's window.
    fn on_element(&self, state: &mut TriggerState, watermark: i64, now: i64) -> TriggerResult;

    /// Called for keys with a timer when event time advances, and on the periodic heartbeat
    /// of processing time; `now` is processing time in ms.
    fn on_time(&self, _state: &mut TriggerState, _watermark: i64, _now: i64) -> TriggerResult {
        TriggerResult::Continue
    }
}

/// Fires and purges every `n` rows of a key (count windows as a trigger).
#[derive(Debug, Clone, Copy)]
pub struct CountTrigger(pub u64);

impl Trigger for CountTrigger {
    fn on_element(&self, state: &mut TriggerState, _: i64, _: i64) -> TriggerResult {
        if state.count >= self.0.max(1) { TriggerResult::FireAndPurge } else { TriggerResult::Continue }
    }
}

/// Fires every `interval` of event time (when the watermark passes each multiple of it),
/// with the key's cumulative aggregates: Flink's `ContinuousEventTimeTrigger`.
#[derive(Debug, Clone, Copy)]
pub struct EventTimeTrigger(pub Duration);

impl EventTimeTrigger {
    fn next_after(&self, time: i64) -> i64 {
        let every = i64::try_from(self.0.as_millis()).unwrap_or(i64::MAX).max(1);
        (time.div_euclid(every) + 1).saturating_mul(every)
    }
}

impl Trigger for EventTimeTrigger {
    fn on_element(&self, state: &mut TriggerState, _: i64, _: i64) -> TriggerResult {
        if state.timer.is_none() {
            state.timer = state.last_time.map(|t| self.next_after(t));
        }
        TriggerResult::Continue
    }

    fn on_time(&self, state: &mut TriggerState, watermark: i64, _: i64) -> TriggerResult {
        match state.timer {
            Some(t) if watermark >= t => {
                state.timer = Some(self.next_after(watermark));
                TriggerResult::Fire
            }
            _ => TriggerResult::Continue,
        }
    }
}

/// Fires `interval` of processing time after a key's first row since the last firing, with
/// its cumulative aggregates: Flink's `ContinuousProcessingTimeTrigger`.
#[derive(Debug, Clone, Copy)]
pub struct ProcessingTimeTrigger(pub Duration);

impl Trigger for ProcessingTimeTrigger {
    fn on_element(&self, state: &mut TriggerState, _: i64, now: i64) -> TriggerResult {
        if state.timer.is_none() {
            state.timer = Some(now.saturating_add(i64::try_from(self.0.as_millis()).unwrap_or(i64::MAX)));
        }
        TriggerResult::Continue
    }

    fn on_time(&self, state: &mut TriggerState, _: i64, now: i64) -> TriggerResult {
        match state.timer {
            Some(t) if now >= t => {
                state.timer = None;
                TriggerResult::Fire
            }
            _ => TriggerResult::Continue,
        }
    }
}

/// Turns every `Fire` of the inner trigger into `FireAndPurge`: each firing then covers only
/// the rows since the previous one.
#[derive(Debug, Clone)]
pub struct PurgingTrigger(pub Arc<dyn Trigger>);

impl PurgingTrigger {
    /// Purges after each firing of `inner`.
    pub fn of(inner: impl Trigger) -> Self {
        PurgingTrigger(Arc::new(inner))
    }
}

fn purging(result: TriggerResult) -> TriggerResult {
    match result {
        TriggerResult::Fire => TriggerResult::FireAndPurge,
        other => other,
    }
}

impl Trigger for PurgingTrigger {
    fn on_element(&self, state: &mut TriggerState, watermark: i64, now: i64) -> TriggerResult {
        purging(self.0.on_element(state, watermark, now))
    }

    fn on_time(&self, state: &mut TriggerState, watermark: i64, now: i64) -> TriggerResult {
        purging(self.0.on_time(state, watermark, now))
    }
}
