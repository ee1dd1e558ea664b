//! Exchanges: where partitions meet, across threads and bounded channels.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, sync_channel};
use std::thread;
use std::time::{Duration, Instant};

use arrow::record_batch::RecordBatch;

use super::ExecConfig;
use super::barrier::BarrierAligner;
use super::stream::{PartitionStream, Sequenced};
use crate::expr::Expr;
use crate::operator::{Message, Watermark};
use crate::{Result, SabotError};

/// The heartbeat interval of merges whose consumer has no timers (sinks, collecting).
pub(crate) const NO_HEARTBEAT: Duration = Duration::from_secs(3600);

/// Messages from input partitions: `(input, Some(item))` per item, then `(input, None)` once
/// the input has ended (normally, with an error, or by a panic).
type Tagged = (usize, Option<Result<Sequenced>>);

/// Runs `stream` on its own thread, sending its items tagged with `input` into `tx` (bounded:
/// the thread blocks when the consumer is behind, and stops when the consumer hangs up).
pub(crate) fn spawn_into(name: String, stream: PartitionStream, tx: SyncSender<Tagged>, input: usize) {
    let thread_tx = tx.clone();
    let thread_name = name.clone();
    let spawned = thread::Builder::new().name(thread_name).spawn(move || {
        let result = catch_unwind(AssertUnwindSafe(|| {
            for item in stream {
                let stop = item.is_err();
                if thread_tx.send((input, Some(item))).is_err() || stop {
                    return;
                }
            }
        }));
        if let Err(panic) = result {
            let error = SabotError::Execution(format!("{name} panicked: {}", panic_message(&panic)));
            let _ = thread_tx.send((input, Some(Err(error))));
        }
        let _ = thread_tx.send((input, None));
    });
    if let Err(e) = spawned {
        let _ = tx.send((input, Some(Err(SabotError::Execution(format!("cannot start a thread: {e}"))))));
        let _ = tx.send((input, None));
    }
}

/// Merges partitions into one. `ordered` keeps the source order (a k-way merge on sequence
/// numbers, each partition being ordered); otherwise batches pass as they come. Watermarks are
/// merged as the minimum over the partitions that have not ended.
pub(crate) fn gather(
    name: &str,
    inputs: Vec<PartitionStream>,
    ordered: bool,
    capacity: usize,
    idle_timeout: Option<Duration>,
    tick: Duration,
) -> PartitionStream {
    if inputs.len() == 1 {
        return inputs.into_iter().next().expect("one input");
    }
    if ordered {
        let receivers: Vec<_> = inputs
            .into_iter()
            .enumerate()
            .map(|(i, s)| {
                let (tx, rx) = sync_channel(capacity);
                spawn_into(format!("sabot-{name}-{i}"), s, tx, i);
                rx
            })
            .collect();
        Box::new(OrderedMerge::new(receivers))
    } else {
        let (tx, rx) = sync_channel(capacity * inputs.len());
        let n = inputs.len();
        for (i, stream) in inputs.into_iter().enumerate() {
            spawn_into(format!("sabot-{name}-{i}"), stream, tx.clone(), i);
        }
        drop(tx);
        Box::new(MergedPartitions::new(rx, n, idle_timeout, tick))
    }
}

/// Tracks the watermark of each input; the merged watermark is the minimum over inputs that
/// have not ended and are not idle. It never goes backwards.
pub(crate) struct WatermarkMerge {
    per_input: Vec<Option<i64>>,
    live: Vec<bool>,
    idle: Vec<bool>,
    last_active: Vec<Instant>,
    emitted: Option<i64>,
}

impl WatermarkMerge {
    pub(crate) fn new(n: usize) -> Self {
        WatermarkMerge {
            per_input: vec![None; n],
            live: vec![true; n],
            idle: vec![false; n],
            last_active: vec![Instant::now(); n],
            emitted: None,
        }
    }

