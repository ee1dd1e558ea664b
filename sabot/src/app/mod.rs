//! Apps and agents, Faust-style: an [`App`] is a set of [`Agent`]s, each consuming a Kafka
//! topic; the app compiles into one binary whose command line runs a worker.
//!
//! Usually written with the `#[sabot::app]` and `#[agent("topic")]` macros:
//!
//! ```no_run
//! use sabot::prelude::*;
//! use sabot::app::AgentStream;
//!
//! #[derive(sabot::Record, Debug, Clone)]
//! pub struct Payment { pub account: String, pub amount: f64 }
//!
//! #[derive(sabot::Record, Debug, Clone)]
//! pub struct Large { pub account: String, pub amount: f64 }
//!
//! #[sabot::app(name = "payments", main = false)]
//! mod payments {
//!     use super::*;
//!
//!     /// Large payments, to the `large-payments` topic.
//!     #[agent("payments", sink = "large-payments")]
//!     fn large(payments: Stream<Payment>) -> sabot::Result<Stream<Large>> {
//!         Ok(payments.filter_rows(|p| p.amount > 10_000.0).map(|p| Large { account: p.account.into(), amount: p.amount }))
//!     }
//!
//!     /// Counts payments, record by record.
//!     #[agent("payments")]
//!     async fn count(mut payments: AgentStream<Payment>) -> sabot::Result<()> {
//!         let mut seen = 0u64;
//!         while let Some(_) = payments.next().await {
//!             seen += 1;
//!         }
//!         tracing::info!(seen, "payments counted");
//!         Ok(())
//!     }
//! }
//!
//! // `main = true` (the default) generates this `main`:
//! fn main() -> std::process::ExitCode {
//!     payments::app().main()
//! }
//! ```
//!
//! `myapp worker -c 4 --broker kafka:9092 --loglevel info` runs every agent with 4 consumers
//! each; without `--broker` the worker starts an embedded Kafka cluster. `myapp agents` lists
//! the agents, `myapp explain` prints their plans.

mod cli;
mod records;
mod repartition;
mod worker;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use arrow::datatypes::SchemaRef;

use crate::kafka::{KafkaSink, StopHandle};
use crate::{Record, Result, Stream, Untyped};

pub use cli::WorkerOptions;
pub use records::AgentStream;
pub use worker::{Worker, WorkerStatus};

/// What a stream agent returns: a stream of records, or a `Result` of one.
pub trait AgentOutput {
    /// The output stream, without its record type.
    fn into_stream(self) -> Result<Stream<Untyped>>;
}

impl<O: Record> AgentOutput for Stream<O> {
    fn into_stream(self) -> Result<Stream<Untyped>> {
        Ok(self.untyped())
    }
}

impl<O: Record> AgentOutput for Result<Stream<O>> {
    fn into_stream(self) -> Result<Stream<Untyped>> {
        self.map(|s| s.untyped())
    }
}

/// What an async agent returns: nothing, or a `Result`.
pub trait AgentResult {
    /// The agent's outcome.
    fn into_result(self) -> Result<()>;
}

impl AgentResult for () {
    fn into_result(self) -> Result<()> {
        Ok(())
    }
}

impl AgentResult for Result<()> {
    fn into_result(self) -> Result<()> {
        self
    }
}

/// Builds a stream agent's pipeline from its input stream.
type PipelineBuilder = Arc<dyn Fn(Stream<Untyped>) -> Result<Stream<Untyped>> + Send + Sync>;
/// Starts an async agent's future over its records.
type AgentStarter<I> = Arc<dyn Fn(AgentStream<I>) -> Pin<Box<dyn Future<Output = Result<()>> + Send>> + Send + Sync>;
/// Runs a records agent over its input stream until the stream ends.
type RecordsRunner = Arc<dyn Fn(Stream<Untyped>, &tokio::runtime::Handle, StopHandle) -> Result<u64> + Send + Sync>;

#[derive(Clone)]
enum AgentKind {
    Stream(PipelineBuilder),
    Records(RecordsRunner),
}

