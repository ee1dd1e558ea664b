//! A test harness for operators, in the spirit of Flink's operator test harness and Kafka
//! Streams' `TopologyTestDriver`: feed batches, advance event time explicitly, and assert on
//! exactly what the operator emitted.
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//! use arrow::array::{Int64Array, RecordBatch};
//! use sabot::expr::{col, sum};
//! use sabot::operator::WindowAggregateOperator;
//! use sabot::testing::OperatorHarness;
//! use sabot::window::WindowSpec;
//!
//! let batch = RecordBatch::try_from_iter([
//!     ("ts", Arc::new(Int64Array::from(vec![1_000, 9_000, 12_000])) as _),
//!     ("v", Arc::new(Int64Array::from(vec![1, 2, 3])) as _),
//! ]).unwrap();
//! let op = WindowAggregateOperator::try_new(
//!     WindowSpec::tumbling(Duration::from_secs(10)), "ts", batch.schema(), vec![],
//!     vec![sum(col("v")).alias("total")], 0, None).unwrap();
//! let mut harness = OperatorHarness::new(op);
//! harness.process(batch).unwrap();
//! assert_eq!(harness.output_rows(), 0, "nothing fires before the watermark");
//! harness.watermark(10_000).unwrap();
//! assert_eq!(harness.take_output()[0].num_rows(), 1, "window [0, 10s) fired");
//! assert_eq!(harness.watermarks(), vec![10_000]);
//! ```

use arrow::record_batch::RecordBatch;

use crate::Result;
use crate::operator::{CheckpointBarrier, Message, Operator, Output, Watermark};

#[path = "testing_two_input.rs"]
mod two_input;
pub use two_input::TwoInputHarness;

/// Drives one operator instance directly, without threads or channels.
pub struct OperatorHarness<O: Operator> {
    operator: O,
    started: bool,
    output: Vec<RecordBatch>,
    watermarks: Vec<i64>,
    barriers: Vec<u64>,
}

impl<O: Operator> OperatorHarness<O> {
    /// A harness around `operator`.
    pub fn new(operator: O) -> Self {
        OperatorHarness { operator, started: false, output: vec![], watermarks: vec![], barriers: vec![] }
    }

    fn start(&mut self) -> Result<()> {
        if !self.started {
            self.started = true;
            self.operator.on_start()?;
        }
        Ok(())
    }

    fn drain(&mut self, mut out: Output) {
        while let Some(msg) = out.pop() {
            match msg {
                Message::Batch(b) => self.output.push(b),
                Message::Watermark(w) => self.watermarks.push(w.0),
                Message::Barrier(b) => self.barriers.push(b.id),
            }
        }
    }

    /// Feeds one batch.
    pub fn process(&mut self, batch: RecordBatch) -> Result<()> {
        self.start()?;
        let mut out = Output::default();
        self.operator.process_batch(batch, &mut out)?;
        self.drain(out);
        Ok(())
    }

    /// Advances event time to `watermark` (ms).
    pub fn watermark(&mut self, watermark: i64) -> Result<()> {
        self.start()?;
        let mut out = Output::default();
        self.operator.handle_watermark(Watermark(watermark), &mut out)?;
        self.drain(out);
        Ok(())
    }

    /// Sends checkpoint barrier `id`.
    pub fn checkpoint(&mut self, id: u64) -> Result<()> {
        self.start()?;
        let mut out = Output::default();
        self.operator.handle_checkpoint(CheckpointBarrier { id }, &mut out)?;
        self.drain(out);
        Ok(())
    }

    /// Ends the input (a bounded stream's end).
    pub fn close(&mut self) -> Result<()> {
        self.start()?;
        let mut out = Output::default();
        self.operator.on_close(&mut out)?;
        self.drain(out);
        Ok(())
    }

    /// Takes the batches emitted so far.
    pub fn take_output(&mut self) -> Vec<RecordBatch> {
        std::mem::take(&mut self.output)
    }

    /// The number of rows emitted and not yet taken.
    pub fn output_rows(&self) -> usize {
        self.output.iter().map(|b| b.num_rows()).sum()
    }

    /// The watermarks forwarded so far.
    pub fn watermarks(&self) -> Vec<i64> {
        self.watermarks.clone()
    }

    /// The checkpoint barriers forwarded so far.
    pub fn barriers(&self) -> Vec<u64> {
        self.barriers.clone()
    }

    /// The operator itself.
    pub fn operator_mut(&mut self) -> &mut O {
        &mut self.operator
    }
}
