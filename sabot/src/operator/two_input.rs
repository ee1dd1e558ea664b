//! Operators with two inputs (Flink's `TwoInputStreamOperator`): streaming joins.

use std::sync::Arc;

use arrow::record_batch::RecordBatch;

use super::{CheckpointBarrier, Output, Watermark};
use crate::Result;

/// An operator reading two inputs, `left` and `right`: one instance runs per parallel
/// partition, on one thread at a time, and sees the rows of both inputs in the order they
/// arrive. The two inputs are partitioned alike (by their join keys), so rows with equal keys
/// meet in one instance.
///
/// Event time advances as the *minimum* of the two inputs' watermarks:
/// [`TwoInputOperator::handle_watermark`] is called only when that minimum advances (unless
/// [`TwoInputOperator::tracks_right_watermark`] is false, when the left input alone drives
/// it). Checkpoint barriers are forwarded once both inputs delivered them.
///
/// ```
/// use arrow::array::RecordBatch;
/// use sabot::operator::{Output, TwoInputOperator};
/// use sabot::testing::TwoInputHarness;
///
/// /// Emits both inputs' rows unchanged (a union that tags nothing).
/// struct Both;
///
/// impl TwoInputOperator for Both {
///     fn name(&self) -> &str { "both" }
///     fn process_left(&mut self, batch: RecordBatch, out: &mut Output) -> sabot::Result<()> {
///         out.emit(batch);
///         Ok(())
///     }
///     fn process_right(&mut self, batch: RecordBatch, out: &mut Output) -> sabot::Result<()> {
///         out.emit(batch);
///         Ok(())
///     }
/// }
///
/// let mut harness = TwoInputHarness::new(Both);
/// harness.watermark_left(10)?;
/// assert!(harness.watermarks().is_empty(), "the right input has no watermark yet");
/// harness.watermark_right(5)?;
/// assert_eq!(harness.watermarks(), vec![5], "the minimum of both inputs");
/// # Ok::<(), sabot::SabotError>(())
/// ```
pub trait TwoInputOperator: Send {
    /// The operator's name, for plans, logs and errors.
    fn name(&self) -> &str;

    /// Called once before the first message.
    fn on_start(&mut self) -> Result<()> {
        Ok(())
    }

    /// Processes one batch of the left input.
    fn process_left(&mut self, batch: RecordBatch, out: &mut Output) -> Result<()>;

    /// Processes one batch of the right input.
    fn process_right(&mut self, batch: RecordBatch, out: &mut Output) -> Result<()>;

    /// Reacts to event-time progress: `watermark` is the minimum of both inputs' watermarks,
    /// and this is called only when it advances. Forwards it by default.
    fn handle_watermark(&mut self, watermark: Watermark, out: &mut Output) -> Result<()> {
        out.emit_watermark(watermark);
        Ok(())
    }

    /// Copies the operator's state (both sides' buffers) into `snapshot` once both inputs
    /// delivered the checkpoint's barrier (aligned), before the barrier is forwarded.
    fn snapshot_state(&mut self, _snapshot: &mut crate::checkpoint::StateSnapshot) -> Result<()> {
        Ok(())
    }

    /// Loads what [`snapshot_state`](Self::snapshot_state) saved; called before `on_start`.
    fn restore_state(&mut self, _restored: &crate::checkpoint::RestoredState) -> Result<()> {
        Ok(())
    }

    /// Loads state saved by a run with another parallelism
    /// ([`RestoredState::rescale`](crate::checkpoint::RestoredState::rescale)): keyed joins
    /// keep the rows whose keys the hash exchanges now route to this instance. By default
    /// the operator cannot change parallelism and restoring fails.
    fn restore_rescaled_state(&mut self, restored: &crate::checkpoint::RestoredState) -> Result<()> {
        Err(super::cannot_rescale(self.name(), restored))
    }

    /// Whether the operator's state is keyed by the join keys and follows key groups from
    /// worker to worker (see [`crate::checkpoint::KeyGroupChange`]): then, in a pipeline whose
    /// workers share key groups, it starts empty and gets its keys through
    /// [`hand_over_key_groups`](Self::hand_over_key_groups). False by default.
    fn follows_key_groups(&self) -> bool {
        false
    }

    /// Drops the state of released key groups and loads that of acquired ones, when both
    /// inputs delivered the same [`crate::operator::Message::KeyGroups`] change (aligned, as
    /// barriers are). Nothing by default.
    fn hand_over_key_groups(&mut self, _handover: &crate::checkpoint::KeyGroupHandover) -> Result<()> {
        Ok(())
    }

    /// Reacts to a checkpoint barrier after the state was snapshotted; forwards it by default.
    fn handle_checkpoint(&mut self, barrier: CheckpointBarrier, out: &mut Output) -> Result<()> {
        out.emit_barrier(barrier);
        Ok(())
    }

    /// Called once after both inputs ended (bounded inputs); operators that buffer emit here.
    fn on_close(&mut self, _out: &mut Output) -> Result<()> {
        Ok(())
    }

    /// Whether the right input's watermarks hold event time back. A join whose right side is
    /// a table (no event time) returns false: the left input alone then drives event time.
    fn tracks_right_watermark(&self) -> bool {
        true
    }
}

