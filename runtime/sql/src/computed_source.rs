//! A source whose batches carry the table's computed columns, evaluated as the source reads
//! them, for a table whose watermark is declared on a computed column
//! (`ts AS TO_TIMESTAMP_LTZ(epoch_ms, 3), WATERMARK FOR ts AS ts - INTERVAL '5' SECOND`):
//! the source tracks event time per split, so the column must exist where it reads.

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use bytes::Bytes;

use flink_rs_core::checkpoint::CheckpointId;
use flink_rs_core::error::Result;
use flink_rs_core::source::{Source, SourcePoll, SourceReader};

/// Physical columns → physical then computed columns.
pub(crate) type Evaluate = Arc<dyn Fn(&RecordBatch) -> Result<RecordBatch> + Send + Sync>;

/// The table's columns as queries see them, and how to compute them from a read batch.
#[derive(Clone)]
pub(crate) struct ComputedColumns {
    pub schema: SchemaRef,
    pub evaluate: Evaluate,
}

/// `inner`, each batch extended with the computed columns.
pub(crate) struct ComputedSource {
    inner: Box<dyn Source>,
    columns: ComputedColumns,
}

impl ComputedSource {
    pub(crate) fn new(inner: impl Source, columns: ComputedColumns) -> Self {
        ComputedSource {
            inner: Box::new(inner),
            columns,
        }
    }

    fn wrap(&self, inner: Box<dyn SourceReader>) -> Box<dyn SourceReader> {
        Box::new(ComputedReader {
            inner,
            evaluate: self.columns.evaluate.clone(),
        })
    }
}

impl Source for ComputedSource {
    fn schema(&self) -> SchemaRef {
        self.columns.schema.clone()
    }

    fn is_bounded(&self) -> bool {
        self.inner.is_bounded()
    }

    fn create_reader(&self, subtask: usize, parallelism: usize) -> Result<Box<dyn SourceReader>> {
        Ok(self.wrap(self.inner.create_reader(subtask, parallelism)?))
    }

    fn restore_reader(
        &self,
        subtask: usize,
        parallelism: usize,
        states: &[(usize, Bytes)],
    ) -> Result<Box<dyn SourceReader>> {
        Ok(self.wrap(self.inner.restore_reader(subtask, parallelism, states)?))
    }
}

/// The inner reader; its position is the inner reader's, so checkpoints are the same with
/// or without computed columns.
struct ComputedReader {
    inner: Box<dyn SourceReader>,
    evaluate: Evaluate,
}

impl SourceReader for ComputedReader {
    fn splits(&self) -> usize {
        self.inner.splits()
    }

    fn poll_next(&mut self) -> Result<SourcePoll> {
        Ok(match self.inner.poll_next()? {
            SourcePoll::Batch { split, batch } => SourcePoll::Batch {
                split,
                batch: (self.evaluate)(&batch)?,
            },
            other => other,
        })
    }

    fn snapshot(&mut self, checkpoint: CheckpointId) -> Result<Vec<u8>> {
        self.inner.snapshot(checkpoint)
    }

    fn notify_checkpoint_complete(&mut self, checkpoint: CheckpointId) -> Result<()> {
        self.inner.notify_checkpoint_complete(checkpoint)
    }
}
