//! Constructors: where a stream's data comes from.

use std::path::Path;
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;

use super::{Stream, Untyped};
use crate::exec::ExecConfig;
use crate::io::Source;
use crate::io::csv::CsvSource;
use crate::io::ipc::IpcSource;
use crate::io::json::JsonLinesSource;
use crate::io::memory::{GenerateSource, MemorySource};
use crate::io::parquet::ParquetSource;
use crate::plan::LogicalPlan;
use crate::{Record, Result, SabotError};

impl Stream<Untyped> {
    /// A stream over any [`Source`].
    pub fn from_source(source: Arc<dyn Source>) -> Stream<Untyped> {
        Stream::from_plan(LogicalPlan::scan(source), ExecConfig::default())
    }

    /// An unbounded stream of the messages of Kafka topics (see [`KafkaSource`] for batching,
    /// watermarks, dead letters and offset commits). Settings are checked here, before any
    /// connection is made.
    ///
    /// [`KafkaSource`]: crate::kafka::KafkaSource
    ///
    /// ```no_run
    /// use sabot::prelude::*;
    /// use sabot::kafka::KafkaSource;
    /// let lines = Stream::from_kafka(KafkaSource::new("localhost:9092", "logs"))?;
    /// lines.filter(col("value").contains(lit("ERROR")))?.show(10)?;
    /// # Ok::<(), sabot::SabotError>(())
    /// ```
    #[cfg(feature = "kafka")]
    pub fn from_kafka(source: crate::kafka::KafkaSource) -> Result<Stream<Untyped>> {
        source.validate()?;
        Ok(Stream::from_source(Arc::new(source)))
    }

    /// Reads a Parquet file (or a directory of them), pushing projections and filters into the
    /// scan (row groups whose statistics rule a filter out are skipped).
    ///
    /// ```no_run
    /// use sabot::prelude::*;
    /// let rows = Stream::from_parquet("quotes.parquet")?.filter(col("bid").gt(lit(100.0)))?.count()?;
    /// # Ok::<(), sabot::SabotError>(())
    /// ```
    pub fn from_parquet(path: impl AsRef<Path>) -> Result<Stream<Untyped>> {
        Ok(Stream::from_source(Arc::new(ParquetSource::new(path)?)))
    }

    /// Reads a CSV file with a header, inferring the schema; parsed in parallel byte ranges.
    /// Use [`Stream::from_csv_source`] for options (schema, delimiter, a rejects file…).
    ///
    /// ```no_run
    /// let quotes = sabot::Stream::from_csv("quotes.csv")?;
    /// # Ok::<(), sabot::SabotError>(())
    /// ```
    pub fn from_csv(path: impl AsRef<Path>) -> Result<Stream<Untyped>> {
        Stream::from_csv_source(CsvSource::new(path.as_ref()))
    }

    /// Reads a configured CSV source.
    ///
    /// ```no_run
    /// use sabot::io::csv::CsvSource;
    /// let s = sabot::Stream::from_csv_source(CsvSource::new("in.csv").rejects("bad_rows.csv"))?;
    /// # Ok::<(), sabot::SabotError>(())
    /// ```
    pub fn from_csv_source(source: CsvSource) -> Result<Stream<Untyped>> {
        source.try_schema()?;
        Ok(Stream::from_source(Arc::new(source)))
    }

    /// Reads an Arrow IPC file, memory-mapped: batches point into the mapping (zero-copy).
    ///
    /// ```no_run
    /// let s = sabot::Stream::from_ipc("securities.arrow")?;
    /// # Ok::<(), sabot::SabotError>(())
    /// ```
    pub fn from_ipc(path: impl AsRef<Path>) -> Result<Stream<Untyped>> {
        Ok(Stream::from_source(Arc::new(IpcSource::new(path)?)))
    }

    /// Reads newline-delimited JSON, inferring the schema.
    ///
    /// ```no_run
    /// let s = sabot::Stream::from_json_lines("events.jsonl")?;
    /// # Ok::<(), sabot::SabotError>(())
    /// ```
    pub fn from_json_lines(path: impl AsRef<Path>) -> Result<Stream<Untyped>> {
        Stream::from_json_lines_source(JsonLinesSource::new(path.as_ref()))
    }

