//! End-to-end tests of the Stream operators over in-memory data, with exact results.

use std::sync::Arc;

use arrow::array::{Array, AsArray, Float64Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{Float64Type, Int64Type};
use sabot::exec::{ExecConfig, OptimizerConfig};
use sabot::prelude::*;

fn batch(columns: Vec<(&str, Arc<dyn Array>)>) -> RecordBatch {
    RecordBatch::try_from_iter(columns).unwrap()
}

/// 1,000 rows split in 10 batches so that parallel partitions really interleave.
fn orders() -> Stream {
    let batches = (0..10)
        .map(|b| {
            let ids: Vec<i64> = (b * 100..(b + 1) * 100).collect();
            let amounts: Vec<f64> = ids.iter().map(|i| 100.0 + (i % 500) as f64).collect();
            let cats: Vec<&str> = ids.iter().map(|i| if i % 2 == 0 { "A" } else { "B" }).collect();
            batch(vec![
                ("id", Arc::new(Int64Array::from(ids))),
                ("amount", Arc::new(Float64Array::from(amounts))),
                ("category", Arc::new(StringArray::from(cats))),
            ])
        })
        .collect();
    Stream::from_batches(batches).unwrap().with_parallelism(3)
}

fn i64s(batch: &RecordBatch, name: &str) -> Vec<i64> {
    batch.column_by_name(name).unwrap().as_primitive::<Int64Type>().values().to_vec()
}

#[test]
fn filter_with_column_select_keeps_order() {
    let out = orders()
        .filter(col("amount").gt(lit(300)))
        .unwrap()
        .with_column("tax", col("amount") * lit(0.1))
        .unwrap()
        .select(["id", "amount", "tax", "category"])
        .unwrap()
        .collect_batch()
        .unwrap();
    assert_eq!(out.num_rows(), 598);
    assert_eq!(out.num_columns(), 4);
    let ids = i64s(&out, "id");
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "source order is preserved");
    assert_eq!(ids[0], 201);
    let tax = out.column_by_name("tax").unwrap().as_primitive::<Float64Type>();
    assert!((tax.value(0) - 30.1).abs() < 1e-9);
}

#[test]
fn group_by_computes_every_aggregate() {
    let out = orders()
        .group_by(["category"])
        .agg([
            count_all(),
            sum(col("amount")).alias("total"),
            avg(col("amount")).alias("mean"),
            min(col("id")).alias("min_id"),
            max(col("id")).alias("max_id"),
            count_distinct(col("amount")).alias("distinct_amounts"),
            first(col("id")).alias("first_id"),
            last(col("id")).alias("last_id"),
        ])
        .unwrap()
        .sort(["category"])
        .unwrap()
        .collect_batch()
        .unwrap();
    assert_eq!(out.num_rows(), 2);
    assert_eq!(out.column(0).as_string::<i32>().value(0), "A");
    assert_eq!(i64s(&out, "count"), vec![500, 500]);
    // Even ids 0..998: amount = 100 + i % 500.
    let expected_a: f64 = (0..1000).filter(|i| i % 2 == 0).map(|i| 100.0 + (i % 500) as f64).sum();
    let totals = out.column_by_name("total").unwrap().as_primitive::<Float64Type>();
    assert_eq!(totals.value(0), expected_a);
    assert_eq!(i64s(&out, "min_id"), vec![0, 1]);
    assert_eq!(i64s(&out, "max_id"), vec![998, 999]);
    assert_eq!(i64s(&out, "distinct_amounts"), vec![250, 250]);
    assert_eq!(i64s(&out, "first_id"), vec![0, 1]);
    assert_eq!(i64s(&out, "last_id"), vec![998, 999]);
}

#[test]
fn global_aggregate_over_no_rows_yields_one_row() {
    let out = orders()
        .filter(col("amount").lt(lit(0)))
        .unwrap()
        .aggregate([count_all(), sum(col("amount")).alias("s")])
        .unwrap()
        .collect_batch()
        .unwrap();
    assert_eq!(out.num_rows(), 1);
    assert_eq!(i64s(&out, "count"), vec![0]);
    assert!(out.column(1).is_null(0));
}

#[test]
fn sort_multi_key_and_top_k() {
    let top =
        orders().top_k(3, [SortKey::desc(col("amount")), SortKey::asc(col("id"))]).unwrap().collect_batch().unwrap();
    // amount 599 for ids 499 and 999; then 598 for 498.
    assert_eq!(i64s(&top, "id"), vec![499, 999, 498]);
    let all =
        orders().sort([SortKey::asc(col("category")), SortKey::desc(col("id"))]).unwrap().collect_batch().unwrap();
    assert_eq!(all.num_rows(), 1000);
    assert_eq!(i64s(&all, "id")[..3], [998, 996, 994]);
}

#[test]
fn limit_slice_distinct_union() {
    assert_eq!(i64s(&orders().slice(5, 3).collect_batch().unwrap(), "id"), vec![5, 6, 7]);
    assert_eq!(orders().select(["category"]).unwrap().distinct().unwrap().count().unwrap(), 2);
    let both = orders().union(&orders()).unwrap();
    assert_eq!(both.count().unwrap(), 2000);
    let ids = i64s(&both.limit(1001).collect_batch().unwrap(), "id");
    assert_eq!(ids[999..], [999, 0], "union keeps its inputs in order");
}

