//! A bounded source over batches held in memory (Flink's `fromCollection`): batch `i` goes to
//! subtask `i % parallelism`, in order, so tests control exactly what each subtask reads.

use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use bytes::Bytes;

use super::ranges::Ranges;
use flink_rs_core::error::{Error, Result};
use flink_rs_core::source::{Source, SourcePoll, SourceReader};

/// Emits the given batches, then ends.
#[derive(Debug, Clone)]
pub struct CollectionSource {
    schema: SchemaRef,
    batches: Arc<Vec<RecordBatch>>,
}

impl CollectionSource {
    /// A source of `batches`, which must all have `schema`.
    pub fn new(schema: SchemaRef, batches: Vec<RecordBatch>) -> Result<Self> {
        if let Some(b) = batches.iter().find(|b| b.schema() != schema) {
            return Err(Error::config(
                "collection source",
                format!(
                    "collection batch schema {:?} differs from the source schema {:?}",
                    b.schema(),
                    schema
                ),
            ));
        }
        Ok(CollectionSource {
            schema,
            batches: Arc::new(batches),
        })
    }
}

struct Reader {
    batches: Arc<Vec<RecordBatch>>,
    ranges: Ranges,
}

impl SourceReader for Reader {
    fn splits(&self) -> usize {
        1
    }

    fn poll_next(&mut self) -> Result<SourcePoll> {
        Ok(match self.ranges.next() {
            Some(Some((i, _))) => match self.batches.get(i as usize) {
                Some(batch) => SourcePoll::Batch {
                    split: 0,
                    batch: batch.clone(),
                },
                None => SourcePoll::Finished,
            },
            Some(None) => SourcePoll::Finished,
            None => SourcePoll::Pending,
        })
    }

    fn snapshot(
        &mut self,
        _checkpoint: flink_rs_core::checkpoint::CheckpointId,
    ) -> Result<Vec<u8>> {
        self.ranges.snapshot()
    }
}

impl Source for CollectionSource {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn is_bounded(&self) -> bool {
        true
    }

    // Batch i is "row" i of a one-row-per-batch range, so positions survive rescaling like
    // the generators'.
    fn create_reader(&self, subtask: usize, parallelism: usize) -> Result<Box<dyn SourceReader>> {
        Ok(Box::new(Reader {
            batches: self.batches.clone(),
            ranges: Ranges::new(
                Some(self.batches.len() as u64),
                1,
                None,
                subtask,
                parallelism,
            ),
        }))
    }

    fn restore_reader(
        &self,
        subtask: usize,
        parallelism: usize,
        states: &[(usize, Bytes)],
    ) -> Result<Box<dyn SourceReader>> {
        Ok(Box::new(Reader {
            batches: self.batches.clone(),
            ranges: Ranges::restore(
                Some(self.batches.len() as u64),
                1,
                None,
                subtask,
                parallelism,
                states,
            )?,
        }))
    }
}
