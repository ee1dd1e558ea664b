//! Two-input execution: where the partitions of a streaming join's two sides meet.
//!
//! Both sides are hash-partitioned by their join keys into the same number of partitions,
//! with keys cast to a common type first so that equal values hash alike; partition `i` of
//! the left side and partition `i` of the right side then feed one
//! [`TwoInputOperator`] instance through one bounded channel (a thread per side sends into
//! it, so either side's backpressure stops only that side's thread).

use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError, sync_channel};
use std::time::{Duration, Instant};

use arrow::datatypes::SchemaRef;

use super::ExecConfig;
use super::barrier::BarrierAligner;
use super::exchange::spawn_into;
use super::physical::{PhysicalPlan, create_physical_plan};
use super::stream::{PartitionStream, Sequenced};
use crate::expr::{Expr, col};
use crate::operator::{
    AsofJoinOperator, CoWatermarks, IntervalJoinOperator, Message, Output, TableJoinOperator, TwoInputOperator,
    TwoInputOperatorFactory, WindowJoinOperator,
};
use crate::plan::{LogicalPlan, StreamJoinKind};
use crate::{Result, SabotError};

/// What a side's thread sends: `(side, Some(item))` per item, then `(side, None)` at its end.
type Tagged = (usize, Option<Result<Sequenced>>);

const LEFT: usize = 0;
const RIGHT: usize = 1;

/// Drives one two-input operator over partition `i` of both sides.
pub(crate) struct CoOperatorStream {
    /// Read in order: one shared channel, or the right side's channel then the left one's.
    receivers: Vec<Receiver<Tagged>>,
    operator: Box<dyn TwoInputOperator>,
    output: Output,
    watermarks: CoWatermarks,
    barriers: BarrierAligner<Option<Result<Sequenced>>>,
    /// The coordinator and this instance's task id, when the pipeline checkpoints.
    checkpoints: Option<(std::sync::Arc<crate::checkpoint::CheckpointCoordinator>, String)>,
    ended: [bool; 2],
    idle_timeout: Option<Duration>,
    last_seen: [Instant; 2],
    idle: [bool; 2],
    started: bool,
    closed: bool,
    emitted: u64,
    /// The number of instances of the operator.
    parallelism: usize,
    /// The inputs are read from partitions that are key groups, in a pipeline whose workers
    /// share them: the operator's state comes and goes with key group changes only.
    in_key_groups: bool,
    /// Key group changes applied from one side whose twin from the other side is still to
    /// come: `(side, change)`.
    awaiting_twin: Vec<(usize, Arc<crate::checkpoint::KeyGroupChange>)>,
    /// The key group changes applied, in the order they were made.
    key_groups: crate::checkpoint::KeyGroupLedger,
}

impl CoOperatorStream {
    /// Starts a thread per side. With `right_first`, the whole right side is read before the
    /// left one (for a bounded table that must be loaded before it is joined).
    pub(crate) fn new(
        name: &str,
        left: PartitionStream,
        right: PartitionStream,
        operator: Box<dyn TwoInputOperator>,
        right_first: bool,
        config: &ExecConfig,
    ) -> Self {
        let capacity = config.channel_capacity.max(1);
        let receivers = if right_first {
            let (right_tx, right_rx) = sync_channel(capacity);
            let (left_tx, left_rx) = sync_channel(capacity);
            spawn_into(format!("sabot-{name}-right"), right, right_tx, RIGHT);
            spawn_into(format!("sabot-{name}-left"), left, left_tx, LEFT);
            vec![right_rx, left_rx]
        } else {
            let (tx, rx) = sync_channel(capacity * 2);
            spawn_into(format!("sabot-{name}-left"), left, tx.clone(), LEFT);
            spawn_into(format!("sabot-{name}-right"), right, tx, RIGHT);
            vec![rx]
        };
        let watermarks = CoWatermarks::new(operator.tracks_right_watermark());
        CoOperatorStream {
            receivers,
            operator,
            output: Output::default(),
            watermarks,
            barriers: BarrierAligner::new(2),
            checkpoints: None,
            ended: [false; 2],
            idle_timeout: config.idle_timeout,
            last_seen: [Instant::now(); 2],
            idle: [false; 2],
            started: false,
            closed: false,
            emitted: 0,
            parallelism: 1,
            in_key_groups: false,
            awaiting_twin: vec![],
            key_groups: Default::default(),
        }
    }

