//! The table of a table join on the heap: the latest row per key, its columns kept in the
//! arriving batches.

use arrow::array::{Array, ArrayRef, RecordBatch};
use arrow::compute::interleave;
use arrow::datatypes::SchemaRef;

use super::{Lookup, TableStore};
use crate::checkpoint::{RestoredState, StateSnapshot};
use crate::operator::join_state::{EncodedKeys, JoinKeys, Side};
use crate::{Result, SabotError};

/// The latest row per key; columns stay in the arriving batches (segments) until enough of
/// their rows were replaced, then the live rows are compacted into one batch.
pub(super) struct LatestRows {
    schema: SchemaRef,
    segments: hashbrown::HashMap<u64, (RecordBatch, usize)>,
    next_segment: u64,
    index: hashbrown::HashMap<Box<[u8]>, (u64, u32)>,
    /// Rows held by the segments, replaced ones included.
    stored: usize,
}

impl LatestRows {
    pub(super) fn new(schema: SchemaRef) -> Self {
        LatestRows { schema, segments: Default::default(), next_segment: 0, index: Default::default(), stored: 0 }
    }

    fn segment(&self, id: u64) -> Result<&RecordBatch> {
        self.segments
            .get(&id)
            .map(|(b, _)| b)
            .ok_or_else(|| SabotError::Execution("a table join row points to dropped state".into()))
    }

    /// One row of `segment` is no longer current.
    fn release(&mut self, segment: u64) {
        if let Some((batch, live)) = self.segments.get_mut(&segment) {
            *live -= 1;
            if *live == 0 {
                self.stored -= batch.num_rows();
                self.segments.remove(&segment);
            }
        }
    }

    fn insert(&mut self, batch: RecordBatch, keys: &EncodedKeys) -> Result<()> {
        let segment = self.next_segment;
        self.next_segment += 1;
        let rows = batch.num_rows();
        self.segments.insert(segment, (batch, 0));
        self.stored += rows;
        for row in 0..rows {
            let Some(key) = keys.get(row) else { continue };
            let row = u32::try_from(row).map_err(|_| SabotError::Execution("table batch too large".into()))?;
            let previous = match self.index.get_mut(key) {
                Some(slot) => Some(std::mem::replace(slot, (segment, row))),
                None => {
                    self.index.insert(Box::from(key), (segment, row));
                    None
                }
            };
            if let Some((_, live)) = self.segments.get_mut(&segment) {
                *live += 1;
            }
            if let Some((old, _)) = previous {
                self.release(old);
            }
        }
        // A batch without a current row (all keys null) is not kept.
        if self.segments.get(&segment).is_some_and(|(_, live)| *live == 0) {
            self.segments.remove(&segment);
            self.stored -= rows;
        }
        Ok(())
    }

    /// The current row of every key, by segment and row, as one batch of `schema`.
    fn current_rows(&self) -> Result<RecordBatch> {
        let schema = &self.schema;
        let mut current: Vec<(u64, u32)> = self.index.values().copied().collect();
        current.sort_unstable();
        if current.is_empty() {
            return Ok(RecordBatch::new_empty(schema.clone()));
        }
        let mut sources = Sources::default();
        let picks = current
            .into_iter()
            .map(|(segment, row)| Ok((sources.of(self, segment)?, row as usize)))
            .collect::<Result<Vec<_>>>()?;
        let batches: Vec<&RecordBatch> = sources.batches.iter().collect();
        Ok(arrow::compute::interleave_record_batch(&batches, &picks)?)
    }

    /// Rewrites the current rows into one batch when most stored rows were replaced.
    fn compact_if_sparse(&mut self) -> Result<()> {
        let schema = &self.schema.clone();
        let live = self.index.len();
        if self.stored <= 2 * live + 1024 {
            return Ok(());
        }
        let ids: Vec<u64> = self.segments.keys().copied().collect();
        let position: hashbrown::HashMap<u64, usize> = ids.iter().enumerate().map(|(i, &id)| (id, i)).collect();
        let mut picks = Vec::with_capacity(live);
        for (at, slot) in self.index.values_mut().enumerate() {
            picks.push((position[&slot.0], slot.1 as usize));
            *slot = (self.next_segment, at as u32);
        }
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
        for c in 0..schema.fields().len() {
            let arrays: Vec<&dyn Array> = ids.iter().map(|id| self.segments[id].0.column(c).as_ref()).collect();
            columns.push(interleave(&arrays, &picks)?);
        }
        let options = arrow::record_batch::RecordBatchOptions::new().with_row_count(Some(live));
        let compacted = RecordBatch::try_new_with_options(schema.clone(), columns, &options)?;
        self.segments.clear();
        self.segments.insert(self.next_segment, (compacted, live));
        self.next_segment += 1;
        self.stored = live;
        Ok(())
    }
}

