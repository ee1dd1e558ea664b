//! Bank transactions with planted fraud, and the alerts the plants must raise.

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::rules::{CITIES, Transaction};

/// The first event time (2023-11-14T22:13:20Z).
pub const START_MS: i64 = 1_700_000_000_000;

const TYPES: [&str; 4] = ["purchase", "withdrawal", "transfer", "payment"];
const METHODS: [&str; 4] = ["debit_card", "credit_card", "mobile", "branch"];

/// An alert a planted transaction must raise: (transaction id, rule, severity).
pub type ExpectedAlert = (i64, &'static str, &'static str);

/// Generated traffic: transactions in event-time order and the alerts they must raise.
pub struct Traffic {
    pub transactions: Vec<Transaction>,
    pub expected: Vec<ExpectedAlert>,
}

/// The kinds of planted behaviour, one per 10th account in turn.
#[derive(Clone, Copy, Debug)]
enum Plant {
    /// Three more transactions 10, 20 and 30 s after the last one: the last two are VELOCITY.
    Burst,
    /// An amount 3.5 standard deviations above the account's mean: AMOUNT_ANOMALY HIGH.
    HighAmount,
    /// An amount 10 standard deviations above: AMOUNT_ANOMALY CRITICAL.
    HugeAmount,
    /// A transaction 5 minutes later in a city 2,000+ km away: GEO_IMPOSSIBLE.
    Teleport,
    /// A legitimate move 12 km away 5 minutes later: no alert.
    NearbyBranch,
    /// A far city 2 hours later: no alert.
    Trip,
}

const PLANTS: [Plant; 6] =
    [Plant::Burst, Plant::HighAmount, Plant::HugeAmount, Plant::Teleport, Plant::NearbyBranch, Plant::Trip];

struct Draft {
    tx: Transaction,
    alerts: Vec<(&'static str, &'static str)>,
}

/// `accounts` accounts with `per_account` normal transactions each (never alerting: gaps of
/// 90 s or more, one home city, amounts cycling within ±10% of the account's base), and every
/// 10th account with one planted behaviour.
pub fn generate(seed: u64, accounts: usize, per_account: usize) -> Traffic {
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut drafts: Vec<Draft> = Vec::with_capacity(accounts * (per_account + 1));
    for account in 0..accounts {
        let home = account % 6; // Santiago .. Puerto Montt, Lima .. Piura by parity below
        let home = if account % 2 == 0 { home } else { 6 + home };
        let base = 20.0 + (account * 37 % 500) as f64;
        let gap = 90_000 + (account % 7) as i64 * 10_000;
        let mut t = START_MS + rng.random_range(0..gap);
        let mut amounts = Vec::with_capacity(per_account + 4);
        let draft = |t: i64, city: usize, amount: f64, rng: &mut SmallRng| Draft {
            tx: Transaction {
                transaction_id: 0,
                account_number: format!("ACC{account:06}"),
                user_id: format!("USR{:06}", account / 2),
                amount,
                currency: if CITIES[city].1 == "CL" { "CLP".into() } else { "PEN".into() },
                transaction_type: TYPES[rng.random_range(0..TYPES.len())].into(),
                branch_city: CITIES[city].0.into(),
                payment_method: METHODS[rng.random_range(0..METHODS.len())].into(),
                country: CITIES[city].1.into(),
                timestamp_ms: t,
            },
            alerts: vec![],
        };
        for i in 0..per_account {
            let amount = base * (0.9 + 0.05 * (i % 5) as f64);
            amounts.push(amount);
            drafts.push(draft(t, home, amount, &mut rng));
            t += gap;
        }
        let last = t - gap;
        if account % 10 != 0 || per_account < 6 {
            continue;
        }
        let (mean, std) = mean_std(&amounts);
        match PLANTS[(account / 10) % PLANTS.len()] {
            Plant::Burst => {
                for (k, alert) in [(1, false), (2, true), (3, true)] {
                    let mut d = draft(last + k * 10_000, home, amounts[k as usize % 5], &mut rng);
                    if alert {
                        d.alerts.push(("VELOCITY", "HIGH"));
                    }
                    drafts.push(d);
                }
            }
            Plant::HighAmount => {
                let mut d = draft(last + gap, home, mean + 3.5 * std, &mut rng);
                d.alerts.push(("AMOUNT_ANOMALY", "HIGH"));
                drafts.push(d);
            }
            Plant::HugeAmount => {
                let mut d = draft(last + gap, home, mean + 10.0 * std, &mut rng);
                d.alerts.push(("AMOUNT_ANOMALY", "CRITICAL"));
                drafts.push(d);
            }
            Plant::Teleport => {
                // Chilean accounts surface in Lima, Peruvian ones in Santiago.
                let far = if home < 6 { 6 } else { 0 };
                let mut d = draft(last + 5 * 60_000, far, amounts[0], &mut rng);
                d.alerts.push(("GEO_IMPOSSIBLE", "CRITICAL"));
                drafts.push(d);
            }
            Plant::NearbyBranch => {
                // Lima <-> Callao: 12 km in 5 minutes; other accounts stay in their city.
                let near = match home {
                    6 => 7,
                    7 => 6,
                    other => other,
                };
                drafts.push(draft(last + 5 * 60_000, near, amounts[0], &mut rng));
            }
            Plant::Trip => {
                let far = if home < 6 { 8 } else { 2 };
                drafts.push(draft(last + 2 * 3_600_000, far, amounts[0], &mut rng));
            }
        }
    }
    drafts.sort_by(|a, b| (a.tx.timestamp_ms, &a.tx.account_number).cmp(&(b.tx.timestamp_ms, &b.tx.account_number)));
    let mut expected = Vec::new();
    let transactions = drafts
        .into_iter()
        .enumerate()
        .map(|(id, mut d)| {
            d.tx.transaction_id = id as i64;
            expected.extend(d.alerts.iter().map(|(rule, severity)| (id as i64, *rule, *severity)));
            d.tx
        })
        .collect();
    Traffic { transactions, expected }
}

/// Mean and sample standard deviation.
fn mean_std(values: &[f64]) -> (f64, f64) {
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (mean, var.sqrt())
}

/// One transaction as the JSON message a bank's system would send.
pub fn to_json(tx: &Transaction) -> Vec<u8> {
    serde_json::json!({
        "transaction_id": tx.transaction_id,
        "account_number": tx.account_number,
        "user_id": tx.user_id,
        "amount": tx.amount,
        "currency": tx.currency,
        "transaction_type": tx.transaction_type,
        "branch_city": tx.branch_city,
        "payment_method": tx.payment_method,
        "country": tx.country,
        "timestamp_ms": tx.timestamp_ms,
    })
    .to_string()
    .into_bytes()
}
