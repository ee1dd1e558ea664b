//! Unbounded sources fed by asynchronous producers.

use std::fmt;
use std::sync::{Arc, Mutex};

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use tokio::sync::mpsc;

use super::{BatchIter, Scan, ScanRequest, Source};
use crate::{Result, SabotError};

/// A source fed through a tokio channel: async code (a network client, a timer task…) sends
/// batches, and the pipeline processes them as they arrive. The stream ends when every sender
/// is dropped, so an open sender makes it unbounded. A full channel makes the senders wait:
/// backpressure reaches the producer.
///
/// ```
/// use std::sync::Arc;
/// use arrow::array::{Int64Array, RecordBatch};
/// use arrow::datatypes::{DataType, Field, Schema};
/// use sabot::io::channel::ChannelSource;
///
/// let schema = Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, false)]));
/// let (source, sender) = ChannelSource::new(schema.clone(), 8);
/// let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
/// let producer = std::thread::spawn(move || runtime.block_on(async move {
///     for i in 0..3 {
///         let batch = RecordBatch::try_new(schema.clone(), vec![Arc::new(Int64Array::from(vec![i]))]).unwrap();
///         sender.send(batch).await.unwrap();
///     }
/// }));
/// let rows = sabot::Stream::from_source(Arc::new(source)).count().unwrap();
/// producer.join().unwrap();
/// assert_eq!(rows, 3);
/// ```
pub struct ChannelSource {
    schema: SchemaRef,
    receiver: Arc<Mutex<Option<mpsc::Receiver<RecordBatch>>>>,
}

impl ChannelSource {
    /// A source of `schema` batches and the sender that feeds it (`capacity` batches buffered).
    pub fn new(schema: SchemaRef, capacity: usize) -> (ChannelSource, mpsc::Sender<RecordBatch>) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        (ChannelSource { schema, receiver: Arc::new(Mutex::new(Some(rx))) }, tx)
    }
}

impl fmt::Debug for ChannelSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChannelSource").field("schema", &self.schema).finish()
    }
}

impl Source for ChannelSource {
    fn name(&self) -> &'static str {
        "channel"
    }

    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn describe(&self) -> String {
        "channel: unbounded".to_string()
    }

    /// The stream ends only when every sender is dropped, which may be never.
    fn is_unbounded(&self) -> bool {
        true
    }

    fn scan(&self, request: &ScanRequest) -> Result<Arc<dyn Scan>> {
        let receiver = self
            .receiver
            .lock()
            .expect("channel source lock")
            .take()
            .ok_or_else(|| SabotError::plan("a channel source can be read only once"))?;
        let schema = match &request.projection {
            Some(p) => Arc::new(self.schema.project(p)?),
            None => self.schema.clone(),
        };
        Ok(Arc::new(ChannelScan {
            schema,
            projection: request.projection.clone(),
            receiver: Mutex::new(Some(receiver)),
        }))
    }
}

struct ChannelScan {
    schema: SchemaRef,
    projection: Option<Vec<usize>>,
    receiver: Mutex<Option<mpsc::Receiver<RecordBatch>>>,
}

impl Scan for ChannelScan {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    /// One morsel: the channel's order is the stream's order.
    fn morsel_count(&self) -> usize {
        1
    }

    fn read_morsel(&self, _index: usize) -> Result<BatchIter<'static>> {
        let mut receiver = self
            .receiver
            .lock()
            .expect("channel scan lock")
            .take()
            .ok_or_else(|| SabotError::Execution("the channel source was already read".into()))?;
        let projection = self.projection.clone();
        Ok(Box::new(std::iter::from_fn(move || {
            // Blocks this worker thread, never the async producer's runtime.
            let batch = receiver.blocking_recv()?;
            Some(match &projection {
                Some(p) => batch.project(p).map_err(SabotError::from),
                None => Ok(batch),
            })
        })))
    }
}
