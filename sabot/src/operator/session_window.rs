//! Session windows: per key, rows closer than a gap to each other form one window.

use std::collections::BTreeSet;
use std::sync::Arc;

use arrow::array::{BooleanArray, RecordBatch, UInt32Array};
use arrow::compute::take_record_batch;
use arrow::datatypes::SchemaRef;
use arrow::row::{RowConverter, Rows, SortField};

use super::global_window::WindowAggregation;
use super::watermark_assigner::event_times;
use super::window_aggregate::window_output_schema;
use super::{AggregateMode, AggregateOperator, Operator, Output, Watermark};
use crate::checkpoint::{RestoredState, StateSnapshot};
use crate::expr::{AggExpr, Expr};
use crate::window::{LateData, divert_late_rows};
use crate::{Result, SabotError};

/// Session windows over event time. A row at `t` opens the window `[t, t + gap)`; windows of
/// one key that overlap merge. A session fires when the watermark passes its end; rows that
/// extend a fired session within `allowed_lateness` make it fire again with new totals.
///
/// Sessions are kept per key, each with its rows (in the arriving batches, by reference) and
/// indexed by end: a row joins or merges the sessions of its key as it arrives, and a
/// watermark touches only the sessions it completes or expires. A session's rows are
/// aggregated when it fires (in event-time order, so `first` and `last` follow event time),
/// so every aggregate works, single-phase ones included; memory is proportional to the rows
/// of the sessions that can still change.
pub struct SessionWindowOperator {
    gap: i64,
    time_column: String,
    keys: Vec<Expr>,
    aggregates: Vec<AggExpr>,
    input_schema: SchemaRef,
    output_schema: SchemaRef,
    lateness: i64,
    late: Option<LateData>,
    sessions: Sessions,
    watermark: i64,
}

/// One session of one key.
#[derive(Debug)]
struct Session {
    start: i64,
    /// The latest row's time plus the gap.
    end: i64,
    /// `(event time, segment, row)` of each row, in arrival order.
    rows: Vec<(i64, u64, u32)>,
    /// Changed since it last fired (or never fired).
    dirty: bool,
}

/// An encoded key, shared by the session table and its indices.
type Key = Arc<[u8]>;

/// The sessions of an operator instance and the rows they hold.
///
/// The indices are lazy: an entry records a session's end when it was indexed, and a session
/// whose end grew, that merged away or fired since is checked when its entry comes due
/// (re-indexed or dropped), so that a row extending a session touches no index.
#[derive(Default)]
struct Sessions {
    /// Per encoded key, its sessions by start (they never overlap).
    by_key: hashbrown::HashMap<Key, Vec<Session>>,
    /// `(end, key, start)`: every session that changed since it last fired has an entry at
    /// or before its end.
    to_fire: BTreeSet<(i64, Key, i64)>,
    /// `(end + lateness, key, start)`: every session has an entry at or before the time it
    /// can no longer change.
    to_expire: BTreeSet<(i64, Key, i64)>,
    /// The arriving batches, by id, with how many of their rows sessions still hold.
    segments: hashbrown::HashMap<u64, (RecordBatch, usize)>,
    next_segment: u64,
    /// Rows of the retained segments, and how many of them sessions hold.
    retained: usize,
    held: usize,
}

