//! The examples' exact outputs.

#[path = "../examples/filter_and_map.rs"]
#[allow(dead_code)]
mod filter_and_map;

#[path = "../examples/local_join.rs"]
#[allow(dead_code)]
mod local_join;

#[path = "../examples/batch_processing.rs"]
#[allow(dead_code)]
mod batch_processing;

use arrow::array::AsArray;
use arrow::datatypes::{Float64Type, Int64Type};
use sabot::deps::arrow;

#[test]
fn filter_and_map_yields_598_rows_of_4_columns() {
    let batch = filter_and_map::pipeline().unwrap().collect_batch().unwrap();
    assert_eq!((batch.num_rows(), batch.num_columns()), (598, 4));
    let names: Vec<&str> = batch.schema_ref().fields().iter().map(|f| f.name().as_str()).collect();
    assert_eq!(names, ["id", "amount", "tax", "category"]);
    let ids = batch.column(0).as_primitive::<Int64Type>();
    let amounts = batch.column(1).as_primitive::<Float64Type>();
    let taxes = batch.column(2).as_primitive::<Float64Type>();
    let expected: Vec<i64> = (0..1000).filter(|i| 100 + i % 500 > 300).collect();
    assert_eq!(ids.values().to_vec(), expected);
    for i in 0..batch.num_rows() {
        assert!(amounts.value(i) > 300.0);
        assert_eq!(taxes.value(i), amounts.value(i) * 0.1);
    }
}

#[test]
fn local_join_enriches_all_10_quotes() {
    let mut rows = local_join::pipeline().unwrap().collect_records().unwrap();
    assert_eq!(rows.len(), 10);
    // An inner join's row order is unspecified (the smaller side is the build side).
    rows.sort_by_key(|r| r.instrument_id);
    let mut quotes = local_join::quotes();
    quotes.sort_by_key(|q| q.instrument_id);
    let ids: Vec<i64> = rows.iter().map(|r| r.instrument_id).collect();
    assert_eq!(ids, (1..=10).collect::<Vec<_>>());
    for (row, quote) in rows.iter().zip(quotes) {
        assert_eq!((row.price, row.size), (quote.price, quote.size));
        assert_eq!(row.cusip, format!("{:09}", 37_833_100 + row.instrument_id));
        assert_eq!(row.name, format!("Security {}", row.instrument_id));
    }
}

#[test]
fn batch_processing_round_trips_through_parquet() {
    let dir = tempfile::tempdir().unwrap();
    let rows = batch_processing::run(dir.path()).unwrap();
    assert_eq!(rows.len(), 200);
    assert_eq!(rows[0].transaction_id, 801);
    assert_eq!(rows[199].transaction_id, 1000);
    for r in &rows {
        assert_eq!(r.amount, 100.0 + 0.5 * r.transaction_id as f64);
        assert_eq!(r.tax, r.amount * 0.1);
        assert_eq!(r.category, ["A", "B", "C"][(r.transaction_id % 3) as usize]);
    }
}
