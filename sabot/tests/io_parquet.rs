//! Parquet source and sink: round trips, projection, row-group pruning, errors.

use std::path::Path;
use std::sync::Arc;

use arrow::array::{
    AsArray, Float64Array, Int32Array, Int64Array, RecordBatch, StringArray, TimestampMillisecondArray,
};
use arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef, TimeUnit};
use sabot::SabotError;
use sabot::deps::parquet::basic::Compression;
use sabot::expr::{Expr, col, lit};
use sabot::io::parquet::{ParquetSink, ParquetSource};
use sabot::io::{FilterSupport, ScanRequest, Sink, Source};

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("small", DataType::Int32, true),
        Field::new("price", DataType::Float64, true),
        Field::new("name", DataType::Utf8, true),
        Field::new("ts", DataType::Timestamp(TimeUnit::Millisecond, None), true),
    ]))
}

/// Rows 0..n, sorted on every column; `small` is null on odd rows.
fn batch(range: std::ops::Range<i64>) -> RecordBatch {
    RecordBatch::try_new(
        schema(),
        vec![
            Arc::new(Int64Array::from_iter_values(range.clone())),
            Arc::new(Int32Array::from_iter(range.clone().map(|i| (i % 2 == 0).then_some(i as i32)))),
            Arc::new(Float64Array::from_iter_values(range.clone().map(|i| i as f64 * 0.5))),
            Arc::new(StringArray::from_iter_values(range.clone().map(|i| format!("n{i:06}")))),
            Arc::new(TimestampMillisecondArray::from_iter_values(range.map(|i| 1_700_000_000_000 + i * 1000))),
        ],
    )
    .unwrap()
}

const GROUP: i64 = 10_000;

/// Writes 100 000 rows in row groups of 10 000.
fn write_file(path: &Path) {
    let mut w = ParquetSink::new(path).row_group_size(GROUP as usize).open(schema()).unwrap();
    for chunk in 0..10 {
        w.write(&batch(chunk * GROUP..(chunk + 1) * GROUP)).unwrap();
    }
    w.finish().unwrap();
}

fn read(source: &dyn Source, projection: Option<Vec<usize>>, filters: Vec<Expr>) -> (usize, Vec<RecordBatch>) {
    let scan = source.scan(&ScanRequest { projection, filters, batch_size: 4096, ..Default::default() }).unwrap();
    let batches = (0..scan.morsel_count()).flat_map(|m| scan.read_morsel(m).unwrap()).map(|b| b.unwrap()).collect();
    (scan.morsel_count(), batches)
}

fn ids(batches: &[RecordBatch]) -> Vec<i64> {
    batches.iter().flat_map(|b| b.column(0).as_primitive::<Int64Type>().values().to_vec()).collect()
}

#[test]
fn round_trip_and_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("t.parquet");
    write_file(&p);
    let source = ParquetSource::new(&p).unwrap();
    assert_eq!(source.num_rows(), Some(100_000));
    assert_eq!(source.num_row_groups(), 10);
    assert_eq!(source.schema(), schema());
    let (morsels, batches) = read(&source, None, vec![]);
    assert_eq!(morsels, 10);
    let all = arrow::compute::concat_batches(&schema(), &batches).unwrap();
    assert_eq!(all, batch(0..100_000));
}

#[test]
fn projection_in_any_order() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("t.parquet");
    write_file(&p);
    let source = ParquetSource::new(&p).unwrap();
    let (_, batches) = read(&source, Some(vec![3, 0]), vec![]);
    let b = &batches[0];
    assert_eq!(b.schema().field(0).name(), "name");
    assert_eq!(b.schema().field(1).name(), "id");
    assert_eq!(b.column(0).as_string::<i32>().value(5), "n000005");
    assert_eq!(b.column(1).as_primitive::<Int64Type>().value(5), 5);
}