    /// The next message of either side: `Ok(None)` once both ended, `Err(timeout)` when
    /// nothing came for the idle timeout.
    fn receive(&mut self) -> std::result::Result<Option<Tagged>, Duration> {
        while let Some(rx) = self.receivers.first() {
            let received = match self.idle_timeout {
                None => rx.recv().ok(),
                Some(timeout) => match rx.recv_timeout(timeout) {
                    Ok(item) => Some(item),
                    Err(RecvTimeoutError::Timeout) => return Err(timeout),
                    Err(RecvTimeoutError::Disconnected) => None,
                },
            };
            match received {
                Some(item) => return Ok(Some(item)),
                None => {
                    self.receivers.remove(0);
                }
            }
        }
        Ok(None)
    }

    /// Lets a side that has been silent for `timeout` stop holding event time back.
    fn mark_idle(&mut self, timeout: Duration) -> Result<()> {
        let now = Instant::now();
        for side in [LEFT, RIGHT] {
            if !self.ended[side] && !self.idle[side] && now.duration_since(self.last_seen[side]) >= timeout {
                self.idle[side] = true;
                if let Some(w) = self.watermarks.set_idle(side, true) {
                    self.operator.handle_watermark(w, &mut self.output)?;
                }
            }
        }
        Ok(())
    }

    fn step(&mut self) -> Result<()> {
        if !self.started {
            self.started = true;
            if let Some((coordinator, task)) = &self.checkpoints
                && !(self.in_key_groups && self.operator.follows_key_groups())
                && let Some(restored) = coordinator.restored_state(task)
            {
                match restored.rescale() {
                    Some(_) => self.operator.restore_rescaled_state(&restored)?,
                    None => self.operator.restore_state(&restored)?,
                }
            }
            self.operator.on_start()?;
        }
        let received = match self.barriers.next_replay() {
            Some(held) => Some(held),
            None => match self.receive() {
                Ok(received) => received,
                Err(timeout) => return self.mark_idle(timeout),
            },
        };
        let received = match received {
            Some((side, item)) if self.barriers.is_blocked(side) => {
                // After a barrier, a side waits for the other one (aligned checkpoints).
                self.barriers.hold(side, item);
                return Ok(());
            }
            other => other,
        };
        let Some((side, item)) = received else {
            // Every sender is gone: treat the sides that did not say so as ended.
            for side in [LEFT, RIGHT] {
                if !self.ended[side] {
                    self.end(side)?;
                }
            }
            return Ok(());
        };
        self.last_seen[side] = Instant::now();
        if self.idle[side] {
            self.idle[side] = false;
            self.watermarks.set_idle(side, false);
        }
        match item {
            None => self.end(side),
            Some(item) => match item?.msg {
                Message::Batch(batch) if side == LEFT => self.operator.process_left(batch, &mut self.output),
                Message::Batch(batch) => self.operator.process_right(batch, &mut self.output),
                Message::Watermark(w) => match self.watermarks.update(side, w) {
                    Some(merged) => self.operator.handle_watermark(merged, &mut self.output),
                    None => Ok(()),
                },
                Message::Barrier(b) => match self.barriers.barrier(side, b) {
                    Some(aligned) => self.checkpoint(aligned),
                    None => Ok(()),
                },
                Message::KeyGroups(change) => self.hand_over(side, change),
            },
        }
    }

