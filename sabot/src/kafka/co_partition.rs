//! Two Kafka sources of one pipeline that read the same partitions: the two sides of a
//! stream join whose topics are partitioned alike by the join keys (as Kafka Streams requires
//! of a join's topics), in a pipeline whose workers share key groups.
//!
//! Only the left side's readers join the consumer group. Each right-side reader assigns
//! itself, with `incremental_assign`, exactly the partitions of the left-side readers it
//! follows, and hands them over in step with them: it stops reading a revoked partition
//! before the checkpoint that holds its key group, and releases the group when that
//! checkpoint completes. Partition `g` of both topics is then one key group, owned by one
//! worker at a time, and the join's state for it moves between workers in one piece.

use std::collections::VecDeque;
use std::sync::Mutex;

use crate::checkpoint::KeyGroupChange;

/// What a follower reader does next, in the order its leader reader did it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum FollowerStep {
    /// Read `partitions` too; the leader's change `acquire` (sent again for this source's
    /// topic) loads the state of those whose key group has some.
    Assign { partitions: Vec<i32>, acquire: Option<KeyGroupChange> },
    /// Stop reading `partitions`: they are being handed over, and the checkpoint that will
    /// hold their state is about to be requested.
    Pause(Vec<i32>),
    /// The checkpoint holding their state completed: release their key groups (the leader's
    /// `change`, sent again for this source's topic) and give the partitions up.
    Release { partitions: Vec<i32>, change: KeyGroupChange },
    /// Give the partitions up without a handover (the leader is closing).
    Unassign(Vec<i32>),
}

/// The partition assignment a leading source's readers share with the readers of the source
/// that follows it.
#[derive(Debug)]
pub struct CoPartitioning {
    /// The leader's topic and consumer group.
    pub(crate) leader_topic: String,
    pub(crate) leader_group: String,
    /// The topic of the source that follows (one only: each step is taken once).
    pub(crate) follower: Mutex<Option<String>>,
    /// The steps not taken yet, in the order the leader readers took them, with the reader
    /// that took each: a partition moving between two readers of the leader is released by
    /// one before the other is assigned it, and its followers take the steps in that order.
    steps: Mutex<VecDeque<(usize, FollowerStep)>>,
}

impl CoPartitioning {
    pub(crate) fn new(leader_topic: String, leader_group: String) -> Self {
        CoPartitioning { leader_topic, leader_group, follower: Mutex::default(), steps: Mutex::default() }
    }

    /// Forgets the steps of an earlier run: a new scan of the leader starts over.
    pub(crate) fn reset(&self) {
        self.steps.lock().expect("co-partitioning steps").clear();
    }

    /// Queues `step`, taken by leader reader `reader`.
    pub(crate) fn push(&self, reader: usize, step: FollowerStep) {
        self.steps.lock().expect("co-partitioning steps").push_back((reader, step));
    }

    /// The steps that follower reader `reader` (of `followers`) takes, in order: those of the
    /// leader readers `i` with `i % followers == reader`.
    pub(crate) fn take(&self, reader: usize, followers: usize) -> Vec<FollowerStep> {
        let mut steps = self.steps.lock().expect("co-partitioning steps");
        let mut mine = vec![];
        steps.retain(|(leader, step)| {
            let taken = leader % followers.max(1) == reader;
            if taken {
                mine.push(step.clone());
            }
            !taken
        });
        mine
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_follower_takes_the_steps_of_its_leaders_in_order() {
        let co = CoPartitioning::new("clicks".into(), "app".into());
        co.push(0, FollowerStep::Assign { partitions: vec![0], acquire: None });
        co.push(1, FollowerStep::Assign { partitions: vec![1], acquire: None });
        co.push(2, FollowerStep::Pause(vec![2]));
        co.push(0, FollowerStep::Pause(vec![0]));
        // Two followers for three leaders: follower 0 follows leaders 0 and 2, in the order
        // they took their steps.
        assert_eq!(
            co.take(0, 2),
            vec![
                FollowerStep::Assign { partitions: vec![0], acquire: None },
                FollowerStep::Pause(vec![2]),
                FollowerStep::Pause(vec![0])
            ]
        );
        assert_eq!(co.take(1, 2), vec![FollowerStep::Assign { partitions: vec![1], acquire: None }]);
        assert!(co.take(0, 2).is_empty(), "taken once");
        co.push(
            1,
            FollowerStep::Release { partitions: vec![1], change: KeyGroupChange::release("clicks", 4, vec![1]) },
        );
        co.reset();
        assert!(co.take(1, 2).is_empty(), "a new run starts over");
    }
}
