//! Exactly-once output across crashes: a running total per user, read from Kafka, kept in
//! keyed state and written as JSON-lines files through a two-phase commit with the
//! pipeline's checkpoints.
//!
//! Kill the process at any moment (even SIGKILL, even during a checkpoint) and start it again
//! with the same directories: it restores the latest checkpoint (keyed state and Kafka
//! positions), publishes what that checkpoint had prepared, drops what came after it and
//! reads on from there. The published files (`<output-dir>/part-*.jsonl`) then hold one row
//! per input event, none lost and none repeated: per user, `count` runs 1, 2, 3… without
//! gaps, and `total` is the sum of the user's amounts so far. `tests/exactly_once.rs` proves
//! it by killing this binary repeatedly.
//!
//! ```text
//! cargo run --example exactly_once -- --broker 127.0.0.1:PORT --topic events --group totals \
//!     --checkpoint-dir /tmp/eo/checkpoints --output-dir /tmp/eo/out
//! ```
//!
//! Input: JSON events `{"user": "u1", "seq": 1, "amount": 10, "ts": 1700000000000}`, keyed by
//! user (so a user's events stay in order in one partition). SIGTERM or Ctrl-C stops it at a
//! last checkpoint.
//!
//! `--window-ms N` computes tumbling event-time windows instead (per user: `count` and
//! `total` of the events whose `ts` falls in each window of N ms), published exactly once
//! when the watermark passes the window's end.
//!
//! `--output-topic T` writes the rows to Kafka topic `T` instead, inside Kafka transactions
//! that commit with the checkpoints and carry the consumed offsets (read it with
//! `isolation.level=read_committed`).
//!
//! Several workers: give each a `--worker-id` and its own `--output-dir`, and the same
//! `--checkpoint-dir` (shared). The topic must then be written partitioned by user with
//! Sabot's partitioner (`KafkaSink::partition_by(vec![col("user")])`): each partition is a key
//! group whose running totals move with it when a worker joins, leaves or dies.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use sabot::checkpoint::CheckpointConfig;
use sabot::io::transactional_file::TransactionalFileSink;
use sabot::kafka::format::JsonFormat;
use sabot::kafka::{KafkaConfig, KafkaSink, KafkaSource, StartOffset, StopHandle};
use sabot::operator::{KeyedProcessFunction, ProcessContext};
use sabot::prelude::*;
use sabot::state::{ValueState, ValueStateDescriptor};

#[derive(Parser)]
#[command(about = "Running totals per user from Kafka to exactly-once JSON-lines files or a Kafka topic")]
#[command(group(clap::ArgGroup::new("output").required(true).args(["output_dir", "output_topic"])))]
struct Cli {
    /// Bootstrap servers.
    #[arg(long)]
    broker: String,
    /// The topic of events.
    #[arg(long, default_value = "events")]
    topic: String,
    /// The consumer group.
    #[arg(long, default_value = "exactly-once")]
    group: String,
    /// Where checkpoints go (and are restored from).
    #[arg(long)]
    checkpoint_dir: PathBuf,
    /// Where the output files are published.
    #[arg(long)]
    output_dir: Option<PathBuf>,
    /// The topic the rows are written to, exactly once (instead of files).
    #[arg(long)]
    output_topic: Option<String>,
    /// How often the pipeline checkpoints, in ms.
    #[arg(long, default_value_t = 200)]
    checkpoint_interval_ms: u64,
    /// Parallel readers and operator instances.
    #[arg(long, default_value_t = 2)]
    parallelism: usize,
    /// This worker's name when several share the checkpoint directory.
    #[arg(long)]
    worker_id: Option<String>,
    /// Instead of running totals: per user, the count and total of each tumbling event-time
    /// window of this many ms (on `ts`), published when the watermark passes its end.
    #[arg(long)]
    window_ms: Option<u64>,
}

/// One input event.
#[derive(Record, Debug, Clone)]
pub struct Event {
    pub user: String,
    pub seq: i64,
    pub amount: i64,
    pub ts: i64,
}

/// A user's running total after the event with sequence number `seq`.
#[derive(Record, Debug, Clone)]
pub struct Total {
    pub user: String,
    pub count: i64,
    pub total: i64,
    pub seq: i64,
}

