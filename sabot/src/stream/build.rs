//! Relational builder methods: filter, project, join, aggregate, sort…

use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;

use super::{IntoExpr, Stream, Untyped};
use crate::expr::{AggExpr, Expr, col};
use crate::plan::{JoinType, LogicalPlan, SortKey};
use crate::{Result, SabotError};

impl<T> Stream<T> {
    /// Keeps the rows for which `predicate` is true (null counts as false).
    ///
    /// ```
    /// use sabot::prelude::*;
    /// # let batch = arrow::array::RecordBatch::try_from_iter([("amount", std::sync::Arc::new(arrow::array::Int64Array::from(vec![100, 400])) as _)]).unwrap();
    /// let big = Stream::from_batches(vec![batch])?.filter(col("amount").gt(lit(300)))?;
    /// assert_eq!(big.count()?, 1);
    /// # Ok::<(), sabot::SabotError>(())
    /// ```
    pub fn filter(&self, predicate: impl Into<Expr>) -> Result<Stream<T>> {
        Ok(self.derive(LogicalPlan::filter(self.plan.clone(), predicate.into())?))
    }

    /// Computes one output column per expression (a column name selects that column).
    ///
    /// ```
    /// use sabot::prelude::*;
    /// # let batch = arrow::array::RecordBatch::try_from_iter([("a", std::sync::Arc::new(arrow::array::Int64Array::from(vec![1])) as _), ("b", std::sync::Arc::new(arrow::array::Int64Array::from(vec![2])) as _)]).unwrap();
    /// let s = Stream::from_batches(vec![batch])?.select(["b", "a"])?;
    /// assert_eq!(s.schema().field(0).name(), "b");
    /// # Ok::<(), sabot::SabotError>(())
    /// ```
    pub fn select<E: IntoExpr>(&self, exprs: impl IntoIterator<Item = E>) -> Result<Stream<Untyped>> {
        let exprs = exprs.into_iter().map(IntoExpr::into_expr).collect();
        Ok(self.derive(LogicalPlan::project(self.plan.clone(), exprs)?))
    }

    /// Adds a column (or replaces the column of the same name, in place).
    ///
    /// ```
    /// use sabot::prelude::*;
    /// # let batch = arrow::array::RecordBatch::try_from_iter([("amount", std::sync::Arc::new(arrow::array::Float64Array::from(vec![10.0])) as _)]).unwrap();
    /// let s = Stream::from_batches(vec![batch])?.with_column("tax", col("amount") * lit(0.1))?;
    /// assert_eq!(s.schema().fields().len(), 2);
    /// # Ok::<(), sabot::SabotError>(())
    /// ```
    pub fn with_column(&self, name: &str, expr: impl Into<Expr>) -> Result<Stream<Untyped>> {
        self.with_columns([(name, expr.into())])
    }

