//! As-of join: each left row with the latest right row of its key at or before its time.

mod right_index;
mod stored_latest;

use arrow::array::{BooleanArray, RecordBatch};
use arrow::compute::{concat_batches, filter_record_batch};
use arrow::datatypes::SchemaRef;

use super::join_state::{JoinKeys, JoinOutput, Picks, Side, times_of};
use super::{Output, TwoInputOperator, Watermark};
use crate::Result;
use crate::checkpoint::{RestoredState, StateSnapshot};
use crate::plan::{StreamJoinKind, stream_join_output};
use crate::state::StateBackend;
use right_index::{Picker, RightIndex};
use stored_latest::StoredLatest;

/// An as-of join (left outer): each left row `l` is joined with the latest right row `r`
/// with the same key and `r.ts <= l.ts` (the one that arrived last among equal times), if
/// `l.ts - r.ts <= tolerance`; otherwise the right columns are null.
///
/// A left row waits until the watermark passes its time (`l.ts < watermark`), so that right
/// rows that arrive later with earlier times are respected; rows are then emitted in event
/// time order. The right side keeps, per key, the rows at or after the watermark plus the
/// latest one before it (if within the tolerance): the watermark bounds both sides' state.
/// Rows behind the watermark on arrival are late and dropped ([`AsofJoinOperator::late_rows`]).
///
/// The output has every left column, then the right columns (nullable; right keys named like
/// their left key are dropped, other clashing names get the suffix `_right`).
///
/// ```
/// use std::sync::Arc;
/// use arrow::array::{Int64Array, RecordBatch};
/// use sabot::operator::AsofJoinOperator;
/// use sabot::testing::TwoInputHarness;
///
/// let rows = |k: i64, ts: i64, v: i64| RecordBatch::try_from_iter([
///     ("k", Arc::new(Int64Array::from(vec![k])) as _),
///     ("ts", Arc::new(Int64Array::from(vec![ts])) as _),
///     ("v", Arc::new(Int64Array::from(vec![v])) as _),
/// ]).unwrap();
/// let schema = rows(0, 0, 0).schema();
/// let op = AsofJoinOperator::try_new(schema.clone(), schema, &["k"], &["k"], "ts", "ts", Some(100))?;
/// let mut h = TwoInputHarness::new(op);
/// h.process_left(rows(1, 50, 0))?;
/// h.process_right(rows(1, 40, 7))?;
/// h.process_right(rows(1, 45, 8))?; // later quote, still before the trade: wins
/// h.watermark(51)?;
/// let out = h.take_output();
/// assert_eq!(out[0].column_by_name("v_right").unwrap().as_any().downcast_ref::<Int64Array>().unwrap().value(0), 8);
/// # Ok::<(), sabot::SabotError>(())
/// ```
pub struct AsofJoinOperator {
    keys: JoinKeys,
    output: JoinOutput,
    left_time: String,
    right_time: String,
    tolerance: Option<i64>,
    pending: Vec<Pending>,
    pending_rows: usize,
    right: RightIndex,
    /// With a state backend other than memory: each key's latest right row before the
    /// watermark (the heap index then holds only the rows at or after it).
    sealed: Option<StoredLatest>,
    /// After a rescale, the highest watermark of the old instances: rows they sealed may be
    /// as recent as that, later than rows on the heap, so a heap match older than it is
    /// compared with the sealed row.
    sealed_until: i64,
    watermark: i64,
    late_rows: usize,
}

/// Left rows waiting for the watermark.
struct Pending {
    batch: RecordBatch,
    times: Vec<i64>,
    min: i64,
    max: i64,
}

