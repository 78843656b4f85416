//! The operator contract: what a task calls on each element of its input, and the [`Output`]
//! an operator writes to (the next operator of its chain, or the network/in-process exchange
//! at the chain's end).
//!
//! Operators see batches, not records: per-record work happens inside an operator's own loop
//! over a batch, which keeps virtual calls and channel traffic per batch.

use std::sync::Arc;

use arrow::record_batch::RecordBatch;

use crate::checkpoint::{CheckpointId, OperatorSnapshot, RestoredState};
use crate::element::Timestamp;
use crate::error::Result;

/// Where an operator sends what it produces. Implemented by the engine.
pub trait Output {
    /// Emits a batch on the main output.
    fn emit(&mut self, batch: RecordBatch) -> Result<()>;
    /// Emits a batch on the side output named `tag` (dropped when nothing consumes it).
    fn emit_side(&mut self, tag: &str, batch: RecordBatch) -> Result<()>;
    /// Forwards a watermark; operators that hold back records must emit them first.
    fn emit_watermark(&mut self, watermark: Timestamp) -> Result<()>;
    /// Forwards a change of idleness.
    fn emit_idle(&mut self, idle: bool) -> Result<()>;
}

/// What an operator instance knows about its place in the job.
#[derive(Debug, Clone)]
pub struct OperatorContext {
    /// The operator's name in the job graph.
    pub name: String,
    /// This instance's index in `0..parallelism`.
    pub subtask: usize,
    /// Number of parallel instances of this operator.
    pub parallelism: usize,
    /// Number of key groups.
    pub max_parallelism: u16,
    /// The operator's stable id: its state in a checkpoint is found by it.
    pub uid: String,
    /// Unique per deployment of the job (changes on every restart); connectors use it to tell
    /// their own leftovers from a failed attempt's.
    pub attempt: u64,
}

impl OperatorContext {
    /// The key groups this instance owns.
    pub fn key_groups(&self) -> std::ops::Range<u16> {
        crate::key::key_group_range(self.max_parallelism, self.parallelism, self.subtask)
    }

    /// The only instance of operator `name` (its uid too), 128 key groups: for tests of
    /// operators, here and in the crates that define operators.
    pub fn single(name: &str) -> Self {
        OperatorContext {
            name: name.into(),
            subtask: 0,
            parallelism: 1,
            max_parallelism: 128,
            uid: name.into(),
            attempt: 0,
        }
    }
}

/// One parallel instance of an operator, driven by its task's thread.
pub trait Operator: Send {
    /// Called once before any element.
    fn open(&mut self, _ctx: &OperatorContext) -> Result<()> {
        Ok(())
    }

    /// Processes a batch that arrived on input `input` (0, or 1 for the second input of a
    /// two-input operator).
    fn process_batch(
        &mut self,
        input: usize,
        batch: RecordBatch,
        out: &mut dyn Output,
    ) -> Result<()>;

    /// The combined watermark of all inputs advanced to `watermark`. Event-time timers fire
    /// here; the default forwards it.
    fn process_watermark(&mut self, watermark: Timestamp, out: &mut dyn Output) -> Result<()> {
        out.emit_watermark(watermark)
    }

    /// Periodic call with the processing-time clock (epoch ms) to fire processing-time timers.
    fn on_processing_time(&mut self, _now: Timestamp, _out: &mut dyn Output) -> Result<()> {
        Ok(())
    }

    /// Every input has ended (after the final watermark); emit what is still held.
    fn finish(&mut self, _out: &mut dyn Output) -> Result<()> {
        Ok(())
    }

    /// A checkpoint barrier passed: return this instance's state as of now. Called on the
    /// task thread between elements; the returned bytes are uploaded off it.
    fn snapshot_state(
        &mut self,
        _barrier: &crate::checkpoint::Barrier,
    ) -> Result<OperatorSnapshot> {
        Ok(OperatorSnapshot::default())
    }

    /// Restores state before `open` (only when the job starts from a checkpoint that has
    /// state for this operator).
    fn restore_state(&mut self, _state: RestoredState) -> Result<()> {
        Ok(())
    }

    /// Checkpoint `checkpoint` is complete everywhere (its `_metadata` is written): publish
    /// what was pre-committed for it. [`FINAL_CHECKPOINT`](crate::checkpoint::FINAL_CHECKPOINT)
    /// means the whole job has finished.
    fn notify_checkpoint_complete(&mut self, _checkpoint: CheckpointId) -> Result<()> {
        Ok(())
    }
}

/// Creates operator instances, one per parallel subtask (in whichever process runs it).
pub type OperatorFactory = Arc<dyn Fn(&OperatorContext) -> Result<Box<dyn Operator>> + Send + Sync>;

/// The processing-time clock in epoch milliseconds.
pub fn now_millis() -> Timestamp {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as Timestamp)
        .unwrap_or(0)
}
