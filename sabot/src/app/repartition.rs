//! Repartition topics: how a `key_by` spans the workers of an app, as in Kafka Streams.
//!
//! Each worker reads some partitions of the agent's topic. A keyed operator (`process`, a
//! keyed window) must see every row of a key, so unless the topic is already keyed by the same
//! columns, the plan is cut below the keyed operator: the part below writes its rows to an
//! internal topic, partitioned by a hash of the keys, and the part above reads that topic in
//! the app's consumer group. Every key then lands on exactly one worker.

use std::sync::Arc;

use crate::expr::Expr;
use crate::kafka::format::IpcFormat;
use crate::kafka::{KafkaConfig, KafkaSink, KafkaSource, SourceMetrics, StartOffset, StopHandle};
use crate::plan::LogicalPlan;
use crate::stream::event_time_column;
use crate::window::WatermarkStrategy;

/// One part of a cut plan: a pipeline, and where its rows go.
pub(crate) struct Stage {
    /// The part's plan; its scan is the agent's topic or the previous stage's topic.
    pub(crate) plan: Arc<LogicalPlan>,
    /// The repartition topic the part writes, and the keys it partitions by; `None` for the
    /// last part, whose rows go to the agent's sink.
    pub(crate) repartition: Option<(String, Vec<Expr>)>,
    /// Stops the repartition source this part reads, if it reads one.
    pub(crate) stop: Option<StopHandle>,
    /// The counters of that source.
    pub(crate) metrics: Option<(String, Arc<SourceMetrics>)>,
}

/// Settings of the repartition sources and sinks.
pub(crate) struct RepartitionSettings {
    /// Client settings of the worker.
    pub(crate) config: KafkaConfig,
    /// `<group>-<agent>`: topic and group names start with it.
    pub(crate) prefix: String,
    /// Readers per repartition source.
    pub(crate) readers: usize,
    /// Watermark strategy for a repartitioned event-time column.
    pub(crate) watermarks: WatermarkStrategy,
}

/// The column names of `keys`, if every key is a plain column.
fn key_columns(keys: &[Expr]) -> Option<Vec<String>> {
    keys.iter()
        .map(|k| match k {
            Expr::Column(name) => Some(name.clone()),
            _ => None,
        })
        .collect()
}

/// The keys of a node that needs all rows of a key in one place.
fn partitioning_keys(plan: &LogicalPlan) -> Option<&Vec<Expr>> {
    match plan {
        LogicalPlan::KeyedProcess { keys, .. } => Some(keys),
        LogicalPlan::Window { keys, .. } if !keys.is_empty() => Some(keys),
        _ => None,
    }
}

/// The lowest keyed node (along single-input chains) whose keys are not `partitioned_by`.
fn lowest_unpartitioned(plan: &Arc<LogicalPlan>, partitioned_by: Option<&[String]>) -> Option<Arc<LogicalPlan>> {
    let inputs = plan.inputs();
    if let [input] = inputs.as_slice()
        && let Some(found) = lowest_unpartitioned(input, partitioned_by)
    {
        return Some(found);
    }
    if inputs.len() > 1 {
        // Joins and unions of several topics are not cut (yet): they run per worker.
        return None;
    }
    let keys = partitioning_keys(plan)?;
    let already = key_columns(keys).is_some_and(|cols| Some(cols.as_slice()) == partitioned_by);
    (!already).then(|| plan.clone())
}

/// `plan` with the node `target` replaced by `replacement`.
fn replace(plan: &Arc<LogicalPlan>, target: &Arc<LogicalPlan>, replacement: &Arc<LogicalPlan>) -> Arc<LogicalPlan> {
    if Arc::ptr_eq(plan, target) {
        return replacement.clone();
    }
    let inputs = plan.inputs();
    if inputs.is_empty() {
        return plan.clone();
    }
    let new_inputs = inputs.into_iter().map(|i| replace(i, target, replacement)).collect();
    Arc::new(plan.with_new_inputs(new_inputs))
}

/// Cuts `plan` into stages joined by repartition topics; `topic_key` is the column the
/// agent's topic is keyed by, if any.
pub(crate) fn stages(plan: Arc<LogicalPlan>, topic_key: Option<&str>, settings: &RepartitionSettings) -> Vec<Stage> {
    let mut stages = Vec::new();
    let mut rest = plan;
    let mut rest_stop = None;
    let mut rest_metrics = None;
    let mut partitioned_by: Option<Vec<String>> = topic_key.map(|k| vec![k.to_string()]);
    while let Some(keyed) = lowest_unpartitioned(&rest, partitioned_by.as_deref()) {
        let keys = partitioning_keys(&keyed).cloned().unwrap_or_default();
        let below = keyed.inputs()[0].clone();
        let topic = format!("{}-repartition-{}", settings.prefix, stages.len());
        let schema = below.schema();
        let format = IpcFormat::new(schema.clone());
        let mut source = KafkaSource::with_config(settings.config.clone(), &topic)
            .group(format!("{}-repartition", settings.prefix))
            .format(format)
            .start_offset(StartOffset::Committed)
            .readers(settings.readers)
            // Written partitioned by the keys: each partition is a key group of the state.
            .partitioned_by(keys.clone());
        if let Some(column) = event_time_column(&below) {
            source = source.watermarks(column, settings.watermarks.clone());
        }
        let stop = source.stop_handle();
        let metrics = (source.group_id(), source.metrics());
        let scan = Arc::new(LogicalPlan::scan(Arc::new(source)));
        let above_keyed = Arc::new(keyed.with_new_inputs(vec![scan]));
        stages.push(Stage {
            plan: below,
            repartition: Some((topic, keys.clone())),
            stop: rest_stop.take(),
            metrics: rest_metrics.take(),
        });
        rest = replace(&rest, &keyed, &above_keyed);
        rest_stop = Some(stop);
        rest_metrics = Some(metrics);
        partitioned_by = key_columns(&keys);
        if partitioned_by.is_none() {
            // Keys that are expressions: one cut, after which the keyed node reads its topic.
            break;
        }
    }
    stages.push(Stage { plan: rest, repartition: None, stop: rest_stop, metrics: rest_metrics });
    stages
}

/// The sink of a stage that writes a repartition topic: Arrow IPC, partitioned by the keys.
pub(crate) fn sink(
    config: &KafkaConfig,
    topic: &str,
    schema: arrow::datatypes::SchemaRef,
    keys: Vec<Expr>,
) -> KafkaSink {
    KafkaSink::with_config(config.clone(), topic).format(IpcFormat::new(schema)).partition_by(keys)
}