impl AsofJoinOperator {
    /// Joins each row of `left_schema` with the latest row of `right_schema` whose
    /// `right_keys` equal its `left_keys` and whose `right_time` is at most its `left_time`,
    /// by at most `tolerance` ms (`None`: any distance).
    pub fn try_new(
        left_schema: SchemaRef,
        right_schema: SchemaRef,
        left_keys: &[&str],
        right_keys: &[&str],
        left_time: &str,
        right_time: &str,
        tolerance: Option<i64>,
    ) -> Result<Self> {
        let kind =
            StreamJoinKind::AsOf { left_time: left_time.to_string(), right_time: right_time.to_string(), tolerance };
        let output = stream_join_output(&left_schema, &right_schema, left_keys, right_keys, &kind)?;
        Ok(AsofJoinOperator {
            keys: JoinKeys::try_new(&left_schema, &right_schema, left_keys, right_keys)?,
            output,
            left_time: left_time.to_string(),
            right_time: right_time.to_string(),
            tolerance,
            pending: vec![],
            pending_rows: 0,
            right: RightIndex::default(),
            sealed: None,
            sealed_until: i64::MIN,
            watermark: i64::MIN,
            late_rows: 0,
        })
    }

    /// Keeps each key's latest right row before the watermark in `backend`: on the heap for
    /// [`StateBackend::Memory`] (the default), else in the backend's store (RocksDB: one entry
    /// per key, the row in Arrow's row format, and with a tolerance an index by time to
    /// delete rows it makes useless), so that the rows of many keys can outgrow memory. Rows
    /// at or after the watermark and left rows waiting for it, both bounded by the inputs'
    /// out-of-orderness, stay on the heap. Call it before the first row.
    ///
    /// ```no_run
    /// use std::sync::Arc;
    /// use arrow::datatypes::{DataType, Field, Schema};
    /// use sabot::operator::AsofJoinOperator;
    /// use sabot::state::StateBackend;
    ///
    /// let schema = Arc::new(Schema::new(vec![
    ///     Field::new("k", DataType::Int64, false),
    ///     Field::new("ts", DataType::Int64, false),
    /// ]));
    /// let backend = StateBackend::RocksDb { path: "/var/lib/sabot/worker-0".into() };
    /// let op = AsofJoinOperator::try_new(schema.clone(), schema, &["k"], &["k"], "ts", "ts", Some(1_000))?
    ///     .with_state_backend(&backend)?;
    /// # Ok::<(), sabot::SabotError>(())
    /// ```
    pub fn with_state_backend(mut self, backend: &StateBackend) -> Result<Self> {
        self.sealed = match backend {
            StateBackend::Memory => None,
            #[allow(unreachable_patterns)]
            _ => Some(StoredLatest::open(backend, self.output.input_schema(Side::Right).clone(), self.tolerance)?),
        };
        Ok(self)
    }

    /// The output schema.
    pub fn output_schema(&self) -> SchemaRef {
        self.output.schema()
    }

    /// The rows buffered: left rows waiting for the watermark and right rows kept for matching.
    pub fn buffered_rows(&self) -> usize {
        self.pending_rows + self.right.rows + self.sealed.as_ref().map_or(0, StoredLatest::rows)
    }

    /// The rows dropped because they arrived behind the watermark.
    pub fn late_rows(&self) -> usize {
        self.late_rows
    }

