//! CSV source and sink: round trips, projection, morsels, errors with lines and columns, rejects.

use std::path::Path;
use std::sync::Arc;

use arrow::array::{Array, AsArray, Float64Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Float64Type, Int64Type, Schema, SchemaRef};
use sabot::SabotError;
use sabot::io::csv::{CsvSink, CsvSource};
use sabot::io::{ScanRequest, Sink, Source};

fn read_all(source: &dyn Source, projection: Option<Vec<usize>>, batch_size: usize) -> sabot::Result<Vec<RecordBatch>> {
    let scan = source.scan(&ScanRequest { projection, filters: vec![], batch_size, ..Default::default() })?;
    let mut out = Vec::new();
    for m in 0..scan.morsel_count() {
        for b in scan.read_morsel(m)? {
            out.push(b?);
        }
    }
    Ok(out)
}

fn concat(batches: &[RecordBatch], schema: &SchemaRef) -> RecordBatch {
    arrow::compute::concat_batches(schema, batches).unwrap()
}

fn schema3() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, true),
        Field::new("amount", DataType::Float64, true),
        Field::new("name", DataType::Utf8, true),
    ]))
}

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn infers_and_reads_exact_content() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "a.csv", "id,amount,name\n1,2.5,x\n2,,\"y, z\"\n3,-1e3,\"say \"\"hi\"\"\"\r\n");
    let source = CsvSource::new(&p);
    let schema = source.try_schema().unwrap();
    assert_eq!(schema.field(0).data_type(), &DataType::Int64);
    assert_eq!(schema.field(1).data_type(), &DataType::Float64);
    assert_eq!(schema.field(2).data_type(), &DataType::Utf8);
    assert_eq!(Source::schema(&source), schema);
    let batch = concat(&read_all(&source, None, 1024).unwrap(), &schema);
    assert_eq!(batch.num_rows(), 3);
    assert_eq!(batch.column(0).as_primitive::<Int64Type>().values().to_vec(), vec![1, 2, 3]);
    let amount = batch.column(1).as_primitive::<Float64Type>();
    assert_eq!(amount.value(0), 2.5);
    assert!(amount.is_null(1));
    assert_eq!(amount.value(2), -1000.0);
    let name = batch.column(2).as_string::<i32>();
    assert_eq!(name.value(0), "x");
    assert_eq!(name.value(1), "y, z");
    assert_eq!(name.value(2), "say \"hi\"");
}

#[test]
fn projection_reorders_and_small_batches() {
    let dir = tempfile::tempdir().unwrap();
    let mut text = String::from("id,amount,name\n");
    for i in 0..1000 {
        text.push_str(&format!("{i},{}.5,n{i}\n", i * 2));
    }
    let p = write(dir.path(), "p.csv", &text);
    let source = CsvSource::new(&p).morsel_bytes(1000);
    let scan = source
        .scan(&ScanRequest { projection: Some(vec![2, 0]), filters: vec![], batch_size: 64, ..Default::default() })
        .unwrap();
    assert!(scan.morsel_count() > 10, "expected many morsels, got {}", scan.morsel_count());
    assert_eq!(scan.schema().field(0).name(), "name");
    let batches = read_all(&source, Some(vec![2, 0]), 64).unwrap();
    assert!(batches.iter().all(|b| b.num_rows() <= 64));
    let batch = concat(&batches, &scan.schema());
    assert_eq!(batch.num_rows(), 1000);
    let ids = batch.column(1).as_primitive::<Int64Type>();
    let names = batch.column(0).as_string::<i32>();
    for i in 0..1000 {
        assert_eq!(ids.value(i), i as i64);
        assert_eq!(names.value(i), format!("n{i}"));
    }
}

#[test]
fn explicit_schema_no_header_delimiter() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "t.tsv", "1\t1.5\ta\n2\t2.5\tb");
    let source = CsvSource::new(&p).has_header(false).delimiter(b'\t').with_schema(schema3());
    let batch = concat(&read_all(&source, None, 10).unwrap(), &schema3());
    let expected = RecordBatch::try_new(
        schema3(),
        vec![
            Arc::new(Int64Array::from(vec![1, 2])),
            Arc::new(Float64Array::from(vec![1.5, 2.5])),
            Arc::new(StringArray::from(vec!["a", "b"])),
        ],
    )
    .unwrap();
    assert_eq!(batch, expected);
    let inferred = CsvSource::new(&p).has_header(false).delimiter(b'\t').try_schema().unwrap();
    assert_eq!(inferred.field(0).name(), "column_1");
}

#[test]
fn newlines_in_values_mode() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "n.csv", "id,amount,name\n1,1.0,\"two\nlines\"\n2,2.0,x\n");
    let source = CsvSource::new(&p).with_schema(schema3()).newlines_in_values(true).morsel_bytes(4);
    let scan = source.scan(&ScanRequest { batch_size: 10, ..Default::default() }).unwrap();
    assert_eq!(scan.morsel_count(), 1);
    let batch = concat(&read_all(&source, None, 10).unwrap(), &schema3());
    assert_eq!(batch.column(2).as_string::<i32>().value(0), "two\nlines");
    assert_eq!(batch.num_rows(), 2);
}

fn expect_format(err: SabotError, path: &Path, location: &str, message_part: &str) {
    match &err {
        SabotError::Format { path: p, location: l, message } => {
            assert_eq!(p, path, "{err}");
            assert_eq!(l.as_deref(), Some(location), "{err}");
            assert!(message.contains(message_part), "{err}");
        }
        other => panic!("expected a format error, got {other:?}"),
    }
}

