//! Hash join: a table built once from one side, probed in parallel by the other.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch, UInt32Array, new_null_array};
use arrow::compute::{cast, concat_batches, take};
use arrow::datatypes::{DataType, Int64Type, SchemaRef};
use arrow::row::{RowConverter, Rows, SortField};
use hashbrown::HashTable;

use super::aggregate::{hash_bytes, hash_u64};
use super::{Operator, Output};
use crate::plan::JoinType;
use crate::{Result, SabotError};

/// Where an output column of a join comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinColumn {
    /// A column of the probe side.
    Probe(usize),
    /// A column of the build side.
    Build(usize),
    /// A key shown once: the probe value, or the build value for unmatched build rows.
    Key {
        /// Column index on the probe side.
        probe: usize,
        /// Column index on the build side.
        build: usize,
    },
}

/// Sentinel for "no row" in the chains below.
const NONE: u32 = u32::MAX;
/// Flag on a chain head: more rows with the same key follow in `next` (unset for unique keys,
/// so that the common case never reads `next`, a cache miss on large build sides).
const MORE: u32 = 1 << 31;
/// The row number in a flagged head.
const ROW: u32 = MORE - 1;

/// Prepends `row` to the chain whose head is `*head` (build rows are inserted in reverse, so
/// chains stay in ascending row order).
#[inline]
fn push_head(head: &mut u32, row: u32, next: &mut [u32]) {
    if *head == NONE {
        *head = row;
    } else {
        next[row as usize] = *head & ROW;
        *head = row | MORE;
    }
}

/// Maps key values to the first build row holding them; `next` chains rows with equal keys.
enum KeyIndex {
    /// Integer keys in a dense range, indexed by `key - min` without hashing: a bitmap of
    /// the keys present (with a running count per 64 keys) ranks each key into `heads`, which
    /// has one entry per *distinct* key. The bitmap (2 bits per key of the range) stays in
    /// cache, so probe rows without a match never touch `heads`, and `heads` is small.
    Direct { min: i64, len: u64, blocks: Vec<RankBlock>, heads: Vec<u32> },
    /// Integer keys: open addressing with linear probing over inline keys.
    Integer { mask: usize, keys: Vec<i64>, heads: Vec<u32> },
    /// Any keys, compared in Arrow's row format.
    Rows { rows: Rows, table: HashTable<u32> },
}

/// 64 keys of a [`KeyIndex::Direct`] range: which are present, and how many present keys
/// precede the block.
#[derive(Debug, Clone, Copy, Default)]
#[repr(C, align(16))]
struct RankBlock {
    bits: u64,
    rank: u32,
}

/// The build side of a hash join: all its rows plus an index on the key columns.
pub struct JoinTable {
    batch: RecordBatch,
    index: KeyIndex,
    next: Vec<u32>,
    converter: Option<RowConverter>,
    key_type: DataType,
    /// Build rows that found a match, for right and full joins.
    matched: Vec<AtomicU64>,
}

