//! Terminal operations: running a stream and delivering its result.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use arrow::compute::concat_batches;
use arrow::record_batch::RecordBatch;
use arrow::util::pretty::pretty_format_batches;

use super::{Stream, Untyped};
use crate::checkpoint::{CheckpointCoordinator, CheckpointMetadata};
use crate::exec::{JobGraph, PhysicalPlan, create_physical_plan};
use crate::expr::count_all;
use crate::io::Sink;
use crate::io::csv::CsvSink;
use crate::io::ipc::IpcSink;
use crate::io::json::JsonLinesSink;
use crate::io::parquet::ParquetSink;
use crate::operator::Message;
use crate::optimizer::optimize;
use crate::plan::LogicalPlan;
use crate::{Record, Result, SabotError};

impl<T> Stream<T> {
    /// The plan after the optimizer's rules.
    pub fn optimized_plan(&self) -> Result<Arc<LogicalPlan>> {
        optimize(self.plan.clone(), &self.config.optimizer)
    }

    /// The physical plan that would run.
    pub fn physical_plan(&self) -> Result<PhysicalPlan> {
        create_physical_plan(self.optimized_plan()?.as_ref(), &self.config)
    }

    /// The physical plan as a DAG of operator nodes.
    pub fn job_graph(&self) -> Result<JobGraph> {
        Ok(JobGraph::from_physical(&self.physical_plan()?, &self.config))
    }

    /// The logical, optimized and physical plans and the job graph, as text.
    ///
    /// ```
    /// use sabot::prelude::*;
    /// # let batch = arrow::array::RecordBatch::try_from_iter([("x", std::sync::Arc::new(arrow::array::Int64Array::from(vec![1])) as _)]).unwrap();
    /// let text = Stream::from_batches(vec![batch])?.filter(col("x").gt(lit(0)))?.explain()?;
    /// assert!(text.contains("== Physical Plan =="));
    /// # Ok::<(), sabot::SabotError>(())
    /// ```
    pub fn explain(&self) -> Result<String> {
        let optimized = self.optimized_plan()?;
        let physical = create_physical_plan(&optimized, &self.config)?;
        let graph = JobGraph::from_physical(&physical, &self.config);
        Ok(format!(
            "== Logical Plan ==\n{}\n== Optimized Logical Plan ==\n{}\n== Physical Plan ==\n{}\n== Job Graph ==\n{}",
            self.plan.display_indent(),
            optimized.display_indent(),
            physical.display_indent(&self.config),
            graph.explain()
        ))
    }

    /// Runs the pipeline and calls `f` with every result batch, in order, on this thread.
    /// Unbounded sources (Kafka) learn that what they produced before each checkpoint barrier
    /// has been handled once `f` has returned for it, and commit their offsets.
    pub fn for_each_batch(&self, f: impl FnMut(RecordBatch) -> Result<()>) -> Result<()> {
        self.drive(None, f).map(drop)
    }

