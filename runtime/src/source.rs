//! The source and sink contracts that connectors implement.
//!
//! A [`Source`] describes a (bounded or unbounded) input and creates one [`SourceReader`] per
//! parallel subtask; a reader owns one or more splits (files, generator partitions) and the
//! engine tracks event time per split. A [`Sink`] creates one [`SinkWriter`] per subtask.

use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;

use crate::error::Result;

/// What a reader returns from one poll.
#[derive(Debug)]
pub enum SourcePoll {
    /// Records read from split `split` (an index in `0..reader.splits()`).
    Batch { split: usize, batch: RecordBatch },
    /// Nothing available right now (rate limit, waiting for data); poll again soon.
    Pending,
    /// Split `split` is exhausted.
    SplitFinished(usize),
    /// Every split of this reader is exhausted.
    Finished,
}

/// A connector's input description; creates the per-subtask readers.
pub trait Source: Send + Sync + 'static {
    /// The schema of every batch the readers produce.
    fn schema(&self) -> SchemaRef;
    /// Whether the input ends (a bounded job finishes when all its sources do).
    fn is_bounded(&self) -> bool;
    /// The reader for subtask `subtask` of `parallelism`.
    fn create_reader(&self, subtask: usize, parallelism: usize) -> Result<Box<dyn SourceReader>>;
}

/// Reads the splits assigned to one parallel subtask.
pub trait SourceReader: Send {
    /// Number of splits this reader owns (event time is tracked per split).
    fn splits(&self) -> usize;
    /// Reads what is available.
    fn poll_next(&mut self) -> Result<SourcePoll>;
}

/// A connector's output description; creates the per-subtask writers.
pub trait Sink: Send + Sync + 'static {
    /// The writer for subtask `subtask` of `parallelism`, given the input schema.
    fn create_writer(
        &self,
        subtask: usize,
        parallelism: usize,
        schema: &SchemaRef,
    ) -> Result<Box<dyn SinkWriter>>;
}

/// Writes the batches of one parallel subtask.
pub trait SinkWriter: Send {
    /// Writes one batch.
    fn write(&mut self, batch: &RecordBatch) -> Result<()>;
    /// Input ended: flush and close.
    fn finish(&mut self) -> Result<()> {
        Ok(())
    }
}

/// Shared handle to a source.
pub type SourceRef = Arc<dyn Source>;
/// Shared handle to a sink.
pub type SinkRef = Arc<dyn Sink>;