    /// Emits every pending left row with a time before `watermark` (all of them for `None`).
    fn emit_due(&mut self, watermark: Option<i64>, out: &mut Output) -> Result<()> {
        let due_before = watermark.unwrap_or(i64::MAX);
        let mut due: Vec<RecordBatch> = vec![];
        let mut due_times: Vec<i64> = vec![];
        let mut kept = vec![];
        for p in std::mem::take(&mut self.pending) {
            if watermark.is_none() || p.max < due_before {
                due_times.extend_from_slice(&p.times);
                due.push(p.batch);
            } else if p.min >= due_before {
                kept.push(p);
            } else {
                let mask: BooleanArray = p.times.iter().map(|&t| Some(t < due_before)).collect();
                let (now, later): (Vec<i64>, Vec<i64>) = p.times.iter().partition(|&&t| t < due_before);
                due.push(filter_record_batch(&p.batch, &mask)?);
                due_times.extend(now);
                let rest = filter_record_batch(&p.batch, &arrow::compute::not(&mask)?)?;
                kept.push(pending(rest, later));
            }
        }
        self.pending = kept;
        if due.is_empty() {
            return Ok(());
        }
        let batch = concat_batches(due[0].schema_ref(), &due)?;
        self.pending_rows -= batch.num_rows();
        // In event-time order (ties in arrival order).
        let mut order: Vec<u32> = (0..batch.num_rows() as u32).collect();
        order.sort_by_key(|&i| due_times[i as usize]);
        let keys = self.keys.encode(&batch, Side::Left)?;
        let mut picker = Picker::default();
        let mut picks = Vec::with_capacity(order.len());
        // Rows to look up among the sealed rows in the store: (pick, key, time, heap match's
        // time). A heap row is later than any sealed row, but for rows sealed by instances
        // ahead of this one before a rescale.
        let mut in_store: Vec<(usize, &[u8], i64, Option<i64>)> = vec![];
        let stored = self.sealed.is_some();
        for &row in &order {
            let (key, time) = (keys.get(row as usize), due_times[row as usize]);
            let found = key.and_then(|k| self.right.latest(k, time, self.tolerance));
            if let Some(key) = key.filter(|_| stored)
                && found.is_none_or(|(_, at)| at < self.sealed_until)
            {
                in_store.push((picks.len(), key, time, found.map(|(_, at)| at)));
            }
            picks.push(match found {
                None => None,
                Some(((segment, r), _)) => Some(picker.pick(&self.right, segment, r)?),
            });
        }
        let mut sources: Vec<RecordBatch> = picker.sources.into_iter().cloned().collect();
        // A heap row of the key at or before the time is later than any sealed row.
        if let Some(sealed) = self.sealed.as_mut().filter(|_| !in_store.is_empty()) {
            let probes: Vec<(&[u8], i64)> = in_store.iter().map(|&(_, key, time, _)| (key, time)).collect();
            let (rows, found) = sealed.lookup(&probes)?;
            let source = sources.len();
            sources.push(rows);
            for (&(pick, _, _, on_heap), found) in in_store.iter().zip(found) {
                // The later row wins; on a tie the heap's, which arrived later.
                if let Some((row, at)) = found
                    && on_heap.is_none_or(|heap| at > heap)
                {
                    picks[pick] = Some((source, row));
                }
            }
        }
        let sources: Vec<&RecordBatch> = sources.iter().collect();
        out.emit(self.output.build(Picks::Take(&batch, &order), Picks::Interleave(&sources, &picks), vec![])?);
        Ok(())
    }
}

fn pending(batch: RecordBatch, times: Vec<i64>) -> Pending {
    let min = times.iter().copied().min().unwrap_or(i64::MAX);
    let max = times.iter().copied().max().unwrap_or(i64::MIN);
    Pending { batch, times, min, max }
}

impl TwoInputOperator for AsofJoinOperator {
    fn name(&self) -> &str {
        "asof_join"
    }

    fn process_left(&mut self, batch: RecordBatch, _out: &mut Output) -> Result<()> {
        let times = times_of(&batch, &self.left_time)?;
        let on_time = times.iter().filter(|&&t| t >= self.watermark).count();
        self.late_rows += times.len() - on_time;
        let (batch, times) = if on_time == times.len() {
            (batch, times)
        } else {
            let mask: BooleanArray = times.iter().map(|&t| Some(t >= self.watermark)).collect();
            let kept: Vec<i64> = times.iter().copied().filter(|&t| t >= self.watermark).collect();
            (filter_record_batch(&batch, &mask)?, kept)
        };
        if batch.num_rows() > 0 {
            self.pending_rows += batch.num_rows();
            self.pending.push(pending(batch, times));
        }
        Ok(())
    }

    fn process_right(&mut self, batch: RecordBatch, _out: &mut Output) -> Result<()> {
        let times = times_of(&batch, &self.right_time)?;
        let keys = self.keys.encode(&batch, Side::Right)?;
        let mut selected = Vec::with_capacity(times.len());
        for (row, &t) in times.iter().enumerate() {
            if t < self.watermark {
                self.late_rows += 1;
            } else if keys.get(row).is_some() {
                selected.push(row as u32);
            }
        }
        self.right.insert(&batch, &times, &keys, &selected)
    }

