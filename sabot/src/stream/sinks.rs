//! Terminal operations: running a stream and delivering its result.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use arrow::compute::concat_batches;
use arrow::record_batch::RecordBatch;
use arrow::util::pretty::pretty_format_batches;

use super::{Stream, Untyped};
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
        self.drive(f, || Ok(()))?;
        self.checkpoint_complete(u64::MAX)
    }

    /// Runs the pipeline: `on_batch` takes every result batch; at each checkpoint barrier,
    /// `flush` makes the output durable and then the sources are told the checkpoint is done.
    fn drive(
        &self,
        mut on_batch: impl FnMut(RecordBatch) -> Result<()>,
        mut flush: impl FnMut() -> Result<()>,
    ) -> Result<()> {
        let physical = self.physical_plan()?;
        let streams = physical.execute(&self.config)?;
        let merged = crate::exec::gather(streams, physical.preserves_order(), self.config.channel_capacity);
        for item in merged {
            match item?.msg {
                Message::Batch(batch) => on_batch(batch)?,
                Message::Barrier(barrier) => {
                    flush()?;
                    self.checkpoint_complete(barrier.id)?;
                }
                Message::Watermark(_) => {}
            }
        }
        Ok(())
    }

    /// Tells every source of the plan that checkpoint `id` is complete.
    fn checkpoint_complete(&self, id: u64) -> Result<()> {
        fn visit(plan: &LogicalPlan, id: u64) -> Result<()> {
            if let LogicalPlan::Scan { source, .. } = plan {
                source.checkpoint_complete(id)?;
            }
            plan.inputs().into_iter().try_for_each(|input| visit(input, id))
        }
        visit(&self.plan, id)
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
        let writer = std::cell::RefCell::new(sink.open(self.schema())?);
        let mut rows = 0u64;
        self.drive(
            |b| {
                rows += b.num_rows() as u64;
                writer.borrow_mut().write(&b)
            },
            || writer.borrow_mut().flush(),
        )?;
        writer.into_inner().finish()?;
        self.checkpoint_complete(u64::MAX)?;
        Ok(rows)
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
