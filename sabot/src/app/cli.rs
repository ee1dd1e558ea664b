//! The command line of an app binary: `worker`, `agents` and `explain`, with settings from
//! flags, environment variables (`SABOT_*`) and a TOML file, in that order of precedence.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use serde::Deserialize;

use super::App;
use crate::kafka::{KafkaConfig, StartOffset};
use crate::{Result, SabotError};

#[derive(Parser, Debug)]
#[command(about = "A Sabot stream-processing app", disable_help_subcommand = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Runs the app's agents until interrupted (Ctrl-C or SIGTERM stops them gracefully).
    Worker(Box<WorkerArgs>),
    /// Lists the agents: name, topic, sink and kind.
    Agents,
    /// Prints each agent's logical, optimized and physical plan.
    Explain,
    /// Copies the latest complete checkpoint of every agent into a savepoint directory,
    /// which `worker --from-savepoint` restores (after an upgrade that keeps operator names).
    Savepoint(SavepointArgs),
}

#[derive(Args, Debug)]
struct SavepointArgs {
    /// The worker's checkpoint directory.
    #[arg(long, env = "SABOT_CHECKPOINT_DIR")]
    checkpoint_dir: PathBuf,
    /// Where to write the savepoint (must not exist or be empty).
    target: PathBuf,
}

#[derive(Args, Debug, Default)]
struct WorkerArgs {
    /// Consumers (and parallel pipeline partitions) per agent [default: the number of cores].
    #[arg(short = 'c', long, env = "SABOT_CONCURRENCY")]
    concurrency: Option<usize>,
    /// Kafka bootstrap servers; without it the worker starts an embedded cluster.
    #[arg(short = 'b', long, env = "SABOT_BROKER")]
    broker: Option<String>,
    /// Consumer-group prefix shared by the workers of one deployment [default: the app name].
    #[arg(long, env = "SABOT_GROUP")]
    group: Option<String>,
    /// Log level (error, warn, info, debug, trace) or a tracing filter; RUST_LOG wins if set.
    #[arg(short = 'l', long, env = "SABOT_LOGLEVEL")]
    loglevel: Option<String>,
    /// A TOML file with `broker`, `concurrency`, `group`, `loglevel`, `partitions`,
    /// `start_offset`, `checkpoint_dir`, `checkpoint_interval_ms`, `worker_id`, `state_dir`
    /// and a `[kafka]` table of librdkafka properties.
    #[arg(long, env = "SABOT_CONFIG")]
    config: Option<PathBuf>,
    /// Partitions of the topics the embedded cluster creates [default: 4].
    #[arg(long, env = "SABOT_PARTITIONS")]
    partitions: Option<usize>,
    /// Where partitions without a committed offset start (Kafka's auto.offset.reset):
    /// earliest (default) or latest; `committed` is the same as earliest.
    #[arg(long, env = "SABOT_START_OFFSET")]
    start_offset: Option<String>,
    /// A librdkafka property, `key=value` (repeatable), e.g. `--set security.protocol=SSL`.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    properties: Vec<String>,
    /// Checkpoint agents' state and offsets into this directory, and restore the latest
    /// checkpoint on start (exactly-once with two-phase sinks).
    #[arg(long, env = "SABOT_CHECKPOINT_DIR")]
    checkpoint_dir: Option<PathBuf>,
    /// Milliseconds between checkpoints [default: 10000].
    #[arg(long, env = "SABOT_CHECKPOINT_INTERVAL_MS")]
    checkpoint_interval_ms: Option<u64>,
    /// Restore this savepoint (made by the `savepoint` command) instead of the latest checkpoint.
    #[arg(long, requires = "checkpoint_dir")]
    from_savepoint: Option<PathBuf>,
    /// This worker's name, unique in the group and the same across restarts: workers then
    /// share the checkpoint directory (each writes `<dir>/<agent>/stage-<i>/<worker-id>`),
    /// and keyed state behind a repartition topic moves with its partitions between them.
    #[arg(long, env = "SABOT_WORKER_ID", requires = "checkpoint_dir")]
    worker_id: Option<String>,
    /// Keep agents' state (keyed `process()` state, tumbling and sliding window panes, open
    /// count windows, table-join tables) in a RocksDB instance in this directory, so it can outgrow memory;
    /// with `--worker-id`, in `<dir>/<worker-id>` [default: in memory]. Needs the `rocksdb`
    /// feature.
    #[arg(long, env = "SABOT_STATE_DIR")]
    state_dir: Option<PathBuf>,
}