impl Sessions {
    /// Adds the rows of `batch` (their encoded keys and times) to the sessions of their keys.
    fn insert(&mut self, batch: RecordBatch, keys: &[&[u8]], times: &[i64], gap: i64, lateness: i64) {
        if batch.num_rows() == 0 {
            return;
        }
        let segment = self.next_segment;
        self.next_segment += 1;
        (self.retained, self.held) = (self.retained + batch.num_rows(), self.held + keys.len());
        self.segments.insert(segment, (batch, keys.len()));
        for (row, (&key, &t)) in keys.iter().zip(times).enumerate() {
            let row = (t, segment, row as u32);
            if !self.by_key.contains_key(key) {
                self.by_key.insert(Key::from(key), vec![]);
            }
            let (key, sessions) = self.by_key.get_key_value_mut(key).expect("inserted above");
            // The sessions the row's window [t, t + gap) overlaps: a contiguous run.
            let end = t.saturating_add(gap);
            let first = sessions.partition_point(|s| s.end <= t);
            let last = first + sessions[first..].iter().take_while(|s| s.start < end).count();
            if last == first + 1 && sessions[first].start <= t {
                // The usual case: the row falls in one session and keeps its start.
                let session = &mut sessions[first];
                session.end = session.end.max(end);
                session.rows.push(row);
                if !session.dirty {
                    session.dirty = true;
                    self.to_fire.insert((session.end, key.clone(), session.start));
                }
                continue;
            }
            let mut merged = Session { start: t, end, rows: vec![row], dirty: true };
            for old in sessions.drain(first..last) {
                merged.start = merged.start.min(old.start);
                merged.end = merged.end.max(old.end);
                merged.rows.extend(old.rows);
            }
            self.to_fire.insert((merged.end, key.clone(), merged.start));
            self.to_expire.insert((merged.end.saturating_add(lateness), key.clone(), merged.start));
            sessions.insert(first, merged);
        }
    }

    /// Whether the window `[t, t + gap)` of a row of `key` overlaps one of its sessions.
    fn overlaps(&self, key: &[u8], t: i64, gap: i64) -> bool {
        let Some(sessions) = self.by_key.get(key) else { return false };
        let first = sessions.partition_point(|s| s.end <= t);
        sessions.get(first).is_some_and(|s| s.start < t.saturating_add(gap))
    }

    /// The session of `key` starting at `start`.
    fn get_mut(&mut self, key: &[u8], start: i64) -> Option<&mut Session> {
        self.by_key.get_mut(key).and_then(|sessions| sessions.iter_mut().find(|s| s.start == start))
    }

    /// Takes the sessions to fire at `watermark`: those that changed since they last fired
    /// and end by then. Returns their keys and starts; they are marked as fired.
    fn due(&mut self, watermark: i64) -> Vec<(Key, i64)> {
        let mut due = vec![];
        while let Some(entry) = self.to_fire.first().filter(|(end, _, _)| *end <= watermark).cloned() {
            self.to_fire.remove(&entry);
            let (_, key, start) = entry;
            let Some(session) = self.get_mut(&key, start) else { continue };
            if !session.dirty {
                continue;
            }
            if session.end > watermark {
                let end = session.end;
                self.to_fire.insert((end, key, start));
                continue;
            }
            session.dirty = false;
            due.push((session.end, key, start));
        }
        // In order of end, whatever the index entries' history (restores rebuild it).
        due.sort_unstable();
        due.into_iter().map(|(_, key, start)| (key, start)).collect()
    }

    /// Drops the sessions that can no longer change at `watermark`.
    fn expire(&mut self, watermark: i64, lateness: i64) {
        while let Some(entry) = self.to_expire.first().filter(|(at, _, _)| *at <= watermark).cloned() {
            self.to_expire.remove(&entry);
            let (_, key, start) = entry;
            let Some(session) = self.get_mut(&key, start) else { continue };
            let expires = session.end.saturating_add(lateness);
            if expires > watermark {
                self.to_expire.insert((expires, key, start));
                continue;
            }
            self.remove(&key, start);
        }
        self.compact_if_sparse();
    }