    /// Runs the pipeline into `sink` (if any; otherwise every batch goes to `on_batch`) and
    /// drives its checkpoints (see [`crate::checkpoint`]): on start, restores the latest
    /// checkpoint and finishes publishing what it prepared; at each barrier, lets the sink
    /// prepare its output, completes the checkpoint, then publishes the output and lets the
    /// sources commit. Returns the number of rows delivered.
    fn drive(&self, sink: Option<&dyn Sink>, mut on_batch: impl FnMut(RecordBatch) -> Result<()>) -> Result<u64> {
        let mut config = self.config.clone();
        // A sink whose commit carries the consumed offsets is the commit point: recovery
        // restores the newest checkpoint whose transaction committed, so the one before the
        // last must be kept.
        let transactional = sink.is_some_and(|s| s.takes_consumed_offsets());
        let committed = |meta: &CheckpointMetadata, previous: Option<&CheckpointMetadata>| -> Result<bool> {
            for (name, source) in self.sources() {
                if let Some(positions) = meta.sources.get(&name) {
                    let before = previous.and_then(|p| p.sources.get(&name));
                    if !source.transaction_committed(positions, before)? {
                        return Ok(false);
                    }
                }
            }
            Ok(true)
        };
        let coordinator = match &mut config.checkpointing {
            Some(checkpointing) => {
                if transactional {
                    checkpointing.retain = checkpointing.retain.max(2);
                }
                let check: Option<&crate::checkpoint::TransactionCheck<'_>> =
                    if transactional { Some(&committed) } else { None };
                Some(CheckpointCoordinator::start(checkpointing, config.parallelism, check)?)
            }
            None => None,
        };
        if let Some(coordinator) = &coordinator
            && self.sources().iter().any(|(_, source)| source.partitions_are_key_groups())
        {
            if coordinator.shared_root().is_some() {
                co_partition_stream_joins(self.optimized_plan()?.as_ref())?;
                coordinator.set_key_groups();
            } else {
                tracing::warn!(
                    "a source's partitions are key groups, but the checkpoints are not shared by the workers \
                     (CheckpointConfig::shared_by): keyed state stays with this worker"
                );
            }
        }
        let restored = coordinator.as_ref().and_then(|c| c.restored().cloned());
        if let Some(meta) = &restored {
            self.restore_sources(meta)?;
        }
        if let Some(sink) = sink {
            if let Some(meta) = &restored {
                sink.commit(meta.id, &meta.committables()?)?;
            }
            if coordinator.is_some() {
                sink.abort_uncommitted(restored.as_ref().map(|m| m.id))?;
            }
        }
        config.coordinator = crate::exec::Coordinator(coordinator.clone());
        let mut writer = sink.map(|s| s.open(self.schema())).transpose()?;

        let physical = create_physical_plan(self.optimized_plan()?.as_ref(), &config)?;
        let streams = physical.execute(&config)?;
        let merged = crate::exec::gather(streams, physical.preserves_order(), config.channel_capacity);
        let mut rows = 0u64;
        // With checkpoints, output after the last completed checkpoint is re-created from
        // the restored state after a restart: after a stopping source's last barrier, it is
        // not delivered.
        let mut discard_tail = false;
        for item in merged {
            match item?.msg {
                Message::Batch(batch) if discard_tail => drop(batch),
                Message::Batch(batch) => {
                    rows += batch.num_rows() as u64;
                    match writer.as_mut() {
                        Some(writer) => writer.write(&batch)?,
                        None => on_batch(batch)?,
                    }
                }
                Message::Barrier(barrier) => {
                    let committable = match writer.as_mut() {
                        Some(writer) => writer.prepare_commit(barrier.id)?,
                        None => None,
                    };
                    let Some(coordinator) = &coordinator else {
                        if let Some(sink) = sink {
                            if transactional {
                                sink.add_consumed_offsets(barrier.id, &self.consumed_offsets(barrier.id)?)?;
                            }
                            sink.commit(barrier.id, &committable.into_iter().collect::<Vec<_>>())?;
                        }
                        self.checkpoint_complete(barrier.id)?;
                        continue;
                    };
                    if coordinator.key_groups() {
                        // A zombie worker must not complete a checkpoint for partitions it lost.
                        self.sources().iter().try_for_each(|(_, source)| source.fence(barrier.id))?;
                    }
                    match coordinator.complete(barrier.id, self.source_positions(barrier.id)?, committable) {
                        Ok(committables) => {
                            if let Some(sink) = sink {
                                if transactional {
                                    sink.add_consumed_offsets(barrier.id, &self.consumed_offsets(barrier.id)?)?;
                                }
                                sink.commit(barrier.id, &committables)?;
                                if transactional {
                                    coordinator.mark_committed(barrier.id);
                                }
                            }
                            self.checkpoint_complete(barrier.id)?;
                        }
                        // The job goes on; the previous checkpoint stays the one to restore.
                        Err(e) => tracing::error!(checkpoint = barrier.id, error = %e, "checkpoint failed"),
                    }
                    discard_tail = self.stopped_by(barrier.id);
                }
                Message::Watermark(_) | Message::KeyGroups(_) => {}
            }
        }
        if coordinator.is_some() && self.is_unbounded() {
            // A stopped unbounded pipeline ends at its last checkpoint: what the sink holds
            // beyond it is dropped unpublished, and offsets stay at that checkpoint.
            drop(writer);
            self.sources().iter().try_for_each(|(_, source)| source.close())?;
            return Ok(rows);
        }
        if let Some(writer) = writer {
            writer.finish()?;
        }
        self.checkpoint_complete(u64::MAX)?;
        Ok(rows)
    }

    /// The sources of the plan with their stable ids (`<kind>-<k>`, k-th scan of the plan).
    fn sources(&self) -> Vec<(String, Arc<dyn crate::io::Source>)> {
        fn visit(plan: &LogicalPlan, out: &mut Vec<(String, Arc<dyn crate::io::Source>)>) {
            if let LogicalPlan::Scan { source, .. } = plan {
                out.push((format!("{}-{}", source.name(), out.len()), source.clone()));
            }
            plan.inputs().into_iter().for_each(|input| visit(input, out));
        }
        let mut out = vec![];
        visit(&self.plan, &mut out);
        out
    }

