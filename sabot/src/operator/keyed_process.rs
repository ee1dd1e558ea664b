//! The general escape hatch: a user function per row with keyed state and timers.

use std::collections::BTreeSet;
use std::marker::PhantomData;

use arrow::array::RecordBatch;
use arrow::row::{RowConverter, SortField};

use super::watermark_assigner::event_times;
use super::{Operator, Output, Watermark};
use crate::expr::Expr;
use crate::state::{KeyedStateStore, StateBackend};
use crate::{Record, Result};

/// A function over the rows of a keyed stream, with keyed state and timers, like Flink's
/// `KeyedProcessFunction`. One instance runs per parallel partition; state and timers are
/// scoped to the key of the row (or timer) being processed.
///
/// ```
/// use sabot::prelude::*;
/// use sabot::operator::{KeyedProcessFunction, ProcessContext};
/// use sabot::state::{ValueState, ValueStateDescriptor};
///
/// #[derive(Record)]
/// struct Click { user: String }
/// #[derive(Record)]
/// struct Count { user: String, clicks: i64 }
///
/// #[derive(Default)]
/// struct CountClicks { count: Option<ValueState<i64>> }
///
/// impl KeyedProcessFunction for CountClicks {
///     type In = Click;
///     type Out = Count;
///     fn open(&mut self, ctx: &mut ProcessContext<'_>) -> sabot::Result<()> {
///         self.count = Some(ctx.state().value_state(&ValueStateDescriptor::new("clicks"))?);
///         Ok(())
///     }
///     fn process_element(&mut self, click: ClickView<'_>, ctx: &mut ProcessContext<'_>, out: &mut Vec<Count>) -> sabot::Result<()> {
///         let state = self.count.expect("opened");
///         let clicks = state.value(ctx.state())?.unwrap_or(0) + 1;
///         state.update(ctx.state(), clicks)?;
///         out.push(Count { user: click.user.to_string(), clicks });
///         Ok(())
///     }
/// }
/// ```
pub trait KeyedProcessFunction: Send + 'static {
    /// The input record type.
    type In: Record;
    /// The output record type.
    type Out: Record;

    /// Registers state; called once per instance before any row.
    fn open(&mut self, _ctx: &mut ProcessContext<'_>) -> Result<()> {
        Ok(())
    }

    /// Processes one row; state accessed through `ctx` belongs to the row's key.
    fn process_element(
        &mut self,
        row: <Self::In as Record>::View<'_>,
        ctx: &mut ProcessContext<'_>,
        out: &mut Vec<Self::Out>,
    ) -> Result<()>;

    /// Called when a timer registered for the current key fires.
    fn on_timer(&mut self, _timestamp: i64, _ctx: &mut ProcessContext<'_>, _out: &mut Vec<Self::Out>) -> Result<()> {
        Ok(())
    }
}

/// Timers of one operator instance, per key, ordered by time then key.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct Timers {
    event_time: BTreeSet<(i64, Box<[u8]>)>,
    processing_time: BTreeSet<(i64, Box<[u8]>)>,
}

impl Timers {
    /// Keeps the timers of the keys `keep` accepts.
    fn retain_keys(&mut self, keep: impl Fn(&[u8]) -> bool) {
        self.event_time.retain(|(_, key)| keep(key));
        self.processing_time.retain(|(_, key)| keep(key));
    }

    /// Adds the timers of `other` whose keys `keep` accepts.
    fn extend_keys(&mut self, other: Timers, keep: impl Fn(&[u8]) -> bool) {
        self.event_time.extend(other.event_time.into_iter().filter(|(_, key)| keep(key)));
        self.processing_time.extend(other.processing_time.into_iter().filter(|(_, key)| keep(key)));
    }
}

/// What a [`KeyedProcessFunction`] sees besides the row: keyed state, timers, time.
pub struct ProcessContext<'a> {
    state: &'a mut KeyedStateStore,
    timers: &'a mut Timers,
    key: &'a [u8],
    timestamp: Option<i64>,
    watermark: i64,
}

