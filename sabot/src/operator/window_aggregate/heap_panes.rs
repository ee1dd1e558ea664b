//! Panes on the heap (the memory backend): an open pane is a live hash aggregation; a pane
//! is closed into partial-state batches when a window containing it fires first.

use std::collections::{BTreeMap, BTreeSet};

use arrow::array::RecordBatch;

use super::SavedRows;
use super::panes::{PaneAggregation, PaneStore};
use crate::Result;
use crate::checkpoint::{RestoredState, StateSnapshot};
use crate::operator::{AggregateOperator, Message, Operator, Output, filter_keys};

/// The operator name in errors about saved panes.
const NAME: &str = "window_aggregate";

/// Panes on the heap.
pub(super) struct HeapPanes {
    aggregation: PaneAggregation,
    open: BTreeMap<i64, AggregateOperator>,
    closed: BTreeMap<i64, Vec<RecordBatch>>,
    /// Groups of the pane closed last: a new pane reserves room for as many.
    groups_hint: usize,
}

/// Where the saved batches of each pane are.
#[derive(serde::Serialize, serde::Deserialize)]
struct HeapLayout {
    /// Open panes in order: start and number of groups (rows of `open_panes`).
    open: Vec<(i64, usize)>,
    /// Closed panes in order: start and the rows of each partial batch (of `closed_panes`).
    closed: Vec<(i64, Vec<usize>)>,
}

impl HeapPanes {
    pub(super) fn new(aggregation: PaneAggregation) -> Self {
        HeapPanes { aggregation, open: BTreeMap::new(), closed: BTreeMap::new(), groups_hint: 0 }
    }

    /// Turns the open panes starting in `from..to` into partial-state batches.
    fn close(&mut self, from: i64, to: i64) -> Result<()> {
        let starts: Vec<i64> = self.open.range(from..to).map(|(s, _)| *s).collect();
        for start in starts {
            let mut op = self.open.remove(&start).expect("listed");
            self.groups_hint = op.num_groups();
            let mut out = Output::default();
            op.on_close(&mut out)?;
            while let Some(Message::Batch(b)) = out.pop() {
                self.closed.entry(start).or_default().push(b);
            }
        }
        Ok(())
    }

    /// A new open pane holding the groups of `saved` (in the snapshot layout).
    fn restored_pane(&self, saved: &RecordBatch) -> Result<AggregateOperator> {
        let mut pane = self.aggregation.new_pane()?;
        pane.restore_batch(saved, NAME)?;
        Ok(pane)
    }
}

impl PaneStore for HeapPanes {
    fn add(&mut self, pane: i64, rows: RecordBatch) -> Result<()> {
        if !self.open.contains_key(&pane) {
            let mut op = self.aggregation.new_pane()?;
            op.reserve_groups(self.groups_hint);
            self.open.insert(pane, op);
        }
        let op = self.open.get_mut(&pane).expect("inserted above");
        op.process_batch(rows, &mut Output::default())
    }

    fn starts(&self) -> Vec<i64> {
        let starts: BTreeSet<i64> = self.open.keys().chain(self.closed.keys()).copied().collect();
        starts.into_iter().collect()
    }

    fn take_final(&mut self, start: i64) -> Result<Vec<RecordBatch>> {
        let Some(mut pane) = self.open.remove(&start) else { return Ok(vec![]) };
        self.groups_hint = pane.num_groups();
        let mut results = Output::default();
        pane.on_close(&mut results)?;
        let mut batches = vec![];
        while let Some(Message::Batch(b)) = results.pop() {
            batches.push(b);
        }
        Ok(batches)
    }

    fn partials(&mut self, from: i64, to: i64) -> Result<Vec<RecordBatch>> {
        self.close(from, to)?;
        Ok(self.closed.range(from..to).flat_map(|(_, p)| p.iter().cloned()).collect())
    }

    fn expire(&mut self, expired: &dyn Fn(i64) -> bool) -> Result<()> {
        self.open.retain(|&p, _| !expired(p));
        self.closed.retain(|&p, _| !expired(p));
        Ok(())
    }

