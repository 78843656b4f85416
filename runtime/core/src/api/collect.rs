//! Collects a stream in memory: the sink tests and examples read results from.

use std::sync::{Arc, Mutex};

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;

use crate::error::Result;
use crate::rows::{Row, rows_of};
use crate::source::{Sink, SinkWriter};

/// Keeps every batch it receives.
#[derive(Debug, Clone, Default)]
pub struct CollectSink {
    batches: Arc<Mutex<Vec<RecordBatch>>>,
}

impl CollectSink {
    /// A handle to read what was collected.
    pub fn handle(&self) -> Collected {
        Collected {
            batches: self.batches.clone(),
        }
    }
}

/// What a [`CollectSink`] received.
#[derive(Debug, Clone)]
pub struct Collected {
    batches: Arc<Mutex<Vec<RecordBatch>>>,
}

impl Collected {
    /// The batches, in arrival order.
    pub fn batches(&self) -> Vec<RecordBatch> {
        self.batches.lock().map(|b| b.clone()).unwrap_or_default()
    }

    /// Every row, in arrival order.
    pub fn rows(&self) -> Vec<Row> {
        self.batches().iter().flat_map(rows_of).collect()
    }

    /// Number of rows so far.
    pub fn len(&self) -> usize {
        self.batches().iter().map(|b| b.num_rows()).sum()
    }

    /// True when nothing arrived.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

struct Writer(Arc<Mutex<Vec<RecordBatch>>>);

impl SinkWriter for Writer {
    fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        if let Ok(mut b) = self.0.lock() {
            b.push(batch.clone());
        }
        Ok(())
    }
}

impl Sink for CollectSink {
    fn create_writer(&self, _: usize, _: usize, _: &SchemaRef) -> Result<Box<dyn SinkWriter>> {
        Ok(Box::new(Writer(self.batches.clone())))
    }
}