    fn is_unbounded(&self) -> bool {
        self.sources().iter().any(|(_, s)| s.is_unbounded())
    }

    /// Whether barrier `id` is (or comes after) the last barrier of a stopping source.
    fn stopped_by(&self, id: u64) -> bool {
        self.sources().iter().any(|(_, s)| s.stop_barrier().is_some_and(|stop| id >= stop))
    }

    /// Where every source was at barrier `id`.
    fn source_positions(&self, id: u64) -> Result<std::collections::BTreeMap<String, serde_json::Value>> {
        let mut out = std::collections::BTreeMap::new();
        for (name, source) in self.sources() {
            if let Some(positions) = source.checkpoint_positions(id)? {
                out.insert(name, positions);
            }
        }
        Ok(out)
    }

    /// What every source consumed up to barrier `id`, for a transactional sink.
    fn consumed_offsets(&self, id: u64) -> Result<crate::io::ConsumedOffsets> {
        let mut consumed = crate::io::ConsumedOffsets::default();
        for (_, source) in self.sources() {
            consumed.extend(source.consumed_offsets(id)?);
        }
        Ok(consumed)
    }

    fn restore_sources(&self, meta: &CheckpointMetadata) -> Result<()> {
        for (name, source) in self.sources() {
            if let Some(positions) = meta.sources.get(&name) {
                source.restore_positions(positions)?;
            }
        }
        Ok(())
    }

    /// Tells every source of the plan that checkpoint `id` is complete.
    fn checkpoint_complete(&self, id: u64) -> Result<()> {
        self.sources().iter().try_for_each(|(_, source)| source.checkpoint_complete(id))
    }

    /// Runs the pipeline and returns its batches, in order.
    pub fn collect(&self) -> Result<Vec<RecordBatch>> {
        let mut out = vec![];
        self.for_each_batch(|b| {
            out.push(b);
            Ok(())
        })?;
        Ok(out)
    }

    /// Runs the pipeline and returns its result as one batch.
    pub fn collect_batch(&self) -> Result<RecordBatch> {
        Ok(concat_batches(&self.schema(), &self.collect()?)?)
    }

    /// Runs the pipeline and counts its rows (reading only what counting needs).
    pub fn count(&self) -> Result<usize> {
        let counted = LogicalPlan::aggregate(self.plan.clone(), vec![], vec![count_all()])?;
        let batch = Stream::<T>::from_plan(counted, self.config.clone()).collect_batch()?;
        let counts = batch.column(0).as_any().downcast_ref::<arrow::array::Int64Array>();
        counts
            .filter(|c| c.len() == 1)
            .map(|c| c.value(0) as usize)
            .ok_or_else(|| SabotError::Execution("count produced no row".into()))
    }

    /// The first `n` rows as a text table.
    pub fn to_pretty_string(&self, n: usize) -> Result<String> {
        let batches = self.limit(n).collect()?;
        if batches.is_empty() {
            return Ok(pretty_format_batches(&[RecordBatch::new_empty(self.schema())])?.to_string());
        }
        Ok(pretty_format_batches(&batches)?.to_string())
    }

    /// Prints the first `n` rows as a table on standard output.
    pub fn show(&self, n: usize) -> Result<()> {
        let table = self.to_pretty_string(n)?;
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "{table}").map_err(|e| SabotError::io("<stdout>", e))
    }

    /// Runs the pipeline into `sink`; returns the number of rows written. Memory stays
    /// bounded for pipelines without blocking operators: batches stream to the sink.
    pub fn to_sink(&self, sink: &dyn Sink) -> Result<u64> {
        self.drive(Some(sink), |_| Ok(()))
    }

    /// Writes the result to a Kafka topic; returns the rows written. For an unbounded source
    /// this runs until the source stops; offsets are committed after the sink's deliveries
    /// are confirmed.
    ///
    /// ```no_run
    /// use sabot::prelude::*;
    /// use sabot::kafka::{KafkaSink, KafkaSource};
    /// Stream::from_kafka(KafkaSource::new("localhost:9092", "in"))?.to_kafka(KafkaSink::new("localhost:9092", "out"))?;
    /// # Ok::<(), sabot::SabotError>(())
    /// ```
    #[cfg(feature = "kafka")]
    pub fn to_kafka(&self, sink: crate::kafka::KafkaSink) -> Result<u64> {
        self.to_sink(&sink)
    }

    /// Writes the result to a Parquet file (snappy); returns the rows written.
    pub fn to_parquet(&self, path: impl AsRef<Path>) -> Result<u64> {
        self.to_sink(&ParquetSink::new(path.as_ref()))
    }

    /// Writes the result to a CSV file with a header; returns the rows written.
    pub fn to_csv(&self, path: impl AsRef<Path>) -> Result<u64> {
        self.to_sink(&CsvSink::new(path.as_ref()))
    }

    /// Writes the result to an Arrow IPC file; returns the rows written.
    pub fn to_ipc(&self, path: impl AsRef<Path>) -> Result<u64> {
        self.to_sink(&IpcSink::new(path.as_ref()))
    }

    /// Writes the result as newline-delimited JSON; returns the rows written.
    pub fn to_json_lines(&self, path: impl AsRef<Path>) -> Result<u64> {
        self.to_sink(&JsonLinesSink::new(path.as_ref()))
    }
}