impl JoinTable {
    /// Builds the table from the build side's batches; `keys` are its key columns' indices and
    /// `key_types` the types both sides' keys are compared as.
    pub fn try_new(schema: SchemaRef, batches: &[RecordBatch], keys: &[usize], key_types: &[DataType]) -> Result<Self> {
        let started = std::time::Instant::now();
        let batch = concat_batches(&schema, batches)?;
        let rows = batch.num_rows();
        if rows >= ROW as usize {
            return Err(SabotError::Execution(format!("join build side has {rows} rows; the limit is {}", ROW - 1)));
        }
        let key_arrays = keys
            .iter()
            .zip(key_types)
            .map(|(&k, t)| cast_if_needed(batch.column(k), t))
            .collect::<Result<Vec<ArrayRef>>>()?;
        let mut next = vec![NONE; rows];
        let (index, converter, key_type) = if let [single] = key_arrays.as_slice()
            && single.data_type().is_integer()
        {
            let widened = cast_if_needed(single, &DataType::Int64)?;
            (build_integer_index(widened.as_primitive::<Int64Type>(), &mut next), None, DataType::Int64)
        } else {
            let converter = RowConverter::new(key_types.iter().map(|t| SortField::new(t.clone())).collect())?;
            let rows_fmt = converter.convert_columns(&key_arrays)?;
            let valid = all_valid(&key_arrays);
            let mut table = HashTable::with_capacity(rows);
            // Inserting in reverse keeps each chain in ascending row order.
            for row in (0..rows).rev() {
                if !valid(row) {
                    continue;
                }
                let key = rows_fmt.row(row);
                let bytes = key.as_ref();
                let hash = hash_bytes(bytes);
                match table.find_mut(hash, |&head: &u32| rows_fmt.row((head & ROW) as usize).as_ref() == bytes) {
                    Some(head) => push_head(head, row as u32, &mut next),
                    None => {
                        table.insert_unique(hash, row as u32, |&h| {
                            hash_bytes(rows_fmt.row((h & ROW) as usize).as_ref())
                        });
                    }
                }
            }
            (KeyIndex::Rows { rows: rows_fmt, table }, Some(converter), DataType::Null)
        };
        let matched = (0..rows.div_ceil(64)).map(|_| AtomicU64::new(0)).collect();
        tracing::debug!(rows, elapsed_ms = started.elapsed().as_secs_f64() * 1e3, "join table built");
        Ok(JoinTable { batch, index, next, converter, key_type, matched })
    }

    /// The number of build rows.
    pub fn num_rows(&self) -> usize {
        self.batch.num_rows()
    }

    /// Appends `(probe, row)` for each build row of the chain starting at `head`; whether
    /// there was one.
    #[inline(always)]
    fn emit_chain(&self, probe: u32, head: u32, probe_rows: &mut Vec<u32>, build_rows: &mut Vec<u32>) -> bool {
        if head == NONE {
            return false;
        }
        probe_rows.push(probe);
        build_rows.push(head & ROW);
        if head & MORE != 0 {
            let mut row = self.next[(head & ROW) as usize];
            while row != NONE {
                probe_rows.push(probe);
                build_rows.push(row);
                row = self.next[row as usize];
            }
        }
        true
    }

    /// Appends `(probe_row, build_row)` for every match of the probe keys, in probe order;
    /// `on_row` sees each probe row with whether it matched (after its matches are appended),
    /// unless `matches_only` (then it is never called).
    fn probe(
        &self,
        keys: &[ArrayRef],
        probe_rows: &mut Vec<u32>,
        build_rows: &mut Vec<u32>,
        scratch: &mut Vec<u32>,
        matches_only: bool,
        mut on_row: impl FnMut(u32, bool, &mut Vec<u32>, &mut Vec<u32>),
    ) -> Result<()> {
        let emit_chain = |i: usize, head: u32, probe_rows: &mut Vec<u32>, build_rows: &mut Vec<u32>| {
            self.emit_chain(i as u32, head, probe_rows, build_rows)
        };
        match &self.index {
            KeyIndex::Direct { min, len, blocks, heads } => {
                let widened = cast_if_needed(&keys[0], &self.key_type)?;
                let array = widened.as_primitive::<Int64Type>();
                // First every lookup, without branches on the data, so that the CPU overlaps
                // the cache misses of many rows; then the chains, in probe order.
                let (min, len, absent) = (*min, *len, (heads.len() - 1) as u32);
                let outside = RankBlock { bits: 0, rank: absent };
                let values = array.values();
                let lookup = |key: i64| {
                    let offset = key.wrapping_sub(min) as u64;
                    let block = if offset < len { blocks[(offset >> 6) as usize] } else { outside };
                    let bit = 1u64 << (offset & 63);
                    let rank = block.rank + (block.bits & (bit - 1)).count_ones();
                    heads[if block.bits & bit != 0 { rank } else { absent } as usize]
                };
                // (A buffer kept across batches: a fresh one would be page-faulted in every time.)
                let found = scratch;
                found.clear();
                found.extend(values.iter().map(|&key| lookup(key)));
                if let Some(nulls) = array.nulls().filter(|n| n.null_count() > 0) {
                    for i in nulls.iter().enumerate().filter(|(_, valid)| !valid).map(|(i, _)| i) {
                        found[i] = NONE;
                    }
                }
                if matches_only {
                    for (i, &head) in found.iter().enumerate() {
                        self.emit_chain(i as u32, head, probe_rows, build_rows);
                    }
                } else {
                    for (i, &head) in found.iter().enumerate() {
                        let matched = self.emit_chain(i as u32, head, probe_rows, build_rows);
                        on_row(i as u32, matched, probe_rows, build_rows);
                    }
                }
            }
            KeyIndex::Integer { .. } => {
                let widened = cast_if_needed(&keys[0], &self.key_type)?;
                let array = widened.as_primitive::<Int64Type>();
                let values = array.values();
                for i in 0..array.len() {
                    let head = if array.is_null(i) { NONE } else { self.lookup_integer(values[i]) };
                    let found = emit_chain(i, head, probe_rows, build_rows);
                    on_row(i as u32, found, probe_rows, build_rows);
                }
            }
            KeyIndex::Rows { rows, table } => {
                let converter = self.converter.as_ref().expect("row keys have a converter");
                let probe = converter.convert_columns(keys)?;
                let valid = all_valid(keys);
                for i in 0..probe.num_rows() {
                    let head = if valid(i) {
                        let key = probe.row(i);
                        let bytes = key.as_ref();
                        table
                            .find(hash_bytes(bytes), |&h| rows.row((h & ROW) as usize).as_ref() == bytes)
                            .copied()
                            .unwrap_or(NONE)
                    } else {
                        NONE
                    };
                    let found = emit_chain(i, head, probe_rows, build_rows);
                    on_row(i as u32, found, probe_rows, build_rows);
                }
            }
        }
        Ok(())
    }