    /// Notes activity on `input` (an idle input becomes active again).
    pub(crate) fn touch(&mut self, input: usize) {
        self.idle[input] = false;
        self.last_active[input] = Instant::now();
    }

    /// Records a watermark; returns the merged one if it advanced.
    pub(crate) fn update(&mut self, input: usize, w: Watermark) -> Option<Watermark> {
        self.touch(input);
        let slot = &mut self.per_input[input];
        *slot = Some(slot.map_or(w.0, |old| old.max(w.0)));
        self.advance()
    }

    /// Excludes an input that ended.
    pub(crate) fn finish(&mut self, input: usize) -> Option<Watermark> {
        self.live[input] = false;
        self.advance()
    }

    /// Excludes inputs silent for longer than `timeout`, so they do not hold the others back.
    pub(crate) fn mark_idle(&mut self, timeout: Duration) -> Option<Watermark> {
        let now = Instant::now();
        for i in 0..self.live.len() {
            if self.live[i] && now.duration_since(self.last_active[i]) >= timeout {
                self.idle[i] = true;
            }
        }
        self.advance()
    }

    fn advance(&mut self) -> Option<Watermark> {
        let mut min: Option<i64> = None;
        for i in 0..self.per_input.len() {
            if self.live[i] && !self.idle[i] {
                let w = self.per_input[i]?;
                min = Some(min.map_or(w, |m| m.min(w)));
            }
        }
        let min = min?;
        if self.emitted.is_none_or(|e| min > e) {
            self.emitted = Some(min);
            return Some(Watermark(min));
        }
        None
    }
}

/// Receives from a channel. When nothing arrives for `tick`, lets inputs idle for
/// `idle_timeout` go, and otherwise returns the current watermark again (or `i64::MIN`) as a
/// heartbeat, so that operators downstream can fire processing-time timers.
fn recv_or_idle<T>(
    rx: &Receiver<T>,
    idle_timeout: Option<Duration>,
    tick: Duration,
    watermarks: &mut WatermarkMerge,
) -> Result<T, Option<Watermark>> {
    let wait = idle_timeout.map_or(tick, |t| t.min(tick)).max(Duration::from_millis(1));
    match rx.recv_timeout(wait) {
        Ok(item) => Ok(item),
        Err(RecvTimeoutError::Disconnected) => Err(None),
        Err(RecvTimeoutError::Timeout) => {
            if let Some(timeout) = idle_timeout
                && let Some(w) = watermarks.mark_idle(timeout)
            {
                return Err(Some(w));
            }
            Err(Some(Watermark(watermarks.emitted.unwrap_or(i64::MIN))))
        }
    }
}

struct OrderedMerge {
    inputs: Vec<Receiver<Tagged>>,
    heads: Vec<Option<Sequenced>>,
    live: Vec<bool>,
    watermarks: WatermarkMerge,
    barriers: BarrierAligner<()>,
    /// A watermark released by an input's end, due right after the barrier that end released.
    pending_watermark: Option<Watermark>,
    failed: bool,
}

impl OrderedMerge {
    fn new(inputs: Vec<Receiver<Tagged>>) -> Self {
        let n = inputs.len();
        OrderedMerge {
            inputs,
            heads: vec![None; n],
            live: vec![true; n],
            watermarks: WatermarkMerge::new(n),
            barriers: BarrierAligner::new(n),
            pending_watermark: None,
            failed: false,
        }
    }
}

