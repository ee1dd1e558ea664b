//! Exactly-once files: [`Stream::to_transactional_files`].

use super::Stream;
use crate::Result;
use crate::io::transactional_file::TransactionalFileSink;

impl<T> Stream<T> {
    /// Writes the result as files in a directory through a two-phase commit with the
    /// pipeline's checkpoints (see [`TransactionalFileSink`]): rows are published when the
    /// checkpoint after them is complete, and at the end of a bounded run. Returns the rows
    /// written.
    ///
    /// ```
    /// use sabot::prelude::*;
    /// use sabot::io::transactional_file::TransactionalFileSink;
    /// # let batch = arrow::array::RecordBatch::try_from_iter([("x", std::sync::Arc::new(arrow::array::Int64Array::from(vec![1, 2, 3])) as _)]).unwrap();
    /// let dir = std::env::temp_dir().join(format!("sabot-doc-to-txn-files-{}", std::process::id()));
    /// let rows = Stream::from_batches(vec![batch])?
    ///     .filter(col("x").gt(lit(1)))?
    ///     .to_transactional_files(TransactionalFileSink::json_lines(&dir))?;
    /// assert_eq!(rows, 2);
    /// let published: Vec<_> = std::fs::read_dir(&dir)?
    ///     .map(|e| e.unwrap().file_name().into_string().unwrap())
    ///     .filter(|name| name.starts_with("part-"))
    ///     .collect();
    /// assert_eq!(published.len(), 1);
    /// assert_eq!(std::fs::read_to_string(dir.join(&published[0]))?, "{\"x\":2}\n{\"x\":3}\n");
    /// std::fs::remove_dir_all(&dir)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn to_transactional_files(&self, sink: TransactionalFileSink) -> Result<u64> {
        self.to_sink(&sink)
    }
}
