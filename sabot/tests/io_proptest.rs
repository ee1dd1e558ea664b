//! Fuzzing the text readers: arbitrary bytes and CSV-ish text never panic, and valid
//! generated CSV round-trips exactly whatever the morsel size.

use std::sync::Arc;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef};
use proptest::prelude::*;
use sabot::io::csv::CsvSource;
use sabot::io::ipc::IpcSource;
use sabot::io::json::JsonLinesSource;
use sabot::io::{ScanRequest, Source};

fn drain(source: &dyn Source, batch_size: usize) -> sabot::Result<Vec<RecordBatch>> {
    let scan = source.scan(&ScanRequest { projection: None, filters: vec![], batch_size, ..Default::default() })?;
    let mut out = Vec::new();
    for m in 0..scan.morsel_count() {
        for b in scan.read_morsel(m)? {
            out.push(b?);
        }
    }
    Ok(out)
}

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("a", DataType::Int64, true),
        Field::new("b", DataType::Float64, true),
        Field::new("c", DataType::Utf8, true),
    ]))
}

fn csvish() -> impl Strategy<Value = Vec<u8>> {
    let token = prop_oneof![
        Just(b",".to_vec()),
        Just(b"\n".to_vec()),
        Just(b"\r\n".to_vec()),
        Just(b"\"".to_vec()),
        Just(b"\"\"".to_vec()),
        Just(b"1".to_vec()),
        Just(b"-2.5".to_vec()),
        Just(b"abc".to_vec()),
        Just(b"".to_vec()),
        Just(vec![0xFF, 0xFE]),
        Just(b"{\"a\": 1}".to_vec()),
        Just(b"[".to_vec()),
        Just(b"}".to_vec()),
    ];
    proptest::collection::vec(token, 0..60).prop_map(|v| v.concat())
}

fn any_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![proptest::collection::vec(any::<u8>(), 0..300), csvish()]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn csv_never_panics(data in any_bytes(), morsel in 1usize..64, batch in 1usize..8, header: bool, rejects: bool, nl: bool) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f.csv");
        std::fs::write(&p, &data).unwrap();
        let mut inferred = CsvSource::new(&p).has_header(header).morsel_bytes(morsel).newlines_in_values(nl);
        if rejects {
            inferred = inferred.rejects(dir.path().join("rejects.csv"));
        }
        let _ = drain(&inferred, batch);
        let typed = CsvSource::new(&p).has_header(header).with_schema(schema()).morsel_bytes(morsel).newlines_in_values(nl);
        let typed = if rejects { typed.rejects(dir.path().join("rejects2.csv")) } else { typed };
        if let Err(e) = drain(&typed, batch) {
            // Errors name the file.
            prop_assert!(e.to_string().starts_with(&p.display().to_string()), "{}", e);
        }
    }

    #[test]
    fn json_never_panics(data in any_bytes(), morsel in 1usize..64, batch in 1usize..8, rejects: bool) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f.jsonl");
        std::fs::write(&p, &data).unwrap();
        let _ = drain(&JsonLinesSource::new(&p).morsel_bytes(morsel), batch);
        let mut typed = JsonLinesSource::new(&p).with_schema(schema()).morsel_bytes(morsel);
        if rejects {
            typed = typed.rejects(dir.path().join("rejects.csv"));
        }
        if let Err(e) = drain(&typed, batch) {
            prop_assert!(e.to_string().starts_with(&p.display().to_string()), "{}", e);
        }
    }

    #[test]
    fn ipc_never_panics(data in proptest::collection::vec(any::<u8>(), 0..200)) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f.arrow");
        let mut bytes = b"ARROW1\0\0".to_vec();
        bytes.extend_from_slice(&data);
        std::fs::write(&p, &bytes).unwrap();
        if let Ok(source) = IpcSource::new(&p) {
            let _ = drain(&source, 10);
        }
        std::fs::write(&p, &data).unwrap();
        if let Ok(source) = IpcSource::new(&p) {
            let _ = drain(&source, 10);
        }
    }

    #[test]
    fn valid_csv_round_trips_any_morsel_size(
        rows in proptest::collection::vec((any::<i64>(), proptest::option::of(-1e9f64..1e9), "[a-z,\" ]{0,8}"), 0..50),
        morsel in 1usize..200,
        batch in 1usize..10,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("v.csv");
        let mut text = String::from("a,b,c\n");
        for (a, b, c) in &rows {
            let b = b.map(|b| b.to_string()).unwrap_or_default();
            text.push_str(&format!("{a},{b},\"{}\"\n", c.replace('"', "\"\"")));
        }
        std::fs::write(&p, &text).unwrap();
        let batches = drain(&CsvSource::new(&p).with_schema(schema()).morsel_bytes(morsel), batch).unwrap();
        let a: Vec<i64> = batches.iter().flat_map(|b| b.column(0).as_primitive::<Int64Type>().values().to_vec()).collect();
        prop_assert_eq!(a, rows.iter().map(|r| r.0).collect::<Vec<_>>());
        let c: Vec<String> = batches.iter().flat_map(|b| {
            let s = b.column(2).as_string::<i32>();
            (0..s.len()).map(|i| s.value(i).to_string()).collect::<Vec<_>>()
        }).collect();
        prop_assert_eq!(c, rows.iter().map(|r| r.2.clone()).collect::<Vec<_>>());
    }
}
