//! `blackhole`: discards everything (benchmarks), counting rows so a run can be checked.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;

use flink_rs_core::error::Result;
use flink_rs_core::source::{Sink, SinkWriter};

/// Discards rows; `rows()` tells how many arrived.
#[derive(Debug, Clone, Default)]
pub struct BlackholeSink {
    rows: Arc<AtomicU64>,
}

impl BlackholeSink {
    /// Rows received so far over all subtasks.
    pub fn rows(&self) -> u64 {
        self.rows.load(Ordering::Relaxed)
    }
}

/// Rows every blackhole sink of this process has received (benchmarks of SQL jobs read it).
static TOTAL: AtomicU64 = AtomicU64::new(0);

impl BlackholeSink {
    /// Rows received by all blackhole sinks of this process.
    pub fn total_rows() -> u64 {
        TOTAL.load(Ordering::Relaxed)
    }
}

struct Writer(Arc<AtomicU64>);

impl SinkWriter for Writer {
    fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        self.0.fetch_add(batch.num_rows() as u64, Ordering::Relaxed);
        TOTAL.fetch_add(batch.num_rows() as u64, Ordering::Relaxed);
        Ok(())
    }
}

impl Sink for BlackholeSink {
    fn create_writer(&self, _: usize, _: usize, _: &SchemaRef) -> Result<Box<dyn SinkWriter>> {
        Ok(Box::new(Writer(self.rows.clone())))
    }
}