/// The settings file (all keys optional).
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    broker: Option<String>,
    concurrency: Option<usize>,
    group: Option<String>,
    loglevel: Option<String>,
    partitions: Option<usize>,
    start_offset: Option<String>,
    checkpoint_dir: Option<PathBuf>,
    checkpoint_interval_ms: Option<u64>,
    worker_id: Option<String>,
    state_dir: Option<PathBuf>,
    #[serde(default)]
    kafka: BTreeMap<String, String>,
}

/// How a worker runs: resolved from the command line, the environment and a settings file.
///
/// ```
/// use sabot::app::WorkerOptions;
///
/// let options = WorkerOptions::default().with_broker("kafka-1:9092").with_concurrency(2);
/// assert_eq!(options.concurrency, 2);
/// assert_eq!(options.kafka_config().brokers(), "kafka-1:9092");
/// ```
#[derive(Clone)]
pub struct WorkerOptions {
    /// Bootstrap servers; `None` starts an embedded cluster.
    pub broker: Option<String>,
    /// Consumers and pipeline partitions per agent.
    pub concurrency: usize,
    /// Consumer-group prefix; `None` uses the app name.
    pub group: Option<String>,
    /// The log filter.
    pub loglevel: String,
    /// Partitions of topics created in the embedded cluster.
    pub partitions: usize,
    /// Where partitions without a committed offset start: `Earliest` or `Latest` (a worker
    /// that takes over a partition always resumes from its committed offset), or
    /// `Timestamp`, applied the first time this process reads a partition.
    pub start_offset: StartOffset,
    /// librdkafka properties passed to every client.
    pub kafka: BTreeMap<String, String>,
    /// Where agents checkpoint (one sub-directory per agent and stage); `None`: no checkpoints.
    pub checkpoint_dir: Option<PathBuf>,
    /// How often agents checkpoint.
    pub checkpoint_interval: std::time::Duration,
    /// A savepoint to restore instead of the latest checkpoint.
    pub from_savepoint: Option<PathBuf>,
    /// With checkpoints: this worker's name in a checkpoint directory shared by the workers
    /// (see [`CheckpointConfig::shared_by`](crate::checkpoint::CheckpointConfig::shared_by)).
    pub worker_id: Option<String>,
    /// Where agents keep their state in RocksDB (see
    /// [`with_state_dir`](WorkerOptions::with_state_dir)); `None`: in memory.
    pub state_dir: Option<PathBuf>,
}

/// Secrets among the Kafka properties are redacted, as in [`KafkaConfig`]'s `Debug`.
impl std::fmt::Debug for WorkerOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerOptions")
            .field("concurrency", &self.concurrency)
            .field("group", &self.group)
            .field("loglevel", &self.loglevel)
            .field("partitions", &self.partitions)
            .field("start_offset", &self.start_offset)
            .field("checkpoint_dir", &self.checkpoint_dir)
            .field("checkpoint_interval", &self.checkpoint_interval)
            .field("from_savepoint", &self.from_savepoint)
            .field("worker_id", &self.worker_id)
            .field("state_dir", &self.state_dir)
            .field("kafka", &self.kafka_config())
            .finish()
    }
}

impl Default for WorkerOptions {
    fn default() -> Self {
        WorkerOptions {
            broker: None,
            concurrency: std::thread::available_parallelism().map_or(1, |n| n.get()),
            group: None,
            loglevel: "info".to_string(),
            partitions: 4,
            start_offset: StartOffset::Committed,
            kafka: BTreeMap::new(),
            checkpoint_dir: None,
            checkpoint_interval: std::time::Duration::from_secs(10),
            from_savepoint: None,
            worker_id: None,
            state_dir: None,
        }
    }
}

