//! Event time, watermarks and windows.
//!
//! Rows carry their event time in a column (`Timestamp(ms)` or `Int64` ms). A
//! [`WatermarkStrategy`] turns observed event times into watermarks: promises that no row
//! older than the watermark will follow. Window operators fire when the watermark passes a
//! window's end (plus the allowed lateness for updates); rows later than that go to a
//! [`LateData`] side output.

mod late;
mod spec;
mod trigger;
mod watermark;

pub use late::LateData;
pub(crate) use late::divert_late_rows;
pub use spec::WindowSpec;
pub use trigger::{
    CountTrigger, EventTimeTrigger, ProcessingTimeTrigger, PurgingTrigger, Trigger, TriggerResult, TriggerState,
};
pub use watermark::{WatermarkGenerator, WatermarkStrategy};