    /// Adds or replaces several columns, computed from the input (not from each other).
    pub fn with_columns<'a>(&self, columns: impl IntoIterator<Item = (&'a str, Expr)>) -> Result<Stream<Untyped>> {
        let schema = self.schema();
        let mut exprs: Vec<Expr> = schema.fields().iter().map(|f| col(f.name())).collect();
        for (name, expr) in columns {
            let expr = expr.alias(name);
            match schema.index_of(name) {
                Ok(i) => exprs[i] = expr,
                Err(_) => exprs.push(expr),
            }
        }
        Ok(self.derive(LogicalPlan::project(self.plan.clone(), exprs)?))
    }

    /// Renames a column.
    pub fn rename(&self, from: &str, to: &str) -> Result<Stream<Untyped>> {
        let schema = self.schema();
        schema.index_of(from).map_err(|_| missing(&schema, from))?;
        let exprs = schema.fields().iter().map(|f| if f.name() == from { col(from).alias(to) } else { col(f.name()) });
        Ok(self.derive(LogicalPlan::project(self.plan.clone(), exprs.collect())?))
    }

    /// Removes columns.
    pub fn drop<S: AsRef<str>>(&self, columns: impl IntoIterator<Item = S>) -> Result<Stream<Untyped>> {
        let schema = self.schema();
        let dropped: Vec<String> = columns.into_iter().map(|c| c.as_ref().to_string()).collect();
        for d in &dropped {
            schema.index_of(d).map_err(|_| missing(&schema, d))?;
        }
        let exprs = schema.fields().iter().filter(|f| !dropped.contains(f.name())).map(|f| col(f.name()));
        Ok(self.derive(LogicalPlan::project(self.plan.clone(), exprs.collect())?))
    }

    /// Keeps the first `n` rows (in source order).
    pub fn limit(&self, n: usize) -> Stream<T> {
        self.slice(0, n)
    }

    /// Skips `offset` rows, then keeps at most `n`.
    pub fn slice(&self, offset: usize, n: usize) -> Stream<T> {
        // A limit right after a sort is a top-k: the sort keeps only what the limit wants.
        if let LogicalPlan::Sort { input, keys, fetch: None } = self.plan.as_ref() {
            let sort = LogicalPlan::Sort { input: input.clone(), keys: keys.clone(), fetch: Some(offset + n) };
            return self.derive(LogicalPlan::Limit { input: Arc::new(sort), skip: offset, fetch: Some(n) });
        }
        self.derive(LogicalPlan::Limit { input: self.plan.clone(), skip: offset, fetch: Some(n) })
    }

    /// Sorts by keys, most significant first (`"col"` sorts ascending, nulls last).
    ///
    /// ```
    /// use sabot::prelude::*;
    /// # let batch = arrow::array::RecordBatch::try_from_iter([("size", std::sync::Arc::new(arrow::array::Int64Array::from(vec![1, 3, 2])) as _)]).unwrap();
    /// let top = Stream::from_batches(vec![batch])?.sort([SortKey::desc(col("size"))])?.limit(2).collect_batch()?;
    /// assert_eq!(top.num_rows(), 2);
    /// # Ok::<(), sabot::SabotError>(())
    /// ```
    pub fn sort<K: Into<SortKey>>(&self, keys: impl IntoIterator<Item = K>) -> Result<Stream<T>> {
        let keys: Vec<SortKey> = keys.into_iter().map(Into::into).collect();
        if keys.is_empty() {
            return Err(SabotError::plan("sort needs at least one key"));
        }
        for k in &keys {
            k.expr.data_type(&self.schema())?;
        }
        Ok(self.derive(LogicalPlan::Sort { input: self.plan.clone(), keys, fetch: None }))
    }

    /// The first `k` rows by `keys`, in memory proportional to `k`.
    pub fn top_k<K: Into<SortKey>>(&self, k: usize, keys: impl IntoIterator<Item = K>) -> Result<Stream<T>> {
        Ok(self.sort(keys)?.limit(k))
    }

    /// Removes duplicate rows.
    pub fn distinct(&self) -> Result<Stream<T>> {
        let keys = self.schema().fields().iter().map(|f| col(f.name())).collect();
        Ok(self.derive(LogicalPlan::aggregate(self.plan.clone(), keys, vec![])?))
    }

    /// The rows of `self` then those of `other`, which must have the same columns.
    pub fn union(&self, other: &Stream<T>) -> Result<Stream<T>> {
        Ok(self.derive(LogicalPlan::union(vec![self.plan.clone(), other.plan.clone()])?))
    }

    /// Starts a grouped aggregation; finish it with [`GroupedStream::agg`].
    ///
    /// ```
    /// use sabot::prelude::*;
    /// # let batch = arrow::array::RecordBatch::try_from_iter([("k", std::sync::Arc::new(arrow::array::StringArray::from(vec!["a", "b", "a"])) as _), ("v", std::sync::Arc::new(arrow::array::Int64Array::from(vec![1, 2, 3])) as _)]).unwrap();
    /// let totals = Stream::from_batches(vec![batch])?.group_by(["k"]).agg([sum(col("v")).alias("total")])?;
    /// assert_eq!(totals.count()?, 2);
    /// # Ok::<(), sabot::SabotError>(())
    /// ```
    pub fn group_by<E: IntoExpr>(&self, keys: impl IntoIterator<Item = E>) -> GroupedStream {
        GroupedStream {
            input: self.derive(self.plan.as_ref().clone()),
            keys: keys.into_iter().map(IntoExpr::into_expr).collect(),
        }
    }

    /// Aggregates all rows into one row.
    pub fn aggregate(&self, aggregates: impl IntoIterator<Item = AggExpr>) -> Result<Stream<Untyped>> {
        Ok(self.derive(LogicalPlan::aggregate(self.plan.clone(), vec![], aggregates.into_iter().collect())?))
    }

    /// Joins with `right` where each `(left column, right column)` pair is equal; nulls never
    /// match. The output has every left column, then the right columns except right keys named
    /// like their left key; other clashing names get the suffix `_right`. Outer, semi and anti
    /// joins keep the left side's order; an inner join may build on the left side when it is
    /// known to be smaller, and then follows the right side's order.
    ///
    /// ```
    /// use sabot::prelude::*;
    /// # use std::sync::Arc; use arrow::array::*;
    /// # let quotes = RecordBatch::try_from_iter([("instrumentId", Arc::new(Int64Array::from(vec![1, 2])) as _)]).unwrap();
    /// # let securities = RecordBatch::try_from_iter([("ID", Arc::new(Int64Array::from(vec![2, 3])) as _), ("NAME", Arc::new(StringArray::from(vec!["b", "c"])) as _)]).unwrap();
    /// let q = Stream::from_batches(vec![quotes])?;
    /// let s = Stream::from_batches(vec![securities])?;
    /// let joined = q.join(&s, [("instrumentId", "ID")], JoinType::Inner)?;
    /// assert_eq!(joined.count()?, 1);
    /// # Ok::<(), sabot::SabotError>(())
    /// ```
    pub fn join<U, L: Into<String>, R: Into<String>>(
        &self,
        right: &Stream<U>,
        on: impl IntoIterator<Item = (L, R)>,
        join_type: JoinType,
    ) -> Result<Stream<Untyped>> {
        let on = on.into_iter().map(|(l, r)| (l.into(), r.into())).collect();
        Ok(self.derive(LogicalPlan::join(self.plan.clone(), right.plan.clone(), on, join_type)?))
    }

    /// Applies `func` to every batch; `schema` is the schema `func` returns. Projections are
    /// not pushed below such a step (it may read any column).
    pub fn map_batches(
        &self,
        name: &str,
        schema: SchemaRef,
        func: impl Fn(RecordBatch) -> Result<RecordBatch> + Send + Sync + 'static,
    ) -> Stream<Untyped> {
        self.derive(LogicalPlan::MapBatches {
            input: self.plan.clone(),
            name: name.to_string(),
            func: Arc::new(func),
            schema,
        })
    }

    /// Calls `func` on every batch that passes (e.g. to drive a progress bar); batches are unchanged.
    pub fn inspect(&self, func: impl Fn(&RecordBatch) + Send + Sync + 'static) -> Stream<T> {
        self.derive(LogicalPlan::MapBatches {
            input: self.plan.clone(),
            name: "inspect".to_string(),
            func: Arc::new(move |batch| {
                func(&batch);
                Ok(batch)
            }),
            schema: self.schema(),
        })
    }
}

/// A stream with group keys, waiting for its aggregates.
pub struct GroupedStream {
    input: Stream<Untyped>,
    keys: Vec<Expr>,
}

impl GroupedStream {
    /// Computes `aggregates` per group: one row per distinct key, keys first.
    pub fn agg(self, aggregates: impl IntoIterator<Item = AggExpr>) -> Result<Stream<Untyped>> {
        let plan = LogicalPlan::aggregate(self.input.plan.clone(), self.keys, aggregates.into_iter().collect())?;
        Ok(self.input.derive(plan))
    }
}

fn missing(schema: &SchemaRef, column: &str) -> SabotError {
    SabotError::column_not_found(schema, column)
}