/// One agent: a topic, what is done with its records, and where results go.
///
/// ```
/// use sabot::prelude::*;
/// use sabot::app::Agent;
///
/// #[derive(sabot::Record)]
/// struct Payment { account: String, amount: f64 }
///
/// let agent = Agent::stream("large", "payments", |s: Stream<Payment>| s.filter_rows(|p| p.amount > 100.0))
///     .sink("large-payments")
///     .dead_letter("payments.dlq");
/// assert_eq!(agent.name(), "large");
/// assert_eq!(agent.sink_topic(), Some("large-payments"));
/// ```
#[derive(Clone)]
pub struct Agent {
    name: &'static str,
    topic: &'static str,
    sink: Option<&'static str>,
    group: Option<&'static str>,
    dead_letter: Option<&'static str>,
    key: Option<&'static str>,
    input_schema: SchemaRef,
    event_time: Option<&'static str>,
    kind: AgentKind,
}

impl Agent {
    /// An agent that turns the stream of `topic` into another stream with `f` (run once, at
    /// start): its rows go to the [sink](Agent::sink) topic, or are dropped when there is none.
    pub fn stream<I, R, F>(name: &'static str, topic: &'static str, f: F) -> Agent
    where
        I: Record,
        R: AgentOutput,
        F: Fn(Stream<I>) -> R + Send + Sync + 'static,
    {
        let build: PipelineBuilder = Arc::new(move |input: Stream<Untyped>| f(input.typed::<I>()?).into_stream());
        Agent::with_kind::<I>(name, topic, AgentKind::Stream(build))
    }

    /// An async agent that takes the records of `topic` one by one ([`AgentStream`]) and
    /// keeps its state in its own variables.
    pub fn records<I, R, Fut, F>(name: &'static str, topic: &'static str, f: F) -> Agent
    where
        I: Record + Send + 'static,
        R: AgentResult,
        Fut: Future<Output = R> + Send + 'static,
        F: Fn(AgentStream<I>) -> Fut + Send + Sync + 'static,
    {
        let start: AgentStarter<I> = Arc::new(move |records| {
            let future = f(records);
            Box::pin(async move { future.await.into_result() })
        });
        let runner: RecordsRunner = Arc::new(move |input, runtime, stop| {
            let start = start.clone();
            worker::run_records_agent::<I>(name, input, move |records| start(records), runtime, stop)
        });
        Agent::with_kind::<I>(name, topic, AgentKind::Records(runner))
    }

    fn with_kind<I: Record>(name: &'static str, topic: &'static str, kind: AgentKind) -> Agent {
        Agent {
            name,
            topic,
            sink: None,
            group: None,
            dead_letter: None,
            key: None,
            input_schema: I::schema(),
            event_time: I::event_time_column(),
            kind,
        }
    }

    /// Sends the agent's output rows to `topic`, as JSON keyed by nothing.
    pub fn sink(mut self, topic: &'static str) -> Agent {
        self.sink = Some(topic);
        self
    }

    /// The consumer group (default: `<app>-<agent>`); workers with the same group share the
    /// topic's partitions.
    pub fn group(mut self, group: &'static str) -> Agent {
        self.group = Some(group);
        self
    }

    /// Sends malformed messages to `topic` instead of stopping the agent.
    pub fn dead_letter(mut self, topic: &'static str) -> Agent {
        self.dead_letter = Some(topic);
        self
    }

    /// Declares that the topic's messages are keyed by `column` (their producer partitions by
    /// it): a `key_by(column)` then runs where the data is; any other `key_by` goes through a
    /// repartition topic, so that each key meets one worker.
    pub fn key(mut self, column: &'static str) -> Agent {
        self.key = Some(column);
        self
    }

    /// The agent's name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The topic consumed.
    pub fn topic(&self) -> &'static str {
        self.topic
    }

    /// The output topic, if any.
    pub fn sink_topic(&self) -> Option<&'static str> {
        self.sink
    }

    fn kind_name(&self) -> &'static str {
        match self.kind {
            AgentKind::Stream(_) => "stream",
            AgentKind::Records(_) => "records",
        }
    }
}