impl ProcessContext<'_> {
    /// The keyed state store, positioned on the current key.
    pub fn state(&mut self) -> &mut KeyedStateStore {
        self.state
    }

    /// The encoded key of the current row or timer.
    pub fn current_key(&self) -> &[u8] {
        self.key
    }

    /// The event time of the current row (ms), when the input record has an event-time field.
    pub fn timestamp(&self) -> Option<i64> {
        self.timestamp
    }

    /// The current watermark (ms); `i64::MIN` before the first one.
    pub fn watermark(&self) -> i64 {
        self.watermark
    }

    /// The current processing time (ms), from the state store's clock.
    pub fn processing_time(&self) -> i64 {
        self.state.clock().now_ms() as i64
    }

    /// Fires [`KeyedProcessFunction::on_timer`] for the current key once the watermark reaches `time`.
    pub fn register_event_time_timer(&mut self, time: i64) {
        self.timers.event_time.insert((time, self.key.into()));
    }

    /// Removes an event-time timer of the current key.
    pub fn delete_event_time_timer(&mut self, time: i64) {
        self.timers.event_time.remove(&(time, Box::from(self.key)));
    }

    /// Fires [`KeyedProcessFunction::on_timer`] for the current key once processing time reaches
    /// `time`. Processing-time timers are checked whenever the operator receives a batch or a
    /// watermark.
    pub fn register_processing_time_timer(&mut self, time: i64) {
        self.timers.processing_time.insert((time, self.key.into()));
    }

    /// Removes a processing-time timer of the current key.
    pub fn delete_processing_time_timer(&mut self, time: i64) {
        self.timers.processing_time.remove(&(time, Box::from(self.key)));
    }
}

/// Whether a key (its encoded columns) belongs to this instance.
type KeyRouter = crate::state::KeyPredicate;

use super::key_router;

/// Runs a [`KeyedProcessFunction`] over a keyed stream.
pub struct KeyedProcessOperator<F: KeyedProcessFunction> {
    name: String,
    function: F,
    keys: Vec<Expr>,
    backend: StateBackend,
    store: Option<KeyedStateStore>,
    clock: Option<crate::state::StateClock>,
    timers: Timers,
    watermark: i64,
    output: Vec<F::Out>,
    /// The keyed state to reload in `on_start`, when a checkpoint is restored.
    restore_from: Option<std::path::PathBuf>,
    /// Restoring with another parallelism: every old instance's keyed state, and which keys
    /// this instance keeps.
    rescaled: Option<(Vec<crate::state::SnapshotSource>, KeyRouter)>,
    _types: PhantomData<fn(F::In)>,
}

impl<F: KeyedProcessFunction> KeyedProcessOperator<F> {
    /// Runs `function` keyed by `keys`, with state in `backend` under the operator id `name`
    /// (unique per parallel instance).
    pub fn new(name: String, function: F, keys: Vec<Expr>, backend: StateBackend) -> Self {
        KeyedProcessOperator {
            name,
            function,
            keys,
            backend,
            store: None,
            clock: None,
            timers: Timers::default(),
            watermark: i64::MIN,
            output: vec![],
            restore_from: None,
            rescaled: None,
            _types: PhantomData,
        }
    }

    /// Reads processing time (timers, state TTL) from `clock` instead of the system clock,
    /// so tests control it.
    pub fn with_clock(mut self, clock: impl Into<crate::state::StateClock>) -> Self {
        self.clock = Some(clock.into());
        self
    }

    fn emit(&mut self, out: &mut Output) {
        if !self.output.is_empty() {
            out.emit(F::Out::to_batch(&self.output));
            self.output.clear();
        }
    }

    fn fire_timers(&mut self, event_time_until: i64, out: &mut Output) -> Result<()> {
        let store = self.store.as_mut().expect("started");
        let now = store.clock().now_ms() as i64;
        loop {
            let next = match (self.timers.event_time.first(), self.timers.processing_time.first()) {
                (Some((t, _)), _) if *t <= event_time_until => self.timers.event_time.pop_first(),
                (_, Some((t, _))) if *t <= now => self.timers.processing_time.pop_first(),
                _ => None,
            };
            let Some((time, key)) = next else { break };
            store.set_current_key(&key);
            let mut ctx = ProcessContext {
                state: store,
                timers: &mut self.timers,
                key: &key,
                timestamp: Some(time),
                watermark: self.watermark,
            };
            self.function.on_timer(time, &mut ctx, &mut self.output)?;
        }
        self.emit(out);
        Ok(())
    }