#[test]
fn pruning_skips_row_groups() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("t.parquet");
    write_file(&p);
    let source = ParquetSource::new(&p).unwrap();
    let ts = |ms: i64| lit(sabot::expr::ScalarValue::TimestampMillis(Some(1_700_000_000_000 + ms)));
    let cases: Vec<(Expr, usize)> = vec![
        (col("id").gt_eq(lit(85_000i64)), 2),
        (col("id").lt(lit(10_000i64)), 1),
        (col("id").lt_eq(lit(10_000i64)), 2),
        (col("id").eq(lit(43_210i64)), 1),
        (lit(43_210i64).eq(col("id")), 1),
        (lit(20_000i64).gt(col("id")), 2),
        (col("id").gt(lit(1_000_000i64)), 0),
        (col("small").eq(lit(25_000)), 1),    // Int32 column, Int32 literal
        (col("small").gt(lit(80_000i64)), 2), // Int32 column, Int64 literal
        (col("id").lt(lit(10_000.5)), 2),     // Int64 column, Float64 literal
        (col("price").gt(lit(45_000.0)), 1),  // Float64 (nan_count = 0)
        (col("price").lt(lit(0.25)), 1),
        (col("name").eq(lit("n033333")), 1),
        (col("name").lt(lit("n020000")), 2),
        (col("ts").gt_eq(ts(90_000_000)), 1),
        (col("ts").lt(ts(1)), 1),
        (col("id").gt_eq(lit(20_000i64)).and(col("id").lt(lit(40_000i64))), 2),
        (col("small").is_null(), 10),
        (col("id").is_null(), 0),
        (col("id").is_not_null(), 10),
        (col("id").not_eq(lit(3i64)), 10), // not used for pruning
        (col("missing").gt(lit(3i64)), 10),
    ];
    for (filter, expected) in cases {
        let (morsels, batches) = read(&source, None, filter.split_conjunction().into_iter().cloned().collect());
        assert_eq!(morsels, expected, "{filter}");
        let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
        assert_eq!(rows, expected * GROUP as usize, "{filter}");
    }
    assert_eq!(source.filter_support(&col("id").gt(lit(3i64))), FilterSupport::Inexact);
    assert_eq!(source.filter_support(&col("id").is_null()), FilterSupport::Inexact);
    assert_eq!(source.filter_support(&col("id").not_eq(lit(3i64))), FilterSupport::Unsupported);
    assert_eq!(source.filter_support(&col("nope").gt(lit(3i64))), FilterSupport::Unsupported);
    // The kept row groups are the right ones.
    let (_, batches) = read(&source, None, vec![col("id").gt_eq(lit(85_000i64))]);
    assert_eq!(ids(&batches), (80_000..100_000).collect::<Vec<_>>());
}

#[test]
fn pruning_is_conservative_with_nan() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("nan.parquet");
    let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Float64, true)]));
    let mut w = ParquetSink::new(&p).row_group_size(2).open(schema.clone()).unwrap();
    let b = RecordBatch::try_new(schema, vec![Arc::new(Float64Array::from(vec![1.0, f64::NAN, 2.0, 3.0]))]).unwrap();
    w.write(&b).unwrap();
    w.finish().unwrap();
    let source = ParquetSource::new(&p).unwrap();
    // Arrow orders NaN above every number, so `x > 10` may match the group holding NaN.
    assert_eq!(read(&source, None, vec![col("x").gt(lit(10.0))]).0, 1);
    assert_eq!(read(&source, None, vec![col("x").eq(lit(10.0))]).0, 0);
}

#[test]
fn directory_and_several_files() {
    let dir = tempfile::tempdir().unwrap();
    write_file(&dir.path().join("a.parquet"));
    write_file(&dir.path().join("b.parquet"));
    std::fs::write(dir.path().join("_SUCCESS"), "").unwrap();
    let source = ParquetSource::new(dir.path()).unwrap();
    assert_eq!(source.num_rows(), Some(200_000));
    let (morsels, _) = read(&source, None, vec![col("id").lt(lit(500i64))]);
    assert_eq!(morsels, 2);
    let two = ParquetSource::from_paths([dir.path().join("a.parquet"), dir.path().join("b.parquet")]).unwrap();
    assert_eq!(two.num_row_groups(), 20);
}

