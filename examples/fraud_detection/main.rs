//! Fraud detection on bank transactions, Faust-style: a Sabot app with one agent that reads
//! JSON transactions from Kafka, runs three rules per account on event time, and writes JSON
//! alerts back to Kafka.
//!
//! ```text
//! cargo run --release --example fraud_detection                  # demo: embedded Kafka, worker, producer, alerts
//! cargo run --release --example fraud_detection -- worker -c 2   # the app's worker (embedded Kafka without --broker)
//! cargo run --release --example fraud_detection -- produce --broker 127.0.0.1:PORT --accounts 10000
//! cargo run --release --example fraud_detection -- agents        # or `explain`
//! ```
//!
//! Rules (per account, on event time):
//! - VELOCITY: two or more earlier transactions in the last 60 s -> HIGH;
//! - AMOUNT_ANOMALY: after at least 5 transactions, |z-score| of the amount > 3 -> HIGH, > 4 -> CRITICAL;
//! - GEO_IMPOSSIBLE: a city change within 10 minutes faster than 900 km/h (haversine) -> CRITICAL.

mod app;
mod generator;
mod io;
mod rules;

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand};
use sabot::app::WorkerOptions;
use sabot::kafka::{EmbeddedCluster, StartOffset, StopHandle};
use sabot::{Result, SabotError};

#[derive(Parser)]
#[command(about = "Fraud detection on Sabot: `demo` (default), `produce`, or the app's `worker`, `agents`, `explain`")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Everything in one process: embedded Kafka, the worker, the producer, and the alerts.
    Demo(Traffic),
    /// Produces transactions (with planted fraud) to a running cluster.
    Produce {
        /// Bootstrap servers (the worker logs its embedded cluster's address).
        #[arg(short, long)]
        broker: String,
        #[command(flatten)]
        traffic: Traffic,
    },
}

#[derive(Args, Clone)]
struct Traffic {
    /// Accounts; every 10th gets planted fraud.
    #[arg(long, default_value_t = 1_000)]
    accounts: usize,
    /// Normal transactions per account.
    #[arg(long, default_value_t = 20)]
    per_account: usize,
    /// Messages per second (0: as fast as possible).
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// Random seed.
    #[arg(long, default_value_t = 42)]
    seed: u64,
}

fn main() -> ExitCode {
    let first = std::env::args().nth(1);
    // The app's own commands go to its generated command line.
    if matches!(first.as_deref(), Some("worker" | "agents" | "explain")) {
        return app::fraud::app().main();
    }
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        None => demo(&Traffic { accounts: 1_000, per_account: 20, rate: 0, seed: 42 }),
        Some(Command::Demo(traffic)) => demo(&traffic),
        Some(Command::Produce { broker, traffic }) => {
            let generated = generator::generate(traffic.seed, traffic.accounts, traffic.per_account);
            io::produce(&broker, "transactions", &generated.transactions, &[], traffic.rate, true).map(|secs| {
                let n = generated.transactions.len();
                println!("produced {n} transactions in {secs:.2} s ({:.0} msg/s)", n as f64 / secs);
                println!("planted: {} alerts expected", generated.expected.len());
            })
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn demo(traffic: &Traffic) -> Result<()> {
    let generated = generator::generate(traffic.seed, traffic.accounts, traffic.per_account);
    let cluster = EmbeddedCluster::start(1)?;
    for (topic, partitions) in [("transactions", 4), ("alerts", 4), ("transactions.dlq", 1)] {
        cluster.create_topic(topic, partitions)?;
    }
    let brokers = cluster.bootstrap_servers();
    println!("embedded Kafka cluster at {brokers}");
    let options = WorkerOptions::default()
        .with_broker(&brokers)
        .with_concurrency(2)
        .with_start_offset(StartOffset::Earliest)
        .with_property("session.timeout.ms", "2000");
    let stop = StopHandle::default();
    let worker_stop = stop.clone();
    let worker = std::thread::spawn(move || app::fraud::app().run_worker(&options, Some(worker_stop)));

    let n = generated.transactions.len();
    let malformed: [&[u8]; 2] = [b"{\"transaction_id\": \"oops\"}", b"not json at all"];
    let started = Instant::now();
    let secs = io::produce(&brokers, "transactions", &generated.transactions, &malformed, traffic.rate, true)?;
    println!("produced {n} transactions (+{} malformed) in {secs:.2} s", malformed.len());
    let alerts = io::read_alerts(
        &brokers,
        "alerts",
        generated.expected.len(),
        Duration::from_secs(1),
        Duration::from_secs(120),
    )?;
    let elapsed = started.elapsed().as_secs_f64();
    stop.stop();
    worker.join().map_err(|_| SabotError::Execution("the worker panicked".into()))??;

    let mut by_rule: BTreeMap<(String, String), usize> = BTreeMap::new();
    for a in &alerts {
        *by_rule.entry((a.rule.clone(), a.severity.clone())).or_default() += 1;
    }
    println!("\n{:<16} {:<9} {:>6}", "RULE", "SEVERITY", "ALERTS");
    for ((rule, severity), count) in &by_rule {
        println!("{rule:<16} {severity:<9} {count:>6}");
    }
    for a in alerts.iter().take(5) {
        println!("  e.g. {} {} {} {}: {}", a.transaction_id, a.account_number, a.rule, a.severity, a.detail);
    }
    let mut got: Vec<(i64, String, String)> =
        alerts.iter().map(|a| (a.transaction_id, a.rule.clone(), a.severity.clone())).collect();
    let mut want: Vec<(i64, String, String)> =
        generated.expected.iter().map(|(id, r, s)| (*id, r.to_string(), s.to_string())).collect();
    got.sort();
    want.sort();
    println!(
        "\n{} alerts, {} planted: {}; {n} transactions end to end in {elapsed:.2} s",
        got.len(),
        want.len(),
        if got == want { "exactly the planted fraud" } else { "MISMATCH" }
    );
    if got != want {
        return Err(SabotError::Execution("the alerts differ from the planted fraud".into()));
    }
    Ok(())
}
