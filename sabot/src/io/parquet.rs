//! Parquet files: [`ParquetSource`] (projection pushdown, row-group pruning with statistics)
//! and [`ParquetSink`] (streaming writer with bounded memory).
//!
//! A scan reads the footers once while planning; each morsel is one row group (small
//! consecutive row groups are merged into one morsel). Filters of the form
//! `column <op> literal` (`=`, `<`, `<=`, `>`, `>=`, either side), `column IS NULL` and
//! `column IS NOT NULL` are used to skip row groups whose min/max/null-count statistics prove
//! that no row can match ([`FilterSupport::Inexact`]: the engine still filters the rows).

use std::fmt;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, BooleanArray, Datum, Scalar, UInt64Array};
use arrow::compute::kernels::cmp;
use arrow::datatypes::{DataType, Schema, SchemaRef, TimeUnit};
use arrow::record_batch::RecordBatch;
use parquet::arrow::arrow_reader::statistics::StatisticsConverter;
use parquet::arrow::arrow_reader::{ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder};
use parquet::arrow::{ArrowWriter, ProjectionMask};
use parquet::basic::Compression;
use parquet::errors::ParquetError;
use parquet::file::properties::WriterProperties;

use crate::expr::{BinaryOp, Expr, ScalarValue};
use crate::io::csv::PendingFile;
use crate::io::memory::project_schema;
use crate::io::{BatchIter, FilterSupport, Scan, ScanRequest, Sink, SinkWriter, Source};
use crate::{Result, SabotError};

/// Row groups with fewer rows than this are merged with their neighbours into one morsel.
const SMALL_ROW_GROUP_ROWS: usize = 8 * 1024;
/// The most rows a morsel made of merged small row groups holds.
const MERGED_MORSEL_ROWS: usize = 64 * 1024;

/// Converts a Parquet error about `path` into a [`SabotError`] naming the file.
fn parquet_error(path: &Path, location: Option<String>, err: ParquetError) -> SabotError {
    match err {
        ParquetError::External(e) => match e.downcast::<std::io::Error>() {
            Ok(io) => SabotError::io(path, *io),
            Err(e) => SabotError::format(path, location, e.to_string()),
        },
        ParquetError::ArrowError(message) => SabotError::format(path, location, message),
        other => {
            let message = other.to_string();
            let message = message.strip_prefix("Parquet error: ").unwrap_or(&message).to_string();
            SabotError::format(path, location, message)
        }
    }
}

/// One opened Parquet file: its path and decoded footer.
struct ParquetFile {
    path: PathBuf,
    metadata: ArrowReaderMetadata,
}

impl ParquetFile {
    fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(|e| SabotError::io(path, e))?;
        let len = file.metadata().map_err(|e| SabotError::io(path, e))?.len();
        if len < 12 {
            return Err(SabotError::format(
                path,
                None,
                format!("not a Parquet file: {len} bytes is too short for a Parquet footer"),
            ));
        }
        let mut tail = [0u8; 4];
        {
            use std::io::{Read, Seek, SeekFrom};
            let mut f = &file;
            f.seek(SeekFrom::End(-4)).and_then(|_| f.read_exact(&mut tail)).map_err(|e| SabotError::io(path, e))?;
        }
        if &tail != b"PAR1" {
            return Err(SabotError::format(
                path,
                Some("footer".into()),
                "not a Parquet file: it does not end with the PAR1 magic (truncated, or another format)",
            ));
        }
        let metadata = ArrowReaderMetadata::load(&file, ArrowReaderOptions::new())
            .map_err(|e| parquet_error(path, Some("footer".into()), e))?;
        Ok(ParquetFile { path: path.to_path_buf(), metadata })
    }

    fn num_rows(&self) -> usize {
        self.metadata.metadata().file_metadata().num_rows().max(0) as usize
    }
}

/// A table stored in one or more Parquet files.
///
/// ```no_run
/// use sabot::io::{Source, ScanRequest};
/// use sabot::io::parquet::ParquetSource;
/// let source = ParquetSource::new("trades.parquet")?;
/// println!("{} rows, schema {}", source.num_rows().unwrap(), source.schema());
/// # Ok::<(), sabot::SabotError>(())
/// ```
pub struct ParquetSource {
    files: Arc<[ParquetFile]>,
    schema: SchemaRef,
    description: String,
}

