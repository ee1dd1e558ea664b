//! Group-key interning: maps each input row to a dense group id.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Int64Array, PrimitiveArray, StringArray};
use arrow::datatypes::{DataType, Int64Type};
use arrow::row::{RowConverter, SortField};
use hashbrown::hash_table::{Entry, HashTable};

use crate::Result;

/// Assigns dense ids (`0..len()`) to distinct key tuples, in order of first appearance.
/// A null key is a group of its own, as in SQL's `GROUP BY`.
pub(crate) trait GroupKeys: Send {
    /// Appends the group id of every row of `keys` to `ids`.
    fn intern(&mut self, keys: &[ArrayRef], ids: &mut Vec<u32>) -> Result<()>;
    /// The number of groups seen.
    fn len(&self) -> usize;
    /// The key columns, one row per group, in id order, of the original key types.
    fn emit(&mut self) -> Result<Vec<ArrayRef>>;
    /// The key columns as [`GroupKeys::emit`] gives them, leaving the groups as they are
    /// (for checkpoints: interning them into empty groups gives the same ids back).
    fn keys(&self) -> Result<Vec<ArrayRef>>;
    /// Makes room for `groups` more groups (a hint: an interner may ignore it).
    fn reserve(&mut self, _groups: usize) {}
}

/// Picks the fastest interner for the key types.
pub(crate) fn new_group_keys(types: &[DataType]) -> Result<Box<dyn GroupKeys>> {
    Ok(match types {
        // UInt64 values above i64::MAX do not fit the interner's i64 keys.
        [t] if (t.is_integer() && *t != DataType::UInt64)
            || matches!(t, DataType::Timestamp(..) | DataType::Date32 | DataType::Date64) =>
        {
            Box::new(IntegerKeys::new(t.clone()))
        }
        [DataType::Utf8] => Box::new(StringKeys::default()),
        _ => Box::new(RowKeys::new(types)?),
    })
}

pub(crate) fn hash_bytes(bytes: &[u8]) -> u64 {
    use std::hash::BuildHasher;
    foldhash::fast::FixedState::with_seed(0x5ab0).hash_one(bytes)
}

