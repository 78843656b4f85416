//! Event-time progress across inputs: an idle split stops holding the watermark back only
//! once the idle timeout is configured, and a union combines watermarks as a minimum.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use arrow::array::{Int64Array, RecordBatch};
use arrow::datatypes::{DataType, SchemaRef};
use flink_rs::prelude::*;
use flink_rs::source::{Source, SourcePoll, SourceReader};

fn ts_schema() -> SchemaRef {
    schema(&[
        ("k", DataType::Int64, false),
        ("ts", DataType::Int64, false),
    ])
}

/// Two splits: split 0 advances 500 ms of event time every 5 ms of wall time; split 1 emits
/// one record at ts 0 and then nothing, forever (an idle partition).
#[derive(Clone)]
struct OneIdleSplit {
    stop: Arc<AtomicBool>,
}

struct Reader {
    next_ts: i64,
    idle_emitted: bool,
    last: Instant,
    stop: Arc<AtomicBool>,
}

fn batch(ts: i64) -> Result<RecordBatch> {
    Ok(RecordBatch::try_new(
        ts_schema(),
        vec![
            Arc::new(Int64Array::from(vec![1])),
            Arc::new(Int64Array::from(vec![ts])),
        ],
    )?)
}

impl SourceReader for Reader {
    fn splits(&self) -> usize {
        2
    }
    fn poll_next(&mut self) -> Result<SourcePoll> {
        if self.stop.load(Ordering::SeqCst) {
            return Ok(SourcePoll::Pending);
        }
        if !self.idle_emitted {
            self.idle_emitted = true;
            return Ok(SourcePoll::Batch {
                split: 1,
                batch: batch(0)?,
            });
        }
        if self.last.elapsed() < Duration::from_millis(5) {
            return Ok(SourcePoll::Pending);
        }
        self.last = Instant::now();
        self.next_ts += 500;
        Ok(SourcePoll::Batch {
            split: 0,
            batch: batch(self.next_ts)?,
        })
    }
}

impl Source for OneIdleSplit {
    fn schema(&self) -> SchemaRef {
        ts_schema()
    }
    fn is_bounded(&self) -> bool {
        false
    }
    fn create_reader(&self, _: usize, _: usize) -> Result<Box<dyn SourceReader>> {
        Ok(Box::new(Reader {
            next_ts: 0,
            idle_emitted: false,
            last: Instant::now(),
            stop: self.stop.clone(),
        }))
    }
}

/// Runs the job for at most `wait`, returning how many window results arrived.
fn windows_fired(idleness: Option<Duration>, wait: Duration) -> Result<usize> {
    let env = StreamExecutionEnvironment::new();
    let mut strategy = WatermarkStrategy::monotonous("ts");
    if let Some(t) = idleness {
        strategy = strategy.with_idleness(t);
    }
    let out = env
        .from_source(
            OneIdleSplit {
                stop: Arc::new(AtomicBool::new(false)),
            },
            Some(strategy),
        )
        .key_by("k")
        .window(Windows::tumbling(Duration::from_secs(1)))
        .count()?
        .collect();
    let job = env.execute_async()?;
    let deadline = Instant::now() + wait;
    while Instant::now() < deadline && out.len() < 3 {
        std::thread::sleep(Duration::from_millis(20));
    }
    job.cancel();
    job.wait()?;
    Ok(out.len())
}

#[test]
fn idle_split_holds_watermark_without_timeout() -> Result<()> {
    assert_eq!(windows_fired(None, Duration::from_millis(1500))?, 0);
    Ok(())
}

#[test]
fn idle_split_is_skipped_after_timeout() -> Result<()> {
    let fired = windows_fired(Some(Duration::from_millis(200)), Duration::from_secs(20))?;
    assert!(fired >= 3, "only {fired} windows fired");
    Ok(())
}

#[test]
fn union_watermark_is_the_minimum_of_its_inputs() -> Result<()> {
    // Stream A runs far ahead in event time; stream B is behind. Records of B would be late
    // if A's watermark alone drove the union, so nothing may go to the late side output.
    let env = StreamExecutionEnvironment::new();
    let mk = |start: i64| -> Result<CollectionSource> {
        let batches = (0..50)
            .map(|i| batch(start + i * 100))
            .collect::<Result<Vec<_>>>()?;
        CollectionSource::new(ts_schema(), batches)
    };
    let wm = || Some(WatermarkStrategy::monotonous("ts"));
    let a = env.from_source(mk(100_000)?, wm());
    let b = env.from_source(mk(0)?, wm());
    let w = a
        .union(&[b])?
        .key_by("k")
        .window(Windows::tumbling(Duration::from_secs(1)))
        .side_output_late_data("late")
        .count()?;
    let late = w.side_output("late")?.collect();
    let counts = w.collect();
    env.execute()?;
    assert!(late.is_empty(), "late rows: {:?}", late.rows());
    let total: i64 = counts.rows().iter().filter_map(|r| r[4].as_i64()).sum();
    assert_eq!(total, 100);
    Ok(())
}

#[test]
fn processing_time_windows_count_every_record_of_a_bounded_input() -> Result<()> {
    let env = StreamExecutionEnvironment::new();
    env.set_parallelism(2);
    let out = env
        .from_source(BidGenerator::bounded(50_000).batch_size(500), None)
        .key_by("bidder")
        .window(Windows::tumbling(Duration::from_millis(50)).processing_time())
        .count()?
        .collect();
    env.execute()?;
    let total: i64 = out.rows().iter().filter_map(|r| r[4].as_i64()).sum();
    assert_eq!(total, 50_000);
    Ok(())
}
