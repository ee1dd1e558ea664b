//! A join buffer on the heap: rows stay in the arriving batches (columnar), grouped by
//! event-time bucket, with an index of each bucket's rows by join key.

use std::collections::BTreeMap;

use arrow::array::{RecordBatch, UInt32Array};
use arrow::datatypes::SchemaRef;

use super::{JoinBuffer, KeepKeys, KeyedRows, Matches, Probe};
use crate::checkpoint::{RestoredState, StateSnapshot};
use crate::operator::join_state::{EncodedKeys, JoinKeys, Side, times_of};
use crate::{Result, SabotError};

/// A row buffered in a [`TimeBuckets`] store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct RowRef {
    pub(super) bucket: i64,
    pub(super) batch: u32,
    pub(super) row: u32,
}

/// The rows of one bucket: batches in arrival order and an index of their rows by key.
#[derive(Default)]
pub(super) struct Bucket {
    pub(super) batches: Vec<RecordBatch>,
    pub(super) times: Vec<Vec<i64>>,
    /// Key → `(batch, row)` of every row with that key, in arrival order.
    pub(super) index: hashbrown::HashMap<Box<[u8]>, Vec<(u32, u32)>>,
    pub(super) max_time: i64,
    pub(super) rows: usize,
}

impl Bucket {
    /// Drops the rows whose keys `keep` rejects, compacting the batches that held some (so
    /// snapshots no longer carry them); returns how many.
    fn retain_keys(&mut self, keep: &dyn Fn(&[u8]) -> bool) -> Result<usize> {
        if self.index.keys().all(|key| keep(key)) {
            return Ok(0);
        }
        let mut kept: Vec<Vec<bool>> = self.batches.iter().map(|b| vec![false; b.num_rows()]).collect();
        let mut dropped = 0;
        self.index.retain(|key, rows| {
            let stays = keep(key);
            if stays {
                rows.iter().for_each(|&(batch, row)| kept[batch as usize][row as usize] = true);
            } else {
                dropped += rows.len();
            }
            stays
        });
        // Old (batch, row) → new (batch, row): kept rows keep their order.
        let mut moved: Vec<Vec<(u32, u32)>> = Vec::with_capacity(kept.len());
        let (mut batches, mut times) = (vec![], vec![]);
        for ((batch, batch_times), mask) in self.batches.iter().zip(&self.times).zip(&kept) {
            let batch_no = batches.len() as u32;
            let mut next = 0u32;
            moved.push(
                mask.iter()
                    .map(|&k| {
                        let at = (batch_no, next);
                        next += u32::from(k);
                        at
                    })
                    .collect(),
            );
            if next == 0 {
                continue;
            }
            if next as usize == batch.num_rows() {
                batches.push(batch.clone());
                times.push(batch_times.clone());
            } else {
                let filter = arrow::array::BooleanArray::from(mask.clone());
                batches.push(arrow::compute::filter_record_batch(batch, &filter)?);
                times.push(batch_times.iter().zip(mask).filter(|(_, k)| **k).map(|(t, _)| *t).collect());
            }
        }
        for rows in self.index.values_mut() {
            rows.iter_mut().for_each(|r| *r = moved[r.0 as usize][r.1 as usize]);
        }
        self.max_time = times.iter().flatten().copied().max().unwrap_or(i64::MIN);
        self.batches = batches;
        self.times = times;
        self.rows -= dropped;
        Ok(dropped)
    }
}

/// Buffered rows of one join input, by event time: rows are kept in buckets of `width` ms
/// (a bucket holds whole batches of its rows, columnar) with an index by key. Rows leave in
/// whole buckets once the watermark makes every row of the bucket useless, which bounds
/// the state by event time.
pub(crate) struct TimeBuckets {
    width: i64,
    side: Side,
    schema: SchemaRef,
    time_column: String,
    buckets: BTreeMap<i64, Bucket>,
    rows: usize,
}

/// Collects picked rows of buffered batches as `(source, row)`, each batch a source once.
#[derive(Default)]
pub(super) struct Gather {
    pub(super) sources: Vec<RecordBatch>,
    seen: hashbrown::HashMap<(i64, u32), usize>,
}

impl Gather {
    /// Collects after `sources`, the caller's own.
    pub(super) fn after(sources: Vec<RecordBatch>) -> Self {
        Gather { sources, seen: hashbrown::HashMap::new() }
    }

    /// The `(source, row)` of `r`, a row of `store`.
    pub(super) fn pick(&mut self, store: &TimeBuckets, r: RowRef) -> Result<(usize, usize)> {
        let source = match self.seen.get(&(r.bucket, r.batch)) {
            Some(&i) => i,
            None => {
                let batch = store
                    .buckets
                    .get(&r.bucket)
                    .and_then(|b| b.batches.get(r.batch as usize))
                    .ok_or_else(|| SabotError::Execution("a join row points to dropped state".into()))?;
                self.sources.push(batch.clone());
                self.seen.insert((r.bucket, r.batch), self.sources.len() - 1);
                self.sources.len() - 1
            }
        };
        Ok((source, r.row as usize))
    }
}

