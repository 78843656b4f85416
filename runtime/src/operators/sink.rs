//! The operator at the end of a pipeline: hands batches to a connector's [`SinkWriter`].

use arrow::record_batch::RecordBatch;

use crate::error::Result;
use crate::operator::{Operator, Output};
use crate::source::SinkWriter;

/// Writes every batch to a sink writer and finishes it at end of input.
pub struct SinkOperator(pub Box<dyn SinkWriter>);

impl Operator for SinkOperator {
    fn process_batch(
        &mut self,
        _input: usize,
        batch: RecordBatch,
        _out: &mut dyn Output,
    ) -> Result<()> {
        self.0.write(&batch)
    }

    fn finish(&mut self, _out: &mut dyn Output) -> Result<()> {
        self.0.finish()
    }
}
