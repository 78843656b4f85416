//! A bounded source over batches held in memory (Flink's `fromCollection`): batch `i` goes to
//! subtask `i % parallelism`, in order, so tests control exactly what each subtask reads.

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;

use crate::error::{Error, Result};
use crate::source::{Source, SourcePoll, SourceReader};

/// Emits the given batches, then ends.
#[derive(Debug, Clone)]
pub struct CollectionSource {
    schema: SchemaRef,
    batches: Vec<RecordBatch>,
}

impl CollectionSource {
    /// A source of `batches`, which must all have `schema`.
    pub fn new(schema: SchemaRef, batches: Vec<RecordBatch>) -> Result<Self> {
        if let Some(b) = batches.iter().find(|b| b.schema() != schema) {
            return Err(Error::InvalidGraph(format!(
                "collection batch schema {:?} differs from the source schema {:?}",
                b.schema(),
                schema
            )));
        }
        Ok(CollectionSource { schema, batches })
    }
}

struct Reader {
    batches: std::vec::IntoIter<RecordBatch>,
}

impl SourceReader for Reader {
    fn splits(&self) -> usize {
        1
    }

    fn poll_next(&mut self) -> Result<SourcePoll> {
        Ok(match self.batches.next() {
            Some(batch) => SourcePoll::Batch { split: 0, batch },
            None => SourcePoll::Finished,
        })
    }
}

impl Source for CollectionSource {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn is_bounded(&self) -> bool {
        true
    }

    fn create_reader(&self, subtask: usize, parallelism: usize) -> Result<Box<dyn SourceReader>> {
        let mine: Vec<RecordBatch> = self
            .batches
            .iter()
            .enumerate()
            .filter(|(i, _)| i % parallelism.max(1) == subtask)
            .map(|(_, b)| b.clone())
            .collect();
        Ok(Box::new(Reader {
            batches: mine.into_iter(),
        }))
    }
}