    /// A key group change from `side`. Sources of both sides partitioned alike send each
    /// change twice, once per side (for their own topic): it applies at its first arrival,
    /// before any row of an acquired group on either side (each side's rows of the group
    /// follow its own change), and after every row of a released group (both sides stopped
    /// reading it before the checkpoint that the release waits for, and aligned barriers
    /// brought both sides past it). Its twin is dropped, so it goes downstream once.
    fn hand_over(&mut self, side: usize, change: Arc<crate::checkpoint::KeyGroupChange>) -> Result<()> {
        let twin = self.awaiting_twin.iter().position(|(s, c)| *s != side && c.is_twin_of(&change));
        if let Some(twin) = twin {
            self.awaiting_twin.remove(twin);
            return Ok(());
        }
        if self.operator.follows_key_groups() {
            let (released, acquired) = self.key_groups.effective(&change);
            if !released.is_empty() || !acquired.is_empty() {
                let effective = crate::checkpoint::KeyGroupChange { released, acquired, ..(*change).clone() };
                let handover =
                    super::stream::key_group_handover(self.checkpoints.as_ref(), &effective, self.parallelism)?;
                self.operator.hand_over_key_groups(&handover)?;
            }
        }
        self.awaiting_twin.push((side, change.clone()));
        self.output.forward(Message::KeyGroups(change));
        Ok(())
    }

    /// Both sides delivered barrier `barrier`: snapshots the operator, then forwards it.
    fn checkpoint(&mut self, barrier: crate::operator::CheckpointBarrier) -> Result<()> {
        if let Some((coordinator, task)) = &self.checkpoints {
            let mut snapshot = coordinator.snapshot(barrier.id, task);
            self.operator.snapshot_state(&mut snapshot)?;
            coordinator.submit(task, snapshot);
        }
        self.operator.handle_checkpoint(barrier, &mut self.output)
    }

    /// Side `side` ended: it no longer holds barriers or event time back; once both ended,
    /// the operator closes.
    fn end(&mut self, side: usize) -> Result<()> {
        if self.ended[side] {
            return Ok(());
        }
        self.ended[side] = true;
        if let Some(b) = self.barriers.end(side) {
            self.checkpoint(b)?;
        }
        if let Some(w) = self.watermarks.finish(side) {
            self.operator.handle_watermark(w, &mut self.output)?;
        }
        if self.ended == [true, true] {
            self.closed = true;
            self.receivers.clear();
            self.operator.on_close(&mut self.output)?;
        }
        Ok(())
    }
}

impl Iterator for CoOperatorStream {
    type Item = Result<Sequenced>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(msg) = self.output.pop() {
                self.emitted += 1;
                return Some(Ok(Sequenced { seq: self.emitted << 8, msg }));
            }
            if self.closed {
                return None;
            }
            if let Err(e) = self.step() {
                self.closed = true;
                self.receivers.clear();
                return Some(Err(e));
            }
        }
    }
}

/// Runs `factory`'s operator over partition `i` of `left` and `right` for every `i`.
pub(crate) fn execute(
    left: &PhysicalPlan,
    right: &PhysicalPlan,
    name: &str,
    factory: &TwoInputOperatorFactory,
    right_first: bool,
    config: &ExecConfig,
) -> Result<Vec<PartitionStream>> {
    let lefts = left.execute(config)?;
    let rights = right.execute(config)?;
    if lefts.len() != rights.len() {
        return Err(SabotError::Execution(format!(
            "{name}: the sides have {} and {} partitions; they must be partitioned alike",
            lefts.len(),
            rights.len()
        )));
    }
    let partitions = lefts.len();
    let thread_name = name.split(':').next().unwrap_or("stream-join").to_lowercase().replace(' ', "-");
    lefts
        .into_iter()
        .zip(rights)
        .enumerate()
        .map(|(i, (l, r))| {
            let operator = factory(i)?;
            let mut stream = CoOperatorStream::new(&format!("{thread_name}-{i}"), l, r, operator, right_first, config);
            if let Some(coordinator) = &config.coordinator.0 {
                stream.checkpoints = Some((coordinator.clone(), coordinator.task_id(name, i)));
                stream.in_key_groups = coordinator.key_groups() && reads_key_groups(left);
            }
            stream.parallelism = partitions;
            Ok(Box::new(stream) as PartitionStream)
        })
        .collect()
}

