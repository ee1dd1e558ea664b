//! Memory and generated sources.

use std::sync::Arc;

use arrow::array::{AsArray, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef};
use sabot::io::memory::{GenerateSource, MemorySource};
use sabot::io::{ScanRequest, Source};

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![Field::new("i", DataType::Int64, false), Field::new("s", DataType::Utf8, false)]))
}

fn batch(start: i64, n: i64) -> RecordBatch {
    RecordBatch::try_new(
        schema(),
        vec![
            Arc::new(Int64Array::from_iter_values(start..start + n)),
            Arc::new(StringArray::from_iter_values((start..start + n).map(|i| i.to_string()))),
        ],
    )
    .unwrap()
}

#[test]
fn memory_source_morsels_projection_batch_size() {
    let source = MemorySource::new(schema(), vec![batch(0, 10), batch(10, 5)]).unwrap();
    assert_eq!(source.num_rows(), Some(15));
    let scan = source
        .scan(&ScanRequest { projection: Some(vec![1]), filters: vec![], batch_size: 4, ..Default::default() })
        .unwrap();
    assert_eq!(scan.morsel_count(), 2);
    assert_eq!(scan.schema().field(0).name(), "s");
    let m0: Vec<RecordBatch> = scan.read_morsel(0).unwrap().map(|b| b.unwrap()).collect();
    assert_eq!(m0.iter().map(|b| b.num_rows()).collect::<Vec<_>>(), vec![4, 4, 2]);
    assert_eq!(m0[2].column(0).as_string::<i32>().value(1), "9");
    assert!(scan.read_morsel(2).is_err());
    assert!(source.scan(&ScanRequest { projection: Some(vec![5]), ..Default::default() }).is_err());
    let other = Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, false)]));
    assert!(MemorySource::new(other, vec![batch(0, 1)]).is_err());
}

#[test]
fn generate_source() {
    let s = schema();
    let source = GenerateSource::new(
        schema(),
        3,
        Arc::new(move |i| {
            if i == 2 {
                return Err(sabot::SabotError::plan("boom"));
            }
            let b = batch(i as i64 * 100, 100);
            Ok(RecordBatch::try_new(s.clone(), b.columns().to_vec())?)
        }),
    );
    let scan = source
        .scan(&ScanRequest { projection: Some(vec![0]), filters: vec![], batch_size: 1000, ..Default::default() })
        .unwrap();
    assert_eq!(scan.morsel_count(), 3);
    let b = scan.read_morsel(1).unwrap().next().unwrap().unwrap();
    assert_eq!(b.column(0).as_primitive::<Int64Type>().value(0), 100);
    assert!(scan.read_morsel(2).is_err());
    assert!(scan.read_morsel(3).is_err());
}