    fn handle_watermark(&mut self, watermark: Watermark, out: &mut Output) -> Result<()> {
        if watermark.0 <= self.watermark {
            return Ok(());
        }
        self.watermark = watermark.0;
        self.emit_due(Some(watermark.0), out)?;
        match self.sealed.as_mut() {
            None => self.right.seal(watermark.0, self.tolerance),
            Some(sealed) => {
                if let Some(latest) = self.right.take_before(watermark.0)? {
                    sealed.put(&latest)?;
                }
                sealed.seal(watermark.0)?;
            }
        }
        out.emit_watermark(watermark);
        Ok(())
    }

    fn on_close(&mut self, out: &mut Output) -> Result<()> {
        self.emit_due(None, out)?;
        self.right = RightIndex::default();
        self.sealed.as_mut().map_or(Ok(()), StoredLatest::clear)
    }
    /// Saves the pending left rows (Arrow IPC, in arrival order), the right rows kept for
    /// matching (in arrival order, with whether each is the sealed latest row of its key
    /// before the watermark; with a state backend, a checkpoint of the sealed rows instead), the
    /// watermark and the count of late rows.
    fn snapshot_state(&mut self, snapshot: &mut StateSnapshot) -> Result<()> {
        if let Some(sealed) = self.sealed.as_mut() {
            sealed.snapshot(snapshot)?;
            snapshot.put_value("asof_sealed_until", &self.sealed_until)?;
        }
        let pending: Vec<RecordBatch> = self.pending.iter().map(|p| p.batch.clone()).collect();
        snapshot.put_batches("pending", self.output.input_schema(Side::Left), &pending)?;
        let right_schema = self.output.input_schema(Side::Right);
        let (rows, sealed) = self.right.snapshot(right_schema)?;
        snapshot.put_batches("right", right_schema, &[rows])?;
        snapshot.put_value("asof", &AsofState { watermark: self.watermark, late_rows: self.late_rows, sealed })
    }

    fn restore_state(&mut self, restored: &RestoredState) -> Result<()> {
        self.pending.clear();
        self.pending_rows = 0;
        self.right = RightIndex::default();
        self.sealed_until = i64::MIN;
        if let Some(sealed) = self.sealed.as_mut() {
            sealed.clear()?;
        }
        if let Some(state) = self.merge_snapshot(restored, &|_| true)? {
            self.watermark = state.watermark;
            self.late_rows = state.late_rows;
        }
        Ok(())
    }

    fn follows_key_groups(&self) -> bool {
        true
    }

    /// Released key groups go through a snapshot of the operator's own: it is restored
    /// keeping the other keys, by the same path a rescaled restore takes (left rows, right
    /// rows, sealed rows and their time index alike). Acquired ones are merged in.
    fn hand_over_key_groups(&mut self, handover: &crate::checkpoint::KeyGroupHandover) -> Result<()> {
        if !handover.released.is_empty() {
            let dir = tempfile::Builder::new()
                .prefix("sabot-asof-handover")
                .tempdir()
                .map_err(|e| crate::SabotError::io(std::env::temp_dir(), e))?;
            let mut snapshot = StateSnapshot::new(0, dir.path());
            self.snapshot_state(&mut snapshot)?;
            snapshot.write()?;
            let (watermark, late_rows) = (self.watermark, self.late_rows);
            let kept = |key: &[u8]| !handover.releases(key);
            self.pending.clear();
            self.pending_rows = 0;
            self.right = RightIndex::default();
            if let Some(sealed) = self.sealed.as_mut() {
                sealed.clear()?;
            }
            self.merge_snapshot(&RestoredState::new(0, dir.path()), &kept)?;
            (self.watermark, self.late_rows) = (watermark, late_rows);
            tracing::info!(operator = self.name(), groups = ?handover.released, "released key groups");
        }
        let types = self.keys.types().to_vec();
        super::merge_acquired(handover, "asof_join", &types, |snapshot, keep| {
            self.merge_snapshot(snapshot, keep).map(drop)
        })
    }