impl TimeBuckets {
    /// An empty buffer for rows of input `side` (of `schema`, event times in `time_column`)
    /// in buckets of `width` ms.
    pub(crate) fn new(width: i64, side: Side, schema: SchemaRef, time_column: &str) -> Self {
        TimeBuckets {
            width: width.max(1),
            side,
            schema,
            time_column: time_column.to_string(),
            buckets: BTreeMap::new(),
            rows: 0,
        }
    }

    /// The start of the bucket holding `time`.
    pub(super) fn bucket_of(&self, time: i64) -> i64 {
        time.div_euclid(self.width).saturating_mul(self.width)
    }

    /// The starts of the buckets in `[from, to]` (`from <= to`), in order.
    pub(super) fn starts_between(&self, from: i64, to: i64) -> impl Iterator<Item = i64> + '_ {
        self.buckets.range(from..=to).map(|(s, _)| *s)
    }

    /// Every bucket, in order.
    pub(super) fn buckets(&self) -> impl Iterator<Item = (i64, &Bucket)> {
        self.buckets.iter().map(|(s, b)| (*s, b))
    }

    /// Calls `f` with every row of `key` in the bucket at `start` whose event time is in
    /// `[low, high]`, in arrival order.
    pub(super) fn probe_bucket(&self, start: i64, key: &[u8], low: i64, high: i64, mut f: impl FnMut(RowRef)) {
        let Some(bucket) = self.buckets.get(&start) else { return };
        let Some(list) = bucket.index.get(key) else { return };
        for &(batch, row) in list {
            let time = bucket.times[batch as usize][row as usize];
            if time >= low && time <= high {
                f(RowRef { bucket: start, batch, row });
            }
        }
    }

    /// Adds the rows of every bucket starting in `[from, to)` whose key `wanted` accepts to
    /// `out`, after the sources already there.
    pub(super) fn add_rows_in(
        &self,
        from: i64,
        to: i64,
        wanted: &dyn Fn(&[u8]) -> bool,
        out: &mut KeyedRows,
    ) -> Result<()> {
        for bucket in self.buckets.range(from..to.max(from)).map(|(_, b)| b) {
            let first = out.sources.len();
            out.sources.extend(bucket.batches.iter().cloned());
            for (key, rows) in &bucket.index {
                if !wanted(key) {
                    continue;
                }
                let list = out.rows_of(key);
                list.extend(rows.iter().map(|&(batch, row)| (first + batch as usize, row as usize)));
            }
        }
        Ok(())
    }

    /// Buffers again the batches [`JoinBuffer::snapshot`] saved.
    fn extend(&mut self, batches: &[RecordBatch], keys: &JoinKeys) -> Result<()> {
        for batch in batches {
            if batch.num_rows() == 0 {
                continue;
            }
            let times = times_of(batch, &self.time_column)?;
            let encoded = keys.encode(batch, self.side)?;
            let all: Vec<u32> = (0..batch.num_rows() as u32).collect();
            self.insert(batch, &times, &encoded, &all)?;
        }
        Ok(())
    }
}

impl JoinBuffer for TimeBuckets {
    fn insert(&mut self, batch: &RecordBatch, times: &[i64], keys: &EncodedKeys, selected: &[u32]) -> Result<()> {
        if selected.is_empty() {
            return Ok(());
        }
        let mut per_bucket: BTreeMap<i64, Vec<u32>> = BTreeMap::new();
        for &row in selected {
            per_bucket.entry(self.bucket_of(times[row as usize])).or_default().push(row);
        }
        for (start, rows) in per_bucket {
            let part = if rows.len() == batch.num_rows() {
                batch.clone()
            } else {
                arrow::compute::take_record_batch(batch, &UInt32Array::from(rows.clone()))?
            };
            let bucket =
                self.buckets.entry(start).or_insert_with(|| Bucket { max_time: i64::MIN, ..Bucket::default() });
            let batch_no = u32::try_from(bucket.batches.len())
                .map_err(|_| SabotError::Execution("too many buffered batches in one join bucket".into()))?;
            let mut part_times = Vec::with_capacity(rows.len());
            for (position, &row) in rows.iter().enumerate() {
                let row = row as usize;
                let key =
                    keys.get(row).ok_or_else(|| SabotError::Execution("a buffered join row has a null key".into()))?;
                let time = times[row];
                part_times.push(time);
                bucket.max_time = bucket.max_time.max(time);
                let entry = (batch_no, position as u32);
                match bucket.index.get_mut(key) {
                    Some(list) => list.push(entry),
                    None => {
                        bucket.index.insert(Box::from(key), vec![entry]);
                    }
                }
            }
            bucket.rows += rows.len();
            self.rows += rows.len();
            bucket.batches.push(part);
            bucket.times.push(part_times);
        }
        Ok(())
    }

