//! The operator at the end of a pipeline: hands batches to a connector's [`SinkWriter`].

use arrow::record_batch::RecordBatch;

use crate::checkpoint::{CheckpointId, OperatorSnapshot, RestoredState};
use crate::error::Result;
use crate::operator::{Operator, OperatorContext, Output};
use crate::source::SinkWriter;

/// Writes every batch to a sink writer and finishes it at end of input; drives the writer's
/// two-phase commit from the checkpoints.
pub struct SinkOperator {
    writer: Box<dyn SinkWriter>,
    recovered: bool,
}

impl SinkOperator {
    pub fn new(writer: Box<dyn SinkWriter>) -> Self {
        SinkOperator {
            writer,
            recovered: false,
        }
    }
}

impl Operator for SinkOperator {
    fn process_batch(
        &mut self,
        _input: usize,
        batch: RecordBatch,
        _out: &mut dyn Output,
    ) -> Result<()> {
        self.writer.write(&batch)
    }

    fn open(&mut self, _ctx: &OperatorContext) -> Result<()> {
        if !self.recovered {
            self.recovered = true;
            self.writer.recover(&RestoredState::default())?;
        }
        Ok(())
    }

    fn restore_state(&mut self, state: RestoredState) -> Result<()> {
        self.recovered = true;
        self.writer.recover(&state)
    }

    fn finish(&mut self, _out: &mut dyn Output) -> Result<()> {
        self.writer.finish()
    }

    fn snapshot_state(&mut self, barrier: &crate::checkpoint::Barrier) -> Result<OperatorSnapshot> {
        Ok(OperatorSnapshot {
            keyed: Vec::new(),
            operator: self.writer.pre_commit(barrier.id)?,
            deferred: None,
            ..Default::default()
        })
    }

    fn notify_checkpoint_complete(&mut self, checkpoint: CheckpointId) -> Result<()> {
        self.writer.commit(checkpoint)
    }
}
