//! Panes in the keyed state backend (RocksDB): state larger than memory. Each group of each
//! pane is one entry keyed by the pane's start then the group's key, so that a pane is one
//! range of keys: a firing window reads its panes by prefix and an expired pane is deleted by
//! prefix. The value is the group's aggregate states in Arrow's row format.
//!
//! Rows are first aggregated in a bounded in-memory buffer per pane (as Flink's mini-batch
//! aggregation and RisingWave's state cache do). When the buffer holds too many groups, and
//! before a window fires or a checkpoint is taken, its groups are merged with their stored
//! states, read through the store's write-back cache, and written back: one read and one
//! write per group and flush, not per row.

use std::collections::{BTreeMap, BTreeSet};

use arrow::array::{RecordBatch, RecordBatchOptions};
use arrow::datatypes::SchemaRef;
use arrow::row::{RowConverter, SortField};

use super::panes::{PaneAggregation, PaneStore};
use crate::checkpoint::{RestoredState, StateSnapshot};
use crate::operator::{AggregateOperator, Message, Operator, Output, TIME_PREFIX, decode_rows, time_prefix};
use crate::state::{KeyedStateStore, SnapshotSource, StateBackend, ValueState, ValueStateDescriptor};
use crate::{Result, SabotError};

/// Groups the in-memory buffer holds, over all panes, before it is written to the store.
pub(super) const DEFAULT_BUFFERED_GROUPS: usize = 100_000;

/// The group key of a stored key.
fn group_key(stored: &[u8]) -> &[u8] {
    stored.get(TIME_PREFIX..).unwrap_or_default()
}

/// Panes in the keyed state backend.
pub(super) struct StoredPanes {
    aggregation: PaneAggregation,
    /// The store's operator id (the prefix of its column families).
    operator: String,
    store: KeyedStateStore,
    /// Pane start and group key → the group's states, row-encoded.
    groups: ValueState<Vec<u8>>,
    /// Panes with groups in the store.
    starts: BTreeSet<i64>,
    /// Groups aggregated since their pane was last written to the store.
    buffer: BTreeMap<i64, AggregateOperator>,
    /// Most groups the buffer holds before it is written.
    buffer_limit: usize,
    /// The layout of a pane's saved groups (keys, then each aggregate's state columns), as
    /// [`AggregateOperator::snapshot_batch`] gives it.
    layout: SchemaRef,
    /// Encodes the key columns (absent without keys: every group has the empty key).
    keys: Option<RowConverter>,
    /// Encodes the state columns.
    states: RowConverter,
    /// The partial states of the panes the last firing window read (sliding windows): the
    /// next window shares all but one of them. Dropped when a pane is written or dropped.
    read_panes: BTreeMap<i64, Vec<RecordBatch>>,
}

/// What a snapshot records besides the backend's checkpoint.
#[derive(serde::Serialize, serde::Deserialize)]
struct StoredLayout {
    /// The operator id the column families in the checkpoint are named after.
    operator: String,
    /// The starts of the panes holding groups.
    starts: Vec<i64>,
}

impl StoredPanes {
    /// Opens an empty pane store on `backend`.
    pub(super) fn open(aggregation: PaneAggregation, backend: &StateBackend) -> Result<Self> {
        let mut store = KeyedStateStore::open_transient(backend, "window_aggregate")?;
        let operator = store.operator().to_string();
        let layout = aggregation.new_pane()?.snapshot_batch(&operator)?.schema();
        let num_keys = aggregation.keys.len();
        let sort_fields = |range: std::ops::Range<usize>| -> Vec<SortField> {
            layout.fields()[range].iter().map(|f| SortField::new(f.data_type().clone())).collect()
        };
        let (key_fields, state_fields) = (sort_fields(0..num_keys), sort_fields(num_keys..layout.fields().len()));
        for field in layout.fields().iter() {
            if !RowConverter::supports_fields(&[SortField::new(field.data_type().clone())]) {
                return Err(SabotError::plan(format!(
                    "window state column {} of type {} cannot be kept in the {} state backend",
                    field.name(),
                    field.data_type(),
                    store.backend_name()
                )));
            }
        }
        let keys = (num_keys > 0).then(|| RowConverter::new(key_fields)).transpose()?;
        let states = RowConverter::new(state_fields)?;
        let groups = store.value_state(&ValueStateDescriptor::<Vec<u8>>::new("groups"))?;
        Ok(StoredPanes {
            aggregation,
            operator,
            store,
            groups,
            starts: BTreeSet::new(),
            buffer: BTreeMap::new(),
            buffer_limit: DEFAULT_BUFFERED_GROUPS,
            layout,
            keys,
            states,
            read_panes: BTreeMap::new(),
        })
    }