impl ParquetSource {
    /// Opens a Parquet file, or every `*.parquet` file of a directory (in name order), and
    /// reads the footer(s).
    ///
    /// A missing file is a [`SabotError::Io`]; a file that is not Parquet (bad magic, corrupt
    /// footer) is a [`SabotError::Format`] naming it.
    ///
    /// ```
    /// use sabot::SabotError;
    /// use sabot::io::parquet::ParquetSource;
    /// let err = ParquetSource::new("/nonexistent/trades.parquet").unwrap_err();
    /// assert!(matches!(err, SabotError::Io { .. }));
    /// assert!(err.to_string().contains("/nonexistent/trades.parquet"));
    /// ```
    pub fn new(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        if path.is_dir() {
            let mut paths = Vec::new();
            for entry in std::fs::read_dir(path).map_err(|e| SabotError::io(path, e))? {
                let entry = entry.map_err(|e| SabotError::io(path, e))?;
                let p = entry.path();
                let name = entry.file_name();
                let name = name.to_string_lossy();
                if !name.starts_with('.') && !name.starts_with('_') && name.ends_with(".parquet") && p.is_file() {
                    paths.push(p);
                }
            }
            if paths.is_empty() {
                return Err(SabotError::format(path, None, "directory contains no *.parquet files"));
            }
            paths.sort();
            let description = format!("parquet: {} ({} files)", path.display(), paths.len());
            Self::build(paths, description)
        } else {
            Self::build(vec![path.to_path_buf()], format!("parquet: {}", path.display()))
        }
    }

    /// Opens several Parquet files with the same schema as one table (in the given order).
    ///
    /// ```no_run
    /// use sabot::io::parquet::ParquetSource;
    /// let source = ParquetSource::from_paths(["2024-01.parquet", "2024-02.parquet"])?;
    /// # Ok::<(), sabot::SabotError>(())
    /// ```
    pub fn from_paths<P: AsRef<Path>>(paths: impl IntoIterator<Item = P>) -> Result<Self> {
        let paths: Vec<PathBuf> = paths.into_iter().map(|p| p.as_ref().to_path_buf()).collect();
        if paths.is_empty() {
            return Err(SabotError::plan("ParquetSource::from_paths needs at least one file"));
        }
        let description = match paths.as_slice() {
            [one] => format!("parquet: {}", one.display()),
            [first, ..] => format!("parquet: {} and {} more files", first.display(), paths.len() - 1),
            [] => unreachable!(),
        };
        Self::build(paths, description)
    }

    fn build(paths: Vec<PathBuf>, description: String) -> Result<Self> {
        let files = paths.iter().map(|p| ParquetFile::open(p)).collect::<Result<Vec<_>>>()?;
        let schema = files[0].metadata.schema().clone();
        for file in &files[1..] {
            let other = file.metadata.schema();
            let same = other.fields().len() == schema.fields().len()
                && other
                    .fields()
                    .iter()
                    .zip(schema.fields())
                    .all(|(a, b)| a.name() == b.name() && a.data_type() == b.data_type());
            if !same {
                return Err(SabotError::format(
                    &file.path,
                    None,
                    format!("schema {other} differs from the schema {schema} of {}", files[0].path.display()),
                ));
            }
        }
        Ok(ParquetSource { files: files.into(), schema, description })
    }

    /// The number of row groups over all files.
    ///
    /// ```no_run
    /// use sabot::io::parquet::ParquetSource;
    /// println!("{}", ParquetSource::new("trades.parquet")?.num_row_groups());
    /// # Ok::<(), sabot::SabotError>(())
    /// ```
    pub fn num_row_groups(&self) -> usize {
        self.files.iter().map(|f| f.metadata.metadata().num_row_groups()).sum()
    }
}

