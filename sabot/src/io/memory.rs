//! In-memory and generated sources.
//!
//! [`MemorySource`] serves batches that are already in memory (one morsel per batch);
//! [`GenerateSource`] calls a closure to produce batch `i` on demand (one morsel per batch),
//! which is handy for benchmarks and tests that need more data than fits comfortably in memory.

use std::fmt;
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;

use crate::io::{BatchIter, Scan, ScanRequest, Source};
use crate::{Result, SabotError};

/// Checks a projection against a schema and returns the projected schema.
pub(crate) fn project_schema(schema: &SchemaRef, projection: Option<&[usize]>) -> Result<SchemaRef> {
    match projection {
        None => Ok(schema.clone()),
        Some(indices) => {
            if let Some(bad) = indices.iter().find(|&&i| i >= schema.fields().len()) {
                return Err(SabotError::plan(format!(
                    "projection index {bad} is out of range for a schema of {} columns",
                    schema.fields().len()
                )));
            }
            Ok(Arc::new(schema.project(indices)?))
        }
    }
}

/// Applies a projection to one batch (cheap: clones `Arc`s of the selected columns).
fn project_batch(batch: &RecordBatch, projection: Option<&[usize]>) -> Result<RecordBatch> {
    match projection {
        None => Ok(batch.clone()),
        Some(indices) => Ok(batch.project(indices)?),
    }
}

/// Splits `batch` into slices of at most `batch_size` rows (zero-copy).
fn split_batch(batch: RecordBatch, batch_size: usize) -> impl Iterator<Item = RecordBatch> + Send {
    let rows = batch.num_rows();
    let size = if batch_size == 0 { rows.max(1) } else { batch_size };
    let chunks = if rows == 0 { 1 } else { rows.div_ceil(size) };
    (0..chunks).map(move |i| {
        let offset = i * size;
        batch.slice(offset, size.min(rows - offset))
    })
}

/// A table of record batches held in memory; morsel `i` is batch `i`.
///
/// ```
/// use std::sync::Arc;
/// use arrow::array::Int64Array;
/// use arrow::datatypes::{DataType, Field, Schema};
/// use arrow::record_batch::RecordBatch;
/// use sabot::io::{Source, ScanRequest};
/// use sabot::io::memory::MemorySource;
///
/// let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, false)]));
/// let batch = RecordBatch::try_new(schema.clone(), vec![Arc::new(Int64Array::from(vec![1, 2, 3]))]).unwrap();
/// let source = MemorySource::new(schema, vec![batch]).unwrap();
/// assert_eq!(source.num_rows(), Some(3));
/// let scan = source.scan(&ScanRequest { batch_size: 1024, ..Default::default() }).unwrap();
/// assert_eq!(scan.morsel_count(), 1);
/// ```
#[derive(Clone)]
pub struct MemorySource {
    schema: SchemaRef,
    batches: Arc<[RecordBatch]>,
}

impl MemorySource {
    /// A source over `batches`, which must all have `schema` (field names and types).
    ///
    /// ```
    /// use std::sync::Arc;
    /// use arrow::datatypes::{DataType, Field, Schema};
    /// use sabot::io::memory::MemorySource;
    /// let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, false)]));
    /// let empty = MemorySource::new(schema, vec![]).unwrap();
    /// ```
    pub fn new(schema: SchemaRef, batches: Vec<RecordBatch>) -> Result<Self> {
        for (i, batch) in batches.iter().enumerate() {
            let found = batch.schema();
            let same = found.fields().len() == schema.fields().len()
                && found
                    .fields()
                    .iter()
                    .zip(schema.fields())
                    .all(|(a, b)| a.name() == b.name() && a.data_type() == b.data_type());
            if !same {
                return Err(SabotError::plan(format!("MemorySource: batch {i} has schema {found}, expected {schema}")));
            }
        }
        Ok(MemorySource { schema, batches: batches.into() })
    }

    /// The batches of this source.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use arrow::datatypes::{DataType, Field, Schema};
    /// use sabot::io::memory::MemorySource;
    /// let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, false)]));
    /// assert!(MemorySource::new(schema, vec![]).unwrap().batches().is_empty());
    /// ```
    pub fn batches(&self) -> &[RecordBatch] {
        &self.batches
    }
}

impl fmt::Debug for MemorySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemorySource")
            .field("columns", &self.schema.fields().len())
            .field("batches", &self.batches.len())
            .finish()
    }
}

impl Source for MemorySource {
    fn name(&self) -> &'static str {
        "memory"
    }

    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn describe(&self) -> String {
        format!(
            "memory: {} batches, {} rows",
            self.batches.len(),
            self.batches.iter().map(|b| b.num_rows()).sum::<usize>()
        )
    }

    fn num_rows(&self) -> Option<usize> {
        Some(self.batches.iter().map(|b| b.num_rows()).sum())
    }

    fn scan(&self, request: &ScanRequest) -> Result<Arc<dyn Scan>> {
        let schema = project_schema(&self.schema, request.projection.as_deref())?;
        Ok(Arc::new(MemoryScan {
            schema,
            batches: self.batches.clone(),
            projection: request.projection.clone(),
            batch_size: request.batch_size,
        }))
    }
}