impl WorkerOptions {
    /// Uses the cluster at `broker`.
    pub fn with_broker(mut self, broker: impl Into<String>) -> Self {
        self.broker = Some(broker.into());
        self
    }

    /// Runs `concurrency` consumers per agent.
    pub fn with_concurrency(mut self, concurrency: usize) -> Self {
        self.concurrency = concurrency.max(1);
        self
    }

    /// Sets the consumer-group prefix.
    pub fn with_group(mut self, group: impl Into<String>) -> Self {
        self.group = Some(group.into());
        self
    }

    /// Sets where new consumer groups start.
    pub fn with_start_offset(mut self, start: StartOffset) -> Self {
        self.start_offset = start;
        self
    }

    /// Checkpoints every `interval` into `dir` and restores the latest checkpoint on start.
    pub fn with_checkpoints(mut self, dir: impl Into<PathBuf>, interval: std::time::Duration) -> Self {
        self.checkpoint_dir = Some(dir.into());
        self.checkpoint_interval = interval;
        self
    }

    /// Shares the checkpoint directory with the app's other workers as worker `id` (unique
    /// in the group, the same across restarts): keyed state behind repartition topics then
    /// moves with its partitions when workers join or leave.
    ///
    /// ```
    /// use sabot::app::WorkerOptions;
    /// let options = WorkerOptions::default()
    ///     .with_checkpoints("/mnt/shared/chk", std::time::Duration::from_secs(10))
    ///     .with_worker_id("worker-1");
    /// assert_eq!(options.worker_id.as_deref(), Some("worker-1"));
    /// ```
    pub fn with_worker_id(mut self, id: impl Into<String>) -> Self {
        self.worker_id = Some(id.into());
        self
    }

    /// Keeps agents' state in a RocksDB instance in `dir` (in `dir/<worker id>` when a worker
    /// id is set): keyed `process()` state, tumbling and sliding window panes and table-join
    /// tables, which can then outgrow memory. Needs the `rocksdb` feature.
    ///
    /// ```
    /// use sabot::app::WorkerOptions;
    /// let options = WorkerOptions::default().with_state_dir("/var/lib/sabot/state");
    /// assert!(options.state_dir.is_some());
    /// ```
    pub fn with_state_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.state_dir = Some(dir.into());
        self
    }

    /// The state backend agents run with.
    pub(crate) fn state_backend(&self) -> Result<crate::state::StateBackend> {
        let Some(dir) = &self.state_dir else { return Ok(crate::state::StateBackend::Memory) };
        let path = match &self.worker_id {
            Some(worker) => dir.join(worker),
            None => dir.clone(),
        };
        #[cfg(feature = "rocksdb")]
        return Ok(crate::state::StateBackend::RocksDb { path });
        #[cfg(not(feature = "rocksdb"))]
        Err(SabotError::plan(format!(
            "--state-dir {}: this build has no RocksDB state backend (enable sabot's `rocksdb` feature)",
            path.display()
        )))
    }

    /// The checkpoint settings of stage `stage` of agent `agent`, when checkpoints are on.
    pub(crate) fn checkpointing(&self, agent: &str, stage: usize) -> Option<crate::checkpoint::CheckpointConfig> {
        let relative = Path::new(agent).join(format!("stage-{stage}"));
        let mut config = crate::checkpoint::CheckpointConfig::new(self.checkpoint_dir.as_ref()?.join(&relative))
            .with_interval(self.checkpoint_interval);
        if let Some(worker) = &self.worker_id {
            config = config.shared_by(worker);
        }
        Some(match &self.from_savepoint {
            Some(savepoint) => config.restore_from(crate::checkpoint::RestoreFrom::Savepoint(savepoint.join(relative))),
            None => config,
        })
    }

    /// Sets a librdkafka property for every client.
    pub fn with_property(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.kafka.insert(key.into(), value.into());
        self
    }

    /// The client settings of this worker (the broker must be known).
    pub fn kafka_config(&self) -> KafkaConfig {
        let mut config = KafkaConfig::new(self.broker.clone().unwrap_or_default());
        for (key, value) in &self.kafka {
            config = config.set(key, value);
        }
        config
    }

    fn resolve(args: WorkerArgs) -> Result<WorkerOptions> {
        let file = match &args.config {
            Some(path) => read_config(path)?,
            None => ConfigFile::default(),
        };
        let defaults = WorkerOptions::default();
        let start = args.start_offset.or(file.start_offset);
        let mut kafka = file.kafka;
        for property in &args.properties {
            let (key, value) = property
                .split_once('=')
                .ok_or_else(|| SabotError::plan(format!("--set takes key=value, got '{property}'")))?;
            kafka.insert(key.trim().to_string(), value.trim().to_string());
        }
        let worker_id = args.worker_id.or(file.worker_id);
        Ok(WorkerOptions {
            broker: args.broker.or(file.broker),
            concurrency: args.concurrency.or(file.concurrency).unwrap_or(defaults.concurrency).max(1),
            group: args.group.or(file.group),
            loglevel: args.loglevel.or(file.loglevel).unwrap_or(defaults.loglevel),
            partitions: args.partitions.or(file.partitions).unwrap_or(defaults.partitions).max(1),
            start_offset: match start.as_deref() {
                None | Some("committed") => StartOffset::Committed,
                Some("earliest") => StartOffset::Earliest,
                Some("latest") => StartOffset::Latest,
                Some(other) => {
                    return Err(SabotError::plan(format!(
                        "start offset '{other}': expected committed, earliest or latest"
                    )));
                }
            },
            kafka,
            checkpoint_dir: args.checkpoint_dir.or(file.checkpoint_dir),
            checkpoint_interval: std::time::Duration::from_millis(
                args.checkpoint_interval_ms.or(file.checkpoint_interval_ms).unwrap_or(10_000).max(1),
            ),
            from_savepoint: args.from_savepoint,
            worker_id,
            state_dir: args.state_dir.or(file.state_dir),
        })
    }
}

