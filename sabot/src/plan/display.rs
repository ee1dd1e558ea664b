//! Text and Graphviz renderings of logical plans.

use std::fmt::Write;

use super::LogicalPlan;

impl LogicalPlan {
    /// The plan as an indented tree, root first, one node per line.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use arrow::array::{Int64Array, RecordBatch};
    /// use sabot::expr::{col, lit};
    /// use sabot::Stream;
    /// let batch = RecordBatch::try_from_iter([("x", Arc::new(Int64Array::from(vec![1, 2])) as _)]).unwrap();
    /// let stream = Stream::from_batches(vec![batch]).unwrap().filter(col("x").gt(lit(1))).unwrap();
    /// assert_eq!(stream.logical_plan().display_indent(), "Filter: x > 1\n  Scan: memory: 1 batches, 2 rows\n");
    /// ```
    pub fn display_indent(&self) -> String {
        let mut out = String::new();
        self.write_indent(&mut out, 0);
        out
    }

    fn write_indent(&self, out: &mut String, depth: usize) {
        let _ = writeln!(out, "{:indent$}{}", "", self.describe(), indent = depth * 2);
        for input in self.inputs() {
            input.write_indent(out, depth + 1);
        }
    }

    /// The plan as a Graphviz `digraph`, data flowing from the sources up to the root.
    pub fn to_dot(&self) -> String {
        let mut out =
            String::from("digraph logical_plan {\n  rankdir=BT;\n  node [shape=box, fontname=\"monospace\"];\n");
        let mut next_id = 0;
        self.write_dot(&mut out, &mut next_id);
        out.push_str("}\n");
        out
    }

    fn write_dot(&self, out: &mut String, next_id: &mut usize) -> usize {
        let id = *next_id;
        *next_id += 1;
        let label = self.describe().replace('\\', "\\\\").replace('"', "\\\"");
        let _ = writeln!(out, "  n{id} [label=\"{label}\"];");
        for input in self.inputs() {
            let child = input.write_dot(out, next_id);
            let _ = writeln!(out, "  n{child} -> n{id};");
        }
        id
    }
}
