//! Barrier alignment for operators with several inputs (Flink's aligned checkpoints).
//!
//! When an input delivers barrier `n`, everything it sends afterwards belongs to the next
//! checkpoint, so it is held back until every other live input has delivered `n` too. Then
//! barrier `n` goes downstream (the operator snapshots exactly the records before it) and the
//! held-back messages are replayed in their order. An input that delivers a later barrier
//! before `n` is aligned aborts `n` (that source skipped it: it was never complete) and
//! alignment starts over on the later one; an input that ends no longer counts.

use std::collections::VecDeque;

use crate::operator::CheckpointBarrier;

/// Aligns the barriers of `n` inputs, holding back what blocked inputs deliver meanwhile.
pub(crate) struct BarrierAligner<T> {
    live: Vec<bool>,
    aligning: Option<CheckpointBarrier>,
    arrived: Vec<bool>,
    emitted: Option<u64>,
    held: Vec<VecDeque<T>>,
    replay: VecDeque<(usize, T)>,
}

impl<T> BarrierAligner<T> {
    pub(crate) fn new(inputs: usize) -> Self {
        BarrierAligner {
            live: vec![true; inputs],
            aligning: None,
            arrived: vec![false; inputs],
            emitted: None,
            held: (0..inputs).map(|_| VecDeque::new()).collect(),
            replay: VecDeque::new(),
        }
    }

    /// Whether `input` delivered the barrier being aligned: its messages must wait.
    pub(crate) fn is_blocked(&self, input: usize) -> bool {
        self.aligning.is_some() && self.arrived[input]
    }

    /// Holds back a message of a blocked input.
    pub(crate) fn hold(&mut self, input: usize, item: T) {
        self.held[input].push_back(item);
    }

    /// A held-back message to process now that its input is unblocked.
    pub(crate) fn next_replay(&mut self) -> Option<(usize, T)> {
        self.replay.pop_front()
    }

    /// Input `input` delivered `barrier`; returns the barrier to forward once aligned.
    pub(crate) fn barrier(&mut self, input: usize, barrier: CheckpointBarrier) -> Option<CheckpointBarrier> {
        if self.emitted.is_some_and(|e| barrier.id <= e) {
            return None; // older than one already forwarded: aborted before
        }
        match self.aligning {
            Some(current) if barrier.id < current.id => return None, // aborted by a later one
            Some(current) if barrier.id > current.id => {
                tracing::debug!(aborted = current.id, by = barrier.id, "checkpoint barrier skipped by an input");
                self.release();
                self.aligning = Some(barrier);
            }
            Some(_) => {}
            None => self.aligning = Some(barrier),
        }
        self.arrived[input] = true;
        self.check()
    }

    /// Input `input` ended (its end is delivered in order, so nothing of it is held back).
    pub(crate) fn end(&mut self, input: usize) -> Option<CheckpointBarrier> {
        self.live[input] = false;
        self.arrived[input] = false;
        self.check()
    }

    fn check(&mut self) -> Option<CheckpointBarrier> {
        let current = self.aligning?;
        if (0..self.live.len()).any(|i| self.live[i] && !self.arrived[i]) {
            return None;
        }
        self.release();
        self.emitted = Some(current.id);
        Some(current)
    }

    /// Ends the current alignment: every input is unblocked and its held messages replay.
    fn release(&mut self) {
        self.aligning = None;
        self.arrived.iter_mut().for_each(|a| *a = false);
        for (input, held) in self.held.iter_mut().enumerate() {
            self.replay.extend(held.drain(..).map(|item| (input, item)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(id: u64) -> CheckpointBarrier {
        CheckpointBarrier { id }
    }

    #[test]
    fn an_input_that_delivered_the_barrier_waits_for_the_others() {
        let mut aligner = BarrierAligner::<&str>::new(2);
        assert_eq!(aligner.barrier(0, b(1)), None);
        assert!(aligner.is_blocked(0) && !aligner.is_blocked(1));
        aligner.hold(0, "after barrier on 0");
        assert_eq!(aligner.next_replay(), None);
        assert_eq!(aligner.barrier(1, b(1)), Some(b(1)));
        assert!(!aligner.is_blocked(0));
        assert_eq!(aligner.next_replay(), Some((0, "after barrier on 0")));
    }

    #[test]
    fn a_later_barrier_aborts_the_one_being_aligned() {
        let mut aligner = BarrierAligner::<u32>::new(2);
        aligner.barrier(0, b(1));
        aligner.hold(0, 7);
        // Input 1 skipped barrier 1: it can never complete.
        assert_eq!(aligner.barrier(1, b(2)), None);
        assert_eq!(aligner.next_replay(), Some((0, 7)));
        assert!(!aligner.is_blocked(0) && aligner.is_blocked(1));
        assert_eq!(aligner.barrier(0, b(2)), Some(b(2)));
        // A stale barrier is ignored.
        assert_eq!(aligner.barrier(0, b(1)), None);
        assert!(!aligner.is_blocked(0));
    }

    #[test]
    fn ended_inputs_do_not_count() {
        let mut aligner = BarrierAligner::<u32>::new(3);
        aligner.barrier(0, b(5));
        assert_eq!(aligner.end(2), None);
        assert_eq!(aligner.barrier(1, b(5)), Some(b(5)));
        assert_eq!(aligner.barrier(0, b(6)), None);
        assert_eq!(aligner.end(1), Some(b(6)));
    }
}