impl fmt::Debug for ParquetSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ParquetSource")
            .field("files", &self.files.iter().map(|f| &f.path).collect::<Vec<_>>())
            .field("num_rows", &self.num_rows())
            .finish()
    }
}

impl Source for ParquetSource {
    fn name(&self) -> &'static str {
        "parquet"
    }

    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn describe(&self) -> String {
        self.description.clone()
    }

    fn num_rows(&self) -> Option<usize> {
        Some(self.files.iter().map(ParquetFile::num_rows).sum())
    }

    fn filter_support(&self, filter: &Expr) -> FilterSupport {
        if conjuncts(filter).iter().any(|c| Predicate::parse(c, &self.schema).is_some()) {
            FilterSupport::Inexact
        } else {
            FilterSupport::Unsupported
        }
    }

    fn scan(&self, request: &ScanRequest) -> Result<Arc<dyn Scan>> {
        let out_schema = project_schema(&self.schema, request.projection.as_deref())?;
        // The Parquet reader yields columns in file order: read the sorted distinct roots and
        // reorder afterwards.
        let (roots, reorder) = match &request.projection {
            None => (None, None),
            Some(p) => {
                let mut roots = p.clone();
                roots.sort_unstable();
                roots.dedup();
                let reorder: Vec<usize> = p.iter().map(|i| roots.binary_search(i).unwrap()).collect();
                let identity = reorder.iter().enumerate().all(|(i, &j)| i == j) && reorder.len() == roots.len();
                (Some(roots), (!identity).then_some(reorder))
            }
        };
        let predicates: Vec<Predicate> =
            request.filters.iter().flat_map(conjuncts).filter_map(|c| Predicate::parse(c, &self.schema)).collect();

        let mut morsels = Vec::new();
        let mut pruned_row_groups = 0;
        for (file_index, file) in self.files.iter().enumerate() {
            let keep = prune_row_groups(file, &predicates);
            let metadata = file.metadata.metadata();
            let mut current: Vec<usize> = Vec::new();
            let mut current_rows = 0usize;
            for (rg, keep) in keep.into_iter().enumerate() {
                if !keep {
                    pruned_row_groups += 1;
                    continue;
                }
                let rows = metadata.row_group(rg).num_rows().max(0) as usize;
                if rows == 0 {
                    continue;
                }
                let small = rows < SMALL_ROW_GROUP_ROWS;
                let mergeable = small
                    && !current.is_empty()
                    && current_rows < SMALL_ROW_GROUP_ROWS
                    && current_rows + rows <= MERGED_MORSEL_ROWS
                    && *current.last().unwrap() + 1 == rg;
                if !mergeable && !current.is_empty() {
                    morsels.push(Morsel { file: file_index, row_groups: std::mem::take(&mut current) });
                    current_rows = 0;
                }
                current.push(rg);
                current_rows += rows;
                if !small {
                    morsels.push(Morsel { file: file_index, row_groups: std::mem::take(&mut current) });
                    current_rows = 0;
                }
            }
            if !current.is_empty() {
                morsels.push(Morsel { file: file_index, row_groups: current });
            }
        }
        tracing::debug!(files = self.files.len(), morsels = morsels.len(), pruned_row_groups, "planned parquet scan");
        Ok(Arc::new(ParquetScan {
            files: self.files.clone(),
            schema: out_schema,
            roots,
            reorder,
            morsels,
            batch_size: if request.batch_size == 0 { 8192 } else { request.batch_size },
        }))
    }
}

struct Morsel {
    file: usize,
    row_groups: Vec<usize>,
}

struct ParquetScan {
    files: Arc<[ParquetFile]>,
    schema: SchemaRef,
    roots: Option<Vec<usize>>,
    reorder: Option<Vec<usize>>,
    morsels: Vec<Morsel>,
    batch_size: usize,
}

impl Scan for ParquetScan {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn morsel_count(&self) -> usize {
        self.morsels.len()
    }

