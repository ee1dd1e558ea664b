//! The right side of an as-of join on the heap: rows indexed by key and time, columns kept
//! in the arriving batches.

use std::collections::{BTreeMap, BTreeSet};

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;

use crate::operator::join_state::EncodedKeys;
use crate::{Result, SabotError};

/// The rows of one key, by `(time, arrival)`, each pointing to `(segment, row)`.
struct KeyRows {
    key: Box<[u8]>,
    rows: BTreeMap<(i64, u64), (u64, u32)>,
}

/// Picks rows of an index's segments as `(source, row)`, each segment a source once.
#[derive(Default)]
pub(super) struct Picker<'a> {
    pub(super) sources: Vec<&'a RecordBatch>,
    source_of: hashbrown::HashMap<u64, usize>,
}

impl<'a> Picker<'a> {
    /// The `(source, row)` of `row` of `segment` of `index`.
    pub(super) fn pick(&mut self, index: &'a RightIndex, segment: u64, row: u32) -> Result<(usize, usize)> {
        let source = match self.source_of.get(&segment) {
            Some(&s) => s,
            None => {
                self.sources.push(index.segment(segment)?);
                self.source_of.insert(segment, self.sources.len() - 1);
                self.sources.len() - 1
            }
        };
        Ok((source, row as usize))
    }
}

/// The latest row of each of some keys, with its time and key.
pub(super) struct LatestRows {
    pub(super) rows: RecordBatch,
    pub(super) times: Vec<i64>,
    pub(super) keys: Vec<Box<[u8]>>,
}

/// The right side's rows, indexed by key and time. The columns stay in the arriving batches
/// (segments), which are freed once none of their rows is kept.
#[derive(Default)]
pub(super) struct RightIndex {
    segments: hashbrown::HashMap<u64, (RecordBatch, usize)>,
    next_segment: u64,
    next_seq: u64,
    ids: hashbrown::HashMap<Box<[u8]>, u32>,
    keys: Vec<Option<KeyRows>>,
    free: Vec<u32>,
    /// `(time, arrival, key)` of the rows at or after the watermark.
    unsealed: BTreeSet<(i64, u64, u32)>,
    /// The latest row before the watermark, per key.
    sealed: BTreeSet<(i64, u64, u32)>,
    pub(super) rows: usize,
}

impl RightIndex {
    pub(super) fn insert(
        &mut self,
        batch: &RecordBatch,
        times: &[i64],
        keys: &EncodedKeys,
        selected: &[u32],
    ) -> Result<()> {
        if selected.is_empty() {
            return Ok(());
        }
        let part = if selected.len() == batch.num_rows() {
            batch.clone()
        } else {
            arrow::compute::take_record_batch(batch, &arrow::array::UInt32Array::from(selected.to_vec()))?
        };
        let segment = self.next_segment;
        self.next_segment += 1;
        for (position, &row) in selected.iter().enumerate() {
            let key =
                keys.get(row as usize).ok_or_else(|| SabotError::Execution("a right row has a null key".into()))?;
            let id = match self.ids.get(key) {
                Some(&id) => id,
                None => {
                    let slot = KeyRows { key: Box::from(key), rows: BTreeMap::new() };
                    let id = match self.free.pop() {
                        Some(id) => {
                            self.keys[id as usize] = Some(slot);
                            id
                        }
                        None => {
                            self.keys.push(Some(slot));
                            u32::try_from(self.keys.len() - 1)
                                .map_err(|_| SabotError::Execution("too many as-of join keys".into()))?
                        }
                    };
                    self.ids.insert(Box::from(key), id);
                    id
                }
            };
            let (time, seq) = (times[row as usize], self.next_seq);
            self.next_seq += 1;
            if let Some(slot) = self.keys[id as usize].as_mut() {
                slot.rows.insert((time, seq), (segment, position as u32));
            }
            self.unsealed.insert((time, seq, id));
        }
        self.rows += selected.len();
        self.segments.insert(segment, (part, selected.len()));
        Ok(())
    }

    /// Every kept row in arrival order, gathered into one batch of `schema`, with whether
    /// each is sealed: inserting them again into an empty index (see [`RightIndex::restore`])
    /// gives the same matches (arrival numbers are only compared with each other).
    pub(super) fn snapshot(&self, schema: &SchemaRef) -> Result<(RecordBatch, Vec<bool>)> {
        let mut rows: Vec<(u64, i64, u32, (u64, u32))> = Vec::with_capacity(self.rows);
        for (id, slot) in self.keys.iter().enumerate() {
            let Some(slot) = slot else { continue };
            rows.extend(slot.rows.iter().map(|(&(time, seq), &at)| (seq, time, id as u32, at)));
        }
        rows.sort_unstable_by_key(|r| r.0);
        if rows.is_empty() {
            return Ok((RecordBatch::new_empty(schema.clone()), vec![]));
        }
        let mut picker = Picker::default();
        let mut picks = Vec::with_capacity(rows.len());
        let mut sealed = Vec::with_capacity(rows.len());
        for &(seq, time, id, (segment, row)) in &rows {
            picks.push(picker.pick(self, segment, row)?);
            sealed.push(self.sealed.contains(&(time, seq, id)));
        }
        Ok((arrow::compute::interleave_record_batch(&picker.sources, &picks)?, sealed))
    }