#[test]
fn wrong_field_count_names_line() {
    let dir = tempfile::tempdir().unwrap();
    let mut text = String::from("id,amount,name\n");
    for i in 0..100 {
        text.push_str(&format!("{i},1.0,x\n"));
    }
    text.push_str("100,2.0\n"); // line 102
    let p = write(dir.path(), "w.csv", &text);
    let source = CsvSource::new(&p).with_schema(schema3()).morsel_bytes(100);
    let err = read_all(&source, None, 7).unwrap_err();
    expect_format(err, &p, "line 102", "expected 3 fields, found 2");
}

#[test]
fn unparsable_value_names_line_and_column_in_later_morsel() {
    let dir = tempfile::tempdir().unwrap();
    let mut text = String::from("id,amount,name\n");
    for i in 0..5000 {
        if i == 4321 {
            text.push_str("4321,abc,x\n"); // line 4323
        } else {
            text.push_str(&format!("{i},{i}.25,name{i}\n"));
        }
    }
    let p = write(dir.path(), "u.csv", &text);
    let source = CsvSource::new(&p).with_schema(schema3()).morsel_bytes(4096);
    let err = read_all(&source, None, 1000).unwrap_err();
    assert_eq!(err.to_string(), format!("{}: line 4323, column 'amount': cannot parse 'abc' as Float64", p.display()));
    expect_format(err, &p, "line 4323, column 'amount'", "cannot parse 'abc' as Float64");
    // A projection that does not read `amount` does not see the bad value.
    let batches = read_all(&source, Some(vec![0]), 1000).unwrap();
    assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 5000);
}

#[test]
fn missing_file_is_io_error() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("missing.csv");
    let err = CsvSource::new(&p).try_schema().unwrap_err();
    assert!(matches!(&err, SabotError::Io { path, .. } if path == &p), "{err:?}");
    let err = CsvSource::new(&p).with_schema(schema3()).scan(&ScanRequest::default()).err().unwrap();
    assert!(matches!(&err, SabotError::Io { path, .. } if path == &p), "{err:?}");
}

#[test]
fn rejects_file_collects_bad_rows() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        dir.path(),
        "r.csv",
        "id,amount,name\n1,1.0,a\n2,oops,b\n3,3.0\n4,4.0,d\n\n5,5.0,e,extra\nx,6.0,f\n7,7.0,\"g\"\n",
    );
    let rejects = dir.path().join("rejects.csv");
    let source = CsvSource::new(&p).with_schema(schema3()).rejects(&rejects);
    let batch = concat(&read_all(&source, None, 1000).unwrap(), &schema3());
    assert_eq!(batch.column(0).as_primitive::<Int64Type>().values().to_vec(), vec![1, 4, 7]);
    assert_eq!(batch.column(2).as_string::<i32>().value(2), "g");
    let text = std::fs::read_to_string(&rejects).unwrap();
    assert_eq!(
        text,
        "line,reason,record\n\
         3,column 'amount': cannot parse 'oops' as Float64,\"2,oops,b\"\n\
         4,\"expected 3 fields, found 2\",\"3,3.0\"\n\
         7,\"expected 3 fields, found 4\",\"5,5.0,e,extra\"\n\
         8,column 'id': cannot parse 'x' as Int64,\"x,6.0,f\"\n"
    );
}

#[test]
fn rejects_across_many_batches_and_morsels() {
    let dir = tempfile::tempdir().unwrap();
    let mut text = String::from("id,amount,name\n");
    let mut bad_lines = Vec::new();
    for i in 0..20_000 {
        if i % 997 == 0 {
            text.push_str(&format!("{i},bad,n\n"));
            bad_lines.push(i + 2);
        } else {
            text.push_str(&format!("{i},1.5,n\n"));
        }
    }
    let p = write(dir.path(), "m.csv", &text);
    let rejects = dir.path().join("m.rejects.csv");
    let source = CsvSource::new(&p).with_schema(schema3()).rejects(&rejects).morsel_bytes(10_000);
    let batches = read_all(&source, None, 512).unwrap();
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    assert_eq!(rows, 20_000 - bad_lines.len());
    let ids: Vec<i64> =
        batches.iter().flat_map(|b| b.column(0).as_primitive::<Int64Type>().values().to_vec()).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]));
    let mut lines: Vec<usize> = std::fs::read_to_string(&rejects)
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| l.split(',').next().unwrap().parse().unwrap())
        .collect();
    lines.sort();
    assert_eq!(lines, bad_lines);
}

#[test]
fn sink_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("out.csv");
    let batch = RecordBatch::try_new(
        schema3(),
        vec![
            Arc::new(Int64Array::from(vec![Some(1), None, Some(3)])),
            Arc::new(Float64Array::from(vec![Some(0.5), Some(-2.0), None])),
            Arc::new(StringArray::from(vec![Some("a,b"), Some("q\"uote"), Some("line\nbreak")])),
        ],
    )
    .unwrap();
    let sink = CsvSink::new(&p);
    let mut w = sink.open(schema3()).unwrap();
    w.write(&batch.slice(0, 2)).unwrap();
    w.write(&batch.slice(2, 1)).unwrap();
    assert!(!p.exists(), "the file appears only when finished");
    w.finish().unwrap();
    let back = CsvSource::new(&p).with_schema(schema3()).newlines_in_values(true);
    let read = concat(&read_all(&back, None, 100).unwrap(), &schema3());
    assert_eq!(read, batch);
    // Empty result: header only.
    let p2 = dir.path().join("empty.csv");
    CsvSink::new(&p2).open(schema3()).unwrap().finish().unwrap();
    assert_eq!(std::fs::read_to_string(&p2).unwrap(), "id,amount,name\n");
    // Reading a header-only file yields nothing.
    assert!(read_all(&CsvSource::new(&p2).with_schema(schema3()), None, 10).unwrap().is_empty());
}