    fn read_morsel(&self, index: usize) -> Result<BatchIter<'static>> {
        let morsel = self.morsels.get(index).ok_or_else(|| {
            SabotError::Execution(format!("morsel {index} out of range (the scan has {} morsels)", self.morsels.len()))
        })?;
        let file = &self.files[morsel.file];
        let path = file.path.clone();
        let location = match morsel.row_groups.as_slice() {
            [one] => format!("row group {one}"),
            [first, .., last] => format!("row groups {first}..={last}"),
            [] => String::new(),
        };
        let handle = File::open(&path).map_err(|e| SabotError::io(&path, e))?;
        let mut builder = ParquetRecordBatchReaderBuilder::new_with_metadata(handle, file.metadata.clone())
            .with_row_groups(morsel.row_groups.clone())
            .with_batch_size(self.batch_size);
        if let Some(roots) = &self.roots {
            builder =
                builder.with_projection(ProjectionMask::roots(file.metadata.parquet_schema(), roots.iter().copied()));
        }
        let reader = builder.build().map_err(|e| parquet_error(&path, Some(location.clone()), e))?;
        let schema = self.schema.clone();
        let reorder = self.reorder.clone();
        Ok(Box::new(reader.map(move |batch| {
            let batch = batch.map_err(|e| SabotError::format(&path, Some(location.clone()), e.to_string()))?;
            let columns: Vec<ArrayRef> = match &reorder {
                None => batch.columns().to_vec(),
                Some(order) => order.iter().map(|&i| batch.column(i).clone()).collect(),
            };
            Ok(RecordBatch::try_new(schema.clone(), columns)?)
        })))
    }
}

// ---------------------------------------------------------------------------------------------
// Row-group pruning
// ---------------------------------------------------------------------------------------------

/// Splits nested `AND`s into their conjuncts.
fn conjuncts(expr: &Expr) -> Vec<&Expr> {
    match expr {
        Expr::Binary { left, op: BinaryOp::And, right } => {
            let mut v = conjuncts(left);
            v.extend(conjuncts(right));
            v
        }
        other => vec![other],
    }
}

/// A conjunct that statistics can decide.
#[derive(Debug, Clone)]
enum Predicate {
    /// `column op literal`, with `op` one of `=`, `<`, `<=`, `>`, `>=`.
    Compare {
        column: String,
        op: BinaryOp,
        value: ScalarValue,
    },
    IsNull(String),
    IsNotNull(String),
}

fn column_name(expr: &Expr) -> Option<&str> {
    match expr {
        Expr::Column(name) => Some(name),
        Expr::Alias(inner, _) => column_name(inner),
        _ => None,
    }
}

impl Predicate {
    fn parse(expr: &Expr, schema: &Schema) -> Option<Predicate> {
        let known = |name: &str| schema.field_with_name(name).ok().filter(|f| prunable_type(f.data_type())).is_some();
        match expr {
            Expr::Binary { left, op, right } => {
                if !matches!(op, BinaryOp::Eq | BinaryOp::Lt | BinaryOp::LtEq | BinaryOp::Gt | BinaryOp::GtEq) {
                    return None;
                }
                let (column, op, value) = match (left.as_ref(), right.as_ref()) {
                    (l, Expr::Literal(v)) if column_name(l).is_some() => (column_name(l)?, *op, v),
                    (Expr::Literal(v), r) if column_name(r).is_some() => (column_name(r)?, op.swap()?, v),
                    _ => return None,
                };
                let field = schema.field_with_name(column).ok()?;
                if !known(column) || value.is_null() || common_type(field.data_type(), &value.data_type()).is_none() {
                    return None;
                }
                if matches!(value, ScalarValue::Float32(Some(f)) if f.is_nan())
                    || matches!(value, ScalarValue::Float64(Some(f)) if f.is_nan())
                {
                    return None;
                }
                Some(Predicate::Compare { column: column.to_string(), op, value: value.clone() })
            }
            Expr::IsNull(inner) => {
                column_name(inner).filter(|c| schema.field_with_name(c).is_ok()).map(|c| Predicate::IsNull(c.into()))
            }
            Expr::IsNotNull(inner) => {
                column_name(inner).filter(|c| schema.field_with_name(c).is_ok()).map(|c| Predicate::IsNotNull(c.into()))
            }
            _ => None,
        }
    }