struct MemoryScan {
    schema: SchemaRef,
    batches: Arc<[RecordBatch]>,
    projection: Option<Vec<usize>>,
    batch_size: usize,
}

fn morsel_out_of_range(index: usize, count: usize) -> SabotError {
    SabotError::Execution(format!("morsel {index} out of range (the scan has {count} morsels)"))
}

impl Scan for MemoryScan {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn morsel_count(&self) -> usize {
        self.batches.len()
    }

    fn read_morsel(&self, index: usize) -> Result<BatchIter<'static>> {
        let batch = self.batches.get(index).ok_or_else(|| morsel_out_of_range(index, self.batches.len()))?;
        let batch = project_batch(batch, self.projection.as_deref())?;
        Ok(Box::new(split_batch(batch, self.batch_size).map(Ok)))
    }
}

/// A closure that produces batch `i` of a [`GenerateSource`].
pub type GenerateFn = Arc<dyn Fn(usize) -> Result<RecordBatch> + Send + Sync>;

/// A source whose batch `i` is produced on demand by a closure; morsel `i` is batch `i`.
///
/// The closure runs on worker threads, possibly concurrently and in any order.
///
/// ```
/// use std::sync::Arc;
/// use arrow::array::Int64Array;
/// use arrow::datatypes::{DataType, Field, Schema};
/// use arrow::record_batch::RecordBatch;
/// use sabot::io::{Source, ScanRequest};
/// use sabot::io::memory::GenerateSource;
///
/// let schema = Arc::new(Schema::new(vec![Field::new("i", DataType::Int64, false)]));
/// let s = schema.clone();
/// let source = GenerateSource::new(schema, 4, Arc::new(move |i| {
///     let values = Int64Array::from_iter_values((0..1000).map(|j| (i * 1000 + j) as i64));
///     Ok(RecordBatch::try_new(s.clone(), vec![Arc::new(values)])?)
/// }));
/// let scan = source.scan(&ScanRequest { batch_size: 1000, ..Default::default() }).unwrap();
/// assert_eq!(scan.morsel_count(), 4);
/// let batch = scan.read_morsel(3).unwrap().next().unwrap().unwrap();
/// assert_eq!(batch.num_rows(), 1000);
/// ```
#[derive(Clone)]
pub struct GenerateSource {
    schema: SchemaRef,
    batch_count: usize,
    generate: GenerateFn,
}

impl GenerateSource {
    /// A source of `batch_count` batches of `schema`, batch `i` being `generate(i)`.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use arrow::datatypes::Schema;
    /// use arrow::record_batch::RecordBatch;
    /// use sabot::io::memory::GenerateSource;
    /// let schema = Arc::new(Schema::empty());
    /// let s = schema.clone();
    /// let source = GenerateSource::new(schema, 0, Arc::new(move |_| Ok(RecordBatch::new_empty(s.clone()))));
    /// ```
    pub fn new(schema: SchemaRef, batch_count: usize, generate: GenerateFn) -> Self {
        GenerateSource { schema, batch_count, generate }
    }
}

impl fmt::Debug for GenerateSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GenerateSource")
            .field("columns", &self.schema.fields().len())
            .field("batch_count", &self.batch_count)
            .finish()
    }
}

impl Source for GenerateSource {
    fn name(&self) -> &'static str {
        "generate"
    }

    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn describe(&self) -> String {
        format!("generate: {} batches", self.batch_count)
    }

    fn scan(&self, request: &ScanRequest) -> Result<Arc<dyn Scan>> {
        let schema = project_schema(&self.schema, request.projection.as_deref())?;
        Ok(Arc::new(GenerateScan {
            source: self.clone(),
            schema,
            projection: request.projection.clone(),
            batch_size: request.batch_size,
        }))
    }
}

struct GenerateScan {
    source: GenerateSource,
    schema: SchemaRef,
    projection: Option<Vec<usize>>,
    batch_size: usize,
}

impl Scan for GenerateScan {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn morsel_count(&self) -> usize {
        self.source.batch_count
    }

    fn read_morsel(&self, index: usize) -> Result<BatchIter<'static>> {
        if index >= self.source.batch_count {
            return Err(morsel_out_of_range(index, self.source.batch_count));
        }
        let batch = (self.source.generate)(index)?;
        let expected = &self.source.schema;
        if batch.num_columns() != expected.fields().len()
            || batch.schema().fields().iter().zip(expected.fields()).any(|(a, b)| a.data_type() != b.data_type())
        {
            return Err(SabotError::Execution(format!(
                "GenerateSource: batch {index} has schema {}, expected {expected}",
                batch.schema()
            )));
        }
        // Re-label with the declared schema so names and metadata are consistent.
        let batch = RecordBatch::try_new(expected.clone(), batch.columns().to_vec())?;
        let batch = project_batch(&batch, self.projection.as_deref())?;
        Ok(Box::new(split_batch(batch, self.batch_size).map(Ok)))
    }
}
