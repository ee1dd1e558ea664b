//! A worker: runs every agent of an app, each on its own threads, until stopped.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::records::{AgentStream, Delivery};
use super::{Agent, AgentKind, App, WorkerOptions};
use crate::kafka::format::JsonFormat;
use crate::kafka::{EmbeddedCluster, KafkaSource, StopHandle};
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
        .start_offset(options.start_offset)
        .readers(options.concurrency);
    if let Some(column) = agent.event_time {
        source = source.watermarks(column, WatermarkStrategy::bounded_out_of_orderness(DEFAULT_OUT_OF_ORDERNESS));
    }
    if let Some(topic) = agent.dead_letter {
        source = source.dead_letter_topic(topic);
    }
    source
}

/// Every topic the app reads or writes.
fn topics(app: &App) -> Vec<&'static str> {
    let mut topics: Vec<&'static str> =
        app.agents.iter().flat_map(|a| [Some(a.topic), a.sink, a.dead_letter]).flatten().collect();
    topics.sort_unstable();
    topics.dedup();
    topics
}

pub(super) fn run(app: &App, options: &WorkerOptions, stop: Option<StopHandle>) -> Result<Vec<(String, u64)>> {
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
        let input = Stream::from_kafka(source)?.with_parallelism(options.concurrency);
        let sink = app.sink_for(agent, &options);
        let (agent, handle, agent_stop) = (agent.clone(), runtime.handle().clone(), stops.last().cloned());
        let thread = std::thread::Builder::new().name(format!("sabot-agent-{}", agent.name)).spawn(move || {
            tracing::info!(agent = agent.name, topic = agent.topic, sink = ?agent.sink, "agent started");
            let rows = match &agent.kind {
                AgentKind::Stream(build) => {
                    let output = build(input)?;
                    match sink {
                        Some(sink) => output.to_kafka(sink),
                        None => {
                            let mut rows = 0u64;
                            output.for_each_batch(|b| {
                                rows += b.num_rows() as u64;
                                Ok(())
                            })?;
                            Ok(rows)
                        }
                    }
                }
                AgentKind::Records(run) => run(input, &handle, agent_stop.unwrap_or_default()),
            };
            rows.map(|r| (agent.name.to_string(), r))
        });
        let thread = thread.map_err(|e| SabotError::Execution(format!("cannot start agent {}: {e}", agent.name)))?;
        handles.push((agent.name, thread));
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
            Ok(Ok(rows)) => produced.push(rows),
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
                let input = Stream::from_kafka(source_for(app, agent, &options))?;
                out.push_str(&build(input)?.explain()?);
            }
            AgentKind::Records(_) => out.push_str("async agent: takes the records one by one (no plan)\n"),
        }
        out.push('\n');
    }
    Ok(out)
}