/// The segments that rows are picked from, each once, by segment id.
#[derive(Default)]
struct Sources {
    batches: Vec<RecordBatch>,
    index: hashbrown::HashMap<u64, usize>,
}

impl Sources {
    /// The position of `segment` of `table` among the sources (added if new).
    fn of(&mut self, table: &LatestRows, segment: u64) -> Result<usize> {
        if let Some(&at) = self.index.get(&segment) {
            return Ok(at);
        }
        self.batches.push(table.segment(segment)?.clone());
        self.index.insert(segment, self.batches.len() - 1);
        Ok(self.batches.len() - 1)
    }
}

impl TableStore for LatestRows {
    fn upsert(&mut self, batch: RecordBatch, keys: &EncodedKeys) -> Result<()> {
        self.insert(batch, keys)?;
        self.compact_if_sparse()
    }

    fn lookup(&mut self, keys: &EncodedKeys, rows: usize) -> Result<Lookup> {
        let mut sources = Sources::default();
        let mut found = Vec::with_capacity(rows);
        for row in 0..rows {
            let pick = match keys.get(row).and_then(|k| self.index.get(k).copied()) {
                Some((segment, r)) => Some((sources.of(self, segment)?, r as usize)),
                None => None,
            };
            found.push(pick);
        }
        Ok(Lookup { sources: sources.batches, found })
    }

    fn rows(&self) -> usize {
        self.index.len()
    }

    /// The current row of every key, as one Arrow IPC batch.
    fn snapshot(&mut self, snapshot: &mut StateSnapshot) -> Result<()> {
        let rows = self.current_rows()?;
        snapshot.put_batches("table", &self.schema, &[rows])
    }

    fn retain_keys(&mut self, keep: &(dyn Fn(&[u8]) -> bool + Sync)) -> Result<usize> {
        let mut released = vec![];
        self.index.retain(|key, (segment, _)| {
            let stays = keep(key);
            if !stays {
                released.push(*segment);
            }
            stays
        });
        let dropped = released.len();
        released.into_iter().for_each(|segment| self.release(segment));
        Ok(dropped)
    }

    fn merge_snapshot(
        &mut self,
        snapshot: &RestoredState,
        keys: &JoinKeys,
        keep: &dyn Fn(&[u8]) -> bool,
    ) -> Result<()> {
        let batches = snapshot.batches("table")?;
        if batches.is_empty() {
            return crate::operator::saved_by_another_backend(snapshot, "table_join", "stored_table", "rocksdb");
        }
        for batch in batches {
            let batch = keys.filter(&batch, Side::Right, keep)?;
            let encoded = keys.encode(&batch, Side::Right)?;
            self.insert(batch, &encoded)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{AsArray, Int64Array};
    use arrow::datatypes::{DataType, Field, Int64Type, Schema};

    use super::*;

    #[test]
    fn compaction_keeps_the_latest_rows_only() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int64, true),
            Field::new("v", DataType::Int64, false),
        ]));
        let keys = JoinKeys::try_new(&schema, &schema, &["k"], &["k"]).unwrap();
        let mut table = LatestRows::new(schema.clone());
        for round in 0..100 {
            let k = Int64Array::from_iter_values(0..50);
            let v = Int64Array::from_iter_values((0..50).map(|k| k * 1000 + round));
            let batch = RecordBatch::try_new(schema.clone(), vec![Arc::new(k), Arc::new(v)]).unwrap();
            let encoded = keys.encode(&batch, Side::Right).unwrap();
            table.upsert(batch, &encoded).unwrap();
        }
        assert_eq!(table.rows(), 50);
        assert!(table.stored <= 2 * 50 + 1024 + 50, "compacted: {}", table.stored);
        let probe = RecordBatch::try_new(
            schema.clone(),
            vec![Arc::new(Int64Array::from(vec![Some(7), None, Some(99)])), Arc::new(Int64Array::from(vec![0, 0, 0]))],
        )
        .unwrap();
        let Lookup { sources, found } = table.lookup(&keys.encode(&probe, Side::Left).unwrap(), 3).unwrap();
        assert_eq!(found[1..], [None, None], "the null key and unknown key 99 have no row");
        let (source, row) = found[0].expect("key 7");
        assert_eq!(sources[source].column(1).as_primitive::<Int64Type>().value(row), 7099);
    }
}