    /// Groups in the snapshot layout from their encoded keys and states.
    fn decode(&self, keys: &[&[u8]], states: &[&[u8]]) -> Result<RecordBatch> {
        let fields = self.layout.fields();
        let num_keys = self.aggregation.keys.len();
        let mut columns = match &self.keys {
            Some(converter) => decode_rows(converter, keys.iter().copied(), &fields[..num_keys])?,
            None => vec![],
        };
        columns.extend(decode_rows(&self.states, states.iter().copied(), &fields[num_keys..])?);
        let options = RecordBatchOptions::new().with_row_count(Some(states.len()));
        Ok(RecordBatch::try_new_with_options(self.layout.clone(), columns, &options)?)
    }

    /// Writes the groups of `groups` (in the snapshot layout) into the pane at `start`.
    fn write(&mut self, start: i64, groups: &RecordBatch) -> Result<()> {
        let num_keys = self.aggregation.keys.len();
        let keys = match &self.keys {
            Some(converter) => Some(converter.convert_columns(&groups.columns()[..num_keys])?),
            None => None,
        };
        let states = self.states.convert_columns(&groups.columns()[num_keys..])?;
        let mut stored = time_prefix(start).to_vec();
        for (row, state) in states.iter().enumerate() {
            stored.truncate(TIME_PREFIX);
            if let Some(keys) = &keys {
                stored.extend_from_slice(keys.row(row).data());
            }
            self.groups.update_for(&mut self.store, &stored, state.data().to_vec())?;
        }
        self.starts.insert(start);
        self.read_panes.remove(&start);
        Ok(())
    }

    /// Writes the buffered groups of the pane at `start` to the store, merged with the
    /// states stored for them.
    fn flush(&mut self, start: i64) -> Result<()> {
        let Some(mut buffered) = self.buffer.remove(&start) else { return Ok(()) };
        let groups = buffered.snapshot_batch(&self.operator)?;
        let keys = match &self.keys {
            Some(converter) => Some(converter.convert_columns(&groups.columns()[..self.aggregation.keys.len()])?),
            None => None,
        };
        let mut stored = time_prefix(start).to_vec();
        let (mut found_keys, mut found_states) = (vec![], vec![]);
        if self.starts.contains(&start) {
            let stored_keys: Vec<Vec<u8>> = (0..groups.num_rows())
                .map(|row| {
                    let key = keys.as_ref().map_or(&[][..], |keys| keys.row(row).data());
                    [&stored[..], key].concat()
                })
                .collect();
            self.groups.prefetch_for(&mut self.store, stored_keys.iter().map(Vec::as_slice))?;
            for row in 0..groups.num_rows() {
                let key = keys.as_ref().map_or(&[][..], |keys| keys.row(row).data());
                stored.truncate(TIME_PREFIX);
                stored.extend_from_slice(key);
                if let Some(state) = self.groups.value_for(&mut self.store, &stored)? {
                    found_keys.push(key);
                    found_states.push(state);
                }
            }
        }
        if found_states.is_empty() {
            return self.write(start, &groups);
        }
        let states: Vec<&[u8]> = found_states.iter().map(Vec::as_slice).collect();
        let mut merged = self.aggregation.new_pane()?;
        merged.restore_batch(&self.decode(&found_keys, &states)?, &self.operator)?;
        merged.merge_saved_batch(&groups, &self.operator)?;
        let merged = merged.snapshot_batch(&self.operator)?;
        self.write(start, &merged)
    }