    /// Copies the rows sessions hold into one new segment when the retained batches hold
    /// mostly released rows: a long session must not keep every batch it had a row in.
    fn compact_if_sparse(&mut self) {
        if self.retained <= 2 * self.held + 65_536 {
            return;
        }
        let mut refs: Vec<(u64, u32)> = self
            .by_key
            .values()
            .flatten()
            .flat_map(|s| s.rows.iter().map(|&(_, segment, row)| (segment, row)))
            .collect();
        refs.sort_unstable();
        let ids: Vec<u64> = self.segments.keys().copied().collect();
        let position: hashbrown::HashMap<u64, usize> = ids.iter().enumerate().map(|(i, &id)| (id, i)).collect();
        let batches: Vec<&RecordBatch> = ids.iter().map(|id| &self.segments[id].0).collect();
        let picks: Vec<(usize, usize)> =
            refs.iter().map(|&(segment, row)| (position[&segment], row as usize)).collect();
        let compacted = match arrow::compute::interleave_record_batch(&batches, &picks) {
            Ok(batch) => batch,
            Err(err) => {
                // Keeping the segments is correct, only larger.
                tracing::warn!(error = %err, "could not compact session rows");
                return;
            }
        };
        let segment = self.next_segment;
        self.next_segment += 1;
        for session in self.by_key.values_mut().flatten() {
            for (_, old_segment, row) in &mut session.rows {
                let at = refs.binary_search(&(*old_segment, *row)).expect("a held row");
                (*old_segment, *row) = (segment, at as u32);
            }
        }
        self.segments.clear();
        self.segments.insert(segment, (compacted, refs.len()));
        self.retained = refs.len();
    }

    /// Removes the session of `key` starting at `start`, releasing its rows.
    /// Index entries of the session go stale.
    fn remove(&mut self, key: &[u8], start: i64) -> Option<Session> {
        let sessions = self.by_key.get_mut(key)?;
        let at = sessions.iter().position(|s| s.start == start)?;
        let session = sessions.remove(at);
        if sessions.is_empty() {
            self.by_key.remove(key);
        }
        self.held -= session.rows.len();
        for &(_, segment, _) in &session.rows {
            if let Some((batch, live)) = self.segments.get_mut(&segment) {
                *live -= 1;
                if *live == 0 {
                    self.retained -= batch.num_rows();
                    self.segments.remove(&segment);
                }
            }
        }
        Some(session)
    }

    /// The rows of `sessions` in one batch, each session's rows in event-time order (ties in
    /// arrival order), with every row's session start and end.
    fn gather(&self, sessions: &[&Session], schema: &SchemaRef) -> Result<(RecordBatch, Vec<i64>, Vec<i64>)> {
        // Only the segments these sessions hold rows of.
        let mut batches: Vec<&RecordBatch> = vec![];
        let mut position: hashbrown::HashMap<u64, usize> = hashbrown::HashMap::new();
        let (mut picks, mut starts, mut ends) = (vec![], vec![], vec![]);
        for session in sessions {
            let mut rows = session.rows.clone();
            rows.sort_unstable();
            for (_, segment, row) in rows {
                let at = *position.entry(segment).or_insert_with(|| {
                    batches.push(&self.segments[&segment].0);
                    batches.len() - 1
                });
                picks.push((at, row as usize));
                starts.push(session.start);
                ends.push(session.end);
            }
        }
        if picks.is_empty() {
            return Ok((RecordBatch::new_empty(schema.clone()), starts, ends));
        }
        Ok((arrow::compute::interleave_record_batch(&batches, &picks)?, starts, ends))
    }

    /// Every row sessions hold, in arrival order, with `(key, start, rows)` of the sessions
    /// that fired and did not change since.
    fn saved(&self, schema: &SchemaRef) -> Result<(Vec<RecordBatch>, Emitted)> {
        let mut held: Vec<(u64, u32)> = vec![];
        let mut emitted = vec![];
        for (key, sessions) in &self.by_key {
            for session in sessions {
                held.extend(session.rows.iter().map(|&(_, segment, row)| (segment, row)));
                if !session.dirty {
                    emitted.push((key.to_vec(), session.start, session.rows.len()));
                }
            }
        }
        held.sort_unstable();
        emitted.sort_unstable();
        let mut batches = vec![];
        for segment in held.chunk_by(|a, b| a.0 == b.0) {
            let (batch, _) = &self.segments[&segment[0].0];
            let rows = UInt32Array::from_iter_values(segment.iter().map(|&(_, row)| row));
            batches.push(take_record_batch(batch, &rows)?);
        }
        if batches.is_empty() {
            batches.push(RecordBatch::new_empty(schema.clone()));
        }
        Ok((batches, emitted))
    }

