//! [`AgentStream`]: the records of a topic, one at a time, for `async` agents.

use tokio::sync::{mpsc, oneshot};

/// A batch of decoded records handed to an async agent, and the acknowledgement the agent
/// sends once it has asked for the record after the last one (so the batch is processed).
pub(crate) struct Delivery<T> {
    pub(crate) records: Vec<T>,
    pub(crate) processed: oneshot::Sender<()>,
}

/// The records of an agent's topic, in order, for agents written as a loop (Faust's style):
///
/// ```
/// use sabot::app::AgentStream;
///
/// #[derive(sabot::Record, Debug, Clone, PartialEq)]
/// struct Payment { account: String, amount: f64 }
///
/// async fn total(mut payments: AgentStream<Payment>) -> f64 {
///     let mut total = 0.0; // state lives in the agent's own variables
///     while let Some(p) = payments.next().await {
///         total += p.amount;
///     }
///     total
/// }
///
/// let payments = AgentStream::from_records(vec![
///     Payment { account: "A".into(), amount: 2.5 },
///     Payment { account: "B".into(), amount: 4.0 },
/// ]);
/// let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
/// assert_eq!(runtime.block_on(total(payments)), 6.5);
/// ```
///
/// In a worker, the records come from Kafka in batches; the offsets of a batch are committed
/// only after the agent has asked for the record that follows it, so a crash never skips a
/// record the agent has not finished with (at-least-once).
pub struct AgentStream<T> {
    incoming: Option<mpsc::Receiver<Delivery<T>>>,
    current: std::vec::IntoIter<T>,
    processed: Option<oneshot::Sender<()>>,
}

impl<T> AgentStream<T> {
    pub(crate) fn new(incoming: mpsc::Receiver<Delivery<T>>) -> Self {
        AgentStream { incoming: Some(incoming), current: Vec::new().into_iter(), processed: None }
    }

    /// A finite stream of `records`, for testing an agent without Kafka.
    pub fn from_records(records: Vec<T>) -> Self {
        AgentStream { incoming: None, current: records.into_iter(), processed: None }
    }

    /// The next record; `None` once the worker stops.
    pub async fn next(&mut self) -> Option<T> {
        loop {
            if let Some(record) = self.current.next() {
                return Some(record);
            }
            if let Some(processed) = self.processed.take() {
                let _ = processed.send(());
            }
            let delivery = self.incoming.as_mut()?.recv().await?;
            self.current = delivery.records.into_iter();
            self.processed = Some(delivery.processed);
        }
    }
}

impl<T> std::fmt::Debug for AgentStream<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentStream").field("buffered", &self.current.len()).finish()
    }
}
