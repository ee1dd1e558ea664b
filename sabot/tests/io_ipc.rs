//! Arrow IPC source and sink: zero-copy round trips, projection, stream format, errors.

use std::sync::Arc;

use arrow::array::{AsArray, DictionaryArray, Float64Array, Int32Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Int32Type, Int64Type, Schema, SchemaRef};
use sabot::SabotError;
use sabot::io::ipc::{IpcSink, IpcSource};
use sabot::io::{ScanRequest, Sink, Source};

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("x", DataType::Float64, true),
        Field::new("s", DataType::Utf8, true),
        Field::new("d", DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8)), true),
    ]))
}

fn batch(start: i64, n: i64) -> RecordBatch {
    RecordBatch::try_new(
        schema(),
        vec![
            Arc::new(Int64Array::from_iter_values(start..start + n)),
            Arc::new(Float64Array::from_iter((start..start + n).map(|i| (i % 3 != 0).then_some(i as f64)))),
            Arc::new(StringArray::from_iter_values((start..start + n).map(|i| format!("s{i}")))),
            Arc::new(
                DictionaryArray::<Int32Type>::try_new(
                    Int32Array::from_iter_values((start..start + n).map(|i| (i % 3) as i32)),
                    Arc::new(StringArray::from(vec!["a", "b", "c"])),
                )
                .unwrap(),
            ),
        ],
    )
    .unwrap()
}

fn write(path: &std::path::Path, batches: &[RecordBatch]) {
    let mut w = IpcSink::new(path).open(schema()).unwrap();
    for b in batches {
        w.write(b).unwrap();
    }
    w.finish().unwrap();
}

fn read(source: &IpcSource, projection: Option<Vec<usize>>, batch_size: usize) -> Vec<RecordBatch> {
    let scan = source.scan(&ScanRequest { projection, filters: vec![], batch_size, ..Default::default() }).unwrap();
    (0..scan.morsel_count()).flat_map(|m| scan.read_morsel(m).unwrap()).map(|b| b.unwrap()).collect()
}

#[test]
fn file_round_trip_zero_copy() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("t.arrow");
    let batches = vec![batch(0, 1000), batch(1000, 500), batch(1500, 1)];
    write(&p, &batches);
    let source = IpcSource::new(&p).unwrap();
    assert_eq!(source.num_rows(), Some(1501));
    assert_eq!(source.num_batches(), 3);
    assert_eq!(source.schema(), schema());
    let back = read(&source, None, 100_000);
    assert_eq!(back, batches);
    // Zero copy: reads point into the mapping, so two reads share one address.
    let scan = source.scan(&ScanRequest { batch_size: 100, ..Default::default() }).unwrap();
    let first = scan.read_morsel(0).unwrap().next().unwrap().unwrap();
    let ptr = first.column(0).as_primitive::<Int64Type>().values().as_ptr() as usize;
    // Reading twice yields the same address: the data is not copied per read.
    let scan2 = source.scan(&ScanRequest { batch_size: 100, ..Default::default() }).unwrap();
    let again = scan2.read_morsel(0).unwrap().next().unwrap().unwrap();
    assert_eq!(again.column(0).as_primitive::<Int64Type>().values().as_ptr() as usize, ptr);
}

#[test]
fn projection_and_batch_size() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("t.arrow");
    write(&p, &[batch(0, 1000)]);
    let source = IpcSource::new(&p).unwrap();
    let back = read(&source, Some(vec![3, 0]), 300);
    assert_eq!(back.iter().map(|b| b.num_rows()).collect::<Vec<_>>(), vec![300, 300, 300, 100]);
    assert_eq!(back[0].schema().field(0).name(), "d");
    assert_eq!(back[0].column(1).as_primitive::<Int64Type>().value(7), 7);
    let d = back[1].column(0).as_dictionary::<Int32Type>();
    assert_eq!(d.values().as_string::<i32>().value(d.keys().value(1) as usize), ["a", "b", "c"][301 % 3]);
}

#[test]
fn stream_format() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("t.arrows");
    let mut out = Vec::new();
    {
        let mut w = arrow::ipc::writer::StreamWriter::try_new(&mut out, &schema()).unwrap();
        w.write(&batch(0, 10)).unwrap();
        w.write(&batch(10, 10)).unwrap();
        w.finish().unwrap();
    }
    std::fs::write(&p, &out).unwrap();
    let source = IpcSource::new(&p).unwrap();
    assert_eq!(source.num_rows(), Some(20));
    assert_eq!(read(&source, None, 1024), vec![batch(0, 10), batch(10, 10)]);
    let projected = read(&source, Some(vec![1]), 1024);
    assert_eq!(projected[1].column(0).as_primitive::<arrow::datatypes::Float64Type>().value(1), 11.0);
    // Truncated stream.
    let t = dir.path().join("trunc.arrows");
    std::fs::write(&t, &out[..out.len() - 40]).unwrap();
    let err = IpcSource::new(&t).unwrap_err();
    assert!(matches!(&err, SabotError::Format { path, .. } if path == &t), "{err:?}");
}

#[test]
fn errors_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.arrow");
    let err = IpcSource::new(&missing).unwrap_err();
    assert!(matches!(&err, SabotError::Io { path, .. } if path == &missing), "{err:?}");

    let p = dir.path().join("t.arrow");
    write(&p, &[batch(0, 1000), batch(1000, 1000)]);
    let bytes = std::fs::read(&p).unwrap();

    // Truncated: footer gone.
    let t = dir.path().join("truncated.arrow");
    std::fs::write(&t, &bytes[..bytes.len() / 2]).unwrap();
    let err = IpcSource::new(&t).unwrap_err();
    assert!(matches!(&err, SabotError::Format { path, .. } if path == &t), "{err:?}");
    assert!(err.to_string().contains("truncated"), "{err}");

    // Every truncation length and every single-byte corruption is an error or a valid read, never a panic.
    for cut in (0..bytes.len()).step_by(97) {
        let c = dir.path().join("cut.arrow");
        std::fs::write(&c, &bytes[..cut]).unwrap();
        if let Ok(source) = IpcSource::new(&c)
            && let Ok(scan) = source.scan(&ScanRequest::default())
        {
            for m in 0..scan.morsel_count() {
                let _ = scan.read_morsel(m).map(|it| it.count());
            }
        }
    }

    // Not an IPC file at all.
    let text = dir.path().join("text.arrow");
    std::fs::write(&text, "hello, world\n").unwrap();
    let err = IpcSource::new(&text).unwrap_err();
    assert!(matches!(&err, SabotError::Format { path, .. } if path == &text), "{err:?}");

    // Empty file.
    let empty = dir.path().join("empty.arrow");
    std::fs::write(&empty, "").unwrap();
    let err = IpcSource::new(&empty).unwrap_err();
    assert!(matches!(&err, SabotError::Format { path, .. } if path == &empty), "{err:?}");
}