    /// Keeps the pending left rows and the right rows of every old instance whose keys the
    /// exchanges now route to this instance; the watermark is the lowest of the old ones'.
    fn restore_rescaled_state(&mut self, restored: &RestoredState) -> Result<()> {
        let (name, types) = (self.name().to_string(), self.keys.types().to_vec());
        let saved = super::merge_rescaled(restored, &name, &types, |old, keep| self.merge_snapshot(old, keep))?;
        let saved: Vec<AsofState> = saved.into_iter().flatten().collect();
        self.watermark = saved.iter().map(|s| s.watermark).min().unwrap_or(i64::MIN);
        // Every old instance sealed rows up to its watermark.
        let ahead = saved.iter().map(|s| s.watermark).max().unwrap_or(i64::MIN);
        self.sealed_until = self.sealed_until.max(ahead);
        self.late_rows += saved.iter().map(|s| s.late_rows).sum::<usize>();
        Ok(())
    }
}

impl AsofJoinOperator {
    /// Adds the pending left rows and the right rows whose keys `keep` accepts from a
    /// snapshot of an instance of this operator; returns what it saved besides its rows.
    fn merge_snapshot(&mut self, snapshot: &RestoredState, keep: &dyn Fn(&[u8]) -> bool) -> Result<Option<AsofState>> {
        let Some(state) = snapshot.value::<AsofState>("asof")? else { return Ok(None) };
        let sealed_until = snapshot.value::<i64>("asof_sealed_until")?.unwrap_or(i64::MIN);
        self.sealed_until = self.sealed_until.max(sealed_until);
        match self.sealed.as_mut() {
            Some(sealed) => sealed.merge_snapshot(snapshot, keep)?,
            None => super::saved_by_another_backend(snapshot, "asof_join", "asof_stored", "rocksdb")?,
        }
        for batch in snapshot.batches("pending")? {
            let batch = self.keys.filter(&batch, Side::Left, keep)?;
            if batch.num_rows() == 0 {
                continue;
            }
            let times = times_of(&batch, &self.left_time)?;
            self.pending_rows += batch.num_rows();
            self.pending.push(pending(batch, times));
        }
        let batches = snapshot.batches("right")?;
        if let Some(first) = batches.first() {
            let mut rows = concat_batches(&first.schema(), &batches)?;
            let mut sealed = state.sealed.clone();
            if let Some(mask) = self.keys.mask(&rows, Side::Right, keep)? {
                rows = arrow::compute::filter_record_batch(&rows, &mask)?;
                sealed =
                    sealed.into_iter().zip(mask.values().iter()).filter(|(_, kept)| *kept).map(|(s, _)| s).collect();
            }
            let times = times_of(&rows, &self.right_time)?;
            let keys = self.keys.encode(&rows, Side::Right)?;
            self.right.restore(&rows, &times, &keys, &sealed)?;
        }
        Ok(Some(state))
    }
}

