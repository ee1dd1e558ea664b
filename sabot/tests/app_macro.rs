//! `#[sabot::app]` and `#[agent(...)]`: the generated `app()` registers each agent with its
//! topic, sink and kind, and the agent functions stay plain functions.
#![cfg(feature = "kafka")]

use std::sync::atomic::{AtomicU64, Ordering};

use sabot::Record;

#[derive(Record, Debug, Clone, PartialEq)]
pub struct Transaction {
    pub account: String,
    pub amount: f64,
}

#[derive(Record, Debug, Clone, PartialEq)]
pub struct Alert {
    pub account: String,
    pub amount: f64,
}

/// Amounts the `audit` agent has seen, in cents.
static AUDITED_CENTS: AtomicU64 = AtomicU64::new(0);

#[sabot::app(name = "fraud-detection", main = false)]
mod fraud {
    use sabot::Stream;
    use sabot::app::AgentStream;

    use super::*;

    /// The threshold above which a transaction raises an alert (items other than agents stay).
    pub const LIMIT: f64 = 1_000.0;

    /// Large transactions, as alerts.
    #[agent("transactions", sink = "alerts", dead_letter = "transactions-dlq")]
    pub fn detect(stream: Stream<Transaction>) -> sabot::Result<Stream<Alert>> {
        Ok(stream.filter_rows(|t| t.amount > LIMIT).map(|t| Alert { account: t.account.to_string(), amount: t.amount }))
    }

    /// Adds up every amount, record by record.
    #[sabot::agent("transactions", group = "auditors")]
    pub async fn audit(mut stream: AgentStream<Transaction>) -> sabot::Result<()> {
        while let Some(t) = stream.next().await {
            AUDITED_CENTS.fetch_add((t.amount * 100.0) as u64, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Never registered: its `cfg` is off, and goes with it onto the registration.
    #[cfg(any())]
    #[agent("nowhere")]
    fn disabled(stream: Stream<Transaction>) -> Stream<Transaction> {
        stream
    }
}

#[sabot::app(main = false)]
mod echo_service {
    use sabot::Stream;
    use sabot::app::AgentStream;

    use super::Transaction;

    #[agent("in", sink = "out")]
    fn echo(stream: Stream<Transaction>) -> Stream<Transaction> {
        stream
    }

    #[agent("in")]
    async fn drain(mut stream: AgentStream<Transaction>) {
        while stream.next().await.is_some() {}
    }
}

fn transactions() -> Vec<Transaction> {
    vec![
        Transaction { account: "A".into(), amount: 12.5 },
        Transaction { account: "B".into(), amount: 5_000.0 },
        Transaction { account: "C".into(), amount: 999.0 },
    ]
}

#[test]
fn app_registers_agents_with_topics_sinks_and_kinds() {
    let app = fraud::app();
    assert_eq!(app.name(), "fraud-detection");
    assert_eq!(
        app.describe_agents(),
        vec![
            ("detect".to_string(), "transactions".to_string(), Some("alerts".to_string()), "stream"),
            ("audit".to_string(), "transactions".to_string(), None, "records"),
        ]
    );
}

#[test]
fn app_name_defaults_to_the_module_name() {
    let app = echo_service::app();
    assert_eq!(app.name(), "echo-service");
    assert_eq!(
        app.describe_agents(),
        vec![
            ("echo".to_string(), "in".to_string(), Some("out".to_string()), "stream"),
            ("drain".to_string(), "in".to_string(), None, "records"),
        ]
    );
}

#[test]
fn agents_stay_plain_functions() -> sabot::Result<()> {
    assert_eq!(fraud::LIMIT, 1_000.0);

    let alerts = fraud::detect(sabot::Stream::from_records(transactions()))?.collect_records()?;
    assert_eq!(alerts, vec![Alert { account: "B".into(), amount: 5_000.0 }]);

    let runtime = tokio::runtime::Builder::new_current_thread().build().expect("a runtime");
    runtime.block_on(fraud::audit(sabot::app::AgentStream::from_records(transactions())))?;
    assert_eq!(AUDITED_CENTS.load(Ordering::Relaxed), 1_250 + 500_000 + 99_900);
    Ok(())
}