    /// Adds the timers of the keys `keep` accepts from a snapshot of an instance of this
    /// operator; returns where that snapshot's keyed state is, to copy the same keys from.
    fn merge_timers(
        &mut self,
        snapshot: &crate::checkpoint::RestoredState,
        keep: &dyn Fn(&[u8]) -> bool,
    ) -> Result<Option<crate::state::SnapshotSource>> {
        let timers: Timers = snapshot.value("timers")?.unwrap_or_default();
        self.timers.extend_keys(timers, keep);
        snapshot_source(snapshot, &self.name)
    }
}

/// The keyed state in `snapshot`, taken by an instance of the operator `name`, if it saved any.
fn snapshot_source(
    snapshot: &crate::checkpoint::RestoredState,
    name: &str,
) -> Result<Option<crate::state::SnapshotSource>> {
    let Some(dir) = snapshot.directory("keyed")? else { return Ok(None) };
    // Snapshots from before the id was recorded: instances were named like this one.
    let operator = snapshot.value::<String>("operator")?.unwrap_or_else(|| name.to_string());
    Ok(Some(crate::state::SnapshotSource { dir, operator }))
}

impl<F: KeyedProcessFunction> Operator for KeyedProcessOperator<F> {
    fn name(&self) -> &str {
        &self.name
    }

    /// Saves keyed state (every registered state), timers and the watermark.
    fn snapshot_state(&mut self, snapshot: &mut crate::checkpoint::StateSnapshot) -> Result<()> {
        let store = self.store.as_mut().expect("on_start ran");
        store.snapshot_into(snapshot, "keyed")?;
        // Instances that take keys from this snapshot (rescaling, key groups) need the id
        // its RocksDB column families are named after.
        snapshot.put_value("operator", &self.name)?;
        snapshot.put_value("timers", &self.timers)?;
        snapshot.put_value("watermark", &self.watermark)
    }

    fn restore_state(&mut self, restored: &crate::checkpoint::RestoredState) -> Result<()> {
        self.restore_from = restored.directory("keyed")?;
        self.timers = restored.value("timers")?.unwrap_or_default();
        self.watermark = restored.value("watermark")?.unwrap_or(i64::MIN);
        Ok(())
    }

    /// Keeps the keys (state and timers) of every old instance that the hash exchange now
    /// routes to this one; the watermark is the lowest of the old instances'.
    fn restore_rescaled_state(&mut self, restored: &crate::checkpoint::RestoredState) -> Result<()> {
        let rescale = restored.rescale().expect("called for rescaled state");
        let keep = key_router(&self.keys, &F::In::schema(), rescale.to, rescale.partition)?;
        let mut watermark: Option<i64> = None;
        let mut dirs = vec![];
        for dir in &rescale.snapshots {
            let old = crate::checkpoint::RestoredState::new(restored.checkpoint_id(), dir);
            dirs.extend(self.merge_timers(&old, &*keep)?);
            let w: i64 = old.value("watermark")?.unwrap_or(i64::MIN);
            watermark = Some(watermark.map_or(w, |m| m.min(w)));
        }
        self.watermark = watermark.unwrap_or(i64::MIN);
        self.rescaled = Some((dirs, keep));
        Ok(())
    }

    fn follows_key_groups(&self) -> bool {
        !self.keys.is_empty()
    }

