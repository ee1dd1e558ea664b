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
    Worker(WorkerArgs),
    /// Lists the agents: name, topic, sink and kind.
    Agents,
    /// Prints each agent's logical, optimized and physical plan.
    Explain,
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
    /// `start_offset` and a `[kafka]` table of librdkafka properties.
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
        })
    }
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
        Command::Worker(args) => WorkerOptions::resolve(args).and_then(|options| {
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
        WorkerOptions::resolve(worker).unwrap()
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
        let err = WorkerOptions::resolve(worker).unwrap_err().to_string();
        assert!(err.contains("bad.toml") && err.contains("brokers"), "{err}");
    }
}