#[test]
fn small_row_groups_are_merged() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("small.parquet");
    let mut w = ParquetSink::new(&p).row_group_size(100).compression(Compression::UNCOMPRESSED).open(schema()).unwrap();
    w.write(&batch(0..10_000)).unwrap();
    w.finish().unwrap();
    let source = ParquetSource::new(&p).unwrap();
    assert_eq!(source.num_row_groups(), 100);
    let (morsels, batches) = read(&source, None, vec![]);
    assert!(morsels < 100, "{morsels}");
    assert_eq!(ids(&batches), (0..10_000).collect::<Vec<_>>());
}

#[test]
fn errors_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.parquet");
    let err = ParquetSource::new(&missing).unwrap_err();
    assert!(matches!(&err, SabotError::Io { path, .. } if path == &missing), "{err:?}");

    let not_parquet = dir.path().join("text.parquet");
    std::fs::write(&not_parquet, "id,name\n1,a\n2,b\n3,c\n4,d\n").unwrap();
    let err = ParquetSource::new(&not_parquet).unwrap_err();
    assert!(matches!(&err, SabotError::Format { path, .. } if path == &not_parquet), "{err:?}");
    assert!(err.to_string().starts_with(&not_parquet.display().to_string()), "{err}");

    let tiny = dir.path().join("tiny.parquet");
    std::fs::write(&tiny, "PAR1").unwrap();
    let err = ParquetSource::new(&tiny).unwrap_err();
    assert!(matches!(&err, SabotError::Format { path, .. } if path == &tiny), "{err:?}");

    // Corrupt footer: a valid file with its footer bytes overwritten.
    let good = dir.path().join("good.parquet");
    write_file(&good);
    let mut bytes = std::fs::read(&good).unwrap();
    let n = bytes.len();
    for b in &mut bytes[n - 200..n - 8] {
        *b = 0xAB;
    }
    let corrupt = dir.path().join("corrupt.parquet");
    std::fs::write(&corrupt, &bytes).unwrap();
    let err = ParquetSource::new(&corrupt).unwrap_err();
    assert!(matches!(&err, SabotError::Format { path, .. } if path == &corrupt), "{err:?}");

    // Truncated file (footer gone).
    let truncated = dir.path().join("truncated.parquet");
    std::fs::write(&truncated, &std::fs::read(&good).unwrap()[..n / 2]).unwrap();
    let err = ParquetSource::new(&truncated).unwrap_err();
    assert!(matches!(&err, SabotError::Format { path, .. } if path == &truncated), "{err:?}");
}

#[test]
fn sink_compression_and_atomic_write() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("z.parquet");
    let mut w = ParquetSink::new(&p).compression(Compression::ZSTD(Default::default())).open(schema()).unwrap();
    w.write(&batch(0..100)).unwrap();
    assert!(!p.exists());
    w.finish().unwrap();
    let source = ParquetSource::new(&p).unwrap();
    let (_, batches) = read(&source, None, vec![]);
    assert_eq!(batches[0], batch(0..100));
    // Dropping an unfinished writer leaves nothing behind.
    let p2 = dir.path().join("dropped.parquet");
    let w = ParquetSink::new(&p2).open(schema()).unwrap();
    drop(w);
    assert!(!p2.exists());
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}

#[test]
fn error_messages() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("x.parquet");
    std::fs::write(&p, "this is not parquet at all, just text\n").unwrap();
    assert_eq!(
        ParquetSource::new(&p).unwrap_err().to_string(),
        format!(
            "{}: footer: not a Parquet file: it does not end with the PAR1 magic (truncated, or another format)",
            p.display()
        )
    );
    // Corrupt data pages (footer intact): the error names the file and the row group.
    let good = dir.path().join("good.parquet");
    write_file(&good);
    let mut b = std::fs::read(&good).unwrap();
    for x in &mut b[100..2000] {
        *x = 0x11;
    }
    std::fs::write(&p, &b).unwrap();
    let scan = ParquetSource::new(&p).unwrap().scan(&ScanRequest::default()).unwrap();
    let err = scan.read_morsel(0).and_then(|mut it| it.next().unwrap()).unwrap_err();
    assert!(err.to_string().starts_with(&format!("{}: row group 0: ", p.display())), "{err}");
}