    /// Drops the keys (state and timers) of released key groups; loads those of acquired
    /// ones that the hash exchange routes to this instance, from every snapshot the operator
    /// took in the checkpoint holding them.
    fn hand_over_key_groups(&mut self, handover: &crate::checkpoint::KeyGroupHandover) -> Result<()> {
        if !handover.released.is_empty() {
            let store = self.store.as_mut().expect("on_start ran");
            let keep = |key: &[u8]| !handover.releases(key);
            let dropped = store.retain_keys(&keep)?;
            self.timers.retain_keys(keep);
            tracing::info!(operator = %self.name, groups = ?handover.released, entries = dropped, "released key groups");
        }
        let (instance, parallelism) = handover.instance;
        let routed_here = key_router(&self.keys, &F::In::schema(), parallelism, instance)?;
        for (acquired, snapshots) in &handover.acquired {
            let (groups, partitions, routed_here) = (acquired.clone(), handover.partitions, routed_here.clone());
            let keep: KeyRouter = std::sync::Arc::new(move |key: &[u8]| {
                groups.contains(&crate::checkpoint::key_group(key, partitions)) && routed_here(key)
            });
            let mut dirs = vec![];
            for snapshot in snapshots {
                dirs.extend(self.merge_timers(snapshot, &*keep)?);
            }
            self.store.as_mut().expect("on_start ran").import_keys(&dirs, &*keep)?;
            tracing::info!(operator = %self.name, groups = ?acquired, snapshots = dirs.len(), "acquired key groups");
        }
        Ok(())
    }

    fn on_start(&mut self) -> Result<()> {
        let mut store = match (&self.restore_from, self.rescaled.take()) {
            (_, Some((dirs, keep))) => KeyedStateStore::restore_rescaled(&self.backend, &self.name, dirs, keep)?,
            (Some(dir), None) => KeyedStateStore::restore(&self.backend, &self.name, dir)?,
            (None, None) => KeyedStateStore::open(&self.backend, &self.name)?,
        };
        if let Some(clock) = self.clock.clone() {
            store = store.with_clock(clock);
        }
        let mut ctx = ProcessContext {
            state: &mut store,
            timers: &mut self.timers,
            key: &[],
            timestamp: None,
            watermark: self.watermark,
        };
        self.function.open(&mut ctx)?;
        store.finish_restore()?;
        self.store = Some(store);
        Ok(())
    }

    fn process_batch(&mut self, batch: RecordBatch, out: &mut Output) -> Result<()> {
        let key_arrays = self.keys.iter().map(|k| k.evaluate(&batch)).collect::<Result<Vec<_>>>()?;
        let converter = RowConverter::new(key_arrays.iter().map(|a| SortField::new(a.data_type().clone())).collect())?;
        let key_rows = converter.convert_columns(&key_arrays)?;
        let times = match F::In::event_time_column() {
            Some(column) => Some(event_times(&batch, column)?),
            None => None,
        };
        let arrays = F::In::arrays(&batch)?;
        let store = self.store.as_mut().expect("on_start ran");
        for row in 0..batch.num_rows() {
            let key = if self.keys.is_empty() { &[][..] } else { key_rows.row(row).data() };
            store.set_current_key(key);
            let mut ctx = ProcessContext {
                state: store,
                timers: &mut self.timers,
                key,
                timestamp: times.as_ref().map(|t| t.value(row)),
                watermark: self.watermark,
            };
            self.function.process_element(F::In::view(&arrays, row), &mut ctx, &mut self.output)?;
        }
        self.emit(out);
        self.fire_timers(self.watermark, out)
    }

    /// Fires due event-time timers, and processing-time timers whatever the watermark: the
    /// exchange in front of this operator repeats its watermark as a heartbeat when no data
    /// comes (`ExecConfig::timer_interval`), so processing-time timers fire on an idle stream.
    fn handle_watermark(&mut self, watermark: Watermark, out: &mut Output) -> Result<()> {
        let advanced = watermark.0 > self.watermark;
        self.watermark = self.watermark.max(watermark.0);
        self.fire_timers(self.watermark, out)?;
        if advanced {
            out.emit_watermark(watermark);
        }
        Ok(())
    }

    fn on_close(&mut self, out: &mut Output) -> Result<()> {
        // End of a bounded input: event time is complete, so every event-time timer fires.
        self.watermark = i64::MAX;
        self.fire_timers(i64::MAX, out)?;
        if let Some(store) = self.store.as_mut() {
            store.flush()?;
        }
        Ok(())
    }
}
