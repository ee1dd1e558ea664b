//! Partition streams: the pull side of a pipeline, one per parallel partition.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::ExecConfig;
use crate::Result;
use crate::checkpoint::CheckpointCoordinator;
use crate::io::{MessageIter, Scan};
use crate::operator::{Message, Operator, Output};

/// A message with its position in the data: sources number batches by morsel, so that an
/// order-preserving exchange can restore the source order after parallel processing.
#[derive(Debug, Clone)]
pub struct Sequenced {
    /// Position: `morsel << 24 | batch << 8 | sub-batch` (see [`seq`]).
    pub seq: u64,
    /// The payload.
    pub msg: Message,
}

/// One partition of an executing plan.
pub type PartitionStream = Box<dyn Iterator<Item = Result<Sequenced>> + Send>;

/// The sequence number of batch `batch` of morsel `morsel`.
pub(crate) fn seq(morsel: usize, batch: usize) -> u64 {
    ((morsel as u64) << 24) | ((batch as u64 & 0xFFFF) << 8)
}

/// Reads morsels of a shared scan; all partitions of a scan pull from one counter, so faster
/// threads take more morsels (morsel-driven scheduling).
pub(crate) struct ScanStream {
    scan: Arc<dyn Scan>,
    next_morsel: Arc<AtomicUsize>,
    current: Option<(usize, usize, MessageIter<'static>)>,
}

impl ScanStream {
    pub(crate) fn new(scan: Arc<dyn Scan>, next_morsel: Arc<AtomicUsize>) -> Self {
        ScanStream { scan, next_morsel, current: None }
    }
}

impl Iterator for ScanStream {
    type Item = Result<Sequenced>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some((morsel, batch_no, iter)) = self.current.as_mut() {
                match iter.next() {
                    Some(Ok(msg)) => {
                        let s = seq(*morsel, *batch_no);
                        *batch_no += 1;
                        if matches!(&msg, Message::Batch(batch) if batch.num_rows() == 0) {
                            continue;
                        }
                        return Some(Ok(Sequenced { seq: s, msg }));
                    }
                    Some(Err(e)) => {
                        self.current = None;
                        self.next_morsel.store(usize::MAX / 2, Ordering::Relaxed);
                        return Some(Err(e));
                    }
                    None => self.current = None,
                }
            }
            let morsel = self.next_morsel.fetch_add(1, Ordering::Relaxed);
            if morsel >= self.scan.morsel_count() {
                return None;
            }
            match self.scan.read_morsel_messages(morsel) {
                Ok(iter) => self.current = Some((morsel, 0, iter)),
                Err(e) => {
                    self.next_morsel.store(usize::MAX / 2, Ordering::Relaxed);
                    return Some(Err(e));
                }
            }
        }
    }
}

/// Drives one operator instance over its input partition.
pub(crate) struct OperatorStream {
    input: Option<PartitionStream>,
    operator: Box<dyn Operator>,
    output: Output,
    started: bool,
    closed: bool,
    /// Sequence of the input message being processed; outputs get `current + k`.
    current: u64,
    emitted: u64,
    /// The coordinator and this instance's task id, when the pipeline checkpoints.
    checkpoints: Option<(Arc<CheckpointCoordinator>, String)>,
    /// How many instances of the operator run (the hash exchange in front routes keys
    /// among them).
    parallelism: usize,
    /// The key group changes applied, in the order they were made.
    key_groups: crate::checkpoint::KeyGroupLedger,
}

impl OperatorStream {
    pub(crate) fn new(input: PartitionStream, operator: Box<dyn Operator>) -> Self {
        OperatorStream {
            input: Some(input),
            operator,
            output: Output::default(),
            started: false,
            closed: false,
            current: 0,
            emitted: 0,
            checkpoints: None,
            parallelism: 1,
            key_groups: Default::default(),
        }
    }

    /// Takes part in the pipeline's checkpoints as instance `partition` of the operator
    /// described by `name` (its stable id in checkpoints).
    pub(crate) fn with_checkpoints(mut self, config: &ExecConfig, name: &str, partition: usize) -> Self {
        if let Some(coordinator) = &config.coordinator.0 {
            let task = coordinator.task_id(name, partition);
            self.checkpoints = Some((coordinator.clone(), task));
        }
        self.parallelism = config.parallelism.max(1);
        self
    }