    /// Reads a configured JSON-lines source.
    pub fn from_json_lines_source(source: JsonLinesSource) -> Result<Stream<Untyped>> {
        source.try_schema()?;
        Ok(Stream::from_source(Arc::new(source)))
    }

    /// A stream over batches already in memory (they must share one schema).
    ///
    /// ```
    /// use std::sync::Arc;
    /// use arrow::array::{Int64Array, RecordBatch};
    /// let batch = RecordBatch::try_from_iter([("x", Arc::new(Int64Array::from(vec![1, 2])) as _)]).unwrap();
    /// assert_eq!(sabot::Stream::from_batches(vec![batch])?.count()?, 2);
    /// # Ok::<(), sabot::SabotError>(())
    /// ```
    pub fn from_batches(batches: Vec<RecordBatch>) -> Result<Stream<Untyped>> {
        let schema = batches.first().map(|b| b.schema()).ok_or_else(|| {
            SabotError::plan("from_batches needs at least one batch to know the schema; use from_batches_with_schema")
        })?;
        Stream::from_batches_with_schema(schema, batches)
    }

    /// A stream over in-memory batches of `schema` (possibly none).
    pub fn from_batches_with_schema(schema: SchemaRef, batches: Vec<RecordBatch>) -> Result<Stream<Untyped>> {
        Ok(Stream::from_source(Arc::new(MemorySource::new(schema, batches)?)))
    }

    /// A stream of `batch_count` batches made by `generate(i)`, in parallel, in order of `i`.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use arrow::array::{Int64Array, RecordBatch};
    /// use arrow::datatypes::{DataType, Field, Schema};
    /// let schema = Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, false)]));
    /// let s = schema.clone();
    /// let stream = sabot::Stream::generate(schema, 10, move |i| {
    ///     let ids = Int64Array::from_iter_values((0..100).map(|j| (i * 100 + j) as i64));
    ///     Ok(RecordBatch::try_new(s.clone(), vec![Arc::new(ids)])?)
    /// });
    /// assert_eq!(stream.count()?, 1000);
    /// # Ok::<(), sabot::SabotError>(())
    /// ```
    pub fn generate(
        schema: SchemaRef,
        batch_count: usize,
        generate: impl Fn(usize) -> Result<RecordBatch> + Send + Sync + 'static,
    ) -> Stream<Untyped> {
        Stream::from_source(Arc::new(GenerateSource::new(schema, batch_count, Arc::new(generate))))
    }
}

impl<T: Record> Stream<T> {
    /// Reads a CSV file with a header whose columns are `T`'s: the schema comes from `T`
    /// (no inference), so every value is checked against the field's type while parsing.
    ///
    /// ```no_run
    /// use sabot::prelude::*;
    /// #[derive(Record)]
    /// struct Quote { id: i64, bid: f64 }
    /// let quotes: Stream<Quote> = Stream::from_csv_records("quotes.csv")?;
    /// # Ok::<(), sabot::SabotError>(())
    /// ```
    pub fn from_csv_records(path: impl AsRef<Path>) -> Result<Stream<T>> {
        let source = CsvSource::new(path.as_ref()).with_schema(T::schema());
        Ok(Stream::from_plan(LogicalPlan::scan(Arc::new(source)), ExecConfig::default()))
    }

    /// Reads newline-delimited JSON objects as `T` (the schema comes from `T`).
    pub fn from_json_lines_records(path: impl AsRef<Path>) -> Result<Stream<T>> {
        let source = JsonLinesSource::new(path.as_ref()).with_schema(T::schema());
        Ok(Stream::from_plan(LogicalPlan::scan(Arc::new(source)), ExecConfig::default()))
    }

    /// A typed stream over records in memory.
    ///
    /// ```
    /// use sabot::prelude::*;
    /// #[derive(Record)]
    /// struct Point { x: i64 }
    /// assert_eq!(Stream::from_records(vec![Point { x: 1 }, Point { x: 2 }]).count()?, 2);
    /// # Ok::<(), sabot::SabotError>(())
    /// ```
    pub fn from_records(records: Vec<T>) -> Stream<T> {
        let config = ExecConfig::default();
        let chunk = config.batch_size;
        let batches: Vec<RecordBatch> = records.chunks(chunk).map(T::to_batch).collect();
        let source = MemorySource::new(T::schema(), batches).expect("batches of T::schema() match T::schema()");
        Stream::from_plan(LogicalPlan::scan(Arc::new(source)), config)
    }
}