    #[inline]
    fn lookup_integer(&self, key: i64) -> u32 {
        match &self.index {
            KeyIndex::Integer { mask, keys, heads } => {
                let mut slot = hash_u64(key as u64) as usize & mask;
                loop {
                    let head = heads[slot];
                    if head == NONE || keys[slot] == key {
                        return head;
                    }
                    slot = (slot + 1) & mask;
                }
            }
            KeyIndex::Direct { .. } | KeyIndex::Rows { .. } => NONE,
        }
    }

    fn mark_matched(&self, build_rows: &[u32]) {
        for &row in build_rows.iter().filter(|&&r| r != NONE) {
            self.matched[row as usize / 64].fetch_or(1 << (row % 64), Ordering::Relaxed);
        }
    }

    fn unmatched_rows(&self) -> Vec<u32> {
        (0..self.num_rows() as u32)
            .filter(|&r| self.matched[r as usize / 64].load(Ordering::Relaxed) & (1 << (r % 64)) == 0)
            .collect()
    }
}

/// `array` as `to`, without a copy when it already is.
fn cast_if_needed(array: &ArrayRef, to: &DataType) -> Result<ArrayRef> {
    Ok(if array.data_type() == to { array.clone() } else { cast(array, to)? })
}

fn all_valid(keys: &[ArrayRef]) -> impl Fn(usize) -> bool + '_ {
    move |row| keys.iter().all(|k| k.is_valid(row))
}

fn build_integer_index(keys: &arrow::array::Int64Array, next: &mut [u32]) -> KeyIndex {
    let non_null = keys.len() - keys.null_count();
    let (min, max) = keys.iter().flatten().fold((i64::MAX, i64::MIN), |(lo, hi), k| (lo.min(k), hi.max(k)));
    let range = (max as i128 - min as i128 + 1).max(0) as u128;
    // A dense key range is indexed directly: probes become one array read, in probe order.
    // (The index costs 2 bits per key of the range plus 4 bytes per distinct key.)
    let dense_limit = (non_null as u128 * 64).clamp(1 << 20, 1 << 30);
    if non_null > 0 && range <= dense_limit {
        let len = range as u64;
        let mut blocks = vec![RankBlock::default(); (range as usize).div_ceil(64)];
        let valid = |row: usize| keys.is_valid(row);
        let values = keys.values();
        for row in 0..keys.len() {
            if valid(row) {
                let offset = (values[row] - min) as usize;
                blocks[offset >> 6].bits |= 1 << (offset & 63);
            }
        }
        let mut distinct = 0u32;
        for block in &mut blocks {
            block.rank = distinct;
            distinct += block.bits.count_ones();
        }
        // One more entry, always NONE: where absent keys look.
        let mut heads = vec![NONE; distinct as usize + 1];
        for row in (0..keys.len()).rev() {
            if valid(row) {
                let offset = (values[row] - min) as u64;
                let block = blocks[(offset >> 6) as usize];
                let slot = block.rank + (block.bits & ((1u64 << (offset & 63)) - 1)).count_ones();
                push_head(&mut heads[slot as usize], row as u32, next);
            }
        }
        return KeyIndex::Direct { min, len, blocks, heads };
    }
    let capacity = (non_null * 2).next_power_of_two().max(16);
    let mask = capacity - 1;
    let mut slot_keys = vec![0i64; capacity];
    let mut heads = vec![NONE; capacity];
    for row in (0..keys.len()).rev() {
        if keys.is_null(row) {
            continue;
        }
        let key = keys.value(row);
        let mut slot = hash_u64(key as u64) as usize & mask;
        while heads[slot] != NONE && slot_keys[slot] != key {
            slot = (slot + 1) & mask;
        }
        slot_keys[slot] = key;
        push_head(&mut heads[slot], row as u32, next);
    }
    KeyIndex::Integer { mask, keys: slot_keys, heads }
}