    fn flush_all(&mut self) -> Result<()> {
        let starts: Vec<i64> = self.buffer.keys().copied().collect();
        starts.into_iter().try_for_each(|start| self.flush(start))
    }

    /// The groups of the pane at `start`, in the snapshot layout (`None` if it has none).
    fn read(&mut self, start: i64) -> Result<Option<RecordBatch>> {
        let entries = self.groups.entries_with_prefix(&mut self.store, &time_prefix(start))?;
        if entries.is_empty() {
            return Ok(None);
        }
        let keys: Vec<&[u8]> = entries.iter().map(|(k, _)| group_key(k)).collect();
        let states: Vec<&[u8]> = entries.iter().map(|(_, s)| s.as_slice()).collect();
        self.decode(&keys, &states).map(Some)
    }

    /// The result batches of a pane aggregation holding the groups of `saved`.
    fn aggregate_saved(&self, saved: &RecordBatch) -> Result<Vec<RecordBatch>> {
        let mut pane = self.aggregation.new_pane()?;
        pane.restore_batch(saved, &self.operator)?;
        let mut out = Output::default();
        pane.on_close(&mut out)?;
        let mut batches = vec![];
        while let Some(Message::Batch(b)) = out.pop() {
            batches.push(b);
        }
        Ok(batches)
    }

    /// `groups` (in the snapshot layout) in the order of their encoded keys.
    fn sorted_by_key(&self, groups: RecordBatch) -> Result<RecordBatch> {
        let Some(converter) = &self.keys else { return Ok(groups) };
        let keys = converter.convert_columns(&groups.columns()[..self.aggregation.keys.len()])?;
        let mut order: Vec<u32> = (0..groups.num_rows() as u32).collect();
        order.sort_unstable_by(|&a, &b| keys.row(a as usize).cmp(&keys.row(b as usize)));
        Ok(arrow::compute::take_record_batch(&groups, &arrow::array::UInt32Array::from(order))?)
    }

    fn drop_pane(&mut self, start: i64) -> Result<()> {
        self.groups.clear_prefix(&mut self.store, &time_prefix(start))?;
        self.starts.remove(&start);
        self.read_panes.remove(&start);
        Ok(())
    }
}

impl PaneStore for StoredPanes {
    fn add(&mut self, pane: i64, rows: RecordBatch) -> Result<()> {
        if !self.buffer.contains_key(&pane) {
            let aggregation = self.aggregation.new_pane()?;
            self.buffer.insert(pane, aggregation);
        }
        let buffered = self.buffer.get_mut(&pane).expect("inserted above");
        buffered.process_batch(rows, &mut Output::default())?;
        if self.buffer.values().map(AggregateOperator::num_groups).sum::<usize>() > self.buffer_limit {
            self.flush_all()?;
        }
        Ok(())
    }

    fn limit_buffer(&mut self, groups: usize) {
        self.buffer_limit = groups;
    }

    fn starts(&self) -> Vec<i64> {
        let starts: BTreeSet<i64> = self.starts.iter().chain(self.buffer.keys()).copied().collect();
        starts.into_iter().collect()
    }