    fn column(&self) -> &str {
        match self {
            Predicate::Compare { column, .. } | Predicate::IsNull(column) | Predicate::IsNotNull(column) => column,
        }
    }
}

fn is_integer(t: &DataType) -> bool {
    t.is_integer()
}

fn is_float(t: &DataType) -> bool {
    matches!(t, DataType::Float16 | DataType::Float32 | DataType::Float64)
}

fn is_string(t: &DataType) -> bool {
    matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View)
}

fn prunable_type(t: &DataType) -> bool {
    is_integer(t)
        || is_float(t)
        || is_string(t)
        || matches!(t, DataType::Timestamp(..) | DataType::Date32 | DataType::Date64 | DataType::Boolean)
}

/// The type in which statistics of a `column` and a literal are compared, chosen so that the
/// conversion of both sides is exact (or at least order-preserving).
fn common_type(column: &DataType, literal: &DataType) -> Option<DataType> {
    if column == literal {
        return Some(match column {
            DataType::Timestamp(..) => DataType::Int64,
            other => other.clone(),
        });
    }
    match (column, literal) {
        (c, l) if is_integer(c) && is_integer(l) => Some(DataType::Int64),
        (c, l) if (is_integer(c) || is_float(c)) && (is_integer(l) || is_float(l)) => Some(DataType::Float64),
        (c, l) if is_string(c) && is_string(l) => Some(DataType::Utf8),
        (DataType::Timestamp(..), DataType::Timestamp(..)) => Some(DataType::Int64),
        _ => None,
    }
}

fn unit_rank(unit: &TimeUnit) -> u8 {
    match unit {
        TimeUnit::Second => 0,
        TimeUnit::Millisecond => 1,
        TimeUnit::Microsecond => 2,
        TimeUnit::Nanosecond => 3,
    }
}

/// Converts `array` (statistics or a one-element literal) to `target`; timestamps are converted
/// to raw `Int64` counts of `unit`. `None` if the conversion is not exact.
fn to_common(array: &ArrayRef, target: &DataType, unit: Option<&TimeUnit>) -> Option<ArrayRef> {
    let options = arrow::compute::CastOptions { safe: false, ..Default::default() };
    if let (DataType::Timestamp(from, tz), Some(unit)) = (array.data_type(), unit) {
        let scaled = if from == unit {
            array.clone()
        } else {
            arrow::compute::cast_with_options(array, &DataType::Timestamp(*unit, tz.clone()), &options).ok()?
        };
        return arrow::compute::cast_with_options(&scaled, &DataType::Int64, &options).ok();
    }
    if array.data_type() == target {
        return Some(array.clone());
    }
    arrow::compute::cast_with_options(array, target, &options).ok()
}

/// Which row groups of `file` may contain rows matching all `predicates`.
fn prune_row_groups(file: &ParquetFile, predicates: &[Predicate]) -> Vec<bool> {
    let metadata = file.metadata.metadata();
    let n = metadata.num_row_groups();
    let mut keep = vec![true; n];
    if predicates.is_empty() || n == 0 {
        return keep;
    }
    let schema = file.metadata.schema();
    for predicate in predicates {
        let Ok(converter) = StatisticsConverter::try_new(predicate.column(), schema, file.metadata.parquet_schema())
        else {
            continue;
        };
        let converter = converter.with_missing_null_counts_as_zero(false);
        match may_match(&converter, metadata.row_groups(), predicate) {
            Some(may) => {
                for (k, m) in keep.iter_mut().zip(may) {
                    *k &= m;
                }
            }
            None => continue,
        }
    }
    keep
}

