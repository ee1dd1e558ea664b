//! JSON-lines source and sink: round trips, projection, errors with lines, rejects.

use std::sync::Arc;

use arrow::array::{Array, AsArray, Float64Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef};
use sabot::SabotError;
use sabot::io::json::{JsonLinesSink, JsonLinesSource};
use sabot::io::{ScanRequest, Sink, Source};

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, true),
        Field::new("x", DataType::Float64, true),
        Field::new("s", DataType::Utf8, true),
    ]))
}

fn read(source: &dyn Source, projection: Option<Vec<usize>>, batch_size: usize) -> sabot::Result<Vec<RecordBatch>> {
    let scan = source.scan(&ScanRequest { projection, filters: vec![], batch_size, ..Default::default() })?;
    let mut out = Vec::new();
    for m in 0..scan.morsel_count() {
        for b in scan.read_morsel(m)? {
            out.push(b?);
        }
    }
    Ok(out)
}

#[test]
fn infer_and_read() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("a.jsonl");
    std::fs::write(
        &p,
        "{\"id\": 1, \"x\": 1.5, \"s\": \"a\"}\n\n{\"id\": 2, \"s\": null}\r\n{\"x\": 3.0, \"id\": 3, \"s\": \"c\"}",
    )
    .unwrap();
    let source = JsonLinesSource::new(&p);
    let inferred = source.try_schema().unwrap();
    assert_eq!(inferred.field_with_name("id").unwrap().data_type(), &DataType::Int64);
    let batches = read(&source, None, 1024).unwrap();
    let b = arrow::compute::concat_batches(&batches[0].schema(), &batches).unwrap();
    assert_eq!(b.num_rows(), 3);
    let id = b.column(inferred.index_of("id").unwrap()).as_primitive::<Int64Type>();
    assert_eq!(id.values().to_vec(), vec![1, 2, 3]);
    let s = b.column(inferred.index_of("s").unwrap()).as_string::<i32>();
    assert!(s.is_null(1));
    assert_eq!(s.value(2), "c");
}

#[test]
fn round_trip_with_schema_projection_and_morsels() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("rt.jsonl");
    let n = 5000;
    let batch = RecordBatch::try_new(
        schema(),
        vec![
            Arc::new(Int64Array::from_iter_values(0..n)),
            Arc::new(Float64Array::from_iter((0..n).map(|i| (i % 2 == 0).then_some(i as f64 / 4.0)))),
            Arc::new(StringArray::from_iter_values((0..n).map(|i| format!("q\"{i}\n")))),
        ],
    )
    .unwrap();
    let mut w = JsonLinesSink::new(&p).open(schema()).unwrap();
    w.write(&batch).unwrap();
    w.finish().unwrap();
    let source = JsonLinesSource::new(&p).with_schema(schema()).morsel_bytes(10_000);
    let scan = source.scan(&ScanRequest { batch_size: 333, ..Default::default() }).unwrap();
    assert!(scan.morsel_count() > 5);
    let back = read(&source, None, 333).unwrap();
    assert_eq!(arrow::compute::concat_batches(&schema(), &back).unwrap(), batch);
    let projected = read(&source, Some(vec![2, 0]), 1000).unwrap();
    let projected = arrow::compute::concat_batches(&projected[0].schema(), &projected).unwrap();
    assert_eq!(projected, batch.project(&[2, 0]).unwrap());
}

#[test]
fn bad_line_names_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bad.jsonl");
    let mut text = String::new();
    for i in 0..3000 {
        if i == 2500 {
            text.push_str("{\"id\": 5, \"x\": \n"); // line 2501
        } else {
            text.push_str(&format!("{{\"id\": {i}, \"x\": 1.0, \"s\": \"v\"}}\n"));
        }
    }
    std::fs::write(&p, &text).unwrap();
    let source = JsonLinesSource::new(&p).with_schema(schema()).morsel_bytes(5000);
    let err = read(&source, None, 100).unwrap_err();
    match &err {
        SabotError::Format { path, location, .. } => {
            assert_eq!(path, &p);
            assert_eq!(location.as_deref(), Some("line 2501"), "{err}");
        }
        other => panic!("{other:?}"),
    }

    // A value of the wrong type names the field.
    let p2 = dir.path().join("type.jsonl");
    std::fs::write(&p2, "{\"id\": 1}\n{\"id\": \"abc\"}\n").unwrap();
    let err = read(&JsonLinesSource::new(&p2).with_schema(schema()), None, 100).unwrap_err();
    match &err {
        SabotError::Format { path, location, .. } => {
            assert_eq!(path, &p2);
            assert_eq!(location.as_deref(), Some("line 2, column 'id'"), "{err}");
        }
        other => panic!("{other:?}"),
    }

    // Inference on a bad file names the line too.
    let p3 = dir.path().join("infer.jsonl");
    std::fs::write(&p3, "{\"id\": 1}\n{\"id\": 2}\nnot json\n").unwrap();
    let err = JsonLinesSource::new(&p3).try_schema().unwrap_err();
    assert!(matches!(&err, SabotError::Format { location: Some(l), .. } if l == "line 3"), "{err:?}");

    let missing = dir.path().join("missing.jsonl");
    let err = JsonLinesSource::new(&missing).try_schema().unwrap_err();
    assert!(matches!(&err, SabotError::Io { path, .. } if path == &missing), "{err:?}");
}

#[test]
fn rejects_mode() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("r.jsonl");
    std::fs::write(&p, "{\"id\": 1}\n{\"id\": \"x\"}\n{oops\n{\"id\": 4}\n").unwrap();
    let rejects = dir.path().join("rejects.csv");
    let source = JsonLinesSource::new(&p).with_schema(schema()).rejects(&rejects);
    let batches = read(&source, None, 100).unwrap();
    let ids: Vec<i64> =
        batches.iter().flat_map(|b| b.column(0).as_primitive::<Int64Type>().values().to_vec()).collect();
    assert_eq!(ids, vec![1, 4]);
    let text = std::fs::read_to_string(&rejects).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "line,reason,record");
    assert!(lines[1].starts_with("2,\"column 'id': failed to parse "), "{text}");
    assert!(lines[1].ends_with(",\"{\"\"id\"\": \"\"x\"\"}\""), "{text}");
    assert!(lines[2].starts_with("3,") && lines[2].ends_with(",{oops"), "{text}");
    assert_eq!(lines.len(), 3);
}
