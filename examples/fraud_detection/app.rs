//! The app: one agent reads `transactions`, runs the rules per account and writes `alerts`.

#[sabot::app(name = "fraud-detection", main = false)]
pub mod fraud {
    use sabot::prelude::*;

    use crate::rules::{Alert, FraudRules, Transaction};

    /// Runs VELOCITY, AMOUNT_ANOMALY and GEO_IMPOSSIBLE per account; malformed messages go to
    /// `transactions.dlq`.
    /// Producers key transactions by account, so the rules run where the data is (no
    /// repartition topic).
    #[agent("transactions", sink = "alerts", dead_letter = "transactions.dlq", key = "account_number")]
    pub fn detect(transactions: Stream<Transaction>) -> sabot::Result<Stream<Alert>> {
        transactions.key_by(["account_number"]).process(FraudRules::default)
    }
}