    /// Marks the sessions of `emitted` (`(key, start, rows)`) as fired, if they still hold
    /// that many rows.
    fn mark_emitted(&mut self, emitted: Emitted) {
        for (key, start, rows) in emitted {
            if let Some(session) = self.get_mut(&key, start).filter(|s| s.rows.len() == rows) {
                session.dirty = false;
            }
        }
    }

    /// Drops the sessions of the keys `keep` rejects.
    fn retain_keys(&mut self, keep: &dyn Fn(&[u8]) -> bool) {
        let gone: Vec<(Key, i64)> = self
            .by_key
            .iter()
            .filter(|(key, _)| !keep(key))
            .flat_map(|(key, sessions)| sessions.iter().map(move |s| (key.clone(), s.start)))
            .collect();
        for (key, start) in gone {
            self.remove(&key, start);
        }
    }
}

impl SessionWindowOperator {
    /// Sessions of `gap` ms per `keys` on `time_column`.
    pub fn try_new(
        gap: i64,
        time_column: &str,
        input_schema: SchemaRef,
        keys: Vec<Expr>,
        aggregates: Vec<AggExpr>,
        allowed_lateness: i64,
        late: Option<LateData>,
    ) -> Result<Self> {
        let time_type = input_schema
            .field_with_name(time_column)
            .map_err(|_| SabotError::column_not_found(&input_schema, time_column))?;
        let output_schema = window_output_schema(&input_schema, &keys, &aggregates, time_type.data_type())?;
        AggregateOperator::try_new(AggregateMode::Single, &input_schema, keys.clone(), aggregates.clone())?;
        Ok(SessionWindowOperator {
            gap: gap.max(1),
            time_column: time_column.to_string(),
            keys,
            aggregates,
            input_schema,
            output_schema,
            lateness: allowed_lateness.max(0),
            late,
            sessions: Sessions::default(),
            watermark: i64::MIN,
        })
    }

    /// Adds the rows of `batch` to the sessions of their keys.
    /// The encoded keys of the rows of `batch` (`None` without keys: all rows have the empty key).
    fn key_rows(&self, batch: &RecordBatch) -> Result<Option<Rows>> {
        if self.keys.is_empty() {
            return Ok(None);
        }
        let arrays = self.keys.iter().map(|k| k.evaluate(batch)).collect::<Result<Vec<_>>>()?;
        let converter = RowConverter::new(arrays.iter().map(|a| SortField::new(a.data_type().clone())).collect())?;
        Ok(Some(converter.convert_columns(&arrays)?))
    }

