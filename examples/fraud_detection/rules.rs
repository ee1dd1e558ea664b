//! The fraud rules: records, the 12 branch cities, and the per-account rule engine.

use sabot::Record;
use sabot::operator::{KeyedProcessFunction, ProcessContext};
use sabot::state::{ValueState, ValueStateDescriptor};
use serde::{Deserialize, Serialize};

/// A bank transaction, as JSON on the `transactions` topic.
#[derive(Record, Debug, Clone, PartialEq)]
pub struct Transaction {
    pub transaction_id: i64,
    pub account_number: String,
    pub user_id: String,
    pub amount: f64,
    pub currency: String,
    pub transaction_type: String,
    pub branch_city: String,
    pub payment_method: String,
    pub country: String,
    #[record(event_time)]
    pub timestamp_ms: i64,
}

/// An alert, as JSON on the `alerts` topic.
#[derive(Record, Debug, Clone, PartialEq)]
pub struct Alert {
    pub transaction_id: i64,
    pub account_number: String,
    pub rule: String,
    pub severity: String,
    pub detail: String,
    pub timestamp_ms: i64,
}

/// Branch cities: name, country, latitude, longitude.
pub const CITIES: [(&str, &str, f64, f64); 12] = [
    ("Santiago", "CL", -33.4489, -70.6693),
    ("Valparaiso", "CL", -33.0472, -71.6127),
    ("Concepcion", "CL", -36.8201, -73.0444),
    ("Antofagasta", "CL", -23.6509, -70.3975),
    ("La Serena", "CL", -29.9027, -71.2519),
    ("Puerto Montt", "CL", -41.4689, -72.9411),
    ("Lima", "PE", -12.0464, -77.0428),
    ("Callao", "PE", -12.0566, -77.1181),
    ("Arequipa", "PE", -16.4090, -71.5375),
    ("Cusco", "PE", -13.5320, -71.9675),
    ("Trujillo", "PE", -8.1118, -79.0288),
    ("Piura", "PE", -5.1945, -80.6328),
];

/// VELOCITY: this many earlier transactions within the window raise an alert.
pub const VELOCITY_COUNT: usize = 2;
/// VELOCITY's window (ms).
pub const VELOCITY_WINDOW_MS: i64 = 60_000;
/// AMOUNT_ANOMALY needs this many earlier transactions.
pub const ANOMALY_MIN_HISTORY: u64 = 5;
/// GEO_IMPOSSIBLE looks at city changes within this time (ms).
pub const GEO_WINDOW_MS: i64 = 10 * 60_000;
/// Faster than an airliner: no traveller gets from one branch to another at this speed (km/h).
pub const MAX_TRAVEL_KMH: f64 = 900.0;

/// Great-circle distance between two (lat, lon) points in km.
pub fn haversine_km(a: (f64, f64), b: (f64, f64)) -> f64 {
    let (lat1, lon1, lat2, lon2) = (a.0.to_radians(), a.1.to_radians(), b.0.to_radians(), b.1.to_radians());
    let h = ((lat2 - lat1) / 2.0).sin().powi(2) + lat1.cos() * lat2.cos() * ((lon2 - lon1) / 2.0).sin().powi(2);
    2.0 * 6371.0 * h.sqrt().asin()
}

/// The coordinates of a branch city.
pub fn city_position(name: &str) -> Option<(f64, f64)> {
    CITIES.iter().find(|c| c.0 == name).map(|c| (c.2, c.3))
}

/// What the rules remember about one account.
#[derive(Serialize, Deserialize, Clone, Default, Debug)]
pub struct AccountHistory {
    /// Transactions seen.
    count: u64,
    /// Running mean and sum of squared deviations of the amounts (Welford).
    mean: f64,
    m2: f64,
    /// Event times of the transactions of the last velocity window.
    recent: Vec<i64>,
    /// City and time of the previous transaction.
    last_city: Option<String>,
    last_ms: i64,
}

/// The three rules, per account, on event time.
#[derive(Default)]
pub struct FraudRules {
    history: Option<ValueState<AccountHistory>>,
}

impl KeyedProcessFunction for FraudRules {
    type In = Transaction;
    type Out = Alert;

    fn open(&mut self, ctx: &mut ProcessContext<'_>) -> sabot::Result<()> {
        self.history = Some(ctx.state().value_state(&ValueStateDescriptor::new("history"))?);
        Ok(())
    }

    fn process_element(
        &mut self,
        tx: TransactionView<'_>,
        ctx: &mut ProcessContext<'_>,
        out: &mut Vec<Alert>,
    ) -> sabot::Result<()> {
        let state = self.history.expect("open() registers the state");
        let mut history = state.value(ctx.state())?.unwrap_or_default();
        let alert = |rule: &str, severity: &str, detail: String| Alert {
            transaction_id: tx.transaction_id,
            account_number: tx.account_number.to_string(),
            rule: rule.to_string(),
            severity: severity.to_string(),
            detail,
            timestamp_ms: tx.timestamp_ms,
        };
        let now = tx.timestamp_ms;

        // VELOCITY: two or more earlier transactions in the last 60 s.
        history.recent.retain(|t| now - *t <= VELOCITY_WINDOW_MS);
        let earlier = history.recent.iter().filter(|t| **t <= now).count();
        if earlier >= VELOCITY_COUNT {
            out.push(alert("VELOCITY", "HIGH", format!("{earlier} earlier transactions in 60 s")));
        }
        history.recent.push(now);

        // AMOUNT_ANOMALY: |z| of the amount against the account's earlier amounts.
        if history.count >= ANOMALY_MIN_HISTORY {
            let std = (history.m2 / (history.count - 1) as f64).sqrt();
            if std > 0.0 {
                let z = (tx.amount - history.mean) / std;
                if z.abs() > 4.0 {
                    out.push(alert("AMOUNT_ANOMALY", "CRITICAL", format!("z-score {z:.2}")));
                } else if z.abs() > 3.0 {
                    out.push(alert("AMOUNT_ANOMALY", "HIGH", format!("z-score {z:.2}")));
                }
            }
        }
        history.count += 1;
        let delta = tx.amount - history.mean;
        history.mean += delta / history.count as f64;
        history.m2 += delta * (tx.amount - history.mean);

        // GEO_IMPOSSIBLE: a city change within 10 minutes faster than any traveller.
        if let Some(last) = &history.last_city {
            let elapsed = now - history.last_ms;
            if last != tx.branch_city
                && (0..=GEO_WINDOW_MS).contains(&elapsed)
                && let (Some(from), Some(to)) = (city_position(last), city_position(tx.branch_city))
            {
                let km = haversine_km(from, to);
                let kmh = if elapsed == 0 { f64::INFINITY } else { km / (elapsed as f64 / 3_600_000.0) };
                if kmh > MAX_TRAVEL_KMH {
                    out.push(alert(
                        "GEO_IMPOSSIBLE",
                        "CRITICAL",
                        format!("{last} -> {} ({km:.0} km in {} s)", tx.branch_city, elapsed / 1000),
                    ));
                }
            }
        }
        history.last_city = Some(tx.branch_city.to_string());
        history.last_ms = now;
        state.update(ctx.state(), history)
    }
}
