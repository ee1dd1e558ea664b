//! The fintech-enrichment example end to end: a small generated dataset, read back from CSV,
//! Parquet and Arrow IPC, joined and filtered by Sabot, checked against plain Rust loops.

#[path = "../examples/fintech/mod.rs"]
mod fintech;

use std::collections::HashMap;

use fintech::Format;
use sabot::deps::arrow::array::{Array, AsArray, RecordBatch};
use sabot::deps::arrow::datatypes::{Float64Type, Int64Type, TimestampMillisecondType};
use sabot::prelude::*;

const SECURITIES: usize = 2_000;
const QUOTES: usize = 300;
const SEED: u64 = 7;
const THRESHOLD: f64 = fintech::DEFAULT_MAX_SPREAD_PCT;

/// One expected output row: (size, ts, instrumentId).
type Expected = (i64, i64, i64);

/// The join + filter computed with loops over the generated rows.
fn expected() -> Vec<Expected> {
    let mut known = HashMap::new();
    for chunk in 0..fintech::chunk_count(SECURITIES) {
        let b = fintech::securities_chunk(SEED, SECURITIES, chunk);
        let ids = b.column(0).as_primitive::<Int64Type>();
        for i in 0..b.num_rows() {
            *known.entry(ids.value(i)).or_insert(0usize) += 1;
        }
    }
    assert_eq!(known.len(), SECURITIES, "IDs are unique");
    let mut out = vec![];
    for chunk in 0..fintech::chunk_count(QUOTES) {
        let b = fintech::quotes_chunk(SEED, QUOTES, SECURITIES, chunk);
        let id = b.column(0).as_primitive::<Int64Type>();
        let bid = b.column(1).as_primitive::<Float64Type>();
        let ask = b.column(2).as_primitive::<Float64Type>();
        let size = b.column(3).as_primitive::<Int64Type>();
        let ts = b.column(4).as_primitive::<TimestampMillisecondType>();
        for i in 0..b.num_rows() {
            if id.is_null(i) {
                continue;
            }
            let Some(&matches) = known.get(&id.value(i)) else { continue };
            let (a, bd) = (ask.value(i), bid.value(i));
            let spread_pct = (a - bd) / ((a + bd) / 2.0) * 100.0;
            if spread_pct < THRESHOLD {
                for _ in 0..matches {
                    out.push((size.value(i), ts.value(i), id.value(i)));
                }
            }
        }
    }
    out
}

fn column_i64(batch: &RecordBatch, name: &str) -> Vec<i64> {
    let c = batch.column_by_name(name).unwrap_or_else(|| panic!("column {name}"));
    match c.data_type() {
        sabot::deps::arrow::datatypes::DataType::Timestamp(..) => {
            c.as_primitive::<TimestampMillisecondType>().values().to_vec()
        }
        _ => c.as_primitive::<Int64Type>().values().to_vec(),
    }
}

#[test]
fn enrichment_is_exact_in_every_format() {
    let dir = tempfile::tempdir().unwrap();
    fintech::generate_dataset(dir.path(), SECURITIES, QUOTES, SEED, |_, _, _| {}).unwrap();

    let mut want = expected();
    // A few quotes must be dropped by each rule, or the test proves little.
    assert!(want.len() > 50 && want.len() < QUOTES, "{} rows expected", want.len());
    want.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    let want_top: Vec<Expected> = want.iter().take(10).copied().collect();

    let mut results = vec![];
    for format in Format::ALL {
        let quotes = fintech::read_table(dir.path(), "quotes", format).unwrap().with_parallelism(2);
        let securities = fintech::read_table(dir.path(), "securities", format).unwrap().with_parallelism(2);
        let rows = |s: &Stream| s.collect().unwrap().iter().map(|b| b.num_rows()).sum::<usize>();
        assert_eq!(rows(&quotes), QUOTES, "{format:?}");
        assert_eq!(rows(&securities), SECURITIES, "{format:?}");

        let enriched = fintech::enrich(&quotes, &securities, THRESHOLD).unwrap();
        let all = enriched.collect_batch().unwrap();
        assert_eq!(all.num_rows(), want.len(), "{format:?}: rows after join + filter");
        // Every row: the security's columns belong to the quote's instrument.
        assert_eq!(column_i64(&all, "instrumentId"), column_i64(&all, "ID"), "{format:?}");
        let mut got: Vec<Expected> = column_i64(&all, "size")
            .into_iter()
            .zip(column_i64(&all, "ts"))
            .zip(column_i64(&all, "instrumentId"))
            .map(|((s, t), i)| (s, t, i))
            .collect();
        got.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        assert_eq!(got, want, "{format:?}: joined rows");

        let top = fintech::top_by_size(&enriched, 10).unwrap().collect_batch().unwrap();
        let top_rows: Vec<Expected> = column_i64(&top, "size")
            .into_iter()
            .zip(column_i64(&top, "ts"))
            .zip(column_i64(&top, "instrumentId"))
            .map(|((s, t), i)| (s, t, i))
            .collect();
        assert_eq!(top_rows, want_top, "{format:?}: top 10 by size");
        let spread = top.column_by_name("spreadPct").unwrap().as_primitive::<Float64Type>();
        assert!(spread.values().iter().all(|&s| s < THRESHOLD));
        results.push((format, top_rows));
    }
    assert!(results.windows(2).all(|w| w[0].1 == w[1].1), "formats agree: {results:?}");
}