    fn probe(&mut self, probes: &[Probe<'_>]) -> Result<Matches> {
        let mut refs = vec![];
        let mut probe_rows = vec![];
        for p in probes {
            if p.low > p.high {
                continue;
            }
            for (&start, _) in self.buckets.range(self.bucket_of(p.low)..=p.high) {
                self.probe_bucket(start, p.key, p.low, p.high, |r| {
                    probe_rows.push(p.row);
                    refs.push(r);
                });
            }
        }
        let mut gather = Gather::default();
        let rows = refs.into_iter().map(|r| gather.pick(self, r).map(Some)).collect::<Result<Vec<_>>>()?;
        Ok(Matches { probe_rows, sources: gather.sources, rows })
    }

    fn rows_in(&mut self, from: i64, to: i64, wanted: &dyn Fn(&[u8]) -> bool) -> Result<KeyedRows> {
        let mut out = KeyedRows::default();
        self.add_rows_in(from, to, wanted, &mut out)?;
        Ok(out)
    }

    fn starts(&self) -> Vec<i64> {
        self.buckets.keys().copied().collect()
    }

    fn expire(&mut self, dead: &dyn Fn(i64, i64) -> bool) -> Result<()> {
        let mut removed = 0;
        self.buckets.retain(|&start, b| {
            let drop = dead(start, b.max_time);
            if drop {
                removed += b.rows;
            }
            !drop
        });
        self.rows -= removed;
        Ok(())
    }

    fn clear(&mut self) -> Result<()> {
        self.buckets.clear();
        self.rows = 0;
        Ok(())
    }

    fn retain_keys(&mut self, keep: &(dyn Fn(&[u8]) -> bool + Sync)) -> Result<usize> {
        let mut dropped = 0;
        for bucket in self.buckets.values_mut() {
            dropped += bucket.retain_keys(keep)?;
        }
        self.buckets.retain(|_, b| b.rows > 0);
        self.rows -= dropped;
        Ok(dropped)
    }

    fn rows(&self) -> usize {
        self.rows
    }

    /// Every buffered batch, by bucket then arrival (Arrow IPC); each holds rows of one
    /// bucket only, so inserting them again in this order rebuilds the same buckets and index.
    fn snapshot(&mut self, snapshot: &mut StateSnapshot, name: &str) -> Result<()> {
        let batches: Vec<RecordBatch> = self.buckets.values().flat_map(|b| b.batches.iter().cloned()).collect();
        snapshot.put_batches(name, &self.schema, &batches)
    }

    fn merge_snapshot(
        &mut self,
        restored: &RestoredState,
        name: &str,
        keys: &JoinKeys,
        keep: KeepKeys<'_>,
    ) -> Result<()> {
        if !restored.dir().join(name).exists() {
            let stored = format!("{name}_stored");
            return crate::operator::saved_by_another_backend(restored, "join", &stored, "rocksdb");
        }
        let batches = restored.batches(name)?;
        let batches = match keep {
            Some(keep) => batches.iter().map(|b| keys.filter(b, self.side, keep)).collect::<Result<Vec<_>>>()?,
            None => batches,
        };
        self.extend(&batches, keys)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    #[test]
    fn buckets_find_rows_by_key_and_time_and_expire_whole_buckets() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Utf8, false),
            Field::new("ts", DataType::Int64, false),
        ]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![Arc::new(StringArray::from(vec!["a", "b", "a", "a"])), Arc::new(Int64Array::from(vec![5, 6, 15, 25]))],
        )
        .unwrap();
        let keys = JoinKeys::try_new(&schema, &schema, &["k"], &["k"]).unwrap();
        let encoded = keys.encode(&batch, Side::Left).unwrap();
        let mut store = TimeBuckets::new(10, Side::Left, schema, "ts");
        store.insert(&batch, &[5, 6, 15, 25], &encoded, &[0, 1, 2, 3]).unwrap();
        assert_eq!(store.rows(), 4);
        let key = encoded.get(0).unwrap();
        let times = |m: &Matches| -> Vec<i64> {
            m.rows
                .iter()
                .map(|r| {
                    let (s, row) = r.unwrap();
                    m.sources[s].column(1).as_any().downcast_ref::<Int64Array>().unwrap().value(row)
                })
                .collect()
        };
        let found = store.probe(&[Probe { row: 0, key, low: 4, high: 20 }]).unwrap();
        assert_eq!(times(&found), vec![5, 15]);
        store.expire(&|_, max| max < 10).unwrap();
        assert_eq!(store.rows(), 2, "the bucket [0, 10) is gone");
        let found = store.probe(&[Probe { row: 0, key, low: i64::MIN, high: i64::MAX }]).unwrap();
        assert_eq!(times(&found), vec![15, 25]);
    }
}