/// Whether a source below `plan` reads partitions that are key groups.
fn reads_key_groups(plan: &PhysicalPlan) -> bool {
    match plan {
        PhysicalPlan::Scan { source, .. } => source.partitions_are_key_groups(),
        other => other.inputs().into_iter().any(reads_key_groups),
    }
}

/// Whether every source below `plan` is bounded.
fn is_bounded(plan: &PhysicalPlan) -> bool {
    match plan {
        PhysicalPlan::Scan { source, .. } => !source.is_unbounded(),
        other => other.inputs().into_iter().all(is_bounded),
    }
}

/// Partitions `input` by `keys`, each cast to `types` where it differs, so that equal keys
/// of both sides land in the same partition (without keys: everything in one partition).
fn partition_by_keys(input: PhysicalPlan, keys: &[String], types: &[arrow::datatypes::DataType]) -> PhysicalPlan {
    if keys.is_empty() {
        let ordered = input.preserves_order();
        return PhysicalPlan::Gather { input: Box::new(input), ordered };
    }
    let schema = input.schema();
    let exprs: Vec<Expr> = keys
        .iter()
        .zip(types)
        .map(|(k, t)| {
            let same = schema.field_with_name(k).is_ok_and(|f| f.data_type() == t);
            if same { col(k.as_str()) } else { col(k.as_str()).cast(t.clone()) }
        })
        .collect();
    PhysicalPlan::Repartition { input: Box::new(input), keys: exprs }
}

/// The physical plan of a [`LogicalPlan::StreamJoin`].
pub(crate) fn plan_stream_join(plan: &LogicalPlan, config: &ExecConfig) -> Result<PhysicalPlan> {
    let LogicalPlan::StreamJoin { left, right, left_keys, right_keys, kind, schema } = plan else {
        return Err(SabotError::plan("not a stream join"));
    };
    let (ls, rs) = (left.schema(), right.schema());
    let types = left_keys
        .iter()
        .zip(right_keys)
        .map(|(l, r)| {
            let lt = ls.field_with_name(l).map_err(|_| SabotError::column_not_found(&ls, l))?.data_type();
            let rt = rs.field_with_name(r).map_err(|_| SabotError::column_not_found(&rs, r))?.data_type();
            crate::expr::common_type(lt, rt)
                .ok_or_else(|| SabotError::plan(format!("join keys {l} ({lt}) and {r} ({rt}) cannot be compared")))
        })
        .collect::<Result<Vec<_>>>()?;
    let factory =
        operator_factory(ls, rs, left_keys.clone(), right_keys.clone(), kind.clone(), config.state_backend.clone())?;
    let left_plan = partition_by_keys(create_physical_plan(left, config)?, left_keys, &types);
    let right_plan = partition_by_keys(create_physical_plan(right, config)?, right_keys, &types);
    // A bounded table is loaded before it is joined, so results do not depend on timing.
    let right_first = matches!(kind, StreamJoinKind::Table { .. }) && is_bounded(&right_plan);
    let mut name = plan.describe();
    if right_first {
        name.push_str(" (table loaded first)");
    }
    Ok(PhysicalPlan::StreamJoin {
        left: Box::new(left_plan),
        right: Box::new(right_plan),
        name,
        factory,
        right_first,
        schema: schema.clone(),
    })
}