    /// Adds the rows of `batch` to the sessions of their keys; with `check_late`, rows that
    /// are late go to the late-data output instead.
    fn add_rows(&mut self, batch: RecordBatch, check_late: bool) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let times = event_times(&batch, &self.time_column)?;
        let key_rows = self.key_rows(&batch)?;
        let mut keys: Vec<&[u8]> = match &key_rows {
            Some(rows) => rows.iter().map(|r| r.data()).collect(),
            None => vec![&[][..]; batch.num_rows()],
        };
        let mut times = times.values().to_vec();
        let mut batch = batch;
        if check_late {
            // Late: the session the row would be part of can no longer change (as Flink
            // decides for merging windows). Its own window [t, t + gap) expired, and it
            // overlaps no kept session of its key (every kept session can still change).
            let (gap, lateness, watermark) = (self.gap, self.lateness, self.watermark);
            let late: BooleanArray = keys
                .iter()
                .zip(&times)
                .map(|(key, &t)| {
                    Some(
                        t.saturating_add(gap).saturating_add(lateness) <= watermark
                            && !self.sessions.overlaps(key, t, gap),
                    )
                })
                .collect();
            if late.true_count() > 0 {
                batch = divert_late_rows(batch, &late, self.late.as_ref())?;
                let on_time: Vec<usize> = (0..keys.len()).filter(|&i| !late.value(i)).collect();
                keys = on_time.iter().map(|&i| keys[i]).collect();
                times = on_time.iter().map(|&i| times[i]).collect();
            }
        }
        self.sessions.insert(batch, &keys, &times, self.gap, self.lateness);
        Ok(())
    }

    /// Emits the changed sessions the watermark completed, then drops those that can no
    /// longer change.
    fn advance(&mut self, out: &mut Output) -> Result<()> {
        self.fire_due(out)?;
        self.sessions.expire(self.watermark, self.lateness);
        Ok(())
    }

    /// Emits the sessions that changed since they last fired and end by the watermark.
    fn fire_due(&mut self, out: &mut Output) -> Result<()> {
        let due = self.sessions.due(self.watermark);
        if !due.is_empty() {
            let sessions: Vec<&Session> = due
                .iter()
                .filter_map(|(key, start)| {
                    self.sessions.by_key.get(key).and_then(|s| s.iter().find(|s| s.start == *start))
                })
                .collect();
            let (rows, starts, ends) = self.sessions.gather(&sessions, &self.input_schema)?;
            let aggregation = WindowAggregation {
                input_schema: &self.input_schema,
                output_schema: &self.output_schema,
                keys: &self.keys,
                aggregates: &self.aggregates,
            };
            aggregation.emit_many(rows, starts, ends, out)?;
        }
        Ok(())
    }
}

impl Operator for SessionWindowOperator {
    fn name(&self) -> &str {
        "session_window"
    }

    /// Late rows within the allowed lateness that change a session the watermark already
    /// passed make it fire again at once, as Flink's event-time trigger does.
    fn process_batch(&mut self, batch: RecordBatch, out: &mut Output) -> Result<()> {
        self.add_rows(batch, true)?;
        self.fire_due(out)
    }

    fn handle_watermark(&mut self, watermark: Watermark, out: &mut Output) -> Result<()> {
        if watermark.0 <= self.watermark {
            return Ok(());
        }
        self.watermark = watermark.0;
        self.advance(out)?;
        out.emit_watermark(watermark);
        Ok(())
    }

    fn on_close(&mut self, out: &mut Output) -> Result<()> {
        self.watermark = i64::MAX;
        self.advance(out)
    }

    /// Saves the rows of the sessions that can still change (Arrow IPC, in arrival order),
    /// the watermark, and the row counts of the sessions that fired and did not change since
    /// (so that only changed ones fire again).
    fn snapshot_state(&mut self, snapshot: &mut StateSnapshot) -> Result<()> {
        let (pending, emitted) = self.sessions.saved(&self.input_schema)?;
        snapshot.put_batches("pending", &self.input_schema, &pending)?;
        snapshot.put_value("session", &SessionState { watermark: self.watermark, emitted })
    }

    fn follows_key_groups(&self) -> bool {
        !self.keys.is_empty()
    }

    /// Drops the sessions of released key groups; adds those of acquired ones that the
    /// exchange routes here from the other worker's snapshots.
    fn hand_over_key_groups(&mut self, handover: &crate::checkpoint::KeyGroupHandover) -> Result<()> {
        if !handover.released.is_empty() {
            self.sessions.retain_keys(&|key| !handover.releases(key));
        }
        let (name, types) = (self.name().to_string(), super::key_types(&self.keys, &self.input_schema)?);
        super::merge_acquired(handover, &name, &types, |snapshot, keep| self.merge_snapshot(snapshot, keep).map(drop))
    }

