//! The app: one agent reads `transactions`, runs the rules per account and writes `alerts`.

#[sabot::app(name = "fraud-detection", main = false)]
pub mod fraud {
    use sabot::prelude::*;

    use crate::rules::{Alert, FraudRules, Transaction};

    /// Runs VELOCITY, AMOUNT_ANOMALY and GEO_IMPOSSIBLE per account; malformed messages go to
    /// `transactions.dlq`.
    #[agent("transactions", sink = "alerts", dead_letter = "transactions.dlq")]
    pub fn detect(transactions: Stream<Transaction>) -> sabot::Result<Stream<Alert>> {
        transactions.key_by(["account_number"]).process(FraudRules::default)
    }
}