impl std::fmt::Debug for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent")
            .field("name", &self.name)
            .field("topic", &self.topic)
            .field("sink", &self.sink)
            .field("kind", &self.kind_name())
            .finish_non_exhaustive()
    }
}

/// A named set of agents; the deployment unit. [`App::main`] is the binary's entry point.
///
/// ```
/// use sabot::prelude::*;
/// use sabot::app::{Agent, App};
///
/// #[derive(sabot::Record)]
/// struct Line { value: String }
///
/// let app = App::new("echo").agent(Agent::stream("echo", "in", |s: Stream<Line>| s).sink("out"));
/// assert_eq!(app.describe_agents(), vec![("echo".into(), "in".into(), Some("out".into()), "stream")]);
/// ```
#[derive(Debug, Clone)]
pub struct App {
    name: String,
    agents: Vec<Agent>,
}

impl App {
    /// An app without agents yet.
    pub fn new(name: &str) -> App {
        App { name: name.to_string(), agents: Vec::new() }
    }

    /// Adds an agent.
    pub fn agent(mut self, agent: Agent) -> App {
        self.agents.push(agent);
        self
    }

    /// The app's name (the default consumer-group prefix).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The agents.
    pub fn agents(&self) -> &[Agent] {
        &self.agents
    }

    /// Per agent: name, topic, sink topic, and kind (`"stream"` or `"records"`).
    pub fn describe_agents(&self) -> Vec<(String, String, Option<String>, &'static str)> {
        self.agents
            .iter()
            .map(|a| (a.name.to_string(), a.topic.to_string(), a.sink.map(str::to_string), a.kind_name()))
            .collect()
    }

    /// Parses the command line (`worker`, `agents`, `explain`) and runs it; errors are
    /// logged and give a failure exit code.
    pub fn main(self) -> std::process::ExitCode {
        cli::main(self, std::env::args_os())
    }

    /// Runs a worker until it is stopped (SIGINT/SIGTERM or `stop`), or until every agent has
    /// ended. Returns the rows each agent produced.
    pub fn run_worker(&self, options: &WorkerOptions, stop: Option<StopHandle>) -> Result<Vec<(String, u64)>> {
        worker::run(self, options, stop, Arc::default())
    }

    /// Starts a worker on its own thread and returns its handle (status, stop, join).
    pub fn start_worker(&self, options: &WorkerOptions) -> Result<Worker> {
        worker::start(self, options)
    }

    /// Copies the latest checkpoint of every agent under `checkpoints` (a worker's
    /// `--checkpoint-dir`) into `target`, which `worker --from-savepoint` (or
    /// [`WorkerOptions::from_savepoint`]) restores, also after an upgrade that keeps operator
    /// names: the `savepoint` command. Checkpoints shared by workers (`--worker-id`) are copied
    /// for every worker, and restored into an empty checkpoint directory. Returns the ids of
    /// the checkpoints copied per agent stage (`agent/stage-N`).
    ///
    /// ```no_run
    /// # fn app() -> sabot::app::App { sabot::app::App::new("clicks") }
    /// let copied = app().savepoint("/data/checkpoints".as_ref(), "/data/savepoints/v1".as_ref())?;
    /// # Ok::<(), sabot::SabotError>(())
    /// ```
    pub fn savepoint(
        &self,
        checkpoints: &std::path::Path,
        target: &std::path::Path,
    ) -> Result<Vec<(String, Vec<u64>)>> {
        cli::take_savepoint(checkpoints, target)
    }

    /// Each agent's plan, as text.
    pub fn explain(&self) -> Result<String> {
        worker::explain(self)
    }

    pub(crate) fn sink_for(&self, agent: &Agent, options: &WorkerOptions) -> Option<KafkaSink> {
        agent.sink.map(|topic| KafkaSink::with_config(options.kafka_config(), topic))
    }
}
