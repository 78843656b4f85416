//! The source and sink contracts that connectors implement.
//!
//! A [`Source`] describes a (bounded or unbounded) input and creates one [`SourceReader`] per
//! parallel subtask; a reader owns one or more splits (files, generator partitions) and the
//! engine tracks event time per split. A [`Sink`] creates one [`SinkWriter`] per subtask.

use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use bytes::Bytes;

use crate::checkpoint::{CheckpointId, RestoredState};
use crate::error::{Error, Result};

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

    /// The reader for subtask `subtask` of `parallelism`, resuming from the positions every
    /// old reader snapshotted (`(old subtask, state)`, possibly at another parallelism): the
    /// new readers together must read exactly what the old ones had not.
    fn restore_reader(
        &self,
        _subtask: usize,
        _parallelism: usize,
        _states: &[(usize, Bytes)],
    ) -> Result<Box<dyn SourceReader>> {
        Err(Error::CheckpointUnsupported(
            "this source cannot resume from a checkpoint".into(),
        ))
    }
}

/// Reads the splits assigned to one parallel subtask.
pub trait SourceReader: Send {
    /// Number of splits this reader owns (event time is tracked per split).
    fn splits(&self) -> usize;
    /// Reads what is available.
    fn poll_next(&mut self) -> Result<SourcePoll>;

    /// The reader's position (everything returned so far has been read), for checkpoint
    /// `checkpoint`.
    fn snapshot(&mut self, _checkpoint: CheckpointId) -> Result<Vec<u8>> {
        Err(Error::CheckpointUnsupported(
            "this source does not support checkpoints".into(),
        ))
    }

    /// Checkpoint `checkpoint` completed (with the positions this reader snapshotted for it):
    /// a reader may tell the system it reads from (Kafka: commit the offsets to the group).
    fn notify_checkpoint_complete(&mut self, _checkpoint: CheckpointId) -> Result<()> {
        Ok(())
    }
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
    /// Input ended: flush and close. A transactional writer keeps the result pending until
    /// the final checkpoint completes.
    fn finish(&mut self) -> Result<()> {
        Ok(())
    }

    /// Called once before the first write: `restored` holds the pending commits of every old
    /// writer from the checkpoint the job restarts from (empty on a fresh start). A
    /// transactional writer publishes those (they belong to a completed checkpoint) and
    /// discards leftovers of attempts that never completed one.
    fn recover(&mut self, _restored: &RestoredState) -> Result<()> {
        Ok(())
    }

    /// A barrier passed: flush, set aside what was written since the last one as pending
    /// for `checkpoint`, and return what must be stored to commit it after a failure.
    fn pre_commit(&mut self, _checkpoint: CheckpointId) -> Result<Option<Vec<u8>>> {
        Ok(None)
    }

    /// Checkpoint `checkpoint` completed: publish everything pending up to it.
    fn commit(&mut self, _checkpoint: CheckpointId) -> Result<()> {
        Ok(())
    }
}

/// Shared handle to a source.
pub type SourceRef = Arc<dyn Source>;
/// Shared handle to a sink.
pub type SinkRef = Arc<dyn Sink>;