impl Iterator for OrderedMerge {
    type Item = Result<Sequenced>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        if let Some(w) = self.pending_watermark.take() {
            return Some(Ok(Sequenced { seq: 0, msg: Message::Watermark(w) }));
        }
        // Every live input needs a head before the smallest can be chosen; an input that
        // delivered a barrier waits until the others have (aligned checkpoints).
        for i in 0..self.inputs.len() {
            while self.live[i] && self.heads[i].is_none() && !self.barriers.is_blocked(i) {
                match self.inputs[i].recv() {
                    Err(_) | Ok((_, None)) => {
                        self.live[i] = false;
                        if let Some(b) = self.barriers.end(i) {
                            self.pending_watermark = self.watermarks.finish(i);
                            return Some(Ok(Sequenced { seq: 0, msg: Message::Barrier(b) }));
                        }
                        if let Some(w) = self.watermarks.finish(i) {
                            return Some(Ok(Sequenced { seq: 0, msg: Message::Watermark(w) }));
                        }
                    }
                    Ok((_, Some(Err(e)))) => {
                        self.failed = true;
                        return Some(Err(e));
                    }
                    Ok((_, Some(Ok(Sequenced { seq, msg: Message::Watermark(w) })))) => {
                        if let Some(merged) = self.watermarks.update(i, w) {
                            return Some(Ok(Sequenced { seq, msg: Message::Watermark(merged) }));
                        }
                    }
                    Ok((_, Some(Ok(Sequenced { seq, msg: Message::Barrier(b) })))) => {
                        if let Some(merged) = self.barriers.barrier(i, b) {
                            return Some(Ok(Sequenced { seq, msg: Message::Barrier(merged) }));
                        }
                    }
                    Ok((_, Some(Ok(item)))) => self.heads[i] = Some(item),
                }
            }
        }
        let best = (0..self.heads.len()).filter_map(|i| self.heads[i].as_ref().map(|h| (h.seq, i))).min()?.1;
        self.heads[best].take().map(Ok)
    }
}

/// Drains every partition on its own thread and returns the batches in source order.
pub(crate) fn collect_ordered(name: &str, inputs: Vec<PartitionStream>, capacity: usize) -> Result<Vec<RecordBatch>> {
    let mut out = vec![];
    for item in gather(name, inputs, true, capacity, None, NO_HEARTBEAT) {
        if let Message::Batch(b) = item?.msg {
            out.push(b);
        }
    }
    Ok(out)
}