impl Stream<Untyped> {
    /// Runs the pipeline and decodes its rows as `U` (columns found by name, extra columns
    /// ignored; a missing column or another type is an error naming the column).
    pub fn collect_records<U: Record>(&self) -> Result<Vec<U>> {
        decode_all(self.collect()?)
    }
}

impl<T: Record> Stream<T> {
    /// Runs the pipeline and returns its rows as `T`.
    pub fn collect_records(&self) -> Result<Vec<T>> {
        decode_all(self.collect()?)
    }
}

fn decode_all<U: Record>(batches: Vec<RecordBatch>) -> Result<Vec<U>> {
    let mut out = Vec::with_capacity(batches.iter().map(|b| b.num_rows()).sum());
    for batch in batches {
        out.extend(U::from_batch(&batch)?);
    }
    Ok(out)
}

/// In a pipeline whose workers share key groups: makes the right side's source of every
/// stream join (interval, window, as-of or table) read the partitions its left side's source
/// is assigned, so that both topics' partition `g` (key group `g`) and the join's state for
/// it are owned by one worker at a time. Refuses the joins whose sides cannot be paired so: one source per side,
/// both partitioned by the join keys, in topics with as many partitions.
fn co_partition_stream_joins(plan: &LogicalPlan) -> Result<()> {
    fn sources(plan: &LogicalPlan, out: &mut Vec<Arc<dyn crate::io::Source>>) {
        if let LogicalPlan::Scan { source, .. } = plan {
            out.push(source.clone());
        }
        plan.inputs().into_iter().for_each(|input| sources(input, out));
    }
    if let LogicalPlan::StreamJoin { left, right, left_keys, right_keys, .. } = plan {
        let (mut lefts, mut rights) = (vec![], vec![]);
        sources(left, &mut lefts);
        sources(right, &mut rights);
        let any_key_groups = lefts.iter().chain(&rights).any(|s| s.partitions_are_key_groups());
        let refuse = |why: &str| {
            Err(SabotError::plan(format!(
                "{}: {why}, so the workers sharing these checkpoints (CheckpointConfig::shared_by) would miss \
                 pairs; run this join in one worker, with its own checkpoints",
                plan.describe()
            )))
        };
        match (lefts.as_slice(), rights.as_slice()) {
            _ if !any_key_groups => {}
            ([leader], [follower]) if leader.partitions_are_key_groups() => {
                // Key groups hash the keys as the sinks wrote them: equal keys of two types
                // would be in different partitions of the two topics.
                let (left_schema, right_schema) = (left.schema(), right.schema());
                for (l, r) in left_keys.iter().zip(right_keys) {
                    let (lt, rt) =
                        (left_schema.field_with_name(l)?.data_type(), right_schema.field_with_name(r)?.data_type());
                    if lt != rt {
                        return refuse(&format!(
                            "its keys '{l}' ({lt}) and '{r}' ({rt}) differ in type, so equal keys are in different \
                             partitions of the two topics"
                        ));
                    }
                }
                let handle = leader.partition_leader().expect("a source whose partitions are key groups");
                follower.follow_partitions_of(handle)?;
            }
            _ => {
                return refuse(
                    "a stream join follows key groups across workers when each side reads one Kafka topic \
                     partitioned by the join keys (KafkaSource::partitioned_by)",
                );
            }
        }
    }
    plan.inputs().into_iter().try_for_each(|input| co_partition_stream_joins(input))
}
