//! Each optimizer rule: the plan it produces, and identical results with the rule off.

use std::sync::Arc;

use arrow::array::{Float64Array, Int64Array, RecordBatch, StringArray};
use sabot::exec::{EdgeKind, ExecConfig, OptimizerConfig};
use sabot::prelude::*;

fn wide() -> Stream {
    let batches = (0..4)
        .map(|b| {
            let ids: Vec<i64> = (b * 50..(b + 1) * 50).collect();
            RecordBatch::try_from_iter([
                ("a", Arc::new(Int64Array::from(ids.clone())) as _),
                ("b", Arc::new(Float64Array::from_iter_values(ids.iter().map(|i| *i as f64 / 2.0))) as _),
                ("c", Arc::new(StringArray::from_iter_values(ids.iter().map(|i| format!("c{}", i % 7)))) as _),
                ("d", Arc::new(Int64Array::from_iter_values(ids.iter().map(|i| i * i))) as _),
            ])
            .unwrap()
        })
        .collect();
    Stream::from_batches(batches).unwrap().with_parallelism(2)
}

fn only(rule: fn(&mut OptimizerConfig)) -> ExecConfig {
    let mut optimizer = OptimizerConfig::disabled();
    rule(&mut optimizer);
    ExecConfig::default().with_parallelism(2).with_optimizer(optimizer)
}

fn plan(stream: &Stream) -> String {
    stream.optimized_plan().unwrap().display_indent()
}

/// Runs `stream` with the given config and with every rule off; results must be equal.
fn assert_same_results(stream: &Stream, config: ExecConfig) {
    let with_rule = stream.clone().with_config(config).collect_batch().unwrap();
    let without = stream.clone().with_config(only(|_| {})).collect_batch().unwrap();
    assert_eq!(with_rule, without);
    assert!(with_rule.num_rows() > 0, "the test pipeline must produce rows");
}

#[test]
fn projection_pushdown_reads_only_used_columns() {
    let config = only(|o| o.projection_pushdown = true);
    let stream = wide()
        .with_config(config.clone())
        .filter(col("a").gt(lit(10)))
        .unwrap()
        .with_column("e", col("b") * lit(2))
        .unwrap()
        .select(["a", "e"])
        .unwrap();
    assert_eq!(
        plan(&stream),
        "Project: a, e\n  Project: a, b * 2 AS e\n    Filter: a > 10\n      Scan: memory: 4 batches, 200 rows projection=[a, b]\n"
    );
    assert_same_results(&stream, config);
}

#[test]
fn filter_pushdown_crosses_projections_sorts_and_joins() {
    let config = only(|o| o.filter_pushdown = true);
    let right = wide().select([col("a").alias("ra"), col("c").alias("rc")]).unwrap();
    let stream = wide()
        .with_config(config.clone())
        .join(&right, [("a", "ra")], JoinType::Inner)
        .unwrap()
        .select(["a", "b", "rc"])
        .unwrap()
        .sort(["a"])
        .unwrap()
        .filter(col("b").gt(lit(20.0)).and(col("rc").eq(lit("c3"))).and(col("a").lt(lit(150))))
        .unwrap();
    assert_eq!(
        plan(&stream),
        "Sort: a ASC NULLS LAST\n\
         \x20 Project: a, b, rc\n\
         \x20   Join: Inner on [a = ra]\n\
         \x20     Filter: b > 20.0 AND a < 150\n\
         \x20       Scan: memory: 4 batches, 200 rows\n\
         \x20     Project: a AS ra, c AS rc\n\
         \x20       Filter: c = 'c3'\n\
         \x20         Scan: memory: 4 batches, 200 rows\n"
    );
    assert_same_results(&stream, config);
}

#[test]
fn filter_pushdown_stops_at_limits_and_computed_columns() {
    let config = only(|o| o.filter_pushdown = true);
    let stream = wide()
        .with_config(config.clone())
        .limit(120)
        .with_column("half", col("d") / lit(2))
        .unwrap()
        .filter(col("half").gt(lit(100)))
        .unwrap();
    assert_eq!(
        plan(&stream),
        "Filter: half > 100\n  Project: a, b, c, d, d / 2 AS half\n    Limit: skip=0 fetch=120\n      Scan: memory: 4 batches, 200 rows\n"
    );
    assert_same_results(&stream, config);
}

#[test]
fn filter_pushdown_reaches_parquet_row_groups() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wide.parquet");
    let rows = sabot::io::parquet::ParquetSink::new(&path).row_group_size(50);
    wide().to_sink(&rows).unwrap();
    let config = ExecConfig::default().with_parallelism(2);
    let stream =
        Stream::from_parquet(&path).unwrap().with_config(config.clone()).filter(col("a").gt_eq(lit(160))).unwrap();
    let optimized = plan(&stream);
    assert!(optimized.starts_with("Filter: a >= 160\n  Scan: "), "{optimized}");
    assert!(optimized.ends_with(" filters=[a >= 160]\n"), "{optimized}");
    let physical = stream.physical_plan().unwrap().display_indent(&config);
    assert!(physical.contains("pruning=[a >= 160]"), "{physical}");
    assert_eq!(stream.count().unwrap(), 40);
    assert_same_results(&stream, config);
}

#[test]
fn fusion_merges_filters_and_projections_unless_work_would_repeat() {
    let config = only(|o| o.fuse_stateless = true);
    let stream = wide()
        .with_config(config.clone())
        .filter(col("a").gt(lit(3)))
        .unwrap()
        .filter(col("d").lt(lit(10_000)))
        .unwrap()
        .with_column("x", col("a") + lit(1))
        .unwrap()
        .select([col("x").alias("y"), col("c")])
        .unwrap();
    assert_eq!(
        plan(&stream),
        "Project: a + 1 AS y, c\n  Filter: a > 3 AND d < 10000\n    Scan: memory: 4 batches, 200 rows\n"
    );
    assert_same_results(&stream, config.clone());

    // `x` is used twice above: inlining would compute it twice, so the projections stay apart.
    let twice = wide().with_config(config.clone()).with_column("x", col("a") * col("d")).unwrap();
    let twice = twice.select([(col("x") + col("x")).alias("y")]).unwrap();
    assert_eq!(
        plan(&twice),
        "Project: x + x AS y\n  Project: a, b, c, d, a * d AS x\n    Scan: memory: 4 batches, 200 rows\n"
    );
    assert_same_results(&twice, config);
}

#[test]
fn explain_and_job_graph_show_every_stage() {
    let right = wide().select([col("a").alias("ra")]).unwrap();
    let stream = wide()
        .join(&right, [("a", "ra")], JoinType::Left)
        .unwrap()
        .group_by(["c"])
        .agg([sum(col("b")).alias("total")])
        .unwrap();
    let text = stream.explain().unwrap();
    for section in ["== Logical Plan ==", "== Optimized Logical Plan ==", "== Physical Plan ==", "== Job Graph =="] {
        assert!(text.contains(section), "{text}");
    }
    let graph = stream.job_graph().unwrap();
    let order = graph.topological_sort();
    assert_eq!(order.len(), graph.nodes.len());
    for (from, to, _) in &graph.edges {
        let pos = |n: &usize| order.iter().position(|x| x == n).unwrap();
        assert!(pos(from) < pos(to), "edges point forward in topological order");
    }
    assert!(graph.edges.iter().any(|e| e.2 == EdgeKind::Broadcast), "the join build is broadcast");
    let last = &graph.nodes[*order.last().unwrap()];
    assert!(last.name.starts_with("FinalAggregate"), "{}", graph.explain());
    assert!(graph.to_dot().contains("label=\"Broadcast\""));
}