fn may_match(
    converter: &StatisticsConverter<'_>,
    row_groups: &[parquet::file::metadata::RowGroupMetaData],
    predicate: &Predicate,
) -> Option<Vec<bool>> {
    converter.parquet_column_index()?;
    let null_counts: UInt64Array = converter.row_group_null_counts(row_groups.iter()).ok()?;
    match predicate {
        Predicate::IsNull(_) => Some(null_counts.iter().map(|c| c != Some(0)).collect()),
        Predicate::IsNotNull(_) => {
            Some(null_counts.iter().zip(row_groups).map(|(c, rg)| c != Some(rg.num_rows().max(0) as u64)).collect())
        }
        Predicate::Compare { op, value, .. } => {
            let column_type = converter.arrow_field().data_type();
            let target = common_type(column_type, &value.data_type())?;
            let unit = match (column_type, value.data_type()) {
                (DataType::Timestamp(a, _), DataType::Timestamp(b, _)) => {
                    Some(if unit_rank(a) >= unit_rank(&b) { *a } else { b })
                }
                _ => None,
            };
            let mins = to_common(&converter.row_group_mins(row_groups.iter()).ok()?, &target, unit.as_ref())?;
            let maxes = to_common(&converter.row_group_maxes(row_groups.iter()).ok()?, &target, unit.as_ref())?;
            let literal = to_common(&value.to_array(1), &target, unit.as_ref())?;
            if literal.is_null(0) {
                return None;
            }
            // NaN: Arrow orders NaN above (or, negative, below) every number, but writers leave
            // NaNs out of min/max. Range comparisons are only trusted with a zero NaN count.
            let floats = is_float(column_type);
            let nan_free: Vec<bool> = if floats {
                converter.row_group_nan_counts(row_groups.iter()).ok()?.iter().map(|c| c == Some(0)).collect()
            } else {
                vec![true; row_groups.len()]
            };
            let lit = Scalar::new(literal);
            // `cannot[i]` is true when the statistics prove that no row of group i matches.
            let cmp_stat = |stats: &ArrayRef,
                            f: fn(
                &dyn Datum,
                &dyn Datum,
            ) -> std::result::Result<BooleanArray, arrow::error::ArrowError>| {
                f(stats, &lit).ok()
            };
            let cannot: Vec<bool> = match op {
                BinaryOp::Eq => {
                    let above = cmp_stat(&mins, cmp::gt)?;
                    let below = cmp_stat(&maxes, cmp::lt)?;
                    (0..row_groups.len())
                        .map(|i| above.is_valid(i) && above.value(i) || below.is_valid(i) && below.value(i))
                        .collect()
                }
                BinaryOp::Lt => definite(&cmp_stat(&mins, cmp::gt_eq)?, &nan_free),
                BinaryOp::LtEq => definite(&cmp_stat(&mins, cmp::gt)?, &nan_free),
                BinaryOp::Gt => definite(&cmp_stat(&maxes, cmp::lt_eq)?, &nan_free),
                BinaryOp::GtEq => definite(&cmp_stat(&maxes, cmp::lt)?, &nan_free),
                _ => return None,
            };
            // A NaN bound (from an old writer) proves nothing.
            let nan_bound = |a: &ArrayRef, i: usize| {
                a.as_any()
                    .downcast_ref::<arrow::array::Float64Array>()
                    .is_some_and(|f| f.is_valid(i) && f.value(i).is_nan())
                    || a.as_any()
                        .downcast_ref::<arrow::array::Float32Array>()
                        .is_some_and(|f| f.is_valid(i) && f.value(i).is_nan())
            };
            Some(cannot.iter().enumerate().map(|(i, &c)| !c || nan_bound(&mins, i) || nan_bound(&maxes, i)).collect())
        }
    }
}

fn definite(result: &BooleanArray, trusted: &[bool]) -> Vec<bool> {
    (0..result.len()).map(|i| trusted[i] && result.is_valid(i) && result.value(i)).collect()
}

// ---------------------------------------------------------------------------------------------
// Sink
// ---------------------------------------------------------------------------------------------