impl<O: TwoInputOperator + ?Sized> TwoInputOperator for Box<O> {
    fn name(&self) -> &str {
        (**self).name()
    }
    fn on_start(&mut self) -> Result<()> {
        (**self).on_start()
    }
    fn process_left(&mut self, batch: RecordBatch, out: &mut Output) -> Result<()> {
        (**self).process_left(batch, out)
    }
    fn process_right(&mut self, batch: RecordBatch, out: &mut Output) -> Result<()> {
        (**self).process_right(batch, out)
    }
    fn handle_watermark(&mut self, watermark: Watermark, out: &mut Output) -> Result<()> {
        (**self).handle_watermark(watermark, out)
    }
    fn snapshot_state(&mut self, snapshot: &mut crate::checkpoint::StateSnapshot) -> Result<()> {
        (**self).snapshot_state(snapshot)
    }
    fn restore_state(&mut self, restored: &crate::checkpoint::RestoredState) -> Result<()> {
        (**self).restore_state(restored)
    }
    fn restore_rescaled_state(&mut self, restored: &crate::checkpoint::RestoredState) -> Result<()> {
        (**self).restore_rescaled_state(restored)
    }
    fn follows_key_groups(&self) -> bool {
        (**self).follows_key_groups()
    }
    fn hand_over_key_groups(&mut self, handover: &crate::checkpoint::KeyGroupHandover) -> Result<()> {
        (**self).hand_over_key_groups(handover)
    }
    fn handle_checkpoint(&mut self, barrier: CheckpointBarrier, out: &mut Output) -> Result<()> {
        (**self).handle_checkpoint(barrier, out)
    }
    fn on_close(&mut self, out: &mut Output) -> Result<()> {
        (**self).on_close(out)
    }
    fn tracks_right_watermark(&self) -> bool {
        (**self).tracks_right_watermark()
    }
}

/// Creates one two-input operator instance per partition.
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use sabot::operator::{TwoInputOperatorFactory, WindowJoinOperator};
/// use sabot::window::WindowSpec;
/// # use arrow::datatypes::{DataType, Field, Schema};
/// # let schema = Arc::new(Schema::new(vec![Field::new("k", DataType::Int64, false), Field::new("ts", DataType::Int64, false)]));
/// let (left, right) = (schema.clone(), schema);
/// let factory: TwoInputOperatorFactory = Arc::new(move |_partition| {
///     let spec = WindowSpec::tumbling(Duration::from_secs(10));
///     Ok(Box::new(WindowJoinOperator::try_new(left.clone(), right.clone(), &["k"], &["k"], "ts", "ts", spec)?) as _)
/// });
/// assert_eq!(factory(0)?.name(), "window_join");
/// # Ok::<(), sabot::SabotError>(())
/// ```
pub type TwoInputOperatorFactory = Arc<dyn Fn(usize) -> Result<Box<dyn TwoInputOperator>> + Send + Sync>;

/// The event time of two inputs: the minimum of their watermarks, which never goes backwards.
/// An input that ended no longer holds the other back.
#[derive(Debug, Clone)]
pub(crate) struct CoWatermarks {
    inputs: [Option<i64>; 2],
    ended: [bool; 2],
    idle: [bool; 2],
    tracked: [bool; 2],
    emitted: Option<i64>,
}

impl CoWatermarks {
    /// Tracks both inputs, or the left one only when `track_right` is false.
    pub(crate) fn new(track_right: bool) -> Self {
        CoWatermarks {
            inputs: [None; 2],
            ended: [false; 2],
            idle: [false; 2],
            tracked: [true, track_right],
            emitted: None,
        }
    }

    /// Records input `side`'s watermark (0 left, 1 right); returns the merged one if it advanced.
    pub(crate) fn update(&mut self, side: usize, watermark: Watermark) -> Option<Watermark> {
        let slot = &mut self.inputs[side];
        *slot = Some(slot.map_or(watermark.0, |old| old.max(watermark.0)));
        self.advance()
    }

    /// Input `side` ended; returns the merged watermark if that let it advance.
    pub(crate) fn finish(&mut self, side: usize) -> Option<Watermark> {
        self.ended[side] = true;
        self.advance()
    }

    /// Input `side` went silent (`idle`) or spoke again: an idle input does not hold the other
    /// back. Returns the merged watermark if that let it advance.
    pub(crate) fn set_idle(&mut self, side: usize, idle: bool) -> Option<Watermark> {
        self.idle[side] = idle;
        self.advance()
    }

    fn advance(&mut self) -> Option<Watermark> {
        let mut min: Option<i64> = None;
        for side in 0..2 {
            if self.tracked[side] && !self.ended[side] && !self.idle[side] {
                let w = self.inputs[side]?;
                min = Some(min.map_or(w, |m| m.min(w)));
            }
        }
        let min = min?;
        if self.emitted.is_none_or(|e| min > e) {
            self.emitted = Some(min);
            return Some(Watermark(min));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn co_watermark_is_the_minimum_and_ignores_ended_or_untracked_inputs() {
        let mut w = CoWatermarks::new(true);
        assert_eq!(w.update(0, Watermark(10)), None);
        assert_eq!(w.update(1, Watermark(4)), Some(Watermark(4)));
        assert_eq!(w.update(1, Watermark(20)), Some(Watermark(10)));
        assert_eq!(w.update(1, Watermark(15)), None, "never backwards");
        assert_eq!(w.finish(0), Some(Watermark(20)), "an ended input no longer holds back");
        let mut left_only = CoWatermarks::new(false);
        assert_eq!(left_only.update(1, Watermark(100)), None);
        assert_eq!(left_only.update(0, Watermark(7)), Some(Watermark(7)));
    }
}
