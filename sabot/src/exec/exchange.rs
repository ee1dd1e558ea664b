//! Exchanges: where partitions meet, across threads and bounded channels.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread;

use arrow::record_batch::RecordBatch;

use super::stream::{PartitionStream, Sequenced};
use crate::operator::{Message, Watermark};
use crate::{Result, SabotError};

/// Runs `stream` on its own thread, sending its items tagged with `tag` into `tx` (bounded:
/// the thread blocks when the consumer is behind, and stops when the consumer hangs up).
pub(crate) fn spawn_into<T: Copy + Send + 'static>(
    name: String,
    stream: PartitionStream,
    tx: SyncSender<(T, Result<Sequenced>)>,
    tag: T,
) {
    let thread_name = name.clone();
    let error_tx = tx.clone();
    let spawned = thread::Builder::new().name(thread_name).spawn(move || {
        let result = catch_unwind(AssertUnwindSafe(|| {
            for item in stream {
                let stop = item.is_err();
                if tx.send((tag, item)).is_err() || stop {
                    return;
                }
            }
        }));
        if let Err(panic) = result {
            let message = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            let _ = tx.send((tag, Err(SabotError::Execution(format!("{name} panicked: {message}")))));
        }
    });
    if let Err(e) = spawned {
        let _ = error_tx.send((tag, Err(SabotError::Execution(format!("cannot start a thread: {e}")))));
    }
}

/// Merges partitions into one. `ordered` keeps the source order (a k-way merge on sequence
/// numbers, each partition being ordered); otherwise batches pass as they come. Watermarks are
/// merged as the minimum over the partitions that have not ended.
pub(crate) fn gather(name: &str, inputs: Vec<PartitionStream>, ordered: bool, capacity: usize) -> PartitionStream {
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
        Box::new(UnorderedMerge { rx, watermarks: WatermarkMerge::new(n), failed: false })
    }
}

/// Tracks the watermark of each input; the merged watermark is the minimum over live inputs.
struct WatermarkMerge {
    per_input: Vec<Option<i64>>,
    live: Vec<bool>,
    emitted: Option<i64>,
}

impl WatermarkMerge {
    fn new(n: usize) -> Self {
        WatermarkMerge { per_input: vec![None; n], live: vec![true; n], emitted: None }
    }

    /// Records a watermark; returns the merged one if it advanced.
    fn update(&mut self, input: usize, w: Watermark) -> Option<Watermark> {
        let slot = &mut self.per_input[input];
        *slot = Some(slot.map_or(w.0, |old| old.max(w.0)));
        self.advance()
    }

    fn finish(&mut self, input: usize) -> Option<Watermark> {
        self.live[input] = false;
        self.advance()
    }

    fn advance(&mut self) -> Option<Watermark> {
        let mut min: Option<i64> = None;
        for (w, live) in self.per_input.iter().zip(&self.live) {
            if *live {
                let w = (*w)?;
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

struct UnorderedMerge {
    rx: Receiver<(usize, Result<Sequenced>)>,
    watermarks: WatermarkMerge,
    failed: bool,
}

impl Iterator for UnorderedMerge {
    type Item = Result<Sequenced>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        loop {
            let (input, item) = self.rx.recv().ok()?;
            match item {
                Err(e) => {
                    self.failed = true;
                    return Some(Err(e));
                }
                Ok(Sequenced { seq, msg: Message::Watermark(w) }) => {
                    if let Some(merged) = self.watermarks.update(input, w) {
                        return Some(Ok(Sequenced { seq, msg: Message::Watermark(merged) }));
                    }
                }
                Ok(other) => return Some(Ok(other)),
            }
        }
    }
}

struct OrderedMerge {
    inputs: Vec<Receiver<(usize, Result<Sequenced>)>>,
    heads: Vec<Option<Sequenced>>,
    live: Vec<bool>,
    watermarks: WatermarkMerge,
    failed: bool,
}

impl OrderedMerge {
    fn new(inputs: Vec<Receiver<(usize, Result<Sequenced>)>>) -> Self {
        let n = inputs.len();
        OrderedMerge {
            inputs,
            heads: vec![None; n],
            live: vec![true; n],
            watermarks: WatermarkMerge::new(n),
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
        // Every live input needs a head before the smallest can be chosen.
        for i in 0..self.inputs.len() {
            while self.live[i] && self.heads[i].is_none() {
                match self.inputs[i].recv() {
                    Err(_) => {
                        self.live[i] = false;
                        if let Some(w) = self.watermarks.finish(i) {
                            return Some(Ok(Sequenced { seq: 0, msg: Message::Watermark(w) }));
                        }
                    }
                    Ok((_, Err(e))) => {
                        self.failed = true;
                        return Some(Err(e));
                    }
                    Ok((_, Ok(Sequenced { seq, msg: Message::Watermark(w) }))) => {
                        if let Some(merged) = self.watermarks.update(i, w) {
                            return Some(Ok(Sequenced { seq, msg: Message::Watermark(merged) }));
                        }
                    }
                    Ok((_, Ok(item))) => self.heads[i] = Some(item),
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
    for item in gather(name, inputs, true, capacity) {
        if let Message::Batch(b) = item?.msg {
            out.push(b);
        }
    }
    Ok(out)
}
