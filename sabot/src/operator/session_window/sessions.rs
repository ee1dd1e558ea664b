//! The sessions of a session-window instance: per key, its sessions with their rows, and lazy
//! indices of when each fires and expires. Rows stay in the arriving batches (segments) on
//! the heap; with a state backend they are moved to it in bulk ([`RowLists`]) whenever the
//! heap holds too many, so that the rows of open sessions can outgrow memory. The sessions
//! themselves (bounds and counts) and their indices stay on the heap, as Flink's heap timers.

use std::collections::BTreeSet;
use std::sync::Arc;

use arrow::array::{RecordBatch, UInt32Array};
use arrow::compute::take_record_batch;
use arrow::datatypes::SchemaRef;

use crate::Result;
use crate::checkpoint::{RestoredState, StateSnapshot};
use crate::operator::row_lists::RowLists;

/// Rows the heap holds before they are moved to the state backend (when there is one).
const DEFAULT_BUFFERED_ROWS: usize = 100_000;

/// One session of one key.
#[derive(Debug)]
pub(super) struct Session {
    pub(super) start: i64,
    /// The latest row's time plus the gap.
    pub(super) end: i64,
    /// `(event time, segment, row)` of each row on the heap, in arrival order.
    rows: Vec<(i64, u64, u32)>,
    /// Rows moved to the state backend (they arrived before the heap's rows).
    stored: usize,
    /// Changed since it last fired (or never fired).
    dirty: bool,
}

impl Session {
    fn rows(&self) -> usize {
        self.rows.len() + self.stored
    }
}

/// An encoded key, shared by the session table and its indices.
pub(super) type Key = Arc<[u8]>;

/// `(encoded key, session start, rows emitted)` of the sessions that fired and did not
/// change since.
pub(super) type Emitted = Vec<(Vec<u8>, i64, usize)>;

/// A session as a snapshot of stored sessions records it: key, start, end, rows, whether it
/// changed since it last fired.
pub(super) type SavedSession = (Vec<u8>, i64, i64, usize, bool);

/// The sessions of an operator instance and the rows they hold.
///
/// The indices are lazy: an entry records a session's end when it was indexed, and a session
/// whose end grew, that merged away or fired since is checked when its entry comes due
/// (re-indexed or dropped), so that a row extending a session touches no index.
#[derive(Default)]
pub(super) struct Sessions {
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
    pub(super) retained: usize,
    pub(super) held: usize,
    /// Where rows go when the heap holds more than `buffer_limit` (none: they stay).
    store: Option<RowLists>,
    buffer_limit: usize,
}

impl Sessions {
    /// Sessions whose rows move to `store` when the heap holds too many.
    pub(super) fn with_store(store: RowLists) -> Self {
        Sessions { store: Some(store), buffer_limit: DEFAULT_BUFFERED_ROWS, ..Sessions::default() }
    }

    /// Holds at most about `rows` rows on the heap when there is a store.
    pub(super) fn limit_buffer(&mut self, rows: usize) {
        self.buffer_limit = rows;
    }

    /// Empty sessions with the same store (emptied) and limits.
    pub(super) fn emptied(&mut self) -> Result<Self> {
        let mut store = self.store.take();
        if let Some(store) = store.as_mut() {
            store.clear()?;
        }
        Ok(Sessions { store, buffer_limit: self.buffer_limit, ..Sessions::default() })
    }

    /// The keys with rows in the store (none without one).
    #[cfg(all(test, feature = "rocksdb"))]
    pub(super) fn stored_entries(&mut self) -> Result<usize> {
        self.store.as_mut().map_or(Ok(0), RowLists::stored_entries)
    }

    /// Whether rows move to a state backend.
    pub(super) fn is_stored(&self) -> bool {
        self.store.is_some()
    }