pub(crate) fn hash_u64(v: u64) -> u64 {
    // Multiplicative hashing, folded so both halves carry entropy (hashbrown reads the top bits).
    let h = (v ^ (v >> 32)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    h ^ (h >> 29)
}

/// A single integer-like key, widened to `i64` while interning.
struct IntegerKeys {
    data_type: DataType,
    table: HashTable<u32>,
    keys: Vec<Option<i64>>,
    null_group: Option<u32>,
    // Clustered input repeats the previous key most of the time.
    last: Option<(i64, u32)>,
}

impl IntegerKeys {
    fn new(data_type: DataType) -> Self {
        IntegerKeys { data_type, table: HashTable::new(), keys: vec![], null_group: None, last: None }
    }
}

impl GroupKeys for IntegerKeys {
    fn intern(&mut self, keys: &[ArrayRef], ids: &mut Vec<u32>) -> Result<()> {
        let widened = arrow::compute::cast(&keys[0], &DataType::Int64)?;
        let array: &PrimitiveArray<Int64Type> = widened.as_primitive();
        ids.reserve(array.len());
        for i in 0..array.len() {
            if array.is_null(i) {
                let id = *self.null_group.get_or_insert_with(|| {
                    self.keys.push(None);
                    (self.keys.len() - 1) as u32
                });
                ids.push(id);
                continue;
            }
            let v = array.value(i);
            if let Some((last, id)) = self.last
                && last == v
            {
                ids.push(id);
                continue;
            }
            let keys = &mut self.keys;
            let id = match self.table.entry(
                hash_u64(v as u64),
                |&g| keys[g as usize] == Some(v),
                |&g| hash_u64(keys[g as usize].unwrap_or_default() as u64),
            ) {
                Entry::Occupied(e) => *e.get(),
                Entry::Vacant(e) => {
                    keys.push(Some(v));
                    let id = (keys.len() - 1) as u32;
                    e.insert(id);
                    id
                }
            };
            self.last = Some((v, id));
            ids.push(id);
        }
        Ok(())
    }

    fn len(&self) -> usize {
        self.keys.len()
    }

    fn reserve(&mut self, groups: usize) {
        let keys = &self.keys;
        self.table.reserve(groups, |&g| hash_u64(keys[g as usize].unwrap_or_default() as u64));
        self.keys.reserve(groups);
    }

    fn emit(&mut self) -> Result<Vec<ArrayRef>> {
        let array = Int64Array::from(std::mem::take(&mut self.keys));
        Ok(vec![arrow::compute::cast(&array, &self.data_type)?])
    }

    fn keys(&self) -> Result<Vec<ArrayRef>> {
        let array = Int64Array::from(self.keys.clone());
        Ok(vec![arrow::compute::cast(&array, &self.data_type)?])
    }
}

/// A single UTF-8 key; the strings of the groups are stored once, in one buffer.
#[derive(Default)]
struct StringKeys {
    table: HashTable<u32>,
    bytes: Vec<u8>,
    offsets: Vec<usize>,
    is_null: Vec<bool>,
    null_group: Option<u32>,
    /// Strings of at most 15 bytes, packed with their length into one `u128`: no hashing of
    /// bytes and no `memcmp` for the short keys (sectors, currencies, codes…) that are common.
    short: ShortKeys,
}

/// Open addressing over packed short strings.
#[derive(Default)]
struct ShortKeys {
    /// `(packed key, group id)`; `id == u32::MAX` marks an empty slot (packed keys are never 0
    /// with that id, see [`pack_short`]).
    slots: Vec<(u128, u32)>,
    len: usize,
}

const EMPTY: u32 = u32::MAX;
/// Short keys cached at most (beyond, keys take the general path): the cache is for
/// low-cardinality keys and stays within the L2 cache.
const SHORT_KEYS_CAPACITY: usize = 1 << 12;

impl ShortKeys {
    #[inline]
    fn slot(key: u128, mask: usize) -> usize {
        // The middle bits of the products depend on every bit of both halves.
        let folded = (key as u64) ^ ((key >> 64) as u64).wrapping_mul(0xD1B5_4A32_D192_ED03);
        (folded.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) as usize & mask
    }

    #[inline]
    fn get(&self, key: u128) -> Option<u32> {
        if self.slots.is_empty() {
            return None;
        }
        let mask = self.slots.len() - 1;
        let mut i = Self::slot(key, mask);
        loop {
            let (k, id) = self.slots[i];
            if id == EMPTY {
                return None;
            }
            if k == key {
                return Some(id);
            }
            i = (i + 1) & mask;
        }
    }

    fn insert(&mut self, key: u128, id: u32) {
        if (self.len + 1) * 2 > self.slots.len() {
            let capacity = (self.slots.len() * 2).max(32);
            let old = std::mem::replace(&mut self.slots, vec![(0, EMPTY); capacity]);
            self.len = 0;
            for (k, g) in old {
                if g != EMPTY {
                    self.insert(k, g);
                }
            }
        }
        let mask = self.slots.len() - 1;
        let mut i = Self::slot(key, mask);
        while self.slots[i].1 != EMPTY {
            i = (i + 1) & mask;
        }
        self.slots[i] = (key, id);
        self.len += 1;
    }
}

/// Packs a string of at most 15 bytes with its length (in the top byte) into a `u128`;
/// `None` for longer strings. `values[start..]` must hold the string.
#[inline]
fn pack_short(values: &[u8], start: usize, len: usize) -> Option<u128> {
    if len > 15 {
        return None;
    }
    let raw = match values.get(start..start + 16) {
        // One unaligned load, masked down to the string's bytes.
        Some(window) => u128::from_le_bytes(window.try_into().expect("16 bytes")) & ((1u128 << (len * 8)) - 1),
        None => {
            let mut buf = [0u8; 16];
            buf[..len].copy_from_slice(&values[start..start + len]);
            u128::from_le_bytes(buf)
        }
    };
    Some(raw | ((len as u128) << 120))
}

impl StringKeys {
    fn key(&self, group: u32) -> &[u8] {
        let g = group as usize;
        &self.bytes[self.offsets[g]..self.offsets[g + 1]]
    }
}

impl GroupKeys for StringKeys {
    fn intern(&mut self, keys: &[ArrayRef], ids: &mut Vec<u32>) -> Result<()> {
        if self.offsets.is_empty() {
            self.offsets.push(0);
        }
        let array = keys[0].as_string::<i32>();
        ids.reserve(array.len());
        let mut last: Option<(&[u8], u32)> = None;
        let (offsets, values) = (array.value_offsets(), array.values().as_slice());
        for i in 0..array.len() {
            let (start, end) = (offsets[i] as usize, offsets[i + 1] as usize);
            let short = if array.is_valid(i) { pack_short(values, start, end - start) } else { None };
            if let Some(packed) = short
                && let Some(id) = self.short.get(packed)
            {
                ids.push(id);
                continue;
            }
            if array.is_null(i) {
                let id = match self.null_group {
                    Some(id) => id,
                    None => {
                        self.offsets.push(self.bytes.len());
                        self.is_null.push(true);
                        let id = (self.is_null.len() - 1) as u32;
                        self.null_group = Some(id);
                        id
                    }
                };
                ids.push(id);
                continue;
            }
            let v = array.value(i).as_bytes();
            if let Some((prev, id)) = last
                && prev == v
            {
                ids.push(id);
                continue;
            }
            let hash = hash_bytes(v);
            let found = self.table.find(hash, |&g| !self.is_null[g as usize] && self.key(g) == v).copied();
            let id = match found {
                Some(id) => id,
                None => {
                    self.bytes.extend_from_slice(v);
                    self.offsets.push(self.bytes.len());
                    self.is_null.push(false);
                    let id = (self.is_null.len() - 1) as u32;
                    let (bytes, offsets) = (&self.bytes, &self.offsets);
                    self.table
                        .insert_unique(hash, id, |&g| hash_bytes(&bytes[offsets[g as usize]..offsets[g as usize + 1]]));
                    id
                }
            };
            if let Some(packed) = short
                && self.short.len < SHORT_KEYS_CAPACITY
            {
                self.short.insert(packed, id);
            }
            last = Some((v, id));
            ids.push(id);
        }
        Ok(())
    }

    fn len(&self) -> usize {
        self.is_null.len()
    }

    fn emit(&mut self) -> Result<Vec<ArrayRef>> {
        self.keys()
    }

    fn keys(&self) -> Result<Vec<ArrayRef>> {
        let array: StringArray = (0..self.len() as u32)
            .map(|g| (!self.is_null[g as usize]).then(|| std::str::from_utf8(self.key(g)).expect("keys were UTF-8")))
            .collect();
        Ok(vec![Arc::new(array)])
    }
}

/// Any number of keys of any types, through Arrow's row format.
struct RowKeys {
    converter: RowConverter,
    /// The key types, which the row format does not always give back (dictionaries come
    /// back as their values).
    types: Vec<DataType>,
    table: HashTable<u32>,
    rows: arrow::row::Rows,
}

impl RowKeys {
    fn new(types: &[DataType]) -> Result<Self> {
        let converter = RowConverter::new(types.iter().map(|t| SortField::new(t.clone())).collect())?;
        let rows = converter.empty_rows(0, 0);
        Ok(RowKeys { converter, types: types.to_vec(), table: HashTable::new(), rows })
    }
}

impl GroupKeys for RowKeys {
    fn intern(&mut self, keys: &[ArrayRef], ids: &mut Vec<u32>) -> Result<()> {
        let batch_rows = self.converter.convert_columns(keys)?;
        ids.reserve(batch_rows.num_rows());
        for row in batch_rows.iter() {
            let bytes = row.as_ref();
            let hash = hash_bytes(bytes);
            let rows = &self.rows;
            let found = self.table.find(hash, |&g| rows.row(g as usize).as_ref() == bytes).copied();
            let id = match found {
                Some(id) => id,
                None => {
                    self.rows.push(row);
                    let id = (self.rows.num_rows() - 1) as u32;
                    let rows = &self.rows;
                    self.table.insert_unique(hash, id, |&g| hash_bytes(rows.row(g as usize).as_ref()));
                    id
                }
            };
            ids.push(id);
        }
        Ok(())
    }

    fn len(&self) -> usize {
        self.rows.num_rows()
    }

    fn emit(&mut self) -> Result<Vec<ArrayRef>> {
        self.keys()
    }

    fn keys(&self) -> Result<Vec<ArrayRef>> {
        let arrays = self.converter.convert_rows(self.rows.iter())?;
        arrays
            .into_iter()
            .zip(&self.types)
            .map(|(array, t)| Ok(if array.data_type() == t { array } else { arrow::compute::cast(&array, t)? }))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Array, UInt64Array};

    use super::*;

    /// Every integer key type keeps its distinct values apart, the full range of u64 included.
    #[test]
    fn large_unsigned_keys_stay_distinct() {
        let values = UInt64Array::from(vec![Some(1 << 63), Some((1 << 63) + 1), Some(u64::MAX), Some(1 << 63), None]);
        let mut groups = new_group_keys(&[DataType::UInt64]).unwrap();
        let mut ids = vec![];
        groups.intern(&[Arc::new(values) as ArrayRef], &mut ids).unwrap();
        assert_eq!(ids, [0, 1, 2, 0, 3]);
        let keys = groups.emit().unwrap();
        let keys = keys[0].as_any().downcast_ref::<UInt64Array>().unwrap();
        assert_eq!(keys.iter().collect::<Vec<_>>(), [Some(1 << 63), Some((1 << 63) + 1), Some(u64::MAX), None]);
    }
}
