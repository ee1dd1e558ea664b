//! A test harness for two-input operators (streaming joins): feed each side's batches and
//! watermarks explicitly and assert on exactly what the operator emitted.

use arrow::record_batch::RecordBatch;

use super::OperatorSnapshot;
use crate::Result;
use crate::operator::{CheckpointBarrier, CoWatermarks, Message, Output, TwoInputOperator, Watermark};

/// Drives one [`TwoInputOperator`] directly, without threads or channels. Watermarks are
/// given per side; the operator sees their minimum when it advances, as in the engine.
///
/// ```
/// use std::sync::Arc;
/// use arrow::array::{Int64Array, RecordBatch};
/// use sabot::operator::IntervalJoinOperator;
/// use sabot::testing::TwoInputHarness;
///
/// let rows = |ts: i64| RecordBatch::try_from_iter([
///     ("k", Arc::new(Int64Array::from(vec![1])) as _),
///     ("ts", Arc::new(Int64Array::from(vec![ts])) as _),
/// ]).unwrap();
/// let schema = rows(0).schema();
/// let op = IntervalJoinOperator::try_new(schema.clone(), schema, &["k"], &["k"], "ts", "ts", 0, 0)?;
/// let mut h = TwoInputHarness::new(op);
/// h.process_left(rows(10))?;
/// h.process_right(rows(10))?;
/// assert_eq!(h.take_output()[0].num_rows(), 1);
/// h.watermark_left(50)?;
/// assert_eq!(h.operator().buffered_rows(), 2, "the right side still holds event time back");
/// h.watermark_right(50)?;
/// assert_eq!(h.operator().buffered_rows(), 0);
/// # Ok::<(), sabot::SabotError>(())
/// ```
pub struct TwoInputHarness<O: TwoInputOperator> {
    operator: O,
    started: bool,
    watermark_merge: CoWatermarks,
    output: Vec<RecordBatch>,
    watermarks: Vec<i64>,
    barriers: Vec<u64>,
    snapshots: u64,
}

impl<O: TwoInputOperator> TwoInputHarness<O> {
    /// A harness around `operator`.
    pub fn new(operator: O) -> Self {
        let watermark_merge = CoWatermarks::new(operator.tracks_right_watermark());
        TwoInputHarness {
            operator,
            started: false,
            watermark_merge,
            output: vec![],
            watermarks: vec![],
            barriers: vec![],
            snapshots: 0,
        }
    }

    /// A harness around `operator` after it loaded `snapshot` (before `on_start`), as when a
    /// pipeline restores a checkpoint. As in the engine, the inputs' watermarks start over:
    /// event time advances again once both inputs (or the left one, if the right is not
    /// tracked) delivered a watermark; the operator ignores any that does not pass its own.
    pub fn restore(mut operator: O, snapshot: &OperatorSnapshot) -> Result<Self> {
        operator.restore_state(&snapshot.restored_state())?;
        let mut harness = TwoInputHarness::new(operator);
        harness.snapshots = snapshot.checkpoint_id();
        Ok(harness)
    }

    /// Snapshots the operator's state as an aligned checkpoint barrier would (the barrier is
    /// not forwarded: see [`TwoInputHarness::checkpoint`]) and writes its files.
    pub fn snapshot(&mut self) -> Result<OperatorSnapshot> {
        self.run(|_, _| Ok(()))?;
        self.snapshots += 1;
        let operator = &mut self.operator;
        OperatorSnapshot::take(self.snapshots, |s| operator.snapshot_state(s))
    }

    fn run(&mut self, f: impl FnOnce(&mut O, &mut Output) -> Result<()>) -> Result<()> {
        if !self.started {
            self.started = true;
            self.operator.on_start()?;
        }
        let mut out = Output::default();
        f(&mut self.operator, &mut out)?;
        while let Some(msg) = out.pop() {
            match msg {
                Message::Batch(b) => self.output.push(b),
                Message::Watermark(w) => self.watermarks.push(w.0),
                Message::Barrier(b) => self.barriers.push(b.id),
                Message::KeyGroups(_) => {}
            }
        }
        Ok(())
    }

    /// Feeds one batch to the left input.
    pub fn process_left(&mut self, batch: RecordBatch) -> Result<()> {
        self.run(|op, out| op.process_left(batch, out))
    }

    /// Feeds one batch to the right input.
    pub fn process_right(&mut self, batch: RecordBatch) -> Result<()> {
        self.run(|op, out| op.process_right(batch, out))
    }

    fn side_watermark(&mut self, side: usize, watermark: i64) -> Result<()> {
        match self.watermark_merge.update(side, Watermark(watermark)) {
            Some(w) => self.run(|op, out| op.handle_watermark(w, out)),
            None => Ok(()),
        }
    }

    /// Advances the left input's event time to `watermark` (ms).
    pub fn watermark_left(&mut self, watermark: i64) -> Result<()> {
        self.side_watermark(0, watermark)
    }

    /// Advances the right input's event time to `watermark` (ms).
    pub fn watermark_right(&mut self, watermark: i64) -> Result<()> {
        self.side_watermark(1, watermark)
    }

    /// Advances both inputs' event time to `watermark` (ms).
    pub fn watermark(&mut self, watermark: i64) -> Result<()> {
        self.watermark_left(watermark)?;
        self.watermark_right(watermark)
    }

    /// Sends checkpoint barrier `id` (as if both inputs delivered it).
    pub fn checkpoint(&mut self, id: u64) -> Result<()> {
        self.run(|op, out| op.handle_checkpoint(CheckpointBarrier { id }, out))
    }

    /// Hands key groups over, as when both inputs delivered the same
    /// [`KeyGroupChange`](crate::checkpoint::KeyGroupChange) in a pipeline whose workers
    /// share key groups.
    pub fn hand_over_key_groups(&mut self, handover: &crate::checkpoint::KeyGroupHandover) -> Result<()> {
        self.run(|op, _| op.hand_over_key_groups(handover))
    }

    /// Ends both inputs (bounded streams' end).
    pub fn close(&mut self) -> Result<()> {
        self.run(|op, out| op.on_close(out))
    }

    /// Takes the batches emitted so far.
    pub fn take_output(&mut self) -> Vec<RecordBatch> {
        std::mem::take(&mut self.output)
    }

    /// The number of rows emitted and not yet taken.
    pub fn output_rows(&self) -> usize {
        self.output.iter().map(|b| b.num_rows()).sum()
    }

    /// The watermarks the operator forwarded so far.
    pub fn watermarks(&self) -> Vec<i64> {
        self.watermarks.clone()
    }

    /// The checkpoint barriers the operator forwarded so far.
    pub fn barriers(&self) -> Vec<u64> {
        self.barriers.clone()
    }

    /// The operator itself.
    pub fn operator(&self) -> &O {
        &self.operator
    }

    /// The operator itself, mutably.
    pub fn operator_mut(&mut self) -> &mut O {
        &mut self.operator
    }
}
