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

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use arrow::record_batch::RecordBatch;

use crate::checkpoint::{RestoredState, SnapshotFile, StateSnapshot};
use crate::operator::{CheckpointBarrier, Message, Operator, Output, Watermark};
use crate::{Result, SabotError};

#[path = "testing_two_input.rs"]
mod two_input;
pub use two_input::TwoInputHarness;

/// The state an operator saved when a harness snapshotted it: the files a checkpoint would
/// hold, in a temporary directory removed when the handle is dropped. Restore it into a new
/// operator with [`OperatorHarness::restore`] or [`TwoInputHarness::restore`] (as often as
/// wanted).
#[derive(Debug)]
pub struct OperatorSnapshot {
    dir: PathBuf,
    checkpoint: u64,
    files: Vec<SnapshotFile>,
}

impl OperatorSnapshot {
    /// Snapshots state through `f` into a new temporary directory and writes the files.
    pub(crate) fn take(checkpoint: u64, f: impl FnOnce(&mut StateSnapshot) -> Result<()>) -> Result<Self> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let base = std::env::temp_dir();
        let dir = loop {
            let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let dir = base.join(format!("sabot-harness-{}-{n}-{nanos}", std::process::id()));
            match std::fs::create_dir(&dir) {
                Ok(()) => break dir,
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(SabotError::io(&dir, e)),
            }
        };
        // From here on the directory is removed on every path (the handle owns it).
        let mut handle = OperatorSnapshot { dir, checkpoint, files: vec![] };
        let mut snapshot = StateSnapshot::new(checkpoint, handle.dir.join("state"));
        f(&mut snapshot)?;
        handle.files = snapshot.write()?;
        Ok(handle)
    }

    /// The saved state, as a restoring pipeline hands it to the operator.
    pub fn restored_state(&self) -> RestoredState {
        RestoredState::new(self.checkpoint, self.dir.join("state"))
    }

    /// The checkpoint's id (the harness numbers its snapshots from 1).
    pub fn checkpoint_id(&self) -> u64 {
        self.checkpoint
    }

    /// The files the operator saved, with sizes and checksums (none for a stateless operator).
    pub fn files(&self) -> &[SnapshotFile] {
        &self.files
    }

    /// The directory holding the files.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for OperatorSnapshot {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Drives one operator instance directly, without threads or channels.
///
/// [`OperatorHarness::snapshot`] saves the operator's state as a checkpoint would, and
/// [`OperatorHarness::restore`] starts a new harness whose operator loaded it, as a pipeline
/// recovering from that checkpoint would:
///
/// ```
/// use std::sync::Arc;
/// use arrow::array::{Int64Array, RecordBatch, StringArray};
/// use sabot::expr::{col, sum};
/// use sabot::operator::CountWindowOperator;
/// use sabot::testing::OperatorHarness;
///
/// let rows = |k: &str, v: i64| RecordBatch::try_from_iter([
///     ("k", Arc::new(StringArray::from(vec![k])) as _),
///     ("v", Arc::new(Int64Array::from(vec![v])) as _),
/// ]).unwrap();
/// let new_op = || CountWindowOperator::try_new(2, rows("", 0).schema(), vec![col("k")], vec![sum(col("v"))]);
/// let mut harness = OperatorHarness::new(new_op()?);
/// harness.process(rows("a", 1))?;
/// let snapshot = harness.snapshot()?;
///
/// let mut restored = OperatorHarness::restore(new_op()?, &snapshot)?;
/// restored.process(rows("a", 2))?;
/// assert_eq!(restored.output_rows(), 1, "the window of key a got its second row");
/// # Ok::<(), sabot::SabotError>(())
/// ```
pub struct OperatorHarness<O: Operator> {
    operator: O,
    started: bool,
    output: Vec<RecordBatch>,
    watermarks: Vec<i64>,
    barriers: Vec<u64>,
    snapshots: u64,
}

impl<O: Operator> OperatorHarness<O> {
    /// A harness around `operator`.
    pub fn new(operator: O) -> Self {
        OperatorHarness { operator, started: false, output: vec![], watermarks: vec![], barriers: vec![], snapshots: 0 }
    }

    /// A harness around `operator` after it loaded `snapshot` (before `on_start`), as when a
    /// pipeline restores a checkpoint.
    pub fn restore(mut operator: O, snapshot: &OperatorSnapshot) -> Result<Self> {
        operator.restore_state(&snapshot.restored_state())?;
        let mut harness = OperatorHarness::new(operator);
        harness.snapshots = snapshot.checkpoint_id();
        Ok(harness)
    }

    /// Snapshots the operator's state as a checkpoint barrier would (the barrier itself is not
    /// forwarded: see [`OperatorHarness::checkpoint`]) and writes its files.
    pub fn snapshot(&mut self) -> Result<OperatorSnapshot> {
        self.start()?;
        self.snapshots += 1;
        let operator = &mut self.operator;
        OperatorSnapshot::take(self.snapshots, |s| operator.snapshot_state(s))
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
                Message::KeyGroups(_) => {}
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