type BuildFn = Box<dyn FnOnce() -> Result<JoinTable> + Send>;

/// The hand-over between a join's build side and its probe partitions: the first probe that
/// starts runs the build; the others wait for it; the last one to finish emits the build rows
/// that never matched (right and full joins).
pub struct JoinBuild {
    build: Mutex<Option<BuildFn>>,
    table: OnceLock<std::result::Result<Arc<JoinTable>, Arc<SabotError>>>,
    running_probes: AtomicUsize,
}

impl JoinBuild {
    /// A hand-over that builds with `build` for `probes` probe partitions.
    pub fn new(build: impl FnOnce() -> Result<JoinTable> + Send + 'static, probes: usize) -> Arc<Self> {
        Arc::new(JoinBuild {
            build: Mutex::new(Some(Box::new(build))),
            table: OnceLock::new(),
            running_probes: AtomicUsize::new(probes),
        })
    }

    fn table(&self) -> Result<Arc<JoinTable>> {
        let result = self.table.get_or_init(|| {
            let build = self.build.lock().expect("join build lock").take().expect("built once");
            build().map(Arc::new).map_err(Arc::new)
        });
        result.clone().map_err(SabotError::Shared)
    }
}

/// Probes a [`JoinTable`] with each batch of the probe side.
pub struct HashJoinProbe {
    join_type: JoinType,
    probe_keys: Vec<usize>,
    key_types: Vec<DataType>,
    output: Vec<JoinColumn>,
    schema: SchemaRef,
    build: Arc<JoinBuild>,
    table: Option<Arc<JoinTable>>,
    probe_rows: Vec<u32>,
    build_rows: Vec<u32>,
    scratch: Vec<u32>,
}

impl HashJoinProbe {
    /// A probe of `build`'s table. `join_type` is seen from the probe side: `Left` keeps every
    /// probe row, `Right` every build row.
    pub fn new(
        join_type: JoinType,
        probe_keys: Vec<usize>,
        key_types: Vec<DataType>,
        output: Vec<JoinColumn>,
        schema: SchemaRef,
        build: Arc<JoinBuild>,
    ) -> Self {
        HashJoinProbe {
            join_type,
            probe_keys,
            key_types,
            output,
            schema,
            build,
            table: None,
            probe_rows: vec![],
            build_rows: vec![],
            scratch: vec![],
        }
    }

