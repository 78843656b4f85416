//! Stateless operators: batch-level map and filter (the fast path: Arrow kernels over whole
//! batches), row-level flat map (the convenient path), and identity (used by `union`).

use std::sync::Arc;

use arrow::array::{BooleanArray, RecordBatch};
use arrow::compute::filter_record_batch;
use arrow::datatypes::SchemaRef;

use crate::error::Result;
use crate::operator::{Operator, Output};
use crate::rows::{Row, RowBatchBuilder, row_at};

/// A function from batch to batch.
pub type BatchFn = Arc<dyn Fn(RecordBatch) -> Result<RecordBatch> + Send + Sync>;
/// A predicate evaluated on a whole batch, one boolean per row.
pub type PredicateFn = Arc<dyn Fn(&RecordBatch) -> Result<BooleanArray> + Send + Sync>;
/// A function from one row to zero or more rows.
pub type FlatMapFn = Arc<dyn Fn(&Row, &mut Vec<Row>) -> Result<()> + Send + Sync>;

/// Applies a batch function.
pub struct MapBatchOperator(pub BatchFn);

impl Operator for MapBatchOperator {
    fn process_batch(
        &mut self,
        _input: usize,
        batch: RecordBatch,
        out: &mut dyn Output,
    ) -> Result<()> {
        let b = (self.0)(batch)?;
        if b.num_rows() > 0 {
            out.emit(b)?;
        }
        Ok(())
    }
}

/// Keeps the rows for which the predicate is true.
pub struct FilterOperator(pub PredicateFn);

impl Operator for FilterOperator {
    fn process_batch(
        &mut self,
        _input: usize,
        batch: RecordBatch,
        out: &mut dyn Output,
    ) -> Result<()> {
        let mask = (self.0)(&batch)?;
        let b = filter_record_batch(&batch, &mask)?;
        if b.num_rows() > 0 {
            out.emit(b)?;
        }
        Ok(())
    }
}

/// Maps each row to zero or more rows of `schema`.
pub struct FlatMapRowsOperator {
    f: FlatMapFn,
    builder: RowBatchBuilder,
    scratch: Vec<Row>,
}

impl FlatMapRowsOperator {
    /// A flat map producing rows of `schema`.
    pub fn new(f: FlatMapFn, schema: SchemaRef) -> Result<Self> {
        Ok(FlatMapRowsOperator {
            f,
            builder: RowBatchBuilder::new(schema)?,
            scratch: Vec::new(),
        })
    }
}

impl Operator for FlatMapRowsOperator {
    fn process_batch(
        &mut self,
        _input: usize,
        batch: RecordBatch,
        out: &mut dyn Output,
    ) -> Result<()> {
        for r in 0..batch.num_rows() {
            let row = row_at(&batch, r);
            self.scratch.clear();
            (self.f)(&row, &mut self.scratch)?;
            for o in &self.scratch {
                self.builder.push(o)?;
            }
        }
        if !self.builder.is_empty() {
            out.emit(self.builder.finish()?)?;
        }
        Ok(())
    }
}

/// Passes everything through (the operator behind `union`).
pub struct IdentityOperator;

impl Operator for IdentityOperator {
    fn process_batch(
        &mut self,
        _input: usize,
        batch: RecordBatch,
        out: &mut dyn Output,
    ) -> Result<()> {
        out.emit(batch)
    }
}
