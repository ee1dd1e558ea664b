//! Whole rows of a schema in Arrow's row format: how operators that keep rows in the keyed
//! state backend (join tables and buffers, count, session and global windows) encode them,
//! and decode them back into batches of the schema.

use arrow::array::{RecordBatch, RecordBatchOptions};
use arrow::datatypes::SchemaRef;
use arrow::row::{RowConverter, Rows, SortField};

use super::decode_rows;
use crate::{Result, SabotError};

/// Encodes and decodes whole rows of one schema.
pub(crate) struct RowCodec {
    schema: SchemaRef,
    converter: RowConverter,
}

impl RowCodec {
    /// The codec of rows of `schema`; a plan error naming the column, for the rows of
    /// `what`, when a type has no row encoding.
    pub(crate) fn new(schema: SchemaRef, what: &str) -> Result<Self> {
        let fields: Vec<SortField> = schema.fields().iter().map(|f| SortField::new(f.data_type().clone())).collect();
        if let Some((field, _)) =
            schema.fields().iter().zip(&fields).find(|(_, f)| !RowConverter::supports_fields(std::slice::from_ref(f)))
        {
            return Err(SabotError::plan(format!(
                "{what} column {} of type {} cannot be kept in a state backend",
                field.name(),
                field.data_type()
            )));
        }
        Ok(RowCodec { converter: RowConverter::new(fields)?, schema })
    }

    /// The schema of the rows.
    pub(crate) fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// The rows of `batch` (of the schema), encoded.
    pub(crate) fn encode(&self, batch: &RecordBatch) -> Result<Rows> {
        Ok(self.converter.convert_columns(batch.columns())?)
    }

    /// A batch of the schema from encoded rows.
    pub(crate) fn decode<'a>(&self, encoded: impl IntoIterator<Item = &'a [u8]>) -> Result<RecordBatch> {
        let encoded: Vec<&[u8]> = encoded.into_iter().collect();
        let columns = decode_rows(&self.converter, encoded.iter().copied(), self.schema.fields())?;
        let options = RecordBatchOptions::new().with_row_count(Some(encoded.len()));
        Ok(RecordBatch::try_new_with_options(self.schema.clone(), columns, &options)?)
    }
}