    /// Loads the rows [`RightIndex::snapshot`] gave (with their `times`, `keys` and sealed
    /// flags) into an empty index.
    pub(super) fn restore(
        &mut self,
        batch: &RecordBatch,
        times: &[i64],
        keys: &EncodedKeys,
        sealed: &[bool],
    ) -> Result<()> {
        if sealed.len() != batch.num_rows() {
            return Err(SabotError::State {
                state: "asof_join/right".into(),
                message: format!("{} saved rows but {} sealed flags", batch.num_rows(), sealed.len()),
            });
        }
        let first_seq = self.next_seq;
        let all: Vec<u32> = (0..batch.num_rows() as u32).collect();
        self.insert(batch, times, keys, &all)?;
        for (row, _) in sealed.iter().enumerate().filter(|(_, s)| **s) {
            let key = keys.get(row).ok_or_else(|| SabotError::Execution("a right row has a null key".into()))?;
            let id = self.ids[key];
            let entry = (times[row], first_seq + row as u64, id);
            self.unsealed.remove(&entry);
            self.sealed.insert(entry);
        }
        Ok(())
    }

    /// Removes every row before `watermark` and returns the latest row of each key among
    /// them (ordered by time): what a store of sealed rows keeps. For an index that never
    /// seals rows itself.
    pub(super) fn take_before(&mut self, watermark: i64) -> Result<Option<LatestRows>> {
        let mut taken = vec![];
        let mut latest: hashbrown::HashMap<u32, (i64, u64)> = hashbrown::HashMap::new();
        while let Some(&(time, seq, id)) = self.unsealed.first() {
            if time >= watermark {
                break;
            }
            self.unsealed.pop_first();
            taken.push((time, seq, id));
            // In `(time, arrival)` order: the last one seen is the latest.
            latest.insert(id, (time, seq));
        }
        if taken.is_empty() {
            return Ok(None);
        }
        let mut chosen: Vec<(i64, u64, u32)> = latest.into_iter().map(|(id, (time, seq))| (time, seq, id)).collect();
        chosen.sort_unstable();
        let mut picker = Picker::default();
        let (mut picks, mut times, mut keys) = (vec![], vec![], vec![]);
        for &(time, seq, id) in &chosen {
            let slot = self.keys[id as usize]
                .as_ref()
                .ok_or_else(|| SabotError::Execution("an as-of join row points to a dropped key".into()))?;
            let &(segment, row) = slot
                .rows
                .get(&(time, seq))
                .ok_or_else(|| SabotError::Execution("an as-of join row points to dropped state".into()))?;
            picks.push(picker.pick(self, segment, row)?);
            times.push(time);
            keys.push(slot.key.clone());
        }
        let rows = arrow::compute::interleave_record_batch(&picker.sources, &picks)?;
        for (time, seq, id) in taken {
            self.remove(id, time, seq);
        }
        Ok(Some(LatestRows { rows, times, keys }))
    }

    /// The latest row of `key` at or before `time`, within `tolerance`.
    /// Returns its `(segment, row)` and its time.
    pub(super) fn latest(&self, key: &[u8], time: i64, tolerance: Option<i64>) -> Option<((u64, u32), i64)> {
        let id = *self.ids.get(key)?;
        let slot = self.keys[id as usize].as_ref()?;
        let (&(found, _), &at) = slot.rows.range(..=(time, u64::MAX)).next_back()?;
        tolerance.is_none_or(|tol| time.saturating_sub(found) <= tol).then_some((at, found))
    }

    pub(super) fn segment(&self, id: u64) -> Result<&RecordBatch> {
        self.segments
            .get(&id)
            .map(|(b, _)| b)
            .ok_or_else(|| SabotError::Execution("an as-of join row points to dropped state".into()))
    }

    /// Forgets row `(time, seq)` of key `id`.
    fn remove(&mut self, id: u32, time: i64, seq: u64) {
        let Some(slot) = self.keys[id as usize].as_mut() else { return };
        let Some((segment, _)) = slot.rows.remove(&(time, seq)) else { return };
        self.rows -= 1;
        if slot.rows.is_empty() {
            self.ids.remove(&slot.key);
            self.keys[id as usize] = None;
            self.free.push(id);
        }
        if let Some((_, live)) = self.segments.get_mut(&segment) {
            *live -= 1;
            if *live == 0 {
                self.segments.remove(&segment);
            }
        }
    }

    /// The watermark reached `watermark` and every left row before it was emitted: future
    /// left rows are at or after it. Per key, only the latest row before the watermark can
    /// still match (if within `tolerance` of it), plus the rows after it.
    pub(super) fn seal(&mut self, watermark: i64, tolerance: Option<i64>) {
        while let Some(&(time, seq, id)) = self.unsealed.first() {
            if time >= watermark {
                break;
            }
            self.unsealed.pop_first();
            // Every earlier row of the key is sealed already, and only the latest is kept.
            let previous = self.keys[id as usize]
                .as_ref()
                .and_then(|slot| slot.rows.first_key_value().map(|(&k, _)| k))
                .filter(|&k| k < (time, seq));
            if let Some((old_time, old_seq)) = previous {
                self.sealed.remove(&(old_time, old_seq, id));
                self.remove(id, old_time, old_seq);
            }
            self.sealed.insert((time, seq, id));
        }
        if let Some(tolerance) = tolerance {
            let oldest_useful = watermark.saturating_sub(tolerance);
            while let Some(&(time, seq, id)) = self.sealed.first() {
                if time >= oldest_useful {
                    break;
                }
                self.sealed.pop_first();
                self.remove(id, time, seq);
            }
        }
    }
}