    fn take_final(&mut self, start: i64) -> Result<Vec<RecordBatch>> {
        if !self.starts.contains(&start) {
            // Never written: the buffer holds the whole pane. Its groups are emitted in key
            // order, as a pane read from the store is, whenever checkpoints flushed it.
            let Some(mut buffered) = self.buffer.remove(&start) else { return Ok(vec![]) };
            let groups = buffered.snapshot_batch(&self.operator)?;
            return self.aggregate_saved(&self.sorted_by_key(groups)?);
        }
        self.flush(start)?;
        // As many groups at a time as the buffer holds: only the pane's results are held whole.
        let (prefix, page_size) = (time_prefix(start), self.buffer_limit.max(1));
        let mut results = vec![];
        let mut after: Option<Box<[u8]>> = None;
        loop {
            let page = self.groups.entries_with_prefix_after(&mut self.store, &prefix, after.as_deref(), page_size)?;
            let Some((last, _)) = page.last() else { break };
            after = Some(last.clone());
            let keys: Vec<&[u8]> = page.iter().map(|(k, _)| group_key(k)).collect();
            let states: Vec<&[u8]> = page.iter().map(|(_, s)| s.as_slice()).collect();
            results.extend(self.aggregate_saved(&self.decode(&keys, &states)?)?);
        }
        self.drop_pane(start)?;
        Ok(results)
    }

    fn partials(&mut self, from: i64, to: i64) -> Result<Vec<RecordBatch>> {
        let buffered: Vec<i64> = self.buffer.range(from..to).map(|(start, _)| *start).collect();
        buffered.into_iter().try_for_each(|start| self.flush(start))?;
        // Windows fire in order: panes before this one's are not read again (a late re-firing
        // reads them from the store).
        self.read_panes = self.read_panes.split_off(&from);
        let starts: Vec<i64> = self.starts.range(from..to).copied().collect();
        let mut partials = vec![];
        for start in starts {
            if let Some(read) = self.read_panes.get(&start) {
                partials.extend(read.iter().cloned());
                continue;
            }
            let pane = match self.read(start)? {
                Some(saved) => self.aggregate_saved(&saved)?,
                None => vec![],
            };
            partials.extend(pane.iter().cloned());
            self.read_panes.insert(start, pane);
        }
        Ok(partials)
    }

    fn expire(&mut self, expired: &dyn Fn(i64) -> bool) -> Result<()> {
        self.buffer.retain(|&start, _| !expired(start));
        let gone: Vec<i64> = self.starts.iter().copied().filter(|&s| expired(s)).collect();
        gone.into_iter().try_for_each(|start| self.drop_pane(start))
    }

    fn retain_keys(&mut self, keep: &(dyn Fn(&[u8]) -> bool + Sync)) -> Result<()> {
        self.flush_all()?;
        self.read_panes.clear();
        self.store.retain_keys(&|stored: &[u8]| keep(group_key(stored)))?;
        Ok(())
    }

    /// A checkpoint of the backend (RocksDB: hard links) and the pane starts.
    fn snapshot(&mut self, snapshot: &mut StateSnapshot) -> Result<()> {
        self.flush_all()?;
        self.store.snapshot_into(snapshot, "panes")?;
        let layout = StoredLayout { operator: self.operator.clone(), starts: self.starts.iter().copied().collect() };
        snapshot.put_value("stored_panes", &layout)
    }

    fn restore(&mut self, restored: &RestoredState) -> Result<()> {
        self.merge_snapshot(restored, &|_| true)
    }

    fn merge_snapshot(&mut self, snapshot: &RestoredState, keep: &dyn Fn(&[u8]) -> bool) -> Result<()> {
        let Some(layout) = snapshot.value::<StoredLayout>("stored_panes")? else {
            return crate::operator::saved_by_another_backend(snapshot, &self.operator, "heap_panes", "memory");
        };
        let Some(dir) = snapshot.directory("panes")? else {
            return Err(SabotError::State {
                state: self.operator.clone(),
                message: "the snapshot lists window panes but holds no state directory".into(),
            });
        };
        let source = SnapshotSource { dir, operator: layout.operator };
        self.store.import_keys(&[source], &|stored: &[u8]| keep(group_key(stored)))?;
        self.starts.extend(layout.starts);
        self.read_panes.clear();
        Ok(())
    }
}