    /// Adds the rows of `batch` (their encoded keys and times) to the sessions of their keys.
    pub(super) fn insert(
        &mut self,
        batch: RecordBatch,
        keys: &[&[u8]],
        times: &[i64],
        gap: i64,
        lateness: i64,
    ) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
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
            let mut merged = Session { start: t, end, rows: vec![row], stored: 0, dirty: true };
            for old in sessions.drain(first..last) {
                merged.start = merged.start.min(old.start);
                merged.end = merged.end.max(old.end);
                merged.rows.extend(old.rows);
                merged.stored += old.stored;
            }
            self.to_fire.insert((merged.end, key.clone(), merged.start));
            self.to_expire.insert((merged.end.saturating_add(lateness), key.clone(), merged.start));
            sessions.insert(first, merged);
        }
        if self.store.is_some() && self.held > self.buffer_limit {
            self.flush()?;
        }
        Ok(())
    }

    /// Moves every row on the heap to the store (if any), in arrival order per key.
    pub(super) fn flush(&mut self) -> Result<()> {
        let Some(store) = self.store.as_mut() else { return Ok(()) };
        if self.held == 0 {
            return Ok(());
        }
        let mut appended = Vec::with_capacity(self.by_key.len());
        for (key, sessions) in &mut self.by_key {
            let mut rows: Vec<(u64, u32, i64)> = vec![];
            for session in sessions.iter_mut() {
                session.stored += session.rows.len();
                rows.extend(session.rows.drain(..).map(|(t, segment, row)| (segment, row, t)));
            }
            if !rows.is_empty() {
                rows.sort_unstable();
                appended.push((key.clone(), rows));
            }
        }
        store.append(&appended, |id| self.segments.get(&id).map(|(batch, _)| batch))?;
        // Every held row is now in the store: no session points into a segment.
        self.segments.clear();
        (self.retained, self.held) = (0, 0);
        Ok(())
    }

    /// Whether the window `[t, t + gap)` of a row of `key` overlaps one of its sessions.
    pub(super) fn overlaps(&self, key: &[u8], t: i64, gap: i64) -> bool {
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
    pub(super) fn due(&mut self, watermark: i64) -> Vec<(Key, i64)> {
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
    pub(super) fn expire(&mut self, watermark: i64, lateness: i64) -> Result<()> {
        let mut gone = vec![];
        while let Some(entry) = self.to_expire.first().filter(|(at, _, _)| *at <= watermark).cloned() {
            self.to_expire.remove(&entry);
            let (_, key, start) = entry;
            let Some(session) = self.get_mut(&key, start) else { continue };
            let expires = session.end.saturating_add(lateness);
            if expires > watermark {
                self.to_expire.insert((expires, key, start));
                continue;
            }
            if let Some(session) = self.remove(&key, start)
                && session.stored > 0
            {
                gone.push((key, session.start, session.end));
            }
        }
        match self.store.as_mut() {
            Some(store) => {
                store.delete(&gone)?;
                // Long sessions pin the batches they had a row in: move the held rows out.
                if self.is_sparse() {
                    self.flush()?;
                }
            }
            None => self.compact_if_sparse(),
        }
        Ok(())
    }

    /// Whether the retained batches hold mostly released rows.
    fn is_sparse(&self) -> bool {
        self.retained > 2 * self.held + 65_536
    }

    /// Copies the rows sessions hold into one new segment when the retained batches hold
    /// mostly released rows: a long session must not keep every batch it had a row in.
    fn compact_if_sparse(&mut self) {
        if !self.is_sparse() {
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

    /// Removes the session of `key` starting at `start`, releasing its rows on the heap (the
    /// caller deletes its stored rows). Index entries of the session go stale.
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

    /// The rows of the sessions `due` (keys and starts) in one batch, each session's rows in
    /// event-time order (ties in arrival order), with every row's session start and end.
    pub(super) fn gather(
        &mut self,
        due: &[(Key, i64)],
        schema: &SchemaRef,
    ) -> Result<(RecordBatch, Vec<i64>, Vec<i64>)> {
        let sessions: Vec<(&Key, &Session)> = due
            .iter()
            .filter_map(|(key, start)| {
                self.by_key.get(key).and_then(|s| s.iter().find(|s| s.start == *start)).map(|s| (key, s))
            })
            .collect();
        // The sessions' stored rows, decoded into one batch: source 0.
        let with_stored: Vec<(&[u8], i64, i64)> =
            sessions.iter().filter(|(_, s)| s.stored > 0).map(|(k, s)| (k.as_ref(), s.start, s.end)).collect();
        let (stored_rows, stored_times) = match self.store.as_mut() {
            Some(store) if !with_stored.is_empty() => store.read(&with_stored)?,
            _ => (RecordBatch::new_empty(schema.clone()), vec![]),
        };
        let mut stored_times = stored_times.into_iter();
        let mut batches: Vec<&RecordBatch> = vec![&stored_rows];
        let mut position: hashbrown::HashMap<u64, usize> = hashbrown::HashMap::new();
        let (mut picks, mut starts, mut ends) = (vec![], vec![], vec![]);
        for (_, session) in &sessions {
            // (time, stored first, arrival) → (source, row): stored rows arrived first.
            let mut rows: Vec<(i64, u8, u64, u32)> = vec![];
            if session.stored > 0
                && let Some((offset, times)) = stored_times.next()
            {
                rows.extend(times.iter().enumerate().map(|(i, &t)| (t, 0, 0, (offset + i) as u32)));
            }
            rows.extend(session.rows.iter().map(|&(t, segment, row)| (t, 1, segment, row)));
            rows.sort_unstable();
            for (_, phase, segment, row) in rows {
                let at = if phase == 0 {
                    0
                } else {
                    *position.entry(segment).or_insert_with(|| {
                        batches.push(&self.segments[&segment].0);
                        batches.len() - 1
                    })
                };
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

    /// Every row sessions hold on the heap, in arrival order, with `(key, start, rows)` of
    /// the sessions that fired and did not change since.
    pub(super) fn saved(&self, schema: &SchemaRef) -> Result<(Vec<RecordBatch>, Emitted)> {
        let mut held: Vec<(u64, u32)> = vec![];
        let mut emitted = vec![];
        for (key, sessions) in &self.by_key {
            for session in sessions {
                held.extend(session.rows.iter().map(|&(_, segment, row)| (segment, row)));
                if !session.dirty {
                    emitted.push((key.to_vec(), session.start, session.rows()));
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
    pub(super) fn mark_emitted(&mut self, emitted: Emitted) {
        for (key, start, rows) in emitted {
            if let Some(session) = self.get_mut(&key, start).filter(|s| s.rows() == rows) {
                session.dirty = false;
            }
        }
    }

    /// Drops the sessions of the keys `keep` rejects.
    pub(super) fn retain_keys(&mut self, keep: &(dyn Fn(&[u8]) -> bool + Sync)) -> Result<()> {
        let gone: Vec<(Key, i64)> = self
            .by_key
            .iter()
            .filter(|(key, _)| !keep(key))
            .flat_map(|(key, sessions)| sessions.iter().map(move |s| (key.clone(), s.start)))
            .collect();
        for (key, start) in gone {
            self.remove(&key, start);
        }
        match self.store.as_mut() {
            Some(store) => store.retain_keys(keep),
            None => Ok(()),
        }
    }

    /// Stored sessions: moves every row to the store, saves a checkpoint of it, and returns
    /// the sessions to record with it (`None` without a store).
    pub(super) fn snapshot_stored(&mut self, snapshot: &mut StateSnapshot) -> Result<Option<Vec<SavedSession>>> {
        self.flush()?;
        let Some(store) = self.store.as_mut() else { return Ok(None) };
        store.snapshot(snapshot)?;
        let mut saved: Vec<SavedSession> = self
            .by_key
            .iter()
            .flat_map(|(key, sessions)| sessions.iter().map(|s| (key.to_vec(), s.start, s.end, s.stored, s.dirty)))
            .collect();
        saved.sort_unstable();
        Ok(Some(saved))
    }

    /// Stored sessions: adds the sessions whose keys `keep` accepts from a snapshot
    /// [`snapshot_stored`](Self::snapshot_stored) took, with their rows.
    pub(super) fn merge_stored(
        &mut self,
        restored: &RestoredState,
        saved: Vec<SavedSession>,
        lateness: i64,
        keep: &dyn Fn(&[u8]) -> bool,
    ) -> Result<()> {
        let Some(store) = self.store.as_mut() else {
            return Err(crate::SabotError::State {
                state: "session_window".into(),
                message: "the checkpoint holds state of the rocksdb state backend; restore it with that backend".into(),
            });
        };
        store.merge_snapshot(restored, keep)?;
        for (key, start, end, stored, dirty) in saved.into_iter().filter(|(key, ..)| keep(key)) {
            let key = Key::from(key);
            if dirty {
                self.to_fire.insert((end, key.clone(), start));
            }
            self.to_expire.insert((end.saturating_add(lateness), key.clone(), start));
            let sessions = self.by_key.entry(key).or_default();
            let at = sessions.partition_point(|s| s.start < start);
            sessions.insert(at, Session { start, end, rows: vec![], stored, dirty });
        }
        Ok(())
    }
}
