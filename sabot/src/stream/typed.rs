//! Typed steps: closures over borrowed row views of `#[derive(Record)]` types.

use std::sync::Arc;

use arrow::array::BooleanArray;
use arrow::buffer::BooleanBuffer;
use arrow::compute::filter_record_batch;

use super::{Stream, Untyped};
use crate::expr::col;
use crate::plan::LogicalPlan;
use crate::{Record, Result, SabotError};

impl<T> Stream<T> {
    /// Views this stream as rows of `U`: every field of `U` must exist with its type (extra
    /// columns are dropped, columns are reordered as `U` declares them).
    ///
    /// ```
    /// use sabot::prelude::*;
    /// #[derive(Record, Debug, PartialEq)]
    /// struct Total { id: i64 }
    /// # let batch = arrow::array::RecordBatch::try_from_iter([("id", std::sync::Arc::new(arrow::array::Int64Array::from(vec![7])) as _), ("x", std::sync::Arc::new(arrow::array::Int64Array::from(vec![1])) as _)]).unwrap();
    /// let typed: Stream<Total> = Stream::from_batches(vec![batch])?.typed()?;
    /// assert_eq!(typed.collect_records()?, vec![Total { id: 7 }]);
    /// # Ok::<(), sabot::SabotError>(())
    /// ```
    pub fn typed<U: Record>(&self) -> Result<Stream<U>> {
        let schema = self.schema();
        let target = U::schema();
        for field in target.fields() {
            let found = schema
                .field_with_name(field.name())
                .map_err(|_| SabotError::column_not_found(&schema, field.name()))?;
            if found.data_type() != field.data_type() {
                return Err(SabotError::TypeMismatch {
                    column: field.name().clone(),
                    expected: field.data_type().clone(),
                    found: found.data_type().clone(),
                });
            }
        }
        let same = schema.fields().iter().map(|f| f.name()).eq(target.fields().iter().map(|f| f.name()));
        if same {
            return Ok(self.derive(self.plan.as_ref().clone()));
        }
        let exprs = target.fields().iter().map(|f| col(f.name())).collect();
        Ok(self.derive(LogicalPlan::project(self.plan.clone(), exprs)?))
    }
}

impl<T: Record> Stream<T> {
    /// Keeps the rows for which `predicate` returns true, given a borrowed view of each row
    /// (no allocation per row). Prefer [`Stream::filter`] with an expression where possible:
    /// the optimizer can push expressions into scans, not closures.
    ///
    /// ```
    /// use sabot::prelude::*;
    /// #[derive(Record, Debug, PartialEq)]
    /// struct Tx { account: String, amount: f64 }
    /// let txs = vec![Tx { account: "A".into(), amount: 5.0 }, Tx { account: "B".into(), amount: 50.0 }];
    /// let big = Stream::from_records(txs).filter_rows(|tx| tx.amount > 10.0 && tx.account != "A").collect_records()?;
    /// assert_eq!(big, vec![Tx { account: "B".into(), amount: 50.0 }]);
    /// # Ok::<(), sabot::SabotError>(())
    /// ```
    pub fn filter_rows(&self, predicate: impl for<'a> Fn(&T::View<'a>) -> bool + Send + Sync + 'static) -> Stream<T> {
        self.derive(LogicalPlan::MapBatches {
            input: self.plan.clone(),
            name: "filter_rows".into(),
            func: Arc::new(move |batch| {
                let arrays = T::arrays(&batch)?;
                let mask = BooleanBuffer::collect_bool(batch.num_rows(), |i| predicate(&T::view(&arrays, i)));
                Ok(filter_record_batch(&batch, &BooleanArray::new(mask, None))?)
            }),
            schema: self.schema(),
        })
    }

    /// Maps each row, seen as a borrowed view, to a new record.
    ///
    /// ```
    /// use sabot::prelude::*;
    /// #[derive(Record)]
    /// struct Tx { amount: f64 }
    /// #[derive(Record, Debug, PartialEq)]
    /// struct Taxed { amount: f64, tax: f64 }
    /// let out: Vec<Taxed> = Stream::from_records(vec![Tx { amount: 10.0 }])
    ///     .map(|tx| Taxed { amount: tx.amount, tax: tx.amount * 0.1 })
    ///     .collect_records()?;
    /// assert_eq!(out, vec![Taxed { amount: 10.0, tax: 1.0 }]);
    /// # Ok::<(), sabot::SabotError>(())
    /// ```
    pub fn map<U: Record>(&self, func: impl for<'a> Fn(T::View<'a>) -> U + Send + Sync + 'static) -> Stream<U> {
        self.derive(LogicalPlan::MapBatches {
            input: self.plan.clone(),
            name: format!("map<{}>", short_type_name::<U>()),
            func: Arc::new(move |batch| {
                let arrays = T::arrays(&batch)?;
                let out: Vec<U> = (0..batch.num_rows()).map(|i| func(T::view(&arrays, i))).collect();
                Ok(U::to_batch(&out))
            }),
            schema: U::schema(),
        })
    }

    /// Maps each row to any number of records.
    ///
    /// ```
    /// use sabot::prelude::*;
    /// #[derive(Record)]
    /// struct Line { text: String }
    /// #[derive(Record, Debug, PartialEq)]
    /// struct Word { word: String }
    /// let words = Stream::from_records(vec![Line { text: "a b".into() }])
    ///     .flat_map(|l| l.text.split(' ').map(|w| Word { word: w.into() }).collect::<Vec<_>>())
    ///     .collect_records()?;
    /// assert_eq!(words.len(), 2);
    /// # Ok::<(), sabot::SabotError>(())
    /// ```
    pub fn flat_map<U: Record, I: IntoIterator<Item = U>>(
        &self,
        func: impl for<'a> Fn(T::View<'a>) -> I + Send + Sync + 'static,
    ) -> Stream<U> {
        self.derive(LogicalPlan::MapBatches {
            input: self.plan.clone(),
            name: format!("flat_map<{}>", short_type_name::<U>()),
            func: Arc::new(move |batch| {
                let arrays = T::arrays(&batch)?;
                let out: Vec<U> = (0..batch.num_rows()).flat_map(|i| func(T::view(&arrays, i))).collect();
                Ok(U::to_batch(&out))
            }),
            schema: U::schema(),
        })
    }

    /// Forgets the record type (e.g. to pass the stream where an untyped one is expected).
    pub fn untyped(&self) -> Stream<Untyped> {
        self.derive(self.plan.as_ref().clone())
    }
}

fn short_type_name<U>() -> &'static str {
    let full = std::any::type_name::<U>();
    full.rsplit("::").next().unwrap_or(full)
}