    fn assemble(
        &self,
        probe: Option<&RecordBatch>,
        table: &JoinTable,
        probe_idx: &UInt32Array,
        build_idx: &UInt32Array,
    ) -> Result<RecordBatch> {
        let len = probe_idx.len().max(build_idx.len());
        let columns = self
            .output
            .iter()
            .zip(self.schema.fields())
            .map(|(source, field)| {
                Ok(match (*source, probe) {
                    (JoinColumn::Probe(c) | JoinColumn::Key { probe: c, .. }, Some(p)) => {
                        take(p.column(c), probe_idx, None)?
                    }
                    (JoinColumn::Build(c) | JoinColumn::Key { build: c, .. }, _) => {
                        let col = take(table.batch.column(c), build_idx, None)?;
                        if col.data_type() == field.data_type() { col } else { cast(&col, field.data_type())? }
                    }
                    (JoinColumn::Probe(_), None) => new_null_array(field.data_type(), len),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let options = arrow::record_batch::RecordBatchOptions::new().with_row_count(Some(len));
        Ok(RecordBatch::try_new_with_options(self.schema.clone(), columns, &options)?)
    }
}

impl Operator for HashJoinProbe {
    fn name(&self) -> &str {
        "hash_join_probe"
    }

    fn on_start(&mut self) -> Result<()> {
        self.table = Some(self.build.table()?);
        Ok(())
    }

    fn process_batch(&mut self, batch: RecordBatch, out: &mut Output) -> Result<()> {
        let table = self.table.clone().expect("on_start ran");
        let keys = self
            .probe_keys
            .iter()
            .zip(&self.key_types)
            .map(|(&k, t)| cast_if_needed(batch.column(k), t))
            .collect::<Result<Vec<ArrayRef>>>()?;
        self.probe_rows.clear();
        self.build_rows.clear();
        let mut unmatched_probe = vec![];
        let join_type = self.join_type;
        // Inner and right joins need nothing per probe row beyond its matches.
        let matches_only = matches!(join_type, JoinType::Inner | JoinType::Right);
        table.probe(
            &keys,
            &mut self.probe_rows,
            &mut self.build_rows,
            &mut self.scratch,
            matches_only,
            |row, found, probe_rows, build_rows| {
                match join_type {
                    JoinType::Semi if found => {
                        // One output row per probe row, whatever the number of matches.
                        let first = probe_rows.iter().rposition(|&r| r != row).map_or(0, |p| p + 1);
                        probe_rows.truncate(first + 1);
                        build_rows.truncate(first + 1);
                    }
                    JoinType::Anti if found => {
                        let first = probe_rows.iter().rposition(|&r| r != row).map_or(0, |p| p + 1);
                        probe_rows.truncate(first);
                        build_rows.truncate(first);
                    }
                    // Unmatched rows keep their place among the matches: the output follows the probe order.
                    JoinType::Left | JoinType::Full if !found => {
                        probe_rows.push(row);
                        build_rows.push(NONE);
                    }
                    JoinType::Anti if !found => unmatched_probe.push(row),
                    _ => {}
                }
            },
        )?;
        if matches!(self.join_type, JoinType::Right | JoinType::Full) {
            table.mark_matched(&self.build_rows);
        }
        let emit_pairs = !matches!(self.join_type, JoinType::Anti);
        if emit_pairs && !self.probe_rows.is_empty() {
            let probe_idx = UInt32Array::from(std::mem::take(&mut self.probe_rows));
            let build_rows = std::mem::take(&mut self.build_rows);
            let build_idx = if build_rows.contains(&NONE) {
                build_rows.iter().map(|&r| (r != NONE).then_some(r)).collect()
            } else {
                UInt32Array::from(build_rows)
            };
            out.emit(self.assemble(Some(&batch), &table, &probe_idx, &build_idx)?);
        }
        if !unmatched_probe.is_empty() {
            let n = unmatched_probe.len();
            let probe_idx = UInt32Array::from(unmatched_probe);
            let build_idx = UInt32Array::new_null(n);
            out.emit(self.assemble(Some(&batch), &table, &probe_idx, &build_idx)?);
        }
        Ok(())
    }

    fn on_close(&mut self, out: &mut Output) -> Result<()> {
        let last = self.build.running_probes.fetch_sub(1, Ordering::AcqRel) == 1;
        if last && matches!(self.join_type, JoinType::Right | JoinType::Full) {
            let table = match self.table.clone() {
                Some(t) => t,
                None => self.build.table()?,
            };
            let rows = table.unmatched_rows();
            for chunk in rows.chunks(64 * 1024) {
                let build_idx = UInt32Array::from(chunk.to_vec());
                let probe_idx = UInt32Array::new_null(chunk.len());
                out.emit(self.assemble(None, &table, &probe_idx, &build_idx)?);
            }
        }
        Ok(())
    }
}