    fn step(&mut self) -> Result<bool> {
        if !self.started {
            self.started = true;
            if let Some((coordinator, task)) = &self.checkpoints
                && !(coordinator.key_groups() && self.operator.follows_key_groups())
                && let Some(restored) = coordinator.restored_state(task)
            {
                match restored.rescale() {
                    Some(_) => self.operator.restore_rescaled_state(&restored)?,
                    None => self.operator.restore_state(&restored)?,
                }
            }
            self.operator.on_start()?;
        }
        let next = if self.operator.is_finished() { None } else { self.input.as_mut().and_then(|i| i.next()) };
        match next {
            Some(item) => {
                let Sequenced { seq, msg } = item?;
                self.current = seq;
                self.emitted = 0;
                match msg {
                    Message::Batch(batch) => self.operator.process_batch(batch, &mut self.output)?,
                    Message::Watermark(w) => self.operator.handle_watermark(w, &mut self.output)?,
                    Message::Barrier(b) => {
                        if let Some((coordinator, task)) = &self.checkpoints {
                            let mut snapshot = coordinator.snapshot(b.id, task);
                            self.operator.snapshot_state(&mut snapshot)?;
                            coordinator.submit(task, snapshot);
                        }
                        self.operator.handle_checkpoint(b, &mut self.output)?
                    }
                    Message::KeyGroups(change) => {
                        if self.operator.follows_key_groups() {
                            let (released, acquired) = self.key_groups.effective(&change);
                            if !released.is_empty() || !acquired.is_empty() {
                                let effective =
                                    crate::checkpoint::KeyGroupChange { released, acquired, ..(*change).clone() };
                                let handover = self.handover(&effective)?;
                                self.operator.hand_over_key_groups(&handover)?;
                            }
                        }
                        self.output.forward(Message::KeyGroups(change));
                    }
                }
            }
            None => {
                // Dropping the input stops upstream threads early (e.g. a full limit).
                self.input = None;
                self.closed = true;
                self.current = self.current.saturating_add(256);
                self.emitted = 0;
                self.operator.on_close(&mut self.output)?;
            }
        }
        Ok(true)
    }
}

impl OperatorStream {
    /// What this instance loads and drops for a key group change.
    fn handover(&self, change: &crate::checkpoint::KeyGroupChange) -> Result<crate::checkpoint::KeyGroupHandover> {
        key_group_handover(self.checkpoints.as_ref(), change, self.parallelism)
    }
}

/// What the operator instance `task` (of `parallelism`) loads and drops for a key group
/// change: the acquired groups with every snapshot its operator took in the checkpoints that
/// hold them.
pub(crate) fn key_group_handover(
    checkpoints: Option<&(std::sync::Arc<crate::checkpoint::CheckpointCoordinator>, String)>,
    change: &crate::checkpoint::KeyGroupChange,
    parallelism: usize,
) -> Result<crate::checkpoint::KeyGroupHandover> {
    let Some((coordinator, task)) = checkpoints else {
        return Err(crate::SabotError::Execution(
            "keyed state follows key groups only in a pipeline with checkpointing".into(),
        ));
    };
    let instance = task.rsplit_once("/p").and_then(|(_, p)| p.parse().ok()).unwrap_or(0);
    let mut acquired: Vec<(Vec<u32>, Vec<crate::checkpoint::RestoredState>)> = vec![];
    let mut by_checkpoint: std::collections::BTreeMap<&std::path::Path, Vec<u32>> = Default::default();
    for (group, checkpoint) in &change.acquired {
        by_checkpoint.entry(checkpoint.as_path()).or_default().push(*group);
    }
    for (checkpoint, groups) in by_checkpoint {
        acquired.push((groups, coordinator.operator_snapshots(checkpoint, task)));
    }
    Ok(crate::checkpoint::KeyGroupHandover {
        partitions: change.partitions,
        released: change.released.clone(),
        acquired,
        instance: (instance, parallelism),
    })
}

impl Iterator for OperatorStream {
    type Item = Result<Sequenced>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(msg) = self.output.pop() {
                let seq = self.current.saturating_add(self.emitted.min(255));
                self.emitted += 1;
                return Some(Ok(Sequenced { seq, msg }));
            }
            if self.closed {
                return None;
            }
            if let Err(e) = self.step() {
                self.closed = true;
                self.input = None;
                return Some(Err(e));
            }
        }
    }
}

/// Tags the sequence numbers of one union input so inputs stay in order after a merge.
pub(crate) fn tag_union_input(stream: PartitionStream, input: usize) -> PartitionStream {
    let tag = (input as u64) << 56;
    Box::new(stream.map(move |item| item.map(|s| Sequenced { seq: (s.seq & ((1 << 56) - 1)) | tag, msg: s.msg })))
}