fn left() -> Stream {
    Stream::from_batches(vec![batch(vec![
        ("k", Arc::new(Int64Array::from(vec![Some(1), Some(2), Some(2), None, Some(5)]))),
        ("lv", Arc::new(StringArray::from(vec!["a", "b", "c", "d", "e"]))),
    ])])
    .unwrap()
}

fn right() -> Stream {
    Stream::from_batches(vec![batch(vec![
        ("k", Arc::new(Int64Array::from(vec![Some(2), Some(3), None, Some(2)]))),
        ("rv", Arc::new(StringArray::from(vec!["x", "y", "z", "w"]))),
    ])])
    .unwrap()
}

fn rows(stream: Stream) -> Vec<String> {
    let b = stream.collect_batch().unwrap();
    let mut out: Vec<String> = (0..b.num_rows())
        .map(|r| {
            (0..b.num_columns())
                .map(|c| {
                    let col = b.column(c);
                    if col.is_null(r) {
                        "∅".to_string()
                    } else {
                        arrow::util::display::array_value_to_string(col, r).unwrap()
                    }
                })
                .collect::<Vec<_>>()
                .join(",")
        })
        .collect();
    out.sort();
    out
}

#[test]
fn joins_of_every_kind_never_match_nulls() {
    let j = |t| rows(left().join(&right(), [("k", "k")], t).unwrap());
    assert_eq!(j(JoinType::Inner), ["2,b,w", "2,b,x", "2,c,w", "2,c,x"]);
    assert_eq!(j(JoinType::Left), ["1,a,∅", "2,b,w", "2,b,x", "2,c,w", "2,c,x", "5,e,∅", "∅,d,∅"]);
    assert_eq!(j(JoinType::Right), ["2,b,w", "2,b,x", "2,c,w", "2,c,x", "3,∅,y", "∅,∅,z"]);
    assert_eq!(j(JoinType::Full), ["1,a,∅", "2,b,w", "2,b,x", "2,c,w", "2,c,x", "3,∅,y", "5,e,∅", "∅,d,∅", "∅,∅,z"]);
    assert_eq!(j(JoinType::Semi), ["2,b", "2,c"]);
    assert_eq!(j(JoinType::Anti), ["1,a", "5,e", "∅,d"]);
}

#[test]
fn join_on_string_and_multiple_keys() {
    let l = Stream::from_batches(vec![batch(vec![
        ("a", Arc::new(StringArray::from(vec!["x", "x", "y"]))),
        ("b", Arc::new(Int64Array::from(vec![1, 2, 1]))),
    ])])
    .unwrap();
    let r = Stream::from_batches(vec![batch(vec![
        ("a2", Arc::new(StringArray::from(vec!["x", "y", "y"]))),
        ("b2", Arc::new(Int64Array::from(vec![2, 1, 1]))),
        ("v", Arc::new(Int64Array::from(vec![10, 20, 30]))),
    ])])
    .unwrap();
    let out = rows(l.join(&r, [("a", "a2"), ("b", "b2")], JoinType::Inner).unwrap());
    assert_eq!(out, ["x,2,x,2,10", "y,1,y,1,20", "y,1,y,1,30"]);
}

#[test]
fn optimizer_rules_do_not_change_results() {
    let pipeline = |config: ExecConfig| {
        let l = orders().with_config(config.clone());
        let r = orders().with_config(config).select([col("id").alias("rid"), col("category").alias("rcat")]).unwrap();
        l.join(&r, [("id", "rid")], JoinType::Inner)
            .unwrap()
            .with_column("double", col("amount") * lit(2))
            .unwrap()
            .filter(col("rcat").eq(lit("A")).and(col("double").gt(lit(900))))
            .unwrap()
            .select(["id", "double"])
            .unwrap()
            .sort(["id"])
            .unwrap()
            .collect_batch()
            .unwrap()
    };
    let optimized = pipeline(ExecConfig::default());
    let unoptimized = pipeline(ExecConfig::default().with_optimizer(OptimizerConfig::disabled()));
    assert_eq!(optimized, unoptimized);
    assert_eq!(optimized.num_rows(), 2 * 74);
}

#[test]
fn typed_closures_over_row_views() {
    #[derive(Record, Debug, Clone, PartialEq)]
    struct Order {
        id: i64,
        amount: f64,
        category: String,
    }
    #[derive(Record, Debug, Clone, PartialEq)]
    struct Taxed {
        id: i64,
        tax: f64,
    }
    let taxed: Vec<Taxed> = orders()
        .typed::<Order>()
        .unwrap()
        .filter_rows(|o| o.category == "B" && o.amount > 595.0)
        .map(|o| Taxed { id: o.id, tax: o.amount / 10.0 })
        .collect_records()
        .unwrap();
    assert_eq!(taxed.iter().map(|t| t.id).collect::<Vec<_>>(), vec![497, 499, 997, 999]);
}

#[test]
fn plan_errors_name_the_column() {
    let err = orders().filter(col("nope").gt(lit(1))).unwrap_err();
    assert_eq!(err.to_string(), "column 'nope' not found; available columns: [id, amount, category]");
    let err = orders().filter(col("amount") + lit(1)).unwrap_err();
    assert!(err.to_string().contains("expected Boolean"), "{err}");
}
