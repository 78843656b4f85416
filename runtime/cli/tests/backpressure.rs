//! Backpressure: a fast unbounded source feeding a slow sink through a bounded channel is
//! slowed to the sink's pace, so rows in flight (and the process's memory) stay bounded.
//! This file holds one test so that the process's memory is this test's alone.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use flink_rs::bench::peak_rss_bytes;
use flink_rs::prelude::*;
use flink_rs::source::{Sink, SinkWriter};

#[derive(Clone, Default)]
struct SlowSink {
    rows: Arc<AtomicU64>,
}

struct SlowWriter(Arc<AtomicU64>);

impl SinkWriter for SlowWriter {
    fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        std::thread::sleep(Duration::from_millis(20));
        self.0.fetch_add(batch.num_rows() as u64, Ordering::SeqCst);
        Ok(())
    }
}

impl Sink for SlowSink {
    fn create_writer(&self, _: usize, _: usize, _: &SchemaRef) -> Result<Box<dyn SinkWriter>> {
        Ok(Box::new(SlowWriter(self.rows.clone())))
    }
}

#[test]
fn slow_sink_throttles_fast_unbounded_source_with_bounded_memory() -> Result<()> {
    const BATCH: u64 = 4096;
    const CAPACITY: usize = 4;
    let env = StreamExecutionEnvironment::new();
    env.configure(|c| c.channel_capacity = CAPACITY);
    let sink = SlowSink::default();
    // rebalance() puts a channel between source and sink (otherwise they would be chained).
    env.from_source(BidGenerator::unbounded().batch_size(BATCH as usize), None)
        .rebalance()
        .sink(sink.clone());
    let job = env.execute_async()?;
    let rss_before = peak_rss_bytes();
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut max_in_flight = 0;
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        let produced: u64 = job
            .task_metrics()
            .iter()
            .filter(|(name, _, _)| name.starts_with("Source"))
            .map(|(_, _, out)| *out)
            .sum();
        let consumed = sink.rows.load(Ordering::SeqCst);
        max_in_flight = max_in_flight.max(produced.saturating_sub(consumed));
    }
    job.cancel();
    job.wait()?;
    let consumed = sink.rows.load(Ordering::SeqCst);
    // Unthrottled, the generator makes >50 M rows/s; the sink takes ~200 k rows/s.
    assert!(consumed > 0, "the sink received nothing");
    // In flight: the channel's batches, one being sent, one being written, one being made.
    let bound = (CAPACITY as u64 + 3) * BATCH;
    assert!(
        max_in_flight <= bound,
        "{max_in_flight} rows in flight, more than the bound {bound}"
    );
    let growth = peak_rss_bytes().saturating_sub(rss_before);
    assert!(growth < 64 << 20, "memory grew by {growth} bytes");
    Ok(())
}