/// Keeps (count, total) per user in keyed state and emits them after every event.
#[derive(Default)]
pub struct RunningTotal {
    running: Option<ValueState<(i64, i64)>>,
}

impl KeyedProcessFunction for RunningTotal {
    type In = Event;
    type Out = Total;

    fn open(&mut self, ctx: &mut ProcessContext<'_>) -> Result<()> {
        self.running = Some(ctx.state().value_state(&ValueStateDescriptor::new("running"))?);
        Ok(())
    }

    fn process_element(
        &mut self,
        event: EventView<'_>,
        ctx: &mut ProcessContext<'_>,
        out: &mut Vec<Total>,
    ) -> Result<()> {
        let state = self.running.expect("opened");
        let (count, total) = state.value(ctx.state())?.unwrap_or_default();
        let (count, total) = (count + 1, total + event.amount);
        state.update(ctx.state(), (count, total))?;
        out.push(Total { user: event.user.to_string(), count, total, seq: event.seq });
        Ok(())
    }
}

/// Stops the source on SIGTERM or Ctrl-C.
fn stop_on_signal(stop: StopHandle) -> std::io::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    std::thread::Builder::new().name("signals".into()).spawn(move || {
        runtime.block_on(async {
            let terminate = async {
                #[cfg(unix)]
                if let Ok(mut signal) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    signal.recv().await;
                    return;
                }
                std::future::pending::<()>().await
            };
            tokio::select! {
                _ = tokio::signal::ctrl_c() => tracing::info!("interrupted: stopping"),
                _ = terminate => tracing::info!("terminated: stopping"),
            }
        });
        stop.stop();
    })?;
    Ok(())
}

fn run(cli: &Cli) -> Result<u64> {
    let config = KafkaConfig::new(&cli.broker).set("session.timeout.ms", "2000").set("heartbeat.interval.ms", "500");
    let mut source = KafkaSource::with_config(config, &cli.topic)
        .group(&cli.group)
        .start_offset(StartOffset::Earliest)
        .format(JsonFormat::for_record::<Event>());
    let mut checkpoints =
        CheckpointConfig::new(&cli.checkpoint_dir).with_interval(Duration::from_millis(cli.checkpoint_interval_ms));
    if let Some(worker) = &cli.worker_id {
        source = source.partitioned_by(vec![col("user")]);
        checkpoints = checkpoints.shared_by(worker);
    }
    stop_on_signal(source.stop_handle()).map_err(|e| SabotError::Execution(format!("cannot watch signals: {e}")))?;
    if cli.window_ms.is_some() {
        // Per-partition watermarks on `ts` (each partition is in time order); no partition is
        // ever treated as idle, so a window fires only once every partition has passed it.
        source = source
            .watermarks("ts", WatermarkStrategy::bounded_out_of_orderness(Duration::ZERO))
            .idle_timeout(Duration::from_secs(3600));
    }
    let stream = Stream::from_kafka(source)?.with_parallelism(cli.parallelism).with_checkpointing(checkpoints);
    if let Some(window) = cli.window_ms {
        let windows = stream
            .key_by(["user"])
            .window(WindowSpec::tumbling(Duration::from_millis(window)))
            .aggregate([count_all(), sum(col("amount")).alias("total")])?;
        return write(&windows, cli);
    }
    write(&stream.key_by(["user"]).process(RunningTotal::default)?.untyped(), cli)
}

/// Writes the rows to the output files or topic.
fn write(rows: &Stream<Untyped>, cli: &Cli) -> Result<u64> {
    if let Some(topic) = &cli.output_topic {
        // One transactional id per worker, the same across its restarts (which fence the
        // dead incarnation).
        let id = format!("{}-{}", cli.group, cli.worker_id.as_deref().unwrap_or("worker"));
        return rows.to_kafka(KafkaSink::new(&cli.broker, topic).key("user").exactly_once(id));
    }
    let dir = cli.output_dir.as_ref().ok_or_else(|| SabotError::plan("give --output-dir or --output-topic"))?;
    rows.to_transactional_files(TransactionalFileSink::json_lines(dir))
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    tracing::info!(broker = %cli.broker, topic = %cli.topic, group = %cli.group, worker = ?cli.worker_id, "starting");
    match run(&cli) {
        Ok(rows) => {
            tracing::info!(rows, "stopped");
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!(error = %e, "failed");
            ExitCode::FAILURE
        }
    }
}
