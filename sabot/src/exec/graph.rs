//! The job graph: a physical plan as a DAG of named operator nodes.

use std::collections::VecDeque;
use std::fmt::Write;

use super::ExecConfig;
use super::physical::PhysicalPlan;

/// How data crosses an edge of the job graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EdgeKind {
    /// Partition `i` feeds partition `i`, in the same thread (operator chaining).
    Forward,
    /// Every partition feeds one consumer, in source order.
    GatherOrdered,
    /// Every partition feeds one consumer, in any order.
    Gather,
    /// The whole input is collected once and shared by every consumer partition.
    Broadcast,
    /// Rows are routed by a hash of their key.
    Hash,
}

/// A node of the job graph.
#[derive(Debug, Clone, PartialEq)]
pub struct JobNode {
    /// Index in [`JobGraph::nodes`].
    pub id: usize,
    /// What the node does (e.g. `Filter: amount > 300`).
    pub name: String,
    /// How many instances run in parallel.
    pub parallelism: usize,
}

/// A physical plan as a DAG: nodes are operators, edges are data flows.
///
/// ```
/// use std::sync::Arc;
/// use arrow::array::{Int64Array, RecordBatch};
/// use sabot::expr::{col, lit};
/// use sabot::Stream;
/// let batch = RecordBatch::try_from_iter([("x", Arc::new(Int64Array::from(vec![1, 2])) as _)]).unwrap();
/// let graph = Stream::from_batches(vec![batch]).unwrap().filter(col("x").gt(lit(1))).unwrap().job_graph().unwrap();
/// let order: Vec<&str> = graph.topological_sort().iter().map(|&i| graph.nodes[i].name.as_str()).collect();
/// assert!(order[0].starts_with("ParallelScan"));
/// assert!(graph.to_dot().starts_with("digraph"));
/// ```
#[derive(Debug, Clone, Default)]
pub struct JobGraph {
    /// The nodes.
    pub nodes: Vec<JobNode>,
    /// `(from, to, kind)`: data flows from `from` into `to`.
    pub edges: Vec<(usize, usize, EdgeKind)>,
}

impl JobGraph {
    /// The job graph of `plan` under `config`.
    pub fn from_physical(plan: &PhysicalPlan, config: &ExecConfig) -> JobGraph {
        let mut graph = JobGraph::default();
        graph.add(plan, config);
        graph
    }

    /// Adds `plan`'s subtree; returns the id of the node whose output is `plan`'s output.
    fn add(&mut self, plan: &PhysicalPlan, config: &ExecConfig) -> usize {
        match plan {
            PhysicalPlan::Gather { input, ordered } => {
                // A gather is an edge property, not an operator: attach it to the consumer.
                let from = self.add(input, config);
                let id = self.node("Gather".into(), 1);
                let kind = if *ordered { EdgeKind::GatherOrdered } else { EdgeKind::Gather };
                self.edges.push((from, id, kind));
                id
            }
            PhysicalPlan::Repartition { input, .. } => {
                let from = self.add(input, config);
                let id = self.node(plan.describe(), plan.partitions(config));
                self.edges.push((from, id, EdgeKind::Hash));
                id
            }
            PhysicalPlan::HashJoin { probe, build, .. } => {
                let probe_id = self.add(probe, config);
                let build_id = self.add(build, config);
                let build_node = self.node("HashJoinBuild".into(), 1);
                self.edges.push((build_id, build_node, EdgeKind::GatherOrdered));
                let id = self.node(plan.describe(), plan.partitions(config));
                self.edges.push((probe_id, id, EdgeKind::Forward));
                self.edges.push((build_node, id, EdgeKind::Broadcast));
                id
            }
            _ => {
                let inputs: Vec<usize> = plan.inputs().into_iter().map(|i| self.add(i, config)).collect();
                let id = self.node(plan.describe(), plan.partitions(config));
                for from in inputs {
                    self.edges.push((from, id, EdgeKind::Forward));
                }
                id
            }
        }
    }

    fn node(&mut self, name: String, parallelism: usize) -> usize {
        let id = self.nodes.len();
        self.nodes.push(JobNode { id, name, parallelism });
        id
    }

    /// Node ids ordered so that every node comes after all of its inputs (Kahn's algorithm;
    /// ties broken by id, so the order is deterministic).
    pub fn topological_sort(&self) -> Vec<usize> {
        let mut indegree = vec![0usize; self.nodes.len()];
        for &(_, to, _) in &self.edges {
            indegree[to] += 1;
        }
        let mut ready: VecDeque<usize> = (0..self.nodes.len()).filter(|&n| indegree[n] == 0).collect();
        let mut order = Vec::with_capacity(self.nodes.len());
        while let Some(n) = ready.pop_front() {
            order.push(n);
            for &(from, to, _) in &self.edges {
                if from == n {
                    indegree[to] -= 1;
                    if indegree[to] == 0 {
                        ready.push_back(to);
                    }
                }
            }
        }
        order
    }

    /// One line per node in topological order, with its inputs and their edge kinds.
    pub fn explain(&self) -> String {
        let mut out = String::new();
        for id in self.topological_sort() {
            let node = &self.nodes[id];
            let inputs: Vec<String> =
                self.edges.iter().filter(|e| e.1 == id).map(|(from, _, kind)| format!("#{from} ({kind:?})")).collect();
            let _ = write!(out, "#{id} {} [parallelism={}]", node.name, node.parallelism);
            if !inputs.is_empty() {
                let _ = write!(out, " <- {}", inputs.join(", "));
            }
            out.push('\n');
        }
        out
    }

    /// The graph in Graphviz `dot` syntax.
    pub fn to_dot(&self) -> String {
        let mut out = String::from("digraph job {\n  rankdir=LR;\n  node [shape=box, fontname=\"monospace\"];\n");
        for n in &self.nodes {
            let label = format!("{} x{}", n.name, n.parallelism).replace('\\', "\\\\").replace('"', "\\\"");
            let _ = writeln!(out, "  n{} [label=\"{label}\"];", n.id);
        }
        for (from, to, kind) in &self.edges {
            let _ = writeln!(out, "  n{from} -> n{to} [label=\"{kind:?}\"];");
        }
        out.push_str("}\n");
        out
    }
}
