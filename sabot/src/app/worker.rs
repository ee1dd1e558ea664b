//! A worker: runs every agent of an app, each on its own threads, until stopped.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::records::{AgentStream, Delivery};
use super::{Agent, AgentKind, App, WorkerOptions, repartition};
use crate::kafka::format::JsonFormat;
use crate::kafka::{EmbeddedCluster, KafkaSource, SourceMetrics, StartOffset, StopHandle};
use crate::window::WatermarkStrategy;
use crate::{Record, Result, SabotError, Stream, Untyped};

/// How far behind the largest event time of a partition its watermark trails, for records
/// with a `#[record(event_time)]` field.
pub const DEFAULT_OUT_OF_ORDERNESS: Duration = Duration::from_secs(1);

/// The source of `agent`: its topic, as JSON records of its input type, in its group.
fn source_for(app: &App, agent: &Agent, options: &WorkerOptions) -> KafkaSource {
    let prefix = options.group.clone().unwrap_or_else(|| app.name.clone());
    let group = agent.group.map_or_else(|| format!("{prefix}-{}", agent.name), str::to_string);
    let mut source = KafkaSource::with_config(options.kafka_config(), agent.topic)
        .group(group)
        .format(JsonFormat::new(agent.input_schema.clone()))
        .readers(options.concurrency);
    // The worker's start offset is where partitions without a committed offset begin (Kafka
    // Streams' auto.offset.reset): a worker taking over a partition resumes from its commit.
    source = match options.start_offset {
        StartOffset::Earliest => source.start_offset(StartOffset::Committed).set("auto.offset.reset", "earliest"),
        StartOffset::Latest => source.start_offset(StartOffset::Committed).set("auto.offset.reset", "latest"),
        other => source.start_offset(other),
    };
    if let Some(column) = agent.event_time {
        source = source.watermarks(column, WatermarkStrategy::bounded_out_of_orderness(DEFAULT_OUT_OF_ORDERNESS));
    }
    if let Some(topic) = agent.dead_letter {
        source = source.dead_letter_topic(topic);
    }
    source
}

/// The settings of an agent's repartition topics.
fn repartition_settings(app: &App, agent: &Agent, options: &WorkerOptions) -> repartition::RepartitionSettings {
    let prefix = options.group.clone().unwrap_or_else(|| app.name.clone());
    repartition::RepartitionSettings {
        config: options.kafka_config(),
        prefix: format!("{prefix}-{}", agent.name),
        readers: options.concurrency,
        watermarks: WatermarkStrategy::bounded_out_of_orderness(DEFAULT_OUT_OF_ORDERNESS),
    }
}

/// Every topic the app reads or writes.
fn topics(app: &App) -> Vec<&'static str> {
    let mut topics: Vec<&'static str> =
        app.agents.iter().flat_map(|a| [Some(a.topic), a.sink, a.dead_letter]).flatten().collect();
    topics.sort_unstable();
    topics.dedup();
    topics
}

/// What a running worker exposes: the counters of each of its Kafka sources, by group.
///
/// ```
/// let status = sabot::app::WorkerStatus::default();
/// assert_eq!(status.assigned_partitions("payments-detect"), 0);
/// ```
#[derive(Debug, Default)]
pub struct WorkerStatus {
    sources: Mutex<Vec<(String, Arc<SourceMetrics>)>>,
}

impl WorkerStatus {
    fn add(&self, group: String, metrics: Arc<SourceMetrics>) {
        self.sources.lock().expect("worker status").push((group, metrics));
    }

    /// The consumer group and counters of every source the worker runs.
    pub fn sources(&self) -> Vec<(String, Arc<SourceMetrics>)> {
        self.sources.lock().expect("worker status").clone()
    }

    /// The partitions this worker owns now in consumer group `group`.
    pub fn assigned_partitions(&self, group: &str) -> u64 {
        self.sources().iter().filter(|(g, _)| g == group).map(|(_, m)| m.assigned_partitions()).sum()
    }
}

/// A worker running on its own thread, like a started `KafkaStreams` instance.
#[derive(Debug)]
pub struct Worker {
    thread: std::thread::JoinHandle<Result<Vec<(String, u64)>>>,
    stop: StopHandle,
    status: Arc<WorkerStatus>,
}

impl Worker {
    /// Asks the worker to stop gracefully.
    pub fn stop(&self) {
        self.stop.stop();
    }

    /// The worker's sources and their counters.
    pub fn status(&self) -> &WorkerStatus {
        &self.status
    }

    /// Waits for the worker to end; the rows each agent produced.
    pub fn join(self) -> Result<Vec<(String, u64)>> {
        self.thread.join().map_err(|_| SabotError::Execution("the worker panicked".into()))?
    }
}