/// Writes a result to a Parquet file, streaming: at most one row group is buffered.
///
/// The file is written under a temporary name next to `path` and renamed when the writer
/// finishes, so a failed run never leaves a truncated file at `path`.
///
/// ```
/// use std::sync::Arc;
/// use arrow::array::Int64Array;
/// use arrow::datatypes::{DataType, Field, Schema};
/// use arrow::record_batch::RecordBatch;
/// use sabot::io::{Sink, Source};
/// use sabot::io::parquet::{ParquetSink, ParquetSource};
///
/// let path = std::env::temp_dir().join(format!("sabot-doc-parquet-sink-{}.parquet", std::process::id()));
/// let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, false)]));
/// let batch = RecordBatch::try_new(schema.clone(), vec![Arc::new(Int64Array::from(vec![1, 2, 3]))]).unwrap();
/// let mut writer = ParquetSink::new(&path).row_group_size(2).open(schema).unwrap();
/// writer.write(&batch).unwrap();
/// writer.finish().unwrap();
/// let source = ParquetSource::new(&path).unwrap();
/// assert_eq!(source.num_rows(), Some(3));
/// assert_eq!(source.num_row_groups(), 2);
/// std::fs::remove_file(&path).unwrap();
/// ```
#[derive(Debug, Clone)]
pub struct ParquetSink {
    path: PathBuf,
    compression: Compression,
    row_group_size: usize,
    row_group_bytes: usize,
}

impl ParquetSink {
    /// A sink writing `path` with Snappy compression and row groups of up to 1 Mi rows / 128 MiB.
    ///
    /// ```
    /// use sabot::io::parquet::ParquetSink;
    /// let sink = ParquetSink::new("out.parquet");
    /// ```
    pub fn new(path: impl Into<PathBuf>) -> Self {
        ParquetSink {
            path: path.into(),
            compression: Compression::SNAPPY,
            row_group_size: 1024 * 1024,
            row_group_bytes: 128 << 20,
        }
    }

    /// Sets the compression codec (default Snappy).
    ///
    /// ```
    /// use sabot::deps::parquet::basic::{Compression, ZstdLevel};
    /// use sabot::io::parquet::ParquetSink;
    /// let sink = ParquetSink::new("out.parquet").compression(Compression::ZSTD(ZstdLevel::try_new(3).unwrap()));
    /// ```
    pub fn compression(mut self, compression: Compression) -> Self {
        self.compression = compression;
        self
    }

    /// Sets the maximum number of rows per row group (default 1 Mi; at least 1).
    ///
    /// ```
    /// use sabot::io::parquet::ParquetSink;
    /// let sink = ParquetSink::new("out.parquet").row_group_size(100_000);
    /// ```
    pub fn row_group_size(mut self, rows: usize) -> Self {
        self.row_group_size = rows.max(1);
        self
    }

    /// Sets the estimated encoded size at which a row group is flushed (default 128 MiB),
    /// which bounds the writer's memory.
    ///
    /// ```
    /// use sabot::io::parquet::ParquetSink;
    /// let sink = ParquetSink::new("out.parquet").row_group_bytes(64 << 20);
    /// ```
    pub fn row_group_bytes(mut self, bytes: usize) -> Self {
        self.row_group_bytes = bytes.max(1);
        self
    }
}

impl Sink for ParquetSink {
    fn describe(&self) -> String {
        format!("parquet: {} ({:?})", self.path.display(), self.compression)
    }

    fn open(&self, schema: SchemaRef) -> Result<Box<dyn SinkWriter>> {
        let (file, pending) = PendingFile::create(&self.path)?;
        let props = WriterProperties::builder()
            .set_compression(self.compression)
            .set_max_row_group_row_count(Some(self.row_group_size))
            .set_max_row_group_bytes(Some(self.row_group_bytes))
            .build();
        let writer = ArrowWriter::try_new(file, schema, Some(props)).map_err(|e| parquet_error(&self.path, None, e))?;
        Ok(Box::new(ParquetSinkWriter { writer, pending }))
    }
}

struct ParquetSinkWriter {
    writer: ArrowWriter<File>,
    pending: PendingFile,
}

impl SinkWriter for ParquetSinkWriter {
    fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        self.writer.write(batch).map_err(|e| parquet_error(self.pending.path(), None, e))
    }

    fn finish(self: Box<Self>) -> Result<()> {
        let ParquetSinkWriter { writer, pending } = *self;
        let file = writer.into_inner().map_err(|e| parquet_error(pending.path(), None, e))?;
        pending.commit(file)
    }
}