/// Copies the latest checkpoint of every agent stage under `checkpoints` into `target`, in
/// the same layout; returns `(agent/stage, checkpoint ids)` per stage. A stage whose store is
/// shared by workers (`--worker-id`) is copied whole: every worker's complete checkpoints,
/// its key groups' newest holders among them.
pub(crate) fn take_savepoint(checkpoints: &Path, target: &Path) -> Result<Vec<(String, Vec<u64>)>> {
    let mut copied = vec![];
    let mut agents: Vec<_> = std::fs::read_dir(checkpoints)
        .map_err(|e| SabotError::io(checkpoints, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    agents.sort();
    for agent in agents {
        let mut stages: Vec<_> = std::fs::read_dir(&agent)
            .map_err(|e| SabotError::io(&agent, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("stage-")))
            .collect();
        stages.sort();
        for stage in stages {
            let relative = stage.strip_prefix(checkpoints).expect("under the checkpoint dir").to_path_buf();
            if crate::checkpoint::storage::is_shared_store(&stage) {
                let ids = crate::checkpoint::storage::savepoint_of_shared_store(&stage, &target.join(&relative))?;
                copied.push((relative.display().to_string(), ids));
                continue;
            }
            let storage = crate::checkpoint::CheckpointStorage::open(&stage, usize::MAX)?;
            let meta = storage.savepoint(target.join(&relative))?;
            copied.push((relative.display().to_string(), vec![meta.id]));
        }
    }
    if copied.is_empty() {
        return Err(SabotError::checkpoint(checkpoints, "no agent checkpoints found"));
    }
    Ok(copied)
}

fn read_config(path: &Path) -> Result<ConfigFile> {
    let text = std::fs::read_to_string(path).map_err(|e| SabotError::io(path, e))?;
    toml::from_str(&text).map_err(|e| SabotError::format(path, None, e.to_string()))
}

fn init_logging(filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(filter))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}

/// Runs the command line `args` (the program name first) against `app`.
pub(crate) fn main(app: App, args: impl IntoIterator<Item = OsString>) -> ExitCode {
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { ExitCode::from(2) } else { ExitCode::SUCCESS };
        }
    };
    let result = match cli.command {
        Command::Worker(args) => WorkerOptions::resolve(*args).and_then(|options| {
            init_logging(&options.loglevel);
            tracing::info!(app = app.name(), ?options, "starting worker");
            let produced = app.run_worker(&options, None)?;
            for (agent, rows) in produced {
                tracing::info!(agent, rows, "agent stopped");
            }
            Ok(())
        }),
        Command::Agents => write_stdout(&agents_table(&app)),
        Command::Explain => app.explain().and_then(|text| write_stdout(&text)),
        Command::Savepoint(args) => take_savepoint(&args.checkpoint_dir, &args.target).and_then(|copied| {
            let lines: Vec<String> = copied
                .iter()
                .map(|(stage, ids)| {
                    let ids: Vec<String> = ids.iter().map(u64::to_string).collect();
                    format!("{stage}: checkpoint {}", ids.join(", "))
                })
                .collect();
            write_stdout(&format!("savepoint written to {}\n{}", args.target.display(), lines.join("\n")))
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "{} failed", app.name());
            let _ = writeln!(std::io::stderr(), "error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn write_stdout(text: &str) -> Result<()> {
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{text}").map_err(|e| SabotError::io("<stdout>", e))
}

/// The `agents` listing: one aligned row per agent.
fn agents_table(app: &App) -> String {
    let mut rows = vec![["AGENT".to_string(), "TOPIC".into(), "SINK".into(), "KIND".into()]];
    for (name, topic, sink, kind) in app.describe_agents() {
        rows.push([name, topic, sink.unwrap_or_else(|| "-".into()), kind.to_string()]);
    }
    let widths: Vec<usize> = (0..4).map(|c| rows.iter().map(|r| r[c].len()).max().unwrap_or(0)).collect();
    rows.iter()
        .map(|r| {
            let cells: Vec<String> = (0..4).map(|c| format!("{:<w$}", r[c], w = widths[c])).collect();
            cells.join("  ").trim_end().to_string()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> WorkerOptions {
        let cli = Cli::try_parse_from(args.iter().copied()).unwrap();
        let Command::Worker(worker) = cli.command else { panic!("not a worker command") };
        WorkerOptions::resolve(*worker).unwrap()
    }

    #[test]
    fn flags_override_the_file_and_properties_pass_through() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.toml");
        std::fs::write(
            &path,
            "broker = \"file:9092\"\nconcurrency = 3\nloglevel = \"debug\"\n[kafka]\n\"security.protocol\" = \"SSL\"\n",
        )
        .unwrap();
        let options = parse(&[
            "app",
            "worker",
            "-c",
            "2",
            "--config",
            path.to_str().unwrap(),
            "--set",
            "sasl.mechanism=PLAIN",
            "--start-offset",
            "earliest",
        ]);
        assert_eq!(options.broker.as_deref(), Some("file:9092"));
        assert_eq!(options.concurrency, 2);
        assert_eq!(options.loglevel, "debug");
        assert_eq!(options.start_offset, StartOffset::Earliest);
        assert_eq!(options.kafka.get("security.protocol").map(String::as_str), Some("SSL"));
        assert_eq!(options.kafka.get("sasl.mechanism").map(String::as_str), Some("PLAIN"));
    }

    #[test]
    fn checkpoint_flags_give_each_agent_stage_its_directory() {
        let options = parse(&["app", "worker", "--checkpoint-dir", "/data/chk", "--checkpoint-interval-ms", "500"]);
        let config = options.checkpointing("count", 1).expect("checkpoints on");
        assert_eq!(config.dir, Path::new("/data/chk/count/stage-1"));
        assert_eq!(config.interval, std::time::Duration::from_millis(500));
        assert_eq!(config.restore, crate::checkpoint::RestoreFrom::Latest);
        let restored = parse(&["app", "worker", "--checkpoint-dir", "/data/chk", "--from-savepoint", "/sp"]);
        let config = restored.checkpointing("count", 0).unwrap();
        assert_eq!(config.restore, crate::checkpoint::RestoreFrom::Savepoint("/sp/count/stage-0".into()));
        assert!(parse(&["app", "worker"]).checkpointing("count", 0).is_none());
        assert!(Cli::try_parse_from(["app", "worker", "--from-savepoint", "/sp"]).is_err(), "needs a checkpoint dir");
    }

    #[test]
    fn a_worker_id_shares_the_checkpoint_directory() {
        let options = parse(&["app", "worker", "--checkpoint-dir", "/data/chk", "--worker-id", "w2"]);
        let config = options.checkpointing("count", 1).expect("checkpoints on");
        assert_eq!(config.dir, Path::new("/data/chk/count/stage-1"), "the store shared by the workers");
        assert_eq!(config.worker_dir(), Path::new("/data/chk/count/stage-1/w2"));
        assert!(Cli::try_parse_from(["app", "worker", "--worker-id", "w2"]).is_err(), "needs a checkpoint dir");
        let cli = Cli::try_parse_from([
            "app",
            "worker",
            "--checkpoint-dir",
            "/c",
            "--worker-id",
            "w",
            "--from-savepoint",
            "/s",
        ]);
        let Command::Worker(worker) = cli.unwrap().command else { panic!("not a worker command") };
        let options = WorkerOptions::resolve(*worker).expect("a savepoint seeds the shared store");
        let config = options.checkpointing("count", 1).expect("checkpoints on");
        assert_eq!(config.restore, crate::checkpoint::RestoreFrom::Savepoint("/s/count/stage-1".into()));
        assert_eq!(config.worker.as_deref(), Some("w"));
    }

    #[test]
    fn a_state_dir_puts_agents_state_in_rocksdb() {
        use crate::state::StateBackend;
        assert_eq!(parse(&["app", "worker"]).state_backend().unwrap(), StateBackend::Memory);
        let options = parse(&["app", "worker", "--state-dir", "/data/state"]);
        let with_worker =
            parse(&["app", "worker", "--state-dir", "/data/state", "--checkpoint-dir", "/c", "--worker-id", "w2"]);
        #[cfg(feature = "rocksdb")]
        {
            assert_eq!(options.state_backend().unwrap(), StateBackend::RocksDb { path: "/data/state".into() });
            let backend = with_worker.state_backend().unwrap();
            assert_eq!(backend, StateBackend::RocksDb { path: "/data/state/w2".into() }, "one instance per worker");
        }
        #[cfg(not(feature = "rocksdb"))]
        for options in [options, with_worker] {
            let err = options.state_backend().unwrap_err().to_string();
            assert!(err.contains("rocksdb"), "{err}");
        }
    }

    #[test]
    fn a_savepoint_copies_the_latest_checkpoint_of_every_agent_stage() {
        use crate::checkpoint::{CheckpointMetadata, CheckpointStorage};
        let dir = tempfile::tempdir().unwrap();
        let checkpoints = dir.path().join("chk");
        for (stage, ids) in [("count/stage-0", vec![1, 2]), ("count/stage-1", vec![7])] {
            let storage = CheckpointStorage::open(checkpoints.join(stage), 3).unwrap();
            for id in ids {
                storage.complete(&CheckpointMetadata::new(id, 1)).unwrap();
            }
        }
        let target = dir.path().join("sp");
        let copied = take_savepoint(&checkpoints, &target).unwrap();
        assert_eq!(copied, vec![("count/stage-0".to_string(), vec![2]), ("count/stage-1".to_string(), vec![7])]);
        assert!(crate::checkpoint::verify(&target.join("count/stage-1")).unwrap().savepoint);
        assert!(take_savepoint(&dir.path().join("empty-does-not-exist"), &target).is_err());
    }

    #[test]
    fn secrets_never_reach_the_logs() {
        let options = parse(&["app", "worker", "-b", "k:9092", "--set", "sasl.password=hunter2"]);
        let logged = format!("{options:?}");
        assert!(logged.contains("k:9092") && logged.contains("sasl.password"), "{logged}");
        assert!(!logged.contains("hunter2"), "{logged}");
    }

    #[test]
    fn an_unknown_key_in_the_file_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, "brokers = \"x\"\n").unwrap();
        let cli = Cli::try_parse_from(["app", "worker", "--config", path.to_str().unwrap()]).unwrap();
        let Command::Worker(worker) = cli.command else { panic!("not a worker command") };
        let err = WorkerOptions::resolve(*worker).unwrap_err().to_string();
        assert!(err.contains("bad.toml") && err.contains("brokers"), "{err}");
    }
}