#[test]
fn generation_is_deterministic() {
    let a = fintech::quotes_chunk(SEED, QUOTES, SECURITIES, 0);
    let b = fintech::quotes_chunk(SEED, QUOTES, SECURITIES, 0);
    assert_eq!(a, b);
    let c = fintech::quotes_chunk(SEED + 1, QUOTES, SECURITIES, 0);
    assert_ne!(a, c);
    let s = fintech::securities_chunk(SEED, SECURITIES, 0);
    assert_eq!(s.num_rows(), SECURITIES);
    let sectors = s.column(3).as_string::<i32>();
    assert!((0..s.num_rows()).all(|i| fintech::SECTORS.contains(&sectors.value(i))));
}

/// The join's key indexes (dense integer range, hashed integers, row format for strings),
/// with duplicate keys on both sides, nulls, and either side the smaller one, against a
/// nested loop.
#[test]
fn join_matches_a_nested_loop() {
    use std::sync::Arc;

    use rand::rngs::SmallRng;
    use rand::{Rng, SeedableRng};
    use sabot::deps::arrow::array::{Int64Array, StringArray};

    let mut rng = SmallRng::seed_from_u64(11);
    for (spread, left_rows, right_rows) in
        [(50i64, 3_000, 400), (50, 400, 3_000), (1_000_003, 2_000, 300), (7, 500, 500)]
    {
        let mut keys = |n: usize| -> Vec<Option<i64>> {
            (0..n).map(|_| (rng.random_range(0..20) != 0).then(|| rng.random_range(-40..40i64) * spread)).collect()
        };
        let (lk, rk) = (keys(left_rows), keys(right_rows));
        let mut want = vec![];
        for (i, l) in lk.iter().enumerate() {
            for (j, r) in rk.iter().enumerate() {
                if l.is_some() && l == r {
                    want.push((i as i64, j as i64));
                }
            }
        }
        want.sort();
        let side = |keys: &[Option<i64>], row: &str| {
            let text: Vec<Option<String>> = keys.iter().map(|k| k.map(|k| format!("k{k}"))).collect();
            let batch = RecordBatch::try_from_iter([
                ("k", Arc::new(Int64Array::from(keys.to_vec())) as _),
                ("s", Arc::new(StringArray::from(text)) as _),
                (row, Arc::new(Int64Array::from_iter_values(0..keys.len() as i64)) as _),
            ])
            .unwrap();
            // Several batches, so that partitions interleave.
            let chunks = (0..batch.num_rows()).step_by(128).map(|o| batch.slice(o, 128.min(batch.num_rows() - o)));
            Stream::from_batches(chunks.collect()).unwrap().with_parallelism(2)
        };
        let (left, right) = (side(&lk, "li"), side(&rk, "ri"));
        for on in [("k", "k"), ("s", "s")] {
            let out = left.join(&right, [on], JoinType::Inner).unwrap().collect_batch().unwrap();
            let mut got: Vec<(i64, i64)> = column_i64(&out, "li").into_iter().zip(column_i64(&out, "ri")).collect();
            got.sort();
            assert_eq!(got, want, "keys ×{spread}, {left_rows} × {right_rows} rows, on {on:?}");
        }
    }
}