/// One operator of `kind` per partition, its state in `backend`; checked once now (on the
/// heap, so that planning opens no store), so errors surface while planning.
fn operator_factory(
    left: SchemaRef,
    right: SchemaRef,
    left_keys: Vec<String>,
    right_keys: Vec<String>,
    kind: StreamJoinKind,
    backend: crate::state::StateBackend,
) -> Result<TwoInputOperatorFactory> {
    let make = move |backend: &crate::state::StateBackend| -> Result<Box<dyn TwoInputOperator>> {
        let lk: Vec<&str> = left_keys.iter().map(String::as_str).collect();
        let rk: Vec<&str> = right_keys.iter().map(String::as_str).collect();
        let (l, r) = (left.clone(), right.clone());
        Ok(match &kind {
            StreamJoinKind::Interval { left_time, right_time, lower, upper } => Box::new(
                IntervalJoinOperator::try_new(l, r, &lk, &rk, left_time, right_time, *lower, *upper)?
                    .with_state_backend(backend)?,
            ),
            StreamJoinKind::Window { left_time, right_time, spec } => Box::new(
                WindowJoinOperator::try_new(l, r, &lk, &rk, left_time, right_time, *spec)?
                    .with_state_backend(backend)?,
            ),
            StreamJoinKind::AsOf { left_time, right_time, tolerance } => Box::new(
                AsofJoinOperator::try_new(l, r, &lk, &rk, left_time, right_time, *tolerance)?
                    .with_state_backend(backend)?,
            ),
            StreamJoinKind::Table { join_type } => {
                Box::new(TableJoinOperator::try_new(l, r, &lk, &rk, *join_type)?.with_state_backend(backend)?)
            }
        })
    };
    // The operators compute their schema as the plan did (`stream_join_output`).
    make(&crate::state::StateBackend::Memory)?;
    Ok(Arc::new(move |_partition| make(&backend)))
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use arrow::array::{Int64Array, RecordBatch};

    use super::*;
    use crate::operator::{CheckpointBarrier, Watermark};

    /// Records what it sees as "L<first value>", "R<first value>", "W<ms>", "B<id>", "close".
    struct Recorder(Arc<Mutex<Vec<String>>>);

    impl Recorder {
        fn log(&self, event: String) {
            self.0.lock().expect("log lock").push(event);
        }
    }

    fn first(batch: &RecordBatch) -> i64 {
        batch.column(0).as_any().downcast_ref::<Int64Array>().map_or(-1, |a| a.value(0))
    }

    impl TwoInputOperator for Recorder {
        fn name(&self) -> &str {
            "recorder"
        }
        fn process_left(&mut self, batch: RecordBatch, _out: &mut Output) -> Result<()> {
            self.log(format!("L{}", first(&batch)));
            Ok(())
        }
        fn process_right(&mut self, batch: RecordBatch, _out: &mut Output) -> Result<()> {
            self.log(format!("R{}", first(&batch)));
            Ok(())
        }
        fn handle_watermark(&mut self, w: Watermark, out: &mut Output) -> Result<()> {
            self.log(format!("W{}", w.0));
            out.emit_watermark(w);
            Ok(())
        }
        fn handle_checkpoint(&mut self, b: CheckpointBarrier, out: &mut Output) -> Result<()> {
            self.log(format!("B{}", b.id));
            out.emit_barrier(b);
            Ok(())
        }
        fn on_close(&mut self, _out: &mut Output) -> Result<()> {
            self.log("close".into());
            Ok(())
        }
    }

    fn batch(v: i64) -> Message {
        Message::Batch(RecordBatch::try_from_iter([("x", Arc::new(Int64Array::from(vec![v])) as _)]).expect("batch"))
    }

    fn stream(messages: Vec<Result<Message>>) -> PartitionStream {
        Box::new(messages.into_iter().map(|m| m.map(|msg| Sequenced { seq: 0, msg })))
    }

    fn run(left: Vec<Result<Message>>, right: Vec<Result<Message>>, right_first: bool) -> (Vec<String>, Result<()>) {
        let log = Arc::new(Mutex::new(vec![]));
        let config = ExecConfig::default();
        let op = Box::new(Recorder(log.clone()));
        let mut result = Ok(());
        for item in CoOperatorStream::new("test", stream(left), stream(right), op, right_first, &config) {
            if let Err(e) = item {
                result = Err(e);
            }
        }
        let events = log.lock().expect("log lock").clone();
        (events, result)
    }

    fn strings(events: &[&str]) -> Vec<String> {
        events.iter().map(|e| e.to_string()).collect()
    }

    #[test]
    fn right_first_reads_the_whole_right_side_before_the_left_one() {
        let (events, result) = run(vec![Ok(batch(1)), Ok(batch(2))], vec![Ok(batch(10)), Ok(batch(11))], true);
        assert!(result.is_ok());
        assert_eq!(events, strings(&["R10", "R11", "L1", "L2", "close"]));
    }

    #[test]
    fn event_time_and_barriers_wait_for_both_sides_until_one_ends() {
        let barrier = |id| Ok(Message::Barrier(CheckpointBarrier { id }));
        let left = vec![Ok(Message::Watermark(Watermark(10))), barrier(1), Ok(batch(1))];
        let right = vec![Ok(Message::Watermark(Watermark(4))), barrier(1)];
        let (events, result) = run(left, right, true);
        assert!(result.is_ok());
        // The right side delivered barrier 1 first: its end waits behind the barrier until the
        // left side delivers it too (alignment), so event time is the minimum until then;
        // once the right side ended, the left side alone drives it.
        assert_eq!(events, strings(&["W4", "B1", "W10", "L1", "close"]));
    }

    #[test]
    fn the_minimum_watermark_is_passed_on_when_it_advances() {
        let w = |ms| Ok(Message::Watermark(Watermark(ms)));
        let (events, result) = run(vec![w(10), w(30)], vec![w(20), w(25)], false);
        assert!(result.is_ok());
        let marks: Vec<i64> = events.iter().filter_map(|e| e.strip_prefix('W')?.parse().ok()).collect();
        assert!(marks.windows(2).all(|p| p[0] < p[1]), "advancing only: {marks:?}");
        assert!(marks.iter().all(|m| [10, 20, 25, 30].contains(m)), "{marks:?}");
        assert_eq!(events.last().map(String::as_str), Some("close"));
    }

    #[test]
    fn a_key_group_change_from_both_sides_goes_downstream_once() {
        use crate::checkpoint::KeyGroupChange;
        let message = |change: KeyGroupChange| Ok(Message::KeyGroups(Arc::new(change)));
        let one = KeyGroupChange::release("clicks", 4, vec![1]);
        let left = vec![message(one.clone()), Ok(batch(1)), message(KeyGroupChange::release("clicks", 4, vec![2]))];
        let right =
            vec![message(one.twin("views")), Ok(batch(10)), message(KeyGroupChange::release("views", 4, vec![3]))];
        let config = ExecConfig::default();
        let op = Box::new(Recorder(Arc::default()));
        let stream = CoOperatorStream::new("test", stream(left), stream(right), op, true, &config);
        let forwarded: Vec<Vec<u32>> = stream
            .filter_map(|item| match item.expect("no error").msg {
                Message::KeyGroups(change) => Some(change.released.clone()),
                _ => None,
            })
            .collect();
        // The twins of group 1 go once; groups 2 and 3 (one side each) go as they came.
        assert_eq!(forwarded, vec![vec![1], vec![3], vec![2]]);
    }

    #[test]
    fn an_error_on_either_side_ends_the_stream_with_it() {
        let failing = vec![Ok(batch(1)), Err(SabotError::Execution("boom".into()))];
        let (events, result) = run(vec![Ok(batch(7))], failing, false);
        assert!(result.is_err_and(|e| e.to_string().contains("boom")));
        assert!(!events.contains(&"close".to_string()), "{events:?}");
    }
}