pub(super) fn start(app: &App, options: &WorkerOptions) -> Result<Worker> {
    let (app, options) = (app.clone(), options.clone());
    let stop = StopHandle::default();
    let status = Arc::new(WorkerStatus::default());
    let (thread_stop, thread_status) = (stop.clone(), status.clone());
    let thread = std::thread::Builder::new()
        .name(format!("sabot-worker-{}", app.name))
        .spawn(move || run(&app, &options, Some(thread_stop), thread_status))
        .map_err(|e| SabotError::Execution(format!("cannot start the worker: {e}")))?;
    Ok(Worker { thread, stop, status })
}

pub(super) fn run(
    app: &App,
    options: &WorkerOptions,
    stop: Option<StopHandle>,
    status: Arc<WorkerStatus>,
) -> Result<Vec<(String, u64)>> {
    if app.agents.is_empty() {
        return Err(SabotError::plan(format!("app '{}' has no agents", app.name)));
    }
    // Without a broker, the worker brings its own cluster; it lives until the worker ends.
    let mut options = options.clone();
    let _embedded = match &options.broker {
        Some(_) => None,
        None => {
            let cluster = EmbeddedCluster::start(1)?;
            for topic in topics(app) {
                cluster.create_topic(topic, options.partitions)?;
            }
            tracing::info!(
                bootstrap = %cluster.bootstrap_servers(),
                partitions = options.partitions,
                "no --broker given: started an embedded Kafka cluster (producers can connect to it)"
            );
            options.kafka.entry("session.timeout.ms".into()).or_insert_with(|| "2000".into());
            options.kafka.entry("heartbeat.interval.ms".into()).or_insert_with(|| "300".into());
            options.broker = Some(cluster.bootstrap_servers());
            Some(cluster)
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(options.concurrency.clamp(1, 4))
        .thread_name("sabot-agent")
        .enable_all()
        .build()
        .map_err(|e| SabotError::Execution(format!("cannot start the agents' runtime: {e}")))?;
    let stop = stop.unwrap_or_default();
    let mut handles = Vec::new();
    let mut stops = Vec::new();
    for agent in &app.agents {
        let source = source_for(app, agent, &options);
        stops.push(source.stop_handle());
        status.add(source.group_id(), source.metrics());
        let input = Stream::from_kafka(source)?.with_parallelism(options.concurrency);
        match &agent.kind {
            AgentKind::Stream(build) => {
                let output = build(input)?;
                let config = output.config().clone().with_state_backend(options.state_backend()?);
                let stages = repartition::stages(
                    output.logical_plan().clone(),
                    agent.key,
                    &repartition_settings(app, agent, &options),
                );
                for (i, stage) in stages.into_iter().enumerate() {
                    stops.extend(stage.stop.clone());
                    if let Some((group, metrics)) = stage.metrics.clone() {
                        status.add(group, metrics);
                    }
                    let mut stream = Stream::<Untyped>::from_plan((*stage.plan).clone(), config.clone());
                    if let Some(checkpointing) = options.checkpointing(agent.name, i) {
                        stream = stream.with_checkpointing(checkpointing);
                    }
                    let sink = match &stage.repartition {
                        Some((topic, keys)) => {
                            if let Some(cluster) = &_embedded {
                                cluster.create_topic(topic, options.partitions)?;
                            } else {
                                crate::kafka::ensure_topic(&options.kafka_config(), topic, options.partitions)?;
                            }
                            tracing::info!(
                                agent = agent.name,
                                topic,
                                ?keys,
                                "key_by across workers goes through a repartition topic"
                            );
                            Some(repartition::sink(&options.kafka_config(), topic, stream.schema(), keys.clone()))
                        }
                        None => app.sink_for(agent, &options),
                    };
                    // An agent's rows are those of its last stage, the one writing its sink.
                    let last = stage.repartition.is_none();
                    let thread =
                        std::thread::Builder::new().name(format!("sabot-agent-{}-{i}", agent.name)).spawn(move || {
                            let rows = match sink {
                                Some(sink) => stream.to_kafka(sink),
                                None => {
                                    let mut rows = 0u64;
                                    stream.for_each_batch(|b| {
                                        rows += b.num_rows() as u64;
                                        Ok(())
                                    })?;
                                    Ok(rows)
                                }
                            };
                            rows.map(|r| last.then_some(r))
                        });
                    let thread =
                        thread.map_err(|e| SabotError::Execution(format!("cannot start agent {}: {e}", agent.name)))?;
                    handles.push((agent.name, thread));
                }
            }
            AgentKind::Records(run) => {
                let (run, handle, agent_stop) =
                    (run.clone(), runtime.handle().clone(), stops.last().cloned().unwrap_or_default());
                let thread = std::thread::Builder::new()
                    .name(format!("sabot-agent-{}", agent.name))
                    .spawn(move || run(input, &handle, agent_stop).map(Some));
                let thread =
                    thread.map_err(|e| SabotError::Execution(format!("cannot start agent {}: {e}", agent.name)))?;
                handles.push((agent.name, thread));
            }
        }
        tracing::info!(agent = agent.name, topic = agent.topic, sink = ?agent.sink, "agent started");
    }
    // Stop every agent on Ctrl-C / SIGTERM, on the caller's stop handle, or when one fails.
    let watcher_stops = stops.clone();
    runtime.spawn(async move {
        let terminate = async {
            #[cfg(unix)]
            if let Ok(mut signal) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                signal.recv().await;
                return;
            }
            std::future::pending::<()>().await
        };
        let requested = async {
            while !stop.is_stopped() {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => tracing::info!("interrupted: stopping the agents"),
            _ = terminate => tracing::info!("terminated: stopping the agents"),
            _ = requested => tracing::info!("stop requested: stopping the agents"),
        }
        watcher_stops.iter().for_each(StopHandle::stop);
    });
    let mut produced = Vec::new();
    let mut first_error = None;
    for (name, thread) in handles {
        match thread.join() {
            Ok(Ok(Some(rows))) => produced.push((name.to_string(), rows)),
            Ok(Ok(None)) => {}
            Ok(Err(e)) => {
                tracing::error!(agent = name, error = %e, "agent failed");
                stops.iter().for_each(StopHandle::stop);
                first_error.get_or_insert(e);
            }
            Err(_) => {
                stops.iter().for_each(StopHandle::stop);
                first_error.get_or_insert(SabotError::Execution(format!("agent {name} panicked")));
            }
        }
    }
    runtime.shutdown_timeout(Duration::from_secs(1));
    match first_error {
        Some(e) => Err(e),
        None => Ok(produced),
    }
}

/// Feeds the records of `input` to an async agent, batch by batch; a batch counts as
/// processed (and its offsets may be committed) once the agent asks for the record after it.
pub(super) fn run_records_agent<I: Record + Send + 'static>(
    name: &str,
    input: Stream<Untyped>,
    start: impl FnOnce(AgentStream<I>) -> Pin<Box<dyn Future<Output = Result<()>> + Send>>,
    runtime: &tokio::runtime::Handle,
    stop: StopHandle,
) -> Result<u64> {
    let (tx, rx) = mpsc::channel::<Delivery<I>>(1);
    let task = runtime.spawn(start(AgentStream::new(rx)));
    let mut rows = 0u64;
    let fed = input.for_each_batch(|batch| {
        let records = I::from_batch(&batch)?;
        rows += records.len() as u64;
        let (processed, done) = oneshot::channel();
        if tx.blocking_send(Delivery { records, processed }).is_err() {
            // The agent returned before its stream ended: stop consuming.
            stop.stop();
            return Ok(());
        }
        // Wait until the agent is done with the batch; a finished agent drops the sender.
        let _ = done.blocking_recv();
        Ok(())
    });
    drop(tx);
    let outcome = runtime
        .block_on(task)
        .map_err(|e| SabotError::Execution(format!("agent {name} panicked: {e}")))
        .and_then(|r| r);
    fed?;
    outcome.map(|()| rows)
}

pub(super) fn explain(app: &App) -> Result<String> {
    let options = WorkerOptions::default().with_broker("<broker>").with_concurrency(1);
    let mut out = String::new();
    for agent in &app.agents {
        let sink = agent.sink.map_or_else(|| "none".to_string(), |s| format!("kafka topic '{s}'"));
        out.push_str(&format!("### agent {} (topic '{}' -> {sink})\n", agent.name, agent.topic));
        match &agent.kind {
            AgentKind::Stream(build) => {
                let output = build(Stream::from_kafka(source_for(app, agent, &options))?)?;
                let settings = repartition_settings(app, agent, &options);
                let stages = repartition::stages(output.logical_plan().clone(), agent.key, &settings);
                let count = stages.len();
                for (i, stage) in stages.into_iter().enumerate() {
                    let writes = match &stage.repartition {
                        Some((topic, keys)) => {
                            let keys: Vec<String> = keys.iter().map(ToString::to_string).collect();
                            format!("repartition topic '{topic}' by [{}]", keys.join(", "))
                        }
                        None => sink.clone(),
                    };
                    out.push_str(&format!("-- stage {} of {count}, writes {writes}\n", i + 1));
                    let stream = Stream::<Untyped>::from_plan((*stage.plan).clone(), output.config().clone());
                    out.push_str(&stream.explain()?);
                    out.push('\n');
                }
            }
            AgentKind::Records(_) => out.push_str("async agent: takes the records one by one (no plan)\n"),
        }
        out.push('\n');
    }
    Ok(out)
}