/// What an as-of join saves besides its rows.
#[derive(serde::Serialize, serde::Deserialize)]
struct AsofState {
    watermark: i64,
    late_rows: usize,
    /// For each saved right row: whether it is sealed (its key's latest row before the watermark).
    sealed: Vec<bool>,
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Array, AsArray, Int64Array};
    use arrow::datatypes::{DataType, Field, Int64Type, Schema};

    use super::*;
    use crate::testing::TwoInputHarness;

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int64, true),
            Field::new("ts", DataType::Int64, false),
            Field::new("v", DataType::Int64, false),
        ]))
    }

    fn rows(data: &[(Option<i64>, i64, i64)]) -> RecordBatch {
        RecordBatch::try_new(
            schema(),
            vec![
                Arc::new(Int64Array::from(data.iter().map(|r| r.0).collect::<Vec<_>>())),
                Arc::new(Int64Array::from(data.iter().map(|r| r.1).collect::<Vec<_>>())),
                Arc::new(Int64Array::from(data.iter().map(|r| r.2).collect::<Vec<_>>())),
            ],
        )
        .unwrap()
    }

    fn matched(batches: &[RecordBatch]) -> Vec<(i64, Option<i64>)> {
        let mut out = vec![];
        for b in batches {
            let ts = b.column_by_name("ts").unwrap().as_primitive::<Int64Type>();
            let v = b.column_by_name("v_right").unwrap().as_primitive::<Int64Type>();
            for i in 0..b.num_rows() {
                out.push((ts.value(i), v.is_valid(i).then(|| v.value(i))));
            }
        }
        out
    }

    #[test]
    fn superseded_right_rows_are_dropped_and_the_latest_kept() {
        let op = AsofJoinOperator::try_new(schema(), schema(), &["k"], &["k"], "ts", "ts", None).unwrap();
        let mut h = TwoInputHarness::new(op);
        h.process_right(rows(&[(Some(1), 10, 1), (Some(1), 20, 2), (Some(1), 30, 3), (Some(2), 5, 9)])).unwrap();
        h.watermark(25).unwrap();
        assert_eq!(h.operator().buffered_rows(), 3, "key 1 keeps 20 (latest before 25) and 30; key 2 keeps 5");
        h.process_left(rows(&[(Some(1), 27, 0), (Some(2), 1000, 0), (None, 26, 0)])).unwrap();
        h.watermark(2000).unwrap();
        assert_eq!(matched(&h.take_output()), vec![(26, None), (27, Some(2)), (1000, Some(9))]);
    }

    /// After a rescale the new instance's watermark is the lowest old one's, so right rows
    /// older than rows another old instance sealed still arrive on time: the later row wins
    /// wherever the sealed rows live, and survives sealing and another restore.
    #[test]
    fn rows_sealed_ahead_of_a_rescaled_watermark_stay_the_latest() {
        crate::state::on_each_backend(|backend| {
            let new = || {
                AsofJoinOperator::try_new(schema(), schema(), &["k"], &["k"], "ts", "ts", None)
                    .unwrap()
                    .with_state_backend(backend)
                    .unwrap()
            };
            // Old instance 0 sealed key 1's row at 90 (watermark 100); instance 1 is at 50.
            let mut ahead = TwoInputHarness::new(new());
            ahead.process_right(rows(&[(Some(1), 90, 90)])).unwrap();
            ahead.watermark(100).unwrap();
            let mut behind = TwoInputHarness::new(new());
            behind.watermark(50).unwrap();
            let old = [ahead.snapshot().unwrap(), behind.snapshot().unwrap()];
            let dirs: Vec<_> = old.iter().map(|s| s.restored_state().dir().to_path_buf()).collect();
            let rescale = crate::checkpoint::Rescale { from: 2, to: 1, partition: 0, snapshots: dirs.clone() };
            let mut op = new();
            op.restore_rescaled_state(&RestoredState::rescaled(1, &dirs[0], rescale)).unwrap();
            let mut h = TwoInputHarness::new(op);
            h.process_right(rows(&[(Some(1), 60, 60)])).unwrap();
            h.process_left(rows(&[(Some(1), 95, 0)])).unwrap();
            h.watermark(96).unwrap();
            // Sealing 60 must not replace 90; nor must a plain restore forget 90 is ahead.
            h.watermark(101).unwrap();
            let snapshot = h.snapshot().unwrap();
            let mut out = h.take_output();
            let mut r = TwoInputHarness::restore(new(), &snapshot).unwrap();
            r.process_right(rows(&[(Some(1), 70, 70)])).unwrap(); // late: behind 101
            r.process_left(rows(&[(Some(1), 120, 0)])).unwrap();
            r.watermark(130).unwrap();
            out.extend(r.take_output());
            assert_eq!(matched(&out), vec![(95, Some(90)), (120, Some(90))], "{backend:?}");
        });
    }

    #[test]
    fn late_rows_are_counted_and_dropped() {
        let op = AsofJoinOperator::try_new(schema(), schema(), &["k"], &["k"], "ts", "ts", Some(5)).unwrap();
        let mut h = TwoInputHarness::new(op);
        h.watermark(100).unwrap();
        h.process_left(rows(&[(Some(1), 99, 0)])).unwrap();
        h.process_right(rows(&[(Some(1), 50, 0)])).unwrap();
        assert_eq!(h.operator().late_rows(), 2);
        assert_eq!(h.operator().buffered_rows(), 0);
    }
}