    fn retain_keys(&mut self, keep: &(dyn Fn(&[u8]) -> bool + Sync)) -> Result<()> {
        let n = self.aggregation.keys.len();
        for (start, mut pane) in std::mem::take(&mut self.open) {
            let kept = filter_keys(&pane.snapshot_batch(NAME)?, n, keep)?;
            if kept.num_rows() > 0 {
                let pane = self.restored_pane(&kept)?;
                self.open.insert(start, pane);
            }
        }
        for partials in self.closed.values_mut() {
            for partial in partials.iter_mut() {
                *partial = filter_keys(partial, n, keep)?;
            }
            partials.retain(|b| b.num_rows() > 0);
        }
        self.closed.retain(|_, partials| !partials.is_empty());
        Ok(())
    }

    /// Saves every open pane's groups with their states (final-value states on the
    /// single-pane path) as one Arrow IPC stream, and the partial batches of the closed panes
    /// as another.
    fn snapshot(&mut self, snapshot: &mut StateSnapshot) -> Result<()> {
        let mut open = Vec::with_capacity(self.open.len());
        let mut open_batches = Vec::with_capacity(self.open.len());
        for (&start, pane) in &mut self.open {
            let batch = pane.snapshot_batch(NAME)?;
            open.push((start, batch.num_rows()));
            open_batches.push(batch);
        }
        let mut closed = Vec::with_capacity(self.closed.len());
        let mut closed_batches = vec![];
        for (&start, partials) in &self.closed {
            closed.push((start, partials.iter().map(|b| b.num_rows()).collect()));
            closed_batches.extend(partials.iter().cloned());
        }
        if let Some(first) = open_batches.first() {
            snapshot.put_batches("open_panes", &first.schema(), &open_batches)?;
        }
        if let Some(first) = closed_batches.first() {
            snapshot.put_batches("closed_panes", &first.schema(), &closed_batches)?;
        }
        snapshot.put_value("heap_panes", &HeapLayout { open, closed })
    }

    fn restore(&mut self, restored: &RestoredState) -> Result<()> {
        let Some(layout) = restored.value::<HeapLayout>("heap_panes")? else {
            return crate::operator::saved_by_another_backend(restored, NAME, "stored_panes", "rocksdb");
        };
        let mut open = SavedRows::read(restored, "open_panes", NAME)?;
        for (start, rows) in layout.open {
            let pane = self.restored_pane(&open.next(rows)?)?;
            self.open.insert(start, pane);
        }
        let mut closed = SavedRows::read(restored, "closed_panes", NAME)?;
        for (start, sizes) in layout.closed {
            let partials = sizes.into_iter().map(|rows| closed.next(rows)).collect::<Result<Vec<_>>>()?;
            self.closed.insert(start, partials);
        }
        Ok(())
    }

    /// Open panes merge into the pane of the same start; closed panes' partials are added.
    fn merge_snapshot(&mut self, snapshot: &RestoredState, keep: &dyn Fn(&[u8]) -> bool) -> Result<()> {
        let Some(layout) = snapshot.value::<HeapLayout>("heap_panes")? else {
            return crate::operator::saved_by_another_backend(snapshot, NAME, "stored_panes", "rocksdb");
        };
        let n = self.aggregation.keys.len();
        let mut open = SavedRows::read(snapshot, "open_panes", NAME)?;
        for (start, rows) in layout.open {
            let saved = filter_keys(&open.next(rows)?, n, keep)?;
            if saved.num_rows() == 0 {
                continue;
            }
            let merged = match self.open.remove(&start) {
                Some(mut pane) => {
                    let mine = pane.snapshot_batch(NAME)?;
                    arrow::compute::concat_batches(&mine.schema(), [&mine, &saved])?
                }
                None => saved,
            };
            let pane = self.restored_pane(&merged)?;
            self.open.insert(start, pane);
        }
        let mut closed = SavedRows::read(snapshot, "closed_panes", NAME)?;
        for (start, sizes) in layout.closed {
            for rows in sizes {
                let saved = filter_keys(&closed.next(rows)?, n, keep)?;
                if saved.num_rows() > 0 {
                    self.closed.entry(start).or_default().push(saved);
                }
            }
        }
        Ok(())
    }
}