    /// Keeps the sessions of every old instance whose keys the hash exchange now routes to
    /// this instance; the watermark is the lowest of the old ones'.
    fn restore_rescaled_state(&mut self, restored: &RestoredState) -> Result<()> {
        let (name, types) = (self.name().to_string(), super::key_types(&self.keys, &self.input_schema)?);
        let saved = super::merge_rescaled(restored, &name, &types, |old, keep| self.merge_snapshot(old, keep))?;
        self.watermark = saved.into_iter().flatten().min().unwrap_or(i64::MIN);
        Ok(())
    }

    fn restore_state(&mut self, restored: &RestoredState) -> Result<()> {
        self.sessions = Sessions::default();
        if let Some(watermark) = self.merge_snapshot(restored, &|_| true)? {
            self.watermark = watermark;
        }
        Ok(())
    }
}

impl SessionWindowOperator {
    /// Adds the sessions whose keys `keep` accepts from a snapshot of an instance of this
    /// operator: their rows, and which of them fired. Returns the snapshot's watermark.
    fn merge_snapshot(&mut self, snapshot: &RestoredState, keep: &dyn Fn(&[u8]) -> bool) -> Result<Option<i64>> {
        let Some(state) = snapshot.value::<SessionState>("session")? else { return Ok(None) };
        for batch in snapshot.batches("pending")? {
            let kept = super::filter_rows_by_key(&batch, &self.keys, keep)?;
            self.add_rows(kept, false)?;
        }
        self.sessions.mark_emitted(state.emitted.into_iter().filter(|(key, _, _)| keep(key)).collect());
        Ok(Some(state.watermark))
    }
}

/// What a session window saves besides its rows.
#[derive(serde::Serialize, serde::Deserialize)]
struct SessionState {
    watermark: i64,
    emitted: Emitted,
}

/// `(encoded key, session start, rows emitted)` of the sessions that fired and did not
/// change since.
type Emitted = Vec<(Vec<u8>, i64, usize)>;

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};

    use super::*;
    use crate::expr::{col, count_all};
    use crate::testing::OperatorHarness;

    /// A key whose session never ends holds one row of every batch; once the other keys'
    /// sessions expired, the batches are compacted to the rows sessions still hold.
    #[test]
    fn a_long_session_does_not_keep_every_batch() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Utf8, false),
            Field::new("ts", DataType::Int64, false),
        ]));
        let op = SessionWindowOperator::try_new(50, "ts", schema.clone(), vec![col("k")], vec![count_all()], 0, None)
            .unwrap();
        let mut h = OperatorHarness::new(op);
        for round in 0..40i64 {
            // "busy" every round (one endless session), 4,999 one-off keys that expire.
            let keys: Vec<String> =
                std::iter::once("busy".to_string()).chain((0..4_999).map(|i| format!("k{round}-{i}"))).collect();
            let ts = Int64Array::from(vec![round * 10; keys.len()]);
            let batch =
                RecordBatch::try_new(schema.clone(), vec![Arc::new(StringArray::from(keys)), Arc::new(ts)]).unwrap();
            h.process(batch).unwrap();
            h.watermark(round * 10 - 1).unwrap();
        }
        let sessions = &h.operator_mut().sessions;
        assert!(sessions.held < 8 * 5_000, "{} rows held: about six rounds of sessions are open", sessions.held);
        assert!(
            sessions.retained <= 2 * sessions.held + 65_536,
            "{} rows retained for {} held",
            sessions.retained,
            sessions.held
        );
        h.close().unwrap();
        let busy: i64 = h
            .take_output()
            .iter()
            .flat_map(|b| {
                let keys = b.column(0).as_any().downcast_ref::<StringArray>().unwrap().clone();
                let counts = b.column_by_name("count").unwrap().as_any().downcast_ref::<Int64Array>().unwrap().clone();
                (0..b.num_rows()).filter(move |&i| keys.value(i) == "busy").map(move |i| counts.value(i))
            })
            .sum();
        assert_eq!(busy, 40, "the long session kept all its rows through compactions");
    }
}