/// Hash-partitions every input partition's batches by `keys` into `config.parallelism`
/// output partitions. Watermarks and barriers go to every output; each output merges the
/// watermarks of all inputs.
pub(crate) fn repartition(inputs: Vec<PartitionStream>, keys: Vec<Expr>, config: &ExecConfig) -> Vec<PartitionStream> {
    let targets = config.parallelism.max(1);
    let n = inputs.len();
    let mut senders = vec![];
    let mut outputs: Vec<PartitionStream> = vec![];
    for _ in 0..targets {
        let (tx, rx) = sync_channel::<Tagged>(config.channel_capacity * n.max(1));
        senders.push(tx);
        outputs.push(Box::new(MergedPartitions::new(rx, n, config.idle_timeout, config.timer_interval)));
    }
    for (i, input) in inputs.into_iter().enumerate() {
        let (senders, error_tx) = (senders.clone(), senders[0].clone());
        let keys = keys.clone();
        let name = format!("sabot-repartition-{i}");
        let spawned = thread::Builder::new().name(name.clone()).spawn(move || {
            let result = catch_unwind(AssertUnwindSafe(|| route(i, input, &keys, &senders)));
            let failure = match result {
                Ok(Ok(())) => None,
                Ok(Err(e)) => Some(e),
                Err(panic) => Some(SabotError::Execution(format!("{name} panicked: {}", panic_message(&panic)))),
            };
            if let Some(e) = failure {
                let _ = senders[0].send((i, Some(Err(e))));
            }
            for tx in &senders {
                let _ = tx.send((i, None));
            }
        });
        if let Err(e) = spawned {
            let _ = error_tx.send((i, Some(Err(SabotError::Execution(format!("cannot start a thread: {e}"))))));
        }
    }
    outputs
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

type Route = SyncSender<Tagged>;

fn route(input_index: usize, input: PartitionStream, keys: &[Expr], senders: &[Route]) -> Result<()> {
    let targets = senders.len();
    for item in input {
        let Sequenced { seq, msg } = item?;
        match msg {
            Message::Batch(batch) => {
                if targets == 1 {
                    if senders[0].send((input_index, Some(Ok(Sequenced { seq, msg: Message::Batch(batch) })))).is_err()
                    {
                        return Ok(());
                    }
                    continue;
                }
                let partitions = partition_rows(&batch, keys, targets)?;
                for (target, rows) in partitions.into_iter().enumerate() {
                    if rows.is_empty() {
                        continue;
                    }
                    let part = if rows.len() == batch.num_rows() {
                        batch.clone()
                    } else {
                        arrow::compute::take_record_batch(&batch, &arrow::array::UInt32Array::from(rows))?
                    };
                    let msg = Message::Batch(part);
                    if senders[target].send((input_index, Some(Ok(Sequenced { seq, msg })))).is_err() {
                        return Ok(());
                    }
                }
            }
            other => {
                for tx in senders {
                    if tx.send((input_index, Some(Ok(Sequenced { seq, msg: other.clone() })))).is_err() {
                        return Ok(());
                    }
                }
            }
        }
    }
    Ok(())
}

/// Row indices per target partition, by a hash of the key columns.
fn partition_rows(batch: &RecordBatch, keys: &[Expr], targets: usize) -> Result<Vec<Vec<u32>>> {
    let arrays = keys.iter().map(|k| k.evaluate(batch)).collect::<Result<Vec<_>>>()?;
    let mut out = vec![Vec::with_capacity(batch.num_rows() / targets + 1); targets];
    if let [single] = arrays.as_slice()
        && single.data_type().is_integer()
    {
        for (row, v) in crate::operator::integer_key_bits(single.as_ref())?.into_iter().enumerate() {
            let h = v.map_or(0, crate::operator::hash_u64);
            out[(h % targets as u64) as usize].push(row as u32);
        }
        return Ok(out);
    }
    let fields = arrays.iter().map(|a| arrow::row::SortField::new(a.data_type().clone())).collect();
    let rows = arrow::row::RowConverter::new(fields)?.convert_columns(&arrays)?;
    for row in 0..rows.num_rows() {
        let h = crate::operator::hash_bytes(rows.row(row).as_ref());
        out[(h % targets as u64) as usize].push(row as u32);
    }
    Ok(out)
}

/// Merges partitions that share one channel, batches in arrival order; watermarks are the
/// minimum over the inputs that have not ended (or gone idle).
struct MergedPartitions {
    rx: Receiver<Tagged>,
    watermarks: WatermarkMerge,
    barriers: BarrierAligner<Option<Result<Sequenced>>>,
    /// A watermark released by an input's end, due right after the barrier that end released.
    pending_watermark: Option<Watermark>,
    idle_timeout: Option<Duration>,
    tick: Duration,
    failed: bool,
}

impl MergedPartitions {
    fn new(rx: Receiver<Tagged>, inputs: usize, idle_timeout: Option<Duration>, tick: Duration) -> Self {
        MergedPartitions {
            rx,
            watermarks: WatermarkMerge::new(inputs),
            barriers: BarrierAligner::new(inputs),
            pending_watermark: None,
            idle_timeout,
            tick,
            failed: false,
        }
    }
}

impl Iterator for MergedPartitions {
    type Item = Result<Sequenced>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        if let Some(w) = self.pending_watermark.take() {
            return Some(Ok(Sequenced { seq: 0, msg: Message::Watermark(w) }));
        }
        loop {
            let (input, item) = match self.barriers.next_replay() {
                Some(held) => held,
                None => match recv_or_idle(&self.rx, self.idle_timeout, self.tick, &mut self.watermarks) {
                    Ok(received) => received,
                    Err(Some(w)) => return Some(Ok(Sequenced { seq: 0, msg: Message::Watermark(w) })),
                    Err(None) => return None,
                },
            };
            if self.barriers.is_blocked(input) {
                // After a barrier, an input waits for the others (aligned checkpoints).
                self.barriers.hold(input, item);
                continue;
            }
            match item {
                None => {
                    if let Some(b) = self.barriers.end(input) {
                        self.pending_watermark = self.watermarks.finish(input);
                        return Some(Ok(Sequenced { seq: 0, msg: Message::Barrier(b) }));
                    }
                    if let Some(w) = self.watermarks.finish(input) {
                        return Some(Ok(Sequenced { seq: 0, msg: Message::Watermark(w) }));
                    }
                }
                Some(Err(e)) => {
                    self.failed = true;
                    return Some(Err(e));
                }
                Some(Ok(Sequenced { seq, msg: Message::Watermark(w) })) => {
                    if let Some(merged) = self.watermarks.update(input, w) {
                        return Some(Ok(Sequenced { seq, msg: Message::Watermark(merged) }));
                    }
                }
                Some(Ok(Sequenced { seq, msg: Message::Barrier(b) })) => {
                    self.watermarks.touch(input);
                    if let Some(merged) = self.barriers.barrier(input, b) {
                        return Some(Ok(Sequenced { seq, msg: Message::Barrier(merged) }));
                    }
                }
                Some(Ok(other)) => {
                    self.watermarks.touch(input);
                    return Some(Ok(other));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merged_watermark_is_the_minimum_and_never_goes_backwards() {
        let mut merge = WatermarkMerge::new(2);
        assert_eq!(merge.update(0, Watermark(100)), None, "input 1 has no watermark yet");
        assert_eq!(merge.update(1, Watermark(50)), Some(Watermark(50)));
        assert_eq!(merge.update(1, Watermark(150)), Some(Watermark(100)));
        assert_eq!(merge.update(1, Watermark(120)), None, "an input's watermark never goes back");
        assert_eq!(merge.finish(0), Some(Watermark(150)), "an ended input no longer holds the others back");
    }

    /// Large unsigned keys keep their own hash (a cast to i64 once made every key above
    /// `i64::MAX` null, all in one partition), and each key's rows go where the key router of
    /// restores and key-group handovers looks for them.
    #[test]
    fn unsigned_keys_above_i64_max_spread_and_match_the_key_router() {
        use arrow::array::UInt64Array;
        let keys: Vec<u64> = (0..64).map(|i| u64::MAX - i * 7_919).collect();
        let batch =
            RecordBatch::try_from_iter([("k", std::sync::Arc::new(UInt64Array::from(keys.clone())) as _)]).unwrap();
        let parts = partition_rows(&batch, &[crate::expr::col("k")], 4).unwrap();
        assert!(parts.iter().all(|rows| !rows.is_empty()), "every partition gets keys: {parts:?}");
        let converter =
            arrow::row::RowConverter::new(vec![arrow::row::SortField::new(arrow::datatypes::DataType::UInt64)])
                .unwrap();
        let encoded = converter.convert_columns(&[batch.column(0).clone()]).unwrap();
        for (partition, rows) in parts.iter().enumerate() {
            let router =
                crate::operator::key_router_of_types(&[arrow::datatypes::DataType::UInt64], 4, partition).unwrap();
            for &row in rows {
                assert!(router(encoded.row(row as usize).as_ref()), "key {} routed to {partition}", keys[row as usize]);
            }
        }
    }

    #[test]
    fn idle_inputs_stop_holding_back_the_watermark() {
        let mut merge = WatermarkMerge::new(2);
        assert_eq!(merge.update(0, Watermark(100)), None);
        merge.last_active[1] = Instant::now() - Duration::from_secs(1);
        assert_eq!(merge.mark_idle(Duration::from_millis(500)), Some(Watermark(100)), "silent input 1 is idle");
        // Input 1 wakes up behind the merged watermark: the merge does not go backwards.
        assert_eq!(merge.update(1, Watermark(40)), None);
        assert_eq!(merge.update(0, Watermark(300)), None, "input 1 (at 40) holds the merge again");
        assert_eq!(merge.update(1, Watermark(200)), Some(Watermark(200)));
    }
}
